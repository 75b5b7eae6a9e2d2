"""Judge a domain's facts: :class:`~mxsec.check.facts.DomainFacts` -> findings. Pure, no I/O.

The same sans-I/O pieces as the daemon decide here: record selection and policy parsing
(:mod:`mxsec.sts`), MX matching (:func:`mxsec.sts.match.matching_pattern`), the DANE host rules and chain
verifier (:mod:`mxsec.dane`), and the PKIX check recorded by the STARTTLS probe. Each rule function returns a
list of :class:`~mxsec.check.findings.Finding` built from the catalogue.
"""

from __future__ import annotations

import contextlib
import datetime as _dt

from cryptography import x509

from mxsec.check.findings import Finding, finding
from mxsec.check.facts import DomainFacts, mx_hosts
from mxsec.dane.destination import HostFacts, host_state, is_ip_literal
from mxsec.dane.tlsa import TlsaRecord, partition
from mxsec.dane.verify import verify_chain
from mxsec.names import DomainError, normalize_domain
from mxsec.sts.match import matching_pattern, mx_matches

__all__ = ["EXPIRY_WARNING_DAYS", "SHORT_MAX_AGE", "judge"]

#: warn when an MX's or the policy host's certificate expires within this many days
EXPIRY_WARNING_DAYS = 14
#: max_age below this is "short" (one week)
SHORT_MAX_AGE = 604800

_FETCH_CODES = {
    "dns-error": "sts-policy-host-dns",
    "connect-error": "sts-policy-connect",
    "timeout": "sts-policy-timeout",
    "tls-error": "sts-policy-tls",
    "certificate-invalid": "sts-policy-certificate",
    "http-status": "sts-policy-status",
    "redirect": "sts-policy-redirect",
    "media-type": "sts-policy-media-type",
    "too-large": "sts-policy-too-large",
    "policy-invalid": "sts-policy-invalid",
    "address-refused": "sts-policy-address-refused",
}

#: provider zones where a wildcard pattern trusts hosts of many customers
_SHARED_ZONES = ("mail.protection.outlook.com", "outlook.com", "google.com", "googlemail.com", "amazonaws.com",
                 "mx.microsoft")


#: handshake errors that usually mean the MX offers only TLS versions older than 1.2 (the probe asks for 1.2+)
_OLD_TLS_HINTS = ("protocol version", "unsupported protocol", "no protocols available", "wrong version number",
                  "version too low")


def judge(facts: DomainFacts, max_hosts: int = 10, now: _dt.datetime | None = None) -> list[Finding]:
    """Every finding for ``facts``, area by area (MX and DNSSEC, MTA-STS, DANE, SMTP, TLSRPT)."""
    now = now or _dt.datetime.now(_dt.UTC)
    out: list[Finding] = []
    out += mx_rules(facts, max_hosts)
    out += sts_rules(facts, max_hosts, now)
    out += dane_dns_rules(facts)
    out += smtp_rules(facts, now)
    out += tlsrpt_rules(facts)
    return out


def dane_possible(facts: DomainFacts) -> bool:
    """DANE can apply to the domain at all: its MX RRset (or, without MX, the secure denial that makes the domain
    its own MX host) is DNSSEC-secure (DANE-H-6). The daemon's :func:`mxsec.dane.destination.decide` gives
    ``none`` otherwise, so the MX hosts' TLSA records are not used for this domain."""
    mx = facts.mx
    return mx is not None and mx.status in ("ok", "nodata") and bool(mx.secure)


def _sts_like(text: str) -> bool:
    """Counts as an MTA-STS record when filtering (the rule of :func:`mxsec.sts.record.select_record`)."""
    rest = text[len("v=STSv1"):] if text.startswith("v=STSv1") else None
    return rest is not None and (rest == "" or rest[0] in "; \t")


# --- MX --------------------------------------------------------------------------------------------------------


