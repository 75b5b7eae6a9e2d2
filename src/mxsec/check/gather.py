"""Collect the facts ``mxsec check`` judges: DNS, the policy fetch, one STARTTLS probe per MX address.

Thin async composition of the adapters (:class:`~mxsec.net.dns.DnsClient`,
:class:`~mxsec.net.https.PolicyFetcher`, :func:`~mxsec.net.smtp.probe_starttls`) and of the DANE gathering the
daemon uses (:func:`mxsec.dane.gather.host_facts`), so the checker and the MTA never disagree about which
records apply. No judgement here: :mod:`mxsec.check.rules` turns :class:`DomainFacts` into findings.

Politeness and bounds (docs/check.md): one connection per MX address per run, MX hosts capped at
``max_hosts`` and addresses per host at ``max_addresses``, every step under the adapters' own time limits,
and the SSRF guard applied to every address before a connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mxsec.check.facts import DomainFacts, mx_hosts
from mxsec.dane.destination import is_ip_literal
from mxsec.dane.gather import host_facts
from mxsec.net.smtp import probe_starttls
from mxsec.sts.policy import PolicyError, parse_policy
from mxsec.sts.record import select_record
from mxsec.tlsrpt.record import tlsrpt_owner
from mxsec.tlsrpt.record import select_record as select_tlsrpt

if TYPE_CHECKING:
    from cryptography import x509

    from mxsec.net.dns import DnsClient
    from mxsec.net.guard import AddressGuard
    from mxsec.net.https import PolicyFetcher

__all__ = ["CheckSettings", "DomainFacts", "gather"]


@dataclass
class CheckSettings:
    smtp: bool = True
    smtp_port: int = 25
    smtp_timeout: float = 15.0
    max_hosts: int = 10
    max_addresses: int = 4
    #: total SMTP connections at the same time, across domains (bulk mode shares one semaphore)
    smtp_concurrency: int = 32


def store_phrase(label: str | None) -> str:
    """How PKIX messages name the trust store: ``"CA file /x.pem"`` -> ``"the CA file /x.pem"``."""
    if not label:
        return "the system store"
    return f"the {label}" if label.startswith("CA file ") else label


async def gather(domain: str, dns: DnsClient, fetcher: PolicyFetcher, guard: AddressGuard, settings: CheckSettings,
                 smtp_slots: asyncio.Semaphore | None = None, *, roots: Sequence[x509.Certificate] | None = None,
                 ca_label: str = "the system store") -> DomainFacts:
    """Everything about ``domain`` (an A-label) that the rules need.

    ``roots`` are the trust anchors for the PKIX check of the MX certificates (``None``: the system store) and
    ``ca_label`` names them in messages: the label :func:`mxsec.net.smtp.load_trust_store` returns
    (``"CA file PATH"`` or ``"the system store"``).
    """
    facts = DomainFacts(domain)
    mx_task = asyncio.ensure_future(dns.mx(domain))
    sts_task = asyncio.ensure_future(_sts(facts, dns, fetcher))
    rpt_task = asyncio.ensure_future(_tlsrpt(facts, dns))
    facts.mx = await mx_task
    hosts = mx_hosts(facts, settings.max_hosts)
    gathered = await asyncio.gather(*(host_facts(dns, h) for h in hosts))
    facts.hosts = {f.host: f for f in gathered}
    unsigned = [h for h, hf in facts.hosts.items()
                if hf.addresses is not None and hf.addresses.status == "ok" and not hf.candidates]
    for host, answer in zip(unsigned, await asyncio.gather(*(dns.tlsa(h) for h in unsigned))):
        if answer.status == "ok":
            facts.unused_tlsa[host] = answer
    for host, hf in facts.hosts.items():
        if hf.addresses is not None and hf.addresses.status == "ok":
            for address in hf.addresses.addresses:
                reason = guard.check(address)
                if reason:
                    facts.refused[(host, address)] = reason
    await asyncio.gather(sts_task, rpt_task)
    if settings.smtp:
        facts.smtp_checked = True
        await _probe_all(facts, guard, settings, smtp_slots or asyncio.Semaphore(settings.smtp_concurrency),
                         roots, ca_label)
    return facts


async def _sts(facts: DomainFacts, dns: DnsClient, fetcher: PolicyFetcher) -> None:
    owner = f"_mta-sts.{facts.domain}"
    txt, cname = await asyncio.gather(dns.txt(owner), dns.lookup(owner, "CNAME"))
    facts.sts_txt = txt
    if cname.status == "ok" and cname.records:
        target = getattr(cname.records[0], "target", None)
        if target is not None:
            facts.sts_cname = str(target).rstrip(".").lower() or None
    if txt.ok:
        facts.sts_record = select_record(list(txt.records))
    if facts.sts_record is None or facts.sts_record.record is None:
        # no usable record: senders never fetch; still look whether a policy host exists (a forgotten TXT)
        facts.policy_host = await dns.addresses(f"mta-sts.{facts.domain}")
        return
    facts.fetch = await fetcher.fetch(facts.domain)
    if facts.fetch.body is not None:
        try:
            facts.policy = parse_policy(facts.fetch.body)
        except PolicyError as exc:
            facts.policy_error = str(exc)


async def _tlsrpt(facts: DomainFacts, dns: DnsClient) -> None:
    facts.tlsrpt_txt = await dns.txt(tlsrpt_owner(facts.domain))
    if not facts.tlsrpt_txt.ok:
        return
    facts.tlsrpt = select_tlsrpt(list(facts.tlsrpt_txt.records))
    record = facts.tlsrpt.record
    if record is None:
        return
    domains = []
    for uri in record.usable_rua:
        if uri.lower().startswith("mailto:"):
            address = uri[7:].split("?", 1)[0]
            if "@" in address:
                domains.append(address.rsplit("@", 1)[1].lower().rstrip("."))
    answers = await asyncio.gather(*(dns.mx(d) for d in dict.fromkeys(domains)))
    facts.rua_mx = dict(zip(dict.fromkeys(domains), answers))


async def _probe_all(facts: DomainFacts, guard: AddressGuard, settings: CheckSettings, slots: asyncio.Semaphore,
                     roots: Sequence[x509.Certificate] | None,
                     ca_label: str) -> None:
    jobs = []
    store_label = store_phrase(ca_label)
    for host, hf in facts.hosts.items():
        if is_ip_literal(host) or hf.addresses is None or hf.addresses.status != "ok":
            continue
        sni = hf.base or host  # DANE-H-15: the TLSA base domain; else the MX name (STS-E-8)
        for address in hf.addresses.addresses[: settings.max_addresses]:
            if (host, address) not in facts.refused:
                jobs.append((host, address, sni))

    async def one(host: str, address: str, sni: str) -> None:
        async with slots:
            facts.probes[(host, address)] = await probe_starttls(
                address, settings.smtp_port, server_name=sni, timeout=settings.smtp_timeout,
                pkix_names=[host], roots=roots, store_label=store_label)

    await asyncio.gather(*(one(*job) for job in jobs))
