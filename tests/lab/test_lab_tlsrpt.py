"""The closed TLSRPT loop: the lab's Postfix and Exim report their sessions to the lab's receiving side.

The whole lab comes up once for this module (prefix ``mxsec-r<pid>``), ``runner.run`` sends one message per
scenario with Postfix (as ``mxsec lab run``), then :func:`mxsec.lab.tlsrpt.close_loop` lets Exim send one
message per TLSRPT scenario, counts each MTA's log with ``mxsec tlsrpt follow-log``, sends the day's reports
so far (``mxsec tlsrpt send --day today --unfinished``, DKIM-signed, relayed by the lab's Postfix to
``mx.reports.test``, POSTed to ``mxsec reports serve`` on ``reports.test:8443``), ingests the mailed ones with
``mxsec reports ingest --require-dkim`` and compares the receiving side's summary, per MTA, domain and rua
scheme, with the sessions the MX farm recorded from that MTA (exactly: successful, failed, result types).
Exim takes part when ``/opt/mxsec/exim4`` is installed. About 25 s.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from mxsec.lab import runner
from mxsec.cli.lab import render_loop_table
from mxsec.lab.prerequisites import prerequisites
from mxsec.lab.exim import unavailable
from mxsec.lab.scenarios import load_scenarios
from mxsec.lab.tlsrpt import LoopResult, LoopRow, close_loop
from mxsec.lab.topology import Topology

from .conftest import unique_prefix

pytestmark = [pytest.mark.lab]

REPORTING = [sc for sc in load_scenarios() if sc.tlsrpt]
MTAS = ("Postfix", "Exim")


@pytest.fixture(scope="module")
def loop() -> Iterator[tuple[Topology, list[runner.Row], LoopResult]]:
    reason = prerequisites()
    if reason:
        pytest.skip(reason)
    topo = Topology(prefix=unique_prefix("r"))
    runner.down(topo)
    try:
        runner.up(topo)
        rows = runner.run(topo, timeout=90)
        result = close_loop(topo, exim=unavailable() is None)
        yield topo, rows, result
    finally:
        runner.down(topo)


def _explain(row: LoopRow, result: LoopResult) -> str:
    return (f"{row.mta} {row.domain}: MX farm saw {row.sessions} session(s) = {row.truth}; reported "
            f"{row.reported}; deliveries {row.delivery}; problems {row.problems}; loop problems {result.problems}")


def test_scenario_mail_as_expected(loop) -> None:
    _topo, rows, _result = loop
    assert not [r for r in rows if r.failed], [(r.scenario, r.problems) for r in rows if r.failed]


def test_the_loop_ran_without_problems(loop) -> None:
    _topo, _rows, result = loop
    assert result.problems == []
    assert "Postfix" in result.mtas
    if unavailable() is None:
        assert result.mtas == ["Postfix", "Exim"]
    for mta in result.mtas:
        assert result.steps[mta]["follow_log"]["rc"] == 0
        assert result.steps[mta]["send"]["rc"] == 0, result.steps[mta]["send"]


@pytest.mark.parametrize("mta", MTAS)
@pytest.mark.parametrize("name", [sc.name for sc in REPORTING])
def test_reports_match_the_sessions(loop, mta: str, name: str, request: pytest.FixtureRequest) -> None:
    _topo, _rows, result = loop
    if mta not in result.mtas:
        pytest.skip(f"{mta} not in the loop: {result.skipped.get(mta)}")
    row = next(r for r in result.rows if r.mta == mta and r.scenario == name)
    if row.xfail:
        request.applymarker(pytest.mark.xfail(reason=row.xfail, strict=False))
    assert row.sessions > 0, f"{mta} never connected to {row.domain}'s MX: nothing to compare"
    assert not row.problems, _explain(row, result)
    for uri in row.rua:
        scheme = uri.partition(":")[0]
        assert row.delivery.get(uri) == "delivered", _explain(row, result)
        assert row.reported[scheme]["successful"] == row.truth["successful"]
        assert row.reported[scheme]["failed"] == row.truth["failed"]
        assert row.reported[scheme]["result_types"] == row.truth["result_types"]
        if scheme == "mailto":
            assert row.reported[scheme]["dkim"] == ["pass"]
    assert row.verdict == "ok"


def test_summary_totals_are_the_sessions_of_each_mta(loop) -> None:
    """``mxsec reports summary --json --organization ORG`` of each receiving database: its totals are the sum
    of the MX farm's sessions over the domains that have that rua scheme (known gaps left out)."""
    _topo, _rows, result = loop
    for mta in result.mtas:
        for scheme in ("mailto", "https"):
            rows = [r for r in result.rows if r.mta == mta and any(u.startswith(scheme + ":") for u in r.rua)]
            data = result.summaries[f"{mta} {scheme}"]
            assert data["reports"] == len([r for r in rows if r.sessions])
            exact = [r for r in rows if not r.xfail]
            got_ok = sum(r.reported[scheme]["successful"] for r in exact)
            got_bad = sum(r.reported[scheme]["failed"] for r in exact)
            assert got_ok == sum(r.truth["successful"] for r in exact)
            assert got_bad == sum(r.truth["failed"] for r in exact)
            if not any(r.xfail for r in rows):
                assert data["successful_sessions"] == got_ok
                assert data["failed_sessions"] == got_bad


def test_table_renders(loop) -> None:
    from rich.console import Console

    _topo, _rows, result = loop
    out = io.StringIO()
    render_loop_table(Console(file=out, width=220), result)
    text = out.getvalue()
    assert "closed loop:" in text and "sts-enforce-ok.test" in text
    assert " 0 failed" in text.splitlines()[-1]
