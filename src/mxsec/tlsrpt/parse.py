"""TLSRPT aggregate reports (RFC 8460 §4, with errata 6241 and 5992): bytes in, :class:`Report` out. Sans-I/O.

:func:`parse_report` takes the bytes of one report as they arrive — JSON, gzip (RFC 8460 §5.2) or, as some
senders do, a zip archive holding one report — and returns a frozen tree of dataclasses. It is lenient about
the report's content and strict about its size and shape (docs/reports.md, "Parsing reports"):

* **Lenient** on every quirk seen from real senders (docs/reports.md lists them; EC-35..EC-37): each
  tolerance applied leaves a :class:`ReportWarning` (a ``str`` with a stable ``code``, see
  :data:`WARNING_CODES`) in ``Report.warnings``. Unknown fields are kept in the ``extra`` mappings and the
  exact JSON bytes in ``Report.raw_json``, so nothing is lost.
* **Strict** on hostile input (RFC 8460 §7, RPT-I-45, EC-40): input and decompressed sizes (gzip is
  decompressed as a stream with a cap; a bomb is never inflated fully), JSON nesting depth, number of JSON
  containers and values, number of policies and failure details, string lengths, integers within ±(2^53-1)
  and duplicate member names (I-JSON, RFC 7493; RPT-I-31). Every refusal is a :class:`ReportError` with a
  stable ``code`` (see :data:`ERROR_CODES`) and a one-line message; nothing else is ever raised.

The structure is checked before anything is decoded: a pre-scan of the JSON text (strings blanked out by one
linear regular-expression pass) counts containers and nesting depth, so ``[[[[…`` or ``[[],[],…]`` are
refused before :mod:`json` builds anything.

Speed: a report of the plain RFC shape (nearly all of them) is decoded by msgspec straight into typed Structs and
built without the pre-scan or a dict tree (:func:`_fast_report`); anything else, and anything that path is unsure
of, goes the full way above, so both give the same report, warnings and errors.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import json
import math
import re
import struct
import zipfile
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Annotated, Any, NamedTuple, Self

import msgspec
from msgspec import UNSET, UnsetType

from mxsec.errors import ParseError
from mxsec.names import normalize_domain
from mxsec.sts.results import ResultType

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
    "ReportFilename",
    "ReportWarning",
    "filename_parts",
    "parse_report",
]

MiB = 1024 * 1024

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
_UTF8_BOM = b"\xef\xbb\xbf"

#: I-JSON (RFC 7493 §2.2): integers outside this range cannot be represented exactly everywhere.
MAX_SAFE_INTEGER = 2**53 - 1

POLICY_TYPES = ("tlsa", "sts", "no-policy-found")
#: The RFC 8460 §4.3 result types (the IANA registry may grow; unknown values are kept with a warning).
RESULT_TYPES = frozenset(rt.value for rt in ResultType)


@dataclass(frozen=True)
class Limits:
    """Bounds applied to every report (EC-40, RPT-I-45). The defaults fit the largest real reports seen
    (a few MB of JSON) with a wide margin; an HTTPS endpoint may well choose smaller ones."""

    #: Bytes handed to :func:`parse_report` (compressed or not). RFC 8460 §5.2: ~10 MB is a common limit.
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


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
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
    extra: Mapping[str, Any] = field(default_factory=_frozen, hash=False)

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
    extra: Mapping[str, Any] = field(default_factory=_frozen, hash=False)

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
    extra: Mapping[str, Any] = field(default_factory=_frozen, hash=False)
    #: ``"json"``, ``"gzip"`` or ``"zip"``: how the bytes given to :func:`parse_report` were packed.
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
        date_range = {"start-datetime": _format_datetime(self.start), "end-datetime": _format_datetime(self.end)}
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


# --------------------------------------------------------------------------------------------------- parse


def parse_report(
    data: bytes, *, limits: Limits = DEFAULT_LIMITS, fallback_domain: str | None = None
) -> Report:
    """Parse one report (JSON, gzip or a zip holding one report); raise :class:`ReportError` if unusable.

    *fallback_domain* (the message's ``TLS-Report-Domain`` header, or the policy domain of the file name,
    see :func:`filename_parts`) is used for policies that have no ``policy-domain`` (EC-36); the report body
    wins whenever it has one (RPT-I-44).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ReportError("not-bytes", f"a report must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > limits.max_input_bytes:
        raise ReportError("too-large", f"report is {len(raw)} bytes, more than the limit of {limits.max_input_bytes}")
    warnings = _Warnings(limits.max_warnings)
    if raw[:2] == GZIP_MAGIC:
        source_format, payload = "gzip", _gunzip(raw, limits.max_json_bytes, warnings, limits.max_archive_members)
    elif raw[:4] == ZIP_MAGIC:
        source_format, payload = "zip", _unzip(raw, limits.max_json_bytes, warnings, limits.max_archive_members)
    else:
        source_format, payload = "json", raw
    if len(payload) > limits.max_json_bytes:
        raise ReportError(
            "decompressed-too-large",
            f"report JSON is {len(payload)} bytes, more than the limit of {limits.max_json_bytes}",
        )
    # The fast path may leave warnings behind when it gives up: it gets a copy, or the list itself while empty.
    pristine = warnings.empty
    report = _fast_report(payload, limits, warnings if pristine else warnings.copy(), fallback_domain, source_format)
    if report is not None:
        return report
    if pristine:
        warnings = _Warnings(limits.max_warnings)
    document = _load_json(payload, limits, warnings)
    return _Builder(limits, warnings, fallback_domain).report(document, payload, source_format)


class _Warnings:
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

    def copy(self) -> _Warnings:
        other = _Warnings(self._limit)
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


# ------------------------------------------------------------------------------------ unpacking the bytes


#: Compressed bytes handed to the inflater at a time. Whatever it does not use of them (``unused_data`` at the
#: end of a member, ``unconsumed_tail``) is copied by :mod:`zlib`, so feeding the whole rest of the input
#: would copy it once per member: quadratic in the number of members. A bounded window keeps it linear.
_INFLATE_WINDOW = 16 * 1024
#: Largest central directory of a zip archive read (one report needs one entry of well under 1 KiB).
MAX_ZIP_DIRECTORY = 64 * 1024
#: Largest inflation ratio of a zip entry (declared or actual) once its output passes 1 MiB; deflate
#: itself tops out near 1032:1, report JSON compresses ten to a few hundred times.
MAX_ZIP_RATIO = 500
_ZIP_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"


def _gunzip(data: bytes, limit: int, warnings: _Warnings,
            max_members: int = DEFAULT_LIMITS.max_archive_members) -> bytes:
    """Decompress every gzip member of *data*, stopping as soon as the output passes *limit* bytes or the
    member count passes *max_members*. Linear in the input: the compressed bytes are fed through a
    :class:`memoryview` window (see :data:`_INFLATE_WINDOW`), never as a copy of the rest of the input."""
    if len(data) <= _INFLATE_WINDOW and max_members >= 1:
        # The usual report: one small member, nothing after it. One call, at most limit + 1 bytes out; anything
        # else (more members, trailing bytes, an error, too much output) is left to the loop below.
        inflater = zlib.decompressobj(wbits=31)
        try:
            whole = inflater.decompress(data, limit + 1)
        except zlib.error:
            pass
        else:
            if inflater.eof and not inflater.unused_data and len(whole) <= limit:
                return whole
    view = memoryview(data)
    size = len(view)
    out = bytearray()
    position = 0
    members = 0
    while True:
        if members >= max_members:
            raise ReportError(
                "too-many-members", f"gzip data has more than {max_members} members; a report has one"
            )
        inflater = zlib.decompressobj(wbits=31)
        try:
            while not inflater.eof:
                if position >= size:
                    raise ReportError("bad-gzip", "gzip data is truncated")
                end = min(position + _INFLATE_WINDOW, size)
                pending: Any = view[position:end]
                position = end
                while True:
                    chunk = inflater.decompress(pending, limit + 1 - len(out))
                    out += chunk
                    if len(out) > limit:
                        raise ReportError(
                            "decompressed-too-large",
                            f"gzip data inflates to more than the limit of {limit} bytes",
                        )
                    pending = inflater.unconsumed_tail
                    if inflater.eof or not pending:
                        break
        except zlib.error as exc:
            raise ReportError("bad-gzip", f"gzip data is corrupt ({exc})") from None
        position -= len(inflater.unused_data)  # at most one window, given back to the next member
        members += 1
        if view[position:position + 2] == GZIP_MAGIC:
            continue
        if members > 1:
            warnings.add("gzip-members", f"gzip data has {members} members; their contents were concatenated")
        if position < size:
            warnings.add("gzip-trailing-data", f"{size - position} bytes after the gzip data ignored")
        return bytes(out)


def _zip_directory(data: bytes) -> tuple[int, int]:
    """(entries, bytes) of a zip archive's central directory, from its end record (and the zip64 one)."""
    tail_start = max(0, len(data) - (22 + 65535))
    at = data.rfind(_ZIP_EOCD, tail_start)
    if at < 0 or len(data) - at < 22:
        raise ReportError("bad-zip", "zip archive has no end of central directory record")
    entries, directory_size = struct.unpack_from("<HI", data, at + 10)
    locator = at - 20
    if locator >= 0 and data[locator:locator + 4] == _ZIP64_LOCATOR:
        (record,) = struct.unpack_from("<Q", data, locator + 8)
        if record + 56 > len(data) or data[record:record + 4] != b"PK\x06\x06":
            raise ReportError("bad-zip", "zip archive has a broken zip64 end record")
        entries, directory_size = struct.unpack_from("<QQ", data, record + 32)
    return entries, directory_size


def _unzip(data: bytes, limit: int, warnings: _Warnings,
           max_members: int = DEFAULT_LIMITS.max_archive_members) -> bytes:
    """The one report inside a zip archive (a ``.json`` or ``.json.gz`` member, or the only member).

    The central directory's entry count and size are read from its end record first and capped (a directory
    of 100,000 entries is refused before :mod:`zipfile` reads any of it); the chosen entry's declared sizes
    and its actual output are capped by *limit* and :data:`MAX_ZIP_RATIO`. :mod:`zipfile` raises a wide range
    of exceptions on hostile archives; all of them become ``bad-zip``.
    """
    entries, directory_size = _zip_directory(data)
    if entries > max_members:
        raise ReportError("too-many-members", f"zip archive has {entries} entries, more than {max_members}")
    if directory_size > MAX_ZIP_DIRECTORY:
        raise ReportError(
            "bad-zip", f"zip central directory is {directory_size} bytes, more than {MAX_ZIP_DIRECTORY}"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if len(infos) > max_members:
                raise ReportError(
                    "too-many-members", f"zip archive has {len(infos)} entries, more than {max_members}"
                )
            members = [info for info in infos if not info.is_dir()]
            reports = [m for m in members if m.filename.lower().endswith((".json", ".json.gz", ".gz"))]
            chosen = reports if reports else members
            if len(chosen) != 1:
                raise ReportError("bad-zip", f"zip archive holds {len(chosen)} candidate reports; expected one")
            info = chosen[0]
            if info.file_size > limit:
                raise ReportError(
                    "decompressed-too-large",
                    f"zip member declares {info.file_size} bytes, more than the limit of {limit}",
                )
            if info.compress_size > len(data):
                raise ReportError("bad-zip", "zip member is larger than the archive")
            _check_ratio(info.file_size, info.compress_size)
            with archive.open(info) as stream:
                content = stream.read(limit + 1)
    except ReportError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile's failure modes are many (see the docstring)
        raise ReportError("bad-zip", f"zip archive cannot be read ({type(exc).__name__})") from None
    warnings.add("zip-archive", f"report came in a zip archive (member {info.filename!r})")
    if len(content) > limit:
        raise ReportError("decompressed-too-large", f"zip member inflates to more than the limit of {limit} bytes")
    _check_ratio(len(content), info.compress_size)
    if content[:2] == GZIP_MAGIC:
        return _gunzip(content, limit, warnings, max_members)
    return content


def _check_ratio(inflated: int, compressed: int) -> None:
    if inflated > MiB and inflated > MAX_ZIP_RATIO * max(compressed, 1):
        raise ReportError(
            "decompressed-too-large",
            f"zip member inflates {inflated} bytes from {compressed}, more than {MAX_ZIP_RATIO} times",
        )


# ---------------------------------------------------------------------------------------- JSON, I-JSON

# A JSON string, or an unterminated one running to the end of the text. Possessive quantifiers and the
# always-matching tail keep this linear: every '"' outside a string starts a match that ends at the closing
# quote or at the end of the text, so the engine never rescans.
_STRING_RE = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_BRACKET_RE = re.compile(r"[\[\]{}]")


def _load_json(payload: bytes, limits: Limits, warnings: _Warnings) -> dict[str, Any]:
    body = payload
    if body.startswith(_UTF8_BOM):
        body = body[len(_UTF8_BOM) :]
        warnings.add("utf8-bom", "UTF-8 byte order mark before the JSON text ignored")
    if not body.strip():
        raise ReportError("empty", "report is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportError("not-utf8", f"report is not UTF-8 (invalid byte at offset {exc.start})") from None
    # A text no longer than the string limit cannot hold a too-long string, nor more values or containers than
    # the limits allow; without a surrogate escape it cannot hold a lone surrogate. Such texts (nearly every
    # real report) are decoded without the pre-scan and the per-string checks, then checked for depth and
    # number ranges. Whatever goes wrong on that path is decided by the full path, so errors are the same.
    size = len(text)
    if (
        size <= limits.max_string_chars and size <= limits.max_values and size <= 2 * limits.max_containers
        and _SURROGATE_ESCAPE_RE.search(text) is None
    ):
        try:
            document = _FAST_DECODER.decode(text)
            _check_tree(document, limits.max_depth)
        except (ValueError, RecursionError):
            document = _load_json_checked(text, limits)
    else:
        document = _load_json_checked(text, limits)
    if isinstance(document, str):
        _check_string(document, limits.max_string_chars)
    if not isinstance(document, dict):
        raise ReportError("not-an-object", f"report JSON must be an object, not {_json_type(document)}")
    return document


def _load_json_checked(text: str, limits: Limits) -> Any:
    _prescan(text, limits)
    decoder = json.JSONDecoder(
        object_pairs_hook=_object_hook(limits.max_string_chars),
        parse_int=_parse_int,
        parse_float=_parse_float,
        parse_constant=_parse_constant,
        strict=True,
    )
    try:
        return decoder.decode(text)
    except ReportError:
        raise  # from a hook (ReportError is a ValueError too)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ReportError("not-json", f"report is not valid JSON: {exc.msg} at {where}") from None
    except RecursionError:
        raise ReportError("too-deep", "report JSON is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than int() accepts
        raise ReportError("not-json", f"report is not valid JSON: {_clip(str(exc))}") from None


def _check_tree(document: Any, max_depth: int) -> None:
    """What the fast path's decoder did not check: nesting depth and I-JSON number ranges."""
    stack = [([document], 0)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise ReportError("too-deep", f"report JSON is nested deeper than {max_depth} levels")
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is int:
                if not -MAX_SAFE_INTEGER <= child <= MAX_SAFE_INTEGER:
                    _parse_int(str(child))
            elif kind is float and not math.isfinite(child):
                raise ReportError("number-out-of-range", f"number {child!r} overflows a double")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise ReportError(
                    "duplicate-key", f"member {_show(key)} appears twice in one object (I-JSON, RFC 7493 §2.3)"
                )
            seen.add(key)
    return result


def _prescan(text: str, limits: Limits) -> None:
    """Refuse too deep or too big structures before :mod:`json` builds them (linear time, C-speed scans)."""
    skeleton = _STRING_RE.sub('""', text)
    values = skeleton.count(",") + 1
    if values > limits.max_values:
        raise ReportError("too-many-values", f"report JSON has more than {limits.max_values} values")
    depth = 0
    containers = 0
    for match in _BRACKET_RE.finditer(skeleton):
        if match.group() in "[{":
            depth += 1
            containers += 1
            if depth > limits.max_depth:
                raise ReportError("too-deep", f"report JSON is nested deeper than {limits.max_depth} levels")
            if containers > limits.max_containers:
                raise ReportError(
                    "too-many-values", f"report JSON has more than {limits.max_containers} arrays and objects"
                )
        else:
            depth -= 1  # unbalanced brackets are json's to report


def _object_hook(max_chars: int):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            _check_string(key, max_chars)
            if key in result:
                raise ReportError(
                    "duplicate-key", f"member {_show(key)} appears twice in one object (I-JSON, RFC 7493 §2.3)"
                )
            if isinstance(value, str):
                _check_string(value, max_chars)
            elif isinstance(value, list):
                _check_list(value, max_chars)
            result[key] = value
        return result

    return hook


def _check_list(items: list[Any], max_chars: int) -> None:
    # Objects inside were checked by their own hook call; nested arrays are reached only from here.
    stack = [items]
    while stack:
        for item in stack.pop():
            if isinstance(item, str):
                _check_string(item, max_chars)
            elif isinstance(item, list):
                stack.append(item)


def _check_string(text: str, max_chars: int) -> None:
    if len(text) > max_chars:
        raise ReportError("string-too-long", f"a string in the report is longer than {max_chars} characters")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ReportError("lone-surrogate", "a string in the report holds an escaped lone surrogate") from None


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 16 or abs(value := int(text)) > MAX_SAFE_INTEGER:
        raise ReportError("number-out-of-range", f"integer {_show(text)} is outside ±(2^53-1) (I-JSON)")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ReportError("number-out-of-range", f"number {_show(text)} overflows a double")
    return value


def _parse_constant(text: str) -> Any:
    raise ReportError("not-json", f"report is not valid JSON: {text} is not a JSON value")


_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
_FAST_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_parse_constant, strict=True)


# ------------------------------------------------------------------------------------ building the tree

_TOP_FIELDS = ("organization-name", "date-range", "contact-info", "report-id", "policies")
_TOP_LEGACY = {"tls-report": "policies"}
_RANGE_FIELDS = ("start-datetime", "end-datetime")
_ENTRY_FIELDS = ("policy", "summary", "failure-details")
_POLICY_FIELDS = ("policy-type", "policy-string", "policy-domain", "mx-host")
_POLICY_LEGACY = {"mx-host-pattern": "mx-host"}
_SUMMARY_FIELDS = ("total-successful-session-count", "total-failure-session-count")
_DETAIL_FIELDS = (
    "result-type",
    "sending-mta-ip",
    "receiving-mx-hostname",
    "receiving-mx-helo",
    "receiving-ip",
    "failed-session-count",
    "additional-information",
    "failure-reason-code",
)
_DETAIL_LEGACY = {"failure-error-code": "failure-reason-code", "additional-info-uri": "additional-information"}
_MX_PREFIX_RE = re.compile(r"\s*mx\s*:\s*", re.IGNORECASE)
_COUNT_TEXT_RE = re.compile(r"[0-9]{1,16}")
_DATETIME_RE = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:(?P<sep>[Tt ])(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})(?::(?P<second>[0-9]{2})(?:\.(?P<frac>[0-9]{1,20}))?)?)?"
    r"\s*(?P<tz>[Zz]|[+-][0-9]{2}:?[0-9]{2})?",
    re.ASCII,
)
# RFC 3339 §5.6 (a space for "T" is allowed by its note); the time zone may be missing: that has its own warning.
_RFC3339_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?", re.ASCII
)


