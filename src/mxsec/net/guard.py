"""SSRF guard: which addresses the policy fetcher may connect to.

A policy host name comes from DNS that anyone can publish, so ``mta-sts.attacker.example`` may point at
``127.0.0.1``, ``169.254.169.254`` or an internal network. :class:`AddressGuard` refuses every address that is
not a public unicast address, unless an operator allowed its range explicitly (``allow=["10.0.0.0/8"]``).

IPv6 addresses that embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``,
NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) are judged by the embedded IPv4 address as well.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["AddressGuard", "parse_cidr", "IPNetwork", "IPAddress"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_cidr(text: str) -> IPNetwork:
    """Parse ``"10.0.0.0/8"``, ``"fd00::/8"`` or a bare address (a /32 or /128).

    Raises ``ValueError`` with a one-line message (host bits set, bad prefix, not an address).
    """
    value = text.strip() if isinstance(text, str) else text
    if not isinstance(value, str) or not value:
        raise ValueError(f"invalid CIDR {text!r}: empty")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "not an address range"
        raise ValueError(f"invalid CIDR {text!r}: {reason}") from None


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), reason) for cidr, reason in pairs)


# Checked in order; the first match gives the reason.
_V4_BLOCKED = _nets(
    ("0.0.0.0/8", "unspecified or 'this network' address"),
    ("127.0.0.0/8", "loopback address"),
    ("10.0.0.0/8", "private address"),
    ("172.16.0.0/12", "private address"),
    ("192.168.0.0/16", "private address"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("169.254.0.0/16", "link-local address"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation address (TEST-NET-1)"),
    ("198.51.100.0/24", "documentation address (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation address (TEST-NET-3)"),
    ("198.18.0.0/15", "benchmarking address"),
    ("192.88.99.0/24", "6to4 relay anycast address"),
    ("224.0.0.0/4", "multicast address"),
    ("255.255.255.255/32", "broadcast address"),
    ("240.0.0.0/4", "reserved address"),
)

_V6_BLOCKED = _nets(
    ("::/128", "unspecified address"),
    ("::1/128", "loopback address"),
    ("fe80::/10", "link-local address"),
    ("fec0::/10", "site-local address"),
    ("fc00::/7", "unique local (private) address"),
    ("ff00::/8", "multicast address"),
    ("2001:db8::/32", "documentation address"),
    ("3fff::/20", "documentation address"),
    ("100::/64", "discard-only address"),
    ("2001::/23", "IETF protocol assignment"),
    ("5f00::/16", "segment routing SID"),
)

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_COMPAT = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


def _embedded_v4(addr: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    if addr in _MAPPED:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF), "IPv4-mapped"
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF), "NAT64"
    if addr in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(addr) >> 80) & 0xFFFFFFFF), "6to4"
    if addr in _COMPAT and int(addr) > 1:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF), "IPv4-compatible"
    return None


class AddressGuard:
    """Decides whether the fetcher may connect to an address.

    ``allow`` is a list of CIDRs (or bare addresses) that are permitted even though they are not public,
    e.g. ``["127.0.0.0/8"]`` for a local test world. Raises ``ValueError`` (one line) for a bad entry.
    """

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow: tuple[IPNetwork, ...] = tuple(parse_cidr(item) for item in allow)

    def __repr__(self) -> str:
        return f"AddressGuard(allow={[str(n) for n in self.allow]!r})"

    def _allowed(self, addr: IPAddress) -> bool:
        return any(addr.version == net.version and addr in net for net in self.allow)

    def check(self, ip: str | IPAddress) -> str | None:
        """``None`` if the fetcher may connect to ``ip``, else a short reason such as ``"loopback address"``."""
        if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            addr: IPAddress = ip
        else:
            text = str(ip).strip()
            if "%" in text:  # scoped IPv6 (fe80::1%eth0): always link-local territory
                return "scoped address"
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                return "not an IP address"
        if self._allowed(addr):
            return None
        if isinstance(addr, ipaddress.IPv6Address):
            embedded = _embedded_v4(addr)
            if embedded is not None:
                v4, kind = embedded
                if self._allowed(v4):
                    return None
                reason = self._check_v4(v4)
                if reason is not None:
                    return f"{kind} {reason}"
                if kind in ("IPv4-mapped", "IPv4-compatible"):
                    return None
            if addr in _NAT64_LOCAL:
                return "local-use NAT64 address"
            for net, reason in _V6_BLOCKED:
                if addr in net:
                    return reason
            if not addr.is_global:
                return "not a global address"
            return None
        return self._check_v4(addr)

    @staticmethod
    def _check_v4(addr: ipaddress.IPv4Address) -> str | None:
        for net, reason in _V4_BLOCKED:
            if addr in net:
                return reason
        if not addr.is_global:
            return "not a global address"
        return None

    def allowed(self, ip: str | IPAddress) -> bool:
        return self.check(ip) is None
