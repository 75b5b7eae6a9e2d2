"""mxsec.tlsrpt.message: report attachments from RFC 5322 messages and mbox files (RFC 8460 §5.3;
RPT-I-17..22, RPT-I-44, RPT-I-45, EC-36, quirks 13 and 15 of docs/reports.md)."""

from __future__ import annotations

import gzip
import time
from email import message_from_bytes
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxsec.errors import ParseError
from mxsec.tlsrpt.message import (
    ERROR_CODES,
    WARNING_CODES,
    MessageError,
    MessageLimits,
    ReportAttachment,
    SubjectParts,
    cross_check,
    extract_reports,
    iter_mbox,
    looks_like_mbox,
    parse_subject,
)
from mxsec.tlsrpt.parse import parse_report
from mxsec.tlsrpt.report import ReportError
from tests import tlsrpt_corpus as tc

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _codes(warnings) -> set[str]:
    codes = {w.code for w in warnings}
    assert codes <= WARNING_CODES
    return codes


def _error(data, **kwargs) -> str:
    with pytest.raises(MessageError) as info:
        extract_reports(data, **kwargs)
    assert info.value.code in ERROR_CODES and isinstance(info.value, ParseError)
    assert "\n" not in str(info.value)
    return info.value.code


def _one(data: bytes) -> ReportAttachment:
    found = extract_reports(data)
    assert len(found.attachments) == 1, found
    return found.attachments[0]


# ---------------------------------------------------------------------------------- the RFC 8460 shape


def test_rpt_i_17_multipart_report_with_a_gzip_attachment():
    case = tc.case("google-heartbeat")
    found = extract_reports(case.message())
    assert found.is_tlsrpt_report and found.warnings == ()
    attachment = found.attachments[0]
    assert len(found.attachments) == 1
    assert attachment.data == case.gzip()
    assert attachment.content_type == "application/tlsrpt+gzip"
    assert attachment.filename == f"google.example!example.com!{tc.DAY_START_TS}!{tc.DAY_END_TS}!001.json.gz"
    assert attachment.warnings == () and attachment.nesting == 0
    assert attachment.parse() == parse_report(case.gzip())


@pytest.mark.parametrize("base64", [True, False])
def test_rpt_i_17_json_attachment(base64):
    case = tc.case("two-policies")
    attachment = _one(case.message(compressed=False, base64=base64))
    assert attachment.content_type == "application/tlsrpt+json"
    assert attachment.data.strip() == case.json()
    assert attachment.parse().policies == parse_report(case.json()).policies


def test_rpt_i_18_and_i_21_headers_and_subject():
    found = extract_reports(tc.case("google-heartbeat").message())
    assert (found.report_domain, found.report_submitter) == ("example.com", "google.example")
    assert found.subject == ("Report Domain: example.com Submitter: google.example "
                             "Report-ID: <2024.02.17T00.00.00Z+example.com@reporter.example>")
    assert found.message_id == "<tlsrpt-test-1@reporter.example>"
    attachment = found.attachments[0]
    assert (attachment.report_domain, attachment.report_submitter, attachment.subject) == (
        "example.com", "google.example", found.subject)


def test_rpt_i_18_missing_headers_are_warned():
    attachment = _one(tc.case("google-heartbeat").message(policy_domain=None, submitter=None))
    assert _codes(attachment.warnings) == {"missing-report-domain", "missing-report-submitter"}
    assert attachment.report_domain is None


@pytest.mark.parametrize("case", tc.corpus(), ids=lambda c: c.name)
def test_every_corpus_report_survives_the_email_round_trip(case):
    attachment = _one(case.message())
    report = attachment.parse()
    assert report == parse_report(case.gzip(), fallback_domain=attachment.fallback_domain)
    assert {w.code for w in report.warnings} == set(case.warnings)
    assert tuple(p.policy_domain for p in report.policies) == case.policy_domains


# ------------------------------------------------------------------------------- real-world transports