class _Builder:
    def __init__(self, limits: Limits, warnings: _Warnings, fallback_domain: str | None) -> None:
        self.limits = limits
        self.warnings = warnings
        self.fallback = fallback_domain if isinstance(fallback_domain, str) and fallback_domain.strip() else None
        self.details_seen = 0

    def warn(self, code: str, message: str) -> None:
        self.warnings.add(code, message)

    def split(
        self, obj: dict[str, Any], known: tuple[str, ...], legacy: Mapping[str, str], where: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Known members (legacy names renamed) and everything else, with a warning for each oddity."""
        fields: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in obj.items():
            if key in known:
                fields[key] = value
            elif key in legacy:
                target = legacy[key]
                if target in obj:
                    extra[key] = value
                    self.warn(
                        "legacy-field-ignored", f"legacy field {key!r}{where} ignored ({target!r} is present); kept"
                    )
                else:
                    fields[target] = value
                    self.warn("legacy-field", f"legacy field {key!r}{where} read as {target!r}")
            else:
                extra[key] = value
                self.warn("unknown-field", f"unknown field {_show(key)}{where} kept")
        return fields, extra

    # -- top level

    def report(self, doc: dict[str, Any], payload: bytes, source_format: str) -> Report:
        fields, extra = self.split(doc, _TOP_FIELDS, _TOP_LEGACY, "")
        organization = self.text(fields, "organization-name", required=True)
        assert organization is not None
        if not organization.strip():
            self.warn("organization-name-empty", "organization-name is empty")
        report_id = self.text(fields, "report-id", required=True)
        assert report_id is not None
        if not report_id.strip():
            raise ReportError("missing-field", "report-id is empty")
        contact = self.contact(fields)
        start, end, range_extra = self.date_range(fields)
        if range_extra:
            extra["date-range"] = range_extra
        policies = self.policies(fields)
        return Report(
            organization_name=organization,
            contact_info=contact,
            report_id=report_id,
            start=start,
            end=end,
            policies=policies,
            warnings=self.warnings.result(),
            extra=_frozen(extra),
            source_format=source_format,
            raw_json=payload,
        )

    def text(self, fields: dict[str, Any], name: str, *, required: bool = False, where: str = "") -> str | None:
        """A string field: numbers become their text (with a warning); absent/null is None or an error."""
        if name not in fields or fields[name] is None:
            if required:
                state = "missing" if name not in fields else "null"
                raise ReportError("missing-field", f"{name}{where} is {state}")
            return None
        value = fields[name]
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
            self.warn("number-as-text", f"{name}{where} was a number; read as {text!r}")
            return text
        raise ReportError("bad-field", f"{name}{where} must be a string, not {_json_type(value)}")

    def contact(self, fields: dict[str, Any]) -> str | None:
        if "contact-info" not in fields:
            self.warn("contact-info-missing", "contact-info missing")
            return None
        value = fields["contact-info"]
        if value is None:
            self.warn("contact-info-null", "contact-info null")
            return None
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            self.warn("contact-info-array", "contact-info was an array; its entries were joined with ', '")
            value = ", ".join(value)
        text = self.text({"contact-info": value}, "contact-info")
        if text is not None and not text.strip():
            self.warn("contact-info-empty", "contact-info empty")
            return None
        return text

    def date_range(self, fields: dict[str, Any]) -> tuple[datetime, datetime, dict[str, Any]]:
        if fields.get("date-range") is None:
            raise ReportError("missing-field", f"date-range is {'null' if 'date-range' in fields else 'missing'}")
        value = fields["date-range"]
        if not isinstance(value, dict):
            raise ReportError("bad-field", f"date-range must be an object, not {_json_type(value)}")
        parts, extra = self.split(value, _RANGE_FIELDS, {}, " in date-range")
        start = self.datetime(parts, "start-datetime")
        end = self.datetime(parts, "end-datetime")
        if end < start:
            self.warn("date-range-reversed", "date-range: end-datetime is before start-datetime")
        return start, end, extra

    def datetime(self, parts: dict[str, Any], name: str) -> datetime:
        raw = self.text(parts, name, required=True, where=" in date-range")
        assert raw is not None
        value, warnings = _read_datetime(name, raw)
        for code, message in warnings:
            self.warn(code, message)
        return value

    # -- policies

    def policies(self, fields: dict[str, Any]) -> tuple[PolicyResult, ...]:
        if fields.get("policies") is None:
            raise ReportError("missing-field", f"policies is {'null' if 'policies' in fields else 'missing'}")
        value = fields["policies"]
        if isinstance(value, dict):
            self.warn("policies-object", "policies was an object, not an array; read as an array of one")
            value = [value]
        if not isinstance(value, list):
            raise ReportError("bad-field", f"policies must be an array, not {_json_type(value)}")
        if len(value) > self.limits.max_policies:
            raise ReportError("too-many-policies", f"report has more than {self.limits.max_policies} policies")
        if not value:
            self.warn("policies-empty", "policies is empty")
        return tuple(self.policy_entry(entry, index) for index, entry in enumerate(value))

    def policy_entry(self, entry: Any, index: int) -> PolicyResult:
        where = f" in policies[{index}]"
        if not isinstance(entry, dict):
            raise ReportError("bad-field", f"policies[{index}] must be an object, not {_json_type(entry)}")
        fields, extra = self.split(entry, _ENTRY_FIELDS, {}, " in a policies entry")
        policy = fields.get("policy")
        if policy is None:
            raise ReportError("missing-field", f"policy{where} is {'null' if 'policy' in fields else 'missing'}")
        if not isinstance(policy, dict):
            raise ReportError("bad-field", f"policy{where} must be an object, not {_json_type(policy)}")
        pfields, pextra = self.split(policy, _POLICY_FIELDS, _POLICY_LEGACY, " in policy")
        if pextra:
            extra["policy"] = pextra

        policy_type = self.text(pfields, "policy-type", required=True, where=where)
        assert policy_type is not None
        policy_type = self.registered(policy_type, POLICY_TYPES, "policy-type")

        policy_string = self.policy_string(pfields, policy_type, where)
        policy_domain = self.policy_domain(pfields.get("policy-domain"), where)
        mx_host = self.mx_host(pfields, where)

        details = self.failure_details(fields, where)
        detail_sum = sum(d.failed_session_count for d in details)
        successful, failed, sextra = self.summary(fields, detail_sum, where)
        if sextra:
            extra["summary"] = sextra
        if details and failed != detail_sum:
            self.warn(
                "summary-mismatch",
                f"summary failure count {failed} differs from the sum of failure details {detail_sum}",
            )
        return PolicyResult(
            policy_type=policy_type,
            policy_string=policy_string,
            policy_domain=policy_domain,
            mx_host=mx_host,
            successful=successful,
            failed=failed,
            failure_details=details,
            extra=_frozen(extra),
        )

    def string_list(self, value: list[Any], name: str, where: str) -> list[str]:
        out = []
        for item in value:
            if not isinstance(item, str):
                raise ReportError("bad-field", f"{name}{where} must hold strings, not {_json_type(item)}")
            out.append(item)
        return out

    def policy_string(self, pfields: dict[str, Any], policy_type: str, where: str) -> tuple[str, ...]:
        if "policy-string" not in pfields:
            if policy_type != "no-policy-found":
                text = f"policy-string missing (policy-type {policy_type!r}); taken as empty"
                self.warn("policy-string-missing", text)
            return ()
        value = pfields["policy-string"]
        if value is None:
            self.warn("policy-string-null", "policy-string null; taken as empty")
            return ()
        if isinstance(value, str):
            self.warn("policy-string-string", "policy-string was a string, not an array")
            value = [value]
        if not isinstance(value, list):
            raise ReportError("bad-field", f"policy-string{where} must be an array, not {_json_type(value)}")
        lines: list[str] = []
        for item in self.string_list(value, "policy-string", where):
            unpacked = _json_string_array(item)
            if unpacked is None:
                lines.append(item)
            else:
                self.warn("policy-string-json-array", "policy-string held a JSON-encoded array; its strings were used")
                lines.extend(unpacked)
        return tuple(lines)

    def policy_domain(self, value: Any, where: str) -> str | None:
        if value is not None and not isinstance(value, str):
            raise ReportError("bad-field", f"policy-domain{where} must be a string, not {_json_type(value)}")
        if value is None or not value.strip():
            state = "missing" if value is None else "empty"
            if self.fallback is not None:
                domain = _try_domain(self.fallback) or self.fallback
                self.warn("policy-domain-fallback", f"policy-domain {state}; {domain!r} (given by the caller) used")
                return domain
            self.warn("policy-domain-missing", f"policy-domain {state}")
            return None
        normalized = _try_domain(value)
        if normalized is None:
            self.warn("policy-domain-invalid", f"policy-domain {_show(value)} is not a domain name; kept as written")
            return value
        if normalized != value:
            self.warn("policy-domain-normalized", f"policy-domain {_show(value)} read as {normalized!r}")
        return normalized

    def mx_host(self, pfields: dict[str, Any], where: str) -> tuple[str, ...]:
        if "mx-host" not in pfields:
            return ()
        value = pfields["mx-host"]
        if value is None:
            self.warn("mx-host-null", "mx-host null; taken as empty")
            return ()
        if isinstance(value, str):
            self.warn("mx-host-string", "mx-host was a string, not an array (RFC 8460 erratum 6241)")
            value = [value]
        if not isinstance(value, list):
            raise ReportError("bad-field", f"mx-host{where} must be an array, not {_json_type(value)}")
        hosts = []
        for item in self.string_list(value, "mx-host", where):
            prefix = _MX_PREFIX_RE.match(item)
            if prefix:
                self.warn("mx-host-prefix", f"mx-host entry {_show(item)} had an 'mx:' prefix; removed")
                item = item[prefix.end() :]
            if not item.strip():
                self.warn("mx-host-empty-entry", "empty mx-host entry dropped")
                continue
            hosts.append(item)
        return tuple(hosts)

    def summary(self, fields: dict[str, Any], detail_sum: int, where: str) -> tuple[int, int, dict[str, Any]]:
        value = fields.get("summary")
        if value is None:
            self.warn(
                "summary-missing",
                f"summary {'null' if 'summary' in fields else 'missing'}; successful sessions taken as 0, "
                "failed sessions as the sum of the failure details",
            )
            return 0, detail_sum, {}
        if not isinstance(value, dict):
            raise ReportError("bad-field", f"summary{where} must be an object, not {_json_type(value)}")
        sfields, sextra = self.split(value, _SUMMARY_FIELDS, {}, " in summary")
        counts = []
        for name, default in (("total-successful-session-count", 0), ("total-failure-session-count", detail_sum)):
            if sfields.get(name) is None:
                self.warn("summary-count-missing", f"{name} missing; taken as {default}")
                counts.append(default)
            else:
                counts.append(self.count(sfields[name], name, where))
        return counts[0], counts[1], sextra

    def count(self, value: Any, name: str, where: str) -> int:
        if isinstance(value, bool):
            raise ReportError("bad-count", f"{name}{where} must be a number, not a boolean")
        if isinstance(value, int):
            result = value
        elif isinstance(value, float):
            if not value.is_integer() or abs(value) > MAX_SAFE_INTEGER:
                raise ReportError("bad-count", f"{name}{where} {value!r} is not a whole number")
            result = int(value)
            self.warn("count-coerced", f"{name} written as {value!r}; read as {result}")
        elif isinstance(value, str) and _COUNT_TEXT_RE.fullmatch(value.strip()):
            result = int(value.strip())
            if result > MAX_SAFE_INTEGER:
                raise ReportError("number-out-of-range", f"{name}{where} is outside ±(2^53-1) (I-JSON)")
            self.warn("count-coerced", f"{name} was a string; read as {result}")
        else:
            raise ReportError("bad-count", f"{name}{where} must be a number, not {_json_type(value)}")
        if result < 0:
            raise ReportError("bad-count", f"{name}{where} is negative ({result})")
        return result

    # -- failure details

    def failure_details(self, fields: dict[str, Any], where: str) -> tuple[FailureDetail, ...]:
        if "failure-details" not in fields:
            return ()
        value = fields["failure-details"]
        if value is None:
            self.warn("failure-details-null", "failure-details null; taken as empty")
            return ()
        if isinstance(value, dict):
            self.warn("failure-details-object", "failure-details was an object, not an array")
            value = [value]
        if not isinstance(value, list):
            raise ReportError("bad-field", f"failure-details{where} must be an array, not {_json_type(value)}")
        self.details_seen += len(value)
        if self.details_seen > self.limits.max_failure_details:
            raise ReportError(
                "too-many-failure-details", f"report has more than {self.limits.max_failure_details} failure details"
            )
        return tuple(self.detail(item, f"{where}.failure-details[{n}]") for n, item in enumerate(value))

    def detail(self, item: Any, where: str) -> FailureDetail:
        if not isinstance(item, dict):
            raise ReportError("bad-field", f"{where.removeprefix(' in ')} must be an object, not {_json_type(item)}")
        fields, extra = self.split(item, _DETAIL_FIELDS, _DETAIL_LEGACY, " in a failure detail")
        result_type = self.text(fields, "result-type", required=True, where=where)
        assert result_type is not None
        result_type = self.registered(result_type, RESULT_TYPES, "result-type")
        if fields.get("failed-session-count") is None:
            state = "null" if "failed-session-count" in fields else "missing"
            raise ReportError("missing-field", f"failed-session-count{where} is {state}")
        count = self.count(fields["failed-session-count"], "failed-session-count", where)
        if "sending-mta-ip" not in fields:
            self.warn("sending-mta-ip-missing", "sending-mta-ip missing in a failure detail")
        return FailureDetail(
            result_type=result_type,
            sending_mta_ip=self.address(fields, "sending-mta-ip", where),
            receiving_mx_hostname=self.host(fields, "receiving-mx-hostname", where),
            receiving_mx_helo=self.host(fields, "receiving-mx-helo", where),
            receiving_ip=self.address(fields, "receiving-ip", where),
            failed_session_count=count,
            additional_information=self.text(fields, "additional-information", where=where),
            failure_reason_code=self.text(fields, "failure-reason-code", where=where),
            extra=_frozen(extra),
        )

    def address(self, fields: dict[str, Any], name: str, where: str) -> str | None:
        if name not in fields:
            return None
        if fields[name] is None:
            self.warn("ip-null", f"{name} null; taken as absent")
            return None
        text = self.text(fields, name, where=where)
        assert text is not None
        return self.address_text(text, name)

    def address_text(self, text: str, name: str) -> str | None:
        """An IP address field's string: stripped when it is an address, kept as written (with a warning) when
        it is not, absent (with a warning) when empty."""
        stripped = text.strip()
        if not stripped:
            self.warn("ip-empty", f"{name} empty; taken as absent")
            return None
        if not _is_ip_address(stripped):
            self.warn("ip-invalid", f"{name} {_show(text)} is not an IP address; kept as written")
            return text
        return stripped

    def host(self, fields: dict[str, Any], name: str, where: str) -> str | None:
        if name not in fields:
            return None
        return self.host_text(self.text(fields, name, where=where), name)

    def host_text(self, text: str | None, name: str) -> str | None:
        """A host name field's string; null or empty is absent (with a warning)."""
        if text is None or not text.strip():
            self.warn("host-empty", f"{name} {'null' if text is None else 'empty'}; taken as absent")
            return None
        return text

    def registered(self, value: str, known: Collection[str], name: str) -> str:
        """A ``policy-type`` or ``result-type`` value: as written when registered; read in lower case without
        spaces (with a warning) when only that differs; else kept as written, with a warning."""
        if value in known:
            return value
        folded = value.strip().lower()
        if folded != value and folded in known:
            self.warn(f"{name}-case", f"{name} {_show(value)} read as {folded!r}")
            return folded
        self.warn(f"unknown-{name}", f"unknown {name} {_show(value)} kept")
        return value


# ------------------------------------------------------------------------------------- the typed fast path
#
# Nearly every real report has exactly the RFC 8460 shape. msgspec decodes such a text straight into the Structs
# below, checking member names and types in C (no dicts, no per-object Python hook, no second walk), and
# _FastBuilder turns them into a Report. Whatever the Structs do not admit (an unknown or legacy member, a
# null, a number written as text, a float or negative count, a missing member, too many of something, a
# duplicate member name) makes the fast path give up, and the report goes the full way (_load_json, then
# _Builder), which alone decides it. So the fast path answers only for texts on which both ways agree, with the
# same warnings in the same order (tests/unit/test_tlsrpt_report_properties.py compares them).

_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_SAFE_INTEGER)]


