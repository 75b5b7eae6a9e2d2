"""The TLSRPT sender's sans-I/O core: libtlsrpt datagrams, the day's tally, report building, the schedule.

Datagrams are written here exactly as libtlsrpt encodes them (a space after the colon of string members,
none for numbers and arrays); reports are checked against a JSON Schema of RFC 8460 §4.4 with errata 5778 and
6241 (``tests/schemas/tlsrpt-report.schema.json``) and read back with mxsec's own report parser.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxsec.tlsrpt.build import I_JSON_MAX, build_report, day_range, report_filename, report_id, submitter_of
from mxsec.tlsrpt.datagram import ERROR_CODES, DatagramError, DatagramLimits, DatagramParser, parse_datagram
from mxsec.tlsrpt.filenames import filename_parts
from mxsec.tlsrpt.parse import parse_report
from mxsec.tlsrpt.schedule import RetryPolicy, due_time, next_attempt
from mxsec.tlsrpt.session import (
    Failure,
    Policy,
    PolicyOutcome,
    PolicyTotals,
    PolicyType,
    Session,
    Tally,
    folded,
    result_type_for_code,
)

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "tlsrpt-report.schema.json").read_text())
DAY = date(2026, 12, 1)
STS_LINES = ["version: STSv1", "mode: enforce", "mx: mx1.sts-domain.example", "mx: *.backup.sts-domain.example",
             "max_age: 604800"]


def _str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def encode(domain: str, policies: list[dict], record: str | None = None, dpv: str = "1") -> bytes:
    """A datagram in libtlsrpt's own spacing."""
    record = record if record is not None else f"v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"
    parts = []
    for p in policies:
        fields = [f'"policy-type":{p["type"]}']
        if "domain" in p:
            fields.append(f'"policy-domain": {_str(p["domain"])}')
        if p.get("strings"):
            fields.append('"policy-string":[' + ",".join(_str(s) for s in p["strings"]) + "]")
        if p.get("mx"):
            fields.append('"mx-host":[' + ",".join(_str(s) for s in p["mx"]) + "]")
        details = []
        for d in p.get("details", []):
            items = [f'"c":{d["c"]}'] + [f'"{k}": {_str(v)}' for k, v in d.items() if k != "c"]
            details.append("{" + ",".join(items) + "}")
        fields.append('"failure-details":[' + ",".join(details) + "]")
        fields.append(f'"t":{len(details)}')
        fields.append(f'"f":{p["f"]}')
        parts.append("{" + ",".join(fields) + "}")
    return (f'{{"dpv": {_str(dpv)},"d": {_str(domain)},"pr": {_str(record)},"policies":[' + ",".join(parts)
            + "]}").encode("utf-8")


MISMATCH = {"c": 202, "s": "192.0.2.10", "n": "a.backup.sts-domain.example", "h": "a.backup.sts-domain.example ESMTP",
            "r": "198.51.100.26", "f": "hostname mismatch"}
STS_FAIL = encode("sts-domain.example", [{"type": 2, "domain": "sts-domain.example", "strings": STS_LINES,
                                          "mx": ["mx1.sts-domain.example", "*.backup.sts-domain.example"],
                                          "details": [MISMATCH], "f": 1}])


# ------------------------------------------------------------------------------------------- datagrams


def test_postfix_sts_failure_datagram_as_libtlsrpt_writes_it() -> None:
    parsed = parse_datagram(STS_FAIL)
    assert parsed.warnings == ()
    session = parsed.session
    assert session.domain == "sts-domain.example"
    assert session.record == "v=TLSRPTv1; rua=mailto:tlsrpt@sts-domain.example"
    (outcome,) = session.outcomes
    assert outcome.failed
    assert outcome.policy == Policy(PolicyType.STS, "sts-domain.example", tuple(STS_LINES),
                                    ("mx1.sts-domain.example", "*.backup.sts-domain.example"))
    assert outcome.failures == (Failure("certificate-host-mismatch", "192.0.2.10", "a.backup.sts-domain.example",
                                        "a.backup.sts-domain.example ESMTP", "198.51.100.26", None,
                                        "hostname mismatch"),)


def test_ec_36_no_policy_found_gets_the_report_domain_as_policy_domain() -> None:
    parsed = parse_datagram(encode("Example.COM.", [{"type": 9, "f": 0}]))
    (outcome,) = parsed.session.outcomes
    assert parsed.session.domain == "example.com"
    assert outcome.policy == Policy(PolicyType.NO_POLICY_FOUND, "example.com")
    assert not outcome.failed and parsed.warnings == ()


