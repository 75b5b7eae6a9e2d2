"""mxsec.check.advice: the testing-to-enforce decision over hand-built facts (no I/O).

The live side is a :class:`~mxsec.check.facts.DomainFacts` built with the rule tests' helpers (real parsers,
generated certificates, real PKIX verdicts) and judged by the real rules; the report side is a
:class:`~mxsec.check.advice.ReportFigures` written here. A clean base case says "enforce"; each blocker added
alone turns it into "wait" (STS-F-1: in enforce mode a sender refuses an MX that is not covered, lacks STARTTLS
or has an invalid certificate; STS-F-2: in testing mode those are only reported, which is what the reports
measure). The next policy and TXT record re-parse with mxsec's own parsers.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from mxsec.check.advice import (
    DAY,
    WEEK,
    DayPolicy,
    MxFailure,
    ReportFigures,
    SessionCounts,
    advise,
)
from mxsec.check.rules import judge
from mxsec.sts.policy import MAX_AGE_LIMIT, parse_policy
from mxsec.sts.record import parse_record
from tests.unit.test_check_rules import facts, failed_probe, mx_answer, ok_probe, pki, policy_body

NOW = dt.datetime(2026, 12, 3, 10, 30, tzinfo=dt.UTC)
MX1, MX2 = "mx1.example.net", "mx2.example.net"
IP1, IP2 = "192.0.2.25", "192.0.2.26"
SINCE, UNTIL = dt.date(2026, 11, 19), dt.date(2026, 12, 2)
TESTING = ("version: STSv1", "mode: testing", f"mx: {MX1}", f"mx: {MX2}", "max_age: 86400")


def policy_id(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def live(*, mode: str = "testing", patterns: tuple[str, ...] = (MX1, MX2), probes: list | None = None,
         smtp: bool = True):
    body = policy_body(*patterns, mode=mode, max_age=86400)
    if probes is None and smtp:
        probes = [ok_probe(pki().good, name=MX1, address=IP1), ok_probe(pki().good, name=MX2, address=IP2)]
    return facts(mx=mx_answer(MX1, MX2), body=body, probes=probes if smtp else None)


def figures(*, days: int = 14, orgs: dict[str, SessionCounts] | None = None,
            failures: tuple[MxFailure, ...] = (), mode: str = "testing") -> ReportFigures:
    orgs = orgs if orgs is not None else {"Google Inc.": SessionCounts(50_000, 12),
                                          "Mail.example": SessionCounts(4_000, 0)}
    strings = tuple(s.replace("mode: testing", f"mode: {mode}") for s in TESTING)
    day_rows = tuple(DayPolicy(UNTIL - dt.timedelta(days=i), "sts", strings, SessionCounts(3_000, 1))
                     for i in range(days))
    return ReportFigures(SINCE, UNTIL, orgs, failures, day_rows, reports=2 * days)


def run(f=None, r=None, **kwargs):
    f = f if f is not None else live()
    return advise(f, judge(f, now=NOW), r if r is not None else figures(), now=NOW, id_for=policy_id, **kwargs)


def codes(advice) -> list[str]:
    return [b.code for b in advice.blockers]


def test_clean_testing_domain_is_safe_with_figures() -> None:
    advice = run()
    assert advice.verdict == "enforce" and advice.safe and advice.blockers == ()
    data = advice.to_json()
    assert data["reports"]["days_observed"] == 14 and data["reports"]["days_testing"] == 14
    assert data["reports"]["successful_sessions"] == 54_000 and data["reports"]["failed_sessions"] == 12
    assert data["reports"]["by_reporter"]["Google Inc."]["success_rate"] == pytest.approx(50_000 / 50_012)
    assert [row["certificate"] for row in data["live"]["mx_hosts"]] == ["valid", "valid"]
    assert data["live"]["mode"] == "testing"


def test_ramp_one_day_one_week_maximum_and_texts_reparse() -> None:
    advice = run()
    assert [(s.max_age, s.on) for s in advice.ramp] == [
        (DAY, NOW.date()), (WEEK, NOW.date() + dt.timedelta(days=7)),
        (MAX_AGE_LIMIT, NOW.date() + dt.timedelta(days=21))]
    for step in advice.ramp:
        policy = parse_policy(step.policy)
        assert (policy.mode, policy.mx, policy.max_age, policy.warnings) == ("enforce", (MX1, MX2), step.max_age, ())
    assert len({s.id for s in advice.ramp}) == 3
    assert advice.ramp[0].id == "20261203T103000Z"
    record = parse_record(advice.txt)
    assert record.id == advice.ramp[0].id and record.warnings == ()
    assert advice.to_json()["next"]["policy"] == advice.ramp[0].policy


def test_mx_not_covered_blocks_although_testing_only_warns() -> None:  # STS-E-1, STS-F-1
    f = live(patterns=(MX1,))
    advice = run(f)
    assert not advice.safe and "check:sts-mx-not-covered" in codes(advice)
    assert any(MX2 in b.message for b in advice.blockers)


def test_expired_certificate_on_the_live_mx_blocks() -> None:  # STS-E-5
    f = live(probes=[ok_probe(pki().good, name=MX1, address=IP1), ok_probe(pki().expired, name=MX2, address=IP2)])
    advice = run(f)
    assert codes(advice) == ["check:smtp-certificate-expired"]
    assert advice.blockers[0].subject == f"{MX2} [{IP2}]"
    assert advice.live["mx_hosts"][1]["certificate"] == "invalid"


def test_missing_starttls_blocks() -> None:
    f = live(probes=[ok_probe(pki().good, name=MX1, address=IP1),
                     failed_probe("ehlo", "no STARTTLS", offered=False, name=MX2, address=IP2)])
    assert codes(run(f)) == ["check:smtp-starttls-missing"]


def test_an_mx_without_probe_blocks_unless_smtp_was_skipped() -> None:
    f = live(probes=[ok_probe(pki().good, name=MX1, address=IP1)])
    assert "mx-not-probed" in codes(run(f))
    skipped = run(live(smtp=False))
    assert skipped.safe and any("--no-smtp" in n for n in skipped.notes)
    assert {row["certificate"] for row in skipped.live["mx_hosts"]} == {"not-checked"}


def test_no_policy_blocks() -> None:
    f = facts(mx=mx_answer(MX1, MX2), sts=None, probes=[])
    advice = run(f)
    assert "no-policy" in codes(advice) and advice.ramp == () and advice.txt is None


def test_mode_none_blocks() -> None:
    assert "mode-none" in codes(run(live(mode="none")))


def test_no_reports_blocks() -> None:
    advice = run(r=ReportFigures(SINCE, UNTIL))
    assert codes(advice) == ["no-reports"]


def test_too_few_days_blocks() -> None:
    advice = run(r=figures(days=3))
    assert codes(advice) == ["too-few-days"]
    assert "3 day(s) of the last 14" in advice.blockers[0].message
    assert run(r=figures(days=3), min_days=3).safe


def test_a_reporter_below_the_threshold_blocks() -> None:
    orgs = {"Google Inc.": SessionCounts(50_000, 12), "Mail.example": SessionCounts(3_900, 100)}
    advice = run(r=figures(orgs=orgs))
    assert codes(advice) == ["reporter-below-threshold"]
    assert advice.blockers[0].message == ("Mail.example: 97.50 % of 4,000 sessions succeeded (100 failed), "
                                          "below 99 %")
    assert run(r=figures(orgs=orgs), min_success=0.97).safe


def test_an_mx_below_the_threshold_blocks_with_its_failures_one_line_each() -> None:
    orgs = {"Google Inc.": SessionCounts(46_000, 4_000), "Mail.example": SessionCounts(50_000, 300)}
    failures = (MxFailure(MX2, "certificate-expired", "Google Inc.", 4_000, dt.date(2026, 11, 25), UNTIL),
                MxFailure(MX2, "certificate-expired", "Mail.example", 300, dt.date(2026, 11, 25),
                          dt.date(2026, 11, 27)),
                MxFailure(MX1, "validation-failure", "Mail.example", 3, dt.date(2026, 11, 20), dt.date(2026, 11, 20)))
    advice = run(r=figures(orgs=orgs, failures=failures))
    messages = [b.message for b in advice.blockers]
    assert codes(advice) == ["reporter-below-threshold", "mx-below-threshold", "failures:certificate-expired",
                             "failures:certificate-expired"]
    assert messages[2] == f"{MX2}: certificate-expired in 4,000 sessions from Google Inc. since 2026-11-25"
    assert messages[3] == (f"{MX2}: certificate-expired in 300 sessions from Mail.example from 2026-11-25 "
                           f"to 2026-11-27")
    assert not any("no failure reported after" in n for n in advice.notes)  # Google's still run to the end
    assert advice.figures["by_mx"][MX2]["failed_sessions"] == 4_300
    assert advice.figures["by_mx"][MX1]["failed_sessions"] == 3  # mx1 stays above: no line for it


def test_any_sts_failure_blocks_even_under_the_threshold() -> None:
    failures = (MxFailure("", "sts-policy-fetch-error", "Google Inc.", 2, dt.date(2026, 11, 30), UNTIL),)
    advice = run(r=figures(failures=failures))
    assert codes(advice) == ["failures:sts-policy-fetch-error"]
    assert advice.blockers[0].message == ("(no MX named): sts-policy-fetch-error in 2 sessions from Google Inc. "
                                          "since 2026-11-30")


def test_already_enforce() -> None:
    advice = run(live(mode="enforce"), figures(mode="enforce"))
    assert advice.verdict == "already-enforce" and advice.safe
    assert advice.figures["days_testing"] == 0 and advice.figures["days_enforce"] == 14


def test_the_decision_module_imports_no_adapter() -> None:
    code = ("import sys, mxsec.check.advice; bad = [m for m in sys.modules if m.startswith(('mxsec.net', "
            "'mxsec.storage', 'asyncio', 'aiohttp', 'click', 'mxsec.check.gather'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_failures_that_stopped_say_when_the_window_is_clear_of_them() -> None:
    orgs = {"Google Inc.": SessionCounts(46_000, 4_000)}
    failures = (MxFailure(MX2, "certificate-expired", "Google Inc.", 4_000, dt.date(2026, 11, 20),
                          dt.date(2026, 11, 22)),)
    advice = run(r=figures(orgs=orgs, failures=failures))
    assert not advice.safe
    assert f"{MX2}: no failure reported after 2026-11-22; a 14-day window is clear of them from 2026-12-07 on, " \
           "if none come back" in advice.notes