class _TDetail(msgspec.Struct, forbid_unknown_fields=True, rename="kebab", kw_only=True):
    result_type: str
    failed_session_count: _Count
    sending_mta_ip: str | UnsetType = UNSET
    receiving_mx_hostname: str | UnsetType = UNSET
    receiving_mx_helo: str | UnsetType = UNSET
    receiving_ip: str | UnsetType = UNSET
    additional_information: str | UnsetType = UNSET
    failure_reason_code: str | UnsetType = UNSET


class _TPolicy(msgspec.Struct, forbid_unknown_fields=True, rename="kebab", kw_only=True):
    policy_type: str
    policy_string: list[str] | UnsetType = UNSET
    policy_domain: str | UnsetType = UNSET
    mx_host: list[str] | UnsetType = UNSET


class _TSummary(msgspec.Struct, forbid_unknown_fields=True, rename="kebab"):
    total_successful_session_count: _Count
    total_failure_session_count: _Count


class _TEntry(msgspec.Struct, forbid_unknown_fields=True, rename="kebab", kw_only=True):
    policy: _TPolicy
    summary: _TSummary
    failure_details: list[_TDetail] | UnsetType = UNSET


class _TRange(msgspec.Struct, forbid_unknown_fields=True, rename="kebab"):
    start_datetime: str
    end_datetime: str


