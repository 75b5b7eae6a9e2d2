"""``mxsec lab``: the private mail internet (root). ``up``, ``down``, ``status``, ``run``, ``demo``.

::

    mxsec lab up [--scenarios FILE]          build everything (namespaces, DNS, MX, policy hosts, daemon, Postfix)
    mxsec lab run [--scenario NAME]... [--json]   one message per scenario through the real Postfix; table;
                                             exit 1 when a row differs from its expectation
    mxsec lab status [--json]
    mxsec lab down [-v]                      idempotent; also cleans up after a crash
    mxsec lab tlsrpt [--send] [--no-exim] [--json]
                                             the closed TLSRPT loop: the MTAs' sessions → follow-log → send →
                                             the lab's receiving side; table; exit 1 when a row differs
    mxsec lab attack KIND TARGET... [--seconds S] [--cert C] [--action A]
                                             switch an attack on in the attacker's router namespace
    mxsec lab attack --list | --clear        show the attacks switched on / switch them all off
    mxsec lab attacks [--no-exim] [--json]   the attacker scenarios against Postfix and Exim; table;
                                             exit 1 when a row differs from its expectation
    mxsec lab demo [--scenarios FILE] [--scenario NAME]... [--json] [--keep]
                                             up + run + tlsrpt + attacks + down (prefix mxsec-demo unless
                                             --prefix)

Every command takes ``--prefix`` (default ``mxsec``, or ``$MXSEC_LAB_PREFIX``): namespaces ``<prefix>-inet`` /
``<prefix>-sender`` / ``<prefix>-attk``, state in ``/run/mxsec-lab/<prefix>/``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from mxsec.lab.prerequisites import prerequisites

__all__ = ["lab", "render_attack_table", "render_loop_table", "render_table", "run_demo"]

DEFAULT_PREFIX = "mxsec"
DEMO_PREFIX = "mxsec-demo"


def _console() -> Any:
    from rich.console import Console

    width = Console().width
    return Console(width=max(width, 180) if not sys.stdout.isatty() else max(width, 120))


def _verdict_markup(row: Any) -> str:
    if row.verdict == "ok":
        return "[green]ok[/green]"
    if row.verdict == "xfail":
        return f"[yellow]xfail ({row.xfail} issue)[/yellow]"
    if row.verdict == "XPASS":
        return f"[magenta]XPASS (marked for the {row.xfail} issue)[/magenta]"
    return "[red bold]FAIL[/red bold]"


def render_table(console: Any, rows: Sequence[Any], title: str = "mxsec lab: one message per scenario") -> None:
    """The result table (scenario, domain, policy found, daemon reply, expected, actual, TLS seen, result),
    then one line per problem of each failing row."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in ("scenario", "domain", "policy found", "daemon reply", "expected", "actual (Postfix)",
                "TLS seen by the MX", "result"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.scenario, r.domain, r.policy, r.reply, r.expected, r.actual, r.tls_seen, _verdict_markup(r))
    console.print(table)
    for r in rows:
        if r.verdict in ("FAIL", "XPASS"):
            for p in r.problems or ["passes although marked expect_fail_until"]:
                console.print(f"  [bold]{r.scenario}[/bold]: {p}", highlight=False)


def _loop_verdict(row: Any) -> str:
    return {"ok": "[green]ok[/green]", "xfail": f"[yellow]xfail ({row.xfail})[/yellow]",
            "XPASS": "[magenta]XPASS (remove tlsrpt_xfail)[/magenta]"}.get(row.verdict, "[red bold]FAIL[/red bold]")


def _counts(d: dict[str, Any]) -> str:
    if not d:
        return "-"
    types = ", ".join(f"{t} {n}" for t, n in sorted(d.get("result_types", {}).items()))
    return f"{d.get('successful', 0)} ok / {d.get('failed', 0)} failed" + (f" ({types})" if types else "")


