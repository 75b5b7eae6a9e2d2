"""What a sending MTA saw in one SMTP/TLS session, and the day's tally of them (RFC 8460 §4). Sans-I/O.

Every session source of the TLSRPT sender turns its input into :class:`Session` values: the libtlsrpt
datagrams of Postfix 3.10+ (:mod:`mxsec.tlsrpt.datagram`), the mail logs of Postfix 3.7–3.9 and Exim, and the
policy daemon's own failures. A session belongs to one *report domain* (the recipient domain whose
``_smtp._tls`` record receives the report) and carries one outcome per policy that applied to it: usually one,
but libtlsrpt allows several (a destination with both a TLSA and an STS policy).

:class:`Tally` adds sessions up the way a report needs them: per (UTC day, report domain, policy) the
successful and failed session counts and, per distinct failure detail, a count. A session with two failure
details counts once as failed and once in each detail (RFC 8460 §4, RPT-I-42). The number of distinct failure
details per policy is capped (:data:`MAX_FAILURE_ROWS`): beyond the cap a detail is folded into a row that
keeps only its result type, so a day with millions of distinct combinations (a spray of sending IPs, hostile
HELO strings) still makes a bounded report.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date

from mxsec.results import ResultType

__all__ = [
    "MAX_FAILURE_ROWS",
    "RESULT_CODES",
    "Failure",
    "Policy",
    "PolicyCount",
    "PolicyOutcome",
    "PolicyTotals",
    "PolicyType",
    "Session",
    "Tally",
    "TallyKey",
    "folded",
    "result_type_for_code",
]

#: Distinct failure details kept per (day, report domain, policy); more are folded by result type.
MAX_FAILURE_ROWS = 1000


class PolicyType(str, enum.Enum):
    """``policy-type`` of RFC 8460 §4.4 (the value is the name used in reports)."""

    TLSA = "tlsa"
    STS = "sts"
    NO_POLICY_FOUND = "no-policy-found"

    def __str__(self) -> str:
        return self.value


#: libtlsrpt's numeric result codes (its ``c`` member) and the RFC 8460 §4.3 names they stand for.
RESULT_CODES: dict[int, ResultType] = {
    201: ResultType.STARTTLS_NOT_SUPPORTED,
    202: ResultType.CERTIFICATE_HOST_MISMATCH,
    203: ResultType.CERTIFICATE_NOT_TRUSTED,
    204: ResultType.CERTIFICATE_EXPIRED,
    205: ResultType.VALIDATION_FAILURE,
    301: ResultType.STS_POLICY_FETCH_ERROR,
    302: ResultType.STS_POLICY_INVALID,
    303: ResultType.STS_WEBPKI_INVALID,
    304: ResultType.TLSA_INVALID,
    305: ResultType.DNSSEC_INVALID,
    306: ResultType.DANE_REQUIRED,
}


def result_type_for_code(code: int) -> tuple[ResultType, str | None]:
    """The result type for a libtlsrpt code, and the note to keep in ``additional-information`` when the code
    is unknown: such a failure is still reported, as ``validation-failure`` (RFC 8460 §4.3.3: the type for
    failures no other type covers) with the code kept, rather than dropped or sent without a type."""
    known = RESULT_CODES.get(code)
    if known is not None:
        return known, None
    return ResultType.VALIDATION_FAILURE, f"unknown result code {code}"


@dataclass(frozen=True, slots=True)
class Policy:
    """The ``policy`` object of a report: type, domain (A-label), policy strings, MX patterns (STS only).

    For ``tlsa`` the domain is the TLSA base domain (the MX host, RFC 8460 §1.1); for ``sts`` and
    ``no-policy-found`` it is the recipient domain."""

    type: PolicyType
    domain: str
    strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Failure:
    """One ``failure-details`` entry without its count. Equal values are counted together."""

    result_type: str
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    additional_information: str | None = None
    failure_reason_code: str | None = None


def folded(failure: Failure) -> Failure:
    """The row a failure is counted in once its policy has :data:`MAX_FAILURE_ROWS` distinct ones."""
    return Failure(failure.result_type)


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    """How one session went under one policy: ``failed`` and the failure details (zero or more)."""

    policy: Policy
    failed: bool
    failures: tuple[Failure, ...] = ()


@dataclass(frozen=True, slots=True)
class Session:
    """One SMTP/TLS session towards ``domain`` (the report domain), with one outcome per policy.

    ``record`` is the ``_smtp._tls`` record as the MTA saw it, when the source knows it."""

    domain: str
    outcomes: tuple[PolicyOutcome, ...]
    record: str | None = None


@dataclass(frozen=True, slots=True)
class TallyKey:
    day: date
    domain: str
    policy: Policy


@dataclass(slots=True)
class PolicyCount:
    """Counts for one :class:`TallyKey`."""

    successful: int = 0
    failed: int = 0
    failures: dict[Failure, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolicyTotals:
    """A policy's counts for one (day, report domain) as stored, with its failure details (largest first):
    what a report's ``policies[]`` entry is built from."""

    policy: Policy
    successful: int
    failed: int
    failures: tuple[tuple[Failure, int], ...] = ()