class _TReport(msgspec.Struct, forbid_unknown_fields=True, rename="kebab", kw_only=True):
    organization_name: str
    date_range: _TRange
    contact_info: str | UnsetType = UNSET
    report_id: str
    policies: list[_TEntry]


_TYPED_DECODER = msgspec.json.Decoder(_TReport)
#: Nesting depth of the typed shape (report, policies, entry, policy or failure-details, detail or strings).
_TYPED_DEPTH = 5
#: The longest member name of the typed shape: the full path checks member names against max_string_chars too.
_TYPED_LONGEST_NAME = len("total-successful-session-count")
#: Escapes the fast path leaves to the full path: surrogates (lone ones are refused there) and an escaped ":"
#: (the duplicate-member check below counts the colons of the text).
_TYPED_ESCAPE_RE = re.compile(r"\\u(?:[dD][89a-fA-F]|003[aA])")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _make(cls: type, values: dict[str, Any]) -> Any:
    """An instance of the frozen dataclass *cls* with *values* (every field) as its attributes, without the
    generated ``__init__`` (one ``object.__setattr__`` per field: a third of the fast path's time). The property
    tests compare these instances with those the full path builds through ``__init__``."""
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    return obj


class _NotFast(Exception):
    """The fast path gives the report to the full path."""


