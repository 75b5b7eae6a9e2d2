"""mxsec.tlsrpt.record: the _smtp._tls TXT record (RFC 8460 §3; RPT-I-1..I-8, RPT-I-11, EC-39)."""

from __future__ import annotations

import pytest

from mxsec.errors import ParseError
from mxsec.names import DomainError
from mxsec.tlsrpt.record import (
    ERROR_CODES,
    MAX_RECORD_CHARS,
    WARNING_CODES,
    TlsrptRecord,
    TlsrptRecordError,
    TlsrptWarning,
    check_uri,
    format_record,
    looks_like_tlsrpt,
    parse_record,
    select_record,
    tlsrpt_owner,
)

MAILTO = "mailto:tlsrpt@example.com"
HTTPS = "https://reports.example.net/v1/tlsrpt"


def _code(text: str) -> str:
    with pytest.raises(TlsrptRecordError) as info:
        parse_record(text)
    assert info.value.code in ERROR_CODES
    return info.value.code


# --- RPT-I-1 / EC-39: where the record lives ---------------------------------------------------------------


def test_rpt_i_1_owner_name_is_smtp_tls() -> None:
    assert tlsrpt_owner("example.com") == "_smtp._tls.example.com"


def test_ec_39_owner_is_never_smtp_tcp() -> None:
    owner = tlsrpt_owner("Example.COM.")
    assert owner == "_smtp._tls.example.com"
    assert "_tcp" not in owner


def test_rpt_i_1_owner_uses_a_labels() -> None:
    assert tlsrpt_owner("bücher.example") == "_smtp._tls.xn--bcher-kva.example"


def test_rpt_i_1_owner_rejects_bad_domains() -> None:
    for bad in ("", "192.0.2.1", "a..b", "exa mple.com"):
        with pytest.raises(DomainError):
            tlsrpt_owner(bad)


# --- RPT-I-2: version first and exact ------------------------------------------------------------------------


def test_rpt_i_2_minimal_record() -> None:
    record = parse_record(f"v=TLSRPTv1; rua={MAILTO}")
    assert record == TlsrptRecord(rua=(MAILTO,), usable_rua=(MAILTO,), extensions=(), warnings=())
    assert record.version == "TLSRPTv1"


def test_rpt_i_2_rfc_examples_without_spaces() -> None:
    # RFC 8460 appendix A writes the records without a space after ";".
    assert parse_record("v=TLSRPTv1;rua=mailto:reports@example.com").rua == ("mailto:reports@example.com",)
    assert parse_record("v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt").usable_rua == (
        "https://reporting.example.com/v1/tlsrpt",
    )


@pytest.mark.parametrize(
    "text",
    [f"{v}; rua={MAILTO}" for v in ("v=tlsrptv1", "v=TLSRPTV1", "v=TLSRPTv2", "V=TLSRPTv1", "v = TLSRPTv1")],
)
def test_rpt_i_2_version_is_exact_and_case_sensitive(text: str) -> None:
    assert _code(text) == "version-invalid"


def test_rpt_i_2_longer_version_is_not_v1() -> None:
    assert _code(f"v=TLSRPTv10; rua={MAILTO}") == "version-invalid"


def test_rpt_i_2_version_must_come_first() -> None:
    assert _code(f"rua={MAILTO}; v=TLSRPTv1") == "version-not-first"
    assert _code(f" v=TLSRPTv1; rua={MAILTO}") == "version-not-first"


def test_rpt_i_2_other_records_are_not_tlsrpt() -> None:
    assert _code("v=spf1 -all") == "version-missing"
    assert _code(f"rua={MAILTO}") == "version-missing"
    assert _code("") == "version-missing"


def test_rpt_i_2_version_followed_by_delimiter() -> None:
    assert _code(f"v=TLSRPTv1 rua={MAILTO}") == "missing-delimiter"
    assert _code("v=TLSRPTv1") == "rua-missing"
    assert _code("v=TLSRPTv1;") == "rua-missing"


# --- RPT-I-3: rua ---------------------------------------------------------------------------------------------


