"""The policy cache's tables, one definition for SQLite and PostgreSQL (the Redis store keeps hashes instead).

``mxsec_policy`` has one row per policy domain, in :attr:`~mxsec.storage.base.CacheEntry.COLUMNS` order, and
``mxsec_schema_version`` the version. Tables are prefixed ``mxsec_`` so the file or database may be shared with
another program's tables (for instance a postfix-mta-sts-resolver cache file reused by a migrated configuration).
"""

from __future__ import annotations

from .base import CacheEntry
from .migrations import Schema

__all__ = ["COLUMNS", "POLICY_SCHEMA"]

#: the columns of ``mxsec_policy``, comma-separated
COLUMNS = ", ".join(CacheEntry.COLUMNS)
#: Version 1: the table of policies; version 2: the leases of a fleet (PostgreSQL only).
POLICY_SCHEMA = Schema(
    what="cache database",
    version=2,
    migrations={
        0: [{
            "sqlite": "CREATE TABLE IF NOT EXISTS mxsec_policy (domain TEXT PRIMARY KEY NOT NULL, policy_id TEXT "
                      "NOT NULL, body TEXT NOT NULL, fetched_at REAL NOT NULL, expires_at REAL NOT NULL, "
                      "checked_at REAL NOT NULL, mode TEXT NOT NULL) WITHOUT ROWID",
            "postgresql": "CREATE TABLE IF NOT EXISTS mxsec_policy (domain TEXT PRIMARY KEY NOT NULL, policy_id "
                          "TEXT NOT NULL, body TEXT NOT NULL, fetched_at DOUBLE PRECISION NOT NULL, expires_at "
                          "DOUBLE PRECISION NOT NULL, checked_at DOUBLE PRECISION NOT NULL, mode TEXT NOT NULL)",
        }],
        # Version 2: the leases a fleet of daemons on one PostgreSQL database resolves each domain under
        # (docs/fleet.md); SQLite caches belong to one daemon and have none.
        1: [{
            "postgresql": "CREATE TABLE IF NOT EXISTS mxsec_lease (domain TEXT PRIMARY KEY NOT NULL, owner TEXT NOT "
                          "NULL, outcome TEXT, until DOUBLE PRECISION NOT NULL)",
        }],
    },
    version_table="mxsec_schema_version",
    lock_key=0x6D78736563535453,  # the bytes "mxsecSTS"
    newer_advice=" or use another cache database",
)