def render_loop_table(console: Any, result: Any) -> None:
    """The closed loop's table: per MTA and domain, the sessions the MX farm saw against what the receiving
    side's summary says (per rua scheme), DKIM of the mailed reports, the delivery of each rua."""
    from rich.table import Table

    table = Table(title=f"the closed TLSRPT loop ({result.day}, run {result.tag}): sessions seen by the MX "
                        "farm vs. the reports the lab's receiving side got", show_lines=False)
    for col in ("MTA", "domain", "sessions (MX farm)", "true outcome", "reported via mailto:", "DKIM",
                "reported via https:", "delivered", "result"):
        table.add_column(col, overflow="fold")
    for r in result.rows:
        mail, web = r.reported.get("mailto"), r.reported.get("https")
        delivered = ", ".join(f"{u.partition(':')[0]} {st}" for u, st in r.delivery.items()) or "-"
        dkim = (",".join(mail.get("dkim", [])) or "-") if mail is not None else ""
        table.add_row(
            r.mta, r.domain, str(r.sessions), _counts(r.truth) if r.sessions else "no connection",
            _counts(mail) if mail is not None else "(no mailto rua)", dkim,
            _counts(web) if web is not None else "(no https rua)", delivered, _loop_verdict(r))
    console.print(table)
    for mta, why in result.skipped.items():
        console.print(f"  {mta}: not part of this loop ({why})", highlight=False)
    for p in result.problems:
        console.print(f"  [red]problem[/red]: {p}", highlight=False)
    for r in result.rows:
        if r.verdict in ("FAIL", "XPASS"):
            for p in r.problems or ["passes although marked tlsrpt_xfail"]:
                console.print(f"  [bold]{r.mta} {r.domain}[/bold]: {p}", highlight=False)
    verdicts = [r.verdict for r in result.rows]
    console.print(f"closed loop: {verdicts.count('ok')} ok, {verdicts.count('FAIL')} failed, "
                  f"{verdicts.count('xfail')} known gaps (xfail), {verdicts.count('XPASS')} XPASS"
                  + ("" if not result.problems else f", {len(result.problems)} problem(s)"))


