"""`mxsec check --reports-db`: the rollout advice of `mxsec advise` as a section of the check, on the check's facts.

The same set-up as tests/integration/test_advise_cli.py: the sample month of reports in SQLite (its ``reports``
fixture and ``expected`` figures, imported), and a fake world holding example.com in mode testing with one
STARTTLS server for both MX hosts (built the same way here, on addresses of its own so the two modules never
share a port). `mxsec check` and `mxsec advise` run as subprocesses over the same window; the verdict, the
blockers and the figures of the check's section must be exactly advise's (STS-F-1/F-2), and without
--reports-db the check's output must not change.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from mxsec.testing.fakeworld import FakeWorld, PolicySpec, policy_text
from tests.integration.conftest import running_world
from tests.integration.test_advise_cli import DOMAIN, MX1, MX2, expected
from tests.integration.test_advise_cli import reports as reports  # noqa: F401 - the shared fixture
from tests.integration.test_dane_tools import FakeMx

from .daemonproc import MXSEC

pytestmark = pytest.mark.integration

DNS_IP, HTTPS_IP = "127.0.98.1", "127.0.98.2"
ID = "20261101T000000Z"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[tuple[FakeWorld, FakeMx]]:
    tmp = tmp_path_factory.mktemp("check-advice-world")
    with running_world(dns_ip=DNS_IP, https_ip=HTTPS_IP, https_port=443, state_dir=tmp) as w:
        cert, key = w.ca.issue([MX1, MX2])
        with FakeMx(tmp, chain_pems=[cert], key_pem=key) as mx:
            w.add_domain(DOMAIN, txt=[f"v=STSv1; id={ID}"], mx=[MX1, MX2],
                         policy=PolicySpec(body=policy_text([MX1, MX2], mode="testing", max_age=86400)))
            for host in (MX1, MX2):
                w.set_record(host, "A", [mx.ip])
            w.set_record(f"_smtp._tls.{DOMAIN}", "TXT", [f"v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}"])
            yield w, mx


def run(world: tuple[FakeWorld, FakeMx], command: str, *args: str, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    w, mx = world
    ip, port = w.dns_address
    cmd = [MXSEC, command, DOMAIN, *args, "--nameserver", f"{ip}:{port}", "--allow-address", "127.0.0.0/8",
           "--ca-file", str(w.ca_file), "--timeout", "3", "--smtp-port", str(mx.port), "--smtp-timeout", "5"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False, env=env)


def clean_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "MXSEC_REPORTS_DB"}


def comparable(advice: dict) -> dict:
    """An advice object without the ramp's dates and ids, which follow the clock of each run."""
    out = {k: v for k, v in advice.items() if k not in ("next", "ramp")}
    out["next_policy_lines"] = [line for line in (advice["next"] or {}).get("policy", "").splitlines()
                                if not line.startswith("id")]
    out["ramp_max_age"] = [step["max_age"] for step in advice["ramp"]]
    return out


def test_the_advice_key_equals_advise_json_and_the_exit_status_is_the_checks(world, reports) -> None:
    url, docs = reports
    want = expected(docs, 14)
    assert want["expired"], "the default window should hold part of the certificate incident"
    checked = run(world, "check", "--json", "--reports-db", url, env=clean_env())
    # the check finds no error in this domain: its exit status is 0 although the advice says wait (advise: 1)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["summary"]["errors"] == 0
    advised = run(world, "advise", "--json", "--reports-db", url, env=clean_env())
    assert advised.returncode == 1, advised.stdout + advised.stderr
    alone = json.loads(advised.stdout)
    section = data["advice"]
    assert section["verdict"] == alone["verdict"] == "wait" and section["safe"] is False
    assert section["blockers"] == alone["blockers"]
    assert {b["code"] for b in section["blockers"]} == {"reporter-below-threshold", "mx-below-threshold",
                                                        "failures:certificate-expired"}
    assert comparable(section) == comparable(alone)
    by_reporter = {org: (r["successful_sessions"], r["failed_sessions"])
                   for org, r in section["reports"]["by_reporter"].items()}
    assert by_reporter == {org: tuple(c) for org, c in want["orgs"].items()}
    failed_mx2 = sum(row[0] for row in want["expired"].values())
    assert section["reports"]["by_mx"][MX2]["by_result_type"] == {"certificate-expired": failed_mx2}
    # the advice was judged on the check's own facts: its live part is what the check's JSON says
    assert section["live"]["id"] == data["mta_sts"]["id"] == ID
    assert section["live"]["mode"] == data["mta_sts"]["policy"]["mode"] == "testing"


