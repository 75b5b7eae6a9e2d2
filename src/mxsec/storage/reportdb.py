"""The database of received TLSRPT reports (``mxsec reports …``): SQLite by default, PostgreSQL for a team.

One schema, written once in portable SQL, with numbered migrations; three tables:

- ``tlsrpt_report``: one row per report, with the raw JSON as received (after decompression), the warnings
  the parser recorded, where it came from (file, message, Maildir, IMAP, HTTPS POST) and its DKIM status;
- ``tlsrpt_policy``: one row per ``policies[]`` entry (policy type, domain, strings, MX hosts, counts);
- ``tlsrpt_failure``: one row per ``failure-details[]`` entry.

De-duplication and conflicts: a report is identified by (organization-name, report-id) (RFC 8460 §4.4 makes
report-id unique per reporter). Ingesting the same JSON again changes nothing and is reported as ``duplicate``.
A copy whose JSON differs from the stored one(s) is a ``conflict``: it is stored too (nothing is ever silently
replaced or dropped: anyone able to POST a report could otherwise pre-empt a genuine one by guessing its
report-id), and exactly one copy of each (organization-name, report-id) is *counted* in the figures:

- an authenticated copy (``auth`` ``dkim``: DKIM pass on the report's message; ``token`` or ``mtls``: POSTed by
  an authenticated client) before an unauthenticated one (``none``);
- among equally authenticated copies, the one received first (then the lowest row id).

The others stay stored and visible (:meth:`ReportDB.conflicts`, :meth:`ReportDB.copies`). The choice is kept
in the ``counted`` column and made again whenever a copy arrives or goes (retention), under a per-report
lock on PostgreSQL so that concurrent writers agree.

Transactions: :meth:`ReportDB.ingest` stores a batch of reports in one transaction, so a crash in the middle
of an input (a file, a message, an mbox) leaves all of it or none of it. Times are integer UTC epoch seconds;
a report's *day* is the UTC day of its start.

URLs: ``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``postgresql://USER@HOST[:PORT]/DB``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Iterable, NamedTuple, Sequence

from ..errors import one_line
from ..tlsrpt.report import Report
from .base import StoreError
from .urls import redact
from .migrations import Schema, Statement
from .sqldb import SqlDatabase

#: First key of the PostgreSQL advisory locks taken per (organization, report-id) while choosing the counted copy
#: (the bytes "mxRP"); the second key is a CRC-32 of the pair.
_PG_REPORT_LOCK = 0x6D785250

#: How a copy was authenticated: ``dkim`` (DKIM pass on the message that carried it), ``token`` (POST with a
#: configured bearer token), ``mtls`` (POST over TLS with a verified client certificate), ``none``.
AUTH_VALUES = ("dkim", "token", "mtls", "none")
AUTHENTICATED = ("dkim", "token", "mtls")

#: Name used in summaries for policies whose report named no policy domain at all.
NO_DOMAIN = "(none)"

_REPORT_V2 = """CREATE TABLE {table} (
            id {id},
            organization_name TEXT NOT NULL,
            report_id TEXT NOT NULL,
            contact_info TEXT,
            submitter TEXT,
            start_ts {big} NOT NULL,
            end_ts {big} NOT NULL,
            successful {big} NOT NULL,
            failed {big} NOT NULL,
            source TEXT NOT NULL,
            source_name TEXT,
            source_format TEXT NOT NULL,
            dkim TEXT,
            dkim_domains TEXT,
            warnings TEXT NOT NULL,
            raw_sha256 TEXT NOT NULL,
            raw_json {blob} NOT NULL,
            received_ts {big} NOT NULL,
            auth TEXT NOT NULL DEFAULT 'none',
            auth_name TEXT,
            counted INTEGER NOT NULL DEFAULT 1,
            UNIQUE (organization_name, report_id, raw_sha256)
        )"""
_V1_COLUMNS = (
    "id, organization_name, report_id, contact_info, submitter, start_ts, end_ts, successful, failed, source, "
    "source_name, source_format, dkim, dkim_domains, warnings, raw_sha256, raw_json, received_ts"
)

# Each migration is a list of statements (see mxsec.storage.migrations).
_MIGRATIONS: dict[int, list[Statement]] = {
    0: [
        """CREATE TABLE tlsrpt_report (
            id {id},
            organization_name TEXT NOT NULL,
            report_id TEXT NOT NULL,
            contact_info TEXT,
            submitter TEXT,
            start_ts {big} NOT NULL,
            end_ts {big} NOT NULL,
            successful {big} NOT NULL,
            failed {big} NOT NULL,
            source TEXT NOT NULL,
            source_name TEXT,
            source_format TEXT NOT NULL,
            dkim TEXT,
            dkim_domains TEXT,
            warnings TEXT NOT NULL,
            raw_sha256 TEXT NOT NULL,
            raw_json {blob} NOT NULL,
            received_ts {big} NOT NULL,
            UNIQUE (organization_name, report_id)
        )""",
        "CREATE INDEX tlsrpt_report_start ON tlsrpt_report (start_ts)",
        """CREATE TABLE tlsrpt_policy (
            id {id},
            report {big} NOT NULL REFERENCES tlsrpt_report (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            policy_type TEXT NOT NULL,
            policy_domain TEXT,
            policy_string TEXT NOT NULL,
            mx_host TEXT NOT NULL,
            successful {big} NOT NULL,
            failed {big} NOT NULL,
            extra TEXT
        )""",
        "CREATE INDEX tlsrpt_policy_report ON tlsrpt_policy (report)",
        "CREATE INDEX tlsrpt_policy_domain ON tlsrpt_policy (policy_domain)",
        """CREATE TABLE tlsrpt_failure (
            id {id},
            policy {big} NOT NULL REFERENCES tlsrpt_policy (id) ON DELETE CASCADE,
            report {big} NOT NULL REFERENCES tlsrpt_report (id) ON DELETE CASCADE,
            result_type TEXT NOT NULL,
            sending_mta_ip TEXT,
            receiving_mx_hostname TEXT,
            receiving_mx_helo TEXT,
            receiving_ip TEXT,
            failed_session_count {big} NOT NULL,
            additional_information TEXT,
            failure_reason_code TEXT,
            extra TEXT
        )""",
        "CREATE INDEX tlsrpt_failure_policy ON tlsrpt_failure (policy)",
        "CREATE INDEX tlsrpt_failure_report ON tlsrpt_failure (report)",
    ],
    # 1 -> 2: conflicting copies are kept (unique per JSON digest, not per report-id), with how each was
    # authenticated and which one the figures count. SQLite cannot drop a constraint: the table is rebuilt
    # (ids kept, foreign keys off meanwhile, see sqldb); PostgreSQL alters it in place.
    1: [
        {"sqlite": _REPORT_V2.replace("{table}", "tlsrpt_report_v2")},
        {"sqlite": f"INSERT INTO tlsrpt_report_v2 ({_V1_COLUMNS}, auth, counted) SELECT {_V1_COLUMNS}, "
                   "CASE WHEN dkim = 'pass' THEN 'dkim' ELSE 'none' END, 1 FROM tlsrpt_report"},
        {"sqlite": "DROP TABLE tlsrpt_report"},
        {"sqlite": "ALTER TABLE tlsrpt_report_v2 RENAME TO tlsrpt_report"},
        {"sqlite": "CREATE INDEX tlsrpt_report_start ON tlsrpt_report (start_ts)"},
        {"postgresql": "ALTER TABLE tlsrpt_report DROP CONSTRAINT tlsrpt_report_organization_name_report_id_key"},
        {"postgresql": "ALTER TABLE tlsrpt_report ADD COLUMN auth TEXT NOT NULL DEFAULT 'none'"},
        {"postgresql": "ALTER TABLE tlsrpt_report ADD COLUMN auth_name TEXT"},
        {"postgresql": "ALTER TABLE tlsrpt_report ADD COLUMN counted INTEGER NOT NULL DEFAULT 1"},
        {"postgresql": "UPDATE tlsrpt_report SET auth = 'dkim' WHERE dkim = 'pass'"},
        {"postgresql": "ALTER TABLE tlsrpt_report ADD CONSTRAINT tlsrpt_report_copy "
                       "UNIQUE (organization_name, report_id, raw_sha256)"},
        "CREATE INDEX tlsrpt_report_uncounted ON tlsrpt_report (counted, organization_name, report_id)",
    ],
}

_REPORT_COLUMNS = (
    "organization_name, report_id, contact_info, submitter, start_ts, end_ts, successful, failed, source, "
    "source_name, source_format, dkim, dkim_domains, warnings, raw_sha256, raw_json, received_ts, auth, "
    "auth_name, counted"
)
_POLICY_COLUMNS = (
    "report, position, policy_type, policy_domain, policy_string, mx_host, successful, failed, extra"
)
_FAILURE_COLUMNS = (
    "policy, report, result_type, sending_mta_ip, receiving_mx_hostname, receiving_mx_helo, receiving_ip, "
    "failed_session_count, additional_information, failure_reason_code, extra"
)


def _marks(columns: str) -> str:
    return ", ".join("?" for _ in columns.split(","))


_INSERT_REPORT = (
    f"INSERT INTO tlsrpt_report ({_REPORT_COLUMNS}) VALUES ({_marks(_REPORT_COLUMNS)}) "
    "ON CONFLICT (organization_name, report_id, raw_sha256) DO NOTHING RETURNING id"
)
_INSERT_POLICY = f"INSERT INTO tlsrpt_policy ({_POLICY_COLUMNS}) VALUES ({_marks(_POLICY_COLUMNS)}) RETURNING id"
_INSERT_FAILURE = f"INSERT INTO tlsrpt_failure ({_FAILURE_COLUMNS}) VALUES ({_marks(_FAILURE_COLUMNS)})"


_INSERT_REPORT_ROW = f"INSERT INTO tlsrpt_report (id, {_REPORT_COLUMNS}) VALUES (?, {_marks(_REPORT_COLUMNS)})"
_INSERT_POLICY_ROW = f"INSERT INTO tlsrpt_policy (id, {_POLICY_COLUMNS}) VALUES (?, {_marks(_POLICY_COLUMNS)})"


class _Batch(NamedTuple):
    rows: _NewRows
    #: (organization, report-id) -> (id, raw_sha256, auth, counted) of each stored copy, as the batch goes on.
    stored: dict[tuple[str, str], list[tuple[Any, ...]]]


def _report_row(item: Incoming, digest: str, raw: bytes, received: int, auth: str, counted: int) -> tuple[Any, ...]:
    """The values of :data:`_REPORT_COLUMNS` for one received report."""
    report = item.report
    warnings = report.warnings
    if item.transport_warnings:
        warnings = tuple(item.transport_warnings) + tuple(warnings)
    return (
        report.organization_name, report.report_id, report.contact_info, report.submitter,
        _ts(report.start), _ts(report.end), report.successful, report.failed, item.source, item.source_name,
        report.source_format, item.dkim, _json_strings(tuple(item.dkim_domains)), _warnings_json(warnings),
        digest, raw, received, auth, item.auth_name, counted,
    )


def _policy_row(report_pk: int, position: int, policy: Any) -> tuple[Any, ...]:
    """The values of :data:`_POLICY_COLUMNS` for one policy of a report."""
    return (
        report_pk, position, policy.policy_type, policy.policy_domain, _json_strings(tuple(policy.policy_string)),
        _json_strings(tuple(policy.mx_host)), policy.successful, policy.failed,
        _json(dict(policy.extra)) if policy.extra else None,
    )


def _failure_row(policy_pk: int, report_pk: int, detail: Any) -> tuple[Any, ...]:
    """The values of :data:`_FAILURE_COLUMNS` for one failure detail."""
    return (
        policy_pk, report_pk, detail.result_type, detail.sending_mta_ip, detail.receiving_mx_hostname,
        detail.receiving_mx_helo, detail.receiving_ip, detail.failed_session_count,
        detail.additional_information, detail.failure_reason_code,
        _json(dict(detail.extra)) if detail.extra else None,
    )


class _NewRows:
    """The rows of the new reports of one batch, with their ids given up front, written in one multi-row
    statement per table by :meth:`write`."""

    def __init__(self, db: ReportDB, reports: int, policies: int) -> None:
        self.db = db
        self.reports: list[tuple[Any, ...]] = []
        self.policies: list[tuple[Any, ...]] = []
        self.failures: list[tuple[Any, ...]] = []
        self.want = [reports, policies]
        self.report_ids: list[int] | None = None
        self.policy_ids: list[int] | None = None

    def invalidate(self) -> None:
        """Rows were written another way: ids are given again, above theirs, so that ids keep the order of
        arrival (the counted copy among equals is the one with the lowest id). On PostgreSQL the ids given but
        not used stay unused, as with any sequence."""
        self.report_ids = self.policy_ids = None

    def add(self, item: Incoming, raw: bytes, digest: str, auth: str, received: int) -> int:
        if self.report_ids is None:
            self.report_ids = self.db._reserve_ids("tlsrpt_report", self.want[0])
            self.report_ids.reverse()
        if self.policy_ids is None:
            self.policy_ids = self.db._reserve_ids("tlsrpt_policy", self.want[1])
            self.policy_ids.reverse()
        report = item.report
        report_pk = self.report_ids.pop()
        self.want[0] -= 1
        for position, policy in enumerate(report.policies):
            policy_pk = self.policy_ids.pop()
            self.want[1] -= 1
            self.policies.append((policy_pk, *_policy_row(report_pk, position, policy)))
            self.failures.extend(_failure_row(policy_pk, report_pk, detail) for detail in policy.failure_details)
        self.reports.append((report_pk, *_report_row(item, digest, raw, received, auth, 1)))
        return report_pk

    def write(self) -> None:
        if self.reports:
            self.db._write_rows(self.reports, self.policies, self.failures)
            self.reports, self.policies, self.failures = [], [], []


# --------------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Incoming:
    """A parsed report with where it came from: ``source`` is ``file``, ``stdin``, ``message``, ``mbox``,
    ``maildir``, ``imap`` or ``https``; ``source_name`` a path, a Message-ID or a client address; ``dkim``
    ``pass``/``fail``/``none`` for mailed reports (``None`` when not applicable). ``auth`` is how the copy was
    authenticated (:data:`AUTH_VALUES`); left ``None`` it is ``dkim`` for a DKIM pass, else ``none``;
    ``auth_name`` says by what (a token's fingerprint, a client certificate's subject)."""

    report: Report
    source: str
    source_name: str | None = None
    dkim: str | None = None
    dkim_domains: tuple[str, ...] = ()
    #: Warnings about the transport (message headers, attachment types), stored with the parser's.
    transport_warnings: tuple[Any, ...] = ()
    auth: str | None = None
    auth_name: str | None = None

    @property
    def authentication(self) -> str:
        if self.auth is not None:
            if self.auth not in AUTH_VALUES:
                raise ValueError(f"auth {self.auth!r}: one of {', '.join(AUTH_VALUES)}")
            return self.auth
        return "dkim" if self.dkim == "pass" else "none"


@dataclass(frozen=True)
class IngestResult:
    """``outcome``: ``stored``, ``duplicate`` (same JSON already stored: ``id`` is that row) or ``conflict``
    (stored, but other copies with different JSON under the same organization and report-id exist: ``others``).
    ``counted`` says whether this row is the copy the figures count (``counted_id``); ``auth`` is the row's
    authentication."""

    outcome: str
    id: int
    organization_name: str
    report_id: str
    auth: str = "none"
    counted: bool = True
    others: tuple[int, ...] = ()
    counted_id: int | None = None


@dataclass(frozen=True)
class Filters:
    """What to count: reports whose day is in [since, until] (both optional, inclusive), policies of one
    ``domain``, reports of one ``organization``. Only the counted copy of each report unless ``all_copies``."""

    since: date | None = None
    until: date | None = None
    domain: str | None = None
    organization: str | None = None
    all_copies: bool = False

    def clauses(self) -> tuple[list[str], list[Any]]:
        """SQL conditions over ``r`` (tlsrpt_report) and ``p`` (tlsrpt_policy) with their parameters."""
        where: list[str] = []
        params: list[Any] = []
        if self.since is not None:
            where.append("r.start_ts >= ?")
            params.append(_day_ts(self.since))
        if self.until is not None:
            where.append("r.start_ts < ?")
            params.append(_day_ts(self.until) + 86400)
        if self.domain is not None:
            if self.domain == NO_DOMAIN:
                where.append("p.policy_domain IS NULL")
            else:
                where.append("p.policy_domain = ?")
                params.append(self.domain.lower().rstrip("."))
        if self.organization is not None:
            where.append("r.organization_name = ?")
            params.append(self.organization)
        if not self.all_copies:
            where.append("r.counted = 1")
        return where, params


@dataclass
class Totals:
    reports: int = 0
    successful_sessions: int = 0
    failed_sessions: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "reports": self.reports,
            "successful_sessions": self.successful_sessions,
            "failed_sessions": self.failed_sessions,
        }

    @property
    def success_rate(self) -> float | None:
        total = self.successful_sessions + self.failed_sessions
        return self.successful_sessions / total if total else None


@dataclass
class ReportRow:
    id: int
    organization_name: str
    report_id: str
    contact_info: str | None
    start: datetime
    end: datetime
    successful: int
    failed: int
    source: str
    source_name: str | None
    dkim: str | None
    warnings: list[dict[str, str]]
    received: datetime
    policy_domains: list[str] = field(default_factory=list)
    auth: str = "none"
    auth_name: str | None = None
    counted: bool = True
    #: How many copies (this one included) share its organization and report-id.
    copies: int = 1


@dataclass
class ReportDetail:
    row: ReportRow
    policies: list[dict[str, Any]]
    raw_json: bytes
    source_format: str
    dkim_domains: list[str]


def _day_ts(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@functools.lru_cache(maxsize=1024)
def _ts(value: datetime) -> int:
    return int(value.timestamp())


def _from_ts(value: int) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _warnings_json(items: Iterable[Any]) -> str:
    items = tuple(items)
    if not items:
        return "[]"
    return _json([{"code": getattr(w, "code", "warning"), "message": str(w)} for w in items])


@functools.lru_cache(maxsize=4096)
def _json_strings(values: tuple[str, ...]) -> str:
    """:func:`_json` of a list of strings (policy strings, MX patterns, DKIM domains repeat from report to
    report: each distinct list is encoded once)."""
    return _json(list(values))


def _lock_key(organization: str, report_id: str) -> int:
    """The second key of the PostgreSQL advisory lock of (organization, report-id): a CRC-32 as a signed int."""
    digest = zlib.crc32(f"{len(organization)}:{organization}{report_id}".encode("utf-8", "surrogatepass"))
    return digest - (1 << 32) if digest >= 1 << 31 else digest


def _domain_key(domain: str | None) -> str:
    return domain if domain is not None else NO_DOMAIN


# --------------------------------------------------------------------------------------------- the store


class ReportDB(SqlDatabase):
    """Reports in SQLite or PostgreSQL. Safe to share between threads (calls are serialised)."""

    SCHEMA = Schema(what="report database", version=2, migrations=_MIGRATIONS,
                    version_table="tlsrpt_schema_version", lock_key=0x6D78736563525054)  # lock: the bytes "mxsecRPT"
    #: A report is received once: once ``ingest`` has said it is stored, the sender does not send it again and a
    #: Maildir message may have been moved, so its commit must survive a power cut too. With a batch per
    #: transaction that is one fsync per few hundred reports.
    SQLITE_SYNCHRONOUS = "FULL"

    # ---------------------------------------------------------------------------------------- writing

    def ingest(self, items: Sequence[Incoming], *, now: float | None = None) -> list[IngestResult]:
        """Store *items* in one transaction (all or none); return one result per item, in order.

        A batch is written the quick way: the stored copies of every (organization, report-id) in it are read
        in one query, new reports get their row ids up front and go in with one multi-row statement per table.
        A report that meets a stored copy (a duplicate that changes nothing aside) takes the general way, one
        statement at a time, after the rows before it have been written: the outcome is the same either way."""
        received = int(time.time() if now is None else now)
        with self._lock:
            try:
                with self._transaction():
                    return self._ingest_batch(list(items), received)
            except self._errors() as exc:
                raise StoreError(f"report database {redact(self.url)}: {one_line(exc)}") from None

    def _ingest_batch(self, items: list[Incoming], received: int) -> list[IngestResult]:
        keys = sorted({(item.report.organization_name, item.report.report_id) for item in items})
        if self.dialect == "postgresql" and keys:
            # One statement for the whole batch, the locks taken in ascending order by every writer: two batches
            # never wait on each other in a cycle.
            self._conn.execute(
                "SELECT pg_advisory_xact_lock(%s, k) FROM (SELECT k FROM unnest(%s::integer[]) AS k ORDER BY k) AS s",
                (_PG_REPORT_LOCK, sorted({_lock_key(*key) for key in keys})),
            ).fetchall()
        stored = self._stored_copies(keys)
        fresh = [item for item in items if (item.report.organization_name, item.report.report_id) not in stored]
        self._batch = _Batch(_NewRows(self, len(fresh), sum(len(item.report.policies) for item in fresh)), stored)
        try:
            results = [self._insert(item, received) for item in items]
            self._batch.rows.write()
        finally:
            self._batch = None
        return results

    #: (organization, report-id) pairs per look-up query (two parameters each).
    _LOOKUP_CHUNK = 400

    def _stored_copies(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
        """(id, raw_sha256, auth, counted) of the stored copies of each of *keys* that has any, by id."""
        found: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for start in range(0, len(keys), self._LOOKUP_CHUNK):
            chunk = keys[start:start + self._LOOKUP_CHUNK]
            values = ", ".join("(?, ?)" for _ in chunk)
            # CROSS JOIN: SQLite then walks the given pairs and looks each up in the table's unique index
            # (a plain join makes it build a throw-away index over the whole table, every time).
            for org, rid, pk, digest, auth, counted in self._execute(
                "SELECT t.organization_name, t.report_id, t.id, t.raw_sha256, t.auth, t.counted "
                f"FROM (VALUES {values}) AS k CROSS JOIN tlsrpt_report t "
                "WHERE t.organization_name = k.column1 AND t.report_id = k.column2",
                [value for key in chunk for value in key],
            ).fetchall():
                found.setdefault((org, rid), []).append((int(pk), digest, auth, int(counted)))
        for copies in found.values():
            copies.sort()
        return found

    def _reserve_ids(self, table: str, count: int) -> list[int]:
        """*count* row ids for new rows of *table*. SQLite: above the largest (the write lock is held, and these
        are the ids SQLite would choose); PostgreSQL: taken from the identity's sequence."""
        if count <= 0:
            return []
        if self.dialect == "sqlite":
            (top,) = self._execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()
            return list(range(int(top) + 1, int(top) + 1 + count))
        return sorted(int(r[0]) for r in self._execute(
            f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, ?)", (count,)
        ).fetchall())

    def _write_rows(self, reports: list[tuple[Any, ...]], policies: list[tuple[Any, ...]],
                    failures: list[tuple[Any, ...]]) -> None:
        cursor = self._conn.cursor()
        if self.dialect == "postgresql":
            # COPY: one stream per table instead of a statement per row.
            for table, columns, rows in (
                ("tlsrpt_report", "id, " + _REPORT_COLUMNS, reports),
                ("tlsrpt_policy", "id, " + _POLICY_COLUMNS, policies),
                ("tlsrpt_failure", _FAILURE_COLUMNS, failures),
            ):
                if rows:
                    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
            return
        if reports:
            cursor.executemany(self._sql(_INSERT_REPORT_ROW), reports)
        if policies:
            cursor.executemany(self._sql(_INSERT_POLICY_ROW), policies)
        if failures:
            cursor.executemany(self._sql(_INSERT_FAILURE), failures)

    #: The batch :meth:`ingest` is writing (under ``_lock``), else ``None``.
    _batch: _Batch | None = None

    def _insert(self, item: Incoming, received: int) -> IngestResult:
        report = item.report
        raw = report.raw_json or report.to_json()
        digest = hashlib.sha256(raw).hexdigest()
        auth = item.authentication
        key = (report.organization_name, report.report_id)
        batch = self._batch
        if batch is None:
            return self._insert_one(item, received, raw, digest, auth)
        group = batch.stored.get(key)
        if group is None:  # a new report: its rows join the batch's
            pk = batch.rows.add(item, raw, digest, auth, received)
            batch.stored[key] = [(pk, digest, auth, 1)]
            return IngestResult("stored", pk, key[0], key[1], auth=auth, counted_id=pk)
        if len(group) == 1:
            pk, stored_digest, stored_auth, counted = group[0]
            if stored_digest == digest and counted and not (auth in AUTHENTICATED and stored_auth not in AUTHENTICATED):
                # What _duplicate finds for a lone counted copy that needs no change.
                return IngestResult("duplicate", pk, key[0], key[1], auth=str(stored_auth), counted_id=pk)
        batch.rows.write()  # the general way reads the database: what came before must be in it
        result = self._insert_one(item, received, raw, digest, auth)
        batch.stored[key] = self._stored_copies([key]).get(key, [])
        batch.rows.invalidate()
        return result

    def _insert_one(self, item: Incoming, received: int, raw: bytes, digest: str, auth: str) -> IngestResult:
        """One report the general way: every case (new, duplicate, conflicting copy, better authenticated)."""
        report = item.report
        key = (report.organization_name, report.report_id)
        self._lock_report(*key)
        group = self._execute(
            "SELECT id, raw_sha256 FROM tlsrpt_report WHERE organization_name = ? AND report_id = ? ORDER BY id",
            key,
        ).fetchall()
        if any(stored == digest for _, stored in group):
            return self._duplicate(item, auth, digest)
        first = 0 if group else 1  # the first copy counts until _recount says otherwise
        row = self._execute(_INSERT_REPORT, _report_row(item, digest, raw, received, auth, first)).fetchone()
        if row is None:
            return self._duplicate(item, auth, digest)
        report_pk = int(row[0])
        failures: list[tuple[Any, ...]] = []
        for position, policy in enumerate(report.policies):
            policy_pk = int(self._execute(_INSERT_POLICY, _policy_row(report_pk, position, policy)).fetchone()[0])
            failures.extend(_failure_row(policy_pk, report_pk, detail) for detail in policy.failure_details)
        if failures:
            self._conn.cursor().executemany(self._sql(_INSERT_FAILURE), failures)
        if not group:
            return IngestResult("stored", report_pk, report.organization_name, report.report_id, auth=auth,
                                counted_id=report_pk)
        counted = self._recount(*key)
        others = tuple(int(pk) for pk, _ in group)
        return IngestResult(
            "conflict", report_pk, report.organization_name, report.report_id,
            auth=auth, counted=counted == report_pk, others=others, counted_id=counted,
        )

    def _duplicate(self, item: Incoming, auth: str, digest: str) -> IngestResult:
        """The same JSON is stored already. A better authenticated arrival vouches for that copy: its ``auth``
        is raised (with a warning saying by what) and the counted copy chosen again."""
        report = item.report
        key = (report.organization_name, report.report_id)
        pk, stored_auth, warnings = self._execute(
            "SELECT id, auth, warnings FROM tlsrpt_report WHERE organization_name = ? AND report_id = ? "
            "AND raw_sha256 = ?",
            (*key, digest),
        ).fetchone()
        pk = int(pk)
        if auth in AUTHENTICATED and stored_auth not in AUTHENTICATED:
            notes = json.loads(warnings)
            by = f"{item.source} {item.source_name}" if item.source_name else item.source
            notes.append({"code": "auth-" + auth, "message": f"an identical copy arrived authenticated ({auth}) "
                          f"from {by}" + (f" ({item.auth_name})" if item.auth_name else "")})
            self._execute(
                "UPDATE tlsrpt_report SET auth = ?, auth_name = ?, warnings = ? WHERE id = ?",
                (auth, item.auth_name, _json(notes), pk),
            )
            stored_auth = auth
        counted = self._recount(*key)
        others = tuple(other for other in self._group_ids(*key) if other != pk)
        return IngestResult("duplicate", pk, report.organization_name, report.report_id, auth=str(stored_auth),
                            counted=counted == pk, others=others, counted_id=counted)

    def _lock_report(self, organization: str, report_id: str) -> None:
        """PostgreSQL: serialise writers of the same report until commit (SQLite's writes are serial anyway)."""
        if self.dialect == "postgresql":
            self._execute("SELECT pg_advisory_xact_lock(?, ?)", (_PG_REPORT_LOCK, _lock_key(organization, report_id)))

    def _group_ids(self, organization: str, report_id: str) -> list[int]:
        return [int(r[0]) for r in self._execute(
            "SELECT id FROM tlsrpt_report WHERE organization_name = ? AND report_id = ? ORDER BY id",
            (organization, report_id),
        ).fetchall()]

    _BEST_FIRST = (
        "CASE WHEN auth IN ('dkim', 'token', 'mtls') THEN 0 ELSE 1 END, received_ts, id"
    )

    def _recount(self, organization: str, report_id: str) -> int | None:
        """Mark the one counted copy of (organization, report-id) (the module docstring's rule); its id."""
        best = self._execute(
            f"SELECT id FROM tlsrpt_report WHERE organization_name = ? AND report_id = ? "
            f"ORDER BY {self._BEST_FIRST} LIMIT 1",
            (organization, report_id),
        ).fetchone()
        if best is None:
            return None
        self._execute(
            "UPDATE tlsrpt_report SET counted = CASE WHEN id = ? THEN 1 ELSE 0 END "
            "WHERE organization_name = ? AND report_id = ? AND counted <> CASE WHEN id = ? THEN 1 ELSE 0 END",
            (int(best[0]), organization, report_id, int(best[0])),
        )
        return int(best[0])

    def delete_before(self, day: date) -> int:
        """Delete reports whose day is before *day* (retention); return how many went."""
        with self._lock:
            try:
                with self._transaction():
                    cursor = self._execute("DELETE FROM tlsrpt_report WHERE start_ts < ?", (_day_ts(day),))
                    gone = int(cursor.rowcount)
                    # A conflicting copy from a later day may have lost its counted sibling: count it instead.
                    for organization, report_id in self._execute(
                        "SELECT DISTINCT u.organization_name, u.report_id FROM tlsrpt_report u WHERE u.counted = 0 "
                        "AND NOT EXISTS (SELECT 1 FROM tlsrpt_report c WHERE c.organization_name = "
                        "u.organization_name AND c.report_id = u.report_id AND c.counted = 1)"
                    ).fetchall():
                        self._lock_report(organization, report_id)
                        self._recount(organization, report_id)
                    return gone
            except self._errors() as exc:
                raise StoreError(f"report database {redact(self.url)}: {one_line(exc)}") from None

    # ---------------------------------------------------------------------------------------- reading

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return [tuple(row) for row in self._execute(statement, params).fetchall()]
            except self._errors() as exc:
                raise StoreError(f"report database {redact(self.url)}: {one_line(exc)}") from None

    def _policy_query(self, select: str, filters: Filters, group: str = "", order: str = "",
                      extra_where: Sequence[str] = (), extra_params: Sequence[Any] = (),
                      limit: int | None = None) -> list[tuple[Any, ...]]:
        where, params = filters.clauses()
        where = list(where) + list(extra_where)
        params = list(params) + list(extra_params)
        statement = f"SELECT {select} FROM tlsrpt_policy p JOIN tlsrpt_report r ON r.id = p.report"
        if where:
            statement += " WHERE " + " AND ".join(where)
        if group:
            statement += f" GROUP BY {group}"
        if order:
            statement += f" ORDER BY {order}"
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        return self._query(statement, params)

    def _failure_query(self, select: str, filters: Filters, group: str, order: str,
                       limit: int | None = None, extra_where: Sequence[str] = ()) -> list[tuple[Any, ...]]:
        where, params = filters.clauses()
        where = list(where) + list(extra_where)
        statement = (
            f"SELECT {select} FROM tlsrpt_failure f JOIN tlsrpt_policy p ON p.id = f.policy "
            "JOIN tlsrpt_report r ON r.id = f.report"
        )
        if where:
            statement += " WHERE " + " AND ".join(where)
        statement += f" GROUP BY {group} ORDER BY {order}"
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        return self._query(statement, params)

    _TOTALS = "COUNT(DISTINCT r.id), COALESCE(SUM(p.successful), 0), COALESCE(SUM(p.failed), 0)"

    def totals(self, filters: Filters = Filters()) -> Totals:
        (row,) = self._policy_query(self._TOTALS, filters)
        # A report without any policy entry still counts as a report.
        bare = self._bare_reports(filters)
        return Totals(int(row[0]) + bare, int(row[1]), int(row[2]))

    def _bare_reports(self, filters: Filters) -> int:
        if filters.domain is not None:
            return 0
        where, params = replace(filters, domain=None).clauses()
        where.append("NOT EXISTS (SELECT 1 FROM tlsrpt_policy p WHERE p.report = r.id)")
        (row,) = self._query("SELECT COUNT(*) FROM tlsrpt_report r WHERE " + " AND ".join(where), params)
        return int(row[0])

    def by_result_type(self, filters: Filters = Filters()) -> dict[str, int]:
        rows = self._failure_query(
            "f.result_type, SUM(f.failed_session_count)", filters, "f.result_type",
            "SUM(f.failed_session_count) DESC, f.result_type",
        )
        return {str(name): int(count) for name, count in rows}

    def by_organization(self, filters: Filters = Filters()) -> dict[str, Totals]:
        rows = self._policy_query(
            "r.organization_name, " + self._TOTALS, filters, "r.organization_name", "r.organization_name",
        )
        return {str(name): Totals(int(n), int(ok), int(bad)) for name, n, ok, bad in rows}

    def by_policy_domain(self, filters: Filters = Filters()) -> dict[str, Totals]:
        rows = self._policy_query(
            "p.policy_domain, " + self._TOTALS, filters, "p.policy_domain", "p.policy_domain",
        )
        return {_domain_key(name): Totals(int(n), int(ok), int(bad)) for name, n, ok, bad in rows}

    def by_policy_type(self, filters: Filters = Filters()) -> dict[str, Totals]:
        rows = self._policy_query("p.policy_type, " + self._TOTALS, filters, "p.policy_type", "p.policy_type")
        return {str(name): Totals(int(n), int(ok), int(bad)) for name, n, ok, bad in rows}

    def by_day(self, filters: Filters = Filters()) -> dict[date, Totals]:
        rows = self._policy_query(
            "r.start_ts / 86400, " + self._TOTALS, filters, "r.start_ts / 86400", "r.start_ts / 86400",
        )
        epoch = date(1970, 1, 1)
        return {epoch + timedelta(days=int(day)): Totals(int(n), int(ok), int(bad)) for day, n, ok, bad in rows}

    def failures_by_day(self, filters: Filters = Filters()) -> dict[date, dict[str, int]]:
        rows = self._failure_query(
            "r.start_ts / 86400, f.result_type, SUM(f.failed_session_count)", filters,
            "r.start_ts / 86400, f.result_type", "r.start_ts / 86400, f.result_type",
        )
        epoch = date(1970, 1, 1)
        out: dict[date, dict[str, int]] = {}
        for day, name, count in rows:
            out.setdefault(epoch + timedelta(days=int(day)), {})[str(name)] = int(count)
        return out

    def by_mx(self, filters: Filters = Filters(), limit: int = 20) -> dict[str, dict[str, int]]:
        """Failed sessions per receiving MX host name (from failure details), then per result type."""
        rows = self._failure_query(
            "COALESCE(f.receiving_mx_hostname, ''), f.result_type, SUM(f.failed_session_count)", filters,
            "COALESCE(f.receiving_mx_hostname, ''), f.result_type",
            "SUM(f.failed_session_count) DESC, COALESCE(f.receiving_mx_hostname, ''), f.result_type",
        )
        out: dict[str, dict[str, int]] = {}
        for host, name, count in rows:
            if host not in out and len(out) >= limit:
                continue
            out.setdefault(str(host), {})[str(name)] = int(count)
        return out

    def failing_sending_ips(self, filters: Filters = Filters(), limit: int = 20) -> list[tuple[str, str, int]]:
        """(sending MTA IP, result type, failed sessions), most failures first; empty IPs left out."""
        rows = self._failure_query(
            "f.sending_mta_ip, f.result_type, SUM(f.failed_session_count)", filters,
            "f.sending_mta_ip, f.result_type", "SUM(f.failed_session_count) DESC, f.sending_mta_ip, f.result_type",
            limit=limit, extra_where=("f.sending_mta_ip IS NOT NULL", "f.sending_mta_ip <> ''"),
        )
        return [(str(ip), str(name), int(count)) for ip, name, count in rows]

    def organizations(self) -> list[str]:
        return [str(r[0]) for r in self._query(
            "SELECT DISTINCT organization_name FROM tlsrpt_report ORDER BY organization_name")]

    def policy_domains(self) -> list[str]:
        return [_domain_key(r[0]) for r in self._query(
            "SELECT DISTINCT policy_domain FROM tlsrpt_policy ORDER BY policy_domain")]

    def day_range(self) -> tuple[date, date] | None:
        (row,) = self._query("SELECT MIN(start_ts), MAX(start_ts) FROM tlsrpt_report")
        if row[0] is None:
            return None
        return _from_ts(row[0]).date(), _from_ts(row[1]).date()

    def reports(self, filters: Filters = Filters(), *, limit: int = 100, offset: int = 0) -> list[ReportRow]:
        """Reports matching *filters*, newest first."""
        where, params = replace(filters, domain=None).clauses()
        if filters.domain is not None:
            inner, inner_params = Filters(domain=filters.domain, all_copies=True).clauses()
            where.append("EXISTS (SELECT 1 FROM tlsrpt_policy p WHERE p.report = r.id AND " + inner[0] + ")")
            params.extend(inner_params)
        statement = f"SELECT {self._ROW_COLUMNS} FROM tlsrpt_report r"
        if where:
            statement += " WHERE " + " AND ".join(where)
        statement += f" ORDER BY r.start_ts DESC, r.id DESC LIMIT {int(limit)} OFFSET {int(offset)}"
        rows = [self._row(values) for values in self._query(statement, params)]
        if rows:
            marks = ", ".join("?" for _ in rows)
            domains: dict[int, list[str]] = {}
            for report, domain in self._query(
                f"SELECT DISTINCT report, policy_domain FROM tlsrpt_policy WHERE report IN ({marks}) "
                "ORDER BY report, policy_domain",
                [row.id for row in rows],
            ):
                domains.setdefault(int(report), []).append(_domain_key(domain))
            for row in rows:
                row.policy_domains = domains.get(row.id, [])
            self._count_copies(rows)
        return rows

    _ROW_COLUMNS = (
        "r.id, r.organization_name, r.report_id, r.contact_info, r.start_ts, r.end_ts, r.successful, r.failed, "
        "r.source, r.source_name, r.dkim, r.warnings, r.received_ts, r.auth, r.auth_name, r.counted"
    )

    def _count_copies(self, rows: list[ReportRow]) -> None:
        """Fill ``copies`` of *rows*: only reports with an uncounted sibling have more than one."""
        groups = {(row.organization_name, row.report_id) for row in rows}
        if not groups:
            return
        pairs = sorted(groups)
        counts: dict[tuple[str, str], int] = {}
        for org, rid, n in self._query(
            "SELECT organization_name, report_id, COUNT(*) FROM tlsrpt_report WHERE "
            + " OR ".join("(organization_name = ? AND report_id = ?)" for _ in pairs)
            + " GROUP BY organization_name, report_id",
            [value for pair in pairs for value in pair],
        ):
            counts[(str(org), str(rid))] = int(n)
        for row in rows:
            row.copies = counts.get((row.organization_name, row.report_id), 1)

    def copies(self, pk: int) -> list[ReportRow]:
        """Every stored copy of the report with id *pk* (the same organization and report-id), the counted one
        first, then the order in which they would be counted; empty when *pk* is unknown."""
        rows = [self._row(values) for values in self._query(
            f"SELECT {self._ROW_COLUMNS} FROM tlsrpt_report r JOIN tlsrpt_report k ON k.id = ? "
            "AND r.organization_name = k.organization_name AND r.report_id = k.report_id "
            "ORDER BY r.counted DESC, CASE WHEN r.auth IN ('dkim', 'token', 'mtls') THEN 0 ELSE 1 END, "
            "r.received_ts, r.id",
            (int(pk),),
        )]
        for row in rows:
            row.copies = len(rows)
        return rows

    def conflicts(self, filters: Filters = Filters(), *, limit: int = 100) -> tuple[int, list[list[ReportRow]]]:
        """Reports stored in several copies with different content: (how many such reports, the newest
        *limit* of them, each its copies as :meth:`copies` orders them). A report is listed when any of its
        copies matches *filters* (day, organization, policy domain)."""
        where, params = replace(filters, domain=None, all_copies=True).clauses()
        if filters.domain is not None:
            inner, inner_params = Filters(domain=filters.domain, all_copies=True).clauses()
            where.append("EXISTS (SELECT 1 FROM tlsrpt_policy p WHERE p.report = r.id AND " + inner[0] + ")")
            params.extend(inner_params)
        groups = (
            "SELECT r.organization_name, r.report_id, MAX(r.received_ts) AS latest FROM "
            "(SELECT DISTINCT organization_name, report_id FROM tlsrpt_report WHERE counted = 0) g "
            "JOIN tlsrpt_report r ON r.organization_name = g.organization_name AND r.report_id = g.report_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " GROUP BY r.organization_name, r.report_id"
        )
        (total,) = self._query(f"SELECT COUNT(*) FROM ({groups}) c", params)
        shown = self._query(groups + f" ORDER BY latest DESC, r.organization_name, r.report_id LIMIT {int(limit)}",
                            params)
        out: list[list[ReportRow]] = []
        for org, rid, _ in shown:
            rows = [self._row(values) for values in self._query(
                f"SELECT {self._ROW_COLUMNS} FROM tlsrpt_report r WHERE r.organization_name = ? AND r.report_id = ? "
                "ORDER BY r.counted DESC, CASE WHEN r.auth IN ('dkim', 'token', 'mtls') THEN 0 ELSE 1 END, "
                "r.received_ts, r.id",
                (org, rid),
            )]
            for row in rows:
                row.copies = len(rows)
            out.append(rows)
        return int(total[0]), out

    @staticmethod
    def _row(values: tuple[Any, ...]) -> ReportRow:
        (pk, org, rid, contact, start, end, ok, bad, source, name, dkim, warnings, received, auth, auth_name,
         counted) = values
        return ReportRow(
            id=int(pk), organization_name=org, report_id=rid, contact_info=contact, start=_from_ts(start),
            end=_from_ts(end), successful=int(ok), failed=int(bad), source=source, source_name=name, dkim=dkim,
            warnings=json.loads(warnings), received=_from_ts(received), auth=str(auth), auth_name=auth_name,
            counted=bool(counted),
        )

    def report(self, pk: int) -> ReportDetail | None:
        rows = self._query(
            f"SELECT {self._ROW_COLUMNS}, r.raw_json, r.source_format, r.dkim_domains FROM tlsrpt_report r "
            "WHERE r.id = ?",
            (int(pk),),
        )
        if not rows:
            return None
        values = rows[0][16:]
        row = self._row(rows[0][:16])
        policies: list[dict[str, Any]] = []
        index: dict[int, dict[str, Any]] = {}
        for ppk, ptype, pdomain, pstring, mx, ok, bad, extra in self._query(
            "SELECT id, policy_type, policy_domain, policy_string, mx_host, successful, failed, extra "
            "FROM tlsrpt_policy WHERE report = ? ORDER BY position",
            (row.id,),
        ):
            entry = {
                "policy_type": ptype, "policy_domain": pdomain, "policy_string": json.loads(pstring),
                "mx_host": json.loads(mx), "successful": int(ok), "failed": int(bad),
                "extra": json.loads(extra) if extra else {}, "failure_details": [],
            }
            policies.append(entry)
            index[int(ppk)] = entry
        for values_f in self._query(
            "SELECT policy, result_type, sending_mta_ip, receiving_mx_hostname, receiving_mx_helo, receiving_ip, "
            "failed_session_count, additional_information, failure_reason_code, extra FROM tlsrpt_failure "
            "WHERE report = ? ORDER BY id",
            (row.id,),
        ):
            (ppk, rtype, sip, mxname, helo, rip, count, info, reason, extra) = values_f
            index[int(ppk)]["failure_details"].append({
                "result_type": rtype, "sending_mta_ip": sip, "receiving_mx_hostname": mxname,
                "receiving_mx_helo": helo, "receiving_ip": rip, "failed_session_count": int(count),
                "additional_information": info, "failure_reason_code": reason,
                "extra": json.loads(extra) if extra else {},
            })
        row.policy_domains = sorted({_domain_key(p["policy_domain"]) for p in policies})
        return ReportDetail(
            row=row, policies=policies, raw_json=bytes(values[0]), source_format=values[1],
            dkim_domains=json.loads(values[2] or "[]"),
        )

    def summary(self, filters: Filters = Filters()) -> dict[str, Any]:
        """The ``mxsec reports summary --json`` object (docs/reports.md): totals, ``by_result_type``,
        ``by_organization`` and ``by_policy_domain``, plus ``by_policy_type``, ``by_day`` and ``success_rate``."""
        totals = self.totals(filters)
        out: dict[str, Any] = totals.as_dict()
        out["success_rate"] = totals.success_rate
        out["by_result_type"] = self.by_result_type(filters)
        out["by_organization"] = {k: v.as_dict() for k, v in self.by_organization(filters).items()}
        out["by_policy_domain"] = {k: v.as_dict() for k, v in self.by_policy_domain(filters).items()}
        out["by_policy_type"] = {k: v.as_dict() for k, v in self.by_policy_type(filters).items()}
        out["by_day"] = {k.isoformat(): v.as_dict() for k, v in self.by_day(filters).items()}
        return out

    # ------------------------------------------------------------------------- dashboard and metrics (web)

    def by_organization_and_domain(self, filters: Filters = Filters()) -> dict[tuple[str, str], Totals]:
        """Totals per (organization, policy domain); a report counts once under each domain it names."""
        rows = self._policy_query(
            "r.organization_name, p.policy_domain, " + self._TOTALS, filters,
            "r.organization_name, p.policy_domain", "r.organization_name, p.policy_domain",
        )
        return {
            (str(org), _domain_key(domain)): Totals(int(n), int(ok), int(bad)) for org, domain, n, ok, bad in rows
        }

    def failures_by_domain(self, filters: Filters = Filters()) -> dict[str, dict[str, int]]:
        """Failed sessions (from failure details) per policy domain, then per result type."""
        rows = self._failure_query(
            "p.policy_domain, f.result_type, SUM(f.failed_session_count)", filters,
            "p.policy_domain, f.result_type", "p.policy_domain, f.result_type",
        )
        out: dict[str, dict[str, int]] = {}
        for domain, name, count in rows:
            out.setdefault(_domain_key(domain), {})[str(name)] = int(count)
        return out

    def last_report_by_domain(self, filters: Filters = Filters()) -> dict[str, tuple[datetime, datetime]]:
        """Per policy domain: (end of the newest report's date range, when the latest report was received)."""
        rows = self._policy_query(
            "p.policy_domain, MAX(r.end_ts), MAX(r.received_ts)", filters, "p.policy_domain", "p.policy_domain",
        )
        return {_domain_key(domain): (_from_ts(end), _from_ts(received)) for domain, end, received in rows}

    def policies_seen(self, filters: Filters = Filters(), limit: int = 20) -> list[dict[str, Any]]:
        """The distinct policies reporters applied (type, domain, policy-string), most reports first: each a
        dict with ``policy_type``, ``policy_domain``, ``policy_string`` (list), ``reports``, ``successful``,
        ``failed``, ``first`` and ``last`` (UTC days of the reports' starts)."""
        rows = self._policy_query(
            "p.policy_type, p.policy_domain, p.policy_string, " + self._TOTALS + ", MIN(r.start_ts), MAX(r.start_ts)",
            filters, "p.policy_type, p.policy_domain, p.policy_string",
            "COUNT(DISTINCT r.id) DESC, MAX(r.start_ts) DESC, p.policy_type, p.policy_domain, p.policy_string",
            limit=limit,
        )
        return [
            {
                "policy_type": str(ptype), "policy_domain": _domain_key(domain), "policy_string": json.loads(text),
                "reports": int(n), "successful": int(ok), "failed": int(bad),
                "first": _from_ts(first).date(), "last": _from_ts(last).date(),
            }
            for ptype, domain, text, n, ok, bad, first, last in rows
        ]

    # ------------------------------------------------------------------------- the rollout advisor (advise)

    @staticmethod
    def _type_clause(policy_type: str | None) -> tuple[list[str], list[Any]]:
        return (["p.policy_type = ?"], [policy_type]) if policy_type is not None else ([], [])

    def totals_by_organization(self, filters: Filters = Filters(),
                               policy_type: str | None = None) -> dict[str, Totals]:
        """:meth:`by_organization` restricted to one policy type (``sts``, ``tlsa``, ...) when given."""
        where, params = self._type_clause(policy_type)
        rows = self._policy_query("r.organization_name, " + self._TOTALS, filters, "r.organization_name",
                                  "r.organization_name", extra_where=where, extra_params=params)
        return {str(name): Totals(int(n), int(ok), int(bad)) for name, n, ok, bad in rows}

    def failures_by_mx_and_organization(self, filters: Filters = Filters(), policy_type: str | None = None
                                        ) -> list[tuple[str, str, str, int, date, date]]:
        """(receiving MX host name or ``''``, result type, organization, failed sessions, first day, last day),
        most failed sessions first; days are the UTC days of the reports' starts."""
        where, params = filters.clauses()
        extra, extra_params = self._type_clause(policy_type)
        where, params = where + extra, params + extra_params
        host = "COALESCE(f.receiving_mx_hostname, '')"
        statement = (
            f"SELECT {host}, f.result_type, r.organization_name, SUM(f.failed_session_count), MIN(r.start_ts), "
            "MAX(r.start_ts) FROM tlsrpt_failure f JOIN tlsrpt_policy p ON p.id = f.policy "
            "JOIN tlsrpt_report r ON r.id = f.report"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" GROUP BY {host}, f.result_type, r.organization_name"
            f" ORDER BY SUM(f.failed_session_count) DESC, {host}, f.result_type, r.organization_name"
        )
        merged: dict[tuple[str, str, str], list[int]] = {}
        for host_name, name, org, count, first, last in self._query(statement, params):
            # host names as reporters wrote them: "MX2.Example.com." and "mx2.example.com" are one host
            key = (str(host_name).lower().rstrip("."), str(name), str(org))
            row = merged.setdefault(key, [0, int(first), int(last)])
            row[0] += int(count)
            row[1], row[2] = min(row[1], int(first)), max(row[2], int(last))
        ordered = sorted(merged.items(), key=lambda item: (-item[1][0], item[0]))
        return [(host_name, name, org, count, _from_ts(first).date(), _from_ts(last).date())
                for (host_name, name, org), (count, first, last) in ordered]

    def policies_by_day(self, filters: Filters = Filters(), policy_type: str | None = None
                        ) -> list[tuple[date, str, list[str], Totals]]:
        """(UTC day, policy type, policy-string, totals) for every distinct policy applied on each day."""
        where, params = self._type_clause(policy_type)
        rows = self._policy_query(
            "r.start_ts / 86400, p.policy_type, p.policy_string, " + self._TOTALS, filters,
            "r.start_ts / 86400, p.policy_type, p.policy_string", "r.start_ts / 86400, p.policy_type, p.policy_string",
            extra_where=where, extra_params=params,
        )
        epoch = date(1970, 1, 1)
        return [(epoch + timedelta(days=int(day)), str(ptype), list(json.loads(text)),
                 Totals(int(n), int(ok), int(bad))) for day, ptype, text, n, ok, bad in rows]
