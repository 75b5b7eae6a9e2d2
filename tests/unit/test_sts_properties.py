"""Property tests for the sans-I/O MTA-STS core.

* Robustness: random text and bytes make the parsers raise their own ParseError subclass and nothing
  else; select_record, mx_matches and matching_pattern never raise at all.
* Round trips: generator output (format_record, format_policy) always parses back to the same values.
"""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxsec.names import DomainError, normalize_dns_name, normalize_domain
from mxsec.sts.match import matching_pattern, mx_matches
from mxsec.sts.policy import MAX_AGE_LIMIT, PolicyError, format_policy, parse_policy
from mxsec.sts.record import RecordError, format_record, parse_record, select_record

FAST = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LOWER_ALNUM = string.ascii_lowercase + string.digits
ALNUM = string.ascii_letters + string.digits
LABEL = st.text(alphabet=LOWER_ALNUM + "-", min_size=1, max_size=22).map(lambda s: s.strip("-")).filter(bool)
ALPHA_LABEL = st.builds(str.__add__, st.sampled_from(string.ascii_lowercase), st.text(alphabet=LOWER_ALNUM, max_size=8))
HOST = st.builds(lambda labels, tld: ".".join([*labels, tld]), st.lists(LABEL, min_size=1, max_size=4), ALPHA_LABEL)
PATTERN = st.one_of(HOST, HOST.map(lambda h: "*." + h))
RECORD_ID = st.text(alphabet=ALNUM, min_size=1, max_size=32)
EXT_NAME = st.builds(
    str.__add__, st.sampled_from(ALNUM), st.text(alphabet=ALNUM + "_.-", max_size=31)
).filter(lambda n: n not in ("v", "id"))
EXT_VALUE = st.text(alphabet="".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "=;"), min_size=1, max_size=20)

# Text close to the grammar, so the fuzzing reaches deep branches rather than failing at the first char.
RECORD_PIECES = st.sampled_from(["v=STSv1", ";", " ", "\t", "id=", "abc", "=", "x.y", "+", "é", "\n", "ID", "v=STSv10"])
POLICY_PIECES = st.sampled_from(
    [
        "version: STSv1",
        "mode: enforce",
        "mode: none",
        "mode: testing",
        "mx: ",
        "mail.example.com",
        "*.",
        "*",
        "max_age: ",
        "86400",
        "9999999999",
        "\n",
        "\r\n",
        "\r",
        " ",
        "\t",
        ":",
        "\ufeff",
        "é",
        "192.0.2.1",
        ".",
        "ext: v",
        "\x00",
    ]
)


@FAST
@given(st.one_of(st.text(max_size=200), st.lists(RECORD_PIECES, max_size=20).map("".join)))
def test_sts_a_9_parse_record_raises_only_record_error(text: str) -> None:
    try:
        record = parse_record(text)
    except RecordError:
        return
    assert text.startswith("v=STSv1")
    assert 1 <= len(record.id) <= 32


@FAST
@given(st.lists(st.one_of(st.text(max_size=60), st.lists(RECORD_PIECES, max_size=12).map("".join)), max_size=4))
def test_sts_a_8_a_9_select_record_never_raises(strings: list[str]) -> None:
    selection = select_record(strings)
    assert (selection.record is None) != (selection.problem is None)
    if selection.problem is not None:
        assert selection.problem in ("no-record", "several-records") or selection.problem.startswith("invalid: ")


@FAST
@given(
    st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        st.lists(POLICY_PIECES, max_size=30).map("".join),
        st.lists(POLICY_PIECES, max_size=30).map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass")),
    )
)
def test_sts_c_15_parse_policy_raises_only_policy_error(body: bytes | str) -> None:
    try:
        policy = parse_policy(body)
    except PolicyError as exc:
        assert exc.result_type == "sts-policy-invalid"
        return
    assert policy.mode in ("enforce", "testing", "none")
    assert 0 <= policy.max_age <= MAX_AGE_LIMIT
    if policy.mode != "none":
        assert policy.mx


