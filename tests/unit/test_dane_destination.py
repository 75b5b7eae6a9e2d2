"""DANE decision for a destination from DNSSEC-classified facts (RFC 7672 §2.2)."""

from dataclasses import dataclass

from mxsec.dane.destination import HostFacts, base_candidates, decide, host_state

GOOD = (3, 1, 1, bytes(32))
PKIX_ONLY = (1, 1, 1, bytes(32))


@dataclass
class A:  # an answer look-alike
    status: str = "ok"
    records: tuple = ()
    secure: bool = True
    ttl: int | None = 300
    error: str | None = None


def mx(*hosts, secure=True, status="ok"):
    return A(status, tuple((10 * (i + 1), h) for i, h in enumerate(hosts)), secure)


def host(name, *, addr_secure=True, addr_status="ok", tlsa=None):
    return HostFacts(name, A(addr_status, ("192.0.2.1",), addr_secure), tlsa)


def test_dane_h_9_tlsa_only_after_secure_addresses():
    assert base_candidates("mx.x", A(secure=True)) == ("mx.x",)
    assert base_candidates("mx.x", A(secure=False)) == ()
    assert base_candidates("mx.x", A(status="error")) == ()


def test_dane_h_17_every_host_usable_is_dane_only():
    d = decide(mx("mx1.x", "mx2.x"), {"mx1.x": host("mx1.x", tlsa=A(records=(GOOD,))),
                                       "mx2.x": host("mx2.x", tlsa=A(records=(GOOD,)))})
    assert d.level == "dane-only" and d.applies


def test_some_hosts_with_tlsa_is_dane():
    d = decide(mx("mx1.x", "mx2.x"), {"mx1.x": host("mx1.x", tlsa=A(records=(GOOD,))),
                                       "mx2.x": host("mx2.x", tlsa=A("nxdomain", secure=True, ttl=None))})
    assert d.level == "dane"


def test_dane_h_18_ec_33_only_unusable_records_still_dane():
    d = decide(mx("mx1.x"), {"mx1.x": host("mx1.x", tlsa=A(records=(PKIX_ONLY,)))})
    assert d.level == "dane" and d.hosts[0].state == "unusable"


def test_dane_h_6_insecure_mx_means_no_dane():
    d = decide(mx("mx1.x", secure=False), {})
    assert d.level == "none" and not d.applies


def test_dane_h_6_mx_lookup_error_is_temp():
    assert decide(A("error", secure=False, error="SERVFAIL"), {}).level == "temp"


def test_dane_h_4_ec_27_tlsa_error_in_signed_zone_is_temp():
    d = decide(mx("mx1.x"), {"mx1.x": host("mx1.x", tlsa=A("error", secure=False, error="SERVFAIL"))})
    assert d.level == "temp" and "mx1.x" in d.reason


def test_dane_h_4_error_on_one_host_with_dane_on_another_is_dane():
    # Postfix's dane level defers the failing host itself; the other host is still authenticated
    d = decide(mx("mx1.x", "mx2.x"), {"mx1.x": host("mx1.x", tlsa=A(records=(GOOD,))),
                                       "mx2.x": host("mx2.x", tlsa=A("error", secure=False))})
    assert d.level == "dane"


def test_dane_h_5_ec_26_insecure_denial_is_not_an_error():
    d = decide(mx("mx1.x"), {"mx1.x": host("mx1.x", tlsa=A("nodata", secure=False, ttl=None))})
    assert d.level == "none" and d.hosts[0].state == "no-tlsa"


def test_dane_h_3_insecure_tlsa_records_ignored():
    d = decide(mx("mx1.x"), {"mx1.x": host("mx1.x", tlsa=A(records=(GOOD,), secure=False))})
    assert d.level == "none"


def test_ec_25_insecure_host_addresses_skip_tlsa():
    facts = host("mx1.x", addr_secure=False)
    assert host_state(facts).state == "insecure"
    assert decide(mx("mx1.x"), {"mx1.x": facts}).level == "none"


def test_null_mx_is_none():
    assert decide(A(records=((0, ""),)), {}).level == "none"


def test_ttl_is_the_smallest_involved():
    d = decide(mx("mx1.x"), {"mx1.x": HostFacts("mx1.x", A(ttl=120), A(records=(GOOD,), ttl=60))})
    assert d.ttl == 60


# --- TLSA base domains, CNAMEs, address families (DANE-H-10..H-15, EC-28..EC-30) ------------------------------

import asyncio  # noqa: E402

from mxsec.dane.destination import is_ip_literal  # noqa: E402
from mxsec.dane.gather import destination_decision, host_facts  # noqa: E402
from mxsec.dnsanswers import AddressAnswer, FamilyAnswer, RRAnswer  # noqa: E402


