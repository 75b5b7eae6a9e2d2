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
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from mxsec.dane.destination import (
    DaneDecision,
    HostFacts,
    all_mx_names,
    base_candidates,
    decide,
    is_ip_literal,
    mx_host_names,
    needs_cname_query,
)

__all__ = ["destination_facts", "destination_decision", "host_facts"]


async def host_facts(dns, host: str, port: int = 25) -> HostFacts:
    """Address, CNAME (when needed) and TLSA answers for one MX host, with the TLSA base domain chosen."""
    if is_ip_literal(host):
        return HostFacts(host, None, None, ())
    addresses = await dns.addresses(host)
    first_cname = await dns.lookup(host, "CNAME") if needs_cname_query(host, addresses) else None
    candidates = base_candidates(host, addresses, first_cname)
    tlsa = None
    base = None
    for candidate in candidates:
        tlsa = await dns.tlsa(candidate, port)
        status = getattr(tlsa, "status", "error")
        if status == "error" or (status == "ok" and getattr(tlsa, "secure", False)):
            base = candidate
            break
    return HostFacts(host, addresses, tlsa, candidates, base)


async def destination_facts(dns, domain: str, max_hosts: int = 10):
    """``(mx_answer, {host: HostFacts})`` for a destination; hosts only when the MX RRset is secure.

    Without MX records (a secure NODATA) the domain itself is the host (RFC 5321 §5.1).
    """
    mx = await dns.mx(domain)
    if not mx.secure:
        return mx, {}
    names = mx_host_names(mx, domain, max_hosts)
    gathered = await asyncio.gather(*(host_facts(dns, name) for name in names))
    return mx, {facts.host: facts for facts in gathered}


async def destination_decision(dns, domain: str, max_hosts: int = 10) -> DaneDecision:
    mx, hosts = await destination_facts(dns, domain, max_hosts)
    return replace(decide(mx, hosts), mx_hosts=all_mx_names(mx, domain))