def mx_rules(facts: DomainFacts, max_hosts: int) -> list[Finding]:
    mx = facts.mx
    out: list[Finding] = []
    if mx is None:
        return out
    if mx.status == "error":
        return [finding("mx-lookup-failed", f"MX lookup for {facts.domain} failed: {mx.error}")]
    if mx.status == "nxdomain":
        return [finding("mx-domain-missing", f"{facts.domain} does not exist (NXDOMAIN)")]
    if mx.status == "nodata":
        out.append(finding("mx-implicit", f"{facts.domain} has no MX records; senders use its A/AAAA records"))
    else:
        names = [h for _p, h in mx.records]
        if "" in names:
            if len(names) == 1:
                return [finding("mx-null", f"{facts.domain} publishes a null MX: it accepts no mail")]
            out.append(finding("mx-null-mixed", f"{facts.domain} has a null MX and {len(names) - 1} other MX "
                                                f"record(s)"))
        seen: set[str] = set()
        for name in names:
            if not name:
                continue
            if name in seen:
                out.append(finding("mx-duplicate", f"MX host {name} is listed more than once", name))
            seen.add(name)
            if is_ip_literal(name):
                out.append(finding("mx-ip-literal", f"MX record points at the address {name}", name))
                continue
            if name.endswith(".invalid"):
                out.append(finding("mx-placeholder", f"MX host {name} is a placeholder that cannot receive mail",
                                   name))
                continue
            try:
                normalize_domain(name)
            except DomainError as exc:
                out.append(finding("mx-invalid-name", f"MX host {name!r} is not a valid host name: {exc}", name))
    if mx.status in ("ok", "nodata") and not mx.secure:
        out.append(finding("dnssec-unsigned", f"the MX records of {facts.domain} are not DNSSEC-signed"))
    if mx.status == "ok":
        distinct = list(dict.fromkeys(h for _p, h in mx.records if h))
        if len(distinct) > max_hosts:
            out.append(finding("check-limited", f"{facts.domain} has {len(distinct)} MX hosts; only the first "
                                                f"{max_hosts} in preference order were examined"))
    for host in mx_hosts(facts, max_hosts):
        hf = facts.hosts.get(host)
        if hf is None or hf.addresses is None:
            continue
        addr = hf.addresses
        if addr.status == "error":
            out.append(finding("mx-address-failed", f"address lookup of {host} failed: {addr.error}", host))
        elif addr.status != "ok":
            out.append(finding("mx-no-address", f"{host} has no A/AAAA records ({addr.status})", host))
        else:
            canonical = (addr.canonical or host).rstrip(".").lower()
            if canonical != host:
                out.append(finding("mx-cname", f"{host} is a CNAME for {canonical}", host))
            for a in addr.addresses:
                reason = facts.refused.get((host, a))
                if reason:
                    out.append(finding("mx-private-address", f"{host} resolves to {a}: {reason} (not probed)",
                                       host))
            if not addr.secure and mx.secure:
                out.append(finding("dnssec-mx-host-unsigned", f"the address records of {host} are not "
                                                              f"DNSSEC-signed: DANE cannot apply to it", host))
    return out


# --- MTA-STS ---------------------------------------------------------------------------------------------------