def test_rpt_i_3_rua_is_required() -> None:
    assert _code("v=TLSRPTv1; ext=1") == "rua-missing"


def test_rpt_i_3_rua_name_is_case_sensitive() -> None:
    with pytest.raises(TlsrptRecordError, match="case-sensitive") as info:
        parse_record(f"v=TLSRPTv1; RUA={MAILTO}")
    assert info.value.code == "rua-missing"


def test_rpt_i_3_empty_rua() -> None:
    assert _code("v=TLSRPTv1; rua=") == "rua-empty"
    assert _code("v=TLSRPTv1; rua= ;") == "rua-empty"


def test_rpt_i_3_comma_separated_list_with_optional_whitespace() -> None:
    record = parse_record(f"v=TLSRPTv1; rua={MAILTO} ,\t{HTTPS} , mailto:b@example.org")
    assert record.rua == (MAILTO, HTTPS, "mailto:b@example.org")
    assert record.usable_rua == record.rua
    assert record.warnings == ()


def test_rpt_i_3_missing_mailto_is_a_named_error() -> None:
    with pytest.raises(TlsrptRecordError, match="mailto:postmaster@example.com") as info:
        parse_record("v=TLSRPTv1; rua=postmaster@example.com")
    assert info.value.code == "rua-missing-mailto"


def test_rpt_i_3_missing_mailto_next_to_a_good_uri_is_flagged_and_dropped() -> None:
    record = parse_record(f"v=TLSRPTv1; rua={MAILTO},postmaster@example.com")
    assert record.rua == (MAILTO,)
    assert record.warning_codes == ("rua-missing-mailto",)
    assert record.warnings[0].breaks_grammar


def test_rpt_i_3_scheme_is_case_insensitive() -> None:
    record = parse_record("v=TLSRPTv1; rua=MAILTO:a@example.com,HTTPS://r.example.net/")
    assert record.usable_rua == ("MAILTO:a@example.com", "HTTPS://r.example.net/")


def test_rpt_i_3_uris_separated_by_semicolon() -> None:
    assert _code(f"v=TLSRPTv1; rua={MAILTO};mailto:b@example.org") == "rua-separator"
    assert _code(f"v=TLSRPTv1; rua={MAILTO}; {HTTPS}?a=b") == "rua-separator"
    assert _code(f"v=TLSRPTv1; rua={MAILTO}; b@example.org") == "rua-separator"


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("mailto:", "rua-bad-mailto"),
        ("mailto://a@example.com", "rua-bad-mailto"),
        ("mailto:a@b@example.com", "rua-bad-mailto"),
        ("mailto:example.com", "rua-bad-mailto"),
        ("mailto:@example.com", "rua-bad-mailto"),
        ("mailto:a@192.0.2.1", "rua-bad-mailto"),
        ("mailto:a..b@example.com", "rua-bad-mailto"),
        ("mailto:a@exa_mple.com", "rua-bad-mailto"),
        ("https:/r.example.net/x", "rua-bad-https"),
        ("https://", "rua-bad-https"),
        ("https://r.example.net:99999/", "rua-bad-https"),
        ("https://exa_mple.com/", "rua-bad-https"),
        ("http://r.example.net/", "rua-unsupported-scheme"),
        ("ftp://r.example.net/", "rua-unsupported-scheme"),
    ],
)
def test_rpt_i_3_valid_uris_that_cannot_be_used_are_kept_but_flagged(uri: str, code: str) -> None:
    record = parse_record(f"v=TLSRPTv1; rua={MAILTO},{uri}")
    assert record.rua == (MAILTO, uri)
    assert record.usable_rua == (MAILTO,)
    assert record.warning_codes == (code,)
    assert not record.warnings[0].breaks_grammar


def test_rpt_i_3_mailto_sanity_accepts_real_addresses() -> None:
    for uri in (
        "mailto:tls-reports+example@example.com",
        "mailto:a.b@xn--bcher-kva.example",
        "mailto:a%2Bb@example.com",
        "mailto:reports@example.com?subject=tlsrpt",
    ):
        assert check_uri(uri) == (None, "", False), uri