class ScriptedDns:
    """Answers from a table; records every query so the order of work can be asserted."""

    def __init__(self, table):
        self.table = table
        self.queries = []

    async def mx(self, name):
        self.queries.append((name, "MX"))
        return self.table.get((name, "MX"), RRAnswer("nxdomain", secure=True))

    async def addresses(self, name):
        self.queries.append((name, "A/AAAA"))
        return self.table.get((name, "A"), AddressAnswer("nxdomain", secure=True))

    async def lookup(self, name, rdtype):
        self.queries.append((name, rdtype))
        return self.table.get((name, rdtype), RRAnswer("nodata", secure=True))

    async def tlsa(self, host, port=25):
        self.queries.append((host, "TLSA"))
        return self.table.get((host, "TLSA"), RRAnswer("nxdomain", secure=True))


def addr(secure=True, canonical=None, families=()):
    return AddressAnswer("ok", ("192.0.2.1",), None, secure, canonical, families, 300)


def tlsa_ok(secure=True):
    return RRAnswer("ok", (GOOD,), secure, 300)


def run(coro):
    return asyncio.run(coro)


def test_dane_h_12_tlsa_at_port_25_of_the_base_domain():
    dns = ScriptedDns({("mx.x", "A"): addr(), ("mx.x", "TLSA"): tlsa_ok()})
    facts = run(host_facts(dns, "mx.x"))
    assert facts.base == "mx.x" and ("mx.x", "TLSA") in dns.queries


def test_dane_h_9_ec_25_addresses_looked_up_before_tlsa_and_insecure_skips_it():
    dns = ScriptedDns({("mx.x", "A"): addr(secure=False)})
    facts = run(host_facts(dns, "mx.x"))
    assert dns.queries == [("mx.x", "A/AAAA")]  # no TLSA query at all for an unsigned host
    assert host_state(facts).state == "insecure"


def test_dane_h_13_secure_cname_tries_expanded_name_first():
    dns = ScriptedDns({("mx.x", "A"): addr(canonical="mx.provider.y"),
                       ("mx.provider.y", "TLSA"): tlsa_ok()})
    facts = run(host_facts(dns, "mx.x"))
    assert facts.candidates == ("mx.provider.y", "mx.x")
    assert facts.base == "mx.provider.y"
    assert [q for q in dns.queries if q[1] == "TLSA"] == [("mx.provider.y", "TLSA")]
    state = host_state(facts)
    assert state.state == "usable" and state.base == "mx.provider.y" and "_25._tcp.mx.provider.y" in state.detail


def test_dane_h_13_falls_back_to_the_original_name_without_tlsa_at_the_target():
    dns = ScriptedDns({("mx.x", "A"): addr(canonical="mx.provider.y"),
                       ("mx.provider.y", "TLSA"): RRAnswer("nodata", secure=True),
                       ("mx.x", "TLSA"): tlsa_ok()})
    facts = run(host_facts(dns, "mx.x"))
    assert facts.base == "mx.x"
    assert run(destination_decision(ScriptedDns({**dns.table, ("d.x", "MX"): mx("mx.x")}), "d.x")).level \
        == "dane-only"


def test_dane_h_14_insecure_tlsa_at_the_target_moves_to_the_next_candidate():
    dns = ScriptedDns({("mx.x", "A"): addr(canonical="mx.provider.y"),
                       ("mx.provider.y", "TLSA"): tlsa_ok(secure=False),
                       ("mx.x", "TLSA"): tlsa_ok()})
    assert run(host_facts(dns, "mx.x")).base == "mx.x"


def test_dane_h_4_tlsa_error_at_the_target_stops_the_search():
    dns = ScriptedDns({("mx.x", "A"): addr(canonical="mx.provider.y"),
                       ("mx.provider.y", "TLSA"): RRAnswer("error", error="SERVFAIL"),
                       ("mx.x", "TLSA"): tlsa_ok()})
    facts = run(host_facts(dns, "mx.x"))
    assert facts.base == "mx.provider.y" and host_state(facts).state == "error"
    assert ("mx.x", "TLSA") not in dns.queries


def test_ec_29_insecure_target_with_signed_original_uses_the_original_name():
    dns = ScriptedDns({("mx.x", "A"): addr(secure=False, canonical="mx.unsigned.y"),
                       ("mx.x", "CNAME"): RRAnswer("ok", ("mx.unsigned.y.",), True, 300),
                       ("mx.x", "TLSA"): tlsa_ok()})
    facts = run(host_facts(dns, "mx.x"))
    assert facts.candidates == ("mx.x",) and facts.base == "mx.x"
    assert ("mx.unsigned.y", "TLSA") not in dns.queries
    state = host_state(facts)
    assert state.state == "usable" and state.via_original_name


