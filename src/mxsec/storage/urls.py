"""Database URLs, for every store mxsec opens: checked without contacting anything, redacted for messages.

One parser serves the policy cache (``cache.url``: every scheme) and the SQL databases (received reports, the
TLSRPT sender's counts: SQLite or PostgreSQL only):

- ``sqlite:///relative/path`` (relative to the working directory) and ``sqlite:////absolute/path``;
- ``memory://`` (nothing survives a restart);
- ``redis://HOST[:PORT][/DB]``, ``rediss://...`` (TLS), ``redis+unix:///path/to/socket?db=N``;
- ``postgresql://USER@HOST[:PORT]/DB`` (also ``postgres://``), any libpq URI.

A bad URL is a :class:`~mxsec.errors.ConfigError` whose one line names what the URL is for ("cache URL …",
"report database URL …") and never shows a password.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["KNOWN_SCHEMES", "SQL_SCHEMES", "StoreURL", "parse_url", "redact"]

#: Schemes of the policy cache (``cache.url``).
KNOWN_SCHEMES = ("sqlite", "memory", "redis", "rediss", "redis+unix", "postgresql", "postgres")
#: Schemes of the SQL databases (reports received, TLSRPT sender).
SQL_SCHEMES = ("sqlite", "postgresql", "postgres")

#: How each scheme is shown in a hint, in this order.
_FORMS = {"sqlite": "sqlite:///PATH", "memory": "memory://", "redis": "redis://HOST:PORT/DB",
          "postgresql": "postgresql://USER@HOST/DB"}


@dataclass(frozen=True)
class StoreURL:
    """A checked URL: ``scheme`` (``postgres`` is written ``postgresql``) and, for SQLite, the file ``path``."""

    scheme: str
    url: str
    path: str | None = None


def redact(url: str) -> str:
    """``url`` with a password (in the user part or a ``password=`` parameter) replaced by ``***``."""
    url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def _hint(schemes: Sequence[str]) -> str:
    forms = [form for scheme, form in _FORMS.items() if scheme in schemes]
    return ", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else forms[0]


def parse_url(url: str, what: str = "cache", schemes: Sequence[str] = KNOWN_SCHEMES) -> StoreURL:
    """Check the form of a ``what`` URL (one of ``schemes``) without opening anything; ConfigError when bad."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{what} URL is empty; use {_hint(schemes)}")
    if any(ch in url for ch in "\r\n\0"):
        raise ConfigError(f"{what} URL {redact(url)!r}: contains a control character")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in schemes:
        raise ConfigError(f"{what} URL {redact(url)!r}: unknown scheme; use {_hint(schemes)}")
    if scheme == "memory":
        if rest:
            raise ConfigError(f"{what} URL {url!r}: memory:// takes nothing after the scheme")
        return StoreURL("memory", url)
    if scheme == "sqlite":
        if not rest.startswith("/"):
            raise ConfigError(f"{what} URL {url!r}: write sqlite:///relative/path or sqlite:////absolute/path "
                              "(three slashes, then the file name)")
        path = rest[1:]
        if not path or path.endswith("/"):
            raise ConfigError(f"{what} URL {url!r}: no database file name")
        if "?" in path or "#" in path:
            raise ConfigError(f"{what} URL {url!r}: query strings and fragments are not supported")
        return StoreURL("sqlite", url, path)
    if not rest:
        raise ConfigError(f"{what} URL {redact(url)!r}: no host")
    # The rest of the URL is checked now too (still without contacting anything), so a configuration check
    # catches it; the client libraries are imported only for these schemes.
    if scheme in ("postgresql", "postgres"):
        from .postgres import connection_params

        connection_params(url, what)
        return StoreURL("postgresql", url)
    from .redis import parse_url as redis_params

    redis_params(url)
    return StoreURL(scheme, url)