def test_rpt_i_3_https_accepts_ports_paths_and_addresses() -> None:
    for uri in ("https://r.example.net:8443/a/b?x=1", "https://192.0.2.7/tlsrpt", "https://[2001:db8::1]/r"):
        assert check_uri(uri) == (None, "", False), uri


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        ("", "rua-empty-uri"),
        ("postmaster@example.com", "rua-missing-mailto"),
        ("mailto:a b@example.com", "rua-invalid-uri"),
        ("mailto:a@example.com%2", "rua-invalid-uri"),
        ("mailto:a@exämple.com", "rua-invalid-uri"),
        ("example.com", "rua-invalid-uri"),
        ("mailto:a@example.com!10m", "rua-unencoded-char"),
    ],
)
def test_rpt_i_3_entries_that_are_not_uris_break_the_grammar(entry: str, code: str) -> None:
    got, message, fatal = check_uri(entry)
    assert (got, fatal) == (code, True)
    assert message


def test_rpt_i_3_record_without_any_valid_uri_is_invalid() -> None:
    assert _code("v=TLSRPTv1; rua=,") == "rua-empty-uri"
    assert _code("v=TLSRPTv1; rua=example.com") == "rua-invalid-uri"


def test_rpt_i_3_empty_list_entries_are_dropped_with_a_warning() -> None:
    record = parse_record(f"v=TLSRPTv1; rua={MAILTO},,{HTTPS},")
    assert record.rua == (MAILTO, HTTPS)
    assert record.warning_codes == ("rua-empty-uri", "rua-empty-uri")
    assert all(w.breaks_grammar for w in record.warnings)


def test_rpt_i_3_duplicate_uris_kept_once() -> None:
    record = parse_record(f"v=TLSRPTv1; rua={MAILTO},{MAILTO.upper()[:6].upper()}{MAILTO[6:]}")
    assert record.rua == (MAILTO,)
    assert record.warning_codes == ("rua-duplicate-uri",)


# --- RPT-I-4: percent-encoding inside URIs -------------------------------------------------------------------


def test_rpt_i_4_unencoded_exclamation_mark_is_flagged() -> None:
    with pytest.raises(TlsrptRecordError, match="%21") as info:
        parse_record("v=TLSRPTv1; rua=mailto:tlsrpt@example.com!10m")
    assert info.value.code == "rua-unencoded-char"


def test_rpt_i_4_encoded_characters_are_fine() -> None:
    uri = "https://r.example.net/a%2Cb%3Bc%21d"
    assert parse_record(f"v=TLSRPTv1; rua={uri}").usable_rua == (uri,)


def test_rpt_i_4_comma_splits_and_semicolon_ends_the_field() -> None:
    record = parse_record("v=TLSRPTv1; rua=https://r.example.net/a,b; c=d")
    # ',' split the URI in two: "b" is not a URI and is dropped; "c=d" is an extension.
    assert record.rua == ("https://r.example.net/a",)
    assert record.warning_codes == ("rua-invalid-uri",)
    assert record.extensions == (("c", "d"),)


# --- RPT-I-5: delimiters and extension syntax ---------------------------------------------------------------


def test_rpt_i_5_trailing_delimiter_allowed() -> None:
    for text in (f"v=TLSRPTv1; rua={MAILTO};", f"v=TLSRPTv1; rua={MAILTO} ;", f"v=TLSRPTv1 ;rua={MAILTO}; "):
        assert parse_record(text).rua == (MAILTO,), text


def test_rpt_i_5_whitespace_only_next_to_delimiters() -> None:
    assert _code(f"v=TLSRPTv1; rua={MAILTO} ") == "trailing-whitespace"
    assert _code(f"v=TLSRPTv1; rua={MAILTO}\t") == "trailing-whitespace"


def test_rpt_i_5_empty_field() -> None:
    assert _code(f"v=TLSRPTv1;; rua={MAILTO}") == "empty-field"