@pytest.mark.parametrize(
    ("content_type", "filename", "compressed"),
    [
        ("application/octet-stream", "default", True),
        ("application/gzip", None, True),
        ("application/x-gzip", "report.gz", True),
        ("application/json", None, False),
        ("application/octet-stream", "google.com!example.com!1!2.json", False),
        ("text/plain", "report.json", False),
    ],
)
def test_attachment_with_a_generic_content_type(content_type, filename, compressed):
    case = tc.case("google-heartbeat")
    attachment = _one(case.message(content_type=content_type, filename=filename, compressed=compressed))
    assert attachment.content_type == content_type
    assert "generic-content-type" in _codes(attachment.warnings)
    assert attachment.parse().policies == parse_report(case.json()).policies


def test_zip_attachment():
    case = tc.case("google-heartbeat")
    data = tc.as_zip({"report.json": case.json()})
    attachment = _one(tc.as_email(data, content_type="application/zip", filename="report.zip"))
    assert attachment.parse().source_format == "zip"


def test_undeclared_base64_payload():
    case = tc.case("google-heartbeat")
    message = MIMEMultipart("report", report_type="tlsrpt")
    message["TLS-Report-Domain"] = "example.com"
    message["TLS-Report-Submitter"] = "reporter.example"
    message.attach(MIMEText("report\n"))
    part = MIMEApplication(case.gzip(), "tlsrpt+gzip")  # base64 encoded...
    del part["Content-Transfer-Encoding"]  # ...but not declared
    message.attach(part)
    attachment = _one(message.as_bytes())
    assert attachment.data == case.gzip()
    assert _codes(attachment.warnings) == {"undeclared-base64"}


def test_undeclared_base64_with_a_generic_type():
    case = tc.case("google-heartbeat")
    message = MIMEMultipart("mixed")
    part = MIMEApplication(case.gzip(), "octet-stream")
    del part["Content-Transfer-Encoding"]
    message.attach(part)
    attachment = extract_reports(message.as_bytes()).attachments[0]
    assert attachment.data == case.gzip()
    assert {"undeclared-base64", "generic-content-type"} <= _codes(attachment.warnings)


def test_the_human_readable_part_and_other_attachments_are_not_reports():
    case = tc.case("google-heartbeat")
    dmarc = MIMEApplication(gzip.compress(b"<?xml version='1.0'?><feedback/>"), "gzip")
    dmarc.add_header("Content-Disposition", "attachment", filename="google.com!example.com!1!2.xml.gz")
    looks_like_json = MIMEText('{"this": "is only the text body"}\n', "plain")
    picture = MIMEApplication(b"\x89PNG\r\n\x1a\n" + b"\0" * 50, "octet-stream")
    found = extract_reports(case.message(extra_parts=(dmarc, looks_like_json, picture)))
    assert [a.content_type for a in found.attachments] == ["application/tlsrpt+gzip"]


def test_a_message_without_reports_gives_no_attachments():
    found = extract_reports(b"From: a@example.com\r\nSubject: hello\r\n\r\nJust text.\r\n")
    assert found.attachments == () and not found.is_tlsrpt_report and found.warnings == ()


def test_a_broken_report_attachment_is_still_returned_for_the_caller_to_reject():
    attachment = _one(tc.as_email(b"this is not json", compressed=False))
    with pytest.raises(ReportError) as info:
        attachment.parse()
    assert info.value.code == "not-json"


def test_forwarded_report_message():
    case = tc.case("google-heartbeat")
    found = extract_reports(case.message(forwarded=True))
    assert not found.is_tlsrpt_report
    assert _codes(found.warnings) == {"not-multipart-report"}
    assert found.subject.startswith("Fwd: Report Domain: example.com")
    attachment = found.attachments[0]
    assert attachment.nesting == 1
    assert (attachment.report_domain, attachment.report_submitter) == ("example.com", "google.example")
    assert attachment.subject.startswith("Report Domain: example.com")  # the inner message's own Subject
    assert _codes(attachment.warnings) == {"forwarded"}
    assert attachment.parse() == parse_report(case.gzip())


