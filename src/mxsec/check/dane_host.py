"""``mxsec dane verify``: does an MX host's certificate match its DNSSEC-signed TLSA records, address by address?

Three steps, the middle and last ones pure:

1. :func:`look_up` asks DNS the daemon's own way (:func:`mxsec.dane.gather.host_facts`: A/AAAA first, then
   TLSA at the CNAME-expanded name or the MX host name, DANE-H-13, EC-29), or only TLSA when the addresses
   are given;
2. :func:`assess` turns the answers into the report's first half: the TLSA records and whether each is usable,
   the addresses, whether DANE applies (secure TLSA, DANE-H-3; secure addresses, DANE-H-9), or why nothing
   can be checked (a lookup error is an error, DANE-H-4, not "no records");
3. :func:`probe_addresses` connects with STARTTLS (SNI = the TLSA base domain) to every address the SSRF guard
   allows, and :func:`judge` checks each presented chain with :func:`mxsec.dane.verify.verify_chain` and
   writes the verdict.

:func:`verify_host` composes them; the result is the ``--json`` object (docs/dane.md).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
from dataclasses import dataclass
from typing import Any

from mxsec.dane.gather import Resolver, host_facts
from mxsec.dane.tlsa import DANE_TA, TlsaError, TlsaRecord, describe, from_rdata, partition, tlsa_for_certificate, \
    tlsa_owner
from mxsec.dane.verify import ANCHOR_FROM_DNS, verify_chain
from mxsec.errors import ParseError

__all__ = ["MAX_ADDRESSES", "HostLookup", "assess", "count_text", "judge", "look_up", "probe_addresses",
           "verify_host"]

#: Most addresses probed for one host (the rest are listed as not probed).
MAX_ADDRESSES = 16


@dataclass(frozen=True)
class HostLookup:
    """What DNS said about one MX host: the TLSA base domain and answer, and the address answer (``None``
    when the addresses were given on the command line: ``overrides``)."""

    host: str
    port: int
    base: str
    tlsa: Any
    addresses: Any
    overrides: tuple[str, ...] = ()


async def look_up(dns: Resolver, host: str, port: int, overrides: tuple[str, ...] = ()) -> HostLookup:
    """The TLSA (and, without ``overrides``, address) answers for ``host``, as the daemon looks them up."""
    if overrides:
        return HostLookup(host, port, host, await dns.tlsa(host, port), None, tuple(overrides))
    facts = await host_facts(dns, host, port)
    if facts.base is not None:
        return HostLookup(host, port, facts.base, facts.tlsa, facts.addresses)
    tlsa = facts.tlsa if facts.tlsa is not None else await dns.tlsa(host, port)
    return HostLookup(host, port, host, tlsa, facts.addresses)


def assess(lookup: HostLookup) -> tuple[dict[str, Any], list[TlsaRecord], list[str]]:
    """The report before any probe, the TLSA records, and the addresses to probe. When nothing can be checked
    (a lookup error, no TLSA records, no address), the report already carries its ``FAIL`` summary and the
    address list is empty."""
    host, port, base = lookup.host, lookup.port, lookup.base
    tlsa_answer, addr_answer = lookup.tlsa, lookup.addresses
    owner = tlsa_owner(base, port)

    records: list[TlsaRecord] = []
    for item in tlsa_answer.records if tlsa_answer.ok else ():
        try:
            records.append(from_rdata(*item))
        except ParseError:  # pragma: no cover - the DNS client already range-checks
            pass
    usable, unusable = partition(records)
    tlsa_part = {
        "owner": owner,
        "status": tlsa_answer.status,
        "secure": bool(tlsa_answer.secure),
        "ttl": tlsa_answer.ttl,
        "error": tlsa_answer.error,
        "canonical": tlsa_answer.canonical,
        "records": [
            {"record": r.to_text(), "usable": r in usable,
             "reason": None if r in usable else next((why for rec, why in unusable if rec == r), None)}
            for r in records
        ],
        "usable": len(usable),
    }
    addr_part: dict[str, object]
    if addr_answer is None:
        addr_part = {"source": "command line", "status": "ok", "secure": None, "error": None,
                     "addresses": list(lookup.overrides)}
        candidates = list(lookup.overrides)
    else:
        addr_part = {"source": "dns", "status": addr_answer.status, "secure": bool(addr_answer.secure),
                     "error": addr_answer.error, "addresses": list(addr_answer.addresses)}
        candidates = list(addr_answer.addresses)

    report: dict[str, Any] = {
        "host": host,
        "base": base,
        "port": port,
        "tlsa": tlsa_part,
        "addresses": addr_part,
        "dane_applies": False,
        "reason": "",
        "results": [],
        "not_probed": [],
        "ok": False,
        "summary": "",
    }

    def end(reason: str) -> tuple[dict[str, Any], list[TlsaRecord], list[str]]:
        report["reason"] = reason
        report["summary"] = "FAIL: " + reason
        return report, records, []

    # 1. Lookup errors are errors (DANE-H-4), not "no records"; nothing can be checked.
    if tlsa_answer.status == "error":
        return end(f"TLSA lookup for {owner} failed: {tlsa_answer.error or 'lookup error'} — a lookup error, not "
                   "'no records': senders defer mail for this MX host (RFC 7672 §2.2)")
    if addr_answer is not None and addr_answer.status == "error":
        return end(f"address lookup for {host} failed: {addr_answer.error or 'lookup error'}")
    if tlsa_answer.status in ("nxdomain", "nodata"):
        denial = "DNSSEC-secure" if tlsa_answer.secure else "insecure"
        return end(f"no TLSA records at {owner} ({denial} {tlsa_answer.status}): DANE does not apply to {host}")
    if not candidates:
        return end(f"{host} has no A or AAAA records ({addr_part['status']}): nothing to connect to")

    # 2. Does DANE apply? Secure TLSA (DANE-H-3), secure addresses (DANE-H-9).
    if not tlsa_answer.secure:
        report["reason"] = (f"the TLSA records at {owner} are not DNSSEC-validated (the resolver did not set the "
                            "AD bit; is it a validating resolver?): DANE does not apply (RFC 7672 §2.2)")
    elif addr_answer is not None and not addr_answer.secure:
        report["reason"] = (f"the address records of {host} are not DNSSEC-validated: senders do not look TLSA "
                            "up for it, so DANE does not apply (RFC 7672 §2.2.2)")
    else:
        report["dane_applies"] = True
        report["reason"] = (f"secure TLSA records at {owner}"
                            + ("" if addr_answer is None else f" and secure address records for {host}"))
    return report, records, candidates


async def probe_addresses(lookup: HostLookup, candidates: list[str], guard: Any, *, timeout: float,
                          ehlo_name: str | None, roots: Any, store_label: str | None
                          ) -> tuple[list[dict[str, Any]], list[Any]]:
    """STARTTLS to each of the first :data:`MAX_ADDRESSES` candidates the guard allows (SNI = the TLSA base
    domain; with ``roots``, an informational PKIX check against the MX host name). Returns the entries of the
    addresses the guard refused and the probes."""
    from mxsec.net.smtp import probe_starttls

    refused: list[dict[str, Any]] = []
    allowed: list[str] = []
    for ip in candidates[:MAX_ADDRESSES]:
        refusal = guard.check(ip)
        if refusal is not None:
            refused.append({"address": ip, "port": lookup.port, "probed": False, "ok": False,
                            "authenticated": False, "result_type": None,
                            "reason": f"not probed: {refusal} (allow it with --allow-address)"})
        else:
            allowed.append(ip)
    probes = await asyncio.gather(*(
        probe_starttls(ip, lookup.port, server_name=lookup.base, ehlo_name=ehlo_name, timeout=timeout,
                       pkix_names=[lookup.host] if roots is not None else None, roots=roots,
                       store_label=store_label)
        for ip in allowed
    ))
    return refused, list(probes)


def judge(report: dict[str, Any], records: list[TlsaRecord], candidates: list[str], refused: list[dict[str, Any]],
          probes: list[Any], now: _dt.datetime) -> dict[str, Any]:
    """Check every probed chain against ``records`` and write the results and the verdict into ``report``."""
    host, base = report["host"], report["base"]
    results = list(refused)
    report["not_probed"] = candidates[MAX_ADDRESSES:]
    for probe in probes:
        entry = {"address": probe.address, "port": probe.port, "probed": True, "sni": probe.server_name,
                 "probe": probe.as_dict(), "chain": [describe_cert(der, i) for i, der in enumerate(probe.chain)]}
        if not probe.ok:
            entry.update(ok=False, authenticated=False, result_type=probe_result_type(probe),
                         reason=f"{probe.stage}: {probe.error}")
        else:
            result = verify_chain(records, probe.chain, names=list(dict.fromkeys([base, host])), now=now)
            entry.update(
                ok=bool(result.ok and result.authenticated),
                authenticated=result.authenticated,
                result_type=result.result_type,
                reason=result.reason,
                matched=result.matched.to_text() if result.matched is not None else None,
                depth=result.depth,
                match=match_text(result, probe.chain) if result.authenticated else None,
            )
        results.append(entry)
    order = {ip: i for i, ip in enumerate(candidates)}
    results.sort(key=lambda e: order.get(e["address"], len(order)))
    report["results"] = results

    passed = sum(1 for e in results if e["ok"])
    total = len(results)
    if report["dane_applies"] and total and passed == total and not report["not_probed"]:
        report["ok"] = True
        report["summary"] = (f"PASS: DANE applies to {host} and {count_text(total, 'address', 'addresses')} "
                             f"authenticated with the TLSA records")
    elif report["dane_applies"]:
        report["summary"] = (f"FAIL: {total - passed} of {count_text(total, 'address', 'addresses')} did not "
                             "authenticate")
        if report["not_probed"]:
            report["summary"] += f"; {len(report['not_probed'])} more not probed (limit {MAX_ADDRESSES})"
    else:
        report["summary"] = "FAIL: " + report["reason"]
    return report


async def verify_host(dns: Resolver, guard: Any, host: str, port: int = 25, overrides: tuple[str, ...] = (), *,
                      timeout: float, ehlo_name: str | None = None, roots: Any = None,
                      store_label: str | None = None) -> dict[str, Any]:
    """Look up, probe, decide: the report of ``mxsec dane verify`` (its ``--json`` object)."""
    lookup = await look_up(dns, host, port, overrides)
    report, records, candidates = assess(lookup)
    if report["summary"]:
        return report
    refused, probes = await probe_addresses(lookup, candidates, guard, timeout=timeout, ehlo_name=ehlo_name,
                                            roots=roots, store_label=store_label)
    return judge(report, records, candidates, refused, probes, _dt.datetime.now(_dt.UTC))


def count_text(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def probe_result_type(probe: Any) -> str | None:
    """RFC 8460 result type for a probe that did not reach a TLS session (None: not a TLS negotiation failure)."""
    if probe.stage == "starttls":
        return "starttls-not-supported"
    if probe.stage == "handshake":
        return "validation-failure"
    return None


def match_text(result: Any, chain: list[bytes]) -> str:
    """``3 1 1 matched the leaf certificate`` and friends."""
    record = result.matched
    params = f"{record.usage} {record.selector} {record.mtype}"
    kind = describe(record)
    if record.usage != DANE_TA:
        return f"{params} matched the leaf certificate ({kind})"
    if result.depth == ANCHOR_FROM_DNS:
        return f"{params} supplied the trust anchor from DNS ({kind}); chain and name checks passed"
    if result.depth == 0:
        return f"{params} matched the self-issued leaf as trust anchor ({kind}); name checks passed"
    subject = describe_cert(chain[result.depth], result.depth)["subject"] if result.depth < len(chain) else "?"
    return (f"{params} matched chain certificate {result.depth} ({subject}) as trust anchor ({kind}); "
            "chain and name checks passed")


def describe_cert(der: bytes, index: int) -> dict[str, Any]:
    """Subject, issuer, expiry and SHA-256 of one presented certificate, and the TLSA record that would match it
    (3 1 1 for the leaf, 2 1 1 above it)."""
    from cryptography import x509

    info: dict[str, Any] = {"index": index, "sha256": hashlib.sha256(der).hexdigest(), "subject": None,
                            "issuer": None, "not_after": None}
    try:
        cert = x509.load_der_x509_certificate(der)
        info["subject"] = cert.subject.rfc4514_string() or "(empty subject)"
        info["issuer"] = cert.issuer.rfc4514_string() or "(empty issuer)"
        info["not_after"] = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    except Exception:  # noqa: BLE001 - a hostile server may present anything
        info["subject"] = "(unparsable certificate)"
    try:
        usage = 3 if index == 0 else 2
        info[f"tlsa_{usage}_1_1"] = tlsa_for_certificate(der, usage=usage, selector=1, mtype=1).to_text()
    except (TlsaError, ValueError):
        pass
    return info
