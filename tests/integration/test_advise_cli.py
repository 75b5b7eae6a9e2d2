"""The real `mxsec advise` command line: a month of sample reports in SQLite, a fake world holding example.com in
mode testing, and one STARTTLS server presenting a certificate for both MX hosts from the world's CA.

The sample month (:mod:`mxsec.testing.sample_reports`) ends yesterday: mx2.example.com's certificate expires
for three days in the middle of it and one network strips STARTTLS for a week before that. The expected figures
are computed here from the report files themselves, so the advisor's verdict, blockers and session counts are
checked exactly. A window of the last 12 days holds neither incident: then the advisor says go (STS-F-1/F-2).
Everything runs on 127.0.0.0/8; `mxsec advise` runs as a subprocess.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
from collections.abc import Iterator

import pytest

from mxsec.sts.policy import parse_policy
from mxsec.sts.record import parse_record
from mxsec.testing.fakeworld import FakeWorld, PolicySpec, policy_text
from mxsec.testing.sample_reports import write_samples
from tests.integration.conftest import running_world
from tests.integration.test_dane_tools import FakeMx

from .daemonproc import MXSEC

pytestmark = pytest.mark.integration

DNS_IP, HTTPS_IP = "127.0.97.1", "127.0.97.2"
DOMAIN = "example.com"
MX1, MX2 = "mx1.example.com", "mx2.example.com"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[tuple[FakeWorld, FakeMx]]:
    tmp = tmp_path_factory.mktemp("advise-world")
    with running_world(dns_ip=DNS_IP, https_ip=HTTPS_IP, https_port=443, state_dir=tmp) as w:
        cert, key = w.ca.issue([MX1, MX2])
        with FakeMx(tmp, chain_pems=[cert], key_pem=key) as mx:
            w.add_domain(DOMAIN, txt=["v=STSv1; id=20261101T000000Z"], mx=[MX1, MX2],
                         policy=PolicySpec(body=policy_text([MX1, MX2], mode="testing", max_age=86400)))
            for host in (MX1, MX2):
                w.set_record(host, "A", [mx.ip])
            w.set_record(f"_smtp._tls.{DOMAIN}", "TXT", [f"v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}"])
            yield w, mx


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> tuple[str, list[dict]]:
    """The sample month ingested into a fresh SQLite database: (its URL, the report documents)."""
    tmp = tmp_path_factory.mktemp("advise-reports")
    paths = write_samples(tmp / "in")
    url = f"sqlite:///{tmp / 'reports.sqlite3'}"
    done = subprocess.run([MXSEC, "reports", "ingest", "--db", url, "--no-dkim", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return url, [json.loads(gzip.decompress(p.read_bytes())) for p in paths]


def advise(world: tuple[FakeWorld, FakeMx], url: str, *args: str) -> subprocess.CompletedProcess:
    w, mx = world
    ip, port = w.dns_address
    cmd = [MXSEC, "advise", DOMAIN, "--reports-db", url, *args, "--nameserver", f"{ip}:{port}",
           "--allow-address", "127.0.0.0/8", "--ca-file", str(w.ca_file), "--timeout", "3",
           "--smtp-port", str(mx.port), "--smtp-timeout", "5"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def expected(docs: list[dict], days: int, domain: str = DOMAIN, expired_mx: str | None = None) -> dict:
    """What the reports of ``domain`` say over the last ``days`` whole days, summed here from the JSON
    (``expired_mx``: the only MX the certificate-expired sessions may name). Also used by the lab's test."""
    today = dt.datetime.now(dt.UTC).date()
    since, until = today - dt.timedelta(days=days), today - dt.timedelta(days=1)
    orgs: dict[str, list[int]] = {}
    expired: dict[str, list] = {}
    for doc in docs:
        day = dt.date.fromisoformat(doc["date-range"]["start-datetime"][:10])
        if not since <= day <= until:
            continue
        for entry in doc["policies"]:
            if entry["policy"]["policy-domain"] != domain:
                continue
            counts = orgs.setdefault(doc["organization-name"], [0, 0])
            counts[0] += entry["summary"]["total-successful-session-count"]
            counts[1] += entry["summary"]["total-failure-session-count"]
            for detail in entry.get("failure-details", []):
                if detail["result-type"] == "certificate-expired":
                    assert expired_mx is None or detail["receiving-mx-hostname"] == expired_mx
                    row = expired.setdefault(doc["organization-name"], [0, day, day])
                    row[0] += detail["failed-session-count"]
                    row[1], row[2] = min(row[1], day), max(row[2], day)
    return {"since": since, "until": until, "orgs": orgs, "expired": expired}