def render_attack_table(console: Any, rows: Sequence[Any]) -> None:
    """The attacker scenarios: one row per (attack, scenario, MTA), then one line per problem."""
    from rich.table import Table

    table = Table(title="mxsec lab: the on-path attacker (<prefix>-attk)", show_lines=False)
    for col in ("attack", "scenario", "MTA", "expected", "actual", "evidence (MX farm, impostors, queue)",
                "result"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(f"attack: {r.attack}", r.scenario, r.mta, r.expected, r.actual, r.evidence,
                      "[green]ok[/green]" if not r.failed else "[red bold]FAIL[/red bold]")
    console.print(table)
    for r in rows:
        for problem in r.problems:
            console.print(f"[red]{r.mta} / {r.attack} / {r.scenario}:[/red] {problem}")
    failed = sum(r.failed for r in rows)
    console.print(f"{len(rows) - failed} of {len(rows)} attacker rows as expected"
                  + (f", [red]{failed} FAIL[/red]" if failed else ""))


def _attacks_and_print(prefix: str, as_json: bool, *, exim: bool) -> int:
    from mxsec.lab import attackrun

    topo = _topo(prefix)
    rows = attackrun.run_all(topo, exim=exim, progress=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        render_attack_table(_console(), rows)
    return 1 if any(r.failed for r in rows) else 0


def _loop_and_print(prefix: str, as_json: bool, *, send: bool, exim: bool, timeout: float) -> int:
    from mxsec.lab.tlsrpt import close_loop

    console = _console()
    result = close_loop(_topo(prefix), exim=exim, send_postfix=send, timeout=timeout,
                        progress=(lambda m: click.echo(m, err=True)) if as_json else console.print)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        render_loop_table(console, result)
    return 0 if result.ok else 1


def _summary_line(rows: Sequence[Any]) -> str:
    from mxsec.lab.runner import summary

    s = summary(rows)
    parts = [f"{s['ok']} ok", f"{s['FAIL']} failed"]
    if s["xfail"]:
        parts.append(f"{s['xfail']} expected to fail (DANE issue)" if all(
            r.xfail == "dane" for r in rows if r.verdict == "xfail") else f"{s['xfail']} expected to fail")
    if s["XPASS"]:
        parts.append(f"{s['XPASS']} unexpectedly passing (remove expect_fail_until)")
    return ", ".join(parts)


def _topo(prefix: str) -> Any:
    from mxsec.lab.topology import Topology

    try:
        return Topology(prefix=prefix)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--prefix") from exc


def _need_root() -> None:
    problem = prerequisites()
    if problem:
        raise click.ClickException(problem)


def _errors() -> tuple[type[BaseException], ...]:
    from mxsec.lab.exim import EximError
    from mxsec.lab.postfix import PostfixError
    from mxsec.lab.scenarios import ScenarioError
    from mxsec.lab.topology import LabError

    return (LabError, ScenarioError, PostfixError, EximError, TimeoutError, OSError)


prefix_option = click.option(
    "--prefix", default=lambda: os.environ.get("MXSEC_LAB_PREFIX", DEFAULT_PREFIX), show_default="mxsec",
    help="Lab name: namespaces <prefix>-inet/-sender, state /run/mxsec-lab/<prefix>/ ($MXSEC_LAB_PREFIX).",
)


@click.group(name="lab")
def lab() -> None:
    """A private mail internet in network namespaces: DNSSEC, MX hosts, policy hosts, the daemon and a real
    Postfix (root)."""


@lab.command()
@prefix_option
@click.option("--scenarios", "scenarios_file", type=click.Path(exists=True, dir_okay=False),
              help="Scenario file (default: the packaged scenarios.toml).")
@click.option("--json", "as_json", is_flag=True, help="Print the lab status as JSON when up.")
def up(prefix: str, scenarios_file: str | None, as_json: bool) -> None:
    """Build the lab and leave it running (tear it down with `mxsec lab down`)."""
    from mxsec.lab import runner

    _need_root()
    topo = _topo(prefix)
    try:
        status = runner.up(topo, scenarios_file, progress=lambda m: click.echo(m, err=as_json))
    except _errors() as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(status, indent=2))
    else:
        click.echo(f"daemon {status['lab']['daemon']} in {topo.sender_ns}, resolver {topo.resolver_ip}; "
                   f"try: ip netns exec {topo.sender_ns} dig +dnssec MX dane-ok.test")
        click.echo(f"next: mxsec lab run --prefix {prefix}   /   mxsec lab down --prefix {prefix}")


@lab.command()
@prefix_option
@click.option("-v", "--verbose", is_flag=True, help="List what was removed.")
def down(prefix: str, verbose: bool) -> None:
    """Stop and remove everything of the lab (idempotent)."""
    from mxsec.lab import runner

    _need_root()
    done = runner.down(_topo(prefix))
    if verbose:
        for line in done:
            click.echo(line)
    click.echo(f"lab {prefix!r} is down")


@lab.command()
@prefix_option
@click.option("--json", "as_json", is_flag=True)
def status(prefix: str, as_json: bool) -> None:
    """Show the namespaces, processes and hosts of the lab."""
    from mxsec.lab import runner

    st = runner.lab_status(_topo(prefix))
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"lab {prefix!r}: {'up' if st['up'] else 'down'} (state {st['state_dir']})")
    for ns, present in st["namespaces"].items():
        click.echo(f"  namespace {ns}: {'present' if present else 'absent'}")
    for p in st["processes"]:
        click.echo(f"  {p['name']:<20} pid {p['pid']:<8} {'running' if p['alive'] else 'DEAD'}  ({p['netns']})")
    lab_info = st["lab"]
    if lab_info["postfix_dir"] and st["up"]:
        pid = lab_info["postfix_master_pid"]
        click.echo(f"  {'postfix master':<20} pid {pid or '-':<8} {'running' if pid else 'NOT RUNNING'}  "
                   f"({lab_info['postfix_dir']})")
    if lab_info["scenarios"]:
        click.echo(f"  daemon {lab_info['daemon']} (inside the sender namespace), resolver {st['resolver']}")
        click.echo(f"  {len(lab_info['scenarios'])} scenarios: {', '.join(lab_info['scenarios'])}")
        for host, ip in lab_info["hosts"].items():
            click.echo(f"    {ip:<15} {host}")