def test_rpt_i_5_field_syntax() -> None:
    assert _code(f"v=TLSRPTv1; rua={MAILTO}; junk") == "bad-field"
    assert _code(f"v=TLSRPTv1; rua={MAILTO}; _x=1") == "bad-field-name"
    assert _code(f"v=TLSRPTv1; rua={MAILTO}; {'a' * 33}=1") == "bad-field-name"
    assert _code(f"v=TLSRPTv1; rua={MAILTO}; x=") == "bad-field-value"
    assert _code(f"v=TLSRPTv1; rua={MAILTO}; x=a=b") == "bad-field-value"
    assert _code(f"v=TLSRPTv1; rua={MAILTO}; x=a b") == "bad-field-value"


def test_rpt_i_5_only_printable_ascii() -> None:
    assert _code(f"v=TLSRPTv1; rua={MAILTO}\n") == "invalid-character"
    assert _code("v=TLSRPTv1; rua=mailto:a@exämple.com") == "invalid-character"
    assert _code(f"v=TLSRPTv1; rua={MAILTO}\x00") == "invalid-character"


def test_rpt_i_5_duplicate_fields_first_wins() -> None:
    record = parse_record(f"v=TLSRPTv1; rua={MAILTO}; rua={HTTPS}; x=1; x=2; v=TLSRPTv1")
    assert record.rua == (MAILTO,)
    assert record.extensions == (("x", "1"),)
    assert record.warning_codes == ("duplicate-field",) * 3


def test_rpt_i_5_input_limits() -> None:
    assert _code("v=TLSRPTv1; rua=" + "a" * MAX_RECORD_CHARS) == "too-long"
    with pytest.raises(TlsrptRecordError) as info:
        parse_record(b"v=TLSRPTv1; rua=mailto:a@example.com")  # type: ignore[arg-type]
    assert info.value.code == "not-text"


# --- RPT-I-6: several TXT records ----------------------------------------------------------------------------


def test_rpt_i_6_unrelated_records_discarded() -> None:
    selection = select_record(["v=spf1 -all", f"v=TLSRPTv1; rua={MAILTO}", "google-site-verification=x"])
    assert selection.problem is None
    assert selection.record is not None and selection.record.rua == (MAILTO,)
    assert selection.discarded == 2


def test_rpt_i_6_two_tlsrpt_records_mean_none() -> None:
    selection = select_record([f"v=TLSRPTv1; rua={MAILTO}", f"v=TLSRPTv1; rua={HTTPS}"])
    assert (selection.record, selection.problem) == (None, "several-records")


def test_rpt_i_6_no_record() -> None:
    assert select_record([]).problem == "no-record"
    assert select_record(["v=spf1 -all"]).problem == "no-record"
    assert select_record(["v=spf1 -all"]).error is None


def test_rpt_i_6_one_invalid_record() -> None:
    selection = select_record([f"v=TLSRPTv1; RUA={MAILTO}"])
    assert selection.record is None
    assert selection.problem is not None and selection.problem.startswith("invalid: ")
    assert selection.error is not None and selection.error.code == "rua-missing"


def test_rpt_i_6_near_miss_is_explained() -> None:
    selection = select_record([f"v=tlsrptv1; rua={MAILTO}"])
    assert selection.problem == "no-record"
    assert selection.error is not None and selection.error.code == "version-invalid"


def test_rpt_i_6_filter_reads_the_grammar_like_sts() -> None:
    assert looks_like_tlsrpt(f"v=TLSRPTv1; rua={MAILTO}")
    assert looks_like_tlsrpt(f"v=TLSRPTv1 ;rua={MAILTO}")
    assert looks_like_tlsrpt("v=TLSRPTv1")
    assert not looks_like_tlsrpt(f"v=TLSRPTv10;rua={MAILTO}")
    assert not looks_like_tlsrpt(f" v=TLSRPTv1;rua={MAILTO}")
    assert select_record([f"v=TLSRPTv1 ;rua={MAILTO}"]).record is not None


def test_rpt_i_6_select_never_raises_on_odd_input() -> None:
    assert select_record([None, 5, b"x"]).problem == "no-record"  # type: ignore[list-item]
    assert select_record(None).problem == "no-record"  # type: ignore[arg-type]
    assert select_record("v=TLSRPTv1; rua=mailto:a@example.com").problem == "no-record"


