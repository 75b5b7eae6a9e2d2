"""A corpus of TLSRPT reports for tests: the parser's, and later the store's and the ingest command's.

Every report is built here, in code, from the *facts* listed in docs/reports.md ("What real reports look
like": which fields real senders send, in which shapes, with which quirks). No sample file was copied: names,
addresses, keys and counts are our own (RFC 2606 / RFC 5737 / RFC 3849 example names and addresses).

* :func:`corpus` returns the :class:`Case` list (each a JSON document plus what parsing it must give).
* :func:`as_json`, :func:`as_gzip`, :func:`as_zip` pack a document; :func:`as_email` wraps a report in an
  RFC 8460 §5.3 message (or a deliberately odd one); :func:`as_mbox` joins messages into an mbox file.
* :func:`gzip_bomb`, :func:`deep_json`, :func:`wide_array`, :func:`many_details` build hostile input
  without materialising it (the bomb is assembled from one repeated deflate segment).
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import encoders
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

DAY_START = "2024-02-17T00:00:00Z"
DAY_END_INCLUSIVE = "2024-02-17T23:59:59Z"  # Google's usual style
DAY_END_EXCLUSIVE = "2024-02-18T00:00:00Z"  # the other style (EC-37)
DAY_START_TS = int(datetime(2024, 2, 17, tzinfo=UTC).timestamp())
DAY_END_TS = DAY_START_TS + 86400 - 1

DEFAULT_REPORT_ID = "2024-02-17T00:00:00Z_example.com"

# Hex digests for TLSA policy strings (made up, right lengths).
SHA256_A = "8f" * 32
SHA256_B = "3c" * 32


# ----------------------------------------------------------------------------------------- building blocks


def report(
    *,
    organization: Any = "Example Reporter Inc.",
    contact: Any = "tlsrpt-noreply@reporter.example",
    report_id: Any = None,
    start: Any = DAY_START,
    end: Any = DAY_END_INCLUSIVE,
    policies: Any = None,
    policies_key: str = "policies",
    omit: tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A report document in RFC 8460 §4.4 member order (errata form unless told otherwise)."""
    doc: dict[str, Any] = {
        "organization-name": organization,
        "date-range": {"start-datetime": start, "end-datetime": end},
        "contact-info": contact,
        "report-id": DEFAULT_REPORT_ID if report_id is None else report_id,
        policies_key: policies if policies is not None else [sts_entry()],
    }
    for key in omit:
        doc.pop(key, None)
    doc.update(extra or {})
    return doc


def sts_policy(domain: str = "example.com", mx: tuple[str, ...] = ("mx1.example.com", "*.mx.example.net"), *,
               mode: str = "enforce", mx_host: Any = "from-mx") -> dict[str, Any]:
    """An ``sts`` policy object; ``policy-string`` holds the policy lines, ``mx-host`` the patterns."""
    lines = ["version: STSv1", f"mode: {mode}", *[f"mx: {m}" for m in mx], "max_age: 604800"]
    policy: dict[str, Any] = {"policy-type": "sts", "policy-string": lines, "policy-domain": domain}
    if mx_host == "from-mx":
        policy["mx-host"] = list(mx)
    elif mx_host is not None:
        policy["mx-host"] = mx_host
    return policy


def tlsa_policy(
    domain: str = "mx1.example.com", records: tuple[str, ...] = (f"3 1 1 {SHA256_A}", f"3 1 1 {SHA256_B}")
) -> dict[str, Any]:
    """A DANE ``tlsa`` policy; the policy domain is the TLSA base domain, the MX host (RPT-I-43)."""
    return {"policy-type": "tlsa", "policy-string": list(records), "policy-domain": domain}


def no_policy(domain: str | None = "example.com", *, strings: Any = "omit", mx_host: Any = "omit") -> dict[str, Any]:
    policy: dict[str, Any] = {"policy-type": "no-policy-found"}
    if strings != "omit":
        policy["policy-string"] = strings
    if domain is not None:
        policy["policy-domain"] = domain
    if mx_host != "omit":
        policy["mx-host"] = mx_host
    return policy


def detail(result_type: str = "validation-failure", count: Any = 1, **fields: Any) -> dict[str, Any]:
    """A failure detail; keyword arguments use Python names (``sending_mta_ip`` → ``sending-mta-ip``)."""
    out: dict[str, Any] = {"result-type": result_type}
    for key, value in fields.items():
        out[key.replace("_", "-")] = value
    out["failed-session-count"] = count
    return out


