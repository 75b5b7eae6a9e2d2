"""DANE decision for a destination from DNSSEC-classified facts (RFC 7672 §2.2)."""

from dataclasses import dataclass

from mxsec.dane.destination import HostFacts, decide, host_state, needs_tlsa

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
    assert needs_tlsa(A(secure=True))
    assert not needs_tlsa(A(secure=False))
    assert not needs_tlsa(A(status="error"))


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