def _fast_report(payload: bytes, limits: Limits, warnings: _Warnings, fallback_domain: str | None,
                 source_format: str) -> Report | None:
    """The report, when *payload* has the plain RFC shape and passes every limit; ``None`` otherwise. *warnings*
    is filled as it goes: the caller gives one it may throw away (see :func:`parse_report`)."""
    if limits.max_depth < _TYPED_DEPTH or limits.max_string_chars < _TYPED_LONGEST_NAME or payload[:1] != b"{":
        return None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    size = len(text)
    if (
        (size > limits.max_values and text.count(",") >= limits.max_values)
        or (size > 2 * limits.max_containers and text.count("{") + text.count("[") > limits.max_containers)
        or _TYPED_ESCAPE_RE.search(text) is not None
    ):
        return None
    try:
        document = _TYPED_DECODER.decode(text)
    except msgspec.MsgspecError:
        return None
    try:
        return _FastBuilder(limits, warnings, fallback_domain).typed(document, text, payload, source_format)
    except (_NotFast, ReportError):
        return None


class _FastBuilder(_Builder):
    """:class:`_Builder`'s decisions on a :class:`_TReport` (same warnings, same order); raises :class:`_NotFast`
    where the full path would refuse the report or needs its dict-based handling."""

    def typed(self, doc: _TReport, text: str, payload: bytes, source_format: str) -> Report:
        warn = self.warnings.add
        dates = doc.date_range
        organization, report_id, contact = doc.organization_name, doc.report_id, doc.contact_info
        strings = [organization, report_id, dates.start_datetime, dates.end_datetime]
        members = 6  # organization-name, date-range, report-id, policies, start-datetime, end-datetime
        if not organization.strip():
            warn("organization-name-empty", "organization-name is empty")
        if not report_id.strip():
            raise _NotFast
        if contact is UNSET:
            warn("contact-info-missing", "contact-info missing")
            contact = None
        else:
            members += 1
            strings.append(contact)
            if not contact.strip():
                warn("contact-info-empty", "contact-info empty")
                contact = None
        start, found = _read_datetime("start-datetime", dates.start_datetime)
        for code, message in found:
            warn(code, message)
        end, found = _read_datetime("end-datetime", dates.end_datetime)
        for code, message in found:
            warn(code, message)
        if end < start:
            warn("date-range-reversed", "date-range: end-datetime is before start-datetime")

        entries = doc.policies
        if len(entries) > self.limits.max_policies:
            raise _NotFast
        if not entries:
            warn("policies-empty", "policies is empty")
        policies = []
        for entry in entries:
            policy = entry.policy
            members += 5  # policy, summary, policy-type and the two totals
            raw_type = policy.policy_type
            strings.append(raw_type)
            policy_type = self.registered(raw_type, POLICY_TYPES, "policy-type")

            lines = policy.policy_string
            if lines is UNSET:
                if policy_type != "no-policy-found":
                    warn("policy-string-missing",
                         f"policy-string missing (policy-type {policy_type!r}); taken as empty")
                policy_string: tuple[str, ...] = ()
            else:
                members += 1
                strings.extend(lines)
                if "[" in "\0".join(lines) and any(line.lstrip()[:1] == "[" for line in lines):
                    policy_string = self.policy_string({"policy-string": lines}, policy_type, "")
                else:
                    policy_string = tuple(lines)

            domain = policy.policy_domain
            if domain is UNSET:
                policy_domain = self.policy_domain(None, "")
            else:
                members += 1
                strings.append(domain)
                # The usual case (a valid name as _try_domain writes it) without the call; else the full method.
                policy_domain = domain if _try_domain(domain) == domain else self.policy_domain(domain, "")

            hosts = policy.mx_host
            if hosts is UNSET:
                mx_host: tuple[str, ...] = ()
            else:
                members += 1
                strings.extend(hosts)
                if ":" in "\0".join(hosts) or not all(map(str.strip, hosts)):
                    mx_host = self.mx_host({"mx-host": hosts}, "")
                else:
                    mx_host = tuple(hosts)

            details: tuple[FailureDetail, ...] = ()
            detail_sum = 0
            if entry.failure_details is not UNSET:
                members += 1
                self.details_seen += len(entry.failure_details)
                if self.details_seen > self.limits.max_failure_details:
                    raise _NotFast
                made = []
                for item in entry.failure_details:
                    members += 2
                    strings.append(item.result_type)
                    result_type = self.registered(item.result_type, RESULT_TYPES, "result-type")
                    if item.sending_mta_ip is UNSET:
                        warn("sending-mta-ip-missing", "sending-mta-ip missing in a failure detail")
                    present = [value for value in (
                        item.sending_mta_ip, item.receiving_mx_hostname, item.receiving_mx_helo, item.receiving_ip,
                        item.additional_information, item.failure_reason_code) if value is not UNSET]
                    members += len(present)
                    strings.extend(present)
                    count = item.failed_session_count
                    detail_sum += count
                    made.append(_make(FailureDetail, {
                        "result_type": result_type,
                        "sending_mta_ip": self._typed_address(item.sending_mta_ip, "sending-mta-ip"),
                        "receiving_mx_hostname": self._typed_host(item.receiving_mx_hostname, "receiving-mx-hostname"),
                        "receiving_mx_helo": self._typed_host(item.receiving_mx_helo, "receiving-mx-helo"),
                        "receiving_ip": self._typed_address(item.receiving_ip, "receiving-ip"),
                        "failed_session_count": count,
                        "additional_information": None if item.additional_information is UNSET
                        else item.additional_information,
                        "failure_reason_code": None if item.failure_reason_code is UNSET else item.failure_reason_code,
                        "extra": _EMPTY,
                    }))
                details = tuple(made)
            summary = entry.summary
            failed = summary.total_failure_session_count
            if details and failed != detail_sum:
                warn("summary-mismatch", f"summary failure count {failed} differs from the sum of failure details "
                                         f"{detail_sum}")
            policies.append(_make(PolicyResult, {
                "policy_type": policy_type,
                "policy_string": policy_string,
                "policy_domain": policy_domain,
                "mx_host": mx_host,
                "successful": summary.total_successful_session_count,
                "failed": failed,
                "failure_details": details,
                "extra": _EMPTY,
            }))

        # Limits the decoder did not apply, and duplicate member names (msgspec keeps the last one): outside
        # strings a JSON text has exactly one ":" per member, so the text's colons less those in its strings
        # must be the members the Structs hold.
        limit = self.limits.max_string_chars
        if len(text) > limit and max(map(len, strings)) > limit:
            raise _NotFast
        if text.count(":") - "\0".join(strings).count(":") != members:
            raise _NotFast
        return _make(Report, {
            "organization_name": organization,
            "contact_info": contact,
            "report_id": report_id,
            "start": start,
            "end": end,
            "policies": tuple(policies),
            "warnings": self.warnings.result(),
            "extra": _EMPTY,
            "source_format": source_format,
            "raw_json": payload,
        })

    def _typed_address(self, value: Any, name: str) -> str | None:
        return None if value is UNSET else self.address_text(value, name)

    def _typed_host(self, value: Any, name: str) -> str | None:
        return None if value is UNSET else self.host_text(value, name)


