"""What ``mxsec check`` learnt about a domain: the facts :mod:`mxsec.check.rules` judges. Pure data, no I/O.

:mod:`mxsec.check.gather` fills a :class:`DomainFacts` through the adapters; the rules and the report only read
it, so they import nothing that opens a socket (the answer types below are named for type checkers only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mxsec.dane.destination import HostFacts, mx_host_names
from mxsec.dnsanswers import AddressAnswer, RRAnswer, TxtAnswer
from mxsec.sts.fetch import FetchOutcome
from mxsec.sts.policy import StsPolicy
from mxsec.sts.record import RecordSelection
from mxsec.tlsrpt.record import TlsrptSelection

if TYPE_CHECKING:  # the STARTTLS probe's result type; the SMTP adapter is not imported at run time
    from mxsec.net.smtp import SmtpProbe

__all__ = ["DomainFacts", "mx_hosts"]


@dataclass
class DomainFacts:
    domain: str
    mx: RRAnswer | None = None
    hosts: dict[str, HostFacts] = field(default_factory=dict)
    sts_txt: TxtAnswer | None = None
    #: where ``_mta-sts.DOMAIN`` points when it is a CNAME (policy delegation, STS-A-12); ``None`` otherwise
    sts_cname: str | None = None
    sts_record: RecordSelection | None = None
    policy_host: AddressAnswer | None = None
    fetch: FetchOutcome | None = None
    policy: StsPolicy | None = None
    policy_error: str | None = None
    tlsrpt_txt: TxtAnswer | None = None
    tlsrpt: TlsrptSelection | None = None
    #: MX answers for the domains of mailto: rua addresses
    rua_mx: dict[str, RRAnswer] = field(default_factory=dict)
    #: MX host -> TLSA answer for hosts whose address records are unsigned (senders skip TLSA there; the
    #: checker still looks, to tell the publisher their records are ignored)
    unused_tlsa: dict[str, RRAnswer] = field(default_factory=dict)
    #: (MX host, address) -> probe; empty with --no-smtp
    probes: dict[tuple[str, str], SmtpProbe] = field(default_factory=dict)
    #: (MX host, address) -> why the SSRF guard refuses it (not probed); from every MX host's addresses
    refused: dict[tuple[str, str], str] = field(default_factory=dict)
    smtp_checked: bool = False


def mx_hosts(facts: DomainFacts, limit: int) -> list[str]:
    """The MX host names to examine (the daemon's own selection, whatever the MX RRset's DNSSEC state)."""
    return [] if facts.mx is None else mx_host_names(facts.mx, facts.domain, limit)