def test_rpt_i_43_tlsa_policy_domain_is_the_mx_host() -> None:
    data = encode("dane.example", [{"type": 1, "domain": "mx1.dane.example", "strings": ["3 1 1 AB" * 2],
                                    "f": 0}])
    (outcome,) = parse_datagram(data).session.outcomes
    assert outcome.policy.type is PolicyType.TLSA and outcome.policy.domain == "mx1.dane.example"


def test_several_policies_and_several_details_in_one_datagram() -> None:
    data = encode("both.example", [
        {"type": 1, "domain": "mx.both.example", "strings": ["3 1 1 00FF"], "f": 1,
         "details": [{"c": 304, "n": "mx.both.example"}, {"c": 305, "n": "mx.both.example"}]},
        {"type": 2, "domain": "both.example", "strings": ["version: STSv1", "mode: testing"], "mx": ["mx.both.example"],
         "f": 0},
    ])
    session = parse_datagram(data).session
    assert [o.policy.type for o in session.outcomes] == [PolicyType.TLSA, PolicyType.STS]
    assert [f.result_type for f in session.outcomes[0].failures] == ["tlsa-invalid", "dnssec-invalid"]
    assert [o.failed for o in session.outcomes] == [True, False]


def test_rpt_i_38_every_libtlsrpt_code_maps_to_its_result_type() -> None:
    expected = {201: "starttls-not-supported", 202: "certificate-host-mismatch", 203: "certificate-not-trusted",
                204: "certificate-expired", 205: "validation-failure", 301: "sts-policy-fetch-error",
                302: "sts-policy-invalid", 303: "sts-webpki-invalid", 304: "tlsa-invalid", 305: "dnssec-invalid",
                306: "dane-required"}
    for code, name in expected.items():
        assert result_type_for_code(code) == (name, None)


def test_unknown_result_code_is_kept_as_validation_failure_with_the_code() -> None:
    data = encode("x.example", [{"type": 9, "f": 1, "details": [{"c": 299, "a": "https://x.example/why"}]}])
    parsed = parse_datagram(data)
    (failure,) = parsed.session.outcomes[0].failures
    assert failure.result_type == "validation-failure"
    assert failure.additional_information == "unknown result code 299; https://x.example/why"
    assert "unknown-result-code" in parsed.warnings


def test_non_utf8_bytes_are_counted_with_a_warning() -> None:
    data = STS_FAIL.replace(b"ESMTP", b"ESMTP \xff\xfe")
    parsed = parse_datagram(data)
    assert "non-utf8" in parsed.warnings
    assert parsed.session.outcomes[0].failures[0].receiving_mx_helo == "a.backup.sts-domain.example ESMTP \ufffd\ufffd"


@pytest.mark.parametrize(("data", "code"), [
    (b"", "not-json"),
    (b"not json", "not-json"),
    (b"[1, 2]", "bad-type"),
    (STS_FAIL.replace(b'"dpv": "1"', b'"dpv": "2"'), "unknown-version"),
    (STS_FAIL.replace(b'"dpv": "1"', b'"dpv": 1'), "unknown-version"),
    (STS_FAIL.replace(b'"policy-type":2', b'"policy-type":"sts"'), "bad-type"),
    (STS_FAIL.replace(b'"policy-type":2', b'"policy-type":7'), "bad-policy-type"),
    (STS_FAIL.replace(b'"c":202', b'"c":-1'), "bad-result-code"),
    (STS_FAIL.replace(b'"f":1}]}', b'"f":5}]}'), "bad-type"),
    (STS_FAIL.replace(b'"d": "sts-domain.example"', b'"d": "not a domain"'), "bad-domain"),
    (STS_FAIL.replace(b'"pr": "v=TLSRPTv1;', b'"pr": "v=STSv1;'), "no-record"),
    (encode("x.example", []), "no-policies"),
    (b" " * 300_000, "too-large"),
    (b"{" * 5000, "not-json"),
])
def test_hostile_datagrams_are_refused_with_a_stable_code(data: bytes, code: str) -> None:
    with pytest.raises(DatagramError) as caught:
        DatagramParser().parse(data)
    assert caught.value.code == code and code in ERROR_CODES


