"""PolicyService with in-process fakes: cache rules, single-flight, rate limit, time budget, refresh."""

import asyncio
from dataclasses import dataclass

import pytest

from mxsec.daemon.refresh import Refresher
from mxsec.daemon.replies import Zone, format_reply
from mxsec.daemon.service import PolicyService, ServiceSettings
from mxsec.net.dns import AddressAnswer, RRAnswer, TxtAnswer
from mxsec.store.memory import MemoryStore
from mxsec.sts.cache import RefreshTiming
from mxsec.sts.results import FetchProblem

ENFORCE = b"version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n"


@dataclass
class Outcome:
    body: bytes | None = None
    problem: FetchProblem | None = None
    detail: str = ""

    @property
    def ok(self):
        return self.problem is None


class FakeDns:
    """TXT answers from ``txt_records``; MX/A/TLSA from ``rr`` (name, type) → answer, default insecure NODATA."""

    def __init__(self):
        self.txt_records = {}
        self.rr = {}
        self.calls = 0
        self.delay = 0.0

    async def mx(self, name):
        return self.rr.get((name, "MX"), RRAnswer("nodata"))

    async def addresses(self, name):
        return self.rr.get((name, "A"), AddressAnswer("nxdomain"))

    async def tlsa(self, host, port=25):
        return self.rr.get((host, "TLSA"), RRAnswer("nxdomain", secure=True))

    async def txt(self, name):
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        value = self.txt_records.get(name)
        if value is None:
            return TxtAnswer("nxdomain")
        if value == "error":
            return TxtAnswer("error", error="SERVFAIL")
        return TxtAnswer("ok", tuple(value))


class FakeFetcher:
    def __init__(self):
        self.outcomes = {}
        self.calls = 0
        self.delay = 0.0

    async def fetch(self, domain):
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.outcomes.get(domain, Outcome(problem=FetchProblem("http-status"), detail="HTTP 404"))

    async def aclose(self):
        pass


class Clock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def world():
    dns, fetcher, clock, store = FakeDns(), FakeFetcher(), Clock(), MemoryStore()
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=one"]
    fetcher.outcomes["example.com"] = Outcome(ENFORCE)
    settings = ServiceSettings(lookup_timeout=2.0, timing=RefreshTiming(recheck_after=3600, force_fetch_after=86400))
    service = PolicyService(dns=dns, fetcher=fetcher, store=store, settings=settings, clock=clock)
    return service, dns, fetcher, clock, store


def problem(name):
    return FetchProblem(name)


async def test_fetch_then_serve_from_cache(world):
    service, dns, fetcher, clock, store = world
    v = await service.lookup("example.com")
    assert (v.source, v.mode, v.policy_id) == ("fetched", "enforce", "one")
    v2 = await service.lookup("example.com")
    assert v2.source == "cache" and fetcher.calls == 1 and dns.calls == 1
    assert store.get("example.com").policy_id == "one"


async def test_single_flight_one_txt_one_fetch_for_concurrent_queries(world):
    service, dns, fetcher, *_ = world
    fetcher.delay = 0.05
    verdicts = await asyncio.gather(*(service.lookup("example.com") for _ in range(500)))
    assert all(v.mode == "enforce" for v in verdicts)
    assert (dns.calls, fetcher.calls) == (1, 1)


async def test_sts_d_2_same_id_no_refetch_new_id_refetch(world):
    service, dns, fetcher, clock, _ = world
    await service.lookup("example.com")
    clock.now += 4000
    await service.resolve("example.com")
    assert fetcher.calls == 1
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=two"]
    fetcher.outcomes["example.com"] = Outcome(ENFORCE.replace(b"mail.example.com", b"mx2.example.com"))
    v = await service.resolve("example.com")
    assert fetcher.calls == 2 and v.policy_id == "two" and v.policy.mx == ("mx2.example.com",)


async def test_sts_b_14_fetch_failure_keeps_cached_policy(world):
    service, dns, fetcher, clock, _ = world
    await service.lookup("example.com")
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=two"]
    fetcher.outcomes["example.com"] = Outcome(problem=problem("http-status"), detail="HTTP 500")
    v = await service.resolve("example.com")
    assert v.mode == "enforce" and v.source == "cache" and v.failure == "sts-policy-fetch-error"


async def test_sts_b_13_fetch_failure_without_cache_means_no_policy(world):
    service, dns, fetcher, *_ = world
    fetcher.outcomes["example.com"] = Outcome(problem=problem("redirect"), detail="HTTP 301")
    v = await service.lookup("example.com")
    assert v.policy is None and v.failure == "sts-policy-fetch-error"


