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

import threading
import time
from typing import Any, Callable, Iterable, TypeVar

from ..errors import ConfigError, one_line
from ..extras import require
from .announcements import LISTEN_POLL, deliver, listen_in_thread, message
from .base import CacheEntry, Claim, StoreError
from .migrations import migrate
from .policy_tables import COLUMNS, POLICY_SCHEMA
from .urls import redact

CONNECT_TIMEOUT = 2
STATEMENT_TIMEOUT_MS = 5000
_UPSERT = (
    f"INSERT INTO mxsec_policy ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (domain) DO UPDATE SET policy_id = EXCLUDED.policy_id, body = EXCLUDED.body, "
    "fetched_at = EXCLUDED.fetched_at, expires_at = EXCLUDED.expires_at, checked_at = EXCLUDED.checked_at, "
    "mode = EXCLUDED.mode "
    # compare-and-set: an older fetch never overwrites a newer policy (another daemon of the fleet)
    "WHERE mxsec_policy.fetched_at <= EXCLUDED.fetched_at"
)
_NOW = "extract(epoch from clock_timestamp())"
#: take the lease unless it is held or its published outcome still holds (the database's clock decides)
_CLAIM = (
    f"INSERT INTO mxsec_lease (domain, owner, outcome, until) VALUES (%s, %s, NULL, {_NOW} + %s) "
    "ON CONFLICT (domain) DO UPDATE SET owner = EXCLUDED.owner, outcome = NULL, until = EXCLUDED.until "
    f"WHERE mxsec_lease.until < {_NOW} RETURNING owner"
)
#: leases and outcomes past their time are deleted at most this often (seconds) by each store object
LEASE_SWEEP_INTERVAL = 60.0
#: NOTIFY channel of announcements (payload: announcements.message)
CHANNEL = "mxsec_policy_changes"

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


def connection_params(url: str, what: str = "cache") -> dict[str, Any]:
    """Check the ``what`` URL ``url`` without connecting; return the libpq parameters (with mxsec's defaults
    added).

    ConfigError (one line) when bad.
    """
    psycopg = require("psycopg", "postgres", "a postgresql:// database")
    from psycopg.conninfo import conninfo_to_dict

    shown = redact(url)
    if url[:11].lower() == "postgres://":
        url = "postgresql://" + url[len("postgres://"):]
    elif url[:13].lower() == "postgresql://":
        url = "postgresql://" + url[len("postgresql://"):]
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(f"{what} URL {shown!r}: {one_line(exc)}") from None
    if not params.get("dbname"):
        raise ConfigError(f"{what} URL {shown!r}: no database name; write postgresql://USER@HOST/DBNAME")
    port = str(params.get("port", "5432"))
    if not all(p.isascii() and p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
        raise ConfigError(f"{what} URL {shown!r}: bad port {port!r}")
    for key, value in _DEFAULT_PARAMS.items():
        params.setdefault(key, value)
    return params


class PostgresStore:
    """A :class:`~mxsec.storage.base.PolicyStore` in a PostgreSQL database (see the module docstring)."""

    #: Operations go over the network: the daemon calls them off the event loop (``asyncio.to_thread``).
    remote = True

    def __init__(self, url: str, *, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> None:
        self.url = redact(url)
        params = connection_params(url)
        self._params: dict[str, Any] = params
        self._statement_timeout_ms = int(statement_timeout_ms)
        import psycopg

        self._psycopg = psycopg
        self._lock = threading.Lock()
        self._conn: Any = None
        self._closed = False
        self._leases_swept = time.monotonic()

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
        try:
            migrate(conn, "postgresql", POLICY_SCHEMA, self.url)
        except ConfigError as exc:  # a newer schema: a store error, so the daemon keeps serving from memory
            raise StoreError(str(exc)) from None

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
                        raise StoreError(f"{self.url}: cannot connect: {one_line(exc)}") from exc
                    raise StoreError(f"{self.url}: {what} failed: {one_line(exc)}") from exc
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
        rows = self._run("read", lambda conn: conn.execute(f"SELECT {COLUMNS} FROM mxsec_policy").fetchall())
        return [CacheEntry.from_row(row) for row in rows]

    def get(self, domain: str) -> CacheEntry | None:
        row = self._run(
            "read",
            lambda conn: conn.execute(
                f"SELECT {COLUMNS} FROM mxsec_policy WHERE domain = %s", (domain,)
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

    # -- FleetStore ---------------------------------------------------------------------------------------

    def claim(self, domain: str, owner: str, ttl: float) -> Claim:
        def take(conn: Any) -> Claim:
            if conn.execute(_CLAIM, (domain, owner, float(ttl))).fetchone() is not None:
                return Claim(True)
            row = conn.execute(f"SELECT outcome FROM mxsec_lease WHERE domain = %s AND until >= {_NOW}",
                               (domain,)).fetchone()
            return Claim(False, row[0] if row is not None else None)

        return self._run("lease", take)

    def publish(self, domain: str, owner: str, outcome: str, ttl: float) -> None:
        self._run("lease", lambda conn: conn.execute(
            f"UPDATE mxsec_lease SET outcome = %s, owner = '', until = {_NOW} + %s "
            "WHERE domain = %s AND owner = %s AND outcome IS NULL", (outcome, float(ttl), domain, owner)))
        self._sweep_leases()

    def release(self, domain: str, owner: str) -> None:
        self._run("lease", lambda conn: conn.execute(
            "DELETE FROM mxsec_lease WHERE domain = %s AND owner = %s AND outcome IS NULL", (domain, owner)))
        self._sweep_leases()

    def announce(self, domain: str, owner: str) -> None:
        self._run("announce", lambda conn: conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, message(owner, domain))))

    def listen(self, on_change: Callable[[str, str], None]) -> Callable[[], None]:
        psycopg = self._psycopg

        def session(stop: threading.Event) -> None:
            with psycopg.connect(autocommit=True, **self._params) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                while not stop.is_set():
                    for note in conn.notifies(timeout=LISTEN_POLL, stop_after=1):
                        deliver(note.payload, on_change)

        return listen_in_thread("mxsec-postgres-listen", session, (psycopg.Error,), connect_timeout=CONNECT_TIMEOUT)

    def _sweep_leases(self) -> None:
        now = time.monotonic()
        if now - self._leases_swept < LEASE_SWEEP_INTERVAL:
            return
        self._leases_swept = now
        self._run("lease", lambda conn: conn.execute(f"DELETE FROM mxsec_lease WHERE until < {_NOW} - 60"))

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
