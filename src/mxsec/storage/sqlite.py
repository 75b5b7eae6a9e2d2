"""SQLite policy store (``sqlite:///path``), the default cache backend.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. In that combination a COMMIT appends the
transaction to the ``-wal`` file with write(2) before it returns, and the WAL is fsync'ed only at checkpoints.
Once ``put`` has returned, the data is in the operating system's page cache, which belongs to the kernel, not to
our process: a crash of mxsec, an OOM kill or ``kill -9`` loses nothing. Only an operating-system crash or a power
cut can roll back the last few transactions, and even then the database stays consistent (never corrupt). For a
cache of policies that can always be fetched again this is the right trade against an fsync per write.

Tables: :mod:`mxsec.storage.policy_tables`; schema migrations: :mod:`mxsec.storage.migrations`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Iterable

from ..errors import ConfigError, one_line
from ..fsutil import make_dirs
from .base import CacheEntry, StoreError
from .migrations import migrate
from .policy_tables import COLUMNS, POLICY_SCHEMA

class SqliteStore:
    """A :class:`~mxsec.storage.base.PolicyStore` in one SQLite file."""

    #: Local file, short transactions: the daemon may call it from the event loop.
    remote = False

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        parent = os.path.dirname(os.path.abspath(path))
        try:
            make_dirs(parent)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot create directory {parent}: {exc.strerror or exc}") from None
        conn = None
        try:
            conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            # Reading the schema is the first access to the file: a file that is not a database fails here.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigError(f"{path}: cannot switch the cache database to WAL mode (got {mode})")
            # See the module docstring: committed transactions survive a kill -9 of the process.
            conn.execute("PRAGMA synchronous=NORMAL")
            migrate(conn, "sqlite", POLICY_SCHEMA, path)
            integrity = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if integrity != "ok":
                raise ConfigError(f"{path}: cache database is damaged ({integrity}); remove it, it is only a cache")
        except ConfigError:
            if conn is not None:
                conn.close()
            raise
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise ConfigError(
                f"{path}: unusable cache database ({one_line(exc)}); check its permissions, "
                "or remove it if it is damaged (it is only a cache)"
            ) from None
        self._conn = conn

    # -- helpers -----------------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: store is closed")
        return self._conn


    def _write(self, sql: str, rows: list[tuple]) -> None:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(sql, rows)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: write failed: {one_line(exc)}") from exc

    # -- PolicyStore ---------------------------------------------------------------------------------------

    def load_all(self) -> list[CacheEntry]:
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(f"SELECT {COLUMNS} FROM mxsec_policy").fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: read failed: {one_line(exc)}") from exc
        return [CacheEntry.from_row(row) for row in rows]

    def get(self, domain: str) -> CacheEntry | None:
        with self._lock:
            conn = self._connection()
            try:
                row = conn.execute(
                    f"SELECT {COLUMNS} FROM mxsec_policy WHERE domain = ?", (domain,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: read failed: {one_line(exc)}") from exc
        return None if row is None else CacheEntry.from_row(row)

    def put(self, entry: CacheEntry) -> None:
        self._write(
            f"INSERT OR REPLACE INTO mxsec_policy ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [entry.to_row()],
        )

    def put_many(self, entries: Iterable[CacheEntry]) -> None:
        rows = [entry.to_row() for entry in entries]
        if rows:
            self._write(
                f"INSERT OR REPLACE INTO mxsec_policy ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )

    def delete(self, domain: str) -> None:
        self._write("DELETE FROM mxsec_policy WHERE domain = ?", [(domain,)])

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            conn.close()

    # -- extras ------------------------------------------------------------------------------------------

    def count(self) -> int:
        with self._lock:
            conn = self._connection()
            try:
                return int(conn.execute("SELECT count(*) FROM mxsec_policy").fetchone()[0])
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: read failed: {one_line(exc)}") from exc

    def journal_mode(self) -> str:
        with self._lock:
            return str(self._connection().execute("PRAGMA journal_mode").fetchone()[0]).lower()

    def schema_version(self) -> int:
        with self._lock:
            row = self._connection().execute("SELECT max(version) FROM mxsec_schema_version").fetchone()
        return int(row[0])

    def __enter__(self) -> "SqliteStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"
