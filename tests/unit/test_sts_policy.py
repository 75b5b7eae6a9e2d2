"""mxsec.sts.policy: the policy file (RFC 8461 §3.2; STS-B-2/3, STS-C-*, EC-1..EC-7, EC-15..EC-21, EC-24)."""

from __future__ import annotations

import pytest

from mxsec.errors import ParseError
from mxsec.sts.policy import (
    MAX_AGE_LIMIT,
    MAX_POLICY_BYTES,
    PolicyError,
    StsPolicy,
    format_policy,
    media_type_ok,
    parse_policy,
)

BASIC = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 86400\n"


def test_sts_c_1_to_c_4_basic_policy() -> None:
    policy = parse_policy(BASIC)
    assert policy == StsPolicy(
        mode="enforce",
        max_age=86400,
        mx=("mail.example.com", "*.example.net"),
        lines=("version: STSv1", "mode: enforce", "mx: mail.example.com", "mx: *.example.net", "max_age: 86400"),
        extensions=(),
        warnings=(),
    )


def test_sts_c_1_bytes_and_text_give_the_same_policy() -> None:
    assert parse_policy(BASIC.encode()) == parse_policy(BASIC)


def test_sts_c_1_version_required() -> None:
    with pytest.raises(PolicyError, match="missing version"):
        parse_policy("mode: enforce\nmx: a.example\nmax_age: 1\n")


@pytest.mark.parametrize("value", ["STSv2", "stsv1", "STSv1x", "STSv1 x"])
def test_sts_c_1_version_value_exact(value: str) -> None:
    with pytest.raises(PolicyError, match="version must be STSv1"):
        parse_policy(f"version: {value}\nmode: none\nmax_age: 1\n")


def test_sts_c_2_mode_required() -> None:
    with pytest.raises(PolicyError, match="missing mode"):
        parse_policy("version: STSv1\nmx: a.example\nmax_age: 1\n")


@pytest.mark.parametrize("mode", ["enforce", "testing", "none"])
def test_sts_c_2_each_mode_accepted(mode: str) -> None:
    assert parse_policy(f"version: STSv1\nmode: {mode}\nmx: a.example\nmax_age: 1\n").mode == mode


@pytest.mark.parametrize("value", ["Enforce", "ENFORCE", "strict", "enforce now", "test"])
def test_sts_c_2_ec_17_mode_value_case_sensitive_and_closed(value: str) -> None:
    with pytest.raises(PolicyError, match="mode must be"):
        parse_policy(f"version: STSv1\nmode: {value}\nmx: a.example\nmax_age: 1\n")


def test_sts_c_3_max_age_required() -> None:
    with pytest.raises(PolicyError, match="missing max_age"):
        parse_policy("version: STSv1\nmode: none\n")


def test_sts_c_3_max_age_zero_and_limit() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0\n").max_age == 0
    policy = parse_policy(f"version: STSv1\nmode: none\nmax_age: {MAX_AGE_LIMIT}\n")
    assert policy.max_age == 31557600
    assert policy.warnings == ()


def test_sts_c_3_max_age_leading_zeros_allowed() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0000086400\n").max_age == 86400


def test_sts_c_3_ec_15_max_age_capped_with_warning() -> None:
    policy = parse_policy("version: STSv1\nmode: none\nmax_age: 9999999999\n")
    assert policy.max_age == MAX_AGE_LIMIT
    assert policy.warnings == ("max_age 9999999999 is above 31557600; capped to 31557600",)
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 31557601\n").max_age == 31557600


@pytest.mark.parametrize("value", ["12345678901", "-1", "+5", "1.5", "1e6", "86400s", "\u0661\u0662", "0x10"])
def test_sts_c_3_ec_15_bad_max_age_rejected(value: str) -> None:
    with pytest.raises(PolicyError, match="max_age must be 1 to 10 digits"):
        parse_policy(f"version: STSv1\nmode: none\nmax_age: {value}\n")


def test_sts_c_4_enforce_needs_mx() -> None:
    with pytest.raises(PolicyError, match="at least one valid mx"):
        parse_policy("version: STSv1\nmode: enforce\nmax_age: 1\n")
    with pytest.raises(PolicyError, match="at least one valid mx"):
        parse_policy("version: STSv1\nmode: testing\nmax_age: 1\n")