def sts_rules(facts: DomainFacts, max_hosts: int, now: _dt.datetime | None = None) -> list[Finding]:
    txt = facts.sts_txt
    out: list[Finding] = []
    if txt is None:
        return out
    owner = f"_mta-sts.{facts.domain}"
    if txt.status == "error":
        return [finding("sts-txt-lookup-failed", f"TXT lookup of {owner} failed: {txt.error}")]
    sel = facts.sts_record
    if txt.status != "ok" or sel is None or sel.problem == "no-record":
        if txt.status == "ok":
            out.append(finding("sts-txt-unrelated", f"{owner} holds only TXT records that are not MTA-STS "
                                                    f"records: {_quote(txt.records)}"))
        if facts.policy_host is not None and facts.policy_host.ok:
            out.append(finding("sts-no-policy-host", f"mta-sts.{facts.domain} exists but {owner} has no "
                                                     f"v=STSv1 record"))
        else:
            out.append(finding("sts-txt-missing", f"no v=STSv1 TXT record at {owner}"))
        return out
    others = [r for r in txt.records if not _sts_like(r)]
    if others:
        out.append(finding("sts-txt-unrelated", f"{owner} also holds {_quote(others)}"))
    if sel.problem == "several-records":
        return out + [finding("sts-txt-multiple", f"{owner} holds more than one v=STSv1 record: "
                                                  f"{_quote([r for r in txt.records if r.startswith('v=STSv1')])}")]
    if sel.record is None:
        detail = (sel.problem or "").removeprefix("invalid: ")
        return out + [finding("sts-txt-invalid", f"{owner}: {detail}")]
    for warning in sel.record.warnings:
        out.append(finding("sts-txt-warning", f"{owner}: {warning}"))
    if facts.sts_cname:
        out.append(finding("sts-txt-cname", f"{owner} is a CNAME for {facts.sts_cname}; the policy is still "
                                            f"fetched from mta-sts.{facts.domain}"))
    fetch = facts.fetch
    if fetch is None:
        return out
    if fetch.problem is not None:
        code = _FETCH_CODES.get(str(fetch.problem), "sts-policy-connect")
        return out + [finding(code, f"https://mta-sts.{facts.domain}/.well-known/mta-sts.txt: {fetch.detail}")]
    if fetch.certificate_not_after is not None:
        left = fetch.certificate_not_after - (now or _dt.datetime.now(_dt.UTC)).timestamp()
        if left < EXPIRY_WARNING_DAYS * 86400:
            days = max(int(left // 86400), 0)
            out.append(finding("sts-policy-certificate-expiring",
                               f"mta-sts.{facts.domain}: the certificate expires in {days} day(s); once it has, "
                               "senders cannot fetch the policy"))
    if facts.policy is None:
        return out + [finding("sts-policy-invalid", f"the policy does not parse: {facts.policy_error}")]
    policy = facts.policy
    for warning in policy.warnings:
        out.append(finding("sts-policy-warning", f"policy: {warning}"))
    enforce = policy.mode == "enforce"
    if enforce:
        out.append(finding("sts-mode-enforce", f"policy id {sel.record.id}: mode enforce, max_age "
                                               f"{policy.max_age}"))
    elif policy.mode == "testing":
        out.append(finding("sts-mode-testing", f"policy id {sel.record.id}: mode testing"))
    else:
        out.append(finding("sts-mode-none", f"policy id {sel.record.id}: mode none"))
    if policy.mode != "none" and policy.max_age < SHORT_MAX_AGE:
        out.append(finding("sts-max-age-short", f"max_age {policy.max_age} s is under one week ({SHORT_MAX_AGE})"))
    if policy.mode == "none":
        return out
    mx_ok = facts.mx is not None and facts.mx.status == "ok"
    hosts = [h for h in mx_hosts(facts, max_hosts) if h != facts.domain or mx_ok]
    for host in hosts:
        if matching_pattern(policy.mx, host) is None:
            severity = "error" if enforce else "warning"
            out.append(finding("sts-mx-not-covered", f"MX host {host} matches none of the policy's mx patterns "
                                                     f"({', '.join(policy.mx)})", host, severity=severity))
    for pattern in policy.mx:
        if hosts and not any(mx_matches(pattern, h) for h in hosts):
            out.append(finding("sts-pattern-unused", f"mx pattern {pattern} matches no MX host", pattern))
        if pattern.startswith("*.") and pattern[2:] in _SHARED_ZONES:
            out.append(finding("sts-pattern-broad", f"mx pattern {pattern} covers hosts of every customer of "
                                                    f"{pattern[2:]}", pattern))
    return out


def _quote(records) -> str:
    return ", ".join(repr(r if len(r) <= 80 else r[:77] + "...") for r in records)


# --- DANE (DNS part) ---------------------------------------------------------------------------------------------


def dane_dns_rules(facts: DomainFacts) -> list[Finding]:
    out: list[Finding] = []
    possible = dane_possible(facts)
    states = {}
    for host, hf in facts.hosts.items():
        if hf.addresses is None and not is_ip_literal(host):
            continue
        state = host_state(hf)
        if not possible:
            # DANE-H-6: with an unsigned MX RRset senders never look at the MX hosts' TLSA records
            if state.state in ("usable", "unusable"):
                out.append(finding("dane-mx-insecure", f"{host} publishes DNSSEC-signed TLSA records, but the MX "
                                                       f"records of {facts.domain} are not signed: senders do not "
                                                       f"use them for this domain", host))
            continue
        states[host] = state
        tlsa = hf.tlsa
        if state.state == "error" and tlsa is not None and getattr(tlsa, "status", "") == "error":
            out.append(finding("dane-tlsa-lookup-failed", f"TLSA lookup _25._tcp.{hf.base or host} failed: "
                                                          f"{tlsa.error}", host))
        elif state.state == "no-tlsa" and tlsa is not None and tlsa.status == "ok" and not tlsa.secure:
            out.append(finding("dane-tlsa-insecure", f"_25._tcp.{hf.base or host} has TLSA records in an unsigned "
                                                     f"zone", host))
        elif state.state in ("usable", "unusable"):
            assert tlsa is not None  # host_state gives these two states only with a TLSA answer
            records = [TlsaRecord(*r) for r in tlsa.records]
            good, bad = partition(records)
            if not good:
                out.append(finding("dane-tlsa-unusable", f"{host}: none of the {len(records)} TLSA record(s) is "
                                                         f"usable", host))
            for record, why in bad:
                if why.startswith("superseded by a stronger digest"):
                    continue  # digest agility (DANE-H-36): publishing both digests is good practice
                out.append(finding("dane-tlsa-record-unusable", f"{host}: {_short_tlsa(record)}: {why}", host))
            if len(good) == 1:
                out.append(finding("dane-no-rollover", f"{host} has one usable TLSA record", host))
            for record in good:
                if record.selector == 0 and record.usage == 3:
                    out.append(finding("dane-cert-full", f"{host}: {_short_tlsa(record)} pins the whole "
                                                         f"certificate", host))
    for host, answer in facts.unused_tlsa.items():
        out.append(finding("dane-tlsa-insecure", f"_25._tcp.{host} has {len(answer.records)} TLSA record(s), but "
                                                 f"{host}'s address records are not DNSSEC-signed: senders ignore "
                                                 f"them", host))
    insecure = {f.subject for f in out if f.code == "dane-tlsa-insecure"}
    for host, state in states.items():
        if state.state == "no-tlsa" and host not in insecure:
            out.append(finding("dane-tlsa-missing", f"{host} is DNSSEC-signed but publishes no TLSA records", host))
    with_tlsa = [h for h, s in states.items() if s.state in ("usable", "unusable")]
    if with_tlsa and len(with_tlsa) < len(states):
        missing = sorted(h for h in states if h not in with_tlsa)
        out.append(finding("dane-partial", f"TLSA records for {', '.join(with_tlsa)} but not for "
                                           f"{', '.join(missing)}"))
    return out


def _short_tlsa(record: TlsaRecord) -> str:
    text = record.to_text()
    return text if len(text) <= 40 else text[:37] + "..."


# --- SMTP, per MX address ---------------------------------------------------------------------------------------


def smtp_rules(facts: DomainFacts, now: _dt.datetime) -> list[Finding]:
    out: list[Finding] = []
    enforce = facts.policy is not None and facts.policy.mode == "enforce"
    possible = dane_possible(facts)
    leaves: dict[str, set[bytes]] = {}
    for (host, address), probe in facts.probes.items():
        subject = f"{host} [{address}]"
        hf = facts.hosts.get(host)
        if not probe.ok:
            if probe.starttls_offered is False:
                out.append(finding("smtp-starttls-missing", f"{subject} does not offer STARTTLS", subject))
            elif probe.stage == "starttls":
                # offered, then refused (454) or garbled: a sender cannot start TLS either way
                out.append(finding("smtp-starttls-missing", f"{subject}: {probe.error}", subject))
            elif probe.stage == "handshake":
                error = probe.error or "TLS handshake failed"
                if any(hint in error.lower() for hint in _OLD_TLS_HINTS):
                    error += " (the MX may offer only TLS versions older than 1.2)"
                out.append(finding("smtp-tls-failed", f"{subject}: {error}", subject))
            else:
                out.append(finding("smtp-unreachable", f"{subject}: {probe.stage}: {probe.error}", subject))
            continue
        out.append(finding("smtp-tls-ok", f"{subject}: {probe.tls_version}, {probe.cipher}", subject))
        if probe.tls_version in ("TLSv1", "TLSv1.1", "SSLv3"):
            out.append(finding("smtp-tls-old", f"{subject} negotiated {probe.tls_version}", subject))
        if probe.leaf:
            leaves.setdefault(host, set()).add(probe.leaf)
        dane = _dane_for(hf, probe, host, facts.domain, now) if possible else None
        if dane is not None:
            out.append(dane)
        pkix = probe.pkix
        dane_ok = dane is not None and dane.code == "dane-ok"
        if pkix is not None and not pkix.ok:
            # With DANE the web PKI does not matter for DANE senders, but MTA-STS senders still apply it.
            if dane_ok:
                if enforce:
                    out.append(finding("dane-sts-webpki", f"{subject}: {_pkix_reason(pkix, probe.leaf)}",
                                       subject))
            else:
                code = {"certificate-expired": "smtp-certificate-expired",
                        "certificate-host-mismatch": "smtp-certificate-host-mismatch"}.get(
                    pkix.result_type or "", "smtp-certificate-untrusted")
                severity = "error" if enforce else "warning"
                out.append(finding(code, f"{subject}: {_pkix_reason(pkix, probe.leaf)}", subject,
                                   severity=severity))
        days = _days_left(probe.leaf, now)
        if days is not None and 0 <= days < EXPIRY_WARNING_DAYS:
            out.append(finding("smtp-certificate-expiring", f"{subject}: the certificate expires in {days} day(s)",
                               subject))
    for host, certs in leaves.items():
        if len(certs) > 1:
            out.append(finding("smtp-certificate-inconsistent", f"{host}: {len(certs)} different certificates on "
                                                                f"its addresses", host))
    if facts.smtp_checked:
        for host, hf in facts.hosts.items():
            addresses = getattr(hf.addresses, "addresses", ()) if getattr(hf.addresses, "status", "") == "ok" else ()
            skipped = [a for a in addresses if (host, a) not in facts.probes and (host, a) not in facts.refused]
            if skipped and not is_ip_literal(host):
                out.append(finding("check-limited", f"{host}: {len(addresses) - len(skipped)} of its "
                                                    f"{len(addresses)} addresses were probed", host))
    return out


def _dane_for(hf: HostFacts | None, probe, host: str, domain: str, now: _dt.datetime) -> Finding | None:
    if hf is None or hf.tlsa is None or hf.tlsa.status != "ok" or not hf.tlsa.secure:
        return None
    state = host_state(hf)
    if state.state not in ("usable", "unusable"):
        return None
    records = [TlsaRecord(*r) for r in hf.tlsa.records]
    names = [n for n in dict.fromkeys([hf.base or host, host, domain]) if n]
    result = verify_chain(records, list(probe.chain), names=names, now=now)
    subject = f"{host} [{probe.address}]"
    if result.ok and result.authenticated:
        return finding("dane-ok", f"{subject}: {result.reason}", subject)
    if result.ok:
        return None  # all records unusable: reported by dane-tlsa-unusable
    f = finding("dane-mismatch", f"{subject}: {result.reason}", subject)
    if result.result_type and result.result_type != f.result_type:
        f = Finding(f.code, f.severity, f.message, result.result_type, f.requirement, f.fix, f.subject)
    return f


def _pkix_reason(pkix, leaf: bytes | None) -> str:
    """The PKIX verdict in words; an untrusted chain names its issuer and the trust store it was checked with."""
    if pkix.result_type != "certificate-not-trusted" or "candidates exhausted" not in pkix.reason:
        return pkix.reason
    issuer = ""
    with contextlib.suppress(Exception):  # hostile input: no issuer then
        issuer = x509.load_der_x509_certificate(leaf).issuer.rfc4514_string() if leaf else ""
    by = f" (issued by {issuer})" if issuer else ""
    return f"the certificate{by} does not chain to a root in {pkix.store}"


def _days_left(der: bytes | None, now: _dt.datetime) -> int | None:
    if not der:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
    except Exception:  # noqa: BLE001 - hostile input
        return None
    return (cert.not_valid_after_utc - now).days


# --- TLSRPT -------------------------------------------------------------------------------------------------


def tlsrpt_rules(facts: DomainFacts) -> list[Finding]:
    txt = facts.tlsrpt_txt
    if txt is None:
        return []
    owner = f"_smtp._tls.{facts.domain}"
    if txt.status == "error":
        return [finding("tlsrpt-lookup-failed", f"TXT lookup of {owner} failed: {txt.error}")]
    sel = facts.tlsrpt
    if txt.status != "ok" or sel is None or sel.problem == "no-record":
        near = sel.error if sel is not None else None
        if near is not None:
            return [finding("tlsrpt-invalid", f"{owner}: {near}")]
        return [finding("tlsrpt-missing", f"no v=TLSRPTv1 TXT record at {owner}")]
    if sel.problem == "several-records":
        return [finding("tlsrpt-multiple", f"{owner} holds more than one v=TLSRPTv1 record")]
    if sel.record is None:
        err = sel.error
        if err is not None and getattr(err, "code", "") == "rua-missing-mailto":
            return [finding("tlsrpt-rua-no-mailto", f"{owner}: {err}")]
        return [finding("tlsrpt-invalid", f"{owner}: {err or sel.problem}")]
    out: list[Finding] = []
    for warning in sel.record.warnings:
        if warning.code == "rua-missing-mailto":
            out.append(finding("tlsrpt-rua-no-mailto", f"{owner}: {warning.message}"))
        elif warning.code == "rua-unsupported-scheme":
            out.append(finding("tlsrpt-rua-scheme", f"{owner}: {warning.message}"))
        else:
            # a grammar break may make strict reporters ignore the record; no usable address means no reports
            severity = "error" if warning.breaks_grammar or warning.code == "rua-none-usable" else None
            out.append(finding("tlsrpt-warning", f"{owner}: {warning.message}", severity=severity))
    for domain, answer in facts.rua_mx.items():
        null_mx = answer.status == "ok" and all(not h for _p, h in answer.records)
        if answer.status == "nxdomain" or null_mx:
            out.append(finding("tlsrpt-rua-no-mx", f"rua domain {domain} cannot receive mail ({answer.status})",
                               domain))
    if sel.record.usable_rua:
        out.append(finding("tlsrpt-ok", f"{owner}: reports go to {', '.join(sel.record.usable_rua)}"))
    sts_record = facts.sts_record is not None and facts.sts_record.record is not None
    has_sts = sts_record and (facts.policy is None or facts.policy.mode != "none")
    has_dane = dane_possible(facts) and any(host_state(hf).state in ("usable", "unusable")
                                            for hf in facts.hosts.values() if hf.addresses is not None)
    if not has_sts and not has_dane:
        out.append(finding("tlsrpt-no-policy", f"{owner} is published, but the domain has neither MTA-STS nor "
                                               f"DANE"))
    return out