@functools.lru_cache(maxsize=4096)
def _read_datetime(name: str, raw: str) -> tuple[datetime, tuple[tuple[str, str], ...]]:
    """A date-range member as an aware UTC datetime, with the warnings reading it gave (memoised: a batch of
    reports repeats the same few days)."""
    warnings: list[tuple[str, str]] = []
    match = _DATETIME_RE.fullmatch(raw.strip())
    if match is None:
        raise ReportError("bad-datetime", f"{name} {_show(raw)} is not an RFC 3339 date-time")
    hour, minute, second = (int(match[k] or 0) for k in ("hour", "minute", "second"))
    micro = int((match["frac"] or "").ljust(6, "0")[:6])
    if second == 60:
        second = 59
        warnings.append(("datetime-leap-second", f"{name} {_show(raw)} is a leap second; read as :59"))
    tz = match["tz"]
    if tz is None:
        offset = timedelta(0)
        warnings.append(("datetime-no-timezone", f"{name} {_show(raw)} has no time zone; taken as UTC"))
    elif tz in "Zz":
        offset = timedelta(0)
    else:
        digits = tz[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            raise ReportError("bad-datetime", f"{name} {_show(raw)} has an impossible UTC offset")
        offset = timedelta(hours=hours, minutes=minutes) * (-1 if tz[0] == "-" else 1)
    try:
        year, month, day = (int(p) for p in match["date"].split("-"))
        value = datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone(offset))
        value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ReportError("bad-datetime", f"{name} {_show(raw)} is not a valid date-time") from None
    if not _RFC3339_RE.fullmatch(raw):
        warnings.append(
            ("datetime-nonstandard", f"{name} {_show(raw)} is not RFC 3339; read as {_format_datetime(value)}")
        )
    return value, tuple(warnings)


