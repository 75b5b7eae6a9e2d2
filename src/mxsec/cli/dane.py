"""``mxsec dane``: tools for the publishing side of DANE for SMTP (RFC 7672).

* ``mxsec dane verify --host MX`` — look up the MX host's addresses and TLSA records (with their DNSSEC state),
  probe every address with STARTTLS (SNI = the MX host) and check the presented chain against the records
  (:mod:`mxsec.check.dane_host`); this module only reads options and prints. Exit 0 only when DANE applies
  and every address authenticates.
* ``mxsec dane rollover --current A.pem --next B.pem --host MX`` — print the "current + next" rollover plan
  of :func:`mxsec.dane.rollover.plan_rollover` (no network).

Exit status as everywhere: 0 success, 1 the command ran and found problems, 2 usage error or unreadable input
(one line on stderr).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json

import click

from mxsec.cli.common import _fail, _guarded, _load, network_options

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
    from mxsec.check.dane_host import verify_host

    report = asyncio.run(verify_host(dns, guard, host_name, port, tuple(overrides), timeout=step_timeout,
                                     ehlo_name=ehlo_name, roots=roots, store_label=store_label))
    if as_json:
        click.echo(json.dumps(report, sort_keys=False))
    else:
        for line in _verify_lines(report):
            click.echo(line)
    raise SystemExit(0 if report["ok"] else 1)


def _short(record_text: str) -> str:
    params, _, data = record_text.rpartition(" ")
    return record_text if len(data) <= _HEX_SHOWN else f"{params} {data[:_HEX_SHOWN]}…"


def _where(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _verify_lines(report: dict) -> list[str]:
    from mxsec.check.dane_host import MAX_ADDRESSES, count_text

    lines = [f"DANE check of {report['host']}, port {report['port']}"]
    tlsa = report["tlsa"]
    if tlsa["status"] == "ok":
        count = len(tlsa["records"])
        state = "DNSSEC-secure" if tlsa["secure"] else "NOT DNSSEC-validated"
        ttl = f", TTL {tlsa['ttl']} s" if tlsa["ttl"] is not None else ""
        via = f" (via CNAME {tlsa['canonical']})" if tlsa["canonical"] and \
            tlsa["canonical"].rstrip(".") != tlsa["owner"].rstrip(".") else ""
        lines.append(f"  TLSA {tlsa['owner']}{via}: {count_text(count, 'record', 'records')}, {state}{ttl}")
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