def test_sts_c_4_mode_none_needs_no_mx() -> None:
    policy = parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n")
    assert policy.mode == "none"
    assert policy.mx == ()


@pytest.mark.parametrize("value", ["a.example b.example", "a.example,b.example", "a.example, b.example", "a.example;b.example"])
def test_sts_c_5_one_pattern_per_line(value: str) -> None:
    with pytest.raises(PolicyError, match="one pattern per mx line"):
        parse_policy(f"version: STSv1\nmode: enforce\nmx: {value}\nmax_age: 1\n")


def test_sts_c_6_ec_18_ulabel_mx_rejected() -> None:
    with pytest.raises(PolicyError, match="not an A-label"):
        parse_policy("version: STSv1\nmode: enforce\nmx: mäil.example\nmax_age: 1\n")


def test_sts_c_6_ec_18_alabel_mx_accepted() -> None:
    policy = parse_policy("version: STSv1\nmode: enforce\nmx: xn--mil-qla.example\nmax_age: 1\n")
    assert policy.mx == ("xn--mil-qla.example",)


@pytest.mark.parametrize("value", ["*mail.example", "a.*.example", "*", "*.", "**.example", "*.*.example", "mail.*"])
def test_sts_c_7_wildcard_only_whole_leftmost_label(value: str) -> None:
    with pytest.raises(PolicyError, match="mx"):
        parse_policy(f"version: STSv1\nmode: enforce\nmx: {value}\nmax_age: 1\n")


@pytest.mark.parametrize("value", ["-mail.example", "mail_1.example", "a..example", "." , "a" * 64 + ".example", "mail.example.."])
def test_sts_c_7_bad_domain_rejected(value: str) -> None:
    with pytest.raises(PolicyError, match="mx"):
        parse_policy(f"version: STSv1\nmode: enforce\nmx: {value}\nmax_age: 1\n")


def test_sts_c_7_mx_stored_lower_case() -> None:
    policy = parse_policy("version: STSv1\nmode: enforce\nmx: *.MAIL.Example.COM\nmax_age: 1\n")
    assert policy.mx == ("*.mail.example.com",)
    assert policy.lines[2] == "mx: *.MAIL.Example.COM"  # the policy-string keeps the text as published


def test_sts_c_8_ec_1_lf_line_endings() -> None:
    assert parse_policy(BASIC).warnings == ()


def test_sts_c_8_ec_2_crlf_line_endings() -> None:
    policy = parse_policy(BASIC.replace("\n", "\r\n"))
    assert policy == parse_policy(BASIC)
    assert policy.warnings == ()


def test_sts_c_8_ec_2_mixed_line_endings() -> None:
    body = "version: STSv1\r\nmode: enforce\nmx: mail.example.com\r\nmx: *.example.net\nmax_age: 86400"
    assert parse_policy(body) == parse_policy(BASIC)


def test_sts_c_8_bare_cr_rejected() -> None:
    with pytest.raises(PolicyError, match="carriage return"):
        parse_policy("version: STSv1\rmode: none\nmax_age: 1\n")
    with pytest.raises(PolicyError, match="carriage return"):
        parse_policy("version: STSv1\nmode: none\nmax_age: 1\r")


def test_sts_c_9_no_final_terminator_needed() -> None:
    assert parse_policy(BASIC.rstrip("\n")) == parse_policy(BASIC)


def test_sts_c_9_whitespace_after_colon_optional() -> None:
    policy = parse_policy("version:STSv1\nmode:\t\t enforce\nmx:mail.example.com\nmax_age:  5\n")
    assert (policy.mode, policy.max_age, policy.mx) == ("enforce", 5, ("mail.example.com",))
    assert policy.lines == ("version: STSv1", "mode: enforce", "mx: mail.example.com", "max_age: 5")


def test_sts_c_9_ec_4_trailing_whitespace_stripped() -> None:
    policy = parse_policy("version: STSv1 \nmode: enforce\t \nmx: mail.example.com  \nmax_age: 86400\t\n")
    assert policy.mode == "enforce"
    assert policy.mx == ("mail.example.com",)
    assert policy.max_age == 86400
    assert policy.lines[1] == "mode: enforce"
    assert policy.warnings == ()


@pytest.mark.parametrize("line", [" mode: enforce", "\tmode: enforce"])
def test_sts_c_9_ec_5_leading_whitespace_rejected(line: str) -> None:
    with pytest.raises(PolicyError, match="whitespace before the key"):
        parse_policy(f"version: STSv1\n{line}\nmx: a.example\nmax_age: 1\n")


def test_sts_c_9_ec_5_whitespace_before_colon_rejected() -> None:
    with pytest.raises(PolicyError, match="whitespace before the ':'"):
        parse_policy("version: STSv1\nmode : enforce\nmx: a.example\nmax_age: 1\n")


def test_sts_c_9_line_without_colon_rejected() -> None:
    with pytest.raises(PolicyError, match="no ':'"):
        parse_policy("version: STSv1\nmode enforce\nmax_age: 1\n")


def test_sts_c_9_empty_value_rejected() -> None:
    with pytest.raises(PolicyError, match="has no value"):
        parse_policy("version: STSv1\nmode: none\nmax_age: 1\nnote:\n")


def test_sts_c_9_ec_6_empty_lines_ignored_with_warning() -> None:
    body = "version: STSv1\n\nmode: enforce\r\n\r\nmx: mail.example.com\n   \nmax_age: 86400\n\n"
    policy = parse_policy(body)
    assert policy.mx == ("mail.example.com",)
    assert policy.lines == ("version: STSv1", "mode: enforce", "mx: mail.example.com", "max_age: 86400")
    assert policy.warnings == (
        "line 2: empty line ignored",
        "line 4: empty line ignored",
        "line 6: empty line ignored",
        "line 8: empty line ignored",
    )


def test_sts_c_9_ec_6_one_trailing_terminator_gives_no_warning() -> None:
    assert parse_policy(BASIC).warnings == ()
    assert parse_policy(BASIC.replace("\n", "\r\n")).warnings == ()


def test_sts_c_10_ec_17_keys_case_sensitive() -> None:
    with pytest.raises(PolicyError, match="missing mode field \\(field names are case-sensitive\\)"):
        parse_policy("version: STSv1\nMode: enforce\nmx: a.example\nmax_age: 1\n")
    with pytest.raises(PolicyError, match="missing version"):
        parse_policy("VERSION: STSv1\nmode: none\nmax_age: 1\n")


def test_sts_c_11_unknown_keys_ignored() -> None:
    policy = parse_policy(BASIC + "future_key: some value \u00e9\u4e2d\nx.y-z: 1\n")
    assert policy.extensions == (("future_key", "some value \u00e9\u4e2d"), ("x.y-z", "1"))
    assert policy.mode == "enforce"
    assert policy.lines[-2:] == ("future_key: some value \u00e9\u4e2d", "x.y-z: 1")


@pytest.mark.parametrize("key", ["_x", "-x", ".x", "k" * 33, "a b", "k\u00e9"])
def test_sts_c_11_c_13_invalid_key_rejected(key: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(f"{BASIC}{key}: v\n")


def test_sts_c_12_duplicate_fields_first_wins_with_warning() -> None:
    body = (
        "version: STSv1\nmode: testing\nmx: a.example\nmax_age: 100\n"
        "mode: enforce\nmax_age: 5\nversion: STSv9\next: 1\next: 2\n"
    )
    policy = parse_policy(body)
    assert policy.mode == "testing"
    assert policy.max_age == 100
    assert policy.extensions == (("ext", "1"),)
    assert policy.lines == ("version: STSv1", "mode: testing", "mx: a.example", "max_age: 100", "ext: 1")
    assert policy.warnings == (
        "line 5: duplicate 'mode' field ignored (the first one is used)",
        "line 6: duplicate 'max_age' field ignored (the first one is used)",
        "line 7: duplicate 'version' field ignored (the first one is used)",
        "line 9: duplicate 'ext' field ignored (the first one is used)",
    )


def test_sts_c_12_every_mx_line_counts() -> None:
    body = "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nmx: b.example\nmx: c.example\n"
    policy = parse_policy(body)
    assert policy.mx == ("a.example", "b.example", "c.example")
    assert policy.lines == ("version: STSv1", "mode: enforce", "mx: a.example", "max_age: 1", "mx: b.example", "mx: c.example")


def test_sts_c_13_extension_value_may_hold_utf8_and_inner_spaces() -> None:
    policy = parse_policy("version: STSv1\nmode: none\nmax_age: 1\nnote: caf\u00e9 au lait\n")
    assert policy.extensions == (("note", "caf\u00e9 au lait"),)


@pytest.mark.parametrize("ctl", ["\x00", "\x01", "\x1b", "\x7f", "\t"])
def test_sts_c_13_control_characters_in_value_rejected(ctl: str) -> None:
    with pytest.raises(PolicyError, match="control character"):
        parse_policy(f"version: STSv1\nmode: none\nmax_age: 1\nnote: a{ctl}b\n")


def test_sts_c_14_body_must_be_utf8() -> None:
    with pytest.raises(PolicyError, match="not valid UTF-8"):
        parse_policy(b"version: STSv1\nmode: none\nmax_age: 1\nnote: caf\xe9\n")
    with pytest.raises(PolicyError, match="surrogate"):
        parse_policy("version: STSv1\nmode: none\nmax_age: 1\nnote: \ud800\n")


def test_sts_c_14_ec_3_leading_bom_stripped_with_warning() -> None:
    policy = parse_policy(b"\xef\xbb\xbf" + BASIC.encode())
    assert policy.mode == "enforce"
    assert policy.warnings == ("leading byte order mark (BOM) removed",)
    assert policy.lines[0] == "version: STSv1"


def test_sts_c_14_ec_3_only_one_bom_stripped() -> None:
    with pytest.raises(PolicyError, match="invalid key"):
        parse_policy("\ufeff\ufeff" + BASIC)


def test_sts_c_15_policy_error_reports_sts_policy_invalid() -> None:
    assert issubclass(PolicyError, ParseError)
    with pytest.raises(PolicyError) as info:
        parse_policy("garbage")
    assert info.value.result_type == "sts-policy-invalid"


def test_sts_c_15_empty_body_invalid() -> None:
    with pytest.raises(PolicyError, match="missing version"):
        parse_policy(b"")


def test_sts_c_15_size_capped() -> None:
    body = BASIC + "pad: " + "x" * MAX_POLICY_BYTES + "\n"
    with pytest.raises(PolicyError, match="larger than 65536"):
        parse_policy(body)
    with pytest.raises(PolicyError, match="larger than 65536"):
        parse_policy(body.encode())
    with pytest.raises(PolicyError, match="larger than 65536"):
        parse_policy(BASIC + "pad: " + "\u4e2d" * 30000 + "\n")  # under 64 Ki characters, over 64 KiB


def test_sts_c_15_wrong_input_type() -> None:
    with pytest.raises(PolicyError):
        parse_policy(None)  # type: ignore[arg-type]


def test_ec_16_trailing_dot_mx_stripped_with_warning() -> None:
    policy = parse_policy("version: STSv1\nmode: enforce\nmx: mail.example.com.\nmax_age: 1\n")
    assert policy.mx == ("mail.example.com",)
    assert policy.warnings == ("mx 'mail.example.com.': trailing dot removed",)


def test_ec_17_mx_case_insensitive() -> None:
    assert parse_policy("version: STSv1\nmode: enforce\nmx: MAIL.Example.COM\nmax_age: 1\n").mx == ("mail.example.com",)


@pytest.mark.parametrize("value", ["212.114.86.56", "[212.114.86.56]", "2001:db8::25", "[IPv6:2001:db8::25]", "10.0.0.1."])
def test_ec_20_ip_address_mx_ignored_with_warning(value: str) -> None:
    policy = parse_policy(f"version: STSv1\nmode: enforce\nmx: {value}\nmx: mail.example.com\nmax_age: 1\n")
    assert policy.mx == ("mail.example.com",)
    assert policy.lines == ("version: STSv1", "mode: enforce", "mx: mail.example.com", "max_age: 1")
    assert len(policy.warnings) == 1
    assert "IP address" in policy.warnings[0]


def test_ec_20_ec_21_only_ip_mx_leaves_enforce_invalid() -> None:
    with pytest.raises(PolicyError, match="at least one valid mx"):
        parse_policy("version: STSv1\nmode: enforce\nmx: 192.0.2.1\nmax_age: 1\n")


def test_ec_21_misspelled_mx_key_in_enforce_is_invalid() -> None:
    with pytest.raises(PolicyError, match="mode enforce needs at least one valid mx") as info:
        parse_policy("version: STSv1\nmode: enforce\nnmx: mx0.example\nmax_age: 86400\n")
    assert info.value.result_type == "sts-policy-invalid"


def test_ec_24_testing_with_malformed_mx_is_invalid() -> None:
    with pytest.raises(PolicyError, match="mx"):
        parse_policy("version: STSv1\nmode: testing\nmx: bad_host.example\nmx: good.example\nmax_age: 1\n")


def test_ec_24_none_with_malformed_mx_ignores_it() -> None:
    policy = parse_policy("version: STSv1\nmx: bad_host.example\nmode: none\nmx: good.example\nmax_age: 1\n")
    assert policy.mode == "none"
    assert policy.mx == ("good.example",)
    assert policy.lines == ("version: STSv1", "mode: none", "mx: good.example", "max_age: 1")
    assert len(policy.warnings) == 1
    assert policy.warnings[0].startswith("mx 'bad_host.example' ignored in mode none")


def test_sts_c_9_mx_decided_after_mode_whatever_the_order() -> None:
    policy = parse_policy("mx: a.example\nmax_age: 60\nmode: testing\nversion: STSv1\n")
    assert (policy.mode, policy.max_age, policy.mx) == ("testing", 60, ("a.example",))
    assert policy.lines == ("mx: a.example", "max_age: 60", "mode: testing", "version: STSv1")


def test_sts_c_9_to_text_reserialises_lines() -> None:
    policy = parse_policy("version:STSv1\nmode: enforce  \n\nmx: a.example\nmax_age: 9\n")
    assert policy.to_text() == "version: STSv1\r\nmode: enforce\r\nmx: a.example\r\nmax_age: 9\r\n"
    assert policy.to_text("\n") == "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9\n"
    reparsed = parse_policy(policy.to_text())
    assert (reparsed.mode, reparsed.mx, reparsed.max_age, reparsed.lines) == (policy.mode, policy.mx, policy.max_age, policy.lines)


# --- media type -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "text/plain",
        "TEXT/Plain",
        "text/plain; charset=utf-8",
        "text/plain;charset=UTF-8",
        'text/plain; charset="us-ascii"',
        "text/plain; format=flowed",
        "text/plain; format=flowed; charset=utf-8",
        " text/plain ",
    ],
)
def test_sts_b_2_b_3_ec_7_text_plain_accepted(value: str) -> None:
    assert media_type_ok(value) is True


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "text/plainx",
        "text/plain-x",
        "text/html",
        "text/html; charset=utf-8",
        "application/octet-stream",
        "text",
        "plain",
        "text/plain; charset=iso-8859-1",
        "text/plain; charset=utf-16",
        "text/plain; charset=",
        "xtext/plain",
    ],
)
def test_sts_b_2_b_3_ec_7_other_media_types_rejected(value: str | None) -> None:
    assert media_type_ok(value) is False


# --- generator -------------------------------------------------------------------------------------


def test_sts_c_8_format_policy_uses_crlf() -> None:
    text = format_policy("enforce", ["mail.example.com", "*.example.net"], 86400)
    assert text == (
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n"
    )


def test_sts_c_5_format_policy_round_trips() -> None:
    text = format_policy("testing", ["A.Example.", "*.b.example"], 604800)
    policy = parse_policy(text)
    assert (policy.mode, policy.mx, policy.max_age, policy.warnings) == (
        "testing",
        ("a.example", "*.b.example"),
        604800,
        (),
    )


def test_sts_c_4_format_policy_mode_none_without_mx() -> None:
    assert format_policy("none", [], 86400) == "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n"


def test_sts_c_4_format_policy_single_string_mx() -> None:
    assert parse_policy(format_policy("enforce", "mx.example", 1)).mx == ("mx.example",)


@pytest.mark.parametrize(
    ("mode", "mx", "max_age", "message"),
    [
        ("Enforce", ["a.example"], 1, "mode"),
        ("enforce", [], 1, "at least one"),
        ("enforce", ["a.example"], -1, "max_age"),
        ("enforce", ["a.example"], MAX_AGE_LIMIT + 1, "max_age"),
        ("enforce", ["a.example"], True, "max_age"),
        ("enforce", ["a.example"], "86400", "max_age"),
        ("enforce", ["192.0.2.1"], 1, "IP address"),
        ("enforce", ["mäil.example"], 1, "A-label"),
        ("enforce", ["a.*.example"], 1, "left-most"),
        ("enforce", ["a b"], 1, "one pattern"),
    ],
)
def test_sts_c_2_c_3_c_7_format_policy_rejects_bad_input(mode: str, mx: list[str], max_age: int, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        format_policy(mode, mx, max_age)
