"""The TLSRPT sender's database (``mxsec tlsrpt …``): counted sessions, built reports, delivery state.

SQLite by default; PostgreSQL lets the collectors of many MTAs write into one database from which one
``mxsec tlsrpt send`` reports. Tables:

- ``tlsrpt_out_policy``: per (UTC day, report domain, policy) the successful and failed session counts;
  the policy is identified by a SHA-256 of its canonical JSON (policy strings can be kilobytes long);
- ``tlsrpt_out_failure``: per policy row and distinct failure detail, the session count; at most
  ``max_failure_rows`` distinct details per policy row, more are folded by result type (see
  :mod:`mxsec.tlsrpt.session`);
- ``tlsrpt_out_domain``: the last ``_smtp._tls`` record an MTA reported per domain (shown by ``status``);
- ``tlsrpt_out_report``: the built report of a (day, domain): report-id, file name, the gzip bytes;
- ``tlsrpt_out_delivery``: per report and destination URI: state, attempts, next attempt, last error;
- ``tlsrpt_out_message``: Message-IDs of the report messages sent, so that log followers leave the sessions
  that carried them out of later reports (RFC 8460 §3);
- ``tlsrpt_out_position``: where each log follower stopped, written in the same transaction as the counts it
  read, so a restart neither loses nor double-counts a line;
- ``tlsrpt_out_served``: what the policy daemon answered per domain, one row each time the answer changed
  (JSON of :class:`mxsec.tlsrpt.served.ServedPolicy`), for the log followers to join sessions with.

Every write of counts is one transaction of additive upserts, so several writers (collectors of a fleet) can
share the tables.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from ..errors import one_line
from ..tlsrpt.session import MAX_FAILURE_ROWS, Failure, Policy, PolicyTotals, PolicyType, Tally, folded
from .base import StoreError
from .migrations import Schema, Statement
from .sqldb import SqlDatabase

__all__ = ["DELIVERY_STATES", "DeliveryRow", "ReportRow", "SenderDB"]

#: ``pending`` (not yet accepted, retried), ``delivered`` (accepted), ``failed`` (given up after the retry
#: window), ``skipped`` (an unsupported scheme or an unusable address: nothing to try).
DELIVERY_STATES = ("pending", "delivered", "failed", "skipped")

_MIGRATIONS: dict[int, list[Statement]] = {
    0: [
        """CREATE TABLE tlsrpt_out_policy (
            id {id},
            day TEXT NOT NULL,
            report_domain TEXT NOT NULL,
            policy_key TEXT NOT NULL,
            policy_type TEXT NOT NULL,
            policy_domain TEXT NOT NULL,
            policy_string TEXT NOT NULL,
            mx_host TEXT NOT NULL,
            successful {big} NOT NULL DEFAULT 0,
            failed {big} NOT NULL DEFAULT 0,
            UNIQUE (day, report_domain, policy_key)
        )""",
        """CREATE TABLE tlsrpt_out_failure (
            day TEXT NOT NULL,
            report_domain TEXT NOT NULL,
            policy_key TEXT NOT NULL,
            failure_key TEXT NOT NULL,
            result_type TEXT NOT NULL,
            sending_mta_ip TEXT,
            receiving_mx_hostname TEXT,
            receiving_mx_helo TEXT,
            receiving_ip TEXT,
            additional_information TEXT,
            failure_reason_code TEXT,
            sessions {big} NOT NULL,
            PRIMARY KEY (day, report_domain, policy_key, failure_key)
        )""",
        """CREATE TABLE tlsrpt_out_domain (
            report_domain TEXT PRIMARY KEY,
            record TEXT NOT NULL,
            seen_ts {big} NOT NULL
        )""",
        """CREATE TABLE tlsrpt_out_report (
            id {id},
            day TEXT NOT NULL,
            report_domain TEXT NOT NULL,
            report_id TEXT NOT NULL,
            filename TEXT NOT NULL,
            report_gz {blob} NOT NULL,
            successful {big} NOT NULL,
            failed {big} NOT NULL,
            built_ts {big} NOT NULL,
            UNIQUE (day, report_domain)
        )""",
        """CREATE TABLE tlsrpt_out_delivery (
            id {id},
            report {big} NOT NULL REFERENCES tlsrpt_out_report (id) ON DELETE CASCADE,
            destination TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            first_attempt_ts {big},
            last_attempt_ts {big},
            next_attempt_ts {big} NOT NULL,
            last_error TEXT,
            UNIQUE (report, destination)
        )""",
        "CREATE INDEX tlsrpt_out_delivery_due ON tlsrpt_out_delivery (state, next_attempt_ts)",
        """CREATE TABLE tlsrpt_out_message (
            message_id TEXT PRIMARY KEY,
            sent_ts {big} NOT NULL
        )""",
        """CREATE TABLE tlsrpt_out_position (
            source TEXT PRIMARY KEY,
            position TEXT NOT NULL,
            updated_ts {big} NOT NULL
        )""",
    ],
    1: [
        """CREATE TABLE tlsrpt_out_served (
            id {id},
            domain TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            policy TEXT NOT NULL,
            first_ts {big} NOT NULL
        )""",
        "CREATE INDEX tlsrpt_out_served_domain ON tlsrpt_out_served (domain, first_ts)",
    ],
}


def _policy_key(policy: Policy) -> str:
    canonical = json.dumps([policy.type.value, policy.domain, policy.strings, policy.mx_hosts], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


_UPSERT_POLICY = (
    "INSERT INTO tlsrpt_out_policy (day, report_domain, policy_key, policy_type, policy_domain, policy_string, "
    "mx_host, successful, failed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (day, report_domain, policy_key) DO UPDATE SET "
    "successful = tlsrpt_out_policy.successful + excluded.successful, "
    "failed = tlsrpt_out_policy.failed + excluded.failed"
)
_UPSERT_FAILURE = (
    "INSERT INTO tlsrpt_out_failure (day, report_domain, policy_key, failure_key, result_type, sending_mta_ip, "
    "receiving_mx_hostname, receiving_mx_helo, receiving_ip, additional_information, failure_reason_code, "
    "sessions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (day, report_domain, policy_key, failure_key) DO UPDATE SET "
    "sessions = tlsrpt_out_failure.sessions + excluded.sessions"
)


_UPSERT_REPORT = (
    "INSERT INTO tlsrpt_out_report (day, report_domain, report_id, filename, report_gz, successful, failed, "
    "built_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, report_domain) DO UPDATE SET "
    "report_id = excluded.report_id, filename = excluded.filename, report_gz = excluded.report_gz, "
    "successful = excluded.successful, failed = excluded.failed, built_ts = excluded.built_ts"
)


def _failure_values(failure: Failure) -> tuple[str | None, ...]:
    return (failure.result_type, failure.sending_mta_ip, failure.receiving_mx_hostname, failure.receiving_mx_helo,
            failure.receiving_ip, failure.additional_information, failure.failure_reason_code)


def _failure_key(failure: Failure) -> str:
    canonical = json.dumps(
        [failure.result_type, failure.sending_mta_ip, failure.receiving_mx_hostname, failure.receiving_mx_helo,
         failure.receiving_ip, failure.additional_information, failure.failure_reason_code],
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class ReportRow:
    pk: int
    day: date
    domain: str
    report_id: str
    filename: str
    successful: int
    failed: int
    built_ts: int


@dataclass(frozen=True)
class DeliveryRow:
    pk: int
    report: ReportRow
    destination: str
    state: str
    attempts: int
    first_attempt_ts: int | None
    last_attempt_ts: int | None
    next_attempt_ts: int
    last_error: str | None


_REPORT_SELECT = "r.id, r.day, r.report_domain, r.report_id, r.filename, r.successful, r.failed, r.built_ts"


def _report_row(values: tuple[Any, ...]) -> ReportRow:
    pk, day, domain, report_id, filename, ok, bad, built = values
    return ReportRow(int(pk), date.fromisoformat(day), domain, report_id, filename, int(ok), int(bad), int(built))


#: PostgreSQL advisory lock held by the one reporter of a fleet's database (the bytes "mxsecSNL")
SENDING_LOCK_KEY = 0x6D78736563534E4C


class SenderDB(SqlDatabase):
    """Counted sessions and report delivery state in SQLite or PostgreSQL."""

    SCHEMA = Schema(what="TLSRPT sender database", version=2, migrations=_MIGRATIONS,
                    version_table="tlsrpt_out_schema_version", lock_key=0x6D78736563534E44)  # "mxsecSND"

    def __init__(self, url: str, *, max_failure_rows: int = MAX_FAILURE_ROWS) -> None:
        super().__init__(url)
        self.max_failure_rows = max_failure_rows
        #: policy -> (key, policy strings as JSON, MX patterns as JSON): computed once per policy
        self._keys: dict[Policy, tuple[str, str, str]] = {}
        #: Distinct failure rows per (day, domain, policy key) as far as this process knows (an upper bound).
        self._rows: dict[tuple[str, str, str], int] = {}
        self._row_days: set[str] = set()
        self._sending: int | bool | None = None  # the SQLite lock file's descriptor, or True on PostgreSQL

    # ------------------------------------------------------------------------------------- one reporter

    def take_sending_lease(self) -> bool:
        """Become the one reporter of this database (``mxsec tlsrpt send``), so that two reporters of a fleet
        never send the same report: ``False`` while another process is. The lease lasts as long as this object
        is open (on PostgreSQL a session advisory lock, on SQLite an exclusive lock on ``<file>.send-lock``);
        a process that dies gives it up at once."""
        if self._sending:
            return True
        if self.dialect == "postgresql":
            with self._lock:
                try:
                    row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (SENDING_LOCK_KEY,)).fetchone()
                except self._errors() as exc:
                    raise StoreError(f"{self.what}: {one_line(exc)}") from None
            self._sending = bool(row[0])
            return self._sending
        path = self._target + ".send-lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._sending = fd
        return True

    def close(self) -> None:
        sending, self._sending = self._sending, None
        if isinstance(sending, int) and not isinstance(sending, bool):
            os.close(sending)  # releases the SQLite lease; on PostgreSQL closing the session does
        super().close()

    # -------------------------------------------------------------------------------------------- counts

    def add(self, tally: Tally, *, positions: Mapping[str, str] | None = None, now: float | None = None) -> None:
        """Add *tally* (and, in the same transaction, follower *positions*) to the stored counts."""
        stamp = int(time.time() if now is None else now)
        if not tally and not positions:
            return
        with self._lock:
            try:
                with self._transaction():
                    self._add_counts(tally)
                    for domain, record in tally.records.items():
                        self._execute(
                            "INSERT INTO tlsrpt_out_domain (report_domain, record, seen_ts) VALUES (?, ?, ?) "
                            "ON CONFLICT (report_domain) DO UPDATE SET record = excluded.record, "
                            "seen_ts = excluded.seen_ts",
                            (domain, record, stamp),
                        )
                    for source, position in (positions or {}).items():
                        self._execute(
                            "INSERT INTO tlsrpt_out_position (source, position, updated_ts) VALUES (?, ?, ?) "
                            "ON CONFLICT (source) DO UPDATE SET position = excluded.position, "
                            "updated_ts = excluded.updated_ts",
                            (source, position, stamp),
                        )
            except self._errors() as exc:
                raise StoreError(f"{self.what}: {one_line(exc)}") from None

    def _encoded(self, policy: Policy) -> tuple[str, str, str]:
        known = self._keys.get(policy)
        if known is None:
            known = (_policy_key(policy), json.dumps(policy.strings, ensure_ascii=False),
                     json.dumps(policy.mx_hosts, ensure_ascii=False))
            if len(self._keys) >= 200_000:
                self._keys.clear()
            self._keys[policy] = known
        return known

    def _add_counts(self, tally: Tally) -> None:
        """Two ``executemany`` upserts in the common case; the per-row path only for a policy that would pass
        :attr:`max_failure_rows` distinct failure details (its new details are then folded)."""
        policies: list[tuple[object, ...]] = []
        failures: list[tuple[object, ...]] = []
        slow: list[tuple[tuple[str, str, str], Mapping[Failure, int]]] = []
        for key, count in tally.items():
            policy = key.policy
            day, (pkey, strings, mx) = key.day.isoformat(), self._encoded(policy)
            policies.append((day, key.domain, pkey, policy.type.value, policy.domain, strings, mx,
                             count.successful, count.failed))
            if not count.failures:
                continue
            where = (day, key.domain, pkey)
            if day not in self._row_days:
                self._load_row_counts(day)
            known = self._rows.get(where, 0)
            if known + len(count.failures) > self.max_failure_rows:
                slow.append((where, count.failures))
                continue
            self._rows[where] = known + len(count.failures)  # an upper bound: some are updates
            failures.extend((*where, _failure_key(f), *_failure_values(f), n) for f, n in count.failures.items())
        if policies:
            self._conn.cursor().executemany(self._sql(_UPSERT_POLICY), policies)
        if failures:
            self._conn.cursor().executemany(self._sql(_UPSERT_FAILURE), failures)
        for where, items in slow:
            self._add_capped(where, items)

    def _load_row_counts(self, day: str) -> None:
        """What is stored already for *day* (once per day and process; later rows are counted as written)."""
        if len(self._row_days) >= 3:
            self._rows = {k: v for k, v in self._rows.items() if k[0] >= max(self._row_days)}
            self._row_days = {max(self._row_days)}
        for d, domain, pkey, n in self._execute(
                "SELECT day, report_domain, policy_key, count(*) FROM tlsrpt_out_failure WHERE day = ? "
                "GROUP BY day, report_domain, policy_key", (day,)).fetchall():
            self._rows[(d, domain, pkey)] = int(n)
        self._row_days.add(day)

    def _count_failure_rows(self, where: tuple[str, str, str]) -> int:
        row = self._execute("SELECT count(*) FROM tlsrpt_out_failure WHERE day = ? AND report_domain = ? "
                            "AND policy_key = ?", where).fetchone()
        return int(row[0])

    def _add_capped(self, where: tuple[str, str, str], items: Mapping[Failure, int]) -> None:
        rows = self._count_failure_rows(where)
        for failure, n in items.items():
            fkey = _failure_key(failure)
            cursor = self._execute(
                "UPDATE tlsrpt_out_failure SET sessions = sessions + ? WHERE day = ? AND report_domain = ? "
                "AND policy_key = ? AND failure_key = ?", (n, *where, fkey))
            if cursor.rowcount:
                continue
            if rows >= self.max_failure_rows:
                failure = folded(failure)
                fkey = _failure_key(failure)
            else:
                rows += 1
            self._execute(_UPSERT_FAILURE, (*where, fkey, *_failure_values(failure), n))
        self._rows[where] = rows

    def position(self, source: str) -> str | None:
        rows = self._query("SELECT position FROM tlsrpt_out_position WHERE source = ?", (source,))
        return rows[0][0] if rows else None

    def days(self) -> list[date]:
        """Every day with counted sessions, oldest first."""
        return [date.fromisoformat(r[0])
                for r in self._query("SELECT DISTINCT day FROM tlsrpt_out_policy ORDER BY day")]

    def domains(self, day: date) -> list[str]:
        rows = self._query("SELECT DISTINCT report_domain FROM tlsrpt_out_policy WHERE day = ? ORDER BY report_domain",
                           (day.isoformat(),))
        return [r[0] for r in rows]

    def totals(self, day: date, domain: str) -> list[PolicyTotals]:
        """The policies counted for *domain* on *day*, in a stable order, with their failure details."""
        return self.day_policies(day, [domain]).get(domain, [])

    def day_policies(self, day: date, domains: Iterable[str] | None = None) -> dict[str, list[PolicyTotals]]:
        """:meth:`totals` of every report domain of *day* (or of *domains*) in two queries."""
        wanted = None if domains is None else set(domains)
        rows = self._query(
            "SELECT report_domain, policy_key, policy_type, policy_domain, policy_string, mx_host, successful, "
            "failed FROM tlsrpt_out_policy WHERE day = ? ORDER BY report_domain, policy_type, policy_domain, "
            "policy_key", (day.isoformat(),))
        details: dict[tuple[str, str], list[tuple[Failure, int]]] = {}
        for row in self._query(
                "SELECT report_domain, policy_key, result_type, sending_mta_ip, receiving_mx_hostname, "
                "receiving_mx_helo, receiving_ip, additional_information, failure_reason_code, sessions "
                "FROM tlsrpt_out_failure WHERE day = ? ORDER BY report_domain, policy_key, sessions DESC, "
                "failure_key", (day.isoformat(),)):
            if wanted is None or row[0] in wanted:
                details.setdefault((row[0], row[1]), []).append((Failure(*row[2:9]), int(row[9])))
        result: dict[str, list[PolicyTotals]] = {}
        for domain, pkey, ptype, pdomain, strings, mx, ok, bad in rows:
            if wanted is not None and domain not in wanted:
                continue
            policy = Policy(PolicyType(ptype), pdomain, tuple(json.loads(strings)), tuple(json.loads(mx)))
            result.setdefault(domain, []).append(
                PolicyTotals(policy, int(ok), int(bad), tuple(details.get((domain, pkey), ()))))
        return result

    def day_totals(self, day: date) -> dict[str, tuple[int, int]]:
        rows = self._query(
            "SELECT report_domain, sum(successful), sum(failed) FROM tlsrpt_out_policy WHERE day = ? "
            "GROUP BY report_domain ORDER BY report_domain",
            (day.isoformat(),),
        )
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def record(self, domain: str) -> str | None:
        rows = self._query("SELECT record FROM tlsrpt_out_domain WHERE report_domain = ?", (domain,))
        return rows[0][0] if rows else None

    def delete_days_before(self, day: date) -> int:
        """Drop counted sessions and reports of days before *day* (retention)."""
        with self._lock:
            try:
                with self._transaction():
                    n = self._execute("DELETE FROM tlsrpt_out_policy WHERE day < ?", (day.isoformat(),)).rowcount
                    self._execute("DELETE FROM tlsrpt_out_failure WHERE day < ?", (day.isoformat(),))
                    self._execute("DELETE FROM tlsrpt_out_report WHERE day < ?", (day.isoformat(),))
                    return int(n)
            except self._errors() as exc:
                raise StoreError(f"{self.what}: {one_line(exc)}") from None

    # ------------------------------------------------------------------------------------------- reports

    def save_report(self, day: date, domain: str, report_id: str, filename: str, gz: bytes, successful: int,
                    failed: int, *, now: float | None = None) -> ReportRow:
        """Store (or replace) the built report of (*day*, *domain*); its deliveries are kept."""
        stamp = int(time.time() if now is None else now)
        with self._lock:
            try:
                with self._transaction():
                    self._execute(_UPSERT_REPORT,
                                  (day.isoformat(), domain, report_id, filename, gz, successful, failed, stamp))
            except self._errors() as exc:
                raise StoreError(f"{self.what}: {one_line(exc)}") from None
        found = self.report(day, domain)
        assert found is not None
        return found

    def save_reports(self, reports: Iterable[tuple[date, str, str, str, bytes, int, int]], *,
                     now: float | None = None) -> None:
        """:meth:`save_report` for many ``(day, domain, report_id, filename, gz, successful, failed)`` in one
        transaction."""
        stamp = int(time.time() if now is None else now)
        values = [(d.isoformat(), dom, rid, name, gz, ok, bad, stamp) for d, dom, rid, name, gz, ok, bad in reports]
        with self._lock:
            try:
                with self._transaction():
                    self._conn.cursor().executemany(self._sql(_UPSERT_REPORT), values)
            except self._errors() as exc:
                raise StoreError(f"{self.what}: {one_line(exc)}") from None

    def report(self, day: date, domain: str) -> ReportRow | None:
        rows = self._query(f"SELECT {_REPORT_SELECT} FROM tlsrpt_out_report r WHERE r.day = ? AND r.report_domain = ?",
                           (day.isoformat(), domain))
        return _report_row(rows[0]) if rows else None

    def reports(self, day: date | None = None) -> list[ReportRow]:
        if day is None:
            rows = self._query(f"SELECT {_REPORT_SELECT} FROM tlsrpt_out_report r ORDER BY r.day, r.report_domain")
        else:
            rows = self._query(f"SELECT {_REPORT_SELECT} FROM tlsrpt_out_report r WHERE r.day = ? "
                               "ORDER BY r.report_domain", (day.isoformat(),))
        return [_report_row(r) for r in rows]

    def unplanned_reports(self) -> list[ReportRow]:
        """Reports without any delivery row yet (never planned, or their record lookup failed)."""
        rows = self._query(f"SELECT {_REPORT_SELECT} FROM tlsrpt_out_report r WHERE NOT EXISTS "
                           "(SELECT 1 FROM tlsrpt_out_delivery d WHERE d.report = r.id) "
                           "ORDER BY r.day, r.report_domain")
        return [_report_row(r) for r in rows]

    def report_gz(self, pk: int) -> bytes:
        rows = self._query("SELECT report_gz FROM tlsrpt_out_report WHERE id = ?", (pk,))
        if not rows:
            raise StoreError(f"{self.what}: report {pk} is gone")
        return bytes(rows[0][0])

    def unreported(self, before: date) -> list[tuple[date, str]]:
        """(day, domain) pairs with counted sessions before *before* and no built report yet."""
        rows = self._query(
            "SELECT DISTINCT p.day, p.report_domain FROM tlsrpt_out_policy p LEFT JOIN tlsrpt_out_report r "
            "ON r.day = p.day AND r.report_domain = p.report_domain WHERE p.day < ? AND r.id IS NULL "
            "ORDER BY p.day, p.report_domain",
            (before.isoformat(),),
        )
        return [(date.fromisoformat(d), dom) for d, dom in rows]

    # ---------------------------------------------------------------------------------------- deliveries

    def add_delivery(self, report: ReportRow, destination: str, *, state: str = "pending",
                     next_attempt: float, error: str | None = None) -> None:
        """A destination for *report* (no change when it is already there)."""
        with self._lock:
            try:
                self._execute(
                    "INSERT INTO tlsrpt_out_delivery (report, destination, state, next_attempt_ts, last_error) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (report, destination) DO NOTHING",
                    (report.pk, destination, state, int(next_attempt), error),
                )
            except self._errors() as exc:
                raise StoreError(f"{self.what}: {one_line(exc)}") from None

    def deliveries(self, *, report: ReportRow | None = None, states: Iterable[str] | None = None,
                   due_before: float | None = None) -> list[DeliveryRow]:
        where: list[str] = []
        params: list[object] = []
        if report is not None:
            where.append("d.report = ?")
            params.append(report.pk)
        if states is not None:
            states = list(states)
            where.append("d.state IN (" + ", ".join("?" for _ in states) + ")")
            params.extend(states)
        if due_before is not None:
            where.append("d.next_attempt_ts <= ?")
            params.append(int(due_before))
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = self._query(
            f"SELECT d.id, d.destination, d.state, d.attempts, d.first_attempt_ts, d.last_attempt_ts, "
            f"d.next_attempt_ts, d.last_error, {_REPORT_SELECT} FROM tlsrpt_out_delivery d "
            f"JOIN tlsrpt_out_report r ON r.id = d.report {clause} ORDER BY r.day, r.report_domain, d.destination",
            params,
        )
        return [
            DeliveryRow(int(r[0]), _report_row(r[8:]), r[1], r[2], int(r[3]),
                        None if r[4] is None else int(r[4]), None if r[5] is None else int(r[5]), int(r[6]), r[7])
            for r in rows
        ]

    def record_attempt(self, delivery: DeliveryRow, *, state: str, at: float, next_attempt: float,
                       error: str | None) -> None:
        if state not in DELIVERY_STATES:
            raise ValueError(f"unknown delivery state {state!r}")
        first = delivery.first_attempt_ts if delivery.first_attempt_ts is not None else int(at)
        with self._lock:
            try:
                self._execute(
                    "UPDATE tlsrpt_out_delivery SET state = ?, attempts = attempts + 1, first_attempt_ts = ?, "
                    "last_attempt_ts = ?, next_attempt_ts = ?, last_error = ? WHERE id = ?",
                    (state, first, int(at), int(next_attempt), error, delivery.pk),
                )
            except self._errors() as exc:
                raise StoreError(f"{self.what}: {one_line(exc)}") from None

    # ------------------------------------------------------------------------------- report messages sent

    def remember_message(self, message_id: str, *, now: float | None = None) -> None:
        stamp = int(time.time() if now is None else now)
        with self._lock:
            try:
                self._execute("INSERT INTO tlsrpt_out_message (message_id, sent_ts) VALUES (?, ?) "
                              "ON CONFLICT (message_id) DO NOTHING", (message_id, stamp))
            except self._errors() as exc:
                raise StoreError(f"{self.what}: {one_line(exc)}") from None

    def is_report_message(self, message_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM tlsrpt_out_message WHERE message_id = ?", (message_id,)))

    # ------------------------------------------------------------------------------- policies served

    def add_served(self, rows: Iterable[tuple[str, str, str, float]]) -> None:
        """Record ``(domain, fingerprint, policy JSON, since)`` rows (one transaction)."""
        values = [(d, f, p, int(t)) for d, f, p, t in rows]
        if not values:
            return
        with self._lock:
            try:
                with self._transaction():
                    self._conn.cursor().executemany(self._sql(
                        "INSERT INTO tlsrpt_out_served (domain, fingerprint, policy, first_ts) VALUES (?, ?, ?, ?)"),
                        values)
            except self._errors() as exc:
                raise StoreError(f"{self.what}: {one_line(exc)}") from None

    def served_at(self, domain: str, ts: float, *, slack: float = 5.0) -> str | None:
        """The policy JSON the daemon served for *domain* at *ts* (the latest recorded no later than *ts* +
        *slack* seconds: the log line can be written a moment before the answer is recorded)."""
        rows = self._query("SELECT policy FROM tlsrpt_out_served WHERE domain = ? AND first_ts <= ? "
                           "ORDER BY first_ts DESC, id DESC LIMIT 1", (domain, int(ts + slack)))
        return rows[0][0] if rows else None

    def delete_served_before(self, ts: float) -> int:
        """Forget answers superseded before *ts* (keeps the latest one per domain)."""
        with self._lock:
            try:
                cursor = self._execute(
                    "DELETE FROM tlsrpt_out_served WHERE first_ts < ? AND id NOT IN "
                    "(SELECT max(id) FROM tlsrpt_out_served GROUP BY domain)", (int(ts),))
                return int(cursor.rowcount)
            except self._errors() as exc:
                raise StoreError(f"{self.what}: {one_line(exc)}") from None
