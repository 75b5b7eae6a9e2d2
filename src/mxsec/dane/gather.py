"""Gather the DNS facts DANE needs for a destination or one MX host (RFC 7672 §2.2).

The only async part of :mod:`mxsec.dane`. It opens no sockets itself: it asks a resolver object with the
:class:`mxsec.net.dns.DnsClient` methods (``mx``, ``addresses``, ``lookup``, ``tlsa``) and feeds the answers to
the pure rules in :mod:`mxsec.dane.destination`. The daemon, ``mxsec dane verify`` and the checker share it,
so they never disagree about which TLSA records apply.

Order of work per MX host (DANE-H-9, H-13, H-14; EC-25, EC-29):

1. A/AAAA (concurrently, inside ``addresses``); an IP address in the MX record is skipped (DANE-H-11);
2. an explicit CNAME query only when the expansion was insecure (to tell EC-29 apart);
3. TLSA at each candidate base domain in turn; the first secure RRset or lookup error decides, a denial or
   an insecure answer moves on to the next candidate.

A :class:`SharedHostFacts` keeps what was learnt about each MX host for every destination it serves (real MX
hosts serve thousands of domains), for the smallest TTL of its answers; a failed lookup is never kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from mxsec.dane.destination import (
    DENIAL_TTL,
    MAX_TTL,
    AddressAnswer,
    Answer,
    DaneDecision,
    HostFacts,
    MxAnswer,
    TlsaAnswer,
    all_mx_names,
    base_candidates,
    decide,
    is_ip_literal,
    mx_host_names,
    needs_cname_query,
)

__all__ = ["Resolver", "SharedHostFacts", "destination_facts", "destination_decision", "host_facts"]


class Resolver(Protocol):
    """The look-ups DANE needs, as :class:`mxsec.net.dns.DnsClient` offers them."""

    async def mx(self, name: str, /) -> MxAnswer: ...
    async def addresses(self, name: str, /) -> AddressAnswer: ...
    async def lookup(self, name: str, rdtype: str | int, /) -> Answer: ...
    async def tlsa(self, host: str, port: int = 25, /) -> TlsaAnswer: ...


async def host_facts(dns: Resolver, host: str, port: int = 25) -> HostFacts:
    """Address, CNAME (when needed) and TLSA answers for one MX host, with the TLSA base domain chosen."""
    if is_ip_literal(host):
        return HostFacts(host, None, None, ())
    addresses = await dns.addresses(host)
    first_cname = await dns.lookup(host, "CNAME") if needs_cname_query(host, addresses) else None
    candidates = base_candidates(host, addresses, first_cname)
    tlsa: TlsaAnswer | None = None
    base: str | None = None
    for candidate in candidates:
        tlsa = await dns.tlsa(candidate, port)
        status = getattr(tlsa, "status", "error")
        if status == "error" or (status == "ok" and getattr(tlsa, "secure", False)):
            base = candidate
            break
    return HostFacts(host, addresses, tlsa, candidates, base)


def facts_ttl(facts: HostFacts) -> int:
    """How long ``facts`` may be reused: the smallest TTL among its answers (a denial counts as
    ``DENIAL_TTL``), at most ``MAX_TTL``; 0 when a lookup failed (never reused)."""
    ttls: list[int] = []
    answer: Answer | None
    for answer in (facts.addresses, facts.tlsa):
        if answer is None:
            continue
        status = getattr(answer, "status", "error")
        if status == "error":
            return 0
        ttl = getattr(answer, "ttl", None)
        ttls.append(DENIAL_TTL if ttl is None else int(ttl))
    return min([MAX_TTL, *ttls])


class SharedHostFacts:
    """:func:`host_facts` per ``(host, port)``, shared by every destination and kept for :func:`facts_ttl`.

    One lookup at a time per host (the others wait for it); at most ``limit`` hosts, the oldest dropped first.
    """

    def __init__(self, limit: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._kept: dict[tuple[str, int], tuple[float, HostFacts]] = {}
        self._running: dict[tuple[str, int], asyncio.Future[HostFacts]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._kept)

    async def get(self, dns: Resolver, host: str, port: int = 25) -> HostFacts:
        key = (host, port)
        kept = self._kept.get(key)
        if kept is not None:
            if kept[0] > self.clock():
                self.hits += 1
                return kept[1]
            del self._kept[key]
        running = self._running.get(key)
        if running is None:
            self.misses += 1
            running = self._running[key] = asyncio.ensure_future(self._look_up(dns, host, port))
        else:
            self.hits += 1
        return await asyncio.shield(running)  # a caller that goes away leaves the lookup to the others

    async def _look_up(self, dns: Resolver, host: str, port: int) -> HostFacts:
        key = (host, port)
        try:
            facts = await host_facts(dns, host, port)
        finally:
            self._running.pop(key, None)
        ttl = facts_ttl(facts)
        if ttl > 0:
            kept = self._kept
            if len(kept) >= self.limit:
                del kept[next(iter(kept))]
            kept[key] = (self.clock() + ttl, facts)
        return facts

    def sweep(self, now: float | None = None) -> int:
        """Drop the hosts past their time; the number dropped."""
        now = self.clock() if now is None else now
        gone = [key for key, (until, _) in self._kept.items() if until <= now]
        for key in gone:
            del self._kept[key]
        return len(gone)


async def destination_facts(dns: Resolver, domain: str, max_hosts: int = 10,
                            hosts: SharedHostFacts | None = None) -> tuple[MxAnswer, dict[str, HostFacts]]:
    """``(mx_answer, {host: HostFacts})`` for a destination; hosts only when the MX RRset is secure.

    Without MX records (a secure NODATA) the domain itself is the host (RFC 5321 §5.1). ``hosts``: reuse what
    other destinations learnt about the same MX hosts.
    """
    mx = await dns.mx(domain)
    if not mx.secure:
        return mx, {}
    look_up = host_facts if hosts is None else hosts.get
    gathered = await asyncio.gather(*(look_up(dns, name) for name in mx_host_names(mx, domain, max_hosts)))
    return mx, {facts.host: facts for facts in gathered}


async def destination_decision(dns: Resolver, domain: str, max_hosts: int = 10,
                               hosts: SharedHostFacts | None = None) -> DaneDecision:
    mx, facts = await destination_facts(dns, domain, max_hosts, hosts)
    return replace(decide(mx, facts), mx_hosts=all_mx_names(mx, domain))
