"""``mxsec check``: the domain checker (interface.md). Composes :mod:`mxsec.check`; prints.

Exit 0 when no finding is an error, 1 when some are, 2 for usage errors and unreadable input.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import click

from mxsec.cli import _fail, _guarded, _load, network_options

#: domain names read from --from-file at most
MAX_DOMAINS = 100_000


@click.command("check")
@click.argument("domains", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per domain per line (JSON Lines).")
@click.option("--no-smtp", is_flag=True, help="Skip the STARTTLS probes of the MX hosts (DNS and HTTPS only).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, writable=True),
              help="Also write a standalone HTML report to this file.")
@click.option("--from-file", "from_file", type=click.File("r"),
              help="Read domains from this file (one per line, # comments; - for stdin).")
@click.option("--concurrency", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="Domains checked at the same time.")
@click.option("--smtp-port", default=25, show_default=True, type=click.IntRange(1, 65535), hidden=True,
              help="SMTP port of the MX hosts (for labs and tests).")
@click.option("--smtp-timeout", default=15.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Time limit of each SMTP step, seconds.")
@click.option("-v", "--verbose", is_flag=True, help="Show the fix under informational findings too.")
@network_options
@_guarded
def check(domains, as_json, no_smtp, html_file, from_file, concurrency, smtp_port, smtp_timeout, verbose,
          config_path, nameservers, ca_file, timeout, allow_addresses):
    """Check DOMAIN's MX, MTA-STS, DANE and TLSRPT setup the way a sending MTA sees it.

    Every finding has a stable code, a severity, the RFC 8460 result type a sender would report and the
    requirement it comes from; docs/check.md lists them all with their fixes.
    """
    from mxsec.names import DomainError, normalize_domain

    names = list(domains)
    if from_file is not None:
        for number, line in enumerate(from_file, 1):
            text = line.split("#", 1)[0].strip()
            if text:
                names.append(text)
            if len(names) > MAX_DOMAINS:
                _fail(f"--from-file: more than {MAX_DOMAINS} domains")
    if not names:
        _fail("no domain given (DOMAIN... or --from-file FILE)")
    targets: list[str] = []
    for name in names:
        try:
            targets.append(normalize_domain(name))
        except DomainError as exc:
            _fail(f"{name!r} is not a domain name: {exc}")
    targets = list(dict.fromkeys(targets))
    config, _ = _load(config_path, nameservers=nameservers, ca_file=ca_file, timeout=timeout,
                      allow_addresses=allow_addresses)
    errors = asyncio.run(_run(targets, config, as_json=as_json, smtp=not no_smtp, html_file=html_file,
                              concurrency=concurrency, smtp_port=smtp_port, smtp_timeout=smtp_timeout,
                              verbose=verbose))
    sys.exit(1 if errors else 0)


async def _run(targets, config, *, as_json, smtp, html_file, concurrency, smtp_port, smtp_timeout, verbose) -> int:
    from rich.console import Console

    from mxsec.check.gather import CheckSettings, gather
    from mxsec.check.report import render_html, render_terminal, result_json
    from mxsec.check.rules import judge
    from mxsec.daemon.app import make_adapters
    from mxsec.net.guard import AddressGuard

    dns, fetcher = make_adapters(config)
    guard = AddressGuard(config.net.allow_addresses)
    roots, label = None, "system"
    if smtp:
        from mxsec.net.smtp import load_trust_store

        try:
            roots, label = load_trust_store(config.tls.ca_file)
        except (OSError, ValueError) as exc:
            _fail(f"trust store: {getattr(exc, 'strerror', None) or exc}")
    settings = CheckSettings(smtp=smtp, smtp_port=smtp_port, smtp_timeout=smtp_timeout)
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False)
    bulk = len(targets) > 1
    domain_slots = asyncio.Semaphore(concurrency)
    smtp_slots = asyncio.Semaphore(settings.smtp_concurrency)
    results: list = [None] * len(targets)
    error_domains = 0
    started = time.monotonic()
    progress = None
    if bulk and err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=err, transient=True)
        task = progress.add_task("check", total=len(targets))
        progress.start()

    async def one(index: int, domain: str) -> None:
        nonlocal error_domains
        async with domain_slots:
            facts = await gather(domain, dns, fetcher, guard, settings, smtp_slots, roots=roots, ca_label=label)
        findings = judge(facts, settings.max_hosts)
        results[index] = (facts, findings)
        if any(f.severity == "error" for f in findings):
            error_domains += 1
        if as_json:
            out.file.write(json.dumps(result_json(facts, findings), separators=(",", ":")) + "\n")
            out.file.flush()
        elif not bulk:
            render_terminal(out, facts, findings, verbose=verbose)
        if progress is not None:
            progress.advance(task)

    try:
        await asyncio.gather(*(one(i, d) for i, d in enumerate(targets)))
    finally:
        if progress is not None:
            progress.stop()
        await fetcher.aclose()
    elapsed = time.monotonic() - started
    if bulk and not as_json:
        for facts, findings in results:
            render_terminal(out, facts, findings, verbose=verbose)
    if bulk:
        _summary(err if as_json else out, results, elapsed)
    if html_file:
        page = render_html(results)
        try:
            with open(html_file, "w", encoding="utf-8") as fh:
                fh.write(page)
        except OSError as exc:
            _fail(f"{html_file}: {exc.strerror or exc}")
    return error_domains


def _summary(console, results, elapsed: float) -> None:
    from collections import Counter

    from rich.table import Table

    per_domain = Counter()
    codes = Counter()
    for _facts, findings in results:
        worst = "ok"
        for f in findings:
            if f.severity == "error":
                worst = "error"
                codes[f.code] += 1
            elif f.severity == "warning" and worst == "ok":
                worst = "warning"
        per_domain[worst] += 1
    table = Table(title=f"{len(results)} domains in {elapsed:.2f} s ({len(results) / max(elapsed, 1e-9):.1f}/s)")
    table.add_column("result")
    table.add_column("domains", justify="right")
    for key in ("error", "warning", "ok"):
        table.add_row(key, str(per_domain[key]))
    for code, count in codes.most_common(10):
        table.add_row(f"  {code}", str(count))
    console.print(table)