def _run_and_print(prefix: str, names: Sequence[str], as_json: bool, timeout: float) -> int:
    from mxsec.lab import runner

    topo = _topo(prefix)
    console = _console()
    rows = runner.run(topo, names or None, timeout=timeout,
                      progress=(lambda m: click.echo(m, err=True)) if as_json else console.print)
    if as_json:
        click.echo(json.dumps({"rows": [r.to_json() for r in rows], "summary": runner.summary(rows)}, indent=2))
    else:
        render_table(console, rows)
        console.print(_summary_line(rows))
    return 1 if any(r.failed for r in rows) else 0


@lab.command()
@prefix_option
@click.option("--scenario", "names", multiple=True, metavar="NAME", help="Only this scenario (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Rows as JSON (with Postfix's log lines per message).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for Postfix's verdicts.")
def run(prefix: str, names: tuple[str, ...], as_json: bool, timeout: float) -> None:
    """Send one message per scenario with the lab's Postfix, print the table; exit 1 if a row differs."""
    _need_root()
    try:
        code = _run_and_print(prefix, names, as_json, timeout)
    except _errors() as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


@lab.command()
@prefix_option
@click.option("--send", is_flag=True,
              help="Send the TLSRPT scenarios' mail with Postfix first (default: use what `mxsec lab run` sent).")
@click.option("--exim/--no-exim", default=True, show_default=True,
              help="Also let the lab's Exim send and report (when /opt/mxsec/exim4 is installed).")
@click.option("--json", "as_json", is_flag=True, help="Rows, summaries and each step's output as JSON.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for mail and reports.")
def tlsrpt(prefix: str, send: bool, exim: bool, as_json: bool, timeout: float) -> None:
    """The closed TLSRPT loop: the lab's MTAs' sessions, counted by `mxsec tlsrpt follow-log`, reported by
    `mxsec tlsrpt send --day today --unfinished` to the lab's receiving side (mailto: → mx.reports.test →
    `mxsec reports ingest --require-dkim`; https: → `mxsec reports serve`), compared with the sessions the MX
    farm saw. Exit 1 when a row differs."""
    _need_root()
    try:
        code = _loop_and_print(prefix, as_json, send=send, exim=exim, timeout=timeout)
    except _errors() as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


@lab.command()
@prefix_option
@click.argument("kind", required=False, type=click.Choice(
    ["strip-starttls", "forged-cert", "rogue-mx", "drop", "delay", "dns", "sts-record"]))
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option("--seconds", default=6.0, show_default=True, help="delay, dns --action delay: how long.")
@click.option("--cert", type=click.Choice(["untrusted", "self-signed"]), default="untrusted", show_default=True,
              help="forged-cert: the impostor's certificate.")
@click.option("--action", type=click.Choice(["drop", "nxdomain", "delay"]), default=None,
              help="dns: drop, nxdomain or delay (default drop); sts-record: nxdomain (default) or drop.")
@click.option("--list", "list_", is_flag=True, help="Show the attacks switched on.")
@click.option("--clear", is_flag=True, help="Switch every attack off.")
def attack(prefix: str, kind: str | None, targets: tuple[str, ...], seconds: float, cert: str,
           action: str | None, list_: bool, clear: bool) -> None:
    """Switch an attack on in the lab's attacker namespace (<prefix>-attk), per target.

    \b
    strip-starttls IP[:PORT]...   SMTP proxy: STARTTLS removed from EHLO, 454 to STARTTLS, relayed in clear
    forged-cert IP=NAME...        impostor MX for NAME, certificate from an untrusted CA (--cert self-signed)
    rogue-mx IP...                the attacker's MX rogue.attacker.test, valid certificate for that name only
    drop IP:PORT...               TCP and UDP dropped (e.g. 198.51.100.53:53, a policy host's :443)
    delay IP:PORT...              TCP relayed after --seconds
    dns NAME...                   queries for NAME and below: --action drop | nxdomain | delay
    sts-record DOMAIN...          _mta-sts.DOMAIN TXT answered NXDOMAIN (--action drop: not answered)
    """
    from mxsec.lab import attacker

    _need_root()
    topo = _topo(prefix)
    try:
        if clear:
            for line in attacker.clear(topo):
                click.echo(line)
            return
        if list_ or kind is None:
            for rec in attacker.active(topo):
                click.echo(json.dumps(rec))
            return
        if kind == "dns":
            action = action or "drop"
        elif kind == "sts-record":
            action = action or "nxdomain"
        elif action is not None:
            raise click.UsageError("--action is for dns and sts-record only")
        rec = attacker.attack(topo, kind, list(targets), seconds=seconds, cert=cert, action=action or "nxdomain")
    except _errors() as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"attack on: {rec['kind']} {' '.join(rec['targets'])}   (off: mxsec lab attack --clear)")


