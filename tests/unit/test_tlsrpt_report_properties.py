"""Property tests for mxsec.tlsrpt.report (RPT-I-45, EC-40: untrusted input).

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

from mxsec.tlsrpt.report import (
    DEFAULT_LIMITS,
    ERROR_CODES,
    WARNING_CODES,
    Limits,
    Report,
    ReportError,
    filename_parts,
    parse_report,
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
    from mxsec.tlsrpt import report as module

    text = _write(value)
    limits = module.DEFAULT_LIMITS
    fast = _decided(lambda: module._load_json(text.encode(), limits, module._Warnings(10)))

    def full_path():
        document = module._load_json_checked(text, limits)
        if isinstance(document, str):
            module._check_string(document, limits.max_string_chars)
        if not isinstance(document, dict):
            raise ReportError("not-an-object", "")
        return document

    assert fast == _decided(full_path)