# --- RPT-I-7: multi-string TXT records ------------------------------------------------------------------------


def test_rpt_i_7_strings_joined_without_spaces_parse() -> None:
    strings = ["v=TLSRPTv1; rua=mailto:tls", "rpt@example.com,https://r.exa", "mple.net/x"]
    record = parse_record("".join(strings))
    assert record.rua == ("mailto:tlsrpt@example.com", "https://r.example.net/x")


# --- RPT-I-8 / RPT-I-11 ----------------------------------------------------------------------------------------


def test_rpt_i_8_unknown_fields_accepted_and_kept() -> None:
    record = parse_record(f"v=TLSRPTv1; future=yes; rua={MAILTO}; x.y-z_1=a:b/c")
    assert record.rua == (MAILTO,)
    assert record.extensions == (("future", "yes"), ("x.y-z_1", "a:b/c"))
    assert record.warnings == ()


def test_rpt_i_11_no_usable_uri_is_a_warning_not_an_error() -> None:
    record = parse_record("v=TLSRPTv1; rua=http://r.example.net/,ftp://r.example.net/")
    assert record.rua == ("http://r.example.net/", "ftp://r.example.net/")
    assert record.usable_rua == ()
    assert record.warning_codes == ("rua-unsupported-scheme", "rua-unsupported-scheme", "rua-none-usable")
    assert "https" in record.warnings[0].message


# --- errors and warnings ---------------------------------------------------------------------------------------


def test_errors_are_parse_errors_without_result_type() -> None:
    with pytest.raises(ParseError) as info:
        parse_record("nope")
    assert isinstance(info.value, TlsrptRecordError)
    assert info.value.result_type is None
    assert "\n" not in str(info.value)


def test_warning_codes_are_documented() -> None:
    record = parse_record(f"v=TLSRPTv1; rua={MAILTO},x@example.com,,http://a.example/,mailto:; rua=x")
    assert set(record.warning_codes) <= WARNING_CODES
    assert str(record.warnings[0]) == record.warnings[0].message
    assert isinstance(record.warnings[0], TlsrptWarning)


# --- format_record (the generator) -----------------------------------------------------------------------------


def test_rpt_i_3_format_record() -> None:
    assert format_record([MAILTO]) == f"v=TLSRPTv1; rua={MAILTO}"
    assert format_record([MAILTO, HTTPS], [("x", "1")]) == f"v=TLSRPTv1; rua={MAILTO},{HTTPS}; x=1"
    assert format_record(MAILTO) == f"v=TLSRPTv1; rua={MAILTO}"


@pytest.mark.parametrize(
    ("rua", "code"),
    [
        ([], "rua-missing"),
        (["postmaster@example.com"], "rua-missing-mailto"),
        (["http://r.example.net/"], "rua-unsupported-scheme"),
        (["mailto:nobody"], "rua-bad-mailto"),
        (["https:///x"], "rua-bad-https"),
        (["mailto:a@example.com,mailto:b@example.com"], "rua-unencoded-char"),
        (["https://r.example.net/a;b"], "rua-unencoded-char"),
        (["mailto:a@example.com!5m"], "rua-unencoded-char"),
        ([MAILTO, MAILTO], "rua-duplicate-uri"),
        ([""], "rua-empty-uri"),
        ([5], "rua-invalid-uri"),
    ],
)
def test_rpt_i_3_format_record_refuses_what_the_parser_would_flag(rua: list, code: str) -> None:
    with pytest.raises(TlsrptRecordError) as info:
        format_record(rua)
    assert info.value.code == code
    assert code in ERROR_CODES


def test_rpt_i_5_format_record_checks_extensions() -> None:
    for ext, code in (
        ([("rua", "x")], "duplicate-field"),
        ([("v", "x")], "duplicate-field"),
        ([("a", "1"), ("a", "2")], "duplicate-field"),
        ([("_a", "1")], "bad-field-name"),
        ([("a", "b c")], "bad-field-value"),
        ([("a", "")], "bad-field-value"),
    ):
        with pytest.raises(TlsrptRecordError) as info:
            format_record([MAILTO], ext)
        assert info.value.code == code, ext
