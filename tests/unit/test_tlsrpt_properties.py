"""Property tests for mxsec.tlsrpt.record.

* Robustness: any text makes parse_record raise its own TlsrptRecordError (with a documented code) and
  nothing else; select_record and check_uri never raise.
* Round trip: format_record output always parses back to the same URIs and extensions, without warnings.
"""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxsec.tlsrpt.record import (
    ERROR_CODES,
    WARNING_CODES,
    TlsrptRecordError,
    check_uri,
    format_record,
    parse_record,
    select_record,
)

FAST = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LOWER_ALNUM = string.ascii_lowercase + string.digits
ALNUM = string.ascii_letters + string.digits
LABEL = (
    st.text(alphabet=LOWER_ALNUM + "-", min_size=1, max_size=15)
    .map(lambda s: s.strip("-"))
    .filter(lambda s: s and not s.startswith("xn--"))
)
TLD = st.builds(str.__add__, st.sampled_from(string.ascii_lowercase), st.text(alphabet=LOWER_ALNUM, max_size=6))
HOST = st.builds(lambda labels, tld: ".".join([*labels, tld]), st.lists(LABEL, min_size=1, max_size=3), TLD)
LOCAL = st.lists(st.text(alphabet=ALNUM + "+_-", min_size=1, max_size=10), min_size=1, max_size=3).map(".".join)
MAILTO = st.builds(lambda local, host: f"mailto:{local}@{host}", LOCAL, HOST)
PATH_CHARS = ALNUM + "-._~/"
PCT = st.sampled_from(["%2C", "%3B", "%21", "%20", "%2f"])
PATH = st.lists(st.one_of(st.text(alphabet=PATH_CHARS, min_size=1, max_size=8), PCT), max_size=4).map("".join)
PORT = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
HTTPS = st.builds(lambda host, port, path: f"https://{host}{port}/{path}", HOST, PORT, PATH)
URI = st.one_of(MAILTO, HTTPS)
EXT_NAME = st.builds(
    str.__add__, st.sampled_from(ALNUM), st.text(alphabet=ALNUM + "_.-", max_size=31)
).filter(lambda n: n not in ("v", "rua"))
EXT_VALUE = st.text(alphabet="".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "=;"), min_size=1, max_size=20)

PIECES = st.sampled_from(
    [
        "v=TLSRPTv1", "v=tlsrptv1", ";", " ", "\t", ",", "rua=", "RUA=", "mailto:", "https://", "http://",
        "a@b.example",
        "example.com", "@", "!", "%", "%2C", "=", "x", "é", "\n", "//", ":", "[::1]", "?", "ext=1",
    ]
)
NEAR_GRAMMAR = st.lists(PIECES, max_size=14).map("".join)


@FAST
@given(st.one_of(st.text(max_size=200), NEAR_GRAMMAR))
def test_rpt_i_5_parse_raises_only_its_own_error(text: str) -> None:
    try:
        record = parse_record(text)
    except TlsrptRecordError as exc:
        assert exc.code in ERROR_CODES
        assert "\n" not in str(exc)
        return
    assert record.rua, "a valid record has at least one URI"
    assert set(record.usable_rua) <= set(record.rua)
    assert set(record.warning_codes) <= WARNING_CODES


@FAST
@given(st.lists(st.one_of(st.text(max_size=60), NEAR_GRAMMAR), max_size=4))
def test_rpt_i_6_select_never_raises(strings: list[str]) -> None:
    selection = select_record(strings)
    assert (selection.record is None) != (selection.problem is None)


@FAST
@given(st.one_of(st.text(max_size=80), NEAR_GRAMMAR, URI))
def test_rpt_i_3_check_uri_never_raises(text: str) -> None:
    code, message, fatal = check_uri(text)
    assert code is None or code in WARNING_CODES
    assert (code is None) == (message == "")
    assert not (fatal and code is None)


@FAST
@given(
    st.lists(URI, min_size=1, max_size=5, unique_by=lambda u: u.lower()),
    st.lists(st.tuples(EXT_NAME, EXT_VALUE), max_size=3, unique_by=lambda e: e[0]),
)
def test_rpt_i_3_round_trip_with_the_generator(uris: list[str], extensions: list[tuple[str, str]]) -> None:
    text = format_record(uris, extensions)
    record = parse_record(text)
    assert record.rua == tuple(uris)
    assert record.usable_rua == tuple(uris)
    assert record.extensions == tuple(extensions)
    assert record.warnings == ()


@FAST
@given(
    st.lists(URI, min_size=1, max_size=4, unique_by=lambda u: u.lower()),
    st.sampled_from([",", " ,", ", ", "\t,\t"]),
)
def test_rpt_i_3_whitespace_around_commas_does_not_matter(uris: list[str], sep: str) -> None:
    record = parse_record("v=TLSRPTv1; rua=" + sep.join(uris))
    assert record.rua == tuple(uris)