def test_forwarded_twice():
    inner = tc.case("google-heartbeat").message(forwarded=True)
    outer = MIMEMultipart("mixed")
    outer["Subject"] = "Fwd: Fwd: a report"
    outer.attach(MIMEMessage(message_from_bytes(inner)))
    assert _one(outer.as_bytes()).nesting == 2


def test_report_type_other_than_tlsrpt_is_warned():
    found = extract_reports(tc.case("google-heartbeat").message(report_type="feedback-report"))
    assert not found.is_tlsrpt_report
    assert found.warnings[0] == (
        "message is multipart/report; report-type=feedback-report, not multipart/report; report-type=tlsrpt")


# ------------------------------------------------------------------------ EC-36: the fallback domain


def test_ec_36_fallback_domain_from_the_tls_report_domain_header():
    case = tc.case("no-policy-domain")
    attachment = _one(case.message(policy_domain="Example.COM", filename=None))
    assert attachment.fallback_domain == "example.com"
    report = attachment.parse()
    assert report.policies[0].policy_domain == "example.com"
    assert report.warning_codes == ("policy-domain-fallback",)


def test_ec_36_fallback_domain_from_the_file_name_then_the_subject():
    case = tc.case("no-policy-domain")
    attachment = _one(case.message(policy_domain=None, filename="reporter.example!from-name.example!1!2!9.json.gz"))
    assert attachment.fallback_domain == "from-name.example"
    attachment = _one(case.message(policy_domain=None, filename=None, subject="TLS report"))
    assert attachment.fallback_domain is None
    assert attachment.parse().policies[0].policy_domain is None
    attachment = _one(case.message(policy_domain=None, filename=None,
                                   subject="Report Domain: Subj.Example Submitter: reporter.example Report-ID: <1@r>"))
    assert attachment.fallback_domain == "subj.example"


# ------------------------------------------------------------------------------------------ subject


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Report Domain: example.com Submitter: google.com Report-ID: <2024.02.17T00.00.00Z+example.com@google.com>",
         SubjectParts("example.com", "google.com", "<2024.02.17T00.00.00Z+example.com@google.com>")),
        ("Fwd: Report Domain: example.com Submitter: mail.example Report-ID: 123",
         SubjectParts("example.com", "mail.example", "123")),
        ("report domain:example.com  submitter:x.example report-id:<a@b>",
         SubjectParts("example.com", "x.example", "<a@b>")),
        ("Report Domain: example.com", None),
        ("[Preview] Report Domain: example.com Submitter: s.example Report-ID: <a b@c>",
         SubjectParts("example.com", "s.example", "<a b@c>")),
        ("", None),
    ],
)
def test_rpt_i_21_subject(subject, expected):
    assert parse_subject(subject) == expected


# ----------------------------------------------------------------------------------------- cross-check


def test_rpt_i_44_consistent_message_has_no_disagreement():
    case = tc.case("google-heartbeat")
    attachment = _one(case.message())
    assert cross_check(attachment, attachment.parse()) == ()


def test_rpt_i_19_and_i_44_disagreements_are_warned_not_fatal():
    case = tc.case("google-heartbeat")  # body: policy domain example.com, contact at google.example
    message = case.message(policy_domain="other.example", submitter="someone.example",
                           filename=tc.report_filename("google.example", "third.example", begin=0))
    attachment = _one(message)
    report = attachment.parse()
    assert report.policies[0].policy_domain == "example.com"  # the body wins
    warnings = cross_check(attachment, report)
    assert _codes(warnings) == {"report-domain-mismatch", "submitter-mismatch", "filename-mismatch",
                                "subject-mismatch"}
    assert "TLS-Report-Domain 'other.example' is not a policy domain of the report (example.com)" in warnings
    assert any("begin timestamp" in w and "third.example" in w for w in warnings)


def test_filename_end_timestamp_under_either_convention_agrees():
    case = tc.case("google-next-day-end")  # body ends at the next day's 00:00:00Z
    attachment = _one(case.message())  # the file name ends at 23:59:59
    assert cross_check(attachment, attachment.parse()) == ()


# ---------------------------------------------------------------------------------- limits, bad input