@lab.command()
@prefix_option
@click.option("--exim/--no-exim", default=True, show_default=True, help="Also attack Exim (when available).")
@click.option("--json", "as_json", is_flag=True, help="Rows as JSON.")
def attacks(prefix: str, exim: bool, as_json: bool) -> None:
    """The attacker scenarios against the lab's Postfix (and Exim): every enforce and DANE domain under a
    STARTTLS stripper and a forged certificate, representative domains under a rogue MX, DNS and HTTPS
    dropped or delayed, the _mta-sts record removed, strict MX names. Exit 1 when a row differs."""
    _need_root()
    try:
        code = _attacks_and_print(prefix, as_json, exim=exim)
    except _errors() as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


def run_demo(prefix: str = DEMO_PREFIX, scenarios_file: str | None = None, names: Sequence[str] = (),
             as_json: bool = False, keep: bool = False, timeout: float = 60.0) -> int:
    """up + run (+ the closed TLSRPT loop and the attacker scenarios when every scenario runs) + down; 0 when
    every row is as expected,
    1 when one differs, 2 when the lab cannot run."""
    from mxsec.lab import runner

    problem = prerequisites()
    if problem:
        click.echo(f"mxsec lab demo: {problem}", err=True)
        return 2
    topo = _topo(prefix)
    console = _console()
    say = (lambda m: click.echo(m, err=True)) if as_json else console.print
    started = time.monotonic()
    runner.down(topo)  # remains of an earlier, interrupted demo
    try:
        if not as_json:
            console.rule(f"[bold]mxsec lab demo[/bold] ({topo.inet_ns} + {topo.sender_ns})")
        runner.up(topo, scenarios_file, progress=say)
        code = _run_and_print(prefix, names, as_json, timeout)
        if not names and not as_json:
            from mxsec.lab.tlsrpt import has_reporting

            if has_reporting(topo):
                console.rule("[bold]the closed TLSRPT loop[/bold]")
                code = max(code, _loop_and_print(prefix, as_json, send=False, exim=True, timeout=timeout))
            console.rule("[bold]the on-path attacker[/bold]")
            code = max(code, _attacks_and_print(prefix, as_json, exim=True))
    except _errors() as exc:
        say(f"mxsec lab demo: {exc}")
        code = 1
    finally:
        if keep:
            say(f"lab kept running: mxsec lab down --prefix {prefix}")
        else:
            runner.down(topo)
            say(f"lab torn down; total {time.monotonic() - started:.1f} s")
    return code


@lab.command()
@prefix_option
@click.option("--scenarios", "scenarios_file", type=click.Path(exists=True, dir_okay=False),
              help="Scenario file (default: the packaged scenarios.toml).")
@click.option("--scenario", "names", multiple=True, metavar="NAME", help="Only this scenario (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--keep", is_flag=True, help="Leave the lab running afterwards.")
def demo(prefix: str, scenarios_file: str | None, names: tuple[str, ...], as_json: bool, keep: bool) -> None:
    """up + run + down in one go; exit 1 if any row differs from its expectation."""
    if prefix == DEFAULT_PREFIX and "MXSEC_LAB_PREFIX" not in os.environ:
        prefix = DEMO_PREFIX  # never tear down a lab someone brought up with `mxsec lab up`
    sys.exit(run_demo(prefix, scenarios_file, names, as_json, keep))