def test_the_text_section_holds_advise_s_lines(world, reports) -> None:
    url, docs = reports
    want = expected(docs, 12)
    assert not want["expired"]
    checked = run(world, "check", "--reports-db", url, "--days", "12", env=clean_env())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    head, section = checked.stdout.split("\n  Rollout advice\n", 1)
    assert head.startswith(f"{DOMAIN}  0 error(s)")
    advised = run(world, "advise", "--reports-db", url, "--days", "12", env=clean_env())
    assert advised.returncode == 0, advised.stdout + advised.stderr
    assert advised.stdout.startswith(f"{DOMAIN}: enforce is safe now\n")
    got = [line[4:] if line else line for line in section.rstrip("\n").splitlines()]
    # the lines up to the ramp do not depend on the clock: equal to advise's, line for line
    until_ramp = advised.stdout.split("next policy file", 1)[0].splitlines()
    assert got[:len(until_ramp)] == until_ramp
    assert "blocking" not in section
    total = sum(sum(c) for c in want["orgs"].values())
    assert f"{total:,} sessions" in section
    assert "max_age 31557600" in section


def test_without_reports_db_the_output_is_unchanged(world, reports) -> None:
    url, _ = reports
    mx = world[1]
    before = len(mx.ehlo)
    plain = run(world, "check", "--json", env=clean_env())
    assert plain.returncode == 0, plain.stderr
    data = json.loads(plain.stdout)
    assert "advice" not in data
    probes = len(mx.ehlo) - before
    assert probes == len(data["smtp"]["probes"]) > 0
    before = len(mx.ehlo)
    with_db = json.loads(run(world, "check", "--json", "--reports-db", url, env=clean_env()).stdout)
    assert len(mx.ehlo) - before == probes, "the advice must reuse the check's probes, not probe again"
    with_db.pop("advice")
    for d in (data, with_db):  # the probe timings differ from run to run
        for probe in d["smtp"]["probes"]:
            probe.pop("elapsed")
    assert with_db == data
    text = run(world, "check", env=clean_env())
    assert text.returncode == 0 and "Rollout advice" not in text.stdout and text.stdout.startswith(DOMAIN)
    # unlike advise, check does not take the database from the environment: a scheduled check stays the same
    env = {**clean_env(), "MXSEC_REPORTS_DB": url}
    assert "Rollout advice" not in run(world, "check", env=env).stdout


def test_usage_errors_are_one_line_exit_2(world, reports, tmp_path) -> None:
    url, _ = reports
    for args, text in ((("--days", "12"), "--days needs --reports-db"),
                       (("--min-success", "0.5"), "--min-success needs --reports-db"),
                       (("--reports-db", url, "--min-days", "30"), "--min-days 30 is more than --days 14"),
                       (("--reports-db", "ftp://nowhere/x"), "ftp"),
                       (("--reports-db", url, "--days", "0"), "--days"),
                       (("--reports-db", f"sqlite:///{tmp_path / 'none.sqlite3'}"), "no report database at")):
        result = run(world, "check", *args, env=clean_env())
        assert result.returncode == 2, (args, result.stdout + result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert text in result.stderr and result.stdout == "", (args, result.stderr)
    assert not (tmp_path / "none.sqlite3").exists()
