"""The "Rollout advice" of ``mxsec check --reports-db`` in mxsec.check.report: the ``advice`` key of the JSON
object, the terminal section, and the shared text of ``mxsec advise`` (``advice_lines``).

The advice values come from the real advisor over the hand-built facts and figures of tests/unit/test_advice.py
(STS-F-1/F-2: what blocks enforce). Without an advice the check's JSON and terminal view are what they were.
"""

from __future__ import annotations

import io
import json

from rich.console import Console

from mxsec.check.advice import MxFailure, SessionCounts
from mxsec.check.report import advice_lines, render_terminal, result_json
from mxsec.check.rules import judge
from tests.unit.test_advice import MX2, NOW, UNTIL, figures, live, run


def terminal(f, findings, advice=None) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system=None, width=300)
    render_terminal(console, f, findings, advice=advice)
    return buffer.getvalue()


def blocked():
    orgs = {"Google Inc.": SessionCounts(46_000, 4_000), "Mail.example": SessionCounts(50_000, 0)}
    failures = (MxFailure(MX2, "certificate-expired", "Google Inc.", 4_000, UNTIL, UNTIL),)
    return run(r=figures(orgs=orgs, failures=failures))


def test_json_has_the_advice_key_only_with_an_advice_and_it_is_advise_s_body() -> None:
    f = live()
    findings = judge(f, now=NOW)
    plain = result_json(f, findings)
    assert "advice" not in plain
    advice = blocked()
    data = result_json(f, findings, advice)
    assert data["advice"] == advice.to_json()
    assert {k: v for k, v in data.items() if k != "advice"} == plain
    again = json.loads(json.dumps(data))  # serialisable as is, as check --json writes it
    assert again["advice"]["verdict"] == "wait" and again["advice"]["safe"] is False
    assert [b["code"] for b in again["advice"]["blockers"]] == ["reporter-below-threshold", "mx-below-threshold",
                                                                "failures:certificate-expired"]


def test_terminal_section_after_the_findings_with_advise_s_lines_indented() -> None:
    f = live()
    findings = judge(f, now=NOW)
    advice = blocked()
    plain = terminal(f, findings)
    assert "Rollout advice" not in plain
    text = terminal(f, findings, advice)
    before, section = text.split("  Rollout advice\n", 1)
    assert before == plain.rstrip("\n") + "\n"  # the check's own view first, unchanged
    lines = section.rstrip("\n").splitlines()
    assert lines == [f"    {line}" if line else "" for line in advice_lines(advice)]
    assert lines[0] == "    example.com: not yet: keep mode testing"
    assert "    blocking enforce (3):" in lines
    assert f"      - {MX2}: certificate-expired in 4,000 sessions from Google Inc. since {UNTIL}" in lines
    assert "    when nothing blocks any more, publish this policy file:" in lines


def test_advice_lines_headings_per_verdict() -> None:
    assert advice_lines(run())[0] == "example.com: enforce is safe now"
    assert any(line.startswith("next policy file (https://mta-sts.example.com/") for line in advice_lines(run()))
    enforced = run(live(mode="enforce"), figures(mode="enforce"))
    assert enforced.verdict == "already-enforce"
    lines = advice_lines(enforced)
    assert lines[0] == "example.com: already in mode enforce, nothing blocks it"
    assert not any("max_age ramp" in line for line in lines)


def test_hostile_reporter_names_are_escaped_in_the_section() -> None:
    f = live()
    findings = judge(f, now=NOW)
    hostile = "Evil\x1b]0;owned\x07\u202e Corp"
    advice = run(r=figures(orgs={hostile: SessionCounts(10, 90)}))
    text = terminal(f, findings, advice)
    assert "Evil\\x1b]0;owned\\x07\\u202e Corp" in text
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in text
