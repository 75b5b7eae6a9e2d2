"""`mxsec advise` in the lab, on the sample month of reports (STS-F-1/F-2).

A lab with one scenario domain, ``advise-rollout.test``: MTA-STS in mode testing listing ``mx1`` (valid lab-CA
certificate) and ``mx2`` (an expired one), a TLSRPT record. The sample month
(:func:`mxsec.testing.sample_reports.write_samples`, written for this domain and its two MX hosts) goes into a
fresh SQLite database with ``mxsec reports ingest``; it ends yesterday, ``mx2``'s certificate expires for three
days in the middle of it. ``mxsec advise`` runs inside the sender namespace with the lab resolver and the lab CA:

1. as the lab stands, enforce is blocked: by the live probe of ``mx2`` (expired certificate) and by the reports'
   ``certificate-expired`` figures, which are checked exactly against sums made here from the report files;
   with a window clear of the incidents the live certificate alone still blocks;
2. after fixing it in the scenario (``mx2`` gets a valid certificate, the lab is brought up again) and with a
   window that no longer holds the incidents (``--days 12``), the advisor says go: exit 0, and the next policy
   and TXT record it prints parse as a ``mode: enforce`` policy and an STS record.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mxsec.lab import runner
from mxsec.lab.prerequisites import prerequisites
from mxsec.lab.topology import Topology
from mxsec.sts.policy import parse_policy
from mxsec.sts.record import parse_record
from mxsec.testing.sample_reports import write_samples

from tests.integration.test_advise_cli import expected as sample_figures
from tests.integration.test_advise_cli import says_go

from .conftest import unique_prefix

pytestmark = [pytest.mark.lab]

MXSEC = str(Path(sys.executable).with_name("mxsec"))
DOMAIN = "advise-rollout.test"
MX1, MX2 = f"mx1.{DOMAIN}", f"mx2.{DOMAIN}"
LIVE_ID = "20261101T000000Z"

SCENARIO = """\
[[scenario]]
name = "advise-rollout"
about = "mode testing, two MX hosts; mx2's certificate is {mx2_cert}: may enforce follow?"
mx = [{{ host = "{mx1}", cert = "valid", preference = 10 }},
      {{ host = "{mx2}", cert = "{mx2_cert}", preference = 20 }}]
