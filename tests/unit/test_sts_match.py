"""mxsec.sts.match: MX host names against policy patterns (RFC 8461 §4.1; STS-E-2..E-4, EC-16, EC-17, EC-20, EC-22)."""

from __future__ import annotations

import pytest

from mxsec.sts.match import matching_pattern, mx_matches


def test_sts_e_2_exact_name_matches() -> None:
    assert mx_matches("mail.example.com", "mail.example.com") is True
    assert mx_matches("mail.example.com", "mail2.example.com") is False
    assert mx_matches("mail.example.com", "example.com") is False
    assert mx_matches("example.com", "mail.example.com") is False


def test_sts_e_2_name_not_suffix_matched() -> None:
    assert mx_matches("example.com", "badexample.com") is False
    assert mx_matches("*.example.com", "mail.badexample.com") is False


def test_sts_e_3_ec_22_wildcard_matches_exactly_one_label() -> None:
    assert mx_matches("*.example.com", "mail.example.com") is True
    assert mx_matches("*.example.com", "a.b.example.com") is False
    assert mx_matches("*.example.com", "example.com") is False
    assert mx_matches("*.example.com", ".example.com") is False


@pytest.mark.parametrize("pattern", ["*mail.example.com", "mail*.example.com", "a.*.example.com", "*", "*.", "**.example.com", "*.*.example.com"])
def test_sts_e_3_wildcard_elsewhere_never_matches(pattern: str) -> None:
    for host in ("mail.example.com", "x.mail.example.com", "a.b.example.com", "*.example.com"):
        assert mx_matches(pattern, host) is False


def test_sts_e_3_literal_star_host_does_not_match() -> None:
    assert mx_matches("*.example.com", "*.example.com") is False


def test_sts_e_4_ec_17_case_insensitive() -> None:
    assert mx_matches("MAIL.Example.COM", "mail.example.com") is True
    assert mx_matches("mail.example.com", "Mail.EXAMPLE.com") is True
    assert mx_matches("*.EXAMPLE.com", "MX1.example.COM") is True


def test_sts_e_4_ec_16_trailing_root_dot_of_host_removed() -> None:
    assert mx_matches("mail.example.com", "mail.example.com.") is True
    assert mx_matches("*.example.com", "Mail.example.com.") is True
    assert mx_matches("mail.example.com", "mail.example.com..") is False


def test_sts_e_4_ec_16_trailing_dot_on_pattern_tolerated() -> None:
    assert mx_matches("mail.example.com.", "mail.example.com") is True


def test_sts_e_4_ec_18_ulabel_host_converted() -> None:
    assert mx_matches("xn--mil-qla.example", "mäil.example") is True
    assert mx_matches("*.xn--bcher-kva.de", "mx.Bücher.de.") is True


def test_sts_e_4_ec_18_ulabel_pattern_never_matches() -> None:
    assert mx_matches("mäil.example", "mäil.example") is False
    assert mx_matches("mäil.example", "xn--mil-qla.example") is False


def test_ec_20_ip_addresses_never_match() -> None:
    assert mx_matches("192.0.2.1", "192.0.2.1") is False
    assert mx_matches("*.2.1", "192.0.2.1") is False
    assert mx_matches("mail.example.com", "[192.0.2.1]") is False


@pytest.mark.parametrize(
    ("pattern", "host"),
    [
        (None, "mail.example.com"),
        ("mail.example.com", None),
        (b"mail.example.com", "mail.example.com"),
        ("", ""),
        ("mail.example.com", ""),
        ("\x00", "\x00"),
        ("*." + "a" * 300, "b." + "a" * 300),
        ("*.example.com", "\ud800.example.com"),
        ("ex ample.com", "ex ample.com"),
    ],
)
def test_sts_e_4_odd_input_returns_false(pattern: object, host: object) -> None:
    assert mx_matches(pattern, host) is False  # type: ignore[arg-type]


def test_sts_e_2_matching_pattern_returns_first_match_as_given() -> None:
    patterns = ("backup.example.net", "*.Example.com", "mail.example.com")
    assert matching_pattern(patterns, "mail.example.com") == "*.Example.com"
    assert matching_pattern(patterns, "backup.example.net.") == "backup.example.net"
    assert matching_pattern(patterns, "a.b.example.com") is None
    assert matching_pattern([], "mail.example.com") is None


def test_sts_e_2_matching_pattern_never_raises() -> None:
    assert matching_pattern(None, "mail.example.com") is None  # type: ignore[arg-type]
    assert matching_pattern(["mail.example.com"], "bad host") is None
    assert matching_pattern([None, "mail.example.com"], "mail.example.com") == "mail.example.com"  # type: ignore[list-item]
