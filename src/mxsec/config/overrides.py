"""Command-line flags over the file's values (:func:`apply_overrides`); errors name the flag, not the key."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any, Iterable, TypeGuard, TypeVar

from ..errors import ConfigError
from .schema import Config


_T = TypeVar("_T")


def _given(value: _T | None) -> TypeGuard[_T]:
    return value is not None and not (isinstance(value, (list, tuple)) and len(value) == 0)


def apply_overrides(
    config: Config,
    *,
    listen: Iterable[str] | None = None,
    cache: str | None = None,
    nameservers: Iterable[str] | None = None,
    ca_file: str | None = None,
    timeout: float | None = None,
    allow_addresses: Iterable[str] | None = None,
    lookup_timeout: float | None = None,
    metrics_listen: str | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
    tlsrpt_db: str | None = None,
    organization_name: str | None = None,
    contact_info: str | None = None,
) -> Config:
    """Return ``config`` with command-line values in place of the file's.

    ``None`` (or an empty list) means "flag not given". Repeatable flags replace the file's list, they do not
    add to it. ``timeout`` sets both ``dns.timeout`` and ``https.timeout`` (``--timeout``). Errors name the
    option: ``--listen: bad listen address 'x': ...``.
    """
    dns, https, tls, net, store = config.dns, config.https, config.tls, config.net, config.cache
    daemon, metrics, logc, tlsrpt = config.daemon, config.metrics, config.log, config.tlsrpt

    def checked(option: str, build: Any) -> Any:
        try:
            return build()
        except ConfigError as exc:
            message = str(exc)
            # "section.key: problem" -> "--option: problem"
            message = re.sub(r"^[a-z_]+\.[a-z_]+(\[\d+\])?: ", "", message)
            raise ConfigError(f"{option}: {message}") from None

    if _given(nameservers):
        dns = checked("--nameserver", lambda: replace(dns, nameservers=list(nameservers)))
    if timeout is not None:
        t = checked("--timeout", lambda: _number_flag(timeout))
        dns = checked("--timeout", lambda: replace(dns, timeout=t))
        https = checked("--timeout", lambda: replace(https, timeout=t))
    if ca_file is not None:
        tls = checked("--ca-file", lambda: replace(tls, ca_file=ca_file))
    if _given(allow_addresses):
        net = checked("--allow-address", lambda: replace(net, allow_addresses=list(allow_addresses)))
    if cache is not None:
        store = checked("--cache", lambda: replace(config.cache, url=cache))
    if _given(listen):
        daemon = checked("--listen", lambda: replace(daemon, listen=list(listen)))
    if lookup_timeout is not None:
        lt = checked("--lookup-timeout", lambda: _number_flag(lookup_timeout))
        daemon = checked("--lookup-timeout", lambda: replace(daemon, lookup_timeout=lt))
    if metrics_listen is not None:
        metrics = checked("--metrics-listen", lambda: replace(metrics, listen=metrics_listen))
    if log_level is not None:
        logc = checked("--log-level", lambda: replace(logc, level=log_level))
    if log_format is not None:
        logc = checked("--log-format", lambda: replace(logc, format=log_format))
    if tlsrpt_db is not None:
        tlsrpt = checked("--db", lambda: replace(tlsrpt, db=tlsrpt_db))
    if organization_name is not None:
        tlsrpt = replace(tlsrpt, organization_name=organization_name)
    if contact_info is not None:
        tlsrpt = replace(tlsrpt, contact_info=contact_info)
    return replace(
        config, dns=dns, https=https, tls=tls, net=net, cache=store, daemon=daemon,
        metrics=metrics, log=logc, tlsrpt=tlsrpt,
    )


def _number_flag(value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"expected a number of seconds, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"expected a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"expected a positive number of seconds, got {value!r}")
    return number
