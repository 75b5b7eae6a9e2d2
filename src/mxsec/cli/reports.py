"""``mxsec reports …``: receive TLSRPT reports (docs/reports.md): ingest, summary, serve (and fetch-imap).

Exit codes: 0 when all went well, 1 when an input was rejected (``ingest``) or failures exceed the threshold
(``summary --fail-on-failures``), 2 for usage errors and an unusable database (one line on stderr), 3 when
``ingest`` stored a conflicting copy of a report (same organization and report-id, different content) and
rejected nothing, or ``summary --fail-on-conflicts`` found reports in conflicting copies (1 wins when both
apply).
"""

from __future__ import annotations

import gc
import json
import sys
from datetime import date
from pathlib import Path
from collections.abc import Callable
from typing import Any, overload

import click

from mxsec.cli.common import _fail, _guarded, error_line
from mxsec.display import safe_text


def db_option(fn):
    return click.option(
        "--db", "db_url", envvar="MXSEC_REPORTS_DB", metavar="URL",
        help="Report database: sqlite:///PATH or postgresql://USER@HOST/DB "
             "(default: reports.sqlite3 in the user's data directory; env MXSEC_REPORTS_DB).",
    )(fn)


def dkim_options(signed: str, rejected: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--dkim/--no-dkim``, ``--require-dkim`` and ``--nameserver`` (for the key lookups), as ``ingest`` and
    ``fetch-imap`` both take them; ``signed``/``rejected`` name what is verified and what is rejected."""
    options = (
        click.option("--dkim/--no-dkim", default=True, show_default=True,
                     help=f"Verify DKIM signatures of {signed} (DNS lookups of the signing keys)."),
        click.option("--require-dkim", is_flag=True,
                     help=f"Reject {rejected} without a valid DKIM signature (RFC 8460 §3)."),
        click.option("--nameserver", "nameservers", multiple=True, metavar="IP[:PORT]",
                     help="Resolver for DKIM key lookups instead of /etc/resolv.conf (repeatable)."),
    )

    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return add


def open_db(db_url: str | None):
    from mxsec.storage.reportdb import ReportDB

    if db_url:
        return ReportDB(db_url)
    from mxsec.config import default_reports_db_url

    return ReportDB(default_reports_db_url())


@overload
def _day(option: str, value: str) -> date: ...
@overload
def _day(option: str, value: str | None) -> date | None: ...
def _day(option: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r}: not a date (YYYY-MM-DD)")


@click.group("reports")
def reports() -> None:
    """Receive TLSRPT reports: store them, summarise them, show them in a dashboard."""


@reports.command("ingest")
@click.argument("paths", nargs=-1, required=True)
@db_option
@dkim_options("mailed reports", "mailed reports")
@click.option("--move-processed", type=click.Path(file_okay=False), metavar="MAILDIR",
              help="Move Maildir messages into this Maildir once stored.")
@click.option("--move-rejected", type=click.Path(file_okay=False), metavar="MAILDIR",
              help="Move rejected Maildir messages into this Maildir (else they stay).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input per line.")
@click.option("-q", "--quiet", is_flag=True, help="Print only rejected inputs and the total.")
@_guarded
def ingest_command(paths, db_url, dkim, require_dkim, nameservers, move_processed, move_rejected, as_json, quiet):
    """Store the reports in PATH... : .json, .json.gz, .gz or zip reports, RFC 5322 messages (.eml), mbox
    files, Maildir folders; - reads standard input. The same report twice is stored once."""
    from mxsec.reports.inputs import Options
    from mxsec.reports.parallel import ingest_paths

    verifier = None
    if dkim or require_dkim:
        from mxsec.reports.dkim import make_verifier

        verifier = make_verifier(list(nameservers))
    options = Options(
        dkim=verifier, require_dkim=require_dkim,
        move_processed=Path(move_processed) if move_processed else None,
        move_rejected=Path(move_rejected) if move_rejected else None,
    )

    # A batch command: the cyclic garbage collector would walk every kept object again and again. What was
    # imported is set aside, and collections come less often (as they were once done, for callers running
    # this in their own process, such as tests).
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        outcome = ingest_paths(
            lambda: open_db(db_url), list(paths), options,
            on_done=lambda item: echo_input(item, as_json=as_json, quiet=quiet), fail=_child_failed,
        )
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
    counts = outcome.counts
    if not as_json:
        click.echo(totals_line(outcome.inputs, "input(s)", counts))
    sys.exit(exit_code(counts, in_conflict=outcome.in_conflict))


def _child_failed(exc: BaseException) -> int:
    """How the second ingest process reports its own failure: as :func:`~mxsec.cli.common._guarded` would."""
    if isinstance(exc, KeyboardInterrupt):
        return 130  # Ctrl-C reached both processes: the parent says so
    line = error_line(exc) or f"unexpected error in the second ingest process: {type(exc).__name__}: {exc}"
    click.echo(f"mxsec: {line}", err=True)
    return 2


#: Exit code of ``ingest`` (and ``fetch-imap``) when a conflicting copy was stored and nothing was rejected.
EXIT_CONFLICT = 3


def exit_code(counts: dict[str, int], items=(), *, in_conflict: bool = False) -> int:
    """1 when an input was rejected, else 3 when a report of *items* is (now or still) in conflicting copies
    (or *in_conflict* says one is), else 0."""
    if counts["rejected"]:
        return 1
    conflicting = in_conflict or counts["conflict"] or any(r.others for item in items for r in item.results)
    return EXIT_CONFLICT if conflicting else 0


def conflict_line(name: str, result) -> str:
    """The warning printed for a conflicting copy (always, on stderr): which copies exist, which one counts."""
    ids = ", ".join(str(pk) for pk in sorted((result.id, *result.others)))
    what = "this one" if result.outcome == "conflict" else "a copy identical to this one"
    if result.counted:
        verdict = "the figures now count this copy"
    else:
        verdict = f"the figures count id {result.counted_id}, not this copy"
    return (
        f"{name}: CONFLICT: report {result.report_id!r} of {result.organization_name!r} is stored in "
        f"{1 + len(result.others)} different copies (ids {ids}); {what} is id {result.id} (auth {result.auth}); "
        f"{verdict}; see mxsec reports summary"
    )


def echo_input(item, *, as_json: bool, quiet: bool, **extra) -> None:
    """Print what became of one input: a JSON object (``extra`` keys after ``kind``) or its outcome line
    (rejected ones on stderr, the others unless ``quiet``), and a line on stderr per conflicting copy."""
    from mxsec.reports.inputs import outcome_line

    if as_json:
        click.echo(json.dumps({
            "input": item.name, "kind": item.kind, **extra, "error": item.error,
            "reports": [
                {"outcome": r.outcome, "id": r.id, "organization": r.organization_name, "report_id": r.report_id,
                 "auth": r.auth, "counted": r.counted, "other_copies": list(r.others)}
                for r in item.results
            ],
        }, ensure_ascii=False))
        return
    if item.rejected or not quiet:
        click.echo(safe_text(outcome_line(item)), err=item.rejected)
    for result in item.results:
        if result.others:
            click.echo(safe_text(conflict_line(item.name, result)), err=True)


def totals_line(count: int, noun: str, counts: dict[str, int]) -> str:
    return (
        f"{count} {noun}: {counts['stored']} stored, {counts['duplicate']} duplicate, "
        f"{counts['conflict']} conflicting, {counts['rejected']} rejected"
    )


@reports.command("summary")
@db_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object (keys in docs/reports.md).")
@click.option("--since", metavar="YYYY-MM-DD", help="Only reports from this UTC day on.")
@click.option("--until", metavar="YYYY-MM-DD", help="Only reports up to this UTC day.")
@click.option("--domain", metavar="DOMAIN", help="Only this policy domain.")
@click.option("--organization", metavar="NAME", help="Only reports of this reporter.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Rows in the MX and sending-IP tables.")
@click.option("--fail-on-failures", is_flag=True,
              help="Exit 1 when failed sessions exceed --threshold (for cron and monitoring).")
@click.option("--threshold", default="0", show_default=True, metavar="N|P%",
              help="Failed sessions allowed (a count, or a share such as 0.5%).")
@click.option("--fail-on-conflicts", is_flag=True,
              help="Exit 3 when a report is stored in conflicting copies (one may be forged; see docs/reports.md).")
@click.option("-q", "--quiet", is_flag=True,
              help="Print nothing unless --fail-on-failures or --fail-on-conflicts trips (for cron: mail only when "
                   "it matters).")
@_guarded
def summary_command(db_url, as_json, since, until, domain, organization, top, fail_on_failures, threshold,
                    fail_on_conflicts, quiet):
    """Totals of the stored reports: sessions, failures by result type, per reporter, per policy domain,
    per day, per MX host, failing sending IPs."""
    from rich.console import Console

    from mxsec.names import DomainError, normalize_domain
    from mxsec.reports.summary import Threshold, render, summary_data
    from mxsec.storage.reportdb import NO_DOMAIN, Filters

    rule = Threshold.parse(threshold)
    since, until = _day("--since", since), _day("--until", until)
    if since and until and since > until:
        _fail("--since is after --until")
    if domain is not None and domain != NO_DOMAIN:
        try:
            domain = normalize_domain(domain)
        except DomainError as exc:
            _fail(f"--domain: {exc}")
    db = open_db(db_url)
    try:
        data = summary_data(db, Filters(since, until, domain, organization), top=top)
    finally:
        db.close()
    tripped = fail_on_failures and rule.exceeded(data)
    conflicting = fail_on_conflicts and data["conflicts"]["count"] > 0
    if quiet and not (tripped or conflicting):
        return
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        render(data, Console(highlight=False))
    if tripped:
        click.echo(
            f"mxsec: {data['failed_sessions']:,} failed session(s), more than {rule.describe()}", err=True
        )
    if conflicting:
        click.echo(f"mxsec: {data['conflicts']['count']:,} report(s) stored in conflicting copies", err=True)
    if tripped or conflicting:
        sys.exit(1 if tripped else EXIT_CONFLICT)


@reports.command("serve")
@db_option
@click.option("--listen", default="127.0.0.1:8025", show_default=True, metavar="HOST:PORT",
              help="Address of the dashboard and of POST /tlsrpt.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="PEM certificate chain (serve HTTPS).")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="PEM private key for --tls-cert.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="PATH",
              help="Configuration file (default /etc/mxsec/mxsec.toml if present); its [reports] section says who "
                   "may POST /tlsrpt (tokens, client CA).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Another Host: name the dashboard answers to (repeatable; adds to [reports] allowed_hosts).")
@click.option("--max-connections", type=click.IntRange(min=1), metavar="N",
              help="Open connections at most (default 200, [reports] max_connections).")
@click.option("--header-timeout", type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="Time to send a request's headers (default 10, [reports] header_timeout).")
@click.option("--body-timeout", type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="Time to send a request's body (default 120, [reports] body_timeout).")
@_guarded
def serve_command(db_url, listen, tls_cert, tls_key, config_path, allowed_hosts, max_connections, header_timeout,
                  body_timeout):
    """Web dashboard of the stored reports, and POST /tlsrpt for reports sent over HTTPS (RFC 8460 §5.4)."""
    from mxsec.extras import require

    for module in ("starlette", "jinja2", "uvicorn"):
        require(module, "reports", "the dashboard (reports serve)")
    from mxsec.reports.web.server import serve

    if bool(tls_cert) != bool(tls_key):
        _fail("--tls-cert and --tls-key go together")
    from mxsec.config import default_reports_db_url, load_config

    settings = load_config(config_path).reports  # default file: /etc/mxsec/mxsec.toml if present
    post_auth = settings.post_auth()
    from mxsec.reports.web.limits import ConnectionGuard

    auth = settings.dashboard_auth()
    auth.allowed_hosts += list(allowed_hosts)
    guard = ConnectionGuard(max_connections or settings.max_connections, header_timeout or settings.header_timeout,
                            body_timeout or settings.body_timeout)
    serve(db_url or default_reports_db_url(), listen, tls_cert=tls_cert, tls_key=tls_key, post_auth=post_auth,
          auth=auth, guard=guard)


@reports.command("hash-password")
@_guarded
def hash_password_command():
    """Print the [reports] password_hash for a dashboard password (asked twice on a terminal, else one line
    read from standard input)."""
    from mxsec.reports.web.auth import hash_password

    if sys.stdin.isatty():
        password = click.prompt("Dashboard password", hide_input=True, confirmation_prompt=True, err=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        _fail("use a password of at least 8 characters")
    click.echo(hash_password(password))



@reports.command("prune")
@db_option
@click.option("--before", metavar="YYYY-MM-DD", help="Delete reports whose day is before this UTC day.")
@click.option("--older-than", type=click.IntRange(min=1), metavar="DAYS",
              help="Delete reports whose day is more than DAYS days before today (UTC).")
@_guarded
def prune_command(db_url, before, older_than):
    """Delete old reports with their policies and failure details (retention)."""
    from datetime import UTC, datetime, timedelta

    if (before is None) == (older_than is None):
        _fail("give exactly one of --before DATE and --older-than DAYS")
    cutoff = _day("--before", before) if before else datetime.now(UTC).date() - timedelta(days=older_than)
    db = open_db(db_url)
    try:
        gone = db.delete_before(cutoff)
    finally:
        db.close()
    click.echo(f"{gone} report(s) from before {cutoff.isoformat()} deleted")