# --------------------------------------------------------------------------------------------- file names


class ReportFilename(NamedTuple):
    """The parts of ``submitter!policy-domain!begin!end[!unique-id].json[.gz]`` (RPT-I-26, RPT-I-27)."""

    submitter: str
    policy_domain: str
    begin: datetime
    end: datetime
    unique_id: str | None


_FILENAME_RE = re.compile(
    r"(?P<submitter>[^!]+)!(?P<domain>[^!]+)!(?P<begin>[0-9]{1,12})!(?P<end>[0-9]{1,12})"
    r"(?:!(?P<id>[^!]+?))?\.json(?:\.gz)?",
    re.IGNORECASE | re.ASCII,
)


def filename_parts(name: str) -> ReportFilename | None:
    """Split a report file name (a path is allowed; only its last component counts); ``None`` when it does
    not follow RFC 8460 §5.1. Domains come back as lower-case A-labels, timestamps as aware UTC datetimes.

    Lenient where it costs nothing: the extension may be in any case, the unique id may hold any character
    but ``!``. Strict where the parts would be wrong: exactly four or five ``!``-separated parts, Unix
    timestamps as digits, valid domain names.
    """
    if not isinstance(name, str) or len(name) > 4096:
        return None
    base = re.split(r"[/\\]", name)[-1]
    match = _FILENAME_RE.fullmatch(base)
    if match is None:
        return None
    submitter = _try_domain(match["submitter"])
    domain = _try_domain(match["domain"])
    if submitter is None or domain is None:
        return None
    try:
        begin = datetime.fromtimestamp(int(match["begin"]), tz=UTC)
        end = datetime.fromtimestamp(int(match["end"]), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return ReportFilename(submitter, domain, begin, end, match["id"])


# ------------------------------------------------------------------------------------------------ helpers


@functools.lru_cache(maxsize=8192)
def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=8192)
def _try_domain(text: str) -> str | None:
    try:
        return normalize_domain(text.strip())
    except (ParseError, ValueError, UnicodeError):
        return None


def _json_string_array(text: str) -> list[str] | None:
    """The strings of *text* when it is a JSON array of strings (Microsoft's tlsa policy-string), else None."""
    if not text.lstrip().startswith("["):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


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
    return _try_domain(domain)


def _format_datetime(value: datetime) -> str:
    text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _clip(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= 120 else line[:117] + "..."