def test_rpt_i_45_message_size_limit():
    data = tc.case("google-heartbeat").message()
    assert extract_reports(data, limits=MessageLimits(max_message_bytes=len(data)))
    assert _error(data, limits=MessageLimits(max_message_bytes=len(data) - 1)) == "too-large"


def test_rpt_i_45_part_count_limit():
    parts = tuple(MIMEText(f"note {n}\n") for n in range(20))
    data = tc.case("google-heartbeat").message(extra_parts=parts)
    assert len(extract_reports(data).attachments) == 1
    assert _error(data, limits=MessageLimits(max_parts=10)) == "too-many-parts"


def _nested(depth: int) -> bytes:
    lines = [b"Content-Type: multipart/mixed; boundary=b0", b""]
    for level in range(depth):
        lines += [f"--b{level}".encode(), f"Content-Type: multipart/mixed; boundary=b{level + 1}".encode(), b""]
    lines += [f"--b{depth}".encode(), b"Content-Type: text/plain", b"", b"deep", f"--b{depth}--".encode()]
    for level in reversed(range(depth)):
        lines += [f"--b{level}--".encode()]
    return b"\r\n".join(lines) + b"\r\n"


def test_rpt_i_45_nesting_limit():
    assert extract_reports(_nested(10)).attachments == ()
    assert _error(_nested(40)) == "too-deep"
    began = time.perf_counter()
    assert _error(_nested(1200)) == "too-deep"
    assert _error(b"Content-Type: message/rfc822\n\n" * 2000 + b"body") == "too-deep"
    assert time.perf_counter() - began < 10


def _fast_error(data: bytes, **kwargs) -> str:
    began = time.perf_counter()
    code = _error(data, **kwargs)
    assert time.perf_counter() - began < 10
    return code


@pytest.mark.parametrize("newline", [b"\r\n", b"\n", b"\r"])
def test_rpt_i_45_many_mime_parts_are_refused_before_parsing(newline):
    # 300 000 empty parts cost the email package about half a minute; the pre-scan refuses them at once.
    part = b"--b" + newline * 2 + b"x" + newline
    data = b"Content-Type: multipart/mixed; boundary=b" + newline * 2 + part * 300_000
    assert _fast_error(data) == "too-many-parts"


def test_rpt_i_45_long_decoded_headers_are_refused_before_parsing():
    # Decoding these is quadratic or worse in the email package: 40 000 encoded words take about a minute.
    assert _fast_error(b"Subject: " + b"=?utf-8?q?a?= " * 40_000 + b"\r\n\r\nbody") == "header-too-long"
    long_type = b"Content-Type: multipart/mixed; " + b"a=b; " * 200_000 + b"boundary=x\r\n\r\n--x--"
    assert _fast_error(long_type) == "header-too-long"
    folded = b"Content-Type: multipart/mixed;" + b"\r\n a=b;" * 2_000 + b"\r\n boundary=x\r\n\r\n--x--"
    assert _fast_error(folded) == "header-too-long"
    hidden = b"X" * 5000 + b": y\r\n" + folded  # a long header name does not end the header block
    assert _fast_error(hidden) == "header-too-long"
    part = b"--b\r\nContent-Type: text/plain; " + b"a=b; " * 100 + b"\r\n\r\nx\r\n"
    many = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + part * 20 + b"--b--\r\n"
    limits = MessageLimits(max_header_total=8192)
    assert _fast_error(many, limits=limits) == "header-too-long"  # each under the limit, together over the total
    assert extract_reports(many, limits=MessageLimits(max_header_total=16384)).attachments == ()


def test_rpt_i_45_long_undecoded_headers_are_fine():
    data = b"Received: " + b"from a.example by b.example; " * 500 + b"\r\n" + tc.case("google-heartbeat").message()
    assert len(extract_reports(data).attachments) == 1


def test_rpt_i_45_header_field_count_limit():
    data = b"X-Trace: a\r\n" * 3_000_000 + b"\r\nbody"
    assert _fast_error(data, limits=MessageLimits(max_message_bytes=64 << 20)) == "too-many-headers"