class Tally:
    """Sessions added up per (day, report domain, policy). Not thread-safe; callers swap whole tallies.

    ``records`` keeps the last ``_smtp._tls`` record seen per report domain."""

    __slots__ = ("counts", "records", "sessions", "max_failure_rows")

    def __init__(self, *, max_failure_rows: int = MAX_FAILURE_ROWS) -> None:
        self.counts: dict[TallyKey, PolicyCount] = {}
        self.records: dict[str, str] = {}
        self.sessions = 0
        self.max_failure_rows = max_failure_rows

    def __len__(self) -> int:
        return len(self.counts)

    def __bool__(self) -> bool:
        return bool(self.counts) or bool(self.records)

    def add(self, session: Session, day: date) -> None:
        self.sessions += 1
        if session.record is not None:
            self.records[session.domain] = session.record
        for outcome in session.outcomes:
            self.add_outcome(day, session.domain, outcome)

    def add_outcome(self, day: date, domain: str, outcome: PolicyOutcome, sessions: int = 1) -> None:
        key = TallyKey(day, domain, outcome.policy)
        count = self.counts.get(key)
        if count is None:
            count = self.counts[key] = PolicyCount()
        if outcome.failed:
            count.failed += sessions
        else:
            count.successful += sessions
        failures = count.failures
        for failure in outcome.failures:
            if failure in failures:
                failures[failure] += sessions
            elif len(failures) < self.max_failure_rows:
                failures[failure] = sessions
            else:
                bucket = folded(failure)
                failures[bucket] = failures.get(bucket, 0) + sessions

    def merge(self, other: Tally) -> None:
        """Add *other*'s counts to this tally (the cap applies to the merged rows)."""
        self.sessions += other.sessions
        self.records.update(other.records)
        for key, count in other.counts.items():
            self.merge_count(key, count)

    def merge_count(self, key: TallyKey, count: PolicyCount) -> None:
        """Add one key's counts (the cap applies)."""
        mine = self.counts.get(key)
        if mine is None:
            mine = self.counts[key] = PolicyCount()
        mine.successful += count.successful
        mine.failed += count.failed
        for failure, n in count.failures.items():
            if failure in mine.failures:
                mine.failures[failure] += n
            elif len(mine.failures) < self.max_failure_rows:
                mine.failures[failure] = n
            else:
                bucket = folded(failure)
                mine.failures[bucket] = mine.failures.get(bucket, 0) + n

    def items(self) -> Iterator[tuple[TallyKey, PolicyCount]]:
        return iter(self.counts.items())

    def to_json(self) -> str:
        """The counts as JSON (for a collector that must stop while its database is unavailable)."""
        rows = []
        for key, count in self.counts.items():
            p = key.policy
            rows.append({
                "day": key.day.isoformat(), "domain": key.domain,
                "policy": [p.type.value, p.domain, list(p.strings), list(p.mx_hosts)],
                "successful": count.successful, "failed": count.failed,
                "failures": [[list(_failure_fields(f)), n] for f, n in count.failures.items()],
            })
        return json.dumps({"sessions": self.sessions, "records": self.records, "counts": rows}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, *, max_failure_rows: int = MAX_FAILURE_ROWS) -> Tally:
        doc = json.loads(text)
        tally = cls(max_failure_rows=max_failure_rows)
        tally.sessions = int(doc["sessions"])
        tally.records.update(doc["records"])
        for row in doc["counts"]:
            ptype, pdomain, strings, mx = row["policy"]
            key = TallyKey(date.fromisoformat(row["day"]), row["domain"],
                           Policy(PolicyType(ptype), pdomain, tuple(strings), tuple(mx)))
            failures = {Failure(*fields): int(n) for fields, n in row["failures"]}
            tally.merge_count(key, PolicyCount(int(row["successful"]), int(row["failed"]), failures))
        return tally


def _failure_fields(failure: Failure) -> tuple[str | None, ...]:
    return (failure.result_type, failure.sending_mta_ip, failure.receiving_mx_hostname, failure.receiving_mx_helo,
            failure.receiving_ip, failure.additional_information, failure.failure_reason_code)


def tally(sessions: Iterable[tuple[Session, date]], *, max_failure_rows: int = MAX_FAILURE_ROWS) -> Tally:
    """A tally of (session, day) pairs."""
    result = Tally(max_failure_rows=max_failure_rows)
    for session, day in sessions:
        result.add(session, day)
    return result
