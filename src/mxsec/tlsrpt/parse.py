"""Parsing TLSRPT aggregate reports (RFC 8460 §4, with errata 6241 and 5992): bytes in,
:class:`~mxsec.tlsrpt.report.Report` out. Sans-I/O.

:func:`parse_report` takes the bytes of one report as they arrive — JSON, gzip (RFC 8460 §5.2) or, as some
senders do, a zip archive holding one report — and returns a frozen tree of dataclasses
(:mod:`mxsec.tlsrpt.report`). It is lenient about the report's content and strict about its size and shape
(docs/reports.md, "Parsing reports"):

* **Lenient** on every quirk seen from real senders (docs/reports.md lists them; EC-35..EC-37): each
  tolerance applied leaves a :class:`~mxsec.tlsrpt.report.ReportWarning` (a ``str`` with a stable ``code``, see
  :data:`~mxsec.tlsrpt.report.WARNING_CODES`) in ``Report.warnings``. Unknown fields are kept in the ``extra``
  mappings and the exact JSON bytes in ``Report.raw_json``, so nothing is lost. The tolerances are decided
  here (:class:`_Builder`).
* **Strict** on hostile input (RFC 8460 §7, RPT-I-45, EC-40): input and decompressed sizes (gzip and zip are
  unpacked with caps by :mod:`mxsec.tlsrpt.unpack`; a bomb is never inflated fully), JSON nesting depth, number
  of JSON containers and values, string lengths, integers within ±(2^53-1) and duplicate member names (I-JSON,
  RFC 7493; RPT-I-31; checked by :mod:`mxsec.tlsrpt.ijson`), number of policies and failure details (here).
  Every refusal is a :class:`~mxsec.tlsrpt.report.ReportError` with a stable ``code`` (see
  :data:`~mxsec.tlsrpt.report.ERROR_CODES`) and a one-line message; nothing else is ever raised.

Two paths, one answer: a report of the plain RFC shape (nearly all of them) is decoded by msgspec straight into
typed Structs and built without the pre-scan or a dict tree (:func:`_fast_report`, :class:`_FastBuilder`);
anything else, and anything that path is unsure of, goes the full way (:func:`~mxsec.tlsrpt.ijson.load_json`,
then :class:`_Builder`), so both give the same report, warnings and errors.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from mxsec.tlsrpt.ijson import MAX_SAFE_INTEGER, load_json
from mxsec.tlsrpt.report import (
    DEFAULT_LIMITS,
    POLICY_TYPES,
    RESULT_TYPES,
    FailureDetail,
    Limits,
    PolicyResult,
    Report,
    ReportError,
    Warnings,
    frozen_mapping,
)
from mxsec.tlsrpt.unpack import GZIP_MAGIC, ZIP_MAGIC, gunzip, unzip
from mxsec.tlsrpt.values import format_datetime, json_type, show, try_domain

__all__ = ["parse_report"]


def parse_report(
    data: bytes, *, limits: Limits = DEFAULT_LIMITS, fallback_domain: str | None = None
) -> Report:
    """Parse one report (JSON, gzip or a zip holding one report); raise :class:`ReportError` if unusable.

    *fallback_domain* (the message's ``TLS-Report-Domain`` header, or the policy domain of the file name,
    see :func:`~mxsec.tlsrpt.filenames.filename_parts`) is used for policies that have no ``policy-domain``
    (EC-36); the report body wins whenever it has one (RPT-I-44).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ReportError("not-bytes", f"a report must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > limits.max_input_bytes:
        raise ReportError("too-large", f"report is {len(raw)} bytes, more than the limit of {limits.max_input_bytes}")
    warnings = Warnings(limits.max_warnings)
    if raw[:2] == GZIP_MAGIC:
        source_format, payload = "gzip", gunzip(raw, limits.max_json_bytes, warnings, limits.max_archive_members)
    elif raw[:4] == ZIP_MAGIC:
        source_format, payload = "zip", unzip(raw, limits.max_json_bytes, warnings, limits.max_archive_members)
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
        warnings = Warnings(limits.max_warnings)
    document = load_json(payload, limits, warnings)
    return _Builder(limits, warnings, fallback_domain).report(document, payload, source_format)


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
    def __init__(self, limits: Limits, warnings: Warnings, fallback_domain: str | None) -> None:
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
                self.warn("unknown-field", f"unknown field {show(key)}{where} kept")
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
            extra=frozen_mapping(extra),
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
        raise ReportError("bad-field", f"{name}{where} must be a string, not {json_type(value)}")

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
            raise ReportError("bad-field", f"date-range must be an object, not {json_type(value)}")
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
            raise ReportError("bad-field", f"policies must be an array, not {json_type(value)}")
        if len(value) > self.limits.max_policies:
            raise ReportError("too-many-policies", f"report has more than {self.limits.max_policies} policies")
        if not value:
            self.warn("policies-empty", "policies is empty")
        return tuple(self.policy_entry(entry, index) for index, entry in enumerate(value))

    def policy_entry(self, entry: Any, index: int) -> PolicyResult:
        where = f" in policies[{index}]"
        if not isinstance(entry, dict):
            raise ReportError("bad-field", f"policies[{index}] must be an object, not {json_type(entry)}")
        fields, extra = self.split(entry, _ENTRY_FIELDS, {}, " in a policies entry")
        policy = fields.get("policy")
        if policy is None:
            raise ReportError("missing-field", f"policy{where} is {'null' if 'policy' in fields else 'missing'}")
        if not isinstance(policy, dict):
            raise ReportError("bad-field", f"policy{where} must be an object, not {json_type(policy)}")
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
            extra=frozen_mapping(extra),
        )

    def string_list(self, value: list[Any], name: str, where: str) -> list[str]:
        out = []
        for item in value:
            if not isinstance(item, str):
                raise ReportError("bad-field", f"{name}{where} must hold strings, not {json_type(item)}")
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
            raise ReportError("bad-field", f"policy-string{where} must be an array, not {json_type(value)}")
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
            raise ReportError("bad-field", f"policy-domain{where} must be a string, not {json_type(value)}")
        if value is None or not value.strip():
            state = "missing" if value is None else "empty"
            if self.fallback is not None:
                domain = try_domain(self.fallback) or self.fallback
                self.warn("policy-domain-fallback", f"policy-domain {state}; {domain!r} (given by the caller) used")
                return domain
            self.warn("policy-domain-missing", f"policy-domain {state}")
            return None
        normalized = try_domain(value)
        if normalized is None:
            self.warn("policy-domain-invalid", f"policy-domain {show(value)} is not a domain name; kept as written")
            return value
        if normalized != value:
            self.warn("policy-domain-normalized", f"policy-domain {show(value)} read as {normalized!r}")
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
            raise ReportError("bad-field", f"mx-host{where} must be an array, not {json_type(value)}")
        hosts = []
        for item in self.string_list(value, "mx-host", where):
            prefix = _MX_PREFIX_RE.match(item)
            if prefix:
                self.warn("mx-host-prefix", f"mx-host entry {show(item)} had an 'mx:' prefix; removed")
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
            raise ReportError("bad-field", f"summary{where} must be an object, not {json_type(value)}")
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
            raise ReportError("bad-count", f"{name}{where} must be a number, not {json_type(value)}")
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
            raise ReportError("bad-field", f"failure-details{where} must be an array, not {json_type(value)}")
        self.details_seen += len(value)
        if self.details_seen > self.limits.max_failure_details:
            raise ReportError(
                "too-many-failure-details", f"report has more than {self.limits.max_failure_details} failure details"
            )
        return tuple(self.detail(item, f"{where}.failure-details[{n}]") for n, item in enumerate(value))

    def detail(self, item: Any, where: str) -> FailureDetail:
        if not isinstance(item, dict):
            raise ReportError("bad-field", f"{where.removeprefix(' in ')} must be an object, not {json_type(item)}")
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
            extra=frozen_mapping(extra),
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
            self.warn("ip-invalid", f"{name} {show(text)} is not an IP address; kept as written")
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
            self.warn(f"{name}-case", f"{name} {show(value)} read as {folded!r}")
            return folded
        self.warn(f"unknown-{name}", f"unknown {name} {show(value)} kept")
        return value