def test_limits_bound_policies_details_and_strings() -> None:
    limits = DatagramLimits(max_policies=2, max_details=3, max_strings=4)
    many_policies = encode("x.example", [{"type": 9, "f": 0}] * 3)
    many_details = encode("x.example", [{"type": 9, "f": 1, "details": [{"c": 201}] * 4}])
    many_strings = encode("x.example", [{"type": 2, "strings": ["a"] * 5, "f": 0}])
    for data in (many_policies, many_details, many_strings):
        with pytest.raises(DatagramError) as caught:
            parse_datagram(data, limits)
        assert caught.value.code == "too-many"


def test_parser_caches_are_bounded_and_do_not_change_results() -> None:
    parser = DatagramParser(cache_limit=8)
    datagrams = [STS_FAIL.replace(b"sts-domain.example", f"d{i}.example".encode()) for i in range(30)]
    first = [parser.parse(d) for d in datagrams]
    assert len(parser.seen) <= 8
    assert [parser.parse(d) for d in datagrams] == first == [DatagramParser().parse(d) for d in datagrams]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_anything_but_datagram_error(data: bytes) -> None:
    try:
        DatagramParser().parse(data)
    except DatagramError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["dpv", "d", "pr", "policies", "policy-type", "policy-domain", "c", "f",
                                         "failure-details", "mx-host", "policy-string", "n", "s"]), inner,
                        max_size=5), max_leaves=20))
def test_arbitrary_json_never_raises_anything_but_datagram_error(value: object) -> None:
    try:
        DatagramParser().parse(json.dumps(value).encode())
    except DatagramError:
        pass


# ------------------------------------------------------------------------------------------------ tally

STS = Policy(PolicyType.STS, "example.com", ("version: STSv1", "mode: enforce", "mx: mx.example.com",
                                              "max_age: 86400"), ("mx.example.com",))


def test_rpt_i_42_a_session_with_two_details_counts_once_as_failed_and_once_in_each_detail() -> None:
    a, b = Failure("certificate-expired", receiving_ip="192.0.2.1"), Failure("certificate-host-mismatch",
                                                                            receiving_ip="192.0.2.1")
    tally = Tally()
    tally.add(Session("example.com", (PolicyOutcome(STS, True, (a, b)),)), DAY)
    tally.add(Session("example.com", (PolicyOutcome(STS, False),)), DAY)
    ((key, count),) = tally.items()
    assert (count.successful, count.failed, count.failures) == (1, 1, {a: 1, b: 1})


def test_failure_rows_are_capped_per_policy_and_the_rest_folded_by_result_type() -> None:
    tally = Tally(max_failure_rows=10)
    for i in range(1000):
        failure = Failure("starttls-not-supported" if i % 2 else "certificate-expired", f"192.0.2.{i % 250}",
                          receiving_mx_helo=f"helo-{i}")
        tally.add(Session("example.com", (PolicyOutcome(STS, True, (failure,)),)), DAY)
    ((_, count),) = tally.items()
    assert count.failed == 1000
    assert len(count.failures) == 12  # 10 kept + one folded row per result type
    assert sum(count.failures.values()) == 1000
    assert count.failures[folded(Failure("certificate-expired"))] == 495
    merged = Tally(max_failure_rows=10)
    merged.merge(tally)
    merged.merge(tally)
    assert sum(next(iter(merged.counts.values())).failures.values()) == 2000
    assert len(next(iter(merged.counts.values())).failures) == 12


# ------------------------------------------------------------------------------------------- building

def _totals() -> list[PolicyTotals]:
    return [
        PolicyTotals(STS, 100, 3, ((Failure("certificate-host-mismatch", "192.0.2.1", "mx.example.com", None,
                                            "198.51.100.1", None, "hostname mismatch"), 2),
                                   (Failure("starttls-not-supported", "192.0.2.1", receiving_ip="198.51.100.1"), 1))),
        PolicyTotals(Policy(PolicyType.TLSA, "mx.example.com", ("3 1 1 " + "ab" * 32,)), 7, 0),
        PolicyTotals(Policy(PolicyType.NO_POLICY_FOUND, "example.com"), 5, 0),
    ]


def test_report_follows_rfc_8460_schema_with_errata_and_reads_back_without_warnings() -> None:
    built = build_report(DAY, "example.com", _totals(), organization_name="Exämple Mail GmbH",
                         contact_info="tlsrpt@sender.example")
    jsonschema.validate(built.document, SCHEMA)
    assert json.loads(gzip.decompress(built.gzip_bytes)) == built.document
    report = parse_report(built.gzip_bytes)
    assert report.warnings == ()
    assert (report.successful, report.failed) == (112, 3)
    assert report.organization_name == "Exämple Mail GmbH"  # UTF-8, not escaped away
    assert "Exämple".encode() in built.json_bytes


