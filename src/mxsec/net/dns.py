"""Async DNS client over :mod:`mxsec.net.dnstransport` (shared UDP sockets) and :mod:`mxsec.net.dnswire`.

:class:`DnsClient` answers the two questions MTA-STS needs:

The answers are the core's facts (:mod:`mxsec.dnsanswers`).

* ``await client.txt(name)`` -> :class:`TxtAnswer`: every TXT record at ``name`` with its character-strings
  joined without separators (RFC 8461 §3.1, STS-A-11), CNAME chains followed (STS-A-12);
* ``await client.addresses(name)`` -> :class:`AddressAnswer`: A and AAAA, queried concurrently.

and the ones DANE needs (RFC 7672 §2.2), each with its DNSSEC state:

* ``await client.mx(name)`` -> :class:`RRAnswer` of ``(preference, host)`` sorted by preference;
* ``await client.tlsa(host, port=25)`` -> :class:`RRAnswer` of ``(usage, selector, mtype, data)`` at
  ``_25._tcp.host``;
* ``await client.lookup(name, rdtype)`` -> :class:`RRAnswer` of dnspython rdata objects.

Statuses are ``ok``, ``nxdomain``, ``nodata`` and ``error``; "error" (SERVFAIL, timeout, REFUSED, malformed
response, bad name) is deliberately distinct from "no records", because a sender must not treat a broken
resolver as proof that a domain has no policy.

``secure`` is the AD bit of the response: the configured resolver is trusted to validate DNSSEC (as Postfix
does with ``smtp_dns_support_level = dnssec``). Queries carry EDNS0 with DO set and the AD flag, so a
validating resolver reports its verdict. There is no cache here; callers cache.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field

import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from mxsec.dnsanswers import ERROR, NODATA, NXDOMAIN, OK, AddressAnswer, FamilyAnswer, RRAnswer, TxtAnswer
from mxsec.errors import ConfigError
from mxsec.net.dnstransport import DnsFailure, DnsTransport
from mxsec.net.dnswire import (
    WireError,
    decode_a,
    decode_aaaa,
    decode_mx,
    decode_rdata,
    decode_tlsa,
    decode_txt,
    name_text,
    query_name,
)

__all__ = [
    "AddressAnswer",
    "FamilyAnswer",
    "RRAnswer",
    "DnsClient",
    "DnsSettings",
    "TxtAnswer",
    "remote_validators",
]


def remote_validators(addresses) -> list[str]:
    """The nameserver addresses whose AD bit crosses a network: not loopback (DANE-H-2).

    A validating resolver's AD bit is only worth trusting over a path an attacker cannot write to; RFC 6698
    §4.1 asks for loopback, TSIG or IPsec. Callers warn about these (we cannot see TSIG/IPsec from here).
    """
    remote = []
    for value in addresses:
        host = value[0] if isinstance(value, tuple) else str(value)
        try:
            if not ipaddress.ip_address(host).is_loopback:
                remote.append(host)
        except ValueError:
            remote.append(host)
    return remote


@dataclass
class DnsSettings:
    """``nameservers`` empty = use /etc/resolv.conf. ``timeout`` bounds every query (all retries included)."""

    nameservers: list[tuple[str, int]] = field(default_factory=list)
    timeout: float = 5.0


@dataclass(frozen=True)
class _Result:
    status: str
    records: tuple = ()
    ttl: int | None = None
    error: str | None = None
    secure: bool = False
    canonical: str | None = None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _txt(wire: bytes, start: int, length: int) -> str:
    return decode_txt(wire, start, length).decode("ascii", errors="replace")


class DnsClient:
    """Queries through one :class:`~mxsec.net.dnstransport.DnsTransport`; no cache; every query bounded by
    ``settings.timeout`` (a lost datagram is sent again: see :mod:`mxsec.net.dnstransport`)."""

    def __init__(self, settings: DnsSettings | None = None) -> None:
        self.settings = settings if settings is not None else DnsSettings()
        timeout = float(self.settings.timeout)
        if not timeout > 0:
            raise ConfigError("DNS timeout must be positive")
        self._timeout = timeout
        if self.settings.nameservers:
            servers = [(ip, int(port)) for ip, port in self.settings.nameservers]
        else:
            try:
                resolver = dns.resolver.Resolver(configure=True)
            except (dns.resolver.NoResolverConfiguration, OSError) as exc:
                raise ConfigError(f"no usable nameserver in /etc/resolv.conf: {_one_line(str(exc))}") from None
            servers = []
            for server in resolver.nameservers:
                address = getattr(server, "address", None) or str(server)
                servers.append((address, int(getattr(server, "port", 53) or 53)))
            if not servers:
                raise ConfigError("no nameserver in /etc/resolv.conf")
        self._transport = DnsTransport(servers)

    @property
    def stats(self) -> dict[str, int]:
        """Counters of the transport: ``sent`` datagrams, ``resent`` (tries after a silent one), ``tcp``,
        ``failed`` queries."""
        return self._transport.stats

    @property
    def nameserver_addresses(self) -> list[str]:
        """The resolver addresses in use (from the settings or /etc/resolv.conf)."""
        return [ip for ip, _port in self._transport.servers]

    async def _query(self, name: str | dns.name.Name, rdtype: int, decode) -> _Result:
        """One question; ``decode(wire, start, length)`` turns each record of the final RRset into a value."""
        try:
            qname = name.to_wire() if isinstance(name, dns.name.Name) else query_name(name)
            assert qname is not None  # Name.to_wire() without a file returns the bytes
        except ValueError as exc:
            return _Result(ERROR, error=f"invalid name {name!r}: {_one_line(str(exc))}")
        try:
            # bounded by the transport: a timer per try, every try within ``lifetime``
            wire, parsed = await self._transport.query(qname, rdtype, self._timeout)
        except DnsFailure as exc:
            return _Result(ERROR, error=str(exc))
        except OSError as exc:
            return _Result(ERROR, error=_one_line(exc.strerror or str(exc)))
        if parsed.rcode == dns.rcode.NXDOMAIN:
            return _Result(NXDOMAIN, secure=parsed.ad)
        if parsed.rcode == dns.rcode.YXDOMAIN:
            return _Result(ERROR, error="YXDOMAIN (name too long after DNAME substitution)")
        canonical = name_text(parsed.canonical)
        if not parsed.records:
            return _Result(NODATA, secure=parsed.ad, canonical=canonical)
        try:
            records = tuple(decode(wire, start, length) for start, length in parsed.records)
        except WireError as exc:
            return _Result(ERROR, error=f"malformed response: {_one_line(str(exc))}")
        return _Result(OK, records, parsed.ttl, None, parsed.ad, canonical)

    async def lookup(self, name: str, rdtype: str | int) -> RRAnswer:
        """Any RRset as dnspython rdata objects, with its DNSSEC state (see :class:`RRAnswer`)."""
        code = int(dns.rdatatype.RdataType.make(rdtype))
        result = await self._query(name, code, lambda wire, start, length: decode_rdata(wire, start, length, code))
        return RRAnswer(result.status, result.records, result.secure, result.ttl, result.error, result.canonical)

    async def mx(self, name: str) -> RRAnswer:
        """MX of ``name`` as ``(preference, host)`` pairs sorted by preference (host without the root dot).

        A null MX (RFC 7505: ``0 .``) comes back as ``(0, "")``.
        """
        result = await self._query(name, dns.rdatatype.MX, decode_mx)
        records = tuple(sorted(result.records)) if result.status == OK else ()
        return RRAnswer(result.status, records, result.secure, result.ttl, result.error, result.canonical)

    async def tlsa(self, host: str, port: int = 25) -> RRAnswer:
        """TLSA at ``_PORT._tcp.host`` as ``(usage, selector, mtype, data)`` tuples (RFC 7672 §2.2.3)."""
        result = await self._query(f"_{port}._tcp.{host.rstrip('.')}", dns.rdatatype.TLSA, decode_tlsa)
        return RRAnswer(result.status, result.records, result.secure, result.ttl, result.error, result.canonical)

    async def txt(self, name: str) -> TxtAnswer:
        """TXT records at ``name``; each record's character-strings joined with nothing in between.

        The bytes are decoded as US-ASCII with ``errors="replace"``, so a non-ASCII record fails the record
        parser (STS-A-2) instead of crashing here.
        """
        result = await self._query(name, dns.rdatatype.TXT, _txt)
        return TxtAnswer(result.status, result.records, result.error, result.secure, result.ttl)

    async def addresses(self, name: str) -> AddressAnswer:
        """A and AAAA of ``name`` (queried concurrently); IPv4 first, then IPv6, in answer order.

        ``ok`` if either query produced addresses; ``error`` if one failed and the other has none;
        ``nxdomain`` only if both say so; else ``nodata``.
        """
        a_task = asyncio.ensure_future(self._query(name, dns.rdatatype.A, decode_a))
        try:
            aaaa = await self._query(name, dns.rdatatype.AAAA, decode_aaaa)
        except BaseException:
            a_task.cancel()
            raise
        a = await a_task
        addresses: list[str] = []
        ttls: list[int] = []
        for result in (a, aaaa):
            if result.status == OK:
                ttls.append(result.ttl)  # type: ignore[arg-type]  # an "ok" result has records, so a TTL
                for text in result.records:
                    if text not in addresses:
                        addresses.append(text)
        families = tuple(FamilyAnswer(t, r.status, r.secure, r.error) for t, r in (("A", a), ("AAAA", aaaa)))
        canonical = next((r.canonical for r in (a, aaaa) if r.canonical), None)
        ttl = min(ttls) if ttls else None
        errors = [r.error for r in (a, aaaa) if r.status == ERROR and r.error]
        if addresses:
            secure = all(r.secure for r in (a, aaaa) if r.status != ERROR)
            return AddressAnswer(OK, tuple(addresses), None, secure, canonical, families, ttl)
        if a.status == ERROR or aaaa.status == ERROR:
            return AddressAnswer(ERROR, (), "; ".join(dict.fromkeys(errors)) or "lookup failed", False,
                                 canonical, families)
        status = NXDOMAIN if a.status == NXDOMAIN and aaaa.status == NXDOMAIN else NODATA
        return AddressAnswer(status, (), None, a.secure and aaaa.secure, canonical, families)
