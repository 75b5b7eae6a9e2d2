"""The on-path attacker (``<prefix>-attk``) against the real Postfix 3.7 and the real Exim.

The lab comes up once for this module (prefix ``mxsec-a<pid>``); :func:`mxsec.lab.attackrun.run_attacks` runs
every attacker phase once per MTA (about 20 s for Postfix, 30 s for Exim) and the tests below assert the rows
by attack. Requirements: RFC 8461 §4.1 (MX name matching, strict MX names for Postfix ≤ 3.10.4), §4.2 (no
delivery without TLS and a valid certificate for the MX under enforce), §3.3/§5.1 (a cached policy outlives a
blocked policy host and a removed ``_mta-sts`` record), RFC 7672 §2.2 (secure TLSA: no delivery without TLS
and a matching certificate). The controls (no policy, testing, TLSA in an unsigned zone) prove that each attack
really works where nothing protects the domain.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from mxsec.lab import attacker, attackrun, runner, topology
from mxsec.lab.attackrun import AttackRow
from mxsec.lab.prerequisites import prerequisites
from mxsec.lab.exim import Exim, EximSpec, unavailable
from mxsec.lab.scenarios import load_scenarios
from mxsec.lab.topology import LabError, Topology

from .conftest import unique_prefix

pytestmark = [pytest.mark.lab]

SCENARIOS = {sc.name: sc for sc in load_scenarios()}
PROTECTED = sorted(n for n, sc in SCENARIOS.items() if attackrun.protected(sc))
MTAS = ("postfix", "exim")


class Lab:
    def __init__(self, topo: Topology, exim: Exim) -> None:
        self.topo = topo
        self.exim = exim
        self.rows: dict[str, list[AttackRow]] = {}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = prerequisites() or unavailable()
    if reason:
        pytest.skip(reason)
    topo = Topology(prefix=unique_prefix("a"))
    runner.down(topo)
    try:
        runner.up(topo)
        paths = runner.LabPaths.of(topo)
        exim = Exim(EximSpec(directory=topo.state_dir / "exim-attacker", netns=topo.sender_ns,
                             socket=f"inet:127.0.0.1:{runner.DAEMON_PORT}", ca_file=paths.ca_file)).setup()
        yield Lab(topo, exim)
    finally:
        runner.down(topo)


def rows_of(lab: Lab, mta: str) -> list[AttackRow]:
    if mta not in lab.rows:
        lab.rows[mta] = attackrun.run_attacks(lab.topo, mta, lab.exim if mta == "exim" else None)
    return lab.rows[mta]


def select(rows: list[AttackRow], attack: str) -> list[AttackRow]:
    chosen = [r for r in rows if r.attack.startswith(attack)]
    assert chosen, f"no rows for {attack!r}"
    return chosen


def assert_rows(rows: list[AttackRow]) -> None:
    bad = [f"{r.mta} / {r.attack} / {r.scenario}: expected {r.expected}, got {r.actual}; {r.evidence}; "
           f"{'; '.join(r.problems)}" for r in rows if r.failed]
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------------------------------------- topology


def test_attacker_router_sits_between_sender_and_internet(lab: Lab) -> None:
    topo = lab.topo
    for ns in topo.namespaces:
        routes = subprocess.run(["ip", "-n", ns, "route"], capture_output=True, text=True, check=True).stdout
        assert "default" not in routes, f"{ns} has a default route"
    attk_routes = subprocess.run(["ip", "-n", topo.attk_ns, "route"], capture_output=True, text=True,
                                 check=True).stdout
    assert f"{topo.host_net} via {topo.inet_transit_ip}" in attk_routes
    assert topology.check_in(topo.attk_ns, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
    sender_routes = subprocess.run(["ip", "-n", topo.sender_ns, "route"], capture_output=True, text=True,
                                   check=True).stdout
    assert f"{topo.host_net} via {topo.gateway_ip}" in sender_routes
    host = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for ip in (topo.gateway_ip, topo.attk_transit_ip, topo.inet_transit_ip, topo.sender_ip):
        assert f" {ip}/" not in host, f"{ip} in the host namespace"
    # by default nothing is attacked: no nftables table in the router
    assert attacker.TABLE not in topology.check_in(topo.attk_ns, ["nft", "list", "tables"]).stdout


def test_attack_arguments_are_checked(lab: Lab) -> None:
    with pytest.raises(LabError, match="unknown attack"):
        attacker.attack(lab.topo, "teleport", ["203.0.113.10"])
    with pytest.raises(LabError, match="bad attack target"):
        attacker.attack(lab.topo, "strip-starttls", ["mx1.example.test"])
    with pytest.raises(LabError, match="IP=NAME"):
        attacker.attack(lab.topo, "forged-cert", ["203.0.113.10"])
    with pytest.raises(LabError, match="IP:PORT"):
        attacker.attack(lab.topo, "drop", ["203.0.113.10"])
    with pytest.raises(LabError, match="at least one target"):
        attacker.attack(lab.topo, "strip-starttls", [])
    with pytest.raises(LabError, match="not a domain name"):
        attacker.attack(lab.topo, "dns", ["a b.test"], action="drop")
    with pytest.raises(LabError, match="action must be"):
        attacker.attack(lab.topo, "sts-record", ["sts-enforce-ok.test"], action="delay")
    assert attacker.active(lab.topo) == []


# ------------------------------------------------------------------------------------------------ the attacks


@pytest.mark.parametrize("mta", MTAS)
def test_strip_starttls_every_protected_domain_defers(lab: Lab, mta: str) -> None:
    rows = select(rows_of(lab, mta), "strip STARTTLS")
    protected_rows = [r for r in rows if r.scenario in PROTECTED]
    assert sorted(r.scenario for r in protected_rows) == PROTECTED  # every enforce and DANE domain
    assert_rows(protected_rows)


@pytest.mark.parametrize("mta", MTAS)
def test_strip_starttls_downgrades_unprotected_domains(lab: Lab, mta: str) -> None:
    """The attacker is real: where no policy or secure TLSA record protects the domain, the same stripper
    makes the MTA deliver in clear to the real MX."""
    rows = [r for r in select(rows_of(lab, mta), "strip STARTTLS") if r.scenario in attackrun.CONTROLS]
    assert {r.scenario for r in rows} == set(attackrun.CONTROLS)
    assert all(r.expected == attackrun.CLEAR for r in rows)
    assert_rows(rows)
    relayed = [s for s in attacker.strip_sessions(lab.topo) if s.get("data_sent")]
    assert relayed, "the stripper relayed no message"
    assert all(s["starttls_removed"] for s in relayed)


@pytest.mark.parametrize("mta", MTAS)
def test_forged_certificate_every_protected_domain_defers(lab: Lab, mta: str) -> None:
    rows = select(rows_of(lab, mta), "forged certificate")
    protected_rows = [r for r in rows if r.scenario in PROTECTED]
    assert sorted(r.scenario for r in protected_rows) == PROTECTED
    assert_rows(protected_rows)
    # control: without a policy the impostor gets the mail (the certificate is the attacker's)
    control = [r for r in rows if r.scenario == "no-policy"]
    assert [r.expected for r in control] == [attackrun.IMPOSTOR]
    assert_rows(control)


@pytest.mark.parametrize("mta", MTAS)
@pytest.mark.parametrize("attack", ["rogue MX", "self-signed certificate", "DNS dropped", "DNS delayed",
                                    "policy host HTTPS dropped", "policy host HTTPS delayed",
                                    "_mta-sts record removed", "_mta-sts record queries dropped"])
def test_representative_attack_defers(lab: Lab, mta: str, attack: str) -> None:
    rows = select(rows_of(lab, mta), attack)
    assert all(r.expected in (attackrun.DEFERRED, attackrun.BOUNCED) for r in rows)
    assert_rows(rows)


def test_sts_record_queries_were_answered_by_the_interceptor(lab: Lab) -> None:
    rows_of(lab, "postfix")
    hits = [e for e in attacker.dns_log(lab.topo) if e["qname"].startswith("_mta-sts.") and e["qtype"] == "TXT"]
    actions = {e["qname"]: {x["action"] for x in hits if x["qname"] == e["qname"]} for e in hits}
    # the daemon re-checked the id (its refresh) and got the attacker's answer: NXDOMAIN, or nothing at all
    assert actions == {"_mta-sts.sts-enforce-mx-not-in-policy.test.": {"nxdomain"},
                       "_mta-sts.sts-enforce-expired-cert.test.": {"drop"}}


def _resolve(topo: Topology, name: str) -> str:
    """One MX query to the lab's resolver from inside the sender namespace: the rcode, or "timeout"."""
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode

    sock = topology.netns_socket(topo.sender_ns)
    sock.setblocking(False)  # dnspython wants a non-blocking socket when it is given one
    try:
        answer = dns.query.udp(dns.message.make_query(name, "MX"), topo.resolver_ip, timeout=1.5, sock=sock)
    except dns.exception.Timeout:
        return "timeout"
    finally:
        sock.close()
    return dns.rcode.to_text(answer.rcode())