@FAST
@given(st.one_of(st.text(max_size=80), st.lists(st.sampled_from(["a", "-", ".", "_", "xn--", "ü", "1", "。", ":"]), max_size=30).map("".join)))
def test_sts_e_4_normalize_domain_raises_only_domain_error(text: str) -> None:
    for function in (normalize_domain, normalize_dns_name):
        try:
            result = function(text)
        except DomainError:
            continue
        assert result == result.lower()
        assert result.isascii()
        assert not result.endswith(".")
        assert 0 < len(result) <= 253
        assert function(result) == result  # idempotent


@FAST
@given(st.text(max_size=60), st.text(max_size=60))
def test_sts_e_3_mx_matches_never_raises(pattern: str, host: str) -> None:
    assert mx_matches(pattern, host) in (True, False)
    assert matching_pattern([pattern], host) in (pattern, None)


@FAST
@given(PATTERN, st.one_of(HOST, st.builds(lambda label, h: label + "." + h, LABEL, HOST), st.text(max_size=30)))
def test_sts_e_3_mx_matches_never_raises_on_near_valid_input(pattern: str, host: str) -> None:
    assert mx_matches(pattern, host) in (True, False)


@FAST
@given(HOST, LABEL, LABEL)
def test_sts_e_3_e_4_wildcard_and_case_properties(host: str, label: str, other: str) -> None:
    assert mx_matches(host, host.upper() + ".") is True
    assert mx_matches("*." + host, label + "." + host) is True
    assert mx_matches("*." + host, host) is False
    assert mx_matches("*." + host, f"{other}.{label}.{host}") is False


@FAST
@given(RECORD_ID, st.lists(st.tuples(EXT_NAME, EXT_VALUE), max_size=4, unique_by=lambda pair: pair[0]))
def test_sts_a_5_a_7_format_record_round_trip(record_id: str, extensions: list[tuple[str, str]]) -> None:
    record = parse_record(format_record(record_id, extensions))
    assert record.id == record_id
    assert record.extensions == tuple(extensions)
    assert record.warnings == ()
    assert select_record([format_record(record_id, extensions)]).record == record


@FAST
@given(
    st.sampled_from(["enforce", "testing", "none"]),
    st.lists(PATTERN, max_size=5),
    st.integers(min_value=0, max_value=MAX_AGE_LIMIT),
)
def test_sts_c_1_to_c_8_format_policy_round_trip(mode: str, patterns: list[str], max_age: int) -> None:
    if mode != "none" and not patterns:
        patterns = ["mx.example.com"]
    try:
        text = format_policy(mode, patterns, max_age)
    except PolicyError:
        # Only a generated name that is not a host name (numeric TLD) may be refused.
        assert any(p.rpartition(".")[2].isdigit() for p in patterns)
        return
    policy = parse_policy(text)
    assert (policy.mode, policy.mx, policy.max_age, policy.warnings) == (mode, tuple(patterns), max_age, ())
    assert parse_policy(policy.to_text("\n")).lines == policy.lines


def test_sts_c_15_hostile_sizes_are_cheap() -> None:
    # Regression guard for the input caps: these return quickly with the module's own error.
    for call, error in (
        (lambda: parse_record("v=STSv1; " + "x=y;" * 100_000), RecordError),
        (lambda: parse_policy(b"x" * 10_000_000), PolicyError),
        (lambda: normalize_domain("a." * 1_000_000), DomainError),
    ):
        try:
            call()
        except error:
            pass
        else:  # pragma: no cover
            raise AssertionError("expected an error")


def test_sts_a_2_printable_ascii_alphabet_is_exactly_the_field_alphabet() -> None:
    # Every printable ASCII character except '=' and ';' may appear in an extension value.
    allowed = "".join(ch for ch in string.printable if "\x21" <= ch <= "\x7e" and ch not in "=;")
    assert parse_record(f"v=STSv1; id=1; x={allowed}").extensions == (("x", allowed),)
