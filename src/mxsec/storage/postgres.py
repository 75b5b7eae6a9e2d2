"""PostgreSQL policy store (``postgresql://``, ``postgres://``): one cache shared by a fleet of MTAs.

URL: a libpq connection URI, ``postgresql://[USER[:PASSWORD]@][HOST][:PORT]/DBNAME[?PARAM=VALUE...]``, for
instance ``postgresql://mxsec@db.example.net/mxsec`` or, over the local unix socket,
``postgresql://mxsec@/mxsec?host=/var/run/postgresql``. Any libpq parameter may be given in the query string
(``sslmode=verify-full``, ``passfile=...``); a password can also come from ``~/.pgpass`` or ``PGPASSWORD``.

Tables (created on first use with ``CREATE TABLE IF NOT EXISTS``, under an advisory lock so that several
daemons starting together do not race): ``mxsec_policy`` with the same columns as the SQLite cache, and
``mxsec_schema_version``. The connecting role needs ``CREATE`` on the schema the first time, then only
``SELECT, INSERT, UPDATE, DELETE`` on ``mxsec_policy``.

Availability: opening never contacts the server. A fleet cache must not stop the daemon from starting or
serving: the connection is made on first use, every failure is a one-line
:class:`~mxsec.storage.base.StoreError` (the daemon logs it and answers from memory and from resolution), and the
next operation connects again. Timeouts: connect 2 s, statements 5 s (``statement_timeout``), and TCP
keepalives / ``tcp_user_timeout`` so that a vanished server is noticed within seconds.

One connection behind a lock: the store is safe to use from several threads, calls are serialised.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable, Iterable, TypeVar

from ..errors import ConfigError
from .base import CacheEntry, StoreError

SCHEMA_VERSION = 1
CONNECT_TIMEOUT = 2
STATEMENT_TIMEOUT_MS = 5000
#: pg_advisory_xact_lock key serialising schema creation (the bytes "mxsecSTS").
_MIGRATION_LOCK = 0x6D78736563535453

_COLUMNS = "domain, policy_id, body, fetched_at, expires_at, checked_at, mode"
_UPSERT = (
    f"INSERT INTO mxsec_policy ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (domain) DO UPDATE SET policy_id = EXCLUDED.policy_id, body = EXCLUDED.body, "
    "fetched_at = EXCLUDED.fetched_at, expires_at = EXCLUDED.expires_at, checked_at = EXCLUDED.checked_at, "
    "mode = EXCLUDED.mode"
)

# Defaults added to the URL's parameters unless it sets them.
_DEFAULT_PARAMS = {
    "connect_timeout": str(CONNECT_TIMEOUT),
    "application_name": "mxsec",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}

T = TypeVar("T")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def redact(url: str) -> str:
    """``url`` with the password replaced by ``***`` (for messages and logs)."""
    url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def _migrate_0_to_1(cur: Any) -> None:
    cur.execute(
        "CREATE TABLE IF NOT EXISTS mxsec_policy ("
        " domain TEXT PRIMARY KEY NOT NULL,"
        " policy_id TEXT NOT NULL,"
        " body TEXT NOT NULL,"
        " fetched_at DOUBLE PRECISION NOT NULL,"
        " expires_at DOUBLE PRECISION NOT NULL,"
        " checked_at DOUBLE PRECISION NOT NULL,"
        " mode TEXT NOT NULL"
        ")"
    )


# MIGRATIONS[n] upgrades a database at schema version n to version n + 1.
MIGRATIONS: dict[int, Callable[[Any], None]] = {
    0: _migrate_0_to_1,
}


def parse_url(url: str) -> dict[str, Any]:
    """Check ``url`` without connecting; return the libpq parameters (with mxsec's defaults added).

    ConfigError (one line) when bad.
    """
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # pragma: no cover - a dependency of mxsec
        raise ConfigError(
            "the postgresql cache backend needs psycopg (pip install 'psycopg[binary]>=3.1')"
        ) from None
    shown = redact(url)
    if url[:11].lower() == "postgres://":
        url = "postgresql://" + url[len("postgres://"):]
    elif url[:13].lower() == "postgresql://":
        url = "postgresql://" + url[len("postgresql://"):]
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(f"cache URL {shown!r}: {_one_line(exc)}") from None
    if not params.get("dbname"):
        raise ConfigError(f"cache URL {shown!r}: no database name; write postgresql://USER@HOST/DBNAME")
    port = str(params.get("port", "5432"))
    if not all(p.isascii() and p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
        raise ConfigError(f"cache URL {shown!r}: bad port {port!r}")
    for key, value in _DEFAULT_PARAMS.items():
        params.setdefault(key, value)
    return params


class PostgresStore:
    """A :class:`~mxsec.storage.base.PolicyStore` in a PostgreSQL database (see the module docstring)."""

    #: Operations go over the network: the daemon calls them off the event loop (``asyncio.to_thread``).
    remote = True

    def __init__(self, url: str, *, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> None:
        self.url = redact(url)
        params = parse_url(url)
        self._params: dict[str, Any] = params
        self._statement_timeout_ms = int(statement_timeout_ms)
        import psycopg

        self._psycopg = psycopg
        self._lock = threading.Lock()
        self._conn: Any = None
        self._closed = False

    # -- connection ----------------------------------------------------------------------------------------

    def _connect(self) -> Any:
        psycopg = self._psycopg
        conn = psycopg.connect(autocommit=True, **self._params)
        try:
            conn.execute(f"SET statement_timeout = {self._statement_timeout_ms}")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: Any) -> None:
        with conn.transaction():
            cur = conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute("CREATE TABLE IF NOT EXISTS mxsec_schema_version (version INTEGER NOT NULL)")
            row = cur.execute("SELECT max(version) FROM mxsec_schema_version").fetchone()
            found = int(row[0]) if row and row[0] is not None else 0
            if found > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.url}: schema version {found} was written by a newer mxsec (this one knows version "
                    f"{SCHEMA_VERSION}); upgrade mxsec or use another database"
                )
            version = found
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](cur)
                version += 1
            if version != found:
                cur.execute("DELETE FROM mxsec_schema_version")
                cur.execute("INSERT INTO mxsec_schema_version (version) VALUES (%s)", (version,))

    def _run(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` under the lock, connecting first if needed.

        A connection found broken (server restarted, network cut) is dropped and, if it was an old one, the
        call is tried once more on a new connection; every statement here can safely run twice.
        """
        psycopg = self._psycopg
        with self._lock:
            for attempt in range(2):
                if self._closed:
                    raise StoreError(f"{self.url}: store is closed")
                fresh = self._conn is None
                try:
                    if self._conn is None:
                        self._conn = self._connect()
                    return fn(self._conn)
                except psycopg.Error as exc:
                    broken = self._conn is None or self._conn.closed or self._conn.broken
                    if broken:
                        self._drop()
                    if broken and not fresh and attempt == 0:
                        continue
                    if fresh and self._conn is None:
                        raise StoreError(f"{self.url}: cannot connect: {_one_line(exc)}") from exc
                    raise StoreError(f"{self.url}: {what} failed: {_one_line(exc)}") from exc
                except StoreError:
                    self._drop()
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass


    # -- PolicyStore ---------------------------------------------------------------------------------------

    def load_all(self) -> list[CacheEntry]:
        rows = self._run("read", lambda conn: conn.execute(f"SELECT {_COLUMNS} FROM mxsec_policy").fetchall())
        return [CacheEntry.from_row(row) for row in rows]

    def get(self, domain: str) -> CacheEntry | None:
        row = self._run(
            "read",
            lambda conn: conn.execute(
                f"SELECT {_COLUMNS} FROM mxsec_policy WHERE domain = %s", (domain,)
            ).fetchone(),
        )
        return None if row is None else CacheEntry.from_row(row)

    def put(self, entry: CacheEntry) -> None:
        row = entry.to_row()
        self._run("write", lambda conn: conn.execute(_UPSERT, row))

    def put_many(self, entries: Iterable[CacheEntry]) -> None:
        # Last one wins for a domain given twice (ON CONFLICT cannot touch a row twice in one statement,
        # and executemany runs one statement per row, so this is only about the order).
        rows = [entry.to_row() for entry in entries]
        if not rows:
            return

        def write(conn: Any) -> None:
            with conn.transaction():
                conn.cursor().executemany(_UPSERT, rows)

        self._run("write", write)

    def delete(self, domain: str) -> None:
        self._run("delete", lambda conn: conn.execute("DELETE FROM mxsec_policy WHERE domain = %s", (domain,)))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()

    # -- extras ------------------------------------------------------------------------------------------

    def count(self) -> int:
        row = self._run("read", lambda conn: conn.execute("SELECT count(*) FROM mxsec_policy").fetchone())
        return int(row[0])

    def schema_version(self) -> int:
        row = self._run(
            "read", lambda conn: conn.execute("SELECT max(version) FROM mxsec_schema_version").fetchone()
        )
        return int(row[0])

    def __enter__(self) -> "PostgresStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"