def entry(policy: dict[str, Any] | None = None, *, ok: Any = 100, failed: Any = 0,
          details: Any = None, summary: Any = "build") -> dict[str, Any]:
    out: dict[str, Any] = {"policy": policy if policy is not None else sts_policy()}
    if summary == "build":
        out["summary"] = {"total-successful-session-count": ok, "total-failure-session-count": failed}
    elif summary is not None:
        out["summary"] = summary
    if details is not None:
        out["failure-details"] = details
    return out


def sts_entry(**kwargs: Any) -> dict[str, Any]:
    return entry(sts_policy(), **kwargs)


# ------------------------------------------------------------------------------------------------ packing


def as_json(doc: Any, *, indent: int | None = None) -> bytes:
    return json.dumps(doc, indent=indent, ensure_ascii=False).encode("utf-8")


def as_gzip(doc_or_bytes: Any, *, filename: str | None = None) -> bytes:
    """gzip with a fixed mtime (reproducible bytes)."""
    data = doc_or_bytes if isinstance(doc_or_bytes, bytes) else as_json(doc_or_bytes)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename=filename or "", mode="wb", fileobj=buffer, mtime=0) as stream:
        stream.write(data)
    return buffer.getvalue()


def as_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def report_filename(submitter: str, domain: str, *, begin: int = DAY_START_TS, end: int = DAY_END_TS,
                    unique: str | None = "001", compressed: bool = True) -> str:
    name = f"{submitter}!{domain}!{begin}!{end}" + (f"!{unique}" if unique else "")
    return name + (".json.gz" if compressed else ".json")


def as_email(
    doc: Any,
    *,
    policy_domain: str | None = "example.com",
    submitter: str | None = "reporter.example",
    report_id: str = "<2024.02.17T00.00.00Z+example.com@reporter.example>",
    compressed: bool = True,
    content_type: str | None = None,
    filename: str | None = "default",
    base64: bool = True,
    report_type: str | None = "tlsrpt",
    forwarded: bool = False,
    subject: str | None = None,
    extra_parts: tuple[MIMEApplication | MIMEText, ...] = (),
) -> bytes:
    """An RFC 8460 §5.3 report message (RPT-I-17..22), or a variant.

    *content_type* overrides the attachment's type (e.g. ``application/octet-stream`` for "base64 without
    the right content type"); *forwarded* wraps the whole message as ``message/rfc822`` inside a forward
    from a person; *report_type* ``None`` makes the top level ``multipart/mixed``.
    """
    payload = doc if isinstance(doc, bytes) else (as_gzip(doc) if compressed else as_json(doc))
    if content_type is None:
        content_type = "application/tlsrpt+gzip" if compressed else "application/tlsrpt+json"
    maintype, subtype = content_type.split("/", 1)
    if report_type is None:
        message = MIMEMultipart("mixed")
    else:
        message = MIMEMultipart("report", report_type=report_type)
    message["From"] = f"TLS reporting <noreply-smtp-tls-reporting@{submitter or 'reporter.example'}>"
    message["To"] = f"tlsrpt@{policy_domain or 'example.com'}"
    message["Subject"] = subject or f"Report Domain: {policy_domain} Submitter: {submitter} Report-ID: {report_id}"
    message["Date"] = "Sun, 18 Feb 2024 05:12:31 +0000"
    message["Message-ID"] = "<tlsrpt-test-1@reporter.example>"
    message["MIME-Version"] = "1.0"
    if policy_domain is not None:
        message["TLS-Report-Domain"] = policy_domain
    if submitter is not None:
        message["TLS-Report-Submitter"] = submitter
    message["TLS-Required"] = "No"
    message.attach(MIMEText(f"This is an aggregate TLS report from {submitter}.\n", "plain"))
    part = MIMEApplication(payload, subtype, _encoder=encoders.encode_base64 if base64 else encoders.encode_7or8bit)
    if maintype != "application":
        part.replace_header("Content-Type", content_type)
    if filename == "default":
        filename = report_filename(
            submitter or "reporter.example", policy_domain or "example.com", compressed=compressed
        )
    if filename is not None:
        part.add_header("Content-Disposition", "attachment", filename=filename)
    message.attach(part)
    for extra in extra_parts:
        message.attach(extra)
    if not forwarded:
        return message.as_bytes()
    outer = MIMEMultipart("mixed")
    outer["From"] = "Postmaster <postmaster@example.com>"
    outer["To"] = "tlsrpt-archive@example.com"
    outer["Subject"] = "Fwd: " + message["Subject"]
    outer["Message-ID"] = "<forward-1@example.com>"
    outer["MIME-Version"] = "1.0"
    outer.attach(MIMEText("Forwarding the report below.\n", "plain"))
    outer.attach(MIMEMessage(message))
    return outer.as_bytes()


