"""Property tests for mxsec.tlsrpt.parse and the modules it reads reports with (RPT-I-45, EC-40: untrusted input).

* Robustness: on any bytes — random, random JSON, valid reports mutated at the JSON level or byte by byte,
  raw or gzip-compressed — parse_report returns a Report or raises its own ReportError with a documented code;
  warnings always carry documented codes.
* Round trip: Report.to_json() parses back to the same report.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxsec.tlsrpt.filenames import filename_parts
from mxsec.tlsrpt.parse import parse_report
from mxsec.tlsrpt.report import (
    DEFAULT_LIMITS,
    ERROR_CODES,
    WARNING_CODES,
    Limits,
    Report,
    ReportError,
    Warnings,
)
from tests import tlsrpt_corpus as tc

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CORPUS = tc.corpus()
SMALL = Limits(max_string_chars=4096, max_depth=12, max_policies=50, max_failure_details=200, max_warnings=20)


def _outcome(data: bytes, limits: Limits = DEFAULT_LIMITS, fallback: str | None = None) -> Report | None:
    try:
        report = parse_report(data, limits=limits, fallback_domain=fallback)
    except ReportError as exc:
        assert exc.code in ERROR_CODES, exc.code
        assert str(exc) and "\n" not in str(exc)
        return None
    assert isinstance(report, Report)
    assert set(report.warning_codes) <= WARNING_CODES
    assert len(report.warnings) <= limits.max_warnings + 1
    assert all(p.successful >= 0 and p.failed >= 0 for p in report.policies)
    assert report.start.utcoffset() is not None and report.end.utcoffset() is not None
    report.to_json()  # always serialisable
    return report


JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["", "2024-02-17T00:00:00Z", "2024-02-17T00:00:00", "sts", "tlsa", "no-policy-found",
                     "mx: mx1.example.com", "192.0.2.1", "", "validation-failure", '["3 1 1 aa"]', "-1", "12"]),
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(
            ["policy", "summary", "failure-details", "policy-type", "result-type", "failed-session-count"])),
            children, max_size=4),
    ),
    max_leaves=20,
)


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_report_error(data):
    _outcome(data)
    _outcome(b"\x1f\x8b" + data)
    _outcome(b"PK\x03\x04" + data)
    _outcome(b"{" + data)


@FAST
@given(JSON_VALUE)
def test_arbitrary_json_raises_only_report_error(value):
    data = json.dumps(value).encode()
    _outcome(data)
    _outcome(gzip.compress(data))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _mutate(doc, path, action, value):
    doc = copy.deepcopy(doc)
    if not path:
        return value if action == "replace" else doc
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif action == "wrap":
        parent[last] = [parent[last]]
    elif action == "unwrap" and isinstance(parent[last], list) and parent[last]:
        parent[last] = parent[last][0]
    elif action == "rename" and isinstance(parent, dict):
        parent[str(value)[:12] + "x"] = parent.pop(last)
    elif action == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    return doc


MUTATION = st.tuples(
    st.sampled_from(["replace", "delete", "wrap", "unwrap", "rename", "duplicate"]), JSON_VALUE, st.integers(0, 10**6)
)


@FAST
@given(st.sampled_from(CORPUS), st.lists(MUTATION, min_size=1, max_size=4), st.booleans())
def test_mutated_valid_reports_raise_only_report_error(case, mutations, compress):
    doc = case.doc
    for action, value, pick in mutations:
        paths = list(_paths(doc))
        doc = _mutate(doc, paths[pick % len(paths)], action, value)
    data = tc.as_json(doc)
    _outcome(gzip.compress(data) if compress else data, SMALL, case.fallback_domain)


@FAST
@given(st.sampled_from(CORPUS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       st.sampled_from(["json", "gzip"]), st.integers(0, 10**6))
def test_byte_mutated_reports_raise_only_report_error(case, flips, packing, cut):
    data = bytearray(case.json() if packing == "json" else case.gzip())
    for position, byte in flips:
        data[position % len(data)] = byte
    _outcome(bytes(data))
    _outcome(bytes(data[: cut % (len(data) + 1)]))


@FAST
@given(st.sampled_from(CORPUS), st.sampled_from(["json", "gzip"]))
def test_tight_limits_only_ever_refuse_cleanly(case, packing):
    data = case.json() if packing == "json" else case.gzip()
    for limits in (Limits(max_json_bytes=200), Limits(max_depth=3), Limits(max_values=10), Limits(max_containers=4),
                   Limits(max_string_chars=10), Limits(max_policies=0), Limits(max_failure_details=0),
                   Limits(max_warnings=0), Limits(max_input_bytes=100)):
        _outcome(data, limits, case.fallback_domain)


REPORTS = st.builds(
    lambda org, rid, ok, failed, domain, details: tc.report(
        organization=org, report_id=rid,
        policies=[tc.entry(tc.sts_policy(domain), ok=ok, failed=failed, details=[
            tc.detail(rt, n, sending_mta_ip=ip) for rt, n, ip in details] or None)]),
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=20).filter(str.strip),
    st.integers(0, 2**53 - 1),
    st.integers(0, 2**53 - 1),
    st.sampled_from(["example.com", "mail.example.org", "xn--bcher-kva.example"]),
    st.lists(st.tuples(st.sampled_from(["validation-failure", "dane-required", "x-new"]), st.integers(0, 10**6),
                       st.sampled_from(["192.0.2.1", "2001:db8::1"])), max_size=3),
)


@FAST
@given(REPORTS)
def test_to_json_round_trips(doc):
    first = parse_report(tc.as_json(doc))
    again = parse_report(first.to_json())
    assert dataclasses.replace(again, warnings=first.warnings, raw_json=b"") == dataclasses.replace(first, raw_json=b"")
    assert again.warnings == first.warnings  # these reports need no coercion, so the same warnings again


@FAST
@given(st.text(max_size=120))
def test_filename_parts_never_raises(name):
    parts = filename_parts(name)
    assert parts is None or (parts.begin.tzinfo is not None and "!" not in parts.submitter)


# ----------------------------------------------------------------- fast JSON path == full JSON path

_JSON_PIECES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**60), max_value=2**60),
        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
        st.sampled_from(["1e400", "-1e400", "NaN", "9007199254740993", "1" + "0" * 5000, '"\\ud800"',
                         '"\\ud83d\\ude00"']).map(lambda raw: _Raw(raw)),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(st.tuples(st.sampled_from(["a", "b", "policies", "x"]), children), max_size=4),
    ),
    max_leaves=30,
)


class _Raw(str):
    """A JSON fragment written as is (numbers and escapes json.dumps would not produce)."""


def _write(value) -> str:
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        return "{" + ",".join(f"{json.dumps(k)}:{_write(v)}" for k, v in value) + "}"  # may repeat keys
    if isinstance(value, list):
        return "[" + ",".join(_write(v) for v in value) + "]"
    return json.dumps(value)


def _decided(call):
    try:
        return ("ok", call())
    except ReportError as exc:
        return ("error", exc.code)


@FAST
@given(_JSON_PIECES)
def test_fast_json_path_decides_exactly_like_the_full_path(value):
    from mxsec.tlsrpt import ijson

    text = _write(value)
    limits = DEFAULT_LIMITS
    fast = _decided(lambda: ijson.load_json(text.encode(), limits, Warnings(10)))

    def full_path():
        document = ijson._load_json_checked(text, limits)
        if isinstance(document, str):
            ijson._check_string(document, limits.max_string_chars)
        if not isinstance(document, dict):
            raise ReportError("not-an-object", "")
        return document

    assert fast == _decided(full_path)


# ------------------------------------------------------ typed fast path == full path, on whole reports (RPT-I-45)
#
# parse_report first tries a typed decode of the plain RFC 8460 shape (msgspec Structs, parse._fast_report) and
# gives anything else to the full path (ijson.load_json + _Builder). Whatever it answers must be exactly what the full
# path answers: the same Report (fields, warnings with their codes and order, unknown members, JSON form) or the
# same refusal. The documents below are near the RFC shape, with the quirks each tolerance covers mixed in.

_STRINGISH = st.one_of(st.text(max_size=6), st.integers(0, 99), st.none())


def _mostly(usual, odd):
    """*usual* about nineteen times in twenty, else *odd* (an inner value: Hypothesis favours the bounds)."""
    return st.integers(0, 19).flatmap(lambda n: odd if n == 7 else usual)


_COUNT = _mostly(st.integers(0, 10**6), st.sampled_from([-1, 2**53 - 1, 2**53, 3.0, 2.5, "12", " 7 ", True, None,
                                                         "x", 1e400]))
_DATETIME = _mostly(
    st.sampled_from(["2024-02-17T00:00:00Z", "2024-02-17T23:59:59Z", "2024-02-18T00:00:00Z", "2024-02-16T00:00:00Z"]),
    st.sampled_from(["2024-02-17", "2024-02-17T00:00:60Z", "2024-02-17 00:00:00+0100", "2024-02-18T00:00:00", "bad",
                     "", "2024-02-17T00:00:00.5z", "2024-13-01T00:00:00Z"]))
# name: (how often present, the values)
_DETAIL_FIELDS = {
    "result-type": (0.98, _mostly(
        st.sampled_from(["validation-failure", "starttls-not-supported", "certificate-expired", "x-new"]),
        st.one_of(st.sampled_from(["STARTTLS-Not-Supported", " dane-required ", ""]), _STRINGISH))),
    "sending-mta-ip": (0.9, _mostly(st.sampled_from(["192.0.2.1", "2001:db8::1"]),
                                    st.sampled_from([" 192.0.2.9 ", "", " ", "not-an-ip", None, 7]))),
    "receiving-mx-hostname": (0.8, _mostly(st.just("mx1.example.com"),
                                           st.sampled_from(["", " ", None, "mx: mx2.example.com"]))),
    "receiving-mx-helo": (0.3, _mostly(st.just("mx1.example.com"), st.sampled_from(["", None]))),
    "receiving-ip": (0.7, _mostly(st.just("198.51.100.7"), st.sampled_from(["", "bogus", None]))),
    "failed-session-count": (0.98, _COUNT),
    "additional-information": (0.2, _mostly(st.just("https://reporter.example/why"), st.sampled_from(["", None, 3]))),
    "failure-reason-code": (0.2, _mostly(st.just("X509_V_ERR_CERT_HAS_EXPIRED"), st.sampled_from(["", None]))),
    "failure-error-code": (0.03, st.just("legacy")),  # a legacy name (read as failure-reason-code)
    "x-unknown": (0.03, st.just(1)),
}
_POLICY_FIELDS = {
    "policy-type": (0.98, _mostly(st.sampled_from(["sts", "tlsa", "no-policy-found"]),
                                  st.one_of(st.sampled_from(["STS", " tlsa", "other"]), _STRINGISH))),
    "policy-string": (0.9, _mostly(
        st.lists(st.sampled_from(["version: STSv1", "mode: enforce", "max_age: 86400", "3 1 1 " + "8f" * 32]),
                 max_size=3),
        st.one_of(st.lists(st.sampled_from(['["3 1 1 aa","3 1 1 bb"]', " [x", ""]), min_size=1, max_size=2),
                  st.sampled_from([None, "version: STSv1", 5, [1]])))),
    "policy-domain": (0.95, _mostly(st.sampled_from(["example.com", "mail.example.org"]),
                                    st.sampled_from(["Example.COM.", "bücher.example", "", " ", "not a domain", None,
                                                     4]))),
    "mx-host": (0.8, _mostly(st.lists(st.sampled_from(["*.example.com", "mx1.example.com"]), max_size=3),
                             st.one_of(st.lists(st.sampled_from(["mx: mx1.example.com", "", " ", "mx1.example.com"]),
                                                min_size=1, max_size=3),
                                       st.sampled_from([None, "mx1.example.com", 7])))),
    "mx-host-pattern": (0.03, st.just(["*.example.org"])),  # legacy name
}
_SUMMARY_FIELDS = {
    "total-successful-session-count": (0.98, _COUNT),
    "total-failure-session-count": (0.98, _COUNT),
    "x-more": (0.03, st.just("kept")),
}


@st.composite
def _members(draw, fields):
    """(name, value) pairs in the given order, each present as often as its share says; rarely one twice."""
    pairs = [(name, draw(values)) for name, (share, values) in fields.items() if draw(st.floats(0, 1)) < share]
    if pairs and draw(st.integers(0, 59)) == 7:  # a member twice (I-JSON: refused)
        pairs.append(draw(st.sampled_from(pairs)))
    return pairs


@st.composite
def _near_rfc_report(draw):
    entries = []
    for _ in range(draw(st.integers(0, 3))):
        entry = [("policy", draw(_members(_POLICY_FIELDS))), ("summary", draw(_members(_SUMMARY_FIELDS)))]
        if draw(st.booleans()):
            entry.append(("failure-details", [draw(_members(_DETAIL_FIELDS)) for _ in range(draw(st.integers(0, 3)))]))
        if draw(st.integers(0, 29)) == 7:
            entry.append(("x-entry", True))
        entries.append(entry)
    top = {
        "organization-name": (0.98, _mostly(st.sampled_from(["Google Inc.", "Microsoft Corporation", "Org: x"]),
                                            st.sampled_from(["", "  ", None, 5]))),
        "date-range": (0.98, st.builds(lambda s, e: [("start-datetime", s), ("end-datetime", e)], _DATETIME,
                                       _DATETIME)),
        "contact-info": (0.9, _mostly(st.sampled_from(["smtp-tls-reporting@reporter.example", "mailto:x@r.example"]),
                                      st.sampled_from(["", None, ["a@reporter.example", "b@reporter.example"]]))),
        "report-id": (0.98, _mostly(st.sampled_from(["2024-02-17T00:00:00Z_example.com", "r:1", "é-1"]),
                                    st.one_of(st.sampled_from(["", " "]), _STRINGISH))),
        "policies": (0.98, st.just(entries)),
        "x-top": (0.03, st.just({"a": 1})),
    }
    return draw(_members(top))


def _dump(value, ensure_ascii: bool) -> str:
    if isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v, ensure_ascii)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v, ensure_ascii) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


def _full_path_only(data, limits, fallback):
    from unittest import mock

    from mxsec.tlsrpt import parse

    with mock.patch.object(parse, "_fast_report", lambda *args: None):
        return _result(lambda: parse_report(data, limits=limits, fallback_domain=fallback))


def _result(call):
    try:
        report = call()
    except ReportError as exc:
        return ("error", exc.code, str(exc))
    return ("ok", report, report.warning_codes, tuple(map(str, report.warnings)), report.to_json(),
            report.raw_json, report.source_format, dict(report.extra),
            [(dict(p.extra), [dict(d.extra) for d in p.failure_details]) for p in report.policies])


TIGHT = Limits(max_string_chars=40, max_policies=2, max_failure_details=3, max_warnings=3, max_values=120,
               max_containers=20, max_depth=5)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_near_rfc_report(), st.booleans(), st.booleans(), st.sampled_from([DEFAULT_LIMITS, DEFAULT_LIMITS, SMALL, TIGHT]),
       st.sampled_from([None, "fallback.example"]))
def test_typed_fast_path_decides_exactly_like_the_full_path(doc, ensure_ascii, compress, limits, fallback):
    data = _dump(doc, ensure_ascii).encode()
    if compress:
        data = gzip.compress(data)
    assert _result(lambda: parse_report(data, limits=limits, fallback_domain=fallback)) == \
        _full_path_only(data, limits, fallback)


def test_typed_fast_path_takes_plain_reports_and_leaves_the_rest():
    """The fast path does run (the property test above would pass vacuously otherwise) and gives up where it must."""
    from mxsec.tlsrpt import parse

    def fast(data: bytes, limits: Limits = DEFAULT_LIMITS):
        return parse._fast_report(data, limits, Warnings(limits.max_warnings), None, "json")

    plain = tc.report(policies=[tc.sts_entry(), tc.entry(tc.tlsa_policy(), details=[tc.detail("validation-failure", 3)],
                                                          failed=3)])
    taken = [case.name for case in CORPUS if fast(case.json()) is not None]
    assert len(taken) >= 5, taken
    report = fast(tc.as_json(plain))
    assert report is not None and report == parse_report(tc.as_json(plain))
    text = tc.as_json(plain).decode()
    duplicated = text.replace('"report-id":', '"report-id": "first", "report-id":', 1)
    assert fast(duplicated.encode()) is None
    with_escape = text.replace("version: STSv1", "version\\u003a STSv1")
    assert fast(with_escape.encode()) is None and parse_report(with_escape.encode()) == parse_report(text.encode())
    unknown = text.replace('"report-id":', '"x-new": 1, "report-id":', 1)
    assert fast(unknown.encode()) is None
    assert "unknown-field" in parse_report(unknown.encode()).warning_codes
    assert fast(tc.as_json(plain), Limits(max_depth=4)) is None
    assert fast(tc.as_json(plain), Limits(max_string_chars=20)) is None
    assert fast(duplicated.encode()) is None
    try:
        parse_report(duplicated.encode())
    except ReportError as exc:
        assert exc.code == "duplicate-key"
    else:
        raise AssertionError("a duplicate member name was accepted")