async def test_sts_c_15_invalid_policy_is_reported_and_not_applied(world):
    service, dns, fetcher, *_ = world
    fetcher.outcomes["example.com"] = Outcome(b"version: STSv1\nmode: Enforce\nmax_age: 1\n")
    v = await service.lookup("example.com")
    assert v.policy is None and v.failure == "sts-policy-invalid"


async def test_sts_b_11_no_refetch_same_id_for_five_minutes(world):
    service, dns, fetcher, clock, _ = world
    fetcher.outcomes["example.com"] = Outcome(problem=problem("connect-error"), detail="refused")
    await service.resolve("example.com")
    for _ in range(5):
        clock.now += 50
        await service.resolve("example.com")
    assert fetcher.calls == 1
    clock.now += 60  # 310 s after the failure
    await service.resolve("example.com")
    assert fetcher.calls == 2


async def test_sts_d_3_txt_gone_keeps_cached_policy(world):
    service, dns, fetcher, clock, _ = world
    await service.lookup("example.com")
    del dns.txt_records["_mta-sts.example.com"]
    v = await service.resolve("example.com")
    assert v.mode == "enforce"
    dns.txt_records["_mta-sts.example.com"] = "error"
    v = await service.resolve("example.com")
    assert v.mode == "enforce"


async def test_sts_d_1_expired_policy_no_longer_served(world):
    service, dns, fetcher, clock, store = world
    await service.lookup("example.com")
    del dns.txt_records["_mta-sts.example.com"]
    clock.now += 86401
    assert service.cached_verdict("example.com") is None
    v = await service.lookup("example.com")
    assert v.policy is None
    assert store.get("example.com") is None


async def test_sts_d_12_mode_none_replaces_enforce(world):
    service, dns, fetcher, clock, _ = world
    await service.lookup("example.com")
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=off"]
    fetcher.outcomes["example.com"] = Outcome(b"version: STSv1\nmode: none\nmax_age: 86400\n")
    v = await service.resolve("example.com")
    assert v.mode == "none" and service.entries["example.com"].entry.mode == "none"


async def test_negative_answer_remembered(world):
    service, dns, *_ = world
    await service.lookup("nopolicy.example")
    await service.lookup("nopolicy.example")
    assert dns.calls == 1


async def test_time_budget_answers_then_caches_in_background(world):
    service, dns, fetcher, *_ = world
    service.settings = ServiceSettings(lookup_timeout=0.05)
    fetcher.delay = 0.2
    v = await service.lookup("example.com")
    # Our own budget ran out, not the domain's fetch: TEMP (the MTA retries), never "no policy".
    assert v.policy is None and "still running" in v.notes[0] and v.temp_reason is not None
    assert format_reply(v, Zone("postfix")).startswith("TEMP policy lookup still running after 0.05s")
    assert format_reply(v, Zone("exim")).startswith("mode=temp ")
    await asyncio.sleep(0.3)
    assert service.cached_verdict("example.com").mode == "enforce"


async def test_restart_loads_cache_from_store(world):
    service, dns, fetcher, clock, store = world
    await service.lookup("example.com")
    fetcher2 = FakeFetcher()
    fresh = PolicyService(dns=FakeDns(), fetcher=fetcher2, store=store, clock=clock)
    assert fresh.load() == 1
    v = await fresh.lookup("example.com")  # only DANE is looked up again (not persisted)
    assert v.mode == "enforce" and v.source == "cache" and fetcher2.calls == 0


async def test_listeners_told_of_changes(world):
    service, *_ = world
    seen = []
    service.listeners.append(seen.append)
    await service.lookup("example.com")
    assert "example.com" in seen


async def test_ec_19_refresher_refetches_daily_even_with_same_id(world):
    service, dns, fetcher, clock, _ = world
    await service.lookup("example.com")
    fetcher.outcomes["example.com"] = Outcome(ENFORCE.replace(b"mail.", b"mx9."))
    refresher = Refresher(service)
    clock.now += 3700  # TXT re-check only: same id, no fetch
    await refresher.run_once()
    assert fetcher.calls == 1 and dns.calls == 2
    clock.now += 86400 - 3700 + 1  # body refetched although the id is the same
    await refresher.run_once()
    assert fetcher.calls == 2
    assert service.cached_verdict("example.com").policy.mx == ("mx9.example.com",)


