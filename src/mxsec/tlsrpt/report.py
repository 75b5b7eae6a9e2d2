"""TLSRPT aggregate reports (RFC 8460 §4, with errata 6241 and 5992): the model of a parsed report. Sans-I/O.

A :class:`Report` is a frozen tree of dataclasses (its :class:`PolicyResult` entries and their
:class:`FailureDetail` entries) with the warnings reading it gave, the unknown members it had (``extra``) and
its JSON bytes as received (``raw_json``), so nothing is lost. Here too is the vocabulary every module that reads
reports shares: the :class:`Limits` applied to each report, :class:`ReportError` and :class:`ReportWarning` with
their stable codes (:data:`ERROR_CODES`, :data:`WARNING_CODES`), and :class:`Warnings`, which collects warnings
while a report is read.

Reading a report takes these modules, each importing only those before it:

* :mod:`mxsec.tlsrpt.values`: small shared helpers (domain names, RFC 3339 date-times, message quoting);
* this module: the model and the vocabulary;
* :mod:`mxsec.tlsrpt.unpack`: gzip and zip, bounded against bombs (RFC 8460 §5.2);
* :mod:`mxsec.tlsrpt.ijson`: JSON text to Python values under I-JSON (RFC 7493) and the limits;
* :mod:`mxsec.tlsrpt.parse`: :func:`~mxsec.tlsrpt.parse.parse_report`, bytes in, :class:`Report` out;
* :mod:`mxsec.tlsrpt.filenames`: report file names (RFC 8460 §5.1), apart from the rest.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Any, Self

from mxsec.errors import ParseError
from mxsec.results import ResultType
from mxsec.tlsrpt.values import format_datetime, try_domain

__all__ = [
    "DEFAULT_LIMITS",
    "ERROR_CODES",
    "POLICY_TYPES",
    "RESULT_TYPES",
    "WARNING_CODES",
    "FailureDetail",
    "Limits",
    "PolicyResult",
    "Report",
    "ReportError",
    "ReportWarning",
]

MiB = 1024 * 1024

POLICY_TYPES = ("tlsa", "sts", "no-policy-found")
#: The RFC 8460 §4.3 result types (the IANA registry may grow; unknown values are kept with a warning).
RESULT_TYPES = frozenset(rt.value for rt in ResultType)


@dataclass(frozen=True)
class Limits:
    """Bounds applied to every report (EC-40, RPT-I-45). The defaults fit the largest real reports seen
    (a few MB of JSON) with a wide margin; an HTTPS endpoint may well choose smaller ones."""

    #: Bytes handed to :func:`~mxsec.tlsrpt.parse.parse_report` (compressed or not). RFC 8460 §5.2: ~10 MB is a
    #: common limit.
    max_input_bytes: int = 10 * MiB
    #: Bytes of JSON after decompression; decompression stops one byte past this.
    max_json_bytes: int = 16 * MiB
    #: Nesting depth of arrays and objects; a well-formed report needs 5.
    max_depth: int = 24
    #: Arrays and objects in the whole document.
    max_containers: int = 300_000
    #: Values in the whole document (array elements and object members, counted by their separators).
    max_values: int = 2_000_000
    #: Entries of ``policies``.
    max_policies: int = 10_000
    #: Entries of ``failure-details`` over all policies.
    max_failure_details: int = 200_000
    #: Characters of any one string (member names included).
    max_string_chars: int = 65_536
    #: Distinct warnings kept; later ones are counted in a final ``warnings-truncated`` warning.
    max_warnings: int = 200
    #: Members of a gzip file (real reports have one) and entries of a zip archive's central directory.
    max_archive_members: int = 64


DEFAULT_LIMITS = Limits()

#: ``code`` of every :class:`ReportError`.
ERROR_CODES = frozenset(
    {
        "not-bytes",  # the input is not bytes
        "empty",  # nothing but whitespace
        "too-large",  # the input is larger than max_input_bytes
        "decompressed-too-large",  # the gzip or zip content is larger than max_json_bytes
        "bad-gzip",  # corrupt or truncated gzip data (CRC, length, deflate errors)
        "bad-zip",  # unreadable zip archive, or not exactly one report in it
        "too-many-members",  # more gzip members or zip entries than max_archive_members
        "not-utf8",  # the JSON text is not UTF-8 (RFC 8259 §8.1, I-JSON)
        "lone-surrogate",  # a string holds an escaped lone surrogate (I-JSON §2.1)
        "not-json",  # JSON syntax error, NaN/Infinity, trailing data
        "too-deep",  # nesting deeper than max_depth
        "too-many-values",  # more containers than max_containers, or values than max_values
        "too-many-policies",  # more policies than max_policies
        "too-many-failure-details",  # more failure details than max_failure_details
        "string-too-long",  # a string longer than max_string_chars
        "number-out-of-range",  # an integer beyond ±(2^53-1), or a number that overflows a double
        "duplicate-key",  # an object with the same member name twice (I-JSON §2.3)
        "not-an-object",  # the top-level JSON value is not an object
        "missing-field",  # a required field is absent (or null) and no tolerance applies
        "bad-field",  # a field has a type or value no tolerance covers
        "bad-datetime",  # start-datetime / end-datetime is not a date-time
        "bad-count",  # a session count is negative, fractional or not a number
    }
)

#: ``code`` of every :class:`ReportWarning`.
WARNING_CODES = frozenset(
    {
        "utf8-bom",  # a UTF-8 byte order mark before the JSON text, ignored
        "gzip-members",  # a gzip file with several members, concatenated
        "gzip-trailing-data",  # bytes after the gzip data, ignored
        "zip-archive",  # the report came inside a zip archive
        "unknown-field",  # a member the RFC does not define, kept in ``extra``
        "legacy-field",  # a draft / misspelt member name read as the RFC name
        "legacy-field-ignored",  # a legacy member name next to the RFC one: the RFC one wins, the other is kept
        "number-as-text",  # a string field held a number
        "contact-info-missing",
        "contact-info-null",
        "contact-info-empty",
        "contact-info-array",  # an array of addresses, joined with ", "
        "organization-name-empty",
        "datetime-no-timezone",  # a date-time without "Z" or offset, taken as UTC
        "datetime-nonstandard",  # outside RFC 3339 (date only, no seconds, offset without ":", spaces)
        "datetime-leap-second",  # ":60" read as ":59"
        "date-range-reversed",  # end-datetime before start-datetime
        "policies-object",  # ``policies`` was one object instead of an array
        "policies-empty",
        "policy-type-case",  # "STS" read as "sts"
        "unknown-policy-type",
        "policy-string-missing",  # absent for an sts or tlsa policy
        "policy-string-null",
        "policy-string-string",  # one string instead of an array
        "policy-string-json-array",  # an element held a JSON-encoded array of strings (Microsoft, tlsa)
        "policy-domain-missing",  # absent, null or empty and no fallback given
        "policy-domain-fallback",  # absent, null or empty; the caller's fallback domain was used (EC-36)
        "policy-domain-normalized",  # upper case, trailing dot or U-labels, changed to lower-case A-labels
        "policy-domain-invalid",  # not a domain name; kept as written
        "mx-host-string",  # one string instead of an array (RFC 8460 before erratum 6241)
        "mx-host-null",
        "mx-host-prefix",  # an entry written "mx: host"
        "mx-host-empty-entry",  # an empty entry, dropped
        "summary-missing",  # no summary: successes taken as 0, failures as the sum of the details
        "summary-count-missing",  # one of the two totals absent
        "summary-mismatch",  # total-failure-session-count differs from the sum of the details
        "count-coerced",  # a count written as a string or as a float with an integral value
        "failure-details-null",
        "failure-details-object",  # one object instead of an array
        "result-type-case",
        "unknown-result-type",  # kept as written (the registry grows; RPT-I-38)
        "sending-mta-ip-missing",  # EC-35
        "ip-empty",  # "" for an IP address or host name field (Google), taken as absent
        "ip-null",
        "ip-invalid",  # not an IP address; kept as written
        "host-empty",  # "" or null for receiving-mx-hostname / receiving-mx-helo, taken as absent
        "warnings-truncated",
    }
)


class ReportError(ParseError):
    """The bytes are not a report mxsec can store; ``code`` (see :data:`ERROR_CODES`) says why.

    ``result_type`` stays ``None``: a broken report is the receiver's problem, not a TLS failure.
    """

    result_type = None

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ReportWarning(str):
    """A tolerance the parser applied: the text is for people, ``code`` (see :data:`WARNING_CODES`) for
    programs. It compares and hashes as its text."""

    code: str

    def __new__(cls, code: str, message: str) -> Self:
        obj = super().__new__(cls, message)
        obj.code = code
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReportWarning, (self.code, str(self)))


class Warnings:
    """Collects warnings in order, once each (repeats are counted), at most *limit* distinct ones."""

    def __init__(self, limit: int) -> None:
        self._limit = max(0, limit)
        self._seen: dict[tuple[str, str], int] = {}
        self._dropped = 0

    def add(self, code: str, message: str) -> None:
        key = (code, message)
        if key in self._seen:
            self._seen[key] += 1
        elif len(self._seen) < self._limit:
            self._seen[key] = 1
        else:
            self._dropped += 1

    @property
    def empty(self) -> bool:
        return not self._seen and not self._dropped

    def copy(self) -> Warnings:
        other = Warnings(self._limit)
        other._seen = dict(self._seen)
        other._dropped = self._dropped
        return other

    def result(self) -> tuple[ReportWarning, ...]:
        if not self._seen and not self._dropped:
            return ()
        out = [
            ReportWarning(code, message if count == 1 else f"{message} ({count} times)")
            for (code, message), count in self._seen.items()
        ]
        if self._dropped:
            out.append(ReportWarning("warnings-truncated", f"{self._dropped} further warnings left out"))
        return tuple(out)


def frozen_mapping(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only copy of *mapping* (the ``extra`` members of the model)."""
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, kw_only=True)
class FailureDetail:
    """One ``failure-details`` entry (RFC 8460 §4.4). Absent fields are ``None``; ``result_type`` is kept as
    written when it is not one of :data:`RESULT_TYPES`."""

    result_type: str
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    failed_session_count: int
    additional_information: str | None = None
    failure_reason_code: str | None = None
    #: Members the RFC does not define (and legacy names next to their RFC name), as decoded.
    extra: Mapping[str, Any] = field(default_factory=frozen_mapping, hash=False)

    @property
    def known_result_type(self) -> bool:
        return self.result_type in RESULT_TYPES

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result-type": self.result_type}
        for key, value in (
            ("sending-mta-ip", self.sending_mta_ip),
            ("receiving-mx-hostname", self.receiving_mx_hostname),
            ("receiving-mx-helo", self.receiving_mx_helo),
            ("receiving-ip", self.receiving_ip),
        ):
            if value is not None:
                out[key] = value
        out["failed-session-count"] = self.failed_session_count
        if self.additional_information is not None:
            out["additional-information"] = self.additional_information
        if self.failure_reason_code is not None:
            out["failure-reason-code"] = self.failure_reason_code
        out.update(self.extra)
        return out


