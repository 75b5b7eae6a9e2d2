"""``mxsec advise DOMAIN``: is MTA-STS ``mode: enforce`` safe now? (docs/publishing.md)

Joins the live check of DOMAIN (the checker's gathering and rules) with the last ``--days`` days of received
TLSRPT reports (:mod:`mxsec.check.advice_gather`), asks :func:`mxsec.check.advice.advise`, prints. Exit 0 when
enforce is safe (or already in place with nothing blocking), 1 when something blocks it, 2 for usage errors
and unusable input (one line on stderr, no traceback).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import sys

import click

from mxsec.cli.common import OneLineCommand, _fail, _guarded, _load, network_options, smtp_probe_options


@click.command("advise", cls=OneLineCommand)
@click.argument("domain")
@click.option("--reports-db", "db_url", envvar="MXSEC_REPORTS_DB", metavar="URL",
              help="Report database (as for mxsec reports: sqlite:///PATH or postgresql://USER@HOST/DB; "
                   "default: the configured one).")
@click.option("--days", default=14, show_default=True, type=click.IntRange(1, 366),
              help="Judge the reports of the last DAYS whole UTC days (today excluded).")
@click.option("--min-success", default=0.99, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Lowest success rate allowed per reporter and per MX host (0 to 1).")
@click.option("--min-days", default=7, show_default=True, type=click.IntRange(1, 366),
              help="Fewest days with reports needed in the window.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (keys in docs/publishing.md).")
@smtp_probe_options
@network_options
@_guarded
def advise(domain, db_url, days, min_success, min_days, as_json, no_smtp, smtp_port, smtp_timeout,
           config_path, nameservers, ca_file, timeout, allow_addresses):
    """Say whether DOMAIN can move its MTA-STS policy from testing to enforce now, from the live check and
    the TLSRPT reports received; print what blocks it, the next policy and TXT record, and a max_age ramp."""
    from mxsec.names import DomainError, normalize_domain

    try:
        name = normalize_domain(domain)
    except DomainError as exc:
        _fail(f"{domain!r} is not a domain name: {exc}")
    if min_days > days:
        _fail(f"--min-days {min_days} is more than --days {days}")
    config, _ = _load(config_path, nameservers=nameservers, ca_file=ca_file, timeout=timeout,
                      allow_addresses=allow_addresses)
    now = _dt.datetime.now(_dt.UTC)
    figures = _figures(db_url, name, now.date(), days)
    facts, findings = asyncio.run(_live(name, config, smtp=not no_smtp, smtp_port=smtp_port,
                                        smtp_timeout=smtp_timeout))

    from mxsec.check.advice import advise as judge_advice
    from mxsec.generate import default_policy_id

    advice = judge_advice(facts, findings, figures, now=now, id_for=default_policy_id, min_success=min_success,
                          min_days=min_days)
    if as_json:
        click.echo(json.dumps(advice.to_json(), indent=1))
    else:
        _print(advice)
    sys.exit(0 if advice.safe else 1)


def _figures(db_url, domain: str, today: _dt.date, days: int):
    from mxsec.check.advice_gather import report_figures, window
    from mxsec.cli.reports import open_db

    since, until = window(today, days)
    if db_url is None:
        from mxsec.config import default_reports_db_url

        db_url = default_reports_db_url()
    from mxsec.storage.urls import SQL_SCHEMES, parse_url

    parsed = parse_url(db_url, "report database", SQL_SCHEMES)
    if parsed.scheme == "sqlite" and parsed.path and not os.path.exists(parsed.path):
        _fail(f"no report database at {parsed.path}; store reports first (mxsec reports ingest --db {db_url} ...)")
    db = open_db(db_url)
    try:
        return report_figures(db, domain, since, until)
    finally:
        db.close()


async def _live(domain: str, config, *, smtp: bool, smtp_port: int, smtp_timeout: float):
    from mxsec.check.gather import CheckSettings, gather
    from mxsec.check.rules import judge
    from mxsec.config.wiring import make_adapters
    from mxsec.net.guard import AddressGuard

    guard = AddressGuard(config.net.allow_addresses)
    dns, fetcher = make_adapters(config, guard)
    try:
        roots, label = None, "the system store"
        if smtp:
            from mxsec.net.smtp import load_trust_store

            try:
                roots, label = load_trust_store(config.tls.ca_file)
            except (OSError, ValueError) as exc:
                _fail(f"trust store: {getattr(exc, 'strerror', None) or exc}")
        settings = CheckSettings(smtp=smtp, smtp_port=smtp_port, smtp_timeout=smtp_timeout)
        try:
            facts = await gather(domain, dns, fetcher, guard, settings, roots=roots, ca_label=label)
            return facts, judge(facts, settings.max_hosts)
        except Exception as exc:  # noqa: BLE001 - as mxsec check: a bug in the check becomes a blocking finding
            from mxsec.check.facts import DomainFacts
            from mxsec.check.findings import finding

            return DomainFacts(domain), [finding("check-failed", f"{type(exc).__name__}: "
                                                                 f"{' '.join(str(exc).split())[:300]}")]
    finally:
        await fetcher.aclose()


def _print(advice) -> None:
    from mxsec.check.advice import pct
    from mxsec.display import safe_text

    def say(text: str = "") -> None:
        click.echo(safe_text(text))

    live, fig = advice.live, advice.figures
    heading = {"enforce": "enforce is safe now", "wait": "not yet: keep mode testing",
               "already-enforce": "already in mode enforce, nothing blocks it"}[advice.verdict]
    say(f"{advice.domain}: {heading}")
    say()
    say(f"live policy: mode {live['mode'] or '-'}, id {live['id'] or '-'}, max_age {live['max_age'] or '-'}, "
        f"mx {', '.join(live['mx_patterns']) or '-'}")
    for row in live["mx_hosts"]:
        say(f"  MX {row['host']}: covered by {row['covered_by'] or 'no pattern'}, certificate {row['certificate']}")
    say(f"reports {fig['since']} to {fig['until']}: {fig['reports']:,} reports, "
        f"{fig['successful_sessions'] + fig['failed_sessions']:,} sessions, {pct(fig['success_rate'])} successful; "
        f"{fig['days_observed']} day(s) observed, {fig['days_testing']} in testing, {fig['days_enforce']} in enforce")
    for org, row in fig["by_reporter"].items():
        say(f"  reporter {org}: {pct(row['success_rate'])} of "
            f"{row['successful_sessions'] + row['failed_sessions']:,} sessions")
    for host, row in fig["by_mx"].items():
        say(f"  MX {host}: {row['failed_sessions']:,} failed sessions ({pct(row['success_rate'])} not failing)")
    if advice.blockers:
        say()
        say(f"blocking enforce ({len(advice.blockers)}):")
        for blocker in advice.blockers:
            say(f"  - {blocker.message}")
    for note in advice.notes:
        say(f"note: {note}")
    if advice.ramp and advice.verdict != "already-enforce":
        first = advice.ramp[0]
        say()
        say("next policy file (https://mta-sts." + advice.domain + "/.well-known/mta-sts.txt):"
            if advice.safe else "when nothing blocks any more, publish this policy file:")
        for line in first.policy.splitlines():
            say(f"  {line}")
        say(f"then the TXT record: _mta-sts.{advice.domain}. IN TXT \"{advice.txt}\"")
        say("max_age ramp (each step: the policy with that max_age and a new id):")
        for step in advice.ramp:
            say(f"  {step.on}  max_age {step.max_age:>8}  id {step.id}  ({step.when})")