# ------------------------------------------------------------------------------------- the typed fast path
#
# Nearly every real report has exactly the RFC 8460 shape. msgspec decodes such a text straight into the Structs
# below, checking member names and types in C (no dicts, no per-object Python hook, no second walk), and
# _FastBuilder turns them into a Report. Whatever the Structs do not admit (an unknown or legacy member, a
# null, a number written as text, a float or negative count, a missing member, too many of something, a
# duplicate member name) makes the fast path give up, and the report goes the full way (ijson.load_json, then
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


_T = TypeVar("_T")


def _make(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass *cls* with *values* (every field) as its attributes, without the
    generated ``__init__`` (one ``object.__setattr__`` per field: a third of the fast path's time). The property
    tests compare these instances with those the full path builds through ``__init__``."""
    obj: _T = object.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    return obj


class _NotFast(Exception):
    """The fast path gives the report to the full path."""


def _fast_report(payload: bytes, limits: Limits, warnings: Warnings, fallback_domain: str | None,
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
        contact: str | UnsetType | None
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
                # The usual case (a valid name as try_domain writes it) without the call; else the full method.
                policy_domain = domain if try_domain(domain) == domain else self.policy_domain(domain, "")

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
        raise ReportError("bad-datetime", f"{name} {show(raw)} is not an RFC 3339 date-time")
    hour, minute, second = (int(match[k] or 0) for k in ("hour", "minute", "second"))
    micro = int((match["frac"] or "").ljust(6, "0")[:6])
    if second == 60:
        second = 59
        warnings.append(("datetime-leap-second", f"{name} {show(raw)} is a leap second; read as :59"))
    tz = match["tz"]
    if tz is None:
        offset = timedelta(0)
        warnings.append(("datetime-no-timezone", f"{name} {show(raw)} has no time zone; taken as UTC"))
    elif tz in "Zz":
        offset = timedelta(0)
    else:
        digits = tz[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            raise ReportError("bad-datetime", f"{name} {show(raw)} has an impossible UTC offset")
        offset = timedelta(hours=hours, minutes=minutes) * (-1 if tz[0] == "-" else 1)
    try:
        year, month, day = (int(p) for p in match["date"].split("-"))
        value = datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone(offset))
        value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ReportError("bad-datetime", f"{name} {show(raw)} is not a valid date-time") from None
    if not _RFC3339_RE.fullmatch(raw):
        warnings.append(
            ("datetime-nonstandard", f"{name} {show(raw)} is not RFC 3339; read as {format_datetime(value)}")
        )
    return value, tuple(warnings)


# ------------------------------------------------------------------------------------------------ helpers


@functools.lru_cache(maxsize=8192)
def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
