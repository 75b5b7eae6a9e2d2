"""serve-policy's own certificates: one per policy host, obtained and renewed by ACME (RFC 8555).

:class:`AcmeManager` holds the certificates being served, orders a certificate for every host that has none,
renews each when a third of its lifetime remains (:mod:`.renewal`), backs off after failures, and answers the
challenges through :class:`~.challenges.PendingChallenges`, which the HTTPS server (TLS-ALPN-01) and the
optional plain HTTP listener (HTTP-01) read. Orders run one at a time in a worker thread (the ``acme`` library
is synchronous); a daemon thread, so that stopping never waits for an ACME server.

A certificate is served from the moment it has been stored and loaded; until then the previous one stays.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import random
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mxsec.errors import ConfigError
from mxsec.serve_policy.certstore import CertStore, context_from_pem
from mxsec.serve_policy.challenges import ACME_TLS_ALPN, PendingChallenges, tls_alpn_certificate
from mxsec.serve_policy.files import LoadedCertificate, _when
from mxsec.serve_policy.renewal import FIRST_RETRY, HostRenewal

__all__ = ["AcmeManager", "AcmeOptions"]

log = logging.getLogger("mxsec.serve_policy")

#: the longest the manager sleeps between two looks at its hosts
MAX_SLEEP = 3600.0
T = TypeVar("T")


@dataclass(frozen=True)
class AcmeOptions:
    directory_url: str
    state_dir: str
    email: str | None = None
    ca_bundle: str | None = None
    challenges: tuple[str, ...] = ("tls-alpn-01", "http-01")
    renew_before: _dt.timedelta | None = None  # None: when a third of the lifetime remains
    retry_first: float = FIRST_RETRY
    order_timeout: float = 180.0
    request_timeout: float = 30.0
    eab_kid: str | None = None  # External Account Binding, for CAs that require one
    eab_hmac_key: str | None = None


@dataclass
class AcmeManager:
    options: AcmeOptions
    http01: bool = False  # a plain HTTP listener exists
    store: CertStore = field(init=False)
    pending: PendingChallenges = field(default_factory=PendingChallenges)
    certificates: dict[str, LoadedCertificate] = field(default_factory=dict)
    renewals: dict[str, HostRenewal] = field(default_factory=dict)
    on_change: Callable[[str, LoadedCertificate], None] | None = None
    orders: int = 0
    failures: int = 0
    obtained: int = 0
    _account: Any = None
    _wake: asyncio.Event | None = None

    def __post_init__(self) -> None:
        from mxsec.net.acme import AcmeAccount, AcmeSettings  # the 'acme' extra: a one-line error when missing

        if not self.challenge_types:
            raise ConfigError("--acme-challenge http-01 needs --acme-http-listen (the port the ACME server asks, 80)")
        self.store = CertStore(Path(self.options.state_dir))
        self.store.prepare()
        self._account = AcmeAccount(
            AcmeSettings(
                directory_url=self.options.directory_url,
                email=self.options.email,
                ca_bundle=self.options.ca_bundle,
                timeout=self.options.request_timeout,
                order_timeout=self.options.order_timeout,
                eab_kid=self.options.eab_kid,
                eab_hmac_key=self.options.eab_hmac_key,
            ),
            self.store,
        )

    @property
    def challenge_types(self) -> tuple[str, ...]:
        return tuple(t for t in self.options.challenges if t != "http-01" or self.http01)

    # ----------------------------------------------------------------- hosts
    def set_hosts(self, hosts: Iterable[str], *, now: _dt.datetime | None = None) -> None:
        """Serve exactly ``hosts``: load a stored certificate for each new one, forget the ones gone."""
        now = now or _dt.datetime.now(_dt.UTC)
        wanted = list(dict.fromkeys(h.lower() for h in hosts))
        for host in list(self.renewals):
            if host not in wanted:
                del self.renewals[host]
                self.certificates.pop(host, None)
        for host in wanted:
            if host in self.renewals:
                continue
            renewal = HostRenewal(host)
            stored = self.store.load(host, now=now)
            if stored is not None and stored.not_before is not None:
                self.certificates[host] = stored
                renewal.succeeded(stored.not_before, stored.not_after, renew_before=self.options.renew_before)
                issuer = self.store.issuer_directory(host)
                if issuer != self.options.directory_url:
                    # from another ACME server (staging before production, a CA change): served until the
                    # certificate from this one arrives, which is ordered now
                    renewal.due = now
                log.info("certificate loaded", extra={"host": host, "cert": stored.cert_path,
                                                      "not_after": _when(stored.not_after),
                                                      "renew_at": _when(renewal.due) if renewal.due else "now",
                                                      "from": issuer})
            self.renewals[host] = renewal
        if self._wake is not None:
            self._wake.set()

    def context_for(self, host: str | None) -> ssl.SSLContext | None:
        loaded = self.certificates.get(host.lower()) if host else None
        return loaded.context if loaded is not None else None

    def default_context(self) -> ssl.SSLContext | None:
        """For clients that send no (or an unknown) server name: the first host's certificate."""
        for host in self.renewals:
            loaded = self.certificates.get(host)
            if loaded is not None:
                return loaded.context
        return None

    # ----------------------------------------------------------------- the challenge board (worker thread)
    def add_http01(self, token: str, key_authorization: str) -> None:
        self.pending.add_http01(token, key_authorization)

    def remove_http01(self, token: str) -> None:
        self.pending.remove_http01(token)

    def publish_tls_alpn01(self, host: str, key_authorization: str) -> None:
        cert_pem, key_pem = tls_alpn_certificate(host, key_authorization)
        self.pending.add_tls_alpn01(host, context_from_pem(cert_pem, key_pem, self.store.directory,
                                                           alpn=[ACME_TLS_ALPN]))

    def remove_tls_alpn01(self, host: str) -> None:
        self.pending.remove_tls_alpn01(host)

    # ----------------------------------------------------------------- the loop
    async def run(self) -> None:
        """Order and renew until cancelled."""
        self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            now = _dt.datetime.now(_dt.UTC)
            for host, renewal in list(self.renewals.items()):
                if renewal.wants_order(now) and self.renewals.get(host) is renewal:
                    await self.order(host)
            now = _dt.datetime.now(_dt.UTC)
            wakeups = [w for r in self.renewals.values() if (w := r.next_wakeup()) is not None]
            sleep = MAX_SLEEP if not wakeups else (min(wakeups) - now).total_seconds()
            sleep = min(max(sleep, 0.05), MAX_SLEEP)
            try:
                await asyncio.wait_for(self._wake.wait(), sleep)
            except TimeoutError:
                pass

    async def order(self, host: str) -> bool:
        """One order for ``host``; True when a new certificate is being served."""
        from mxsec.net.acme import AcmeError

        renewal = self.renewals.get(host)
        if renewal is None:
            return False
        previous = self.certificates.get(host)
        self.orders += 1
        log.info("ordering certificate", extra={"host": host, "renewal": previous is not None,
                                                "challenges": list(self.challenge_types)})
        try:
            key_pem, chain_pem = await _in_thread(self._account.order, host, self, self.challenge_types)
            loaded = self.store.save(host, key_pem, chain_pem, directory=self.options.directory_url)
        except (AcmeError, ConfigError, OSError) as exc:
            self.failures += 1
            error = str(exc) if not isinstance(exc, OSError) else f"cannot store the certificate: {exc}"
            delay = renewal.failed(_dt.datetime.now(_dt.UTC), error, first=self.options.retry_first,
                                   jitter=random.random(), retry_after=getattr(exc, "retry_after", None))
            log.error(
                "certificate order failed; trying again later",
                extra={"host": host, "error": error, "failures": renewal.failures, "retry_in": round(delay, 1),
                       "serving": f"the previous certificate (expires {_when(previous.not_after)})"
                       if previous is not None else "no certificate for this host yet"},
            )
            return False
        if self.renewals.get(host) is not renewal:  # dropped by a reload meanwhile
            return False
        self.certificates[host] = loaded
        self.obtained += 1
        assert loaded.not_before is not None
        renewal.succeeded(loaded.not_before, loaded.not_after, renew_before=self.options.renew_before)
        log.info("certificate obtained", extra={
            "host": host, "cert": loaded.cert_path, "serial": f"{loaded.serial:x}",
            "not_after": _when(loaded.not_after), "renew_at": _when(renewal.due) if renewal.due else "now",
            "replaced": f"{previous.serial:x}" if previous is not None else None})
        if self.on_change is not None:
            self.on_change(host, loaded)
        return True


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run ``function`` in a daemon thread (never joined at exit, unlike the default executor's threads)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = function(*args)
        except BaseException as exc:  # handed to the awaiting task
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:  # the loop is closed: serve-policy stopped meanwhile
            pass

    threading.Thread(target=work, name="mxsec-acme", daemon=True).start()
    return await done