@dataclass(frozen=True, kw_only=True)
class PolicyResult:
    """One ``policies`` entry: the policy applied, its session totals and the failure details.

    ``policy_domain`` is lower-case A-labels when it is a valid name (kept as written otherwise), the
    caller's fallback when the report has none, or ``None``. ``successful`` and ``failed`` are the summary's
    totals as written (the body is authoritative, RPT-I-44), even when the details add up differently.
    ``extra`` holds unknown members of the entry; unknown members of its ``policy`` and ``summary`` objects
    are under ``extra["policy"]`` and ``extra["summary"]``.
    """

    policy_type: str
    policy_string: tuple[str, ...] = ()
    policy_domain: str | None = None
    mx_host: tuple[str, ...] = ()
    successful: int = 0
    failed: int = 0
    failure_details: tuple[FailureDetail, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=frozen_mapping, hash=False)

    def to_dict(self) -> dict[str, Any]:
        extra = dict(self.extra)
        policy: dict[str, Any] = {"policy-type": self.policy_type, "policy-string": list(self.policy_string)}
        if self.policy_domain is not None:
            policy["policy-domain"] = self.policy_domain
        if self.mx_host:
            policy["mx-host"] = list(self.mx_host)
        policy.update(extra.pop("policy", {}))
        summary = {
            "total-successful-session-count": self.successful,
            "total-failure-session-count": self.failed,
        }
        summary.update(extra.pop("summary", {}))
        out: dict[str, Any] = {"policy": policy, "summary": summary}
        if self.failure_details:
            out["failure-details"] = [d.to_dict() for d in self.failure_details]
        out.update(extra)
        return out