def as_mbox(messages: list[bytes]) -> bytes:
    """An mboxrd file: ``From `` separator lines, body lines matching ``>*From `` escaped with one more ``>``."""
    out = bytearray()
    for number, message in enumerate(messages):
        out += f"From MAILER-DAEMON Sun Feb 18 05:{number % 60:02d}:00 2024\n".encode()
        lines = message.replace(b"\r\n", b"\n").split(b"\n")
        if lines[-1] == b"":
            lines.pop()  # the message's own final line end
        for line in lines:
            if line.lstrip(b">").startswith(b"From "):
                line = b">" + line
            out += line + b"\n"
        out += b"\n"
    return bytes(out)


# ------------------------------------------------------------------------------------------- hostile input


def gzip_bomb(nominal: int = 1 << 30, *, fill: bytes = b" ", chunk: int = 1 << 20,
              prefix: bytes = b'{"organization-name":"') -> bytes:
    """A valid gzip file that inflates to about *nominal* bytes (a JSON prefix, then *fill*; rounded down to
    whole chunks), about 1/1000 of that compressed; built from one deflate segment repeated, never holding
    the inflated data."""
    assert nominal >= len(prefix) + chunk
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = fill * chunk
    segment = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert segment == again  # after a full flush the same input compresses to the same bytes
    repeats = (nominal - len(prefix)) // chunk
    crc = zlib.crc32(prefix)
    for _ in range(repeats):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    size = len(prefix) + repeats * chunk
    trailer = struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)
    return b"".join([header, head, segment * repeats, compressor.flush(zlib.Z_FINISH), trailer])


def deep_json(depth: int, *, opener: str = "[") -> bytes:
    """A report whose extra member nests *depth* arrays (or objects)."""
    closer = {"[": "]", "{": "}"}[opener]
    inner = (opener + ('"k":' if opener == "{" else "")) * (depth - 1) + opener + closer * depth
    return b'{"organization-name":"x","deep":' + inner.encode() + b"}"


def wide_array(count: int, item: bytes = b"0") -> bytes:
    """A report with one extra member holding an array of *count* items (joined without materialising a list)."""
    return b'{"organization-name":"x","wide":[' + b",".join([item]) + (b"," + item) * (count - 1) + b"]}"


def many_details(count: int) -> bytes:
    one = as_json(detail("starttls-not-supported", 1, sending_mta_ip="192.0.2.7", receiving_ip="198.51.100.25",
                         receiving_mx_hostname="mx1.example.com"))
    head = as_json(report(policies=[entry(sts_policy(), ok=1, failed=count, details=[])]))
    marker = b'"failure-details": []'
    assert marker in head
    return head.replace(marker, b'"failure-details": [' + b",".join([one] * count) + b"]")


# ------------------------------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Case:
    """One report of the corpus: the document, where its shape comes from, and what parsing must give."""

    name: str
    quirk: str  # which fact it reproduces (quirk of docs/reports.md, EC, RFC section)
    doc: dict[str, Any]
    warnings: frozenset[str] = frozenset()  # warning codes parse_report must give (exactly these)
    fallback_domain: str | None = None
    policy_domains: tuple[str | None, ...] = ("example.com",)
    successful: int = 0
    failed: int = 0
    email: dict[str, Any] = field(default_factory=dict)  # as_email keyword arguments for this case

    def json(self) -> bytes:
        return as_json(self.doc)

    def gzip(self) -> bytes:
        return as_gzip(self.doc)

    def message(self, **overrides: Any) -> bytes:
        return as_email(self.doc, **{**self.email, **overrides})


