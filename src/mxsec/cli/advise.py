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


#: the options of the rollout advice that ``check --reports-db`` takes too (checked when given without it)
ADVICE_WINDOW_OPTIONS = ("days", "min_success", "min_days")


def advice_options(reports_db_help: str, *, from_environment: bool = True):
    """``--reports-db`` (env ``MXSEC_REPORTS_DB`` when ``from_environment``), ``--days``, ``--min-success`` and
    ``--min-days``: the report window and thresholds of the rollout advice, shared by ``advise`` and ``check``
    (docs/publishing.md, docs/check.md). What differs: the help of ``--reports-db`` (what its absence means to
    the command) and whether the environment may give it (``check`` takes it only from its command line, so a
    cron job's output does not change because the report service's variable is set)."""
    envvar = "MXSEC_REPORTS_DB" if from_environment else None
    where = "; env MXSEC_REPORTS_DB" if from_environment else ""

    def decorate(fn):
        for option in reversed((
            click.option("--reports-db", "db_url", envvar=envvar, metavar="URL",
                         help="Report database (as for mxsec reports: sqlite:///PATH or "
                              f"postgresql://USER@HOST/DB{where}); {reports_db_help}."),
            click.option("--days", default=14, show_default=True, type=click.IntRange(1, 366),
                         help="Judge the reports of the last DAYS whole UTC days (today excluded)."),
            click.option("--min-success", default=0.99, show_default=True, type=click.FloatRange(0.0, 1.0),
                         help="Lowest success rate allowed per reporter and per MX host (0 to 1)."),
            click.option("--min-days", default=7, show_default=True, type=click.IntRange(1, 366),
                         help="Fewest days with reports needed in the window."),
        )):
            fn = option(fn)
        return fn

    return decorate


def check_window(days: int, min_days: int) -> None:
    """The validation the options cannot do alone (exit 2, one line)."""
    if min_days > days:
        _fail(f"--min-days {min_days} is more than --days {days}")


@click.command("advise", cls=OneLineCommand)
@click.argument("domain")
@advice_options("default: the configured one")
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
    check_window(days, min_days)
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
    return report_figures_for(db_url, [domain], today, days)[domain]


def report_figures_for(db_url: str | None, domains, today: _dt.date, days: int) -> dict:
    """``{domain: ReportFigures}`` over the last ``days`` whole days before ``today``, read from the database at
    ``db_url`` (``None``: the configured one), opened once. A SQLite file that does not exist is an input error
    (exit 2): the advisor never creates a database."""
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
        return {domain: report_figures(db, domain, since, until) for domain in dict.fromkeys(domains)}
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
    from mxsec.check.report import advice_lines
    from mxsec.display import safe_text

    for line in advice_lines(advice):
        click.echo(safe_text(line))
