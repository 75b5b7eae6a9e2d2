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

TLSA base domains (DANE-H-12..H-15, EC-29; :func:`base_candidates`): when the MX host is a CNAME whose whole
chain validates, the expanded name is tried first, then the MX host name; when the expansion is insecure but
the first CNAME answer is secure, only the MX host name is a candidate; the first candidate with a secure TLSA
RRset (or a lookup error) decides. A host that is DANE-protected only through that last rule does not count
towards ``dane-only``: Postfix skips TLSA for hosts whose address records are insecure, and would defer them
under ``dane-only`` — ``dane`` lets Postfix use each host as its own DNSSEC view allows.

Address families (DANE-H-10, EC-30): when one family validates and the other's lookup fails, DANE goes ahead
over the family that validated. MX records that hold an IP address are not DANE candidates (DANE-H-11).

When DANE applies, MTA-STS is not consulted for the destination (RFC 8461 §2, STS-G-1): Postfix's policy
reply is one level for all MX hosts, and a passing MTA-STS check must never override a failing DANE check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Protocol, Sequence

from mxsec import names
from mxsec.dane.tlsa import TlsaRecord, usable

#: how long decisions are remembered when DNS gives no TTL (denials) and after errors, seconds
DENIAL_TTL = 300
ERROR_TTL = 30
MAX_TTL = 3600