def _rfc_example(mx_host: Any, report_id: str = "5065427c-23d3-47ca-b6e0-946ea0e8c4be") -> dict[str, Any]:
    """The shape of the RFC 8460 §4.4 example: one sts policy, three failure details using every field."""
    return report(
        organization="Company-X",
        contact="sts-reporting@company-x.example",
        report_id=report_id,
        start="2016-04-01T00:00:00Z",
        end="2016-04-01T23:59:59Z",
        policies=[
            entry(
                {
                    "policy-type": "sts",
                    "policy-string": [
                        "version: STSv1", "mode: testing", "mx: *.mail.company-y.example", "max_age: 86400"
                    ],
                    "policy-domain": "company-y.example",
                    "mx-host": mx_host,
                },
                ok=5326,
                failed=303,
                details=[
                    detail("starttls-not-supported", 200, sending_mta_ip="2001:db8:abcd:0013::1",
                           receiving_mx_hostname="mx2.mail.company-y.example", receiving_ip="203.0.113.56",
                           additional_information=(
                               "https://reports.company-x.example/report_info?id=5065427c#StarttlsNotSupported")),
                    detail("certificate-expired", 100, sending_mta_ip="2001:db8:abcd:0012::1",
                           receiving_mx_hostname="mx1.mail.company-y.example"),
                    detail("validation-failure", 3, sending_mta_ip="198.51.100.62", receiving_ip="203.0.113.58",
                           receiving_mx_hostname="mx-backup.mail.company-y.example",
                           failure_reason_code="X509_V_ERR_PROOF_OF_POLICY_NOT_MET"),
                ],
            )
        ],
    )


