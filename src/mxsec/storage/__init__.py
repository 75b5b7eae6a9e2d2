"""Policy cache storage: :func:`open_store` turns a cache URL into a :class:`PolicyStore`.

URLs:

- ``sqlite:///relative/path`` (relative to the working directory) and ``sqlite:////absolute/path``;
- ``memory://`` (nothing survives a restart);
- ``redis://HOST[:PORT][/DB]``, ``rediss://...`` (TLS), ``redis+unix:///path/to/socket?db=N``: a Redis server
  (:class:`~mxsec.storage.redis.RedisStore`);
- ``postgresql://USER@HOST[:PORT]/DB`` (also ``postgres://``): a PostgreSQL database
  (:class:`~mxsec.storage.postgres.PostgresStore`).

Remote stores (``remote = True``: Redis, PostgreSQL) never contact their server when opened: a bad URL is a
:class:`~mxsec.errors.ConfigError` at once, an unreachable server is a :class:`StoreError` from each operation,
so a daemon whose shared cache is down still starts and serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError
from .base import CacheEntry, PolicyStore, StoreError
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = [
    "CacheEntry",
    "PolicyStore",
    "StoreError",
    "MemoryStore",
    "SqliteStore",
    "RedisStore",
    "PostgresStore",
    "StoreURL",
    "parse_store_url",
    "open_store",
    "KNOWN_SCHEMES",
    "SUPPORTED_SCHEMES",
]

#: Schemes accepted in configuration (``cache.url``).
KNOWN_SCHEMES = ("sqlite", "memory", "redis", "rediss", "redis+unix", "postgresql", "postgres")
#: Schemes :func:`open_store` can open in this version.
SUPPORTED_SCHEMES = KNOWN_SCHEMES


@dataclass(frozen=True)
class StoreURL:
    """A checked cache URL: ``scheme`` (one of :data:`KNOWN_SCHEMES`) and, for SQLite, the file ``path``."""

    scheme: str
    url: str
    path: str | None = None


def parse_store_url(url: str) -> StoreURL:
    """Check the form of a cache URL without opening anything; raise ConfigError (one line) when bad."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("cache URL is empty; use sqlite:///PATH or memory://")
    if any(ch in url for ch in "\r\n\0"):
        raise ConfigError(f"cache URL {url!r}: contains a control character")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in KNOWN_SCHEMES:
        raise ConfigError(
            f"cache URL {_redact(url)!r}: unknown scheme; use sqlite:///PATH, memory://, redis://HOST:PORT/DB "
            "or postgresql://USER@HOST/DB"
        )
    if scheme == "memory":
        if rest:
            raise ConfigError(f"cache URL {url!r}: memory:// takes nothing after the scheme")
        return StoreURL("memory", url)
    if scheme == "sqlite":
        if not rest.startswith("/"):
            raise ConfigError(
                f"cache URL {url!r}: write sqlite:///relative/path or sqlite:////absolute/path "
                "(three slashes, then the file name)"
            )
        path = rest[1:]
        if not path or path.endswith("/"):
            raise ConfigError(f"cache URL {url!r}: no database file name")
        if "?" in path or "#" in path:
            raise ConfigError(f"cache URL {url!r}: query strings and fragments are not supported")
        return StoreURL("sqlite", url, path)
    if scheme == "postgres":
        scheme = "postgresql"
    if not rest:
        raise ConfigError(f"cache URL {_redact(url)!r}: no host")
    # Check the rest of the URL now (still without contacting anything), so a configuration check catches it.
    if scheme == "postgresql":
        from .postgres import parse_url as check
    else:
        from .redis import parse_url as check
    check(url)
    return StoreURL(scheme, url)


def _redact(url: str) -> str:
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def open_store(url: str) -> PolicyStore:
    """Open the policy store named by ``url``; ConfigError (one line) when it cannot be used.

    Remote stores are opened without contacting their server (see the module docstring).
    """
    parsed = parse_store_url(url)
    if parsed.scheme == "memory":
        return MemoryStore()
    if parsed.scheme == "sqlite":
        assert parsed.path is not None
        return SqliteStore(parsed.path)
    if parsed.scheme == "postgresql":
        from .postgres import PostgresStore

        return PostgresStore(url)
    from .redis import RedisStore

    return RedisStore(url)


def __getattr__(name: str) -> object:
    # The client libraries are imported only when a remote store is used.
    if name == "RedisStore":
        from .redis import RedisStore as cls
    elif name == "PostgresStore":
        from .postgres import PostgresStore as cls
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls
