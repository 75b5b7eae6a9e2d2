"""mxsec.names: domain normalisation (STS-A-1, STS-A-16, STS-C-7, STS-E-4, EC-16, EC-18, EC-20)."""

from __future__ import annotations

import pytest

from mxsec.errors import ParseError
from mxsec.names import DomainError, is_ip_literal, normalize_dns_name, normalize_domain


def test_sts_e_4_lowercase_ascii_name_unchanged() -> None:
    assert normalize_domain("mail.example.com") == "mail.example.com"


def test_sts_e_4_upper_case_folded() -> None:
    assert normalize_domain("MAIL.Example.COM") == "mail.example.com"


def test_ec_16_trailing_root_dot_removed() -> None:
    assert normalize_domain("example.com.") == "example.com"
    assert normalize_domain("Example.COM.") == "example.com"


def test_ec_16_only_one_root_dot_removed() -> None:
    with pytest.raises(DomainError, match="empty label"):
        normalize_domain("example.com..")


def test_ec_18_ulabel_recipient_domain_becomes_alabel() -> None:
    assert normalize_domain("bücher.de") == "xn--bcher-kva.de"
    assert normalize_domain("Mäil.Example.") == "xn--mil-qla.example"


def test_ec_18_uts46_mapping_applied() -> None:
    # Ideographic full stop is a label separator under UTS-46; non-transitional keeps sharp s.
    assert normalize_domain("例え。テスト") == "xn--r8jz45g.xn--zckzah"
    assert normalize_domain("ß.de") == "xn--zca.de"


def test_ec_18_alabel_accepted_and_lowercased() -> None:
    assert normalize_domain("XN--BCHER-KVA.DE") == "xn--bcher-kva.de"


def test_ec_18_invalid_alabel_rejected() -> None:
    with pytest.raises(DomainError, match="not a valid A-label"):
        normalize_domain("xn--zz.example")
    with pytest.raises(DomainError, match="not a valid A-label"):
        normalize_domain("xn--a.example")  # decodes to U+0080, a control character


def test_ec_18_idna2003_era_alabel_still_accepted() -> None:
    # Emoji names are not valid IDNA 2008, but they exist in the DNS; A-labels are only checked for
    # well-formed Punycode.
    assert normalize_domain("XN--LS8H.la") == "xn--ls8h.la"


def test_ec_18_disallowed_unicode_rejected() -> None:
    with pytest.raises(DomainError):
        normalize_domain("\u2603.example")  # a symbol (snowman) is not allowed in IDNA 2008
    with pytest.raises(DomainError):
        normalize_domain("exa mple.com")


def test_sts_c_7_empty_names_rejected() -> None:
    for text in ("", ".", ".."):
        with pytest.raises(DomainError):
            normalize_domain(text)


def test_sts_c_7_empty_label_rejected() -> None:
    with pytest.raises(DomainError, match="empty label"):
        normalize_domain("a..example")
    with pytest.raises(DomainError, match="empty label"):
        normalize_domain(".example")


@pytest.mark.parametrize("text", ["1.2.3.4", "[1.2.3.4]", "::1", "2001:db8::1", "[IPv6:2001:db8::1]", "[2001:db8::1]"])
def test_sts_a_16_ip_literals_detected_and_rejected(text: str) -> None:
    assert is_ip_literal(text) is True
    with pytest.raises(DomainError, match="IP address"):
        normalize_domain(text)


@pytest.mark.parametrize("text", ["example.com", "1.2.3.4.5", "999.1.1.1", "", "[example.com]", "1.2.3"])
def test_sts_a_16_non_addresses_are_not_ip_literals(text: str) -> None:
    assert is_ip_literal(text) is False


def test_ec_20_numeric_last_label_rejected() -> None:
    with pytest.raises(DomainError, match="all-numeric"):
        normalize_domain("999.1.1.1")
    with pytest.raises(DomainError, match="all-numeric"):
        normalize_domain("1.2.3.4.5.")
    assert normalize_domain("123.example") == "123.example"


def test_ec_20_is_ip_literal_never_raises_on_odd_input() -> None:
    assert is_ip_literal(None) is False  # type: ignore[arg-type]
    assert is_ip_literal(b"1.2.3.4") is False  # type: ignore[arg-type]
    assert is_ip_literal("[") is False
    assert is_ip_literal("x" * 10_000) is False


def test_sts_c_7_label_length_limit_63() -> None:
    assert normalize_domain("a" * 63 + ".example") == "a" * 63 + ".example"
    with pytest.raises(DomainError, match="63"):
        normalize_domain("a" * 64 + ".example")


def test_sts_c_7_name_length_limit_253() -> None:
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 octets
    assert len(name) == 253
    assert normalize_domain(name) == name
    assert normalize_domain(name + ".") == name
    with pytest.raises(DomainError, match="253"):
        normalize_domain(name + "d")


def test_sts_c_7_ulabel_name_length_counted_after_conversion() -> None:
    long_ulabel = "ü" * 60  # its A-label is longer than 63 octets
    with pytest.raises(DomainError):
        normalize_domain(long_ulabel + ".example")


def test_sts_c_7_hyphen_rules() -> None:
    for text in ("-mail.example", "mail-.example", "mail.-example"):
        with pytest.raises(DomainError, match="hyphen"):
            normalize_domain(text)
    assert normalize_domain("mail-1.ex-ample.com") == "mail-1.ex-ample.com"
    # Reserved-LDH labels that are not xn-- stay valid host names (RFC 1123).
    assert normalize_domain("ab--cd.example") == "ab--cd.example"


def test_sts_a_1_underscore_not_allowed_in_recipient_domain() -> None:
    with pytest.raises(DomainError, match="not allowed"):
        normalize_domain("_mta-sts.example.com")
    with pytest.raises(DomainError, match="not allowed"):
        normalize_domain("mail_1.example.com")


def test_sts_a_1_dns_owner_name_allows_underscore() -> None:
    assert normalize_dns_name("_mta-sts.Example.COM.") == "_mta-sts.example.com"
    assert normalize_dns_name("_25._tcp.mx.example.net") == "_25._tcp.mx.example.net"
    assert normalize_dns_name("_mta-sts.bücher.de") == "_mta-sts.xn--bcher-kva.de"
    with pytest.raises(DomainError):
        normalize_dns_name("_mta sts.example.com")
    with pytest.raises(DomainError, match="IP address"):
        normalize_dns_name("10.0.0.1")


def test_sts_a_1_non_string_input_is_a_domain_error() -> None:
    with pytest.raises(DomainError):
        normalize_domain(None)  # type: ignore[arg-type]
    with pytest.raises(DomainError):
        normalize_domain(b"example.com")  # type: ignore[arg-type]


def test_sts_a_1_huge_input_rejected_cheaply() -> None:
    with pytest.raises(DomainError, match="too long"):
        normalize_domain("ä" * 100_000)


def test_sts_a_1_domain_error_is_a_parse_error() -> None:
    assert issubclass(DomainError, ParseError)
    with pytest.raises(ParseError):
        normalize_domain("bad name")