class Answer(Protocol):
    """What these rules read of a DNS answer (:mod:`mxsec.net.dns` answers have it; so may test look-alikes).

    ``status`` is ``ok``, ``nxdomain``, ``nodata`` or ``error``; ``secure`` the validating resolver's verdict;
    ``ttl`` ``None`` for denials and errors; ``error`` says why a lookup failed.
    """

    @property
    def status(self) -> str: ...
    @property
    def secure(self) -> bool: ...
    @property
    def ttl(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...


class MxAnswer(Answer, Protocol):
    """An MX answer: ``(preference, host)`` pairs, host without the root dot (``""`` for a null MX)."""

    @property
    def records(self) -> Sequence[tuple[int, str]]: ...


class TlsaAnswer(Answer, Protocol):
    """A TLSA answer: ``(usage, selector, matching type, data)`` tuples."""

    @property
    def records(self) -> Sequence[tuple[int, int, int, bytes]]: ...


class FamilyStatus(Protocol):
    """One address family's part of an address answer (``rdtype`` ``"A"`` or ``"AAAA"``)."""

    @property
    def rdtype(self) -> str: ...
    @property
    def status(self) -> str: ...


class AddressAnswer(Answer, Protocol):
    """A and AAAA together: ``canonical`` is the name after CNAME expansion, ``families`` each family's status."""

    @property
    def addresses(self) -> Sequence[str]: ...
    @property
    def canonical(self) -> str | None: ...
    @property
    def families(self) -> Sequence[FamilyStatus]: ...


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What DNS said about one MX host: its address lookup and, if looked up, its TLSA lookup.

    ``addresses`` and ``tlsa`` are answers with ``status`` (``ok``/``nxdomain``/``nodata``/``error``),
    ``secure``, ``ttl`` and ``error`` — :class:`mxsec.net.dns.AddressAnswer` / ``RRAnswer`` or look-alikes.
    ``tlsa`` records are ``(usage, selector, mtype, data)`` tuples.
    """

    host: str
    #: ``None`` for an MX "host" that is an IP address (not looked up)
    addresses: AddressAnswer | None
    tlsa: TlsaAnswer | None = None
    #: TLSA base domains in the order tried (``None``: derived from ``addresses`` by :func:`base_candidates`
    #: without an explicit CNAME answer)
    candidates: tuple[str, ...] | None = None
    #: the candidate whose TLSA answer decided (a secure RRset or a lookup error); SNI and the primary
    #: reference identifier for DANE-TA name checks (DANE-H-15, H-33)
    base: str | None = None


#: what DANE says about one MX host
HostStateName = Literal["usable", "unusable", "no-tlsa", "insecure", "no-address", "ip-literal", "error"]
#: the decision for a destination: ``dane-only`` (every MX host has usable TLSA records), ``dane`` (some do),
#: ``temp`` (DNS failed: defer), ``none`` (no DANE), ``off`` (DANE switched off for it by configuration)
DaneLevel = Literal["dane-only", "dane", "temp", "none", "off"]


@dataclass(frozen=True, slots=True)
class HostState:
    host: str
    state: HostStateName
    detail: str = ""
    #: the TLSA base domain whose records decided (``None`` when no TLSA RRset did)
    base: str | None = None
    #: DANE for this host rests on the MX host name's own TLSA records although its address records are
    #: insecure (insecure CNAME expansion, EC-29) — Postfix skips TLSA for such hosts
    via_original_name: bool = False
    #: the signed TLSA records of ``base`` as RFC 8460 §4.5 ``policy-string`` lines (usable and unusable states)
    tlsa: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DaneDecision:
    level: DaneLevel
    reason: str
    hosts: tuple[HostState, ...] = ()
    ttl: int = DENIAL_TTL
    #: the MX RRset was DNSSEC-secure
    secure_mx: bool = False
    #: every MX host name of the destination in preference order (null MX left out; the domain itself when
    #: it has no MX RRset), signed or not; ``None`` when the MX lookup gave no usable answer. The daemon's
    #: strict MX-name replies for Postfix ≤ 3.10.4 are built from it (docs/daemon.md)
    mx_hosts: tuple[str, ...] | None = None

    @property
    def applies(self) -> bool:
        return self.level in ("dane", "dane-only")


def all_mx_names(mx: MxAnswer, domain: str) -> tuple[str, ...] | None:
    """Every MX host name of an MX answer, in preference order without repeats or the null MX; ``(domain,)``
    for a NODATA answer (RFC 5321 §5.1); ``None`` when the lookup failed or the domain does not exist."""
    status = getattr(mx, "status", "error")
    if status == "nodata":
        return (domain.lower().rstrip("."),)
    if status != "ok":
        return None
    return tuple(dict.fromkeys(host for _pref, host in mx.records if host))


def is_ip_literal(host: str) -> bool:
    """An MX "host" that is really an IP address (``10 192.0.2.1``) — DANE does not apply (DANE-H-11)."""
    return names.is_ip_literal(host.strip().rstrip("."))


def mx_host_names(mx: MxAnswer, domain: str, limit: int) -> list[str]:
    """The MX host names of ``mx`` (an MX answer) in preference order, null MX and repeats left out, at most
    ``limit``; the domain itself when it has no MX RRset (RFC 5321 §5.1); none after a lookup failure."""
    status = getattr(mx, "status", "error")
    if status == "nodata":
        return [domain]
    if status != "ok":
        return []
    return list(dict.fromkeys(host for _pref, host in mx.records if host))[:limit]


def base_candidates(host: str, addresses: AddressAnswer | None, first_cname: Answer | None = None) -> tuple[str, ...]:
    """TLSA base domains to try for ``host``, in order (RFC 7672 §2.2.2, RFC 7671 §7; DANE-H-9, H-13).

    ``addresses`` is the host's address answer (``status``, ``secure``, ``canonical``); ``first_cname`` the
    answer to an explicit CNAME query for ``host`` — needed only when the expansion is insecure, to tell an
    insecure target zone (the original name still counts when its own zone is signed) from an insecure
    original zone (EC-29).
    """
    if getattr(addresses, "status", None) != "ok" or is_ip_literal(host):
        return ()
    canonical = (getattr(addresses, "canonical", None) or host).rstrip(".").lower()
    name = host.rstrip(".").lower()
    if getattr(addresses, "secure", False):
        return (canonical, name) if canonical != name else (name,)
    if canonical != name and first_cname is not None and getattr(first_cname, "status", None) == "ok" \
            and getattr(first_cname, "secure", False):
        return (name,)
    return ()


def needs_cname_query(host: str, addresses: AddressAnswer | None) -> bool:
    """The expansion was insecure: only an explicit CNAME answer can show whether ``host`` itself is signed."""
    if getattr(addresses, "status", None) != "ok" or getattr(addresses, "secure", False):
        return False
    canonical = (getattr(addresses, "canonical", None) or host).rstrip(".").lower()
    return canonical != host.rstrip(".").lower()


def _family_note(addresses: AddressAnswer | None) -> str:
    failed = [f.rdtype for f in getattr(addresses, "families", ()) if f.status == "error"]
    if failed and getattr(addresses, "status", None) == "ok":
        # DANE-H-10, EC-30: go ahead over the family that validated
        return f"; {'/'.join(failed)} lookup failed, DANE over the other address family"
    return ""


def host_state(facts: HostFacts) -> HostState:
    host = facts.host
    if is_ip_literal(host):
        return HostState(host, "ip-literal", "MX record holds an IP address: DANE does not apply")
    addr = facts.addresses
    status = getattr(addr, "status", "error")
    if status == "error":
        return HostState(host, "error", f"address lookup failed: {getattr(addr, 'error', '')}")
    if status != "ok":
        return HostState(host, "no-address", status)
    candidates = facts.candidates if facts.candidates is not None else base_candidates(host, addr)
    if not candidates:
        return HostState(host, "insecure", "address records not DNSSEC-signed")
    via_original = not getattr(addr, "secure", False)
    tlsa = facts.tlsa
    if tlsa is None:
        return HostState(host, "error", "TLSA not looked up")
    base = facts.base
    t_status = getattr(tlsa, "status", "error")
    if t_status == "error":  # DANE-H-4: SERVFAIL/bogus/timeout is not "no records"
        return HostState(host, "error", f"TLSA lookup failed: {getattr(tlsa, 'error', '')}", base)
    if t_status in ("nxdomain", "nodata"):  # DANE-H-5, EC-26: secure or insecure denial = no TLSA
        return HostState(host, "no-tlsa", "no TLSA records")
    if not getattr(tlsa, "secure", False):  # DANE-H-3: insecure TLSA records are not used
        return HostState(host, "no-tlsa", "TLSA records not DNSSEC-signed (ignored)")
    records = [TlsaRecord(*r) for r in tlsa.records]
    good = [r for r in records if usable(r) is None]
    at = f" at _25._tcp.{base}" if base and base != host.rstrip(".").lower() else ""
    note = _family_note(addr) + ("; the MX host's CNAME target is unsigned: DANE rests on the MX host name's "
                                 "own TLSA records" if via_original else "")
    texts = tuple(r.to_text() for r in records)
    if good:
        return HostState(host, "usable", f"{len(good)} usable TLSA record(s){at}{note}", base, via_original, texts)
    return HostState(host, "unusable", f"TLSA records{at} present but none usable: TLS without "
                     f"authentication{note}", base, via_original, texts)


def _ttl(values: Iterable[int | None], default: int) -> int:
    known = [v for v in values if v is not None]
    return max(1, min(min(known) if known else default, MAX_TTL))


def decide(mx: MxAnswer, hosts: Mapping[str, HostFacts]) -> DaneDecision:
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
        every = len(states) == len(names) and all(s.state == "usable" and not s.via_original_name
                                                  for s in states)
        level: DaneLevel = "dane-only" if every else "dane"
        why = ("every MX host has usable DNSSEC-signed TLSA records" if every else
               f"{len(dane_hosts)} of {len(names)} MX host(s) have DNSSEC-signed TLSA records")
        return DaneDecision(level, why, states, ttl=_ttl(ttls, DENIAL_TTL), secure_mx=True)
    return DaneDecision("none", "no MX host has DNSSEC-signed TLSA records", states,
                        ttl=_ttl(ttls, DENIAL_TTL), secure_mx=True)


# --- per-destination overrides (DANE-H-41, H-42) ----------------------------------------------------------------


def listed(domain: str, entries: Iterable[str]) -> bool:
    """``domain`` is named in ``entries``: exactly, or below an entry written with a leading dot
    (``.example.net`` = every subdomain of example.net, as in Postfix tables)."""
    domain = domain.lower().rstrip(".")
    for entry in entries:
        entry = entry.lower().rstrip(".")
        if entry.startswith("."):
            if domain.endswith(entry):
                return True
        elif domain == entry:
            return True
    return False


def disabled_decision() -> DaneDecision:
    """DANE-H-42: DANE switched off for a destination by the operator. Not a silent downgrade: without an
    enforcing MTA-STS policy the reply is ``OK encrypt`` (TLS required, not authenticated)."""
    return DaneDecision("off", "DANE disabled for this destination by configuration (dane.disabled)", ttl=MAX_TTL)


def mandatory(decision: DaneDecision) -> DaneDecision:
    """DANE-H-41: the operator requires DANE for this destination: deliver only over TLS authenticated by
    secure TLSA records. ``temp`` stays ``temp``; anything else becomes ``dane-only``, so Postfix defers hosts
    without usable TLSA records (and reports ``dane-required``)."""
    if decision.level in ("temp", "dane-only"):
        return decision
    return DaneDecision("dane-only", f"DANE required by configuration (dane.mandatory); {decision.reason}",
                        decision.hosts, decision.ttl, decision.secure_mx)
