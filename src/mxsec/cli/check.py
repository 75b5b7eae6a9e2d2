"""``mxsec check``: the domain checker (docs/check.md). Composes :mod:`mxsec.check`; prints.

Exit 0 when no finding is an error, 1 when some are, 2 for usage errors and unreadable input (one line on
stderr, no traceback). docs/check.md describes the output. With ``--reports-db`` each domain also gets the
rollout advice of ``mxsec advise``, judged on the same facts (no second probe); the exit status stays the
check's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import os
import sys
import time

import click

from mxsec.cli.advise import ADVICE_WINDOW_OPTIONS, advice_options, check_window
from mxsec.cli.common import (
    OneLineCommand,
    _fail,
    _guarded,
    _load,
    network_options,
    refuse_without,
    smtp_probe_options,
)

#: domain names read from --from-file at most
MAX_DOMAINS = 100_000
#: longest line read from --from-file (a domain name is at most 253 octets; comments may be longer)
MAX_LINE = 4096


@click.command("check", cls=OneLineCommand)
@click.argument("domains", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per domain per line (JSON Lines).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False),
              help="Also write a standalone HTML report to this file.")
@click.option("--metrics-file", "metrics_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write Prometheus metrics (certificate expiry per MX address, findings by severity) to "
                   "FILE, for node_exporter's textfile collector; replaced atomically.")
@click.option("--from-file", "from_file", metavar="FILE",
              help="Read domains from FILE (one per line, # starts a comment; - for stdin).")
@click.option("--concurrency", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="Domains checked at the same time.")
@smtp_probe_options
@click.option("-v", "--verbose", is_flag=True, help="Show the fix under informational findings too.")
@advice_options("with it, each domain also gets the rollout advice of mxsec advise (--days, --min-success, "
                "--min-days: its window and thresholds)", from_environment=False)
@network_options
@_guarded
def check(domains, as_json, no_smtp, html_file, metrics_file, from_file, concurrency, smtp_port, smtp_timeout,
          verbose, db_url, days, min_success, min_days, config_path, nameservers, ca_file, timeout,
          allow_addresses):
    """Check DOMAIN's MX, MTA-STS, DANE and TLSRPT setup the way a sending MTA sees it.

    Every finding has a stable code, a severity, the RFC 8460 result type a sender would report and the
    requirement it comes from; docs/check.md lists them all with their fixes.
    """
    from mxsec.names import DomainError, normalize_domain

    names: list[tuple[str, str]] = [(name, f"{name!r}") for name in domains]
    if from_file is not None:
        names += _read_domain_file(from_file)
    if not names:
        _fail("no domain given (DOMAIN... or --from-file FILE)")
    targets: list[str] = []
    for name, where in names:
        try:
            targets.append(normalize_domain(name))
        except DomainError as exc:
            _fail(f"{where} is not a domain name: {exc}")
    targets = list(dict.fromkeys(targets))
    if db_url is None:  # check takes the database from its command line only (not MXSEC_REPORTS_DB)
        refuse_without(click.get_current_context(), ADVICE_WINDOW_OPTIONS, "--reports-db")
    else:
        check_window(days, min_days)
    if html_file:
        _check_writable(html_file, "--html")
    if metrics_file:
        _check_writable(metrics_file, "--metrics-file")
    config, _ = _load(config_path, nameservers=nameservers, ca_file=ca_file, timeout=timeout,
                      allow_addresses=allow_addresses)
    adviser = None
    if db_url is not None:
        adviser = _adviser(db_url, targets, days=days, min_success=min_success, min_days=min_days)
    _tolerant_stdout()
    errors = asyncio.run(_run(targets, config, as_json=as_json, smtp=not no_smtp, html_file=html_file,
                              metrics_file=metrics_file, concurrency=concurrency, smtp_port=smtp_port,
                              smtp_timeout=smtp_timeout, verbose=verbose, adviser=adviser))
    sys.exit(1 if errors else 0)


def _adviser(db_url: str, targets: list[str], *, days: int, min_success: float, min_days: int):
    """Read every target's report figures now (a bad database fails before any probe) and return the function
    that judges the rollout advice from a domain's checked facts and findings, as ``mxsec advise`` does."""
    from mxsec.check.advice import advise as judge_advice
    from mxsec.cli.advise import report_figures_for
    from mxsec.generate import default_policy_id

    now = _dt.datetime.now(_dt.UTC)
    figures = report_figures_for(db_url, targets, now.date(), days)

    def advice_for(facts, findings):
        return judge_advice(facts, findings, figures[facts.domain], now=now, id_for=default_policy_id,
                            min_success=min_success, min_days=min_days)

    return advice_for


def _read_domain_file(path: str) -> list[tuple[str, str]]:
    """``(name, where)`` for every name in ``path``; ``where`` says which line, for error messages."""
    label = "stdin" if path == "-" else path
    try:
        if path == "-":
            if sys.stdin is None:
                _fail("--from-file -: no standard input")
            data = sys.stdin.buffer.read(MAX_DOMAINS * 256 + 1)
        else:
            if os.path.isdir(path):
                _fail(f"--from-file {label}: is a directory")
            with open(path, "rb") as handle:
                data = handle.read(MAX_DOMAINS * 256 + 1)
    except OSError as exc:
        _fail(f"--from-file {label}: {exc.strerror or exc}")
    if len(data) > MAX_DOMAINS * 256:
        _fail(f"--from-file {label}: larger than {MAX_DOMAINS * 256} octets")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        _fail(f"--from-file {label}: not UTF-8 text (byte {exc.start})")
    out: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if len(line) > MAX_LINE:
            _fail(f"--from-file {label} line {number}: longer than {MAX_LINE} characters")
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if len(name.split()) > 1:
            _fail(f"--from-file {label} line {number}: one domain per line, got {name!r}")
        out.append((name, f"--from-file {label} line {number}: {name!r}"))
        if len(out) > MAX_DOMAINS:
            _fail(f"--from-file {label}: more than {MAX_DOMAINS} domains")
    return out