sts = {{ id = "{live_id}", mode = "testing", mx = ["{mx1}", "{mx2}"], max_age = 86400 }}
tlsrpt = "mailto:tlsrpt@reports.test"
expect = {{ result = "delivered", tls = "any" }}
"""


@pytest.fixture(scope="module")
def lab_ready() -> None:
    reason = prerequisites()
    if reason:
        pytest.skip(reason)


@contextmanager
def lab_with(tmp: Path, mx2_cert: str) -> Iterator[Topology]:
    """The lab with the one scenario, mx2's certificate of kind ``mx2_cert``; always torn down."""
    scenarios = tmp / f"scenarios-{mx2_cert}.toml"
    scenarios.write_text(SCENARIO.format(mx1=MX1, mx2=MX2, mx2_cert=mx2_cert, live_id=LIVE_ID), encoding="utf-8")
    topo = Topology(prefix=unique_prefix("adv"))
    runner.down(topo)
    try:
        runner.up(topo, scenarios)
        yield topo
    finally:
        runner.down(topo)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> tuple[str, list[dict]]:
    """The sample month for DOMAIN ingested into a fresh SQLite database: (its URL, the report documents)."""
    tmp = tmp_path_factory.mktemp("lab-advise-reports")
    paths = write_samples(tmp / "in", domain=DOMAIN, mx=(MX1, MX2))
    url = f"sqlite:///{tmp / 'reports.sqlite3'}"
    done = subprocess.run([MXSEC, "reports", "ingest", "--db", url, "--no-dkim", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return url, [json.loads(gzip.decompress(p.read_bytes())) for p in paths]


def advise(topo: Topology, url: str, *args: str) -> subprocess.CompletedProcess:
    """``mxsec advise DOMAIN`` inside the sender namespace: lab resolver, lab CA, lab addresses only."""
    ca_file = runner.LabPaths.of(topo).ca_file
    argv = ["ip", "netns", "exec", topo.sender_ns, MXSEC, "advise", DOMAIN, "--reports-db", url, *args,
            "--nameserver", topo.resolver_ip, "--ca-file", str(ca_file),
            "--allow-address", topo.host_net, "--allow-address", topo.dns_net,
            "--timeout", "3", "--smtp-timeout", "5"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)


def expected(docs: list[dict], days: int) -> dict:
    """What the reports of DOMAIN say over the last ``days`` whole days (the integration test's reckoning)."""
    return sample_figures(docs, days, domain=DOMAIN, expired_mx=MX2)


def test_the_live_expired_certificate_and_the_reports_block_enforce(lab_ready, reports, tmp_path) -> None:
    """STS-F-1: mx2's expired certificate (live) and the reports' certificate-expired sessions block enforce."""
    url, docs = reports
    want = expected(docs, 14)
    assert want["expired"], "the default 14-day window should hold part of the certificate incident"
    with lab_with(tmp_path, "expired") as topo:
        result = advise(topo, url, "--json")
        clean_window = advise(topo, url, "--days", "12", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "wait" and data["safe"] is False
    assert data["live"]["mode"] == "testing" and data["live"]["id"] == LIVE_ID
    assert data["live"]["smtp_checked"] is True
    assert [(r["host"], r["certificate"], r["covered_by"]) for r in data["live"]["mx_hosts"]] == [
        (MX1, "valid", MX1), (MX2, "invalid", MX2)]

    # the live probe: mx2's certificate is expired, named as such
    live = [b for b in data["blockers"] if b["code"] == "check:smtp-certificate-expired"]
    assert len(live) == 1, data["blockers"]
    assert live[0]["subject"].startswith(MX2), live
    assert "certificate expired" in live[0]["message"], live
    assert not [b for b in data["blockers"] if b["subject"].startswith(MX1)], data["blockers"]

    # the reports: exact figures, summed from the report files
    by_reporter = {org: (r["successful_sessions"], r["failed_sessions"])
                   for org, r in data["reports"]["by_reporter"].items()}
    assert by_reporter == {org: tuple(c) for org, c in want["orgs"].items()}
    failed_mx2 = sum(row[0] for row in want["expired"].values())
    assert data["reports"]["by_mx"][MX2]["by_result_type"] == {"certificate-expired": failed_mx2}
    assert data["reports"]["since"] == want["since"].isoformat()
    assert data["reports"]["until"] == want["until"].isoformat()
    assert data["reports"]["days_observed"] == 14
    lines = [b["message"] for b in data["blockers"] if b["code"] == "failures:certificate-expired"]
    assert lines == [
        f"{MX2}: certificate-expired in {n:,} sessions from {org} "
        + (f"since {first}" if last >= want["until"] else f"from {first} to {last}")
        for org, (n, first, last) in sorted(want["expired"].items(), key=lambda kv: (-kv[1][0], kv[0]))
    ]
    assert [b["subject"] for b in data["blockers"] if b["code"] == "mx-below-threshold"] == [MX2]
    assert {b["code"] for b in data["blockers"]} == {
        "check:smtp-certificate-expired", "reporter-below-threshold", "mx-below-threshold",
        "failures:certificate-expired"}, data["blockers"]

    # a window clear of the incidents does not help while the live certificate is still expired
    assert clean_window.returncode == 1, clean_window.stdout + clean_window.stderr
    clean = json.loads(clean_window.stdout)
    assert clean["verdict"] == "wait"
    assert [(b["code"], b["subject"]) for b in clean["blockers"]] == [
        ("check:smtp-certificate-expired", live[0]["subject"])]


def test_after_fixing_the_certificate_a_clean_window_says_go(lab_ready, reports, tmp_path) -> None:
    """STS-F-1/F-2: mx2 valid in the scenario, a window without the incidents: enforce is safe, exit 0."""
    url, docs = reports
    want = expected(docs, 12)
    assert not want["expired"], "the 12-day window must be clear of the certificate incident"
    with lab_with(tmp_path, "valid") as topo:
        result = advise(topo, url, "--days", "12")
        as_json = advise(topo, url, "--days", "12", "--json")
    says_go(result, want, DOMAIN, (MX1, MX2), LIVE_ID)

    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["verdict"] == "enforce" and data["safe"] is True and data["blockers"] == []
    assert [(r["host"], r["certificate"]) for r in data["live"]["mx_hosts"]] == [(MX1, "valid"), (MX2, "valid")]
    assert data["reports"]["by_mx"][MX2]["by_result_type"].get("certificate-expired") is None
    assert parse_policy(data["next"]["policy"]).mode == "enforce"
    assert parse_record(data["next"]["txt"]).id == data["next"]["id"]