@dataclass(frozen=True, kw_only=True)
class Report:
    """A parsed TLSRPT report. ``start`` and ``end`` are aware UTC datetimes exactly as written (see
    :attr:`end_exclusive` for the two end conventions); ``warnings`` lists every tolerance applied;
    ``raw_json`` holds the JSON bytes as received (after decompression)."""

    organization_name: str
    contact_info: str | None
    report_id: str
    start: datetime
    end: datetime
    policies: tuple[PolicyResult, ...]
    warnings: tuple[ReportWarning, ...] = ()
    #: Unknown top-level members; unknown members of ``date-range`` are under ``extra["date-range"]``.
    extra: Mapping[str, Any] = field(default_factory=frozen_mapping, hash=False)
    #: ``"json"``, ``"gzip"`` or ``"zip"``: how the bytes given to :func:`~mxsec.tlsrpt.parse.parse_report` were packed.
    source_format: str = "json"
    raw_json: bytes = field(default=b"", repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str, datetime, datetime]:
        """(organization-name, report-id, start, end): the key parsedmarc de-duplicates on (docs/reports.md,
        quirk 14). The report database uses (organization-name, report-id): RFC 8460 §4.4 makes report-id
        unique per reporter."""
        return (self.organization_name, self.report_id, self.start, self.end)

    @property
    def warning_codes(self) -> tuple[str, ...]:
        return tuple(w.code for w in self.warnings)

    @property
    def successful(self) -> int:
        return sum(p.successful for p in self.policies)

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self.policies)

    @property
    def end_exclusive(self) -> datetime:
        """``end`` as an exclusive bound: ``…T23:59:59Z`` (Google's usual style; also ``…23:59:59.999``)
        becomes the next day's ``00:00:00Z``; any other value is returned unchanged (EC-37)."""
        end = self.end
        if (end.hour, end.minute, end.second) == (23, 59, 59):
            return (end + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return end

    @property
    def day(self) -> date | None:
        """The UTC day the report covers when it covers exactly one (RPT-I-30) under either end
        convention; ``None`` otherwise."""
        start = self.start
        if (start.hour, start.minute, start.second, start.microsecond) != (0, 0, 0, 0):
            return None
        return start.date() if self.end_exclusive - start == timedelta(days=1) else None

    @property
    def submitter(self) -> str | None:
        """The domain of ``contact-info`` (what ``TLS-Report-Submitter`` must equal, RPT-I-19), or ``None``."""
        return _contact_domain(self.contact_info)

    def to_dict(self) -> dict[str, Any]:
        """The report in RFC 8460 §4.4 form with the errata (arrays for ``policies`` and ``mx-host``), as
        mxsec read it: coerced values, unknown members put back where they were."""
        extra = dict(self.extra)
        date_range = {"start-datetime": format_datetime(self.start), "end-datetime": format_datetime(self.end)}
        date_range.update(extra.pop("date-range", {}))
        out: dict[str, Any] = {
            "organization-name": self.organization_name,
            "date-range": date_range,
            "contact-info": self.contact_info,
            "report-id": self.report_id,
            "policies": [p.to_dict() for p in self.policies],
        }
        out.update(extra)
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@functools.lru_cache(maxsize=4096)
def _contact_domain(contact: str | None) -> str | None:
    if not contact:
        return None
    first = contact.split(",")[0].strip()
    if first.lower().startswith("mailto:"):
        first = first[len("mailto:") :]
    first = first.strip().strip("<>")
    local, at, domain = first.rpartition("@")
    if not at or not local:
        return None
    return try_domain(domain)