def test_drop_all_dns_to_the_resolver_and_clear(lab: Lab) -> None:
    topo = lab.topo
    assert _resolve(topo, "dane-ok.test") == "NOERROR"
    attacker.attack(topo, "drop", [f"{topo.resolver_ip}:53"])
    try:
        assert _resolve(topo, "dane-ok.test") == "timeout"
        assert _resolve(topo, "sts-enforce-ok.test") == "timeout"
    finally:
        attacker.clear(topo)
    assert _resolve(topo, "dane-ok.test") == "NOERROR"


def test_no_protected_message_was_stored_anywhere(lab: Lab) -> None:
    """A sweep over every MX of the farm and every impostor, not only the scenario's own MX hosts: no protected
    message ever reached an impostor or was stored in clear. (Each row saw its message deferred and queued while
    its attack ran; a delivery attempt already under way when the attack is lifted may still finish afterwards,
    over TLS to the real MX, which is the right outcome, not a downgrade.)"""
    deferred = [r.rcpt for mta in MTAS for r in rows_of(lab, mta)
                if r.expected in (attackrun.DEFERRED, attackrun.BOUNCED)]
    assert len(deferred) > 2 * len(PROTECTED)
    found = attackrun.stored_anywhere(lab.topo, deferred)
    wrong = {r: where for r, where in found.items()
             if any(not w.startswith("MX farm ") or w.endswith("(in clear)") for w in where)}
    assert wrong == {}
    # and the sweep does find what the controls delivered
    delivered = [r.rcpt for r in rows_of(lab, "postfix") if r.expected != attackrun.DEFERRED]
    assert set(attackrun.stored_anywhere(lab.topo, delivered)) == set(delivered)