def test_rpt_i_45_attachment_count_limit():
    case = tc.case("google-heartbeat")
    extra = []
    for n in range(5):
        part = MIMEApplication(case.gzip(), "tlsrpt+gzip")
        part.add_header("Content-Disposition", "attachment", filename=f"r{n}.json.gz")
        extra.append(part)
    data = case.message(extra_parts=tuple(extra))
    assert len(extract_reports(data).attachments) == 6
    assert _error(data, limits=MessageLimits(max_attachments=5)) == "too-many-attachments"


@pytest.mark.parametrize(("data", "code"), [(b"", "empty"), (b"\r\n \r\n", "empty"), ("text", "not-bytes"),
                                            (None, "not-bytes")])
def test_bad_input(data, code):
    assert _error(data) == code


# ------------------------------------------------------------------------------------------------- mbox


def test_mbox_is_split_into_its_messages():
    first = tc.case("google-heartbeat").message()
    second = b"From: a@example.com\nSubject: body with From lines\n\nFrom here on\n>From there\nend\n"
    third = tc.case("two-policies").message(compressed=False, base64=False)
    mbox = tc.as_mbox([first, second, third])
    assert looks_like_mbox(mbox)
    messages = list(iter_mbox(mbox))
    assert len(messages) == 3
    assert messages[1] == second
    assert messages[0] == first.replace(b"\r\n", b"\n")
    assert [len(extract_reports(m).attachments) for m in messages] == [1, 0, 1]
    assert extract_reports(messages[2]).attachments[0].parse().policies == parse_report(
        tc.case("two-policies").json()).policies


def test_mbox_with_crlf_line_ends():
    mbox = (b"From x@y Mon Jan  1 00:00:00 2024\r\nSubject: one\r\n\r\nbody\r\n\r\n"
            b"From x@y Mon Jan  1 00:00:01 2024\r\nSubject: two\r\n\r\nbody 2\r\n")
    assert list(iter_mbox(mbox)) == [b"Subject: one\r\n\r\nbody\r\n", b"Subject: two\r\n\r\nbody 2\r\n"]


@pytest.mark.parametrize("data", [b"", b"Subject: not an mbox\n\nbody\n", b"From:a@b\n", b"\nFrom x y\n"])
def test_not_an_mbox(data):
    assert not looks_like_mbox(data)
    with pytest.raises(MessageError) as info:
        iter_mbox(data)
    assert info.value.code == "not-mbox"


# ------------------------------------------------------------------------------------------- properties


def _survives(data: bytes) -> None:
    try:
        found = extract_reports(data)
    except MessageError as exc:
        assert exc.code in ERROR_CODES
        return
    _codes(found.warnings)
    for attachment in found.attachments:
        _codes(attachment.warnings)
        attachment.fallback_domain  # noqa: B018 - must not raise
        try:
            report = attachment.parse()
        except ReportError:
            continue
        _codes(cross_check(attachment, report))


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_message_error(data):
    _survives(data)
    _survives(b"Content-Type: multipart/report; report-type=tlsrpt; boundary=x\r\n\r\n--x\r\n" + data)
    if looks_like_mbox(data):
        for message in iter_mbox(data):
            _survives(message)


MESSAGES = [tc.case("google-heartbeat").message(), tc.case("no-policy-domain").message(forwarded=True),
            tc.case("two-policies").message(compressed=False, base64=False)]


@FAST
@given(st.sampled_from(MESSAGES), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
       st.integers(0, 10**6))
def test_mutated_messages_raise_only_message_error(message, flips, cut):
    data = bytearray(message)
    for position, byte in flips:
        data[position % len(data)] = byte
    _survives(bytes(data))
    _survives(bytes(data[: cut % (len(data) + 1)]))


@FAST
@given(st.lists(st.sampled_from([b"From a b\n", b"From \n", b">From x\n", b"\n", b"x\n", b"\r\n", b"From"]),
                max_size=20))
def test_iter_mbox_never_raises_on_mbox_like_input(pieces):
    data = b"From a@b Mon\n" + b"".join(pieces)
    assert all(isinstance(m, bytes) for m in iter_mbox(data))
