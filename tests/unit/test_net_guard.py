"""AddressGuard: the SSRF guard of the policy fetcher."""

from __future__ import annotations

import pytest

from mxsec.net.guard import AddressGuard, parse_cidr


@pytest.mark.parametrize(
    ("ip", "reason_part"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("192.0.2.10", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.200", "documentation"),
        ("2001:db8::5", "documentation"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("198.18.0.1", "benchmarking"),
        ("fd12:3456::1", "unique local"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("::ffff:10.0.0.1", "IPv4-mapped private"),
        ("::ffff:169.254.169.254", "IPv4-mapped link-local"),
        ("64:ff9b::a00:1", "NAT64 private"),
        ("2002:7f00:1::1", "6to4 loopback"),
        ("not-an-ip", "not an IP"),
        ("fe80::1%eth0", "scoped"),
    ],
)
def test_refuses_non_public_addresses(ip: str, reason_part: str) -> None:
    reason = AddressGuard().check(ip)
    assert reason is not None
    assert reason_part.lower() in reason.lower()
    assert "\n" not in reason


@pytest.mark.parametrize(
    "ip", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001::1", "::ffff:8.8.8.8",
           "172.32.0.1", "100.128.0.1", "192.0.3.1"]
)
def test_allows_public_addresses(ip: str) -> None:
    assert AddressGuard().check(ip) is None
    assert AddressGuard().allowed(ip)


def test_allow_list_opens_a_range() -> None:
    guard = AddressGuard(allow=["127.0.0.0/8", "fd00::/8"])
    assert guard.check("127.0.80.2") is None
    assert guard.check("::ffff:127.0.0.1") is None  # mapped form of an allowed address
    assert guard.check("fd00::1") is None
    assert guard.check("10.0.0.1") == "private address"
    assert guard.check("::1") == "loopback address"


def test_allow_single_address() -> None:
    guard = AddressGuard(allow=["127.0.80.2"])
    assert guard.check("127.0.80.2") is None
    assert guard.check("127.0.80.3") == "loopback address"


@pytest.mark.parametrize("text", ["", "10.0.0.0/33", "10.0.0.1/8", "example.test", "fd00::/129", "1.2.3"])
def test_parse_cidr_errors_are_one_line_value_errors(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_cidr(text)
    assert "\n" not in str(info.value)
    assert "invalid CIDR" in str(info.value)


def test_guard_constructor_rejects_bad_cidr() -> None:
    with pytest.raises(ValueError):
        AddressGuard(allow=["10.0.0.0/8", "nonsense"])


def test_parse_cidr_accepts_networks_and_addresses() -> None:
    assert str(parse_cidr("10.0.0.0/8")) == "10.0.0.0/8"
    assert str(parse_cidr(" 192.0.2.1 ")) == "192.0.2.1/32"
    assert str(parse_cidr("2001:db8::/32")) == "2001:db8::/32"
