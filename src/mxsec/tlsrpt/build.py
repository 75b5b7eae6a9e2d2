"""Building the reports a sender sends (RFC 8460 §4, §5.1): counts in, JSON, gzip and file names out. Sans-I/O.

One report per report domain per UTC day. Its ``policies`` array holds every policy used that day (RFC 8460
§4.4 with erratum 6241: ``policies`` and ``mx-host`` are arrays): ``sts`` with the policy lines and the MX
patterns, ``tlsa`` per TLSA base domain with its records, ``no-policy-found`` with ``policy-domain`` filled in
(the member is required; the reference sender leaves it out). ``total-failure-session-count`` counts failed
sessions; a session with two failure details counts once there and once in each detail (RFC 8460 §4,
RPT-I-42), so the details can add up to more.

Conventions (RFC 8460 leaves them open; we keep them fixed so receivers see one form, EC-37):

- ``date-range``: ``YYYY-MM-DDT00:00:00Z`` to ``YYYY-MM-DDT23:59:59Z``; the file name uses the same two
  instants as Unix seconds;
- ``report-id``: ``YYYYMMDD.<16 hex>@<submitter>``, where the hex digits are a hash of the day, report domain,
  submitter and organization, so building the same day again gives the same id (receivers de-duplicate on it)
  and the id is also a valid RFC 5322 msg-id for the Subject (RPT-I-21);
- file name (RFC 8460 §5.1): ``submitter!report-domain!begin!end!YYYYMMDD<16 hex>.json.gz``, domains as
  A-labels;
- JSON: UTF-8 (I-JSON, RFC 7493), no duplicate members, counts clamped to 2^53 - 1; gzip with a zero mtime,
  so the same report gives the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from mxsec.names import normalize_domain
from mxsec.tlsrpt.session import Failure, PolicyTotals

__all__ = [
    "BuiltReport",
    "I_JSON_MAX",
    "build_report",
    "day_range",
    "report_filename",
    "report_id",
    "submitter_of",
]

#: Largest integer I-JSON allows (RFC 7493 §2.2).
I_JSON_MAX = 2**53 - 1


@dataclass(frozen=True)
class BuiltReport:
    """One report ready to send: its JSON document, the bytes (JSON, then gzip) and names."""

    day: date
    domain: str
    report_id: str
    filename: str
    document: dict[str, Any]
    json_bytes: bytes
    gzip_bytes: bytes
    successful: int
    failed: int


def day_range(day: date) -> tuple[datetime, datetime]:
    """The first and the last second of the UTC *day*."""
    begin = datetime.combine(day, time(0, 0, 0), tzinfo=UTC)
    return begin, begin + timedelta(seconds=86399)


def submitter_of(contact_info: str) -> str:
    """The submitter domain: the domain of the ``contact-info`` address (RFC 8460 §5.3, RPT-I-19), A-label.
    Raises ``ValueError`` when *contact_info* is not an address with a domain."""
    text = contact_info.strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"contact-info must be an e-mail address, got {contact_info!r}")
    return normalize_domain(domain)


def _digest(day: date, domain: str, submitter: str, organization: str) -> str:
    text = "\n".join((day.isoformat(), domain, submitter, organization))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def report_id(day: date, domain: str, submitter: str, organization: str) -> str:
    """The stable report-id of (*day*, *domain*) from this submitter (see the module notes)."""
    return f"{day:%Y%m%d}.{_digest(day, domain, submitter, organization)}@{submitter}"


def report_filename(submitter: str, domain: str, day: date, unique: str) -> str:
    """``submitter!domain!begin!end!unique.json.gz`` (RFC 8460 §5.1, RPT-I-26/27)."""
    if not unique.isascii() or not unique.isalnum():
        raise ValueError(f"unique-id must be letters and digits, got {unique!r}")
    begin, end = day_range(day)
    return f"{submitter}!{domain}!{int(begin.timestamp())}!{int(end.timestamp())}!{unique}.json.gz"


def _count(value: int) -> int:
    return max(0, min(int(value), I_JSON_MAX))


def _detail(failure: Failure, sessions: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"result-type": failure.result_type}
    if failure.sending_mta_ip:
        entry["sending-mta-ip"] = failure.sending_mta_ip
    if failure.receiving_mx_hostname:
        entry["receiving-mx-hostname"] = failure.receiving_mx_hostname
    if failure.receiving_mx_helo:
        entry["receiving-mx-helo"] = failure.receiving_mx_helo
    if failure.receiving_ip:
        entry["receiving-ip"] = failure.receiving_ip
    entry["failed-session-count"] = _count(sessions)
    if failure.additional_information:
        entry["additional-information"] = failure.additional_information
    if failure.failure_reason_code:
        entry["failure-reason-code"] = failure.failure_reason_code
    return entry


def _policy_entry(totals: PolicyTotals) -> dict[str, Any]:
    policy = totals.policy
    described: dict[str, Any] = {
        "policy-type": policy.type.value,
        "policy-string": list(policy.strings),
        "policy-domain": policy.domain,
    }
    if policy.mx_hosts:
        described["mx-host"] = list(policy.mx_hosts)
    entry: dict[str, Any] = {
        "policy": described,
        "summary": {
            "total-successful-session-count": _count(totals.successful),
            "total-failure-session-count": _count(totals.failed),
        },
    }
    if totals.failures:
        entry["failure-details"] = [_detail(f, n) for f, n in totals.failures]
    return entry


def build_report(
    day: date,
    domain: str,
    policies: Sequence[PolicyTotals],
    *,
    organization_name: str,
    contact_info: str,
    interim: int | None = None,
) -> BuiltReport:
    """The report of *domain* for the UTC *day* from its counted *policies*.

    *interim* (Unix seconds) marks a report of a day that is not over, built at that time for a trial
    (``mxsec tlsrpt send --unfinished``): its report-id differs from the final one's, so receivers keep both.
    Raises ``ValueError`` for an empty organization name or a contact-info without a domain."""
    if not organization_name or not organization_name.strip():
        raise ValueError("organization-name is empty")
    domain = normalize_domain(domain)
    submitter = submitter_of(contact_info)
    rid = report_id(day, domain, submitter, organization_name if interim is None
                    else f"{organization_name}\ninterim {interim}")
    begin, end = day_range(day)
    document: dict[str, Any] = {
        "organization-name": organization_name,
        "date-range": {
            "start-datetime": begin.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end-datetime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "contact-info": contact_info,
        "report-id": rid,
        "policies": [_policy_entry(p) for p in policies],
    }
    raw = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    packed = gzip.compress(raw, compresslevel=9, mtime=0)
    unique = rid.partition("@")[0].replace(".", "")
    return BuiltReport(
        day=day,
        domain=domain,
        report_id=rid,
        filename=report_filename(submitter, domain, day, unique),
        document=document,
        json_bytes=raw,
        gzip_bytes=packed,
        successful=sum(p.successful for p in policies),
        failed=sum(p.failed for p in policies),
    )
