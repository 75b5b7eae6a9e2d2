"""Storage: the policy cache backends and the SQL databases of received reports and of the TLSRPT sender.

- :func:`open_store` turns a cache URL into a :class:`PolicyStore` (:mod:`.base`): :class:`MemoryStore`,
  :class:`SqliteStore` (the default), :class:`~mxsec.storage.redis.RedisStore`,
  :class:`~mxsec.storage.postgres.PostgresStore`; their tables are :mod:`.policy_tables`.
- :mod:`.reportdb` (reports received) and :mod:`.senderdb` (the TLSRPT sender's counts) are SQLite or
  PostgreSQL databases built on :mod:`.sqldb`.
- :mod:`.urls` checks every URL (and hides passwords in messages); :mod:`.migrations` is the one schema
  migration runner of every SQL database.

Remote stores (``remote = True``: Redis, PostgreSQL) never contact their server when opened: a bad URL is a
:class:`~mxsec.errors.ConfigError` at once, an unreachable server is a :class:`StoreError` from each operation,
so a daemon whose shared cache is down still starts and serves.
"""

from __future__ import annotations

from .base import CacheEntry, PolicyStore, StoreError
from .memory import MemoryStore
from .sqlite import SqliteStore
from .urls import KNOWN_SCHEMES, StoreURL, parse_url

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

#: Schemes :func:`open_store` can open in this version.
SUPPORTED_SCHEMES = KNOWN_SCHEMES


def parse_store_url(url: str) -> StoreURL:
    """Check the form of a cache URL (any of :data:`KNOWN_SCHEMES`) without opening anything; ConfigError
    (one line) when bad."""
    return parse_url(url, "cache", KNOWN_SCHEMES)


def open_store(url: str, *, local_copy: str | None = None) -> PolicyStore:
    """Open the policy store named by ``url``; ConfigError (one line) when it cannot be used.

    Remote stores are opened without contacting their server (see the module docstring); with ``local_copy``
    (the path of an SQLite file) a remote store keeps a copy of its policies there
    (:class:`~mxsec.storage.mirror.MirroredStore`).
    """
    parsed = parse_store_url(url)
    if parsed.scheme == "memory":
        return MemoryStore()
    if parsed.scheme == "sqlite":
        assert parsed.path is not None
        return SqliteStore(parsed.path)
    shared: PolicyStore
    if parsed.scheme == "postgresql":
        from .postgres import PostgresStore

        shared = PostgresStore(url)
    else:
        from .redis import RedisStore

        shared = RedisStore(url)
    if not local_copy:
        return shared
    from .mirror import MirroredStore

    return MirroredStore(shared, SqliteStore(local_copy))


def __getattr__(name: str) -> object:
    # The client libraries are imported only when a remote store is used.
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
