"""The lab's topology and DNS: validation through Unbound from the sender namespace, run-time updates, clean-up.

Lab tests (marked ``lab``) need root, knotd and unbound; the scenario-file tests at the end run anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dns.edns
import dns.flags
import dns.rcode
import dns.rdatatype
import pytest

from mxsec.lab import state as lab_state
from mxsec.lab import topology
from mxsec.lab.dns import LabDns, ZoneSpec
from mxsec.lab.scenarios import (
    ScenarioError,
    load_scenarios,
    parse_scenarios,
    placeholder_tlsa,
    tlsa_rdatas,
)
from mxsec.lab.topology import LabError, Topology

from .conftest import lab_skip_reason, unique_prefix

lab = pytest.mark.lab


def _ad(r) -> bool:
    return bool(r.flags & dns.flags.AD)


def _rdatas(r, rdtype: str) -> list[str]:
    t = dns.rdatatype.from_text(rdtype)
    return [rd.to_text() for rrset in r.answer if rrset.rdtype == t for rd in rrset]


# ------------------------------------------------------------------------------------------ the full lab DNS


@lab
def test_signed_names_come_back_with_ad(lab_dns: LabDns, lab_addresses: dict[str, str]) -> None:
    r = lab_dns.query("sts-enforce-ok.test", "MX")
    assert r.rcode() == dns.rcode.NOERROR and _ad(r)
    assert _rdatas(r, "MX") == ["10 mx1.sts-enforce-ok.test."]
    r = lab_dns.query("mx1.sts-enforce-ok.test", "A")
    assert _ad(r) and _rdatas(r, "A") == [lab_addresses["mx1.sts-enforce-ok.test"]]
    r = lab_dns.query("_mta-sts.sts-enforce-ok.test", "TXT")
    assert _ad(r) and _rdatas(r, "TXT") == ['"v=STSv1; id=20250101T000000"']
    r = lab_dns.query("nothing-here.sts-enforce-ok.test", "A")  # authenticated denial
    assert r.rcode() == dns.rcode.NXDOMAIN and _ad(r)


@lab
def test_unsigned_zone_answers_without_ad(lab_dns: LabDns) -> None:
    r = lab_dns.query("no-policy.test", "MX")
    assert r.rcode() == dns.rcode.NOERROR
    assert _rdatas(r, "MX") == ["10 mx1.no-policy.test."]
    assert not _ad(r)


@lab
def test_bogus_zone_is_servfail(lab_dns: LabDns) -> None:
    r = lab_dns.query("bogus-dnssec.test", "MX")
    assert r.rcode() == dns.rcode.SERVFAIL
    codes = [o.code for o in r.options if isinstance(o, dns.edns.EDEOption)]
    assert dns.edns.EDECode.DNSKEY_MISSING in codes  # EDE 9, "DS hash mismatches key"
    r = lab_dns.query("bogus-dnssec.test", "MX", cd=True)  # checking disabled: the data is there
    assert _rdatas(r, "MX") == ["10 mx1.bogus-dnssec.test."]


@lab
def test_tlsa_is_validated(lab_dns: LabDns, lab_tlsa: dict[str, list[str]]) -> None:
    r = lab_dns.query("_25._tcp.mx1.dane-ok.test", "TLSA")
    assert r.rcode() == dns.rcode.NOERROR and _ad(r)
    assert _rdatas(r, "TLSA") == lab_tlsa["mx1.dane-ok.test"]
    r = lab_dns.query("_25._tcp.mx1.dane-rollover.test", "TLSA")
    assert _ad(r) and len(_rdatas(r, "TLSA")) == 2
    r = lab_dns.query("_25._tcp.mx1.dane-unsigned-zone.test", "TLSA")  # published, but insecure
    assert _rdatas(r, "TLSA") and not _ad(r)


@lab
def test_update_zone_takes_effect_at_once(lab_dns: LabDns) -> None:
    zone = "sts-id-change.test"
    original = lab_dns.zones[zone]
    assert _rdatas(lab_dns.query(f"_mta-sts.{zone}", "TXT"), "TXT") == ['"v=STSv1; id=1"']  # now cached
    try:
        lab_dns.set_rrset(zone, "_mta-sts", "TXT", ['"v=STSv1; id=2"'])
        r = lab_dns.query(f"_mta-sts.{zone}", "TXT")
        assert _ad(r) and _rdatas(r, "TXT") == ['"v=STSv1; id=2"']
        lab_dns.update_zone(zone, [*original.records, "extra A 203.0.113.250"])
        r = lab_dns.query(f"extra.{zone}", "A")
        assert _ad(r) and _rdatas(r, "A") == ["203.0.113.250"]
        assert _rdatas(lab_dns.query(f"_mta-sts.{zone}", "TXT"), "TXT") == ['"v=STSv1; id=1"']
    finally:
        lab_dns.update_zone(zone, original.records)
    assert lab_dns.query(f"extra.{zone}", "A").rcode() == dns.rcode.NXDOMAIN
    with pytest.raises(LabError):
        lab_dns.update_zone("not-served.test", [])
    with pytest.raises(ValueError):
        lab_dns.update_zone(zone, ["broken A not-an-address"])


@lab
def test_sender_resolv_conf_and_stub_resolver(lab_dns: LabDns) -> None:
    topo = lab_dns.topo
    out = topology.check_in(topo.sender_ns, ["cat", "/etc/resolv.conf"]).stdout
    assert f"nameserver {topo.resolver_ip}" in out and "trust-ad" in out
    code = textwrap.dedent(
        """
        import dns.flags, dns.resolver
        r = dns.resolver.Resolver()  # reads /etc/resolv.conf (the namespace's, bind-mounted by ip netns exec)
        r.flags = dns.flags.RD | dns.flags.AD
        a = r.resolve("_25._tcp.mx1.dane-ok.test", "TLSA")
        print(r.nameservers[0], bool(a.response.flags & dns.flags.AD))
        """
    )
    out = topology.check_in(topo.sender_ns, [sys.executable, "-c", code]).stdout.split()
    assert out == [topo.resolver_ip, "True"]


@lab
def test_lab_is_isolated(lab_dns: LabDns) -> None:
    topo = lab_dns.topo
    routes = subprocess.run(["ip", "-n", topo.sender_ns, "route"], capture_output=True, text=True, check=False).stdout
    assert "default" not in routes
    routes = subprocess.run(["ip", "-n", topo.inet_ns, "route"], capture_output=True, text=True, check=False).stdout
    assert "default" not in routes
    host_addrs = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False).stdout
    for ip in (topo.resolver_ip, topo.root_ip, topo.sender_ip, topo.gateway_ip):
        assert f" {ip}/" not in host_addrs
    st = topology.status(topo)
    assert st["up"] and all(p["alive"] for p in st["processes"] if p["name"].startswith("dns:"))
    assert lab_dns.trust_anchor.startswith(". DS ")


# ------------------------------------------------------------------------------------------ life cycle


def _pids_of(prefix: str) -> list[int]:
    st = lab_state.load(prefix)
    return [p.pid for p in st.processes] if st else []


def _alive(pid: int) -> bool:
    return topology._alive(pid)


def _assert_gone(topo: Topology, pids: list[int]) -> None:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    for ns in topo.namespaces:
        assert ns not in names.split()
        assert not Path("/etc/netns", ns).exists()
    assert not topo.state_dir.exists()
    assert not [p for p in pids if _alive(p)]
    marker = str(topo.state_dir) + "/"
    for entry in os.listdir("/proc"):  # no stray knotd/unbound with our config paths
        if entry.isdigit():
            try:
                assert marker not in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                pass


@lab
def test_up_then_down_from_another_process_leaves_nothing() -> None:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    topo = Topology(prefix=unique_prefix("d"))
    topology.destroy(topo)
    try:
        topology.create(topo)
        with pytest.raises(LabError):
            topology.create(topo)  # exists already
        topology.add_address(topo, "203.0.113.200")
        zones = [
            ZoneSpec("signed.test", ("@ A 203.0.113.200", "_25._tcp.mx TLSA 3 1 1 " + "00" * 32)),
            ZoneSpec("plain.test", ("@ A 203.0.113.200",), signed=False),
            ZoneSpec("broken.test", ("@ A 203.0.113.200",), bogus=True),
        ]
        d = LabDns(topo)
        d.start(zones)
        assert _ad(d.query("signed.test", "A"))
        assert not _ad(d.query("plain.test", "A"))
        assert d.query("broken.test", "A").rcode() == dns.rcode.SERVFAIL
        pids = _pids_of(topo.prefix)
        assert len(pids) == 4 and all(_alive(p) for p in pids)  # 3 knotd + unbound
        # `down` from a fresh process (like `mxsec lab down` after `up` exited)
        code = f"from mxsec.lab import topology as t; import json; print(json.dumps(t.destroy(t.Topology({topo.prefix!r}))))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 0, out.stderr
        assert any("stopping 4 process" in line for line in json.loads(out.stdout))
        topology._reap()
        _assert_gone(topo, pids)
        assert topology.destroy(topo) == []  # idempotent
    finally:
        topology.destroy(topo)


@lab
def test_failure_half_way_stops_what_started(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    topo = Topology(prefix=unique_prefix("f"))
    topology.destroy(topo)
    try:
        topology.create(topo)
        d = LabDns(topo)
        with pytest.raises(ValueError):  # bad records: refused before anything starts
            d.start([ZoneSpec("x.test", ("@ MX not-a-number",))])
        assert _pids_of(topo.prefix) == []

        def boom(self: LabDns, deadline: float) -> None:
            raise LabError("injected failure")

        monkeypatch.setattr(LabDns, "_wait_resolver", boom)
        with pytest.raises(LabError, match="injected"):
            d.start([ZoneSpec("x.test", ("@ A 203.0.113.9",))])
        st = lab_state.load(topo.prefix)
        assert st is not None and not [p for p in st.processes if p.name.startswith("dns:")]
        marker = str(topo.state_dir) + "/"
        stray = [
            e for e in os.listdir("/proc")
            if e.isdigit() and _alive(int(e)) and marker in _cmdline(e)
        ]
        assert stray == []
    finally:
        topology.destroy(topo)
    _assert_gone(topo, [])


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------ scenario file


def test_packaged_scenarios_load_and_cover_the_required_cases() -> None:
    scenarios = load_scenarios()
    names = {s.name for s in scenarios}
    required = {
        "sts-enforce-ok", "sts-enforce-bad-cert", "sts-enforce-mx-not-in-policy", "sts-enforce-expired-cert",
        "sts-testing-bad-cert", "sts-none", "sts-policy-redirect", "sts-policy-404", "sts-wildcard-mx",
        "no-policy", "sts-id-change", "dane-ok", "dane-mismatch", "dane-and-sts", "bogus-dnssec", "dane-rollover",
    }
    assert required <= names
    by = {s.name: s for s in scenarios}
    assert by["bogus-dnssec"].bogus and by["no-policy"].dnssec == "unsigned"
    assert by["sts-id-change"].sts is not None and by["sts-id-change"].sts.next_id == "2"
    assert by["sts-policy-404"].policy_host is not None and by["sts-policy-404"].policy_host.behaviour == "404"
    assert by["sts-enforce-ok"].sts.policy_text() == (
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.sts-enforce-ok.test\r\nmax_age: 86400\r\n"
    )
    tlsa = placeholder_tlsa(scenarios)
    assert len(tlsa["mx1.dane-rollover.test"]) == 2
    assert all(s.expect.result in ("delivered", "deferred") for s in scenarios)


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ('name = "x"\nabout = "a"', "expect: required"),
        ('name = "x"\nabout = "a"\nexpect = { result = "delivered" }', "tls: required"),
        ('name = "x"\nabout = "a"\ncolour = "red"\nexpect = { result = "deferred", reason = "r" }', "unknown field"),
        ('name = "x"\nabout = "a"\ndnssec = "maybe"\nexpect = { result = "deferred", reason = "r" }', "dnssec"),
        (
            'name = "x"\nabout = "a"\nmx = [{ host = "mx1.other.test" }]\nexpect = { result = "deferred", reason = "r" }',
            "inside x.test",
        ),
        (
            (
                'name = "x"\nabout = "a"\nmx = [{ host = "mx1.x.test", cert = "shiny" }]\n'
                'expect = { result = "deferred", reason = "r" }'
            ),
            "cert",
        ),
        (
            (
                'name = "x"\nabout = "a"\nsts = { id = "bad id!", mx = ["a.x.test"] }\n'
                'expect = { result = "deferred", reason = "r" }'
            ),
            "id",
        ),
        ('name = "X Y"\nabout = "a"\nexpect = { result = "deferred", reason = "r" }', "name"),
    ],
)
def test_scenario_file_errors_are_clear(snippet: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as info:
        parse_scenarios("[[scenario]]\n" + snippet + "\n", "my.toml")
    assert str(info.value).startswith("my.toml: scenario")


def test_duplicate_scenarios_are_refused() -> None:
    entry = '[[scenario]]\nname = "x"\nabout = "a"\nexpect = { result = "deferred", reason = "r" }\n'
    with pytest.raises(ScenarioError, match="duplicate"):
        parse_scenarios(entry + entry)


def test_tlsa_rdatas() -> None:
    assert tlsa_rdatas("match", "A", "B") == ["A"]
    assert tlsa_rdatas("mismatch", "A", "B") == ["B"]
    assert tlsa_rdatas("rollover", "A", "B") == ["A", "B"]
