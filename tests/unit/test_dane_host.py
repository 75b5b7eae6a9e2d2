"""mxsec.check.dane_host, the steps of `mxsec dane verify` without a network: answers built by hand (the core's
DNS answer types), probes as SmtpProbe values carrying chains generated here. The command itself runs against
real servers in tests/integration/test_dane_tools.py."""

import asyncio
import datetime as dt

from mxsec.check.dane_host import MAX_ADDRESSES, HostLookup, assess, judge, look_up
from mxsec.dane.tlsa import tlsa_for_certificate
from mxsec.dnsanswers import AddressAnswer, RRAnswer
from mxsec.net.smtp import SmtpProbe
from mxsec.testing.pki import TestCA, pem_to_der

HOST = "mx.example.net"
NOW = dt.datetime.now(dt.UTC)
CA = TestCA("dane host test root")
LEAF = pem_to_der(CA.issue([HOST], fresh_key=True)[0])
OTHER = pem_to_der(CA.issue([HOST], fresh_key=True)[0])


def tlsa_rrset(der: bytes, *, secure: bool = True) -> RRAnswer:
    record = tlsa_for_certificate(der, usage=3, selector=1, mtype=1)
    return RRAnswer("ok", ((record.usage, record.selector, record.mtype, record.data),), secure, 300)


def addresses(*ips: str, secure: bool = True) -> AddressAnswer:
    return AddressAnswer("ok", ips, None, secure, None, (), 300)


def lookup(tlsa: RRAnswer, addr: AddressAnswer | None) -> HostLookup:
    return HostLookup(HOST, 25, HOST, tlsa, addr, () if addr is not None else ("192.0.2.9",))


def probe(ip: str, chain: tuple[bytes, ...], **kwargs) -> SmtpProbe:
    return SmtpProbe(ip, 25, HOST, "client.example", chain=chain, tls_version="TLSv1.3", cipher="X", **kwargs)


def test_dane_h_4_a_tlsa_lookup_error_is_not_no_records():
    report, _, candidates = assess(lookup(RRAnswer("error", error="SERVFAIL"), addresses("192.0.2.1")))
    assert candidates == [] and not report["dane_applies"]
    assert report["summary"].startswith("FAIL: TLSA lookup for _25._tcp.mx.example.net. failed: SERVFAIL")


def test_no_tlsa_records_means_dane_does_not_apply():
    report, _, candidates = assess(lookup(RRAnswer("nxdomain", secure=True), addresses("192.0.2.1")))
    assert candidates == [] and "DNSSEC-secure nxdomain" in report["summary"]


def test_dane_h_3_insecure_tlsa_and_dane_h_9_insecure_addresses_do_not_apply():
    report, _, candidates = assess(lookup(tlsa_rrset(LEAF, secure=False), addresses("192.0.2.1")))
    assert candidates == ["192.0.2.1"] and not report["dane_applies"] and "not DNSSEC-validated" in report["reason"]
    report, _, _ = assess(lookup(tlsa_rrset(LEAF), addresses("192.0.2.1", secure=False)))
    assert not report["dane_applies"] and "address records" in report["reason"]


def test_every_address_must_authenticate():
    report, records, candidates = assess(lookup(tlsa_rrset(LEAF), addresses("192.0.2.1", "192.0.2.2")))
    assert report["dane_applies"] and report["tlsa"]["usable"] == 1
    good = judge(dict(report), records, candidates, [], [probe("192.0.2.1", (LEAF,)), probe("192.0.2.2", (LEAF,))],
                 NOW)
    assert good["ok"] and good["summary"].startswith("PASS") and good["results"][0]["match"].startswith("3 1 1")
    report, records, candidates = assess(lookup(tlsa_rrset(LEAF), addresses("192.0.2.1", "192.0.2.2")))
    bad = judge(report, records, candidates, [], [probe("192.0.2.2", (OTHER,)), probe("192.0.2.1", (LEAF,))], NOW)
    assert not bad["ok"] and bad["summary"] == "FAIL: 1 of 2 addresses did not authenticate"
    assert [e["address"] for e in bad["results"]] == ["192.0.2.1", "192.0.2.2"]  # in DNS order


def test_a_failed_starttls_is_reported_with_its_result_type():
    report, records, candidates = assess(lookup(tlsa_rrset(LEAF), None))
    out = judge(report, records, candidates, [],
                [probe("192.0.2.9", (), stage="starttls", error="STARTTLS not offered")], NOW)
    assert out["results"][0]["result_type"] == "starttls-not-supported" and not out["ok"]


def test_addresses_beyond_the_limit_are_not_probed_and_fail_the_check():
    ips = tuple(f"192.0.2.{i}" for i in range(1, MAX_ADDRESSES + 3))
    report, records, candidates = assess(lookup(tlsa_rrset(LEAF), addresses(*ips)))
    out = judge(report, records, candidates, [], [probe(ip, (LEAF,)) for ip in ips[:MAX_ADDRESSES]], NOW)
    assert out["not_probed"] == list(ips[MAX_ADDRESSES:]) and not out["ok"]
    assert out["summary"].endswith(f"2 more not probed (limit {MAX_ADDRESSES})")


def test_look_up_asks_only_tlsa_when_addresses_are_given():
    class Dns:
        def __init__(self):
            self.asked = []

        async def tlsa(self, host, port=25):
            self.asked.append(("TLSA", host, port))
            return tlsa_rrset(LEAF)

        async def addresses(self, name):
            self.asked.append(("A", name))
            return addresses("192.0.2.1")

        async def mx(self, name):
            raise AssertionError("no MX lookup for one host")

        async def lookup(self, name, rdtype):
            raise AssertionError("no CNAME lookup for a name with addresses")

    dns = Dns()
    found = asyncio.run(look_up(dns, HOST, 2525, ("192.0.2.7",)))
    assert dns.asked == [("TLSA", HOST, 2525)] and found.addresses is None and found.overrides == ("192.0.2.7",)
    dns = Dns()
    found = asyncio.run(look_up(dns, HOST, 25))
    assert dns.asked[0] == ("A", HOST) and ("TLSA", HOST, 25) in dns.asked and found.base == HOST
