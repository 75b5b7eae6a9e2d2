"""A real Exim (Debian's exim4-daemon-light) delivering through ``mxsec daemon`` in the lab.

The whole lab comes up once for this module (prefix ``mxsec-x<pid>``: DNSSEC DNS, policy hosts, the MX farm,
the daemon — and the Postfix the runner always starts, unused here). Then a private Exim is set up in the
sender namespace from Debian's own configuration (split scheme, ``update-exim4.conf``) plus the unchanged
files of ``contrib/exim/`` (:mod:`mxsec.lab.exim`), and one message per scenario is delivered with ``exim4
-odf``. Each test asserts Exim's main log (delivered or deferred, router, ``CV=yes``/``CV=dane``/``CV=no``,
the reason) and what the MX farm stored and saw (the message, TLS, SNI; for a deferral: nothing stored, and
for routing deferrals not even a connection). The panic log must stay empty.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from mxsec.lab import runner, topology
from mxsec.lab.prerequisites import prerequisites
from mxsec.lab.dns import LabDns
from mxsec.lab.exim import Exim, EximOutcome, EximSpec, unavailable
from mxsec.lab.mx import read_received, read_sessions
from mxsec.lab.scenarios import load_scenarios
from mxsec.lab.topology import Topology

from .conftest import unique_prefix

pytestmark = [pytest.mark.lab]

SENDER = runner.SENDER
SCENARIOS = {sc.name: sc for sc in load_scenarios()}


class Lab:
    def __init__(self, topo: Topology, exim: Exim) -> None:
        self.topo = topo
        self.exim = exim
        self.paths = runner.LabPaths.of(topo)
        self.count = 0

    def rcpt(self, scenario: str) -> str:
        self.count += 1
        return f"exim{self.count}-{int(time.time())}@{SCENARIOS[scenario].domain}"

    def send(self, scenario: str, **kwargs) -> tuple[EximOutcome, str, float]:
        """One message to ``scenario``'s domain; returns (outcome, recipient, start time)."""
        rcpt = self.rcpt(scenario)
        self.exim.clear_retry()  # an earlier deferral for the same host must not skip this attempt
        started = time.time()
        outcome = self.exim.send(SENDER, rcpt, subject=f"mxsec lab exim {scenario}", **kwargs)
        return outcome, rcpt, started

    def stored(self, scenario: str, rcpt: str):
        for m in SCENARIOS[scenario].mx:
            for rec in read_received(self.paths.mail_dir, m.host):
                if rcpt in rec.rcpt_tos:
                    return rec
        return None

    def sessions_since(self, host: str, since: float) -> list:
        return [s for s in read_sessions(self.paths.mail_dir, host)
                if datetime.fromisoformat(s.started_at).timestamp() >= since - 0.05]

    def explain(self, outcome: EximOutcome) -> str:
        return f"{outcome}\n--- mainlog tail ---\n{self.exim.log_tail()}"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = prerequisites() or unavailable()
    if reason:
        pytest.skip(reason)
    topo = Topology(prefix=unique_prefix("x"))
    runner.down(topo)
    try:
        runner.up(topo)
        paths = runner.LabPaths.of(topo)
        exim = Exim(EximSpec(directory=topo.state_dir / "exim", netns=topo.sender_ns,
                             socket=f"inet:127.0.0.1:{runner.DAEMON_PORT}", ca_file=paths.ca_file)).setup()
        yield Lab(topo, exim)
    finally:
        runner.down(topo)


@pytest.fixture(autouse=True)
def no_panic(lab: Lab) -> Iterator[None]:
    before = len(lab.exim.panic_lines())
    yield
    new = lab.exim.panic_lines()[before:]
    assert not new, "Exim panic log:\n" + "\n".join(new)


def assert_delivered(lab: Lab, scenario: str, outcome: EximOutcome, rcpt: str, *, router: str, cv: str):
    assert outcome.status == "delivered", lab.explain(outcome)
    assert outcome.router == router, lab.explain(outcome)
    assert outcome.cv == cv, lab.explain(outcome)
    assert outcome.tls and outcome.tls.startswith("TLS1."), lab.explain(outcome)
    got = lab.stored(scenario, rcpt)
    assert got is not None, f"Exim says delivered, the MX stored nothing\n{lab.explain(outcome)}"
    assert got.tls, "the MX did not see TLS"
    return got


def assert_deferred(lab: Lab, scenario: str, outcome: EximOutcome, rcpt: str, *, router: str, reason: str):
    assert outcome.status == "deferred", lab.explain(outcome)
    assert outcome.router == router, lab.explain(outcome)
    text = "\n".join([outcome.reason or "", *outcome.notes])
    assert reason in text, lab.explain(outcome)
    assert lab.stored(scenario, rcpt) is None, "deferred, yet the MX stored the message"


# ------------------------------------------------------------------------------------------------ MTA-STS


