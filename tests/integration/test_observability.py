"""Monitoring artefacts against the real metrics (issue 16): ``contrib/prometheus/mxsec-alerts.yml`` and
``contrib/grafana/mxsec.json``.

A real ``mxsec daemon`` (fake world on 127.0.96.1/.2) answers a few queries, a real report receiver (``mxsec
reports serve``'s app over SQLite) stores one report, a real ``mxsec tlsrpt collect`` gets a good, a bad and an
odd datagram; all three are scraped. Then:

* ``promtool check rules`` passes on the rules file;
* ``promtool test rules`` runs a test file generated from the scraped series (their names and label sets, with
  the ``job``/``instance`` labels Prometheus adds): every alert fires in one constructed history and stays
  quiet in another, so an alert naming a metric or label the programs do not export cannot pass;
* every ``mxsec_*`` name in the alert expressions and in the dashboard's queries is one the programs export.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import time
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mxsec.storage.reportdb import ReportDB
from mxsec.testing.fakeworld import FakeWorld, PolicySpec, WorldThread, policy_text
from mxsec.testing.libtlsrpt import Detail, Pol, encode
from tests import tlsrpt_corpus as tc

from .daemonproc import Daemon, free_port
from .servers import report_server_thread
from .test_tlsrpt_collect import Collector, Sender, _short_dir, rua

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "contrib" / "prometheus" / "mxsec-alerts.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "mxsec.json"
DAEMON_JOB, DAEMON_INSTANCE = "mxsec", "mx1.example:9461"
RECEIVER_JOB, RECEIVER_INSTANCE = "mxsec-reports", "reports.example:443"
COLLECTOR_JOB, COLLECTOR_INSTANCE = "mxsec-tlsrpt-collect", "mx1.example:9462"
CHECK_JOB, CHECK_INSTANCE = "node", "monitor.example:9100"  # node_exporter's textfile collector
SERVE_JOB, SERVE_INSTANCE = "mxsec-serve-policy", "mta-sts.example:9463"
METRIC = re.compile(r"\bmxsec_[a-z0-9_]+\b")

Samples = dict[str, list[dict[str, str]]]


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run scripts/install-system-deps.sh (Debian package prometheus)"
    return path


def parse_samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(dict(sample.labels))
    return out


@pytest.fixture(scope="module")
def daemon_samples(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    world = FakeWorld(dns=("127.0.96.1", 0), https=("127.0.96.2", 443), state_dir=tmp_path_factory.mktemp("world"))
    world.add_domain("enforce.test", txt=["v=STSv1; id=1"],
                     policy=PolicySpec(body=policy_text(["mx.enforce.test"])), mx=["mx.enforce.test"])
    world.add_domain("redirect.test", txt=["v=STSv1; id=1"],
                     policy=PolicySpec(status=301, location="https://elsewhere.test/"))
    world.add_domain("nopolicy.test")
    thread = WorldThread(world)
    thread.start()
    mport = free_port()
    daemon = Daemon(tmp_path_factory.mktemp("daemon"), world=world,
                    extra=["--metrics-listen", f"127.0.0.1:{mport}"]).start()
    try:
        client = daemon.client()
        assert client.ask("enforce.test") == "OK secure match=mx.enforce.test servername=hostname"
        assert client.ask("redirect.test") == "NOTFOUND "
        assert client.ask("nopolicy.test") == "NOTFOUND "
        client.close()
        text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    finally:
        daemon.stop()
        thread.stop()
    samples = parse_samples(text)
    # the scrape reflects the queries: one good fetch, one failed one (so both outcome labels exist)
    outcomes = {labels["outcome"] for labels in samples["mxsec_policy_fetches_total"]}
    assert "ok" in outcomes and len(outcomes) >= 2, outcomes
    assert samples["mxsec_refresh_overdue_policies"] == [{}]
    return samples


@pytest.fixture(scope="module")
def receiver_samples(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    db = ReportDB(f"sqlite:///{tmp_path_factory.mktemp('reports') / 'reports.sqlite3'}")
    doc = tc.report(policies=[tc.sts_entry(ok=90, failed=10, details=[tc.detail("certificate-expired", 10)])])
    try:
        with report_server_thread(db) as (port, _server), httpx.Client(timeout=10) as client:
            response = client.post(f"http://127.0.0.1:{port}/tlsrpt", content=tc.as_json(doc),
                                   headers={"content-type": "application/tlsrpt+json"})
            assert response.status_code == 201, response.text
            text = client.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        db.close()
    samples = parse_samples(text)
    assert {"policy_domain": "example.com", "result": "failed"} in samples["mxsec_tlsrpt_sessions"]
    return samples


@pytest.fixture(scope="module")
def collector_samples() -> Samples:
    directory = _short_dir()
    port = free_port()
    collector = Collector(directory / "c.sock", f"sqlite:///{directory}/c.sqlite3", "--metrics-listen",
                          f"127.0.0.1:{port}").start()
    try:
        sender = Sender(collector.socket_path)
        sender.send(encode("c.example", rua("c.example"), [Pol(9, None)]))
        sender.send(b"not json")
        # a result code outside libtlsrpt's list: counted, with a warning
        sender.send(encode("c.example", rua("c.example"), [Pol(9, None, details=[Detail(999)], failed=True)]))
        sender.close()
        deadline = time.monotonic() + 10
        while True:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            if "mxsec_tlsrpt_datagrams_total 3.0" in text or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        collector.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
    samples = parse_samples(text)
    assert {"code": "not-json"} in samples["mxsec_tlsrpt_bad_datagrams_total"], text
    assert {"code": "unknown-result-code"} in samples["mxsec_tlsrpt_datagram_warnings_total"], text
    return samples


@pytest.fixture(scope="module")
def check_samples(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    """``mxsec check --metrics-file`` of a domain whose MX presents a certificate (a real STARTTLS server)."""
    from .test_check_cli import check, serve

    tmp = tmp_path_factory.mktemp("check")
    world = FakeWorld(dns=("127.0.96.7", 0), https=("127.0.96.8", 443), state_dir=tmp / "world")
    thread = WorldThread(world)
    thread.start()
    try:
        with serve(world, tmp, "metrics.test") as mx:
            result = check(world, "metrics.test", "--metrics-file", str(tmp / "check.prom"), smtp_port=mx.port)
    finally:
        thread.stop()
    assert result.returncode in (0, 1), result.stderr
    samples = parse_samples((tmp / "check.prom").read_text())
    assert samples["mxsec_check_certificate_not_after_seconds"] == [
        {"domain": "metrics.test", "mx": "mx.metrics.test", "address": mx.ip}]
    return samples


@pytest.fixture(scope="module")
def serve_samples(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    """``mxsec serve-policy --acme-directory … --metrics-listen``: one host gets its certificate from Pebble,
    one cannot (its name does not resolve), so every family has a series."""
    from mxsec.testing.pebble import running_pebble

    from .test_serve_policy import Serve

    tmp = tmp_path_factory.mktemp("serve")
    ip = "127.0.96.9"
    world = FakeWorld(dns=("127.0.96.10", 0), https=("127.0.96.11", 443), state_dir=tmp / "world")
    world.set_record("mta-sts.ok.test", "A", [ip])
    thread = WorldThread(world)
    thread.start()
    port, mport = free_port(ip), free_port()
    sites = tmp / "sites.toml"
    sites.write_text('[policy]\nmode = "enforce"\nmax_age = 604800\n[domains."ok.test"]\nmx = ["mx.ok.test"]\n'
                     '[domains."broken.test"]\nmx = ["mx.broken.test"]\n')
    dns_host, dns_port = world.dns_address
    try:
        with running_pebble(tls_port=port, http_port=free_port(), dns_server=f"{dns_host}:{dns_port}") as pebble:
            server = Serve(tmp, None, "--sites", str(sites), "--acme-directory", pebble.directory_url,
                           "--acme-ca-bundle", str(pebble.ca_bundle), "--acme-state", str(tmp / "acme"),
                           "--acme-retry", "1", "--metrics-listen", f"127.0.0.1:{mport}", listen=(f"{ip}:{port}",))
            try:
                server.start()
                server.wait_for(lambda r: r.get("msg") == "certificate obtained", 60)
                server.wait_for(lambda r: r.get("msg") == "certificate order failed; trying again later", 60)
                roots = tmp / "roots.pem"
                roots.write_bytes(pebble.roots_pem())
                ctx = ssl.create_default_context(cafile=str(roots))
                with socket.create_connection((ip, port), timeout=5) as raw, \
                        ctx.wrap_socket(raw, server_hostname="mta-sts.ok.test") as tls:
                    tls.sendall(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.ok.test\r\n"
                                b"Connection: close\r\n\r\n")
                    assert tls.recv(100).startswith(b"HTTP/1.1 200")
                text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
            finally:
                server.kill()
    finally:
        thread.stop()
    samples = parse_samples(text)
    assert samples["mxsec_serve_policy_certificate_not_after_seconds"] == [{"host": "mta-sts.ok.test"}], text
    assert {"status": "200"} in samples["mxsec_serve_policy_responses_total"], text
    assert {"host": "mta-sts.broken.test"} in samples["mxsec_serve_policy_acme_order_failures"], text
    return samples


@pytest.fixture(scope="module")
def exported(daemon_samples: Samples, receiver_samples: Samples, collector_samples: Samples,
             check_samples: Samples, serve_samples: Samples) -> set[str]:
    return set(daemon_samples) | set(receiver_samples) | set(collector_samples) | set(check_samples) | set(
        serve_samples)


# ---------------------------------------------------------------------------------------------- rules


def load_alerts() -> dict[str, dict]:
    doc = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule}


def test_promtool_check_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_alerts())} rules found" in result.stdout


def test_every_alert_has_for_severity_and_annotations_naming_a_metric() -> None:
    for name, rule in load_alerts().items():
        assert "for" in rule, name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"].strip(), name
        description = rule["annotations"]["description"]
        assert METRIC.search(description), f"{name}: the description names no metric"


class Series:
    """Builds promtool series names from what a program really exported."""

    def __init__(self, samples: Samples, job: str, instance: str) -> None:
        self.samples, self.job, self.instance = samples, job, instance

    def __call__(self, name: str, where: Callable[[dict[str, str]], bool] = lambda labels: True, **labels: str) -> str:
        for have in self.samples.get(name, []):
            if all(have.get(k) == v for k, v in labels.items()) and where(have):
                full = {**have, "job": self.job, "instance": self.instance}
                return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(full.items())) + "}"
        raise AssertionError(f"{name}{labels} is not exported by the {self.job} scrape")


def cases(daemon: Series, receiver: Series, collector: Series, checker: Series, serve: Series) -> dict[str, dict]:
    """For each alert: the labels it must carry, an interval, an evaluation time, and a history where it fires
    and one where it does not."""
    d_labels = {"job": DAEMON_JOB, "instance": DAEMON_INSTANCE}
    r_labels = {"job": RECEIVER_JOB, "instance": RECEIVER_INSTANCE}
    c_labels = {"job": COLLECTOR_JOB, "instance": COLLECTOR_INSTANCE}
    k_labels = {"job": CHECK_JOB, "instance": CHECK_INSTANCE}
    s_labels = {"job": SERVE_JOB, "instance": SERVE_INSTANCE}
    fetch_ok = daemon("mxsec_policy_fetches_total", outcome="ok")
    fetch_bad = daemon("mxsec_policy_fetches_total", lambda labels: labels["outcome"] != "ok")
    replies = {kind: daemon("mxsec_socketmap_replies_total", kind=kind) for kind in ("ok", "notfound", "temp", "perm")}

    def answers(ok: str, temp: str) -> dict[str, str]:
        return {replies["ok"]: ok, replies["temp"]: temp, replies["notfound"]: "0x90", replies["perm"]: "0x90"}

    ok_domain = receiver("mxsec_tlsrpt_sessions", policy_domain="example.com", result="successful")
    failed_domain = receiver("mxsec_tlsrpt_sessions", policy_domain="example.com", result="failed")
    return {
        "MxsecPolicyFetchesFailing": dict(
            labels=d_labels, interval="1m", at="45m",
            fire={fetch_ok: "0+10x90", fetch_bad: "0+10x90"},
            quiet={fetch_ok: "0+10x90", fetch_bad: "0+1x90"}),
        "MxsecRefreshOverdue": dict(
            labels=d_labels, interval="1m", at="60m",
            fire={daemon("mxsec_refresh_overdue_policies"): "0x10 3x80"},
            quiet={daemon("mxsec_refresh_overdue_policies"): "0x10 3x20 0x60"}),
        "MxsecStoreDown": dict(
            labels=d_labels, interval="1m", at="20m",
            fire={daemon("mxsec_store_up"): "1x10 0x20"},
            quiet={daemon("mxsec_store_up"): "1x10 0 1x20"}),
        "MxsecTempAnswersHigh": dict(
            labels=d_labels, interval="1m", at="40m",
            fire=answers("0+100x90", "0+10x90"),
            quiet=answers("0+100x90", "0+2x90")),
        "MxsecTimeBudgetTemps": dict(
            labels=d_labels, interval="1m", at="40m",
            fire={**answers("0+100x90", "0+5x90"), daemon("mxsec_budget_temps_total"): "0+5x90"},
            quiet={**answers("0+100x90", "0+5x90"), daemon("mxsec_budget_temps_total"): "0x90"}),
        "MxsecTlsrptFailureRateHigh": dict(
            labels={**r_labels, "policy_domain": "example.com"}, interval="1h", at="30h",
            fire={ok_domain: "0+1000x48", failed_domain: "0+100x48"},
            quiet={ok_domain: "0+1000x48", failed_domain: "0+10x48"}),
        "MxsecTlsrptDatabaseDown": dict(
            labels=r_labels, interval="1m", at="15m",
            fire={receiver("mxsec_tlsrpt_database_up"): "1x5 0x15"},
            quiet={receiver("mxsec_tlsrpt_database_up"): "1x20"}),
        "MxsecTlsrptConflictingReports": dict(
            labels=r_labels, interval="1m", at="35m",
            fire={receiver("mxsec_tlsrpt_conflicting_reports"): "0x30 1x30"},
            quiet={receiver("mxsec_tlsrpt_conflicting_reports"): "1x60"}),
        "MxsecMxCertificateExpiring": dict(
            # promtool's time() starts at 0: 3 hours in, a certificate valid until second 20,000 has 6 h left
            labels={**k_labels, "domain": "metrics.test", "mx": "mx.metrics.test",
                    "address": checker.samples["mxsec_check_certificate_not_after_seconds"][0]["address"]},
            interval="1m", at="3h",
            fire={checker("mxsec_check_certificate_not_after_seconds"): "20000x200"},
            quiet={checker("mxsec_check_certificate_not_after_seconds"): "99000000x200"}),
        "MxsecPolicyHostCertificateExpiring": dict(
            labels={**s_labels, "host": "mta-sts.ok.test"}, interval="1m", at="3h",
            fire={serve("mxsec_serve_policy_certificate_not_after_seconds"): "20000x200"},
            quiet={serve("mxsec_serve_policy_certificate_not_after_seconds"): "99000000x200"}),
        "MxsecPolicyHostOrdersFailing": dict(
            labels={**s_labels, "host": "mta-sts.broken.test"}, interval="1m", at="2h",
            fire={serve("mxsec_serve_policy_acme_order_failures", host="mta-sts.broken.test"): "0 1 2 3+1x130"},
            quiet={serve("mxsec_serve_policy_acme_order_failures", host="mta-sts.broken.test"): "0 1 2 3x30 0x100"}),
        "MxsecTlsrptCollectorWriteErrors": dict(
            labels=c_labels, interval="1m", at="40m",
            fire={collector("mxsec_tlsrpt_write_errors_total"): "0x10 0+1x50"},
            quiet={collector("mxsec_tlsrpt_write_errors_total"): "0x10 0+1x5 6x40"}),
    }


def render(template: str, labels: dict[str, str]) -> str:
    out = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], template)
    assert "{{" not in out, f"annotations may only use $labels: {template!r}"
    return out


def rule_tests(alerts: dict[str, dict], table: dict[str, dict], *, swap: str | None = None) -> dict:
    """A promtool test file: per alert, its firing history expects it, its quiet history expects nothing.
    ``swap``: expect the opposite for that alert (a wrong expectation, which promtool must reject)."""
    tests = []
    for name, case in table.items():
        rule = alerts[name]
        labels = {**case["labels"], **rule["labels"]}
        expected = [{"exp_labels": labels,
                     "exp_annotations": {k: render(v, labels) for k, v in rule["annotations"].items()}}]
        for history, want in (("fire", expected), ("quiet", [])):
            if name == swap:
                want = [] if want else expected
            tests.append({
                "name": f"{name} {history}",
                "interval": case["interval"],
                "input_series": [{"series": s, "values": v} for s, v in case[history].items()],
                "alert_rule_test": [{"eval_time": case["at"], "alertname": name, "exp_alerts": want}],
            })
    return {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}


def run_rule_tests(path: Path, doc: dict) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120)


def test_every_alert_fires_and_stays_quiet_on_the_real_series(daemon_samples: Samples, receiver_samples: Samples,
                                                              collector_samples: Samples, check_samples: Samples,
                                                              serve_samples: Samples, tmp_path: Path) -> None:
    alerts = load_alerts()
    table = cases(Series(daemon_samples, DAEMON_JOB, DAEMON_INSTANCE),
                  Series(receiver_samples, RECEIVER_JOB, RECEIVER_INSTANCE),
                  Series(collector_samples, COLLECTOR_JOB, COLLECTOR_INSTANCE),
                  Series(check_samples, CHECK_JOB, CHECK_INSTANCE),
                  Series(serve_samples, SERVE_JOB, SERVE_INSTANCE))
    assert set(table) == set(alerts), "each alert needs a firing and a quiet case"
    result = run_rule_tests(tmp_path / "mxsec-alerts.test.yml", rule_tests(alerts, table))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # the harness can fail: a wrong expectation for one alert is rejected
    wrong = run_rule_tests(tmp_path / "wrong.test.yml", rule_tests(alerts, table, swap="MxsecStoreDown"))
    assert wrong.returncode != 0 and "MxsecStoreDown" in wrong.stdout + wrong.stderr


def test_alert_expressions_name_only_exported_metrics(exported: set[str]) -> None:
    for name, rule in load_alerts().items():
        used = set(METRIC.findall(rule["expr"]))
        assert used, name
        assert used <= exported, f"{name}: {sorted(used - exported)} not exported"


# ------------------------------------------------------------------------------------------ dashboard


def panel_exprs(dashboard: dict) -> list[tuple[str, str]]:
    out = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((panel.get("title", "?"), target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return out


def test_dashboard_names_only_exported_metrics(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    exprs = panel_exprs(dashboard)
    assert len(exprs) >= 10
    used: set[str] = set()
    for title, expr in exprs:
        names = set(METRIC.findall(expr))
        assert names, f"panel {title!r}: {expr!r} names no mxsec metric"
        assert names <= exported, f"panel {title!r}: {sorted(names - exported)} not exported"
        used |= names
    for variable in dashboard["templating"]["list"]:
        names = set(METRIC.findall(variable["query"]["query"]))
        assert names and names <= exported, variable["name"]
    for panel in dashboard["panels"]:
        if panel.get("type") != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel.get("title")
    # the panels the brief asks for are there: answers, cache, fetches, refresh, fleet/store, DNS, latency,
    # tables, receiver
    for wanted in ("mxsec_socketmap_replies_total", "mxsec_cache_hits_total", "mxsec_cache_misses_total",
                   "mxsec_policy_fetches_total", "mxsec_refresh_overdue_policies", "mxsec_fleet_resolutions_total",
                   "mxsec_store_up", "mxsec_store_errors_total", "mxsec_dns_queries_total",
                   "mxsec_socketmap_latency_seconds_bucket", "mxsec_table_entries", "mxsec_tlsrpt_sessions",
                   "mxsec_tlsrpt_database_up", "mxsec_tlsrpt_write_errors_total"):
        assert wanted in used, wanted


def grafana_to_promql(expr: str) -> str:
    """A panel query with Grafana's variables replaced by what Grafana would put there."""
    for variable in ("$instance", "$receiver", "$collector", "$policyhost"):
        expr = expr.replace(variable, ".*")
    return expr.replace("$__rate_interval", "5m")


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every panel query (as a recording rule) after Grafana's variable substitution."""
    exprs = panel_exprs(json.loads(DASHBOARD.read_text()))
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": grafana_to_promql(expr)} for i, (_, expr) in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # and a broken query would be caught
    rules["groups"][0]["rules"].append({"record": "dashboard:broken", "expr": "sum by (kind (mxsec_connections)"})
    path.write_text(yaml.safe_dump(rules))
    broken = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0