def test_rpt_i_33_34_policies_and_mx_host_are_arrays_and_no_policy_found_has_a_domain() -> None:
    doc = build_report(DAY, "example.com", _totals(), organization_name="O", contact_info="a@s.example").document
    assert isinstance(doc["policies"], list)
    sts = doc["policies"][0]["policy"]
    assert sts["mx-host"] == ["mx.example.com"] and sts["policy-string"][1] == "mode: enforce"
    assert doc["policies"][2]["policy"] == {"policy-type": "no-policy-found", "policy-string": [],
                                            "policy-domain": "example.com"}
    assert doc["policies"][0]["summary"] == {"total-successful-session-count": 100, "total-failure-session-count": 3}
    assert doc["date-range"] == {"start-datetime": "2026-12-01T00:00:00Z", "end-datetime": "2026-12-01T23:59:59Z"}


def test_rpt_i_26_27_35_file_name_and_a_labels() -> None:
    built = build_report(DAY, "BÜCHER.example.", _totals(), organization_name="O", contact_info="tlsrpt@Sender.Example")
    assert built.domain == "xn--bcher-kva.example"
    begin, end = (int(t.timestamp()) for t in day_range(DAY))
    assert built.filename.startswith(f"sender.example!xn--bcher-kva.example!{begin}!{end}!")
    assert built.filename.endswith(".json.gz")
    parts = filename_parts(built.filename)
    assert parts is not None and parts.policy_domain == "xn--bcher-kva.example"
    with pytest.raises(ValueError):
        report_filename("s.example", "d.example", DAY, "not-alnum")


def test_report_ids_are_stable_when_a_day_is_rebuilt_and_differ_per_domain_and_day() -> None:
    one = build_report(DAY, "example.com", _totals(), organization_name="O", contact_info="a@s.example")
    again = build_report(DAY, "example.com", _totals(), organization_name="O", contact_info="a@s.example")
    assert one.report_id == again.report_id and one.gzip_bytes == again.gzip_bytes
    assert one.report_id == report_id(DAY, "example.com", "s.example", "O")
    assert one.report_id.endswith("@s.example")
    others = {report_id(DAY, "other.example", "s.example", "O"), report_id(date(2026, 12, 2), "example.com",
                                                                           "s.example", "O")}
    assert one.report_id not in others and len(others) == 2


def test_rpt_i_31_counts_are_clamped_to_i_json() -> None:
    doc = build_report(DAY, "example.com", [PolicyTotals(STS, 2**60, 0)], organization_name="O",
                       contact_info="a@s.example").document
    assert doc["policies"][0]["summary"]["total-successful-session-count"] == I_JSON_MAX


def test_contact_info_must_name_a_domain_and_organization_is_required() -> None:
    assert submitter_of("mailto:TLSRPT@Sender.Example") == "sender.example"
    for bad in ("no-at-sign", "@example.com", "user@"):
        with pytest.raises(ValueError):
            submitter_of(bad)
    with pytest.raises(ValueError):
        build_report(DAY, "example.com", _totals(), organization_name=" ", contact_info="a@s.example")


# ------------------------------------------------------------------------------------------- schedule


def test_rpt_i_30_first_delivery_after_the_day_plus_a_stable_random_delay() -> None:
    end = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
    assert due_time(DAY, "example.com", 0) == end
    delays = {due_time(DAY, f"d{i}.example", 3600) - end for i in range(200)}
    assert all(0 <= d < 3600 for d in delays) and len(delays) > 150
    assert due_time(DAY, "d1.example", 3600) == due_time(DAY, "d1.example", 3600)


def test_rpt_i_29_exponential_backoff_for_24_hours_then_give_up() -> None:
    policy = RetryPolicy(first_retry=300, max_retry=4 * 3600, give_up_after=86400)
    now, first, waits = 0.0, 0.0, []
    attempts = 0
    while True:
        attempts += 1
        when = next_attempt(first, attempts, now, policy)
        if when is None:
            break
        waits.append(when - now)
        now = when
        assert attempts < 100
    assert waits[:5] == [300, 600, 1200, 2400, 4800]
    assert max(waits) == 4 * 3600
    assert now == 86400  # the last try is at the end of the window
