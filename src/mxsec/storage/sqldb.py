"""What the SQL databases of mxsec share: SQLite or PostgreSQL behind one URL, numbered migrations, one
transaction helper. The report receiver's database (:mod:`.reportdb`) and the TLSRPT sender's counting store
(:mod:`.senderdb`) are subclasses that bring their own tables.

URLs: :mod:`mxsec.storage.urls` (``sqlite:///PATH``, ``postgresql://USER@HOST[:PORT]/DB``). Each subclass
names its :class:`~mxsec.storage.migrations.Schema` (``SCHEMA``); the one runner of
:mod:`mxsec.storage.migrations` brings the database to it when it is opened.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from ..errors import one_line
from ..fsutil import make_dirs
from .base import StoreError
from ..extras import require
from .migrations import Schema, migrate
from .urls import SQL_SCHEMES, parse_url, redact

__all__ = ["SqlDatabase"]

class SqlDatabase:
    """One connection to SQLite or PostgreSQL. Safe to share between threads (calls are serialised)."""

    #: The tables and their migrations; ``SCHEMA.what`` names the database in messages ("report database").
    SCHEMA: ClassVar[Schema]
    #: SQLite ``synchronous`` (the database runs in WAL mode). ``NORMAL``: a commit survives a crash of the
    #: process but may be rolled back by a power cut or a kernel crash; ``FULL``: it survives those too, at the
    #: price of an fsync per commit.
    SQLITE_SYNCHRONOUS: ClassVar[str] = "NORMAL"

    @property
    def what(self) -> str:
        return self.SCHEMA.what

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = parse_url(url, self.what, SQL_SCHEMES)
        self.dialect = parsed.scheme
        self._target = parsed.path if parsed.path is not None else url
        self._lock = threading.RLock()
        self._conn: Any = None
        with self._lock:
            self._connect()

    def _connect(self) -> None:
        if self.dialect == "sqlite":
            path = self._target
            directory = os.path.dirname(os.path.abspath(path))
            try:
                make_dirs(directory)
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.SQLITE_SYNCHRONOUS}")
                conn.execute("PRAGMA foreign_keys=ON")
            except (OSError, sqlite3.Error) as exc:
                raise StoreError(f"{self.what} {path}: {one_line(exc)}") from None
            self._conn = conn
        else:
            psycopg = require("psycopg", "postgres", f"a postgresql:// {self.what}")
            try:
                self._conn = psycopg.connect(self._target, autocommit=True, connect_timeout=5)
            except psycopg.Error as exc:
                raise StoreError(f"{self.what} {redact(self.url)}: {one_line(exc)}") from None
        self._migrate()

    def _sql(self, statement: str) -> str:
        return statement if self.dialect == "sqlite" else statement.replace("?", "%s")

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self.dialect == "sqlite":
            return (sqlite3.Error,)
        import psycopg

        return (psycopg.Error,)

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(self._sql(statement), params)

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._execute(statement, params).fetchall())
            except self._errors() as exc:
                raise StoreError(f"{self.what}: {one_line(exc)}") from None

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")

    def _transaction(self) -> Any:
        db = self

        class _Tx:
            def __enter__(self) -> None:
                db._begin()

            def __exit__(self, kind: Any, exc: Any, tb: Any) -> Literal[False]:
                db._conn.execute("ROLLBACK" if kind else "COMMIT")
                return False

        return _Tx()

    def _migrate(self) -> None:
        try:
            migrate(self._conn, self.dialect, self.SCHEMA, f"{self.what} {redact(self.url)}")
        except self._errors() as exc:
            raise StoreError(f"{self.what} {redact(self.url)}: {one_line(exc)}") from None

    @property
    def schema_version(self) -> int:
        with self._lock:
            row = self._conn.execute(f"SELECT max(version) FROM {self.SCHEMA.version_table}").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