def _check_writable(path: str, option: str) -> None:
    """Fail now, not after checking every domain, when an output file cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        _fail(f"{option} {path}: is a directory")
    if not os.path.isdir(directory):
        _fail(f"{option} {path}: no such directory {directory}")
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        _fail(f"{option} {path}: not writable")


def _tolerant_stdout() -> None:
    """A terminal or pipe that cannot encode a character gets an escape instead of a crash."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]  # not on typing.TextIO
        except (AttributeError, ValueError):  # pragma: no cover - replaced streams
            pass


async def _run(targets, config, *, as_json, smtp, html_file, concurrency, smtp_port, smtp_timeout, verbose,
               metrics_file=None, adviser=None) -> int:
    from rich.console import Console

    from mxsec.check.findings import finding
    from mxsec.check.gather import CheckSettings, DomainFacts, gather
    from mxsec.check.report import render_html, render_terminal, result_json
    from mxsec.check.rules import judge
    from mxsec.config.wiring import make_adapters
    from mxsec.net.dns import remote_validators
    from mxsec.net.guard import AddressGuard

    guard = AddressGuard(config.net.allow_addresses)
    dns, fetcher = make_adapters(config, guard)
    roots, label = None, "the system store"
    if smtp:
        from mxsec.net.smtp import load_trust_store

        try:
            roots, label = load_trust_store(config.tls.ca_file)
        except (OSError, ValueError) as exc:
            await fetcher.aclose()
            _fail(f"trust store: {getattr(exc, 'strerror', None) or exc}")
    settings = CheckSettings(smtp=smtp, smtp_port=smtp_port, smtp_timeout=smtp_timeout)
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False)
    remote = remote_validators(dns.nameserver_addresses)
    if remote:  # DANE-H-2: the DNSSEC verdicts below are the resolver's AD bit
        click.echo(f"mxsec: warning: DNSSEC results trust the AD bit of {', '.join(remote)}, which is not on "
                   f"loopback; use a local validating resolver (--nameserver)", err=True)
    bulk = len(targets) > 1
    domain_slots = asyncio.Semaphore(concurrency)
    smtp_slots = asyncio.Semaphore(settings.smtp_concurrency)
    results: list = [None] * len(targets)
    advices: list = [None] * len(targets)
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
            try:
                facts = await gather(domain, dns, fetcher, guard, settings, smtp_slots, roots=roots,
                                     ca_label=label)
                findings = judge(facts, settings.max_hosts)
            except Exception as exc:  # noqa: BLE001 - one domain's bug must not end a bulk run
                facts = DomainFacts(domain)
                findings = [finding("check-failed", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")]
        results[index] = (facts, findings)
        advice = advices[index] = adviser(facts, findings) if adviser is not None else None
        if any(f.severity == "error" for f in findings):
            error_domains += 1
        if as_json:
            out.file.write(json.dumps(result_json(facts, findings, advice), separators=(",", ":")) + "\n")
            out.file.flush()
        elif not bulk:
            render_terminal(out, facts, findings, verbose=verbose, advice=advice)
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
        for (facts, findings), advice in zip(results, advices, strict=True):
            render_terminal(out, facts, findings, verbose=verbose, advice=advice)
    if bulk:
        _summary(err if as_json else out, results, elapsed)
    if html_file:
        _write_text(html_file, "--html", render_html(results))
    if metrics_file:
        from mxsec.check.report import metrics_text

        # written beside and renamed: the textfile collector never reads half a file
        _write_text(metrics_file, "--metrics-file", metrics_text(results, _dt.datetime.now(_dt.UTC)),
                    atomic=True)
    return error_domains


def _write_text(path: str, option: str, text: str, *, atomic: bool = False) -> None:
    target = f"{path}.{os.getpid()}.tmp" if atomic else path
    try:
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
        if atomic:
            os.replace(target, path)
    except OSError as exc:
        if atomic:
            with contextlib.suppress(OSError):
                os.unlink(target)
        _fail(f"{option} {path}: {exc.strerror or exc}")


def _summary(console, results, elapsed: float) -> None:
    from rich.table import Table

    from mxsec.check.report import summarize

    per_domain, errors, warnings = summarize(results)
    rate = len(results) / elapsed if elapsed > 0 else 0.0
    table = Table(title=f"{len(results)} domains in {elapsed:.2f} s ({rate:.1f} per second)")
    table.add_column("result")
    table.add_column("domains", justify="right")
    for key in ("error", "warning", "ok"):
        table.add_row(key, str(per_domain[key]))
    for heading, rows in (("most frequent errors", errors), ("most frequent warnings", warnings)):
        if rows:
            table.add_section()
            table.add_row(heading, "", style="bold")
            for code, count in rows[:10]:
                table.add_row(f"  {code}", str(count))
    console.print(table)
