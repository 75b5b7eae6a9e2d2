"""Pure parts of the lab's attacker (mxsec.lab.attacker): the STARTTLS stripper's reply rewriting and the
attack target syntax. The attacks themselves run in tests/lab/test_lab_attacker.py."""

from __future__ import annotations

import pytest

from mxsec.lab.attacker import Target, strip_reply
from mxsec.lab.topology import LabError


def test_strip_reply_removes_starttls_from_the_middle() -> None:
    lines = [b"250-mx.example.test\r\n", b"250-STARTTLS\r\n", b"250-8BITMIME\r\n", b"250 HELP\r\n"]
    out, removed = strip_reply(lines)
    assert removed
    assert out == [b"250-mx.example.test\r\n", b"250-8BITMIME\r\n", b"250 HELP\r\n"]


def test_strip_reply_fixes_the_last_line_when_starttls_was_last() -> None:
    out, removed = strip_reply([b"250-mx.example.test\r\n", b"250-PIPELINING\r\n", b"250 starttls\r\n"])
    assert removed
    assert out == [b"250-mx.example.test\r\n", b"250 PIPELINING\r\n"]  # a complete reply again


def test_strip_reply_leaves_other_replies_alone() -> None:
    lines = [b"220 mx.example.test ESMTP\r\n"]
    assert strip_reply(lines) == (lines, False)
    lines = [b"250-mx.example.test\r\n", b"250 STARTTLSX\r\n"]  # not the keyword
    assert strip_reply(lines) == (lines, False)


@pytest.mark.parametrize(("text", "want"), [
    ("203.0.113.10", Target("203.0.113.10")),
    ("203.0.113.10:443", Target("203.0.113.10", 443)),
    ("203.0.113.10=MX1.Example.TEST.", Target("203.0.113.10", None, "mx1.example.test")),
    ("198.51.100.53:53=x.test", Target("198.51.100.53", 53, "x.test")),
])
def test_target_syntax(text: str, want: Target) -> None:
    assert Target.parse(text) == want


@pytest.mark.parametrize("text", ["mx1.example.test", "203.0.113.10:0", "203.0.113.10:99999", "203.0.113:25",
                                  "203.0.113.10:x"])
def test_bad_targets_are_one_line_errors(text: str) -> None:
    with pytest.raises(LabError, match="bad attack target"):
        Target.parse(text)


# --------------------------------------------------------------------------- the attacker scenarios' plan


def _plan(text: str | None = None, mta: str = "postfix"):
    from mxsec.lab.attackrun import _phases
    from mxsec.lab.scenarios import host_addresses, load_scenarios, parse_scenarios
    from mxsec.lab.topology import Topology

    scenarios = load_scenarios() if text is None else parse_scenarios(text)
    hosts = host_addresses(scenarios, Topology())
    return _phases({sc.name: sc for sc in scenarios}, hosts, mta), hosts


def test_plan_strips_and_forges_every_protected_domain() -> None:
    from mxsec.lab.attackrun import CLEAR, CONTROLS, DEFERRED, protected
    from mxsec.lab.scenarios import load_scenarios

    phases, hosts = _plan()
    by = {sc.name: sc for sc in load_scenarios()}
    prot = {n for n, sc in by.items() if protected(sc)}
    # enforce policies the sender can fetch, DANE in signed zones, DANE required by configuration
    assert {"sts-enforce-ok", "sts-wildcard-mx", "sts-strict-mx-names", "dane-ok", "dane-and-sts",
            "dane-mandatory"} <= prot
    assert not prot & {"sts-policy-redirect", "sts-policy-404", "sts-policy-bad-cert", "sts-testing-bad-cert",
                       "no-policy", "dane-unsigned-zone", "bogus-dnssec", "sts-none"}
    (strip_steps, strip_rows), (forge_steps, forge_rows) = phases[0], phases[1]
    assert {n for _l, n, x in strip_rows if x == DEFERRED} == prot
    assert {n for _l, n, x in strip_rows if x == CLEAR} == set(CONTROLS)
    assert set(strip_steps[0].targets) == {hosts[m.host] for n in prot | set(CONTROLS) for m in by[n].mx}
    assert {n for _l, n, x in forge_rows if x == DEFERRED} == prot
    assert all("=" in t for t in forge_steps[0].targets)  # IP=NAME: the impostor claims the MX's own name
    kinds = {s.kind for s in phases[2][0]}
    assert {"rogue-mx", "forged-cert", "dns", "drop", "delay", "sts-record", "strip-starttls"} <= kinds
    assert len(phases) == 5 and len(_plan(mta="exim")[0]) == 4  # postfix-loose is a Postfix map


def test_plan_for_a_file_without_protected_domains_has_no_empty_attack() -> None:
    phases, _hosts = _plan('''
[[scenario]]
name = "mine"
about = "no policy"
mx = [{ host = "mx1.mine.test", cert = "valid" }]
expect = { result = "delivered", tls = "any" }
''')
    assert phases == []