def test_exim_is_debians_and_config_comes_from_contrib(lab: Lab) -> None:
    assert lab.exim.version().startswith("Exim version 4.")
    conf = lab.exim.config.read_text()
    contrib = Path(__file__).resolve().parents[2] / "contrib" / "exim"
    for name in ("mxsec-routers.conf", "mxsec-transports.conf"):
        first_router = next(line for line in (contrib / name).read_text().splitlines()
                            if line and not line.startswith((" ", "#", ".")))
        assert first_router in conf, f"{name} is not in the generated configuration"
    settings = lab.exim.run(["-bP", "transport", "remote_smtp_mxsec_sts"]).stdout
    for line in ("hosts_require_tls = *", "tls_verify_hosts = *", "tls_verify_cert_hostnames = *",
                 "tls_sni = $host", "no_tls_tempfail_tryclear", "hosts_try_dane = *"):
        assert line in settings, settings


def test_sts_enforce_valid_certificate_delivered_verified_with_sni(lab: Lab) -> None:
    outcome, rcpt, _ = lab.send("sts-enforce-ok")
    got = assert_delivered(lab, "sts-enforce-ok", outcome, rcpt, router="mxsec_sts", cv="yes")
    assert outcome.transport == "remote_smtp_mxsec_sts"
    assert got.mx == "mx1.sts-enforce-ok.test"
    assert got.sni == "mx1.sts-enforce-ok.test"  # tls_sni = $host: the MX host name


def test_sts_wildcard_pattern_delivered_verified(lab: Lab) -> None:
    outcome, rcpt, _ = lab.send("sts-wildcard-mx")
    assert_delivered(lab, "sts-wildcard-mx", outcome, rcpt, router="mxsec_sts", cv="yes")


def test_sts_enforce_wrong_name_certificate_deferred(lab: Lab) -> None:
    outcome, rcpt, since = lab.send("sts-enforce-bad-cert")
    assert_deferred(lab, "sts-enforce-bad-cert", outcome, rcpt, router="mxsec_sts",
                    reason="certificate verification failed")
    # Exim did connect (the deferral comes from the TLS check, not from routing)
    assert lab.sessions_since("mx1.sts-enforce-bad-cert.test", since)


def test_sts_enforce_expired_certificate_deferred(lab: Lab) -> None:
    outcome, rcpt, _ = lab.send("sts-enforce-expired-cert")
    assert_deferred(lab, "sts-enforce-expired-cert", outcome, rcpt, router="mxsec_sts",
                    reason="certificate verification failed")


def test_sts_enforce_no_starttls_deferred(lab: Lab) -> None:
    outcome, rcpt, _ = lab.send("sts-enforce-no-starttls")
    assert_deferred(lab, "sts-enforce-no-starttls", outcome, rcpt, router="mxsec_sts",
                    reason="the server did not offer TLS support")


def test_sts_enforce_no_matching_mx_deferred_without_connecting(lab: Lab) -> None:
    outcome, rcpt, since = lab.send("sts-enforce-mx-not-in-policy")
    assert_deferred(lab, "sts-enforce-mx-not-in-policy", outcome, rcpt, router="mxsec_no_host",
                    reason="no MX host of sts-enforce-mx-not-in-policy.test matches its MTA-STS policy")
    assert lab.sessions_since("mx1.sts-enforce-mx-not-in-policy.test", since) == []


def test_sts_enforce_skips_a_rogue_mx_with_better_preference(lab: Lab) -> None:
    """An MX host outside the policy (here another domain's MX, valid certificate for its own name) at a
    better preference is never contacted; the listed MX gets the message."""
    dns = LabDns(lab.topo)
    domain = SCENARIOS["sts-enforce-ok"].domain
    rogue = SCENARIOS["sts-wildcard-mx"].mx[0].host
    original = dns.zones[domain].records
    dns.set_rrset(domain, "@", "MX", [f"5 {rogue}.", f"10 mx1.{domain}."])
    try:
        routed = lab.exim.route(f"probe@{domain}")
        assert "router = mxsec_sts" in routed and rogue not in routed, routed
        outcome, rcpt, since = lab.send("sts-enforce-ok")
        got = assert_delivered(lab, "sts-enforce-ok", outcome, rcpt, router="mxsec_sts", cv="yes")
        assert got.mx == f"mx1.{domain}"
        assert lab.sessions_since(rogue, since) == []
    finally:
        dns.update_zone(domain, original)


def test_sts_testing_bad_certificate_delivered_unverified(lab: Lab) -> None:
    outcome, rcpt, _ = lab.send("sts-testing-bad-cert")
    assert_delivered(lab, "sts-testing-bad-cert", outcome, rcpt, router="dnslookup", cv="no")
    assert outcome.transport == "remote_smtp"


