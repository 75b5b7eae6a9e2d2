"""Does DANE apply to a destination, and at which Postfix level? (RFC 7672 §2.2; pure, no I/O)

Input: the DNSSEC-classified answers for the destination's MX RRset, and for each MX host its address records
and — only when those are secure (DANE-H-9, EC-25) — its TLSA RRset. Output: a :class:`DaneDecision`:

* ``dane-only`` — the MX RRset is secure and **every** MX host has secure, usable TLSA records: Postfix must
  authenticate every host with DANE (postfix-tlspol gives the same answer);
* ``dane`` — the MX RRset is secure and at least one host has secure TLSA records (usable or not): Postfix's
  ``dane`` level looks TLSA up per host itself, authenticates the hosts that have usable records, insists on
  TLS where all records are unusable (DANE-H-18) and uses opportunistic TLS for the others;
* ``temp`` — a lookup that DANE depends on failed (SERVFAIL, timeout, bogus) in a signed context: the secure
  answer cannot be determined, so the message must wait rather than fall back to MTA-STS or cleartext
  (DANE-H-4, DANE-H-6, EC-27, EC-28);
* ``none`` — DANE does not apply (insecure or missing MX, insecure hosts, no TLSA): MTA-STS decides.

When DANE applies, MTA-STS is not consulted for the destination (RFC 8461 §2, STS-G-1): Postfix's policy
reply is one level for all MX hosts, and a passing MTA-STS check must never override a failing DANE check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from mxsec.dane.tlsa import TlsaRecord, usable

#: how long decisions are remembered when DNS gives no TTL (denials) and after errors, seconds
DENIAL_TTL = 300
ERROR_TTL = 30
MAX_TTL = 3600


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What DNS said about one MX host: its address lookup and, if looked up, its TLSA lookup.

    ``addresses`` and ``tlsa`` are answers with ``status`` (``ok``/``nxdomain``/``nodata``/``error``),
    ``secure``, ``ttl`` and ``error`` — :class:`mxsec.net.dns.AddressAnswer` / ``RRAnswer`` or look-alikes.
    ``tlsa`` records are ``(usage, selector, mtype, data)`` tuples.
    """

    host: str
    addresses: object
    tlsa: object | None = None


@dataclass(frozen=True, slots=True)
class HostState:
    host: str
    #: usable | unusable | no-tlsa | insecure | no-address | error
    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DaneDecision:
    level: str  # dane-only | dane | temp | none
    reason: str
    hosts: tuple[HostState, ...] = ()
    ttl: int = DENIAL_TTL
    #: the MX RRset was DNSSEC-secure
    secure_mx: bool = False

    @property
    def applies(self) -> bool:
        return self.level in ("dane", "dane-only")


def needs_tlsa(addresses) -> bool:
    """DANE-H-9: look TLSA up only for hosts whose address records are secure (and exist)."""
    return getattr(addresses, "status", None) == "ok" and bool(getattr(addresses, "secure", False))


def host_state(facts: HostFacts) -> HostState:
    addr = facts.addresses
    status = getattr(addr, "status", "error")
    if status == "error":
        return HostState(facts.host, "error", f"address lookup failed: {getattr(addr, 'error', '')}")
    if status != "ok":
        return HostState(facts.host, "no-address", status)
    if not getattr(addr, "secure", False):
        return HostState(facts.host, "insecure", "address records not DNSSEC-signed")
    tlsa = facts.tlsa
    if tlsa is None:
        return HostState(facts.host, "error", "TLSA not looked up")
    t_status = getattr(tlsa, "status", "error")
    if t_status == "error":  # DANE-H-4: SERVFAIL/bogus/timeout is not "no records"
        return HostState(facts.host, "error", f"TLSA lookup failed: {getattr(tlsa, 'error', '')}")
    if t_status in ("nxdomain", "nodata"):  # DANE-H-5, EC-26: secure or insecure denial = no TLSA
        return HostState(facts.host, "no-tlsa", "no TLSA records")
    if not getattr(tlsa, "secure", False):  # DANE-H-3: insecure TLSA records are not used
        return HostState(facts.host, "no-tlsa", "TLSA records not DNSSEC-signed (ignored)")
    records = [TlsaRecord(*r) for r in tlsa.records]
    good = [r for r in records if usable(r) is None]
    if good:
        return HostState(facts.host, "usable", f"{len(good)} usable TLSA record(s)")
    return HostState(facts.host, "unusable", "TLSA records present but none usable: TLS without authentication")


def _ttl(values: Iterable[int | None], default: int) -> int:
    known = [v for v in values if v is not None]
    return max(1, min(min(known) if known else default, MAX_TTL))


def decide(mx, hosts: Mapping[str, HostFacts]) -> DaneDecision:
    """The DANE decision for a destination from its MX answer and per-host facts (see the module doc)."""
    mx_status = getattr(mx, "status", "error")
    if mx_status == "error":
        return DaneDecision("temp", f"MX lookup failed: {getattr(mx, 'error', '')}", ttl=ERROR_TTL)
    if mx_status == "nxdomain":
        return DaneDecision("none", "the domain does not exist", ttl=DENIAL_TTL, secure_mx=bool(mx.secure))
    if not getattr(mx, "secure", False):
        # DANE-H-6: an insecure MX RRset cannot authenticate the destination; MTA-STS decides.
        return DaneDecision("none", "MX records are not DNSSEC-signed", ttl=_ttl([mx.ttl], DENIAL_TTL))
    names = [host for _pref, host in mx.records] if mx_status == "ok" else list(hosts)
    if mx_status == "ok" and names == [""]:
        return DaneDecision("none", "null MX: the domain accepts no mail", ttl=_ttl([mx.ttl], DENIAL_TTL),
                            secure_mx=True)
    states = tuple(host_state(hosts[name]) for name in names if name in hosts)
    ttls = [mx.ttl]
    for name in names:
        facts = hosts.get(name)
        if facts is not None:
            ttls.append(getattr(facts.addresses, "ttl", None))
            if facts.tlsa is not None:
                ttls.append(getattr(facts.tlsa, "ttl", None))
    dane_hosts = [s for s in states if s.state in ("usable", "unusable")]
    errors = [s for s in states if s.state == "error"]
    if errors and not dane_hosts:
        # A failing lookup in a signed zone may hide TLSA records: answering with MTA-STS (which switches
        # Postfix's TLSA checks off) or nothing would be a downgrade.
        first = errors[0]
        return DaneDecision("temp", f"DNSSEC lookup failed for MX host {first.host}: {first.detail}", states,
                            ttl=ERROR_TTL, secure_mx=True)
    if dane_hosts:
        every = len(states) == len(names) and all(s.state == "usable" for s in states)
        level = "dane-only" if every else "dane"
        why = ("every MX host has usable DNSSEC-signed TLSA records" if every else
               f"{len(dane_hosts)} of {len(names)} MX host(s) have DNSSEC-signed TLSA records")
        return DaneDecision(level, why, states, ttl=_ttl(ttls, DENIAL_TTL), secure_mx=True)
    return DaneDecision("none", "no MX host has DNSSEC-signed TLSA records", states,
                        ttl=_ttl(ttls, DENIAL_TTL), secure_mx=True)