async def test_sts_d_7_refresh_failure_logs_alert(world, caplog):
    service, dns, fetcher, clock, _ = world
    await service.lookup("example.com")
    fetcher.outcomes["example.com"] = Outcome(problem=problem("certificate-invalid"), detail="expired")
    clock.now += 86401 - 100  # due for refetch, still usable
    with caplog.at_level("WARNING", logger="mxsec"):
        await Refresher(service).run_once()
    alerts = [r for r in caplog.records if getattr(r, "alert", False)]
    assert alerts and alerts[0].result_type == "sts-webpki-invalid"
    assert service.cached_verdict("example.com").mode == "enforce"


async def test_sts_a_15_no_parent_domain_fallback(world):
    service, dns, fetcher, *_ = world
    v = await service.lookup("mail.example.com")
    assert v.policy is None
    assert dns.calls == 1 and fetcher.calls == 0  # only _mta-sts.mail.example.com was asked


async def test_sts_b_18_fetch_attempts_rate_limited_under_load(world):
    service, dns, fetcher, clock, _ = world
    fetcher.outcomes["example.com"] = Outcome(problem=problem("timeout"), detail="timed out")
    for _ in range(20):
        await service.resolve("example.com")
        clock.now += 10
    assert fetcher.calls == 1


async def test_sts_d_8_cached_lookup_needs_no_io(world):
    service, dns, fetcher, *_ = world
    await service.lookup("example.com")
    dns.delay = fetcher.delay = 60.0  # any I/O now would hang the test
    v = await asyncio.wait_for(service.lookup("example.com"), 0.1)
    assert v.source == "cache" and v.mode == "enforce"


async def test_sts_d_9_sts_f_4_refresh_checks_dns_for_new_id(world):
    service, dns, fetcher, clock, _ = world
    await service.lookup("example.com")
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=two"]
    fetcher.outcomes["example.com"] = Outcome(ENFORCE.replace(b"mail.example.com", b"new.example.com"))
    clock.now += 3601
    await Refresher(service).run_once()
    assert service.cached_verdict("example.com").policy.mx == ("new.example.com",)


async def test_sts_d_10_body_change_without_new_id_not_seen_until_refetch(world):
    service, dns, fetcher, clock, _ = world
    await service.lookup("example.com")
    fetcher.outcomes["example.com"] = Outcome(ENFORCE.replace(b"mail.example.com", b"other.example.com"))
    clock.now += 3601
    v = await service.resolve("example.com")  # same id: no fetch
    assert v.policy.mx == ("mail.example.com",) and fetcher.calls == 1


async def test_sts_d_11_short_max_age_accepted(world):
    service, dns, fetcher, clock, _ = world
    fetcher.outcomes["example.com"] = Outcome(ENFORCE.replace(b"86400", b"60"))
    v = await service.lookup("example.com")
    assert v.mode == "enforce" and v.expires_at == clock.now + 60
    clock.now += 61
    assert service.cached_verdict("example.com") is None


async def test_fleet_shared_store_second_daemon_reuses_first_fetch(world):
    service, dns, fetcher, clock, store = world
    await service.lookup("example.com")
    dns2, fetcher2 = FakeDns(), FakeFetcher()
    other = PolicyService(dns=dns2, fetcher=fetcher2, store=store, clock=clock)
    v = await other.lookup("example.com")
    assert v.mode == "enforce" and v.source == "cache"
    assert (dns2.calls, fetcher2.calls) == (0, 0)


class BrokenStore(MemoryStore):
    def put(self, entry):
        raise OSError("disk full")

    def get(self, domain):
        raise OSError("gone")

    def load_all(self):
        raise OSError("gone")


async def test_failing_store_never_stops_answers(world):
    service, dns, fetcher, clock, _ = world
    broken = PolicyService(dns=dns, fetcher=fetcher, store=BrokenStore(), clock=clock)
    assert broken.load() == 0
    v = await broken.lookup("example.com")
    assert v.mode == "enforce"
    assert broken.cached_verdict("example.com").mode == "enforce"


GOOD_TLSA = (3, 1, 1, bytes(32))


def signed_mx(dns, domain, *hosts, tlsa=True):
    dns.rr[(domain, "MX")] = RRAnswer("ok", tuple((10, h) for h in hosts), secure=True, ttl=300)
    for h in hosts:
        dns.rr[(h, "A")] = AddressAnswer("ok", ("192.0.2.1",), secure=True)
        if tlsa:
            dns.rr[(h, "TLSA")] = RRAnswer("ok", (GOOD_TLSA,), secure=True, ttl=300)


