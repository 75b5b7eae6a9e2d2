"""Property tests for mxsec.generate: whatever the input, a generator either raises a ParseError subclass (one
line) or returns output that mxsec's parsers accept with the same values and no warnings."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mxsec.errors import ParseError
from mxsec.generate import (
    GenerateError,
    load_certificates,
    nginx_config,
    sts_policy,
    sts_txt,
    tlsrpt,
    txt_rdata,
)
from mxsec.sts.policy import MAX_AGE_LIMIT, parse_policy
from mxsec.sts.record import parse_record as parse_sts_record
from mxsec.tlsrpt.record import parse_record as parse_tlsrpt_record

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LOWER_ALNUM = string.ascii_lowercase + string.digits
LABEL = (
    st.text(alphabet=LOWER_ALNUM + "-", min_size=1, max_size=12)
    .map(lambda s: s.strip("-"))
    .filter(lambda s: s and not s.startswith("xn--"))
)
TLD = st.builds(str.__add__, st.sampled_from(string.ascii_lowercase), st.text(alphabet=LOWER_ALNUM, max_size=5))
HOST = st.builds(lambda labels, tld: ".".join([*labels, tld]), st.lists(LABEL, min_size=1, max_size=3), TLD)
PATTERN = st.one_of(HOST, HOST.map(lambda h: "*." + h), HOST.map(str.upper), HOST.map(lambda h: h + "."))
MX_JUNK = st.one_of(
    PATTERN,
    st.text(max_size=30),
    st.lists(st.sampled_from(["*", ".", "a", "-", "1", "é", " ", ",", "[", "]", ":", "xn--"]), max_size=10).map(
        "".join
    ),
)


@FAST
@given(
    st.sampled_from(["enforce", "testing", "none"]),
    st.lists(PATTERN, max_size=5),
    st.integers(0, MAX_AGE_LIMIT),
    st.sampled_from(["\r\n", "\n"]),
)
def test_sts_c_8_generated_policies_parse_back(mode: str, mx: list[str], max_age: int, newline: str) -> None:
    assume(mode == "none" or mx)
    result = sts_policy(mode, mx, max_age, newline=newline)
    policy = parse_policy(result.text.encode("utf-8"))
    assert (policy.mode, policy.max_age, policy.warnings) == (mode, max_age, ())
    assert policy.mx == tuple(dict.fromkeys(p.lower().rstrip(".") for p in mx))
    assert result.text.endswith(newline) and result.text.count(newline) == len(policy.lines)


@FAST
@given(st.one_of(st.text(max_size=12), st.sampled_from(["enforce", "testing", "none"])),
       st.lists(MX_JUNK, max_size=4), st.one_of(st.integers(-5, MAX_AGE_LIMIT + 5), st.text(max_size=12)))
def test_sts_c_7_policy_generator_raises_only_parse_errors(mode, mx, max_age) -> None:
    try:
        result = sts_policy(mode, mx, max_age)
    except ParseError as exc:
        assert "\n" not in str(exc)
        return
    assert parse_policy(result.text).warnings == ()


@FAST
@given(st.one_of(st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=32), st.text(max_size=40)))
def test_sts_a_5_txt_generator_output_always_parses(policy_id: str) -> None:
    try:
        record = sts_txt(policy_id)
    except GenerateError as exc:
        assert exc.code == "bad-id"
        return
    assert parse_sts_record(record).id == policy_id


@FAST
@given(st.floats(min_value=0, max_value=253402300799, allow_nan=False))
def test_sts_a_5_default_ids_always_parse(now: float) -> None:
    record = sts_txt(now=now)
    assert len(parse_sts_record(record).id) == 16


MAILTO = st.builds(lambda local, host: f"mailto:{local}@{host}", st.text(alphabet=LOWER_ALNUM + "._+-", min_size=1,
                                                                        max_size=10), HOST)
HTTPS = st.builds(lambda host, path: f"https://{host}/{path}", HOST, st.text(alphabet=LOWER_ALNUM + "/-_.~",
                                                                             max_size=40))
RUA_JUNK = st.one_of(MAILTO, HTTPS, st.text(max_size=40), HOST.map(lambda h: "postmaster@" + h))


@FAST
@given(st.lists(RUA_JUNK, max_size=6), st.one_of(st.none(), HOST))
def test_rpt_i_3_tlsrpt_generator_output_always_parses(rua: list[str], name: str | None) -> None:
    try:
        result = tlsrpt(rua, name=name)
    except ParseError as exc:
        assert "\n" not in str(exc)
        return
    text = result.text
    if name is not None:
        assert text.startswith(f"_smtp._tls.{name}. IN TXT ")
        text = "".join(part for i, part in enumerate(text.split('"')) if i % 2)  # join the character-strings
    record = parse_tlsrpt_record(text)
    assert record.warnings == () and record.usable_rua == record.rua


@FAST
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=1200))
def test_rpt_i_7_txt_rdata_round_trip(text: str) -> None:
    rdata = txt_rdata(text)
    strings = []
    i = 0
    while i < len(rdata):  # a minimal zone-file character-string reader
        assert rdata[i] == '"'
        i += 1
        current = []
        while rdata[i] != '"':
            if rdata[i] == "\\":
                i += 1
            current.append(rdata[i])
            i += 1
        strings.append("".join(current))
        i += 2  # closing quote and the separating space
    assert all(len(s.encode("utf-8", "surrogateescape")) <= 255 for s in strings)
    joined = b"".join(s.encode("utf-8", "surrogateescape") for s in strings)
    assert joined == text.encode("utf-8")


@FAST
@given(st.binary(max_size=300))
def test_tlsa_certificate_loader_raises_only_its_error(data: bytes) -> None:
    try:
        load_certificates(data)
    except GenerateError:
        return


@FAST
@given(st.one_of(st.text(max_size=40), st.builds(lambda p: "/" + p, st.text(max_size=40))))
def test_sts_b_1_policy_host_paths_are_safe_or_refused(path: str) -> None:
    try:
        conf = nginx_config("example.com", path)
    except GenerateError as exc:
        assert exc.code == "bad-path"
        return
    assert f"alias {path};" in conf
    assert not any(ch in path for ch in " ;{}\"'\\$#`\n")
