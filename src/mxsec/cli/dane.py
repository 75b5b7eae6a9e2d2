"""``mxsec dane``: tools for the publishing side of DANE for SMTP (RFC 7672).

* ``mxsec dane verify --host MX`` — look up the MX host's addresses and TLSA records (with their DNSSEC state),
  probe every address with STARTTLS (SNI = the MX host) and check the presented chain against the records
  with :func:`mxsec.dane.verify.verify_chain`. Exit 0 only when DANE applies and every address authenticates.
* ``mxsec dane rollover --current A.pem --next B.pem --host MX`` — print the "current + next" rollover plan
  of :func:`mxsec.dane.rollover.plan_rollover` (no network).

Exit status as everywhere: 0 success, 1 the command ran and found problems, 2 usage error or unreadable input
(one line on stderr).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import ipaddress
import json

import click

from mxsec.cli.common import _fail, _guarded, _load, network_options

#: Most addresses probed for one host (the rest are listed as not probed).
MAX_ADDRESSES = 16
#: Most hex digits of certificate association data shown in readable output for Full(0) records.
_HEX_SHOWN = 128


@click.group("dane")
def dane() -> None:
    """DANE for SMTP (RFC 7672): check a live MX, plan a TLSA rollover."""


# ------------------------------------------------------------------------------------------------ verify


@dane.command("verify")
@click.option("--host", required=True, metavar="MXHOST", help="The MX host name (as in the MX record).")
@click.option("--port", default=25, show_default=True, type=click.IntRange(1, 65535),
              help="SMTP port; the TLSA records are looked up at _PORT._tcp.MXHOST.")
@click.option("--address", "addresses", multiple=True, metavar="IP",
              help="Probe this address instead of the host's A/AAAA records (repeatable).")
@click.option("--ehlo", "ehlo_name", metavar="NAME", help="EHLO name (default: this host's name or mxsec.invalid).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@network_options
@_guarded
def verify(host, port, addresses, ehlo_name, as_json, config_path, nameservers, ca_file, timeout, allow_addresses):
    """Check that MXHOST's TLS certificate matches its DNSSEC-signed TLSA records, address by address.

    --ca-file adds an informational PKIX check of each chain (what MTA-STS senders would see); it does not
    change the DANE verdict.
    """
    from mxsec.errors import ParseError
    from mxsec.names import normalize_domain

    try:
        host_name = normalize_domain(host)
    except ParseError as exc:
        _fail(f"--host: {host!r} is not a host name: {exc}")
    overrides: list[str] = []
    for item in addresses:
        try:
            ip = ipaddress.ip_address(item.strip().strip("[]"))
        except ValueError:
            _fail(f"--address: {item!r} is not an IP address")
        if str(ip) not in overrides:
            overrides.append(str(ip))
    from mxsec.net.smtp import valid_ehlo_name

    if ehlo_name is not None and not valid_ehlo_name(ehlo_name):
        _fail(f"--ehlo: {ehlo_name!r} is not a host name or address literal")
    config, _ = _load(config_path, nameservers=nameservers, ca_file=ca_file, timeout=timeout,
                      allow_addresses=allow_addresses)
    from mxsec.config.wiring import make_dns_and_guard

    dns, guard = make_dns_and_guard(config)
    roots = None
    store_label = None
    if config.tls.ca_file:
        from mxsec.net.smtp import load_trust_store

        try:
            roots, store_label = load_trust_store(config.tls.ca_file)
        except ValueError as exc:
            _fail(f"--ca-file: {exc}")
    from mxsec.net.smtp import DEFAULT_TIMEOUT

    step_timeout = float(timeout) if timeout else DEFAULT_TIMEOUT
    report = asyncio.run(_verify(host_name, port, overrides, dns, guard, step_timeout, ehlo_name, roots,
                                 store_label))
    if as_json:
        click.echo(json.dumps(report, sort_keys=False))
    else:
        for line in _verify_lines(report):
            click.echo(line)
    raise SystemExit(0 if report["ok"] else 1)


async def _verify(host, port, overrides, dns, guard, timeout, ehlo_name, roots, store_label) -> dict:
    """Look up, probe, decide. Returns the report (the ``--json`` object)."""
    from mxsec.dane.tlsa import from_rdata, partition, tlsa_owner
    from mxsec.errors import ParseError

    base = host  # the TLSA base domain: SNI and first reference identifier (DANE-H-15, H-33)
    if overrides:
        tlsa_answer = await dns.tlsa(host, port)
        addr_answer = None
    else:
        from mxsec.dane.gather import host_facts

        # the daemon's own rules: A/AAAA first, CNAME-expanded name then the MX host name (DANE-H-13, EC-29)
        facts = await host_facts(dns, host, port)
        addr_answer = facts.addresses
        if facts.base is not None:
            base, tlsa_answer = facts.base, facts.tlsa
        else:
            tlsa_answer = facts.tlsa if facts.tlsa is not None else await dns.tlsa(host, port)
    owner = tlsa_owner(base, port)

    records, malformed = [], []
    for item in tlsa_answer.records if tlsa_answer.ok else ():
        try:
            records.append(from_rdata(*item))
        except ParseError as exc:  # pragma: no cover - dnspython already range-checks
            malformed.append(str(exc))
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
    if addr_answer is None:
        addr_part = {"source": "command line", "status": "ok", "secure": None, "error": None,
                     "addresses": list(overrides)}
        candidates = list(overrides)
    else:
        addr_part = {"source": "dns", "status": addr_answer.status, "secure": bool(addr_answer.secure),
                     "error": addr_answer.error, "addresses": list(addr_answer.addresses)}
        candidates = list(addr_answer.addresses)

    report = {
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

    # 1. Lookup errors are errors (DANE-H-4), not "no records"; nothing can be checked.
    if tlsa_answer.status == "error":
        report["reason"] = (f"TLSA lookup for {owner} failed: {tlsa_answer.error or 'lookup error'} — a lookup "
                            "error, not 'no records': senders defer mail for this MX host (RFC 7672 §2.2)")
        report["summary"] = "FAIL: " + report["reason"]
        return report
    if addr_answer is not None and addr_answer.status == "error":
        report["reason"] = f"address lookup for {host} failed: {addr_answer.error or 'lookup error'}"
        report["summary"] = "FAIL: " + report["reason"]
        return report
    if tlsa_answer.status in ("nxdomain", "nodata"):
        denial = "DNSSEC-secure" if tlsa_answer.secure else "insecure"
        report["reason"] = (f"no TLSA records at {owner} ({denial} {tlsa_answer.status}): DANE does not apply "
                            f"to {host}")
        report["summary"] = "FAIL: " + report["reason"]
        return report
    if not candidates:
        report["reason"] = f"{host} has no A or AAAA records ({addr_part['status']}): nothing to connect to"
        report["summary"] = "FAIL: " + report["reason"]
        return report

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

    # 3. Probe each address (the SSRF guard first) and check the chain.
    from mxsec.dane.verify import verify_chain
    from mxsec.net.smtp import probe_starttls

    allowed: list[str] = []
    results: list[dict] = []
    for ip in candidates[:MAX_ADDRESSES]:
        refusal = guard.check(ip)
        if refusal is not None:
            results.append({"address": ip, "port": port, "probed": False, "ok": False, "authenticated": False,
                            "result_type": None,
                            "reason": f"not probed: {refusal} (allow it with --allow-address)"})
        else:
            allowed.append(ip)
    report["not_probed"] = candidates[MAX_ADDRESSES:]

    probes = await asyncio.gather(*(
        probe_starttls(ip, port, server_name=base, ehlo_name=ehlo_name, timeout=timeout,
                       pkix_names=[host] if roots is not None else None, roots=roots, store_label=store_label)
        for ip in allowed
    ))
    now = _dt.datetime.now(_dt.UTC)
    for probe in probes:
        entry = {"address": probe.address, "port": probe.port, "probed": True, "sni": probe.server_name,
                 "probe": probe.as_dict(), "chain": [_describe_cert(der, i) for i, der in enumerate(probe.chain)]}
        if not probe.ok:
            entry.update(ok=False, authenticated=False, result_type=_probe_result_type(probe),
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
                match=_match_text(result, probe.chain) if result.authenticated else None,
            )
        results.append(entry)
    order = {ip: i for i, ip in enumerate(candidates)}
    results.sort(key=lambda e: order.get(e["address"], len(order)))
    report["results"] = results

    passed = sum(1 for e in results if e["ok"])
    total = len(results)
    if report["dane_applies"] and total and passed == total and not report["not_probed"]:
        report["ok"] = True
        report["summary"] = (f"PASS: DANE applies to {host} and {_count(total, 'address', 'addresses')} "
                             f"authenticated with the TLSA records")
    elif report["dane_applies"]:
        report["summary"] = f"FAIL: {total - passed} of {_count(total, 'address', 'addresses')} did not authenticate"
        if report["not_probed"]:
            report["summary"] += f"; {len(report['not_probed'])} more not probed (limit {MAX_ADDRESSES})"
    else:
        report["summary"] = "FAIL: " + report["reason"]
    return report


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _probe_result_type(probe) -> str | None:
    """RFC 8460 result type for a probe that did not reach a TLS session (None: not a TLS negotiation failure)."""
    if probe.stage == "starttls":
        return "starttls-not-supported"
    if probe.stage == "handshake":
        return "validation-failure"
    return None


def _match_text(result, chain) -> str:
    """``3 1 1 matched the leaf certificate`` and friends."""
    from mxsec.dane.tlsa import DANE_TA, describe
    from mxsec.dane.verify import ANCHOR_FROM_DNS

    record = result.matched
    params = f"{record.usage} {record.selector} {record.mtype}"
    kind = describe(record)
    if record.usage != DANE_TA:
        return f"{params} matched the leaf certificate ({kind})"
    if result.depth == ANCHOR_FROM_DNS:
        return f"{params} supplied the trust anchor from DNS ({kind}); chain and name checks passed"
    if result.depth == 0:
        return f"{params} matched the self-issued leaf as trust anchor ({kind}); name checks passed"
    subject = _describe_cert(chain[result.depth], result.depth)["subject"] if result.depth < len(chain) else "?"
    return (f"{params} matched chain certificate {result.depth} ({subject}) as trust anchor ({kind}); "
            "chain and name checks passed")


def _describe_cert(der: bytes, index: int) -> dict:
    from cryptography import x509

    from mxsec.dane.tlsa import TlsaError, tlsa_for_certificate

    info: dict = {"index": index, "sha256": hashlib.sha256(der).hexdigest(), "subject": None, "issuer": None,
                  "not_after": None}
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


def _short(record_text: str) -> str:
    params, _, data = record_text.rpartition(" ")
    return record_text if len(data) <= _HEX_SHOWN else f"{params} {data[:_HEX_SHOWN]}…"


def _where(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _verify_lines(report: dict) -> list[str]:
    lines = [f"DANE check of {report['host']}, port {report['port']}"]
    tlsa = report["tlsa"]
    if tlsa["status"] == "ok":
        count = len(tlsa["records"])
        state = "DNSSEC-secure" if tlsa["secure"] else "NOT DNSSEC-validated"
        ttl = f", TTL {tlsa['ttl']} s" if tlsa["ttl"] is not None else ""
        via = f" (via CNAME {tlsa['canonical']})" if tlsa["canonical"] and \
            tlsa["canonical"].rstrip(".") != tlsa["owner"].rstrip(".") else ""
        lines.append(f"  TLSA {tlsa['owner']}{via}: {_count(count, 'record', 'records')}, {state}{ttl}")
        for rec in tlsa["records"]:
            status = "usable" if rec["usable"] else f"unusable: {rec['reason']}"
            lines.append(f"    {_short(rec['record'])}  {status}")
    elif tlsa["status"] == "error":
        lines.append(f"  TLSA {tlsa['owner']}: LOOKUP ERROR: {tlsa['error']}")
    else:
        lines.append(f"  TLSA {tlsa['owner']}: none ({tlsa['status']}, "
                     f"{'DNSSEC-secure' if tlsa['secure'] else 'insecure'} denial)")
    addr = report["addresses"]
    if addr["source"] == "dns":
        if addr["status"] == "ok":
            state = "DNSSEC-secure" if addr["secure"] else "NOT DNSSEC-validated"
            lines.append(f"  addresses (A/AAAA): {', '.join(addr['addresses'])} — {state}")
        elif addr["status"] == "error":
            lines.append(f"  addresses (A/AAAA): LOOKUP ERROR: {addr['error']}")
        else:
            lines.append(f"  addresses (A/AAAA): none ({addr['status']})")
    else:
        lines.append(f"  addresses (from --address, DNS not asked): {', '.join(addr['addresses'])}")
    if report["reason"] and not report["dane_applies"] and report["results"]:
        lines.append(f"  note: {report['reason']}; the results below show what would happen if it did")
    applies = report["dane_applies"]
    for entry in report["results"]:
        where = _where(entry["address"], entry["port"])
        if entry["ok"]:
            word = "PASS" if applies else "would pass"
        else:
            word = "FAIL" if applies else "would fail"
        if entry.get("authenticated"):
            probe = entry["probe"]
            lines.append(f"  {where}  {word}  {entry['match']} — {probe['tls_version']}, {probe['cipher']}")
        else:
            kind = f"{entry['result_type']}: " if entry.get("result_type") else ""
            lines.append(f"  {where}  {word}  {kind}{entry['reason']}")
            chain = entry.get("chain") or []
            if chain and entry.get("probed") and entry["probe"]["ok"]:
                leaf = chain[0]
                lines.append(f"      presented: {leaf['subject']} (issuer {leaf['issuer']}, "
                             f"{len(chain)} certificate{'s' if len(chain) != 1 else ''})")
                if leaf.get("tlsa_3_1_1"):
                    lines.append(f"      the leaf's own record would be: {leaf['tlsa_3_1_1']}")
        probe = entry.get("probe") or {}
        pkix = probe.get("pkix")
        if pkix:
            verdict = "trusted, name matches" if pkix["ok"] else f"{pkix['result_type']}: {pkix['reason']}"
            lines.append(f"      PKIX (informational, {pkix['store']}): {verdict}")
    for ip in report["not_probed"]:
        lines.append(f"  {ip}  not probed (at most {MAX_ADDRESSES} addresses)")
    lines.append(report["summary"])
    return lines


# ------------------------------------------------------------------------------------------------ rollover


@dane.command("rollover")
@click.option("--current", "current_path", required=True, type=click.Path(dir_okay=False), metavar="CERT.pem",
              help="The certificate in use now (with --usage 2: the current issuing CA certificate).")
@click.option("--next", "next_path", required=True, type=click.Path(dir_okay=False), metavar="CERT.pem",
              help="The certificate to switch to (with --usage 2: the next CA certificate).")
@click.option("--host", required=True, metavar="MXHOST", help="The MX host name the TLSA records belong to.")
@click.option("--port", default=25, show_default=True, type=click.IntRange(1, 65535), help="SMTP port.")
@click.option("--usage", default=3, show_default=True, type=click.IntRange(0, 255),
              help="3 = DANE-EE (server certificate), 2 = DANE-TA (issuing CA).")
@click.option("--selector", default=1, show_default=True, type=click.IntRange(0, 255),
              help="1 = public key (survives renewals with the same key), 0 = full certificate.")
@click.option("--mtype", default=1, show_default=True, type=click.IntRange(0, 255),
              help="1 = SHA2-256, 2 = SHA2-512, 0 = full data.")
@click.option("--ttl", default=3600, show_default=True, type=click.IntRange(0, 2**31 - 1), metavar="SECONDS",
              help="TTL of the TLSA RRset.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_guarded
def rollover(current_path, next_path, host, port, usage, selector, mtype, ttl, as_json):
    """Print the steps to roll MXHOST over from the current to the next certificate (no network)."""
    from mxsec.dane.rollover import MAX_INPUT, RolloverError, duration_text, plan_rollover
    from mxsec.errors import ParseError
    from mxsec.names import DomainError

    def read(path: str) -> bytes:
        with open(path, "rb") as handle:
            data = handle.read(MAX_INPUT + 1)
        return data

    current = read(current_path)
    nxt = read(next_path)
    try:
        plan = plan_rollover(current, nxt, host, port=port, usage=usage, selector=selector, mtype=mtype, ttl=ttl,
                             current_source=current_path, next_source=next_path)
    except DomainError as exc:
        _fail(f"--host: {host!r} is not a host name: {exc}")
    except (RolloverError, ParseError) as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps(plan.as_dict()))
        return
    click.echo(f"TLSA rollover for {plan.host}, port {plan.port}: {plan.parameters}, TTL {plan.ttl} s")
    for facts in (plan.current, plan.next):
        click.echo(f"  {facts.label} ({facts.source}): {facts.subject}, valid until {facts.not_after:%Y-%m-%d}")
        click.echo(f"      {facts.record.to_text()}")
    for warning in plan.warnings:
        click.echo(f"  warning: {warning}")
    if plan.same_record:
        click.echo("  Both give the same record: no DNS change is needed.")
    else:
        click.echo(f"  Total time before the switch: at least {duration_text(plan.wait_seconds)} after publishing.")
    for step in plan.steps:
        click.echo("")
        click.echo(f"{step.number}) {step.title}")
        for text in step.lines:
            click.echo(f"   {text}")
        for rr in step.records:
            click.echo(f"     {rr}")