# ------------------------------------------------------------------------------------- strict MX names (§4.1)


def test_strict_mx_names_postfix_defers_and_the_pattern_answer_delivers_to_the_rogue(lab: Lab) -> None:
    """Postfix 3.7 checks the certificate against the match= list only. With the daemon's default (exact MX
    host names that match the policy; here none) the rogue MX is refused; with ``strict_mx_names = false``
    (map ``postfix-loose``: the policy's patterns, ``.hosting.test`` among them) Postfix delivers to the rogue,
    whose valid certificate for victim.hosting.test matches a pattern although its MX name does not."""
    rows = select(rows_of(lab, "postfix"), "strict MX names")
    by_expect = {r.expected: r for r in rows}
    assert set(by_expect) == {attackrun.DEFERRED, attackrun.IMPOSTOR}
    assert_rows(rows)
    assert "Server certificate not verified" in by_expect[attackrun.DEFERRED].actual
    assert "rogue.sts-strict-mx-names.test stored it" in by_expect[attackrun.IMPOSTOR].evidence
    strict = runner.ask_daemon(lab.topo, ["sts-strict-mx-names.test"])[0]
    loose = runner.ask_daemon(lab.topo, ["sts-strict-mx-names.test"], map_name=runner.LOOSE_MAP)[0]
    assert ".hosting.test" not in strict and strict.startswith("OK secure match=")
    assert "match=mx1.sts-strict-mx-names.test:.hosting.test" in loose


def test_strict_mx_names_exim_defers(lab: Lab) -> None:
    assert_rows(select(rows_of(lab, "exim"), "strict MX names"))


# ------------------------------------------------------------------------------------------------- afterwards


def test_after_clear_the_router_is_transparent_again(lab: Lab) -> None:
    for mta in MTAS:
        rows_of(lab, mta)
    assert attacker.active(lab.topo) == []
    assert attacker.TABLE not in topology.check_in(lab.topo.attk_ns, ["nft", "list", "tables"]).stdout
    st = topology.status(lab.topo)
    assert not [p for p in st["processes"] if p["name"].startswith("attack:")]
    rows = runner.run(lab.topo, ["sts-enforce-ok", "dane-ok"], timeout=60)
    assert [r.verdict for r in rows] == ["ok", "ok"], [(r.scenario, r.actual, r.problems) for r in rows]