def test_the_expired_certificate_blocks_enforce_with_exact_figures(world, reports) -> None:
    url, docs = reports
    want = expected(docs, 14)
    assert want["expired"], "the default window should hold part of the certificate incident"
    result = advise(world, url, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "wait" and data["safe"] is False
    assert data["live"]["mode"] == "testing" and data["live"]["id"] == "20261101T000000Z"
    assert [(r["host"], r["certificate"], r["covered_by"]) for r in data["live"]["mx_hosts"]] == [
        (MX1, "valid", MX1), (MX2, "valid", MX2)]
    by_reporter = {org: (r["successful_sessions"], r["failed_sessions"])
                   for org, r in data["reports"]["by_reporter"].items()}
    assert by_reporter == {org: tuple(c) for org, c in want["orgs"].items()}
    failed_mx2 = sum(row[0] for row in want["expired"].values())
    assert data["reports"]["by_mx"][MX2]["by_result_type"] == {"certificate-expired": failed_mx2}
    lines = [b["message"] for b in data["blockers"] if b["code"] == "failures:certificate-expired"]
    assert lines == [
        f"{MX2}: certificate-expired in {n:,} sessions from {org} "
        + (f"since {first}" if last >= want["until"] else f"from {first} to {last}")
        for org, (n, first, last) in sorted(want["expired"].items(), key=lambda kv: (-kv[1][0], kv[0]))
    ]
    assert {b["code"] for b in data["blockers"]} == {"reporter-below-threshold", "mx-below-threshold",
                                                     "failures:certificate-expired"}
    assert [b["subject"] for b in data["blockers"] if b["code"] == "mx-below-threshold"] == [MX2]
    assert data["reports"]["days_observed"] == 14
    assert parse_policy(data["next"]["policy"]).mode == "enforce"


def test_a_window_without_the_incidents_says_go(world, reports) -> None:
    url, docs = reports
    want = expected(docs, 12)
    assert not want["expired"]
    result = advise(world, url, "--days", "12")
    says_go(result, want, DOMAIN, (MX1, MX2), "20261101T000000Z")
    assert "max_age 31557600" in result.stdout
    data = json.loads(advise(world, url, "--days", "12", "--json").stdout)
    assert data["verdict"] == "enforce" and data["blockers"] == []
    assert [s["max_age"] for s in data["ramp"]] == [86400, 604800, 31557600]


def says_go(result: subprocess.CompletedProcess, want: dict, domain: str, mx: tuple[str, ...], live_id: str) -> None:
    """``advise``'s text says enforce is safe with the window's session total, and its next policy (mode
    enforce, the MX hosts, a day's max_age) and TXT record (a new id) re-parse. Also used by the lab's test."""
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith(f"{domain}: enforce is safe now\n"), out
    assert "blocking" not in out
    total = sum(sum(c) for c in want["orgs"].values())
    assert f"{total:,} sessions" in out
    policy = "\r\n".join(line.strip() for line in out.split("mta-sts.txt):\n", 1)[1].split("then", 1)[0]
                         .splitlines()) + "\r\n"
    parsed = parse_policy(policy)
    assert (parsed.mode, parsed.mx, parsed.max_age) == ("enforce", mx, 86400)
    txt = out.split(f"_mta-sts.{domain}. IN TXT \"", 1)[1].split('"', 1)[0]
    assert parse_record(txt).id != live_id


def test_usage_and_input_errors_are_one_line_exit_2(world, reports, tmp_path) -> None:
    url, _ = reports
    for args, text in ((("--reports-db", "ftp://nowhere/x"), "ftp"),
                       (("--days", "0"), "--days"),
                       (("--min-days", "30"), "--min-days")):
        result = advise(world, url, *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert text in result.stderr
    missing = advise(world, f"sqlite:///{tmp_path / 'none.sqlite3'}")
    assert missing.returncode == 2 and "no report database at" in missing.stderr, missing.stderr
    assert not (tmp_path / "none.sqlite3").exists()
    bad = subprocess.run([MXSEC, "advise", "exa mple.com"], capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode == 2 and "not a domain name" in bad.stderr and "Traceback" not in bad.stderr


def test_live_problems_block_although_the_reports_are_clean(world, reports) -> None:
    """STS-E-1 and STS-F-1: in testing the check only warns about an uncovered MX; the advisor blocks."""
    url, _ = reports
    w, mx = world
    try:
        w.set_policy(DOMAIN, PolicySpec(body=policy_text([MX1], mode="testing", max_age=86400)))
        data = json.loads(advise(world, url, "--days", "12", "--json").stdout)
        assert data["verdict"] == "wait"
        assert [(b["code"], b["subject"]) for b in data["blockers"]] == [("check:sts-mx-not-covered", MX2)]
        assert data["next"]["policy"] == policy_text([MX1], mode="enforce", max_age=86400)
    finally:
        w.set_policy(DOMAIN, PolicySpec(body=policy_text([MX1, MX2], mode="testing", max_age=86400)))
    try:
        w.set_record(MX2, "A", ["127.0.97.3"])  # nothing listens there
        result = advise(world, url, "--days", "12", "--json")
        assert result.returncode == 1
        data = json.loads(result.stdout)
        assert [(b["code"], b["subject"]) for b in data["blockers"]] == [("check:smtp-unreachable",
                                                                         f"{MX2} [127.0.97.3]")]
        assert [r["certificate"] for r in data["live"]["mx_hosts"]] == ["valid", "invalid"]
    finally:
        w.set_record(MX2, "A", [mx.ip])