async def test_sts_g_1_dane_takes_precedence_over_mta_sts(world):
    from mxsec.daemon.replies import Zone, format_reply

    service, dns, fetcher, clock, _ = world
    signed_mx(dns, "example.com", "mail.example.com")
    v = await service.lookup("example.com")
    assert v.mode == "enforce"  # the MTA-STS policy is known...
    assert format_reply(v, Zone()) == "OK dane-only"  # ...but DANE decides
    assert format_reply(v, Zone(dialect="tlsrpt")) == "OK dane-only"


async def test_dane_h_4_dnssec_failure_is_temp_never_mta_sts(world):
    from mxsec.daemon.replies import Zone, format_reply

    service, dns, *_ = world
    signed_mx(dns, "example.com", "mail.example.com", tlsa=False)
    dns.rr[("mail.example.com", "TLSA")] = RRAnswer("error", error="SERVFAIL")
    v = await service.lookup("example.com")
    assert format_reply(v, Zone()).startswith("TEMP ")


async def test_no_tlsa_leaves_mta_sts_in_charge(world):
    from mxsec.daemon.replies import Zone, format_reply

    service, dns, *_ = world
    signed_mx(dns, "example.com", "mail.example.com", tlsa=False)
    v = await service.lookup("example.com")
    assert format_reply(v, Zone()).startswith("OK secure match=mail.example.com")


async def test_stale_dane_decision_served_without_waiting(world):
    service, dns, fetcher, clock, _ = world
    signed_mx(dns, "example.com", "mail.example.com")
    await service.lookup("example.com")
    clock.now += 301  # past the DNS TTL, within the stale grace
    dns.delay = 60.0  # any waiting on DNS would hang the test
    v = await asyncio.wait_for(service.lookup("example.com"), 0.1)
    assert v.dane.level == "dane-only"


def _with_settings(service, **changes):
    from dataclasses import replace as _replace

    service.settings = _replace(service.settings, **changes)
    return service


async def test_dane_h_41_mandatory_destination_is_dane_only_without_tlsa(world):
    from mxsec.daemon.replies import Zone, format_reply

    service, dns, *_ = world
    _with_settings(service, dane_mandatory=("other.example",))
    signed_mx(dns, "other.example", "mail.other.example", tlsa=False)  # no TLSA, no MTA-STS
    v = await service.lookup("other.example")
    assert format_reply(v, Zone()) == "OK dane-only"
    assert "dane.mandatory" in v.dane.reason
    # a DNS failure still defers instead of pretending
    dns.rr[("mail.sub.gov.example", "A")] = AddressAnswer("ok", ("192.0.2.1",), secure=True)
    dns.rr[("sub.gov.example", "MX")] = RRAnswer("error", error="SERVFAIL")
    _with_settings(service, dane_mandatory=(".gov.example",))
    assert format_reply(await service.lookup("sub.gov.example"), Zone()).startswith("TEMP ")


async def test_dane_h_42_disabled_destination_never_falls_back_to_cleartext(world):
    from mxsec.daemon.replies import Zone, format_reply

    service, dns, *_ = world
    _with_settings(service, dane_disabled=("broken.example", "example.com"))
    signed_mx(dns, "broken.example", "mail.broken.example")
    signed_mx(dns, "example.com", "mail.example.com")
    asked = []
    real_mx = dns.mx

    async def counting_mx(name):
        asked.append(name)
        return await real_mx(name)

    dns.mx = counting_mx
    v = await service.lookup("broken.example")  # DANE ignored, no MTA-STS: TLS still required
    assert format_reply(v, Zone()) == "OK encrypt"
    assert asked == []  # no DANE lookups at all for a disabled destination
    v = await service.lookup("example.com")  # DANE ignored, MTA-STS enforce decides
    assert format_reply(v, Zone()).startswith("OK secure match=mail.example.com")


def test_dane_overrides_config_and_matching():
    from mxsec.config import DaneConfig
    from mxsec.dane.destination import listed
    from mxsec.errors import ConfigError

    assert listed("a.gov.example", [".gov.example"]) and not listed("gov.example", [".gov.example"])
    assert listed("Bank.Example.", ["bank.example"]) and not listed("xbank.example", ["bank.example"])
    assert DaneConfig(mandatory=["Bank.Example."]).mandatory == ["bank.example"]
    with pytest.raises(ConfigError, match="both mandatory and disabled"):
        DaneConfig(mandatory=["a.example"], disabled=["a.example"])
    with pytest.raises(ConfigError, match="not a domain name"):
        DaneConfig(disabled=["bad name"])