def test_no_policy_delivered_opportunistically(lab: Lab) -> None:
    outcome, rcpt, _ = lab.send("no-policy")
    assert_delivered(lab, "no-policy", outcome, rcpt, router="dnslookup", cv="no")


# ------------------------------------------------------------------------------------------------ DANE


def test_dane_match_delivered_with_dane(lab: Lab) -> None:
    outcome, rcpt, _ = lab.send("dane-ok")
    assert_delivered(lab, "dane-ok", outcome, rcpt, router="mxsec_dane", cv="dane")
    assert outcome.transport == "remote_smtp_mxsec_dane"


def test_dane_rollover_delivered_with_dane(lab: Lab) -> None:
    outcome, rcpt, _ = lab.send("dane-rollover")
    assert_delivered(lab, "dane-rollover", outcome, rcpt, router="mxsec_dane", cv="dane")


def test_dane_wins_over_mta_sts(lab: Lab) -> None:
    """TLSA matches, the certificate is from an untrusted CA, and an enforce policy exists: DANE decides."""
    outcome, rcpt, _ = lab.send("dane-and-sts")
    assert_delivered(lab, "dane-and-sts", outcome, rcpt, router="mxsec_dane", cv="dane")


def test_dane_mismatch_deferred(lab: Lab) -> None:
    outcome, rcpt, _ = lab.send("dane-mismatch")
    assert_deferred(lab, "dane-mismatch", outcome, rcpt, router="mxsec_dane", reason="DANE attempt failed")


def test_tlsa_in_unsigned_zone_ignored(lab: Lab) -> None:
    outcome, rcpt, _ = lab.send("dane-unsigned-zone")
    assert_delivered(lab, "dane-unsigned-zone", outcome, rcpt, router="dnslookup", cv="no")


def test_bogus_dnssec_deferred_before_any_connection(lab: Lab) -> None:
    outcome, rcpt, since = lab.send("bogus-dnssec")
    assert_deferred(lab, "bogus-dnssec", outcome, rcpt, router="mxsec_defer", reason="temp: MX lookup failed")
    assert lab.sessions_since("mx1.bogus-dnssec.test", since) == []


# ------------------------------------------------------------------------------------------------ fail closed


def test_daemon_unreachable_deferred(lab: Lab) -> None:
    """Nothing listens where Exim looks for the daemon: mail that would otherwise go out (no policy) waits."""
    outcome, rcpt, since = lab.send("no-policy", macros={"MXSEC_SOCKET": "inet:127.0.0.1:9"})
    assert_deferred(lab, "no-policy", outcome, rcpt, router="mxsec_defer", reason="mxsec daemon unreachable")
    assert lab.sessions_since("mx1.no-policy.test", since) == []


def test_daemon_silent_deferred_after_timeout(lab: Lab) -> None:
    """A daemon that accepts but never answers: Exim's readsocket times out and the message waits."""
    sock = topology.netns_socket(lab.topo.sender_ns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # connections complete in the backlog; nobody reads or answers
        port = sock.getsockname()[1]
        t0 = time.monotonic()
        outcome, rcpt, _ = lab.send("no-policy", macros={"MXSEC_SOCKET": f"inet:127.0.0.1:{port}",
                                                        "MXSEC_TIMEOUT": "2s"})
        assert time.monotonic() - t0 < 30
    finally:
        sock.close()
    assert_deferred(lab, "no-policy", outcome, rcpt, router="mxsec_defer", reason="mxsec daemon unreachable")


def test_deferred_mail_goes_out_once_the_daemon_answers(lab: Lab) -> None:
    """The deferral is temporary: a queue run with the daemon reachable delivers the waiting message."""
    outcome, rcpt, _ = lab.send("sts-enforce-ok", macros={"MXSEC_SOCKET": "inet:127.0.0.1:9"})
    assert outcome.status == "deferred", lab.explain(outcome)
    lab.exim.clear_retry()
    proc = lab.exim.run(["-M", outcome.message_id], timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = lab.exim.outcome(rcpt)
    assert_delivered(lab, "sts-enforce-ok", after, rcpt, router="mxsec_sts", cv="yes")


def test_route_test_shows_the_decision(lab: Lab) -> None:
    """`exim -bt` — what docs/exim.md tells users to run — shows router and transport per domain."""
    ok = lab.exim.route("someone@sts-enforce-ok.test")
    assert "router = mxsec_sts, transport = remote_smtp_mxsec_sts" in ok, ok
    dane = lab.exim.route("someone@dane-ok.test")
    assert "router = mxsec_dane, transport = remote_smtp_mxsec_dane" in dane, dane
    plain = lab.exim.route("someone@no-policy.test")
    assert "router = dnslookup, transport = remote_smtp" in plain, plain
    nomatch = lab.exim.route("someone@sts-enforce-mx-not-in-policy.test")
    assert "cannot be resolved at this time" in nomatch and "MTA-STS policy" in nomatch, nomatch