def test_dane_h_15_ec_29_original_name_rule_never_gives_dane_only():
    # Postfix skips TLSA for hosts with insecure address records; under dane-only it would defer them.
    table = {("d.x", "MX"): mx("mx.x"),
             ("mx.x", "A"): addr(secure=False, canonical="mx.unsigned.y"),
             ("mx.x", "CNAME"): RRAnswer("ok", ("mx.unsigned.y.",), True, 300),
             ("mx.x", "TLSA"): tlsa_ok()}
    assert run(destination_decision(ScriptedDns(table), "d.x")).level == "dane"


def test_dane_h_13_insecure_original_cname_gives_no_candidate():
    dns = ScriptedDns({("mx.x", "A"): addr(secure=False, canonical="mx.unsigned.y"),
                       ("mx.x", "CNAME"): RRAnswer("ok", ("mx.unsigned.y.",), False, 300)})
    facts = run(host_facts(dns, "mx.x"))
    assert facts.candidates == () and host_state(facts).state == "insecure"
    assert not any(q[1] == "TLSA" for q in dns.queries)


def test_dane_h_10_ec_30_one_family_failing_keeps_dane_for_the_other():
    families = (FamilyAnswer("A", "ok", True), FamilyAnswer("AAAA", "error", False, "SERVFAIL"))
    dns = ScriptedDns({("d.x", "MX"): mx("mx.x"), ("mx.x", "A"): addr(families=families),
                       ("mx.x", "TLSA"): tlsa_ok()})
    decision = run(destination_decision(dns, "d.x"))
    assert decision.level == "dane-only"
    assert "AAAA lookup failed" in decision.hosts[0].detail


def test_dane_h_11_ip_address_in_mx_is_not_a_dane_candidate():
    assert is_ip_literal("192.0.2.25") and is_ip_literal("[2001:db8::25]") and not is_ip_literal("mx.x")
    dns = ScriptedDns({("d.x", "MX"): mx("192.0.2.25")})
    decision = run(destination_decision(dns, "d.x"))
    assert decision.level == "none" and decision.hosts[0].state == "ip-literal"
    assert dns.queries == [("d.x", "MX")]


def test_ec_28_bogus_tlsa_denial_is_an_error_for_that_host():
    # a bogus NXDOMAIN proof reaches us as SERVFAIL from the validator: an error, not "no TLSA"
    table = {("d.x", "MX"): A(records=((10, "a.x"), (20, "b.x"))),
             ("a.x", "A"): addr(), ("b.x", "A"): addr(),
             ("a.x", "TLSA"): RRAnswer("error", error="SERVFAIL (bogus)"), ("b.x", "TLSA"): tlsa_ok()}
    decision = run(destination_decision(ScriptedDns(table), "d.x"))
    assert [h.host for h in decision.hosts] == ["a.x", "b.x"]
    assert {h.host: h.state for h in decision.hosts} == {"a.x": "error", "b.x": "usable"}
    assert decision.level == "dane"  # Postfix defers a.x itself and authenticates b.x


def test_base_candidates_need_addresses():
    assert base_candidates("mx.x", AddressAnswer("nodata", secure=True)) == ()
    assert base_candidates("mx.x", addr()) == ("mx.x",)
    assert base_candidates("MX.X.", addr(canonical="mx.x")) == ("mx.x",)


def test_dane_h_2_validators_off_loopback_are_reported():
    from mxsec.net.dns import remote_validators

    assert remote_validators([("127.0.0.53", 53), ("::1", 53)]) == []
    assert remote_validators([("192.0.2.53", 53), "127.0.0.1", "2001:db8::53"]) == ["192.0.2.53", "2001:db8::53"]


def test_dane_h_2_daemon_warns_about_a_remote_validator(caplog):
    import logging
    from types import SimpleNamespace

    from mxsec.daemon.app import warn_remote_validators

    service = SimpleNamespace(settings=SimpleNamespace(dane=True),
                              dns=SimpleNamespace(nameserver_addresses=["192.0.2.53"]))
    with caplog.at_level(logging.WARNING, logger="mxsec.daemon"):
        warn_remote_validators(service)
        service.dns.nameserver_addresses = ["127.0.0.1"]
        warn_remote_validators(service)
    warnings = [r for r in caplog.records if "AD bit" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].nameservers == ["192.0.2.53"]