def corpus() -> list[Case]:
    """At least twenty reports covering every quirk 1–12 of docs/reports.md and EC-35..EC-37."""
    cases = [
        Case("rfc-errata-6241", "RFC 8460 §4.4 example with erratum 6241 (mx-host an array)",
             _rfc_example(["*.mail.company-y.example"]), policy_domains=("company-y.example",),
             successful=5326, failed=303,
             email={"policy_domain": "company-y.example", "submitter": "company-x.example"}),
        Case("rfc-mx-host-string", "quirk 5: the RFC example's mx-host as a bare string",
             _rfc_example("*.mail.company-y.example", "5065427c-23d3-47ca-b6e0-946ea0e8c4bf"), frozenset({"mx-host-string"}),
             policy_domains=("company-y.example",), successful=5326, failed=303),
        Case("google-heartbeat", "Google's usual shape: success only, end 23:59:59Z (RPT-I-37 heartbeat)",
             report(organization="Google Inc.", contact="smtp-tls-reporting@google.example",
                    policies=[entry(sts_policy(), ok=1452)]), successful=1452,
             email={"submitter": "google.example"}),
        Case("google-next-day-end", "quirk 11: end-datetime the next day's 00:00:00Z",
             report(organization="Google Inc.", end=DAY_END_EXCLUSIVE, policies=[entry(sts_policy(), ok=7)]),
             successful=7),
        Case("google-empty-sending-ip", "quirk 2: sending-mta-ip \"\" in a validation-failure",
             report(organization="Google Inc.", policies=[entry(
                 sts_policy(mx=("*.mx.example.net",)), ok=20, failed=4,
                 details=[detail("validation-failure", 4, sending_mta_ip="", receiving_ip="198.51.100.9",
                                 receiving_mx_hostname="mail.mx.example.net")])]),
             frozenset({"ip-empty"}), successful=20, failed=4),
        Case("google-no-policy-found", "quirk 8: Google's no-policy-found omits policy-string and mx-host",
             report(organization="Google Inc.", policies=[entry(no_policy("example.com"), ok=3)]), successful=3),
        Case("microsoft-no-sending-ip", "quirk 1, EC-35: sts-policy-fetch-error without sending-mta-ip or "
             "receiving-*; report-id ending in a bare '+'",
             report(organization="Microsoft Corporation", contact="tlsrpt-noreply@microsoft.example",
                    report_id="133524288000000000+",
                    policies=[entry(sts_policy(mx_host=None), ok=0, failed=12,
                                    details=[detail("sts-policy-fetch-error", 12)])]),
             frozenset({"sending-mta-ip-missing"}), failed=12),
        Case("microsoft-no-timezone", "quirk 4: datetimes without a time zone",
             report(organization="Microsoft Corporation", start="2024-02-17T00:00:00", end="2024-02-18T00:00:00",
                    report_id="133524288000000001+example.com",
                    policies=[entry(sts_policy(mx_host=None), ok=61)]),
             frozenset({"datetime-no-timezone"}), successful=61),
        Case("microsoft-tlsa-json-array", "quirk 7: a tlsa policy-string holding one JSON-encoded array",
             report(organization="Microsoft Corporation", report_id="133524288000000002+example.com",
                    policies=[entry({"policy-type": "tlsa",
                                     "policy-string": [json.dumps([f"3 1 1 {SHA256_A}", f"3 1 1 {SHA256_B}"])],
                                     "policy-domain": "mx1.example.com"}, ok=40)]),
             frozenset({"policy-string-json-array"}), policy_domains=("mx1.example.com",), successful=40),
        Case("null-contact-empty-no-policy", "quirks 3 and 8, EC-36: contact-info null; no-policy-found with "
             "policy-string [] and mx-host []",
             report(organization="mx.egress.example", contact=None, report_id="egress-2024-02-17-1",
                    policies=[entry(no_policy("example.com", strings=[], mx_host=[]), ok=0)]),
             frozenset({"contact-info-null"})),
        Case("no-policy-domain", "EC-36: no-policy-found without policy-domain (fallback from the message)",
             report(organization="mx.egress.example", report_id="egress-2024-02-17-2",
                    policies=[entry(no_policy(None, strings=[]), ok=5)]),
             frozenset({"policy-domain-fallback"}), fallback_domain="example.com", successful=5),
        Case("mx-prefix", "quirk 6: mx-host entries written with the 'mx: ' prefix",
             report(contact=None, policies=[entry(sts_policy(mx_host=["mx: mx1.example.com", "mx: *.mx.example.net"]),
                                                  ok=9)]),
             frozenset({"mx-host-prefix", "contact-info-null"}), successful=9),
        Case("free-text-reason-mismatch", "quirks 9 and 10: free-text failure-reason-code; summary 1 but "
             "details adding up to 2",
             report(organization="Mail.example", contact="tlsrpt@mail.example", report_id="example.com.1708128000",
                    policies=[entry(sts_policy(), ok=0, failed=1, details=[
                        detail("sts-policy-fetch-error", 1, failure_reason_code="bad https response code: 404"),
                        detail("sts-policy-fetch-error", 1, failure_reason_code="bad https response code: 404",
                               sending_mta_ip="192.0.2.44"),
                    ])]),
             frozenset({"summary-mismatch", "sending-mta-ip-missing"}), failed=1),
        Case("legacy-failure-error-code", "quirk 12: the draft's failure-error-code",
             report(policies=[entry(sts_policy(), ok=1, failed=2, details=[
                 detail("certificate-not-trusted", 2, sending_mta_ip="192.0.2.10", receiving_ip="198.51.100.2",
                        receiving_mx_hostname="mx1.example.com",
                        failure_error_code="X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT")])]),
             frozenset({"legacy-field"}), successful=1, failed=2),
        Case("legacy-tls-report", "quirk 12: 'tls-report' instead of 'policies'",
             report(policies_key="tls-report", policies=[entry(sts_policy(), ok=2)]),
             frozenset({"legacy-field"}), successful=2),
        Case("legacy-mx-host-pattern", "quirk 12: parsedmarc's 'mx-host-pattern'",
             report(policies=[entry({**sts_policy(mx_host=None), "mx-host-pattern": ["mx1.example.com"]}, ok=2)]),
             frozenset({"legacy-field"}), successful=2),
        Case("legacy-additional-info-uri", "quirk 12: parsedmarc's 'additional-info-uri'",
             report(policies=[entry(sts_policy(), ok=0, failed=1, details=[
                 detail("starttls-not-supported", 1, sending_mta_ip="192.0.2.3",
                        receiving_mx_hostname="mx1.example.com",
                        additional_info_uri="https://reporter.example/why/1")])]),
             frozenset({"legacy-field"}), failed=1),
        Case("unknown-fields", "RFC 8460 §4.4 leaves room for extensions: unknown members at every level are kept",
             report(extra={"x-top": {"a": [1, 2]}}, policies=[{
                 **entry(sts_policy(), ok=4, failed=1, details=[
                     {**detail("dnssec-invalid", 1, sending_mta_ip="192.0.2.5"), "x-detail": True}]),
                 "x-entry": "e",
             }]),
             frozenset({"unknown-field"}), successful=4, failed=1),
        Case("postfix-dane", "sys4/Postfix 3.10 style: tlsa policy for the MX host (RPT-I-43), receiving-mx-helo, "
             "report-id '<start>_idx<n>_<domain>'",
             report(organization="mail.sender.example", contact="tlsrpt@sender.example",
                    report_id="2024-02-17T00:00:00Z_idx3_mx1.example.com", end=DAY_END_EXCLUSIVE,
                    policies=[entry(tlsa_policy(), ok=88, failed=2, details=[
                        detail("dane-required", 1, sending_mta_ip="2001:db8::25", receiving_ip="2001:db8:1::25",
                               receiving_mx_hostname="mx1.example.com", receiving_mx_helo="mx1.example.com"),
                        detail("tlsa-invalid", 1, sending_mta_ip="192.0.2.25", receiving_ip="198.51.100.25",
                               receiving_mx_hostname="mx1.example.com", receiving_mx_helo="smtp.example.com",
                               failure_reason_code="no usable TLSA record matched the certificate"),
                    ])]),
             policy_domains=("mx1.example.com",), successful=88, failed=2),
        Case("unknown-result-type", "RPT-I-38: the result-type registry grows; unknown values are kept",
             report(policies=[entry(sts_policy(), ok=0, failed=3, details=[
                 detail("smtp-tls-quantum-mismatch", 3, sending_mta_ip="192.0.2.9")])]),
             frozenset({"unknown-result-type"}), failed=3),
        Case("two-policies", "one report, several policies: sts for the domain and tlsa for its MX (RPT-I-33)",
             report(policies=[entry(sts_policy(), ok=10), entry(tlsa_policy(), ok=11, failed=1, details=[
                 detail("certificate-host-mismatch", 1, sending_mta_ip="192.0.2.1", receiving_ip="198.51.100.1",
                        receiving_mx_hostname="mx1.example.com")])]),
             policy_domains=("example.com", "mx1.example.com"), successful=21, failed=1),
        Case("offset-datetimes", "RFC 3339 offsets other than Z are converted to UTC; contact-info missing",
             report(start="2024-02-17T01:00:00+01:00", end="2024-02-17T18:59:59-05:00", omit=("contact-info",),
                    policies=[entry(sts_policy(), ok=1)]),
             frozenset({"contact-info-missing"}), successful=1),
        Case("counts-as-text", "session counts written as strings",
             report(policies=[entry(sts_policy(), ok="12", failed="0")]), frozenset({"count-coerced"}), successful=12),
        Case("policies-object", "RPT-I-33 broken: policies as one object (pre-erratum shape)",
             report(policies=entry(sts_policy(), ok=5)), frozenset({"policies-object"}), successful=5),
        Case("big-counts", "I-JSON: counts up to 2^53-1 are exact",
             report(policies=[entry(sts_policy(), ok=2**53 - 1, failed=0)]), successful=2**53 - 1),
        Case("upper-case-types", "policy-type and result-type in upper case",
             report(policies=[entry({**sts_policy(), "policy-type": "STS"}, ok=1, failed=1, details=[
                 detail("STARTTLS-NOT-SUPPORTED", 1, sending_mta_ip="192.0.2.1")])]),
             frozenset({"policy-type-case", "result-type-case"}), successful=1, failed=1),
        Case("u-label-domain", "RPT-I-35 broken: a U-label policy-domain, read as its A-label",
             report(policies=[entry(sts_policy("Bücher.Example"), ok=1)]),
             frozenset({"policy-domain-normalized"}), policy_domains=("xn--bcher-kva.example",), successful=1),
    ]
    # Each case is its own report (the store de-duplicates on organization and report-id).
    for item in cases:
        if isinstance(item.doc, dict) and item.doc.get("report-id") == DEFAULT_REPORT_ID:
            item.doc["report-id"] = f"{DEFAULT_REPORT_ID}/{item.name}"
    return [copy.deepcopy(case) for case in cases]


def case(name: str) -> Case:
    for item in corpus():
        if item.name == name:
            return item
    raise KeyError(name)
