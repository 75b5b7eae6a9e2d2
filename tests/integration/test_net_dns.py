"""DnsClient against the fake world's DNS server (127.0.80.x only)."""

from __future__ import annotations

import time


from mxsec.testing.fakeworld import FakeWorld, PolicySpec
from mxsec.net.dns import DnsClient, DnsSettings
from tests.integration.conftest import UNUSED_IP, dns_settings_for, unique_domain


async def test_sts_a_11_multi_string_txt_joined_without_spaces(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    """EC-11: ``"v=STSv1; " "id=2024"`` is one record ``v=STSv1; id=2024``."""
    domain = unique_domain("multistring")
    fake_world.set_txt(domain, [["v=STSv1;", " id=2024", "ab"]])
    answer = await dns_client.txt(f"_mta-sts.{domain}")
    assert answer.status == "ok"
    assert answer.records == ("v=STSv1; id=2024ab",)
    assert answer.ttl == fake_world.ttl


async def test_sts_a_11_long_record_split_in_255_octet_strings_is_rejoined(
    fake_world: FakeWorld, dns_client: DnsClient
) -> None:
    domain = unique_domain("longtxt")
    text = "v=STSv1; id=1; " + "; ".join(f"ext{i}=value{i}" for i in range(40))
    assert len(text) > 255
    fake_world.set_txt(domain, [text])
    answer = await dns_client.txt(f"_mta-sts.{domain}")
    assert answer.records == (text,)


async def test_ec_12_several_txt_records_are_returned_separately(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("several")
    fake_world.set_txt(domain, ["v=STSv1; id=1", "google-site-verification=abc", ["v=STSv1; ", "id=2"]])
    answer = await dns_client.txt(f"_mta-sts.{domain}")
    assert answer.status == "ok"
    assert sorted(answer.records) == sorted(["v=STSv1; id=1", "google-site-verification=abc", "v=STSv1; id=2"])


async def test_sts_a_12_cname_chain_followed_to_txt(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    """EC-23: _mta-sts.customer -> CNAME -> CNAME -> TXT at the provider."""
    customer, hop, provider = unique_domain("customer"), unique_domain("hop"), unique_domain("provider")
    fake_world.set_record(f"_mta-sts.{customer}", "CNAME", [f"_mta-sts.{hop}."])
    fake_world.set_record(f"_mta-sts.{hop}", "CNAME", [f"_mta-sts.{provider}."])
    fake_world.set_txt(provider, ["v=STSv1; id=provider1"])
    answer = await dns_client.txt(f"_mta-sts.{customer}")
    assert answer.status == "ok"
    assert answer.records == ("v=STSv1; id=provider1",)


async def test_sts_a_12_cname_to_missing_name_is_nxdomain(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    customer = unique_domain("dangling")
    fake_world.set_record(f"_mta-sts.{customer}", "CNAME", [f"_mta-sts.{unique_domain('gone')}."])
    answer = await dns_client.txt(f"_mta-sts.{customer}")
    assert answer.status == "nxdomain"


async def test_cname_loop_is_an_error_not_no_records(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    a, b = unique_domain("loopa"), unique_domain("loopb")
    fake_world.set_record(f"_mta-sts.{a}", "CNAME", [f"_mta-sts.{b}."])
    fake_world.set_record(f"_mta-sts.{b}", "CNAME", [f"_mta-sts.{a}."])
    answer = await dns_client.txt(f"_mta-sts.{a}")
    assert answer.status == "error"


async def test_nxdomain_status(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    answer = await dns_client.txt(f"_mta-sts.{unique_domain('absent')}")
    assert answer.status == "nxdomain"
    assert answer.records == ()
    assert answer.error is None


async def test_nodata_status_when_name_exists_without_txt(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("nodata")
    fake_world.set_record(f"_mta-sts.{domain}", "A", ["127.0.80.3"])
    answer = await dns_client.txt(f"_mta-sts.{domain}")
    assert answer.status == "nodata"
    assert answer.records == ()


async def test_servfail_is_error_distinct_from_no_records(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("servfail")
    fake_world.set_txt(domain, ["v=STSv1; id=1"])
    fake_world.set_failure(f"_mta-sts.{domain}", "servfail")
    answer = await dns_client.txt(f"_mta-sts.{domain}")
    assert answer.status == "error"
    assert answer.records == ()
    assert "SERVFAIL" in (answer.error or "")
    assert "\n" not in (answer.error or "")
    fake_world.set_failure(f"_mta-sts.{domain}", None)
    assert (await dns_client.txt(f"_mta-sts.{domain}")).status == "ok"


async def test_refused_is_error(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("refused")
    fake_world.set_failure(f"_mta-sts.{domain}", "refused")
    answer = await dns_client.txt(f"_mta-sts.{domain}")
    assert answer.status == "error"
    assert "REFUSED" in (answer.error or "")


async def test_dropped_query_times_out_within_the_timeout(fake_world: FakeWorld) -> None:
    domain = unique_domain("drop")
    fake_world.set_txt(domain, ["v=STSv1; id=1"])
    fake_world.set_failure(f"_mta-sts.{domain}", "drop")
    client = DnsClient(dns_settings_for(fake_world, timeout=0.4))
    started = time.monotonic()
    answer = await client.txt(f"_mta-sts.{domain}")
    elapsed = time.monotonic() - started
    assert answer.status == "error"
    assert "timeout" in (answer.error or "")
    assert 0.3 < elapsed < 1.5
    assert fake_world.stats.queries(f"_mta-sts.{domain}", "TXT") >= 1


async def test_unreachable_nameserver_is_error(fake_world: FakeWorld) -> None:
    client = DnsClient(DnsSettings(nameservers=[(UNUSED_IP, 9)], timeout=0.5))
    started = time.monotonic()
    answer = await client.txt("_mta-sts.example.test")
    assert answer.status == "error"
    assert time.monotonic() - started < 1.5


async def test_records_change_between_queries_no_cache(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("changing")
    fake_world.set_txt(domain, ["v=STSv1; id=1"])
    assert (await dns_client.txt(f"_mta-sts.{domain}")).records == ("v=STSv1; id=1",)
    fake_world.set_txt(domain, ["v=STSv1; id=2"])
    assert (await dns_client.txt(f"_mta-sts.{domain}")).records == ("v=STSv1; id=2",)
    fake_world.set_txt(domain, None)
    assert (await dns_client.txt(f"_mta-sts.{domain}")).status == "nxdomain"  # the name is gone
    assert fake_world.stats.queries(f"_mta-sts.{domain}", "TXT") == 3


async def test_sts_a_2_non_ascii_txt_is_replaced_not_crashing(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("nonascii")
    fake_world.set_record(f"_mta-sts.{domain}", "TXT", [[b"v=STSv1; id=caf\xc3\xa9"]])
    answer = await dns_client.txt(f"_mta-sts.{domain}")
    assert answer.status == "ok"
    assert answer.records[0].startswith("v=STSv1; id=caf")
    assert "\ufffd" in answer.records[0]
    assert answer.records[0].isascii() is False


async def test_big_txt_answer_truncated_over_udp_retried_over_tcp(
    fake_world: FakeWorld, dns_client: DnsClient
) -> None:
    domain = unique_domain("bigtxt")
    records = [f"record-{i}-" + "x" * 200 for i in range(12)]
    fake_world.set_txt(domain, records)
    tcp_before = fake_world.stats.dns_tcp_queries
    answer = await dns_client.txt(f"_mta-sts.{domain}")
    assert fake_world.stats.dns_tcp_queries > tcp_before
    assert answer.status == "ok"
    assert sorted(answer.records) == sorted(records)


async def test_secure_reflects_ad_bit(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    signed, unsigned = unique_domain("signed"), unique_domain("unsigned")
    fake_world.set_txt(signed, ["v=STSv1; id=1"])
    fake_world.set_txt(unsigned, ["v=STSv1; id=1"])
    fake_world.set_secure(f"_mta-sts.{signed}")
    assert (await dns_client.txt(f"_mta-sts.{signed}")).secure is True
    assert (await dns_client.txt(f"_mta-sts.{unsigned}")).secure is False


async def test_addresses_a_and_aaaa(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    name = f"host.{unique_domain('addr')}"
    fake_world.set_record(name, "A", ["127.0.80.7", "127.0.80.8"])
    fake_world.set_record(name, "AAAA", ["::1"])
    answer = await dns_client.addresses(name)
    assert answer.status == "ok"
    assert sorted(answer.addresses[:2]) == ["127.0.80.7", "127.0.80.8"]
    assert answer.addresses[2] == "::1"
    assert fake_world.stats.queries(name, "A") == 1
    assert fake_world.stats.queries(name, "AAAA") == 1


async def test_addresses_follow_cname(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    alias, real = f"alias.{unique_domain('cn')}", f"real.{unique_domain('cn')}"
    fake_world.set_record(alias, "CNAME", [f"{real}."])
    fake_world.set_record(real, "A", ["127.0.80.9"])
    answer = await dns_client.addresses(alias)
    assert answer.status == "ok"
    assert answer.addresses == ("127.0.80.9",)


async def test_addresses_nxdomain_nodata_error(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    assert (await dns_client.addresses(f"mta-sts.{unique_domain('none')}")).status == "nxdomain"
    domain = unique_domain("policy-noaddr")
    fake_world.add_domain(domain, policy=PolicySpec(body="x", host_address=None))
    assert (await dns_client.addresses(f"mta-sts.{domain}")).status == "nxdomain"
    txt_only = f"txtonly.{unique_domain('nd')}"
    fake_world.set_record(txt_only, "TXT", ["hello"])
    assert (await dns_client.addresses(txt_only)).status == "nodata"
    broken = f"broken.{unique_domain('sf')}"
    fake_world.set_record(broken, "AAAA", ["::1"])
    fake_world.set_failure(broken, "servfail", "A")
    answer = await dns_client.addresses(broken)
    assert answer.status == "ok"  # AAAA alone still gives an address
    fake_world.set_record(broken, "AAAA", None)
    answer = await dns_client.addresses(broken)
    assert answer.status == "error"  # no address, and one lookup failed: not "no records"


async def test_policy_host_address_is_the_https_server(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("auto")
    fake_world.add_domain(domain, policy=PolicySpec(body="x"))
    answer = await dns_client.addresses(f"mta-sts.{domain}")
    assert answer.addresses == (fake_world.https_address[0],)


async def test_dane_h_1_mx_sorted_with_dnssec_state(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("mx")
    fake_world.add_domain(domain)
    fake_world.set_record(domain, "MX", [f"20 mx2.{domain}.", f"10 MX1.{domain}."])
    answer = await dns_client.mx(domain)
    assert answer.ok and not answer.secure
    assert answer.records == ((10, f"mx1.{domain}"), (20, f"mx2.{domain}"))
    assert answer.ttl is not None
    fake_world.set_secure(domain)
    assert (await dns_client.mx(domain)).secure


async def test_dane_h_12_tlsa_at_port_25_owner(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("tlsa")
    host = f"mx1.{domain}"
    fake_world.add_domain(domain)
    digest = "ab" * 32
    fake_world.set_record(f"_25._tcp.{host}", "TLSA", [f"3 1 1 {digest}", f"2 0 1 {'cd' * 32}"])
    fake_world.set_secure(f"_25._tcp.{host}")
    answer = await dns_client.tlsa(host)
    assert answer.ok and answer.secure
    assert (3, 1, 1, bytes.fromhex(digest)) in answer.records and len(answer.records) == 2


async def test_dane_h_4_dane_h_5_tlsa_denial_vs_error(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("tlsa-none")
    fake_world.add_domain(domain)
    missing = await dns_client.tlsa(f"mx1.{domain}")
    assert missing.status in ("nxdomain", "nodata")  # denial of existence: no TLSA, not an error
    fake_world.set_failure(f"_25._tcp.mx1.{domain}", "servfail")
    failed = await dns_client.tlsa(f"mx1.{domain}")
    assert failed.status == "error" and failed.error


async def test_lookup_reports_cname_expansion(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("cn")
    fake_world.add_domain(domain)
    fake_world.set_record(f"alias.{domain}", "CNAME", [f"target.{domain}."])
    fake_world.set_record(f"target.{domain}", "A", ["192.0.2.7"])
    answer = await dns_client.lookup(f"alias.{domain}", "A")
    assert answer.ok and answer.canonical == f"target.{domain}"


# --- DANE gathering through the real DnsClient (CNAME base domains, address families) ------------------------

from mxsec.dane.destination import host_state  # noqa: E402
from mxsec.dane.gather import destination_decision, host_facts  # noqa: E402


def _signed(world: FakeWorld, *names: str) -> None:
    for name in names:
        world.set_secure(name)


async def test_dane_h_13_dane_h_14_secure_cname_chain_tries_target_then_original(
        fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("dcn")
    fake_world.add_domain(domain)
    alias, target = f"mx.{domain}", f"mx.provider.{domain}"
    fake_world.set_record(alias, "CNAME", [f"{target}."])
    fake_world.set_record(target, "A", ["192.0.2.25"])
    fake_world.set_record(f"_25._tcp.{target}", "TLSA", [f"3 1 1 {'ab' * 32}"])
    _signed(fake_world, alias, target, f"_25._tcp.{target}", f"_25._tcp.{alias}")
    facts = await host_facts(dns_client, alias)
    assert facts.candidates == (target, alias) and facts.base == target
    assert host_state(facts).state == "usable"
    # no TLSA at the target any more: the original name's records decide
    fake_world.set_record(f"_25._tcp.{target}", "TLSA", None)
    fake_world.set_record(f"_25._tcp.{alias}", "TLSA", [f"3 1 1 {'cd' * 32}"])
    facts = await host_facts(dns_client, alias)
    assert facts.base == alias and facts.tlsa.records[0][3] == bytes.fromhex("cd" * 32)


async def test_ec_29_cname_into_unsigned_zone_uses_the_original_name(
        fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("ec29")
    fake_world.add_domain(domain)
    alias, target = f"mx.{domain}", f"mx.unsigned-{domain}"
    fake_world.set_record(alias, "CNAME", [f"{target}."])
    fake_world.set_record(target, "A", ["192.0.2.25"])
    fake_world.set_record(f"_25._tcp.{alias}", "TLSA", [f"3 1 1 {'ab' * 32}"])
    fake_world.set_record(domain, "MX", [f"10 {alias}."])
    _signed(fake_world, domain, alias, f"_25._tcp.{alias}")  # the target is not signed
    facts = await host_facts(dns_client, alias)
    assert not facts.addresses.secure and facts.candidates == (alias,) and facts.base == alias
    assert fake_world.stats.queries(f"_25._tcp.{target}", "TLSA") == 0
    decision = await destination_decision(dns_client, domain)
    assert decision.level == "dane" and decision.hosts[0].via_original_name


async def test_dane_h_10_ec_30_aaaa_failure_keeps_dane_over_ipv4(
        fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("ec30")
    fake_world.add_domain(domain)
    host = f"mx.{domain}"
    fake_world.set_record(domain, "MX", [f"10 {host}."])
    fake_world.set_record(host, "A", ["192.0.2.25"])
    fake_world.set_record(f"_25._tcp.{host}", "TLSA", [f"3 1 1 {'ab' * 32}"])
    fake_world.set_failure(host, "servfail", "AAAA")
    _signed(fake_world, domain, host, f"_25._tcp.{host}")
    decision = await destination_decision(dns_client, domain)
    assert decision.level == "dane-only"
    assert "AAAA lookup failed" in decision.hosts[0].detail
    families = {f.rdtype: f.status for f in (await dns_client.addresses(host)).families}
    assert families == {"A": "ok", "AAAA": "error"}


async def test_dane_h_8_mx_hosts_in_preference_order(fake_world: FakeWorld, dns_client: DnsClient) -> None:
    domain = unique_domain("h8")
    fake_world.add_domain(domain)
    fake_world.set_record(domain, "MX", [f"30 c.{domain}.", f"10 a.{domain}.", f"20 b.{domain}."])
    for name in ("a", "b", "c"):
        fake_world.set_record(f"{name}.{domain}", "A", ["192.0.2.25"])
    _signed(fake_world, domain, *(f"{n}.{domain}" for n in "abc"))
    decision = await destination_decision(dns_client, domain)
    assert [h.host for h in decision.hosts] == [f"a.{domain}", f"b.{domain}", f"c.{domain}"]