def test_dane_h_43_unknown_dane_state_is_never_reported_as_dane():
    decision = decide(mx("mx1.x"), {"mx1.x": host("mx1.x", tlsa=A("error", secure=False, error="timeout"))})
    assert decision.level == "temp" and not decision.applies
    assert "dane" not in decision.reason.lower().split()


def test_sts_e_2_mx_host_names_kept_for_strict_replies_even_when_unsigned():
    """The MX RRset's names (as DNS gives them, preference order, no null MX) travel with every decision, so
    the daemon can list only the allowed MX names for Postfix (docs/daemon.md, strict MX names)."""
    table = {("d.x", "MX"): RRAnswer("ok", ((20, "b.x"), (10, "a.x"), (30, "a.x")), False, 300)}
    decision = run(destination_decision(ScriptedDns(table), "d.x"))
    assert decision.level == "none" and decision.mx_hosts == ("b.x", "a.x")
    nodata = run(destination_decision(ScriptedDns({("d.x", "MX"): RRAnswer("nodata", secure=False)}), "d.x"))
    assert nodata.mx_hosts == ("d.x",)  # RFC 5321 §5.1: the domain itself
    failed = run(destination_decision(ScriptedDns({("d.x", "MX"): RRAnswer("error", error="timeout")}), "d.x"))
    assert failed.level == "temp" and failed.mx_hosts is None
    assert run(destination_decision(ScriptedDns({}), "d.x")).mx_hosts is None  # NXDOMAIN


# --- MX host facts shared across destinations -------------------------------------------------------------------

from mxsec.dane.gather import SharedHostFacts, facts_ttl  # noqa: E402


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def shared_world():
    return ScriptedDns({("a.x", "MX"): mx("mx.provider.y"), ("b.x", "MX"): mx("mx.provider.y"),
                        ("mx.provider.y", "A"): addr(), ("mx.provider.y", "TLSA"): tlsa_ok()})


def test_an_mx_host_serving_many_domains_is_looked_up_once_within_its_ttl():
    dns, clock = shared_world(), Clock()
    hosts = SharedHostFacts(clock=clock)

    async def both():
        return await asyncio.gather(destination_decision(dns, "a.x", hosts=hosts),
                                    destination_decision(dns, "b.x", hosts=hosts))

    first, second = run(both())
    assert first.level == second.level == "dane-only"
    assert dns.queries.count(("mx.provider.y", "TLSA")) == 1  # single flight: b.x joined a.x's lookup
    assert dns.queries.count(("mx.provider.y", "A/AAAA")) == 1
    run(destination_decision(dns, "b.x", hosts=hosts))
    assert dns.queries.count(("mx.provider.y", "TLSA")) == 1  # still within the TTL (300 s)
    clock.now += 301
    run(destination_decision(dns, "a.x", hosts=hosts))
    assert dns.queries.count(("mx.provider.y", "TLSA")) == 2  # the TTL is respected
    assert hosts.sweep() == 0 and len(hosts) == 1
    clock.now += 301
    assert hosts.sweep() == 1 and len(hosts) == 0


def test_a_failed_host_lookup_is_never_reused():
    dns = shared_world()
    dns.table[("mx.provider.y", "TLSA")] = RRAnswer("error", error="SERVFAIL")
    hosts = SharedHostFacts(clock=Clock())
    assert run(destination_decision(dns, "a.x", hosts=hosts)).level == "temp"
    dns.table[("mx.provider.y", "TLSA")] = tlsa_ok()
    assert run(destination_decision(dns, "b.x", hosts=hosts)).level == "dane-only"


def test_facts_ttl_is_the_smallest_answer_ttl_and_denials_count_as_the_denial_ttl():
    dns = ScriptedDns({("mx.x", "A"): AddressAnswer("ok", ("192.0.2.1",), None, True, None, (), 40),
                       ("mx.x", "TLSA"): RRAnswer("ok", (GOOD,), True, 7200)})
    assert facts_ttl(run(host_facts(dns, "mx.x"))) == 40
    dns = ScriptedDns({("mx.x", "A"): AddressAnswer("ok", ("192.0.2.1",), None, True, None, (), 86400)})
    assert facts_ttl(run(host_facts(dns, "mx.x"))) == 300  # TLSA denied: DENIAL_TTL
    assert facts_ttl(run(host_facts(ScriptedDns({("mx.x", "A"): AddressAnswer("error", error="x")}), "mx.x"))) == 0


def test_the_shared_table_is_bounded():
    dns = ScriptedDns({(f"mx{i}.y", "A"): addr() for i in range(5)})
    hosts = SharedHostFacts(limit=3, clock=Clock())
    for i in range(5):
        run(hosts.get(dns, f"mx{i}.y"))
    assert len(hosts) == 3
