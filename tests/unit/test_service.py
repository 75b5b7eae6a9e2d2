"""PolicyService with in-process fakes: cache rules, single-flight, rate limit, time budget, refresh."""

import asyncio
import gc
from collections import Counter
from dataclasses import dataclass

import pytest

from mxsec.daemon.refresh import Refresher
from mxsec.daemon.replies import Zone, format_reply
from mxsec.daemon.service import PolicyService, ServiceSettings
from mxsec.dnsanswers import AddressAnswer, RRAnswer, TxtAnswer
from mxsec.storage.memory import MemoryStore
from mxsec.sts.cache import RefreshTiming
from mxsec.sts.fetch import FetchProblem

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

    async def lookup(self, name, rdtype):
        return self.rr.get((name, rdtype), RRAnswer("nodata", secure=True))

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


# -- hardening against clients that starve the daemon (docs/daemon.md, "Limits") -------------------------------


class SlowDns(FakeDns):
    """Names ending in ``.slow`` answer NXDOMAIN after ``slow`` seconds, ``.hang`` never; every query counted
    per name (TXT, MX, ...), and the resolutions in progress per name suffix tracked."""

    def __init__(self, slow=0.1):
        super().__init__()
        self.slow = slow
        self.queried = Counter()
        self.running = Counter()
        self.peak = Counter()

    async def _wait(self, name):
        self.queried[name] += 1
        tag = name.rsplit(".", 2)[-2] if name.endswith((".slow", ".hang")) else ""
        self.running[tag] += 1
        self.peak[tag] = max(self.peak[tag], self.running[tag])
        try:
            if name.endswith(".hang"):
                await asyncio.Event().wait()
            elif name.endswith(".slow"):
                await asyncio.sleep(self.slow)
        finally:
            self.running[tag] -= 1

    async def txt(self, name):
        await self._wait(name)
        return await super().txt(name)

    async def mx(self, name):
        self.queried[name] += 1
        return await super().mx(name)


def hardened(settings, dns=None, clock=None):
    dns = dns or SlowDns()
    fetcher = FakeFetcher()
    fetcher.outcomes["example.com"] = Outcome(ENFORCE)
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=one"]
    service = PolicyService(dns=dns, fetcher=fetcher, store=MemoryStore(), settings=settings,
                            clock=clock or Clock())
    return service, dns


async def test_flooding_client_cannot_starve_another_clients_enforce_domain():
    """Two clients each pipeline 200 slow names (pool of 4, 2 per client): a third client's enforce domain gets
    the next free slot (round robin over clients), well within its budget, not after the 400 queued names."""
    service, dns = hardened(ServiceSettings(lookup_timeout=2.0, concurrency=4, per_client=2), SlowDns(slow=0.1))
    service.clock = __import__("time").time
    floods = [asyncio.ensure_future(service.lookup(f"n{i}.{who}.slow", client=who))
              for who in ("a", "c") for i in range(200)]
    await asyncio.sleep(0.01)
    started = asyncio.get_running_loop().time()
    v = await service.lookup("example.com", client="b")
    took = asyncio.get_running_loop().time() - started
    assert v.mode == "enforce" and v.temp_reason is None
    assert took < 0.5, took  # FIFO would have made it wait for 400 x 0.1 s / 4 = 10 s (then TEMP)
    assert dns.peak["a"] <= 2 and dns.peak["c"] <= 2  # never more than its share of the pool
    for f in floods:
        f.cancel()
    await asyncio.gather(*floods, return_exceptions=True)


async def test_budget_spent_waiting_for_a_slot_answers_temp_never_no_policy():
    """A lookup that cannot get a slot within lookup_timeout (all slots held by hung names) is TEMP."""
    service, dns = hardened(ServiceSettings(lookup_timeout=0.1, concurrency=2, per_client=2))
    hogs = [asyncio.ensure_future(service.resolve(f"h{i}.x.hang", client="x")) for i in range(2)]
    await asyncio.sleep(0.01)
    v = await service.lookup("example.com", client="y")
    assert v.temp_reason is not None and v.policy is None and v.expires_at is None
    assert format_reply(v, Zone("postfix")).startswith("TEMP ")
    assert service.counters["budget_temps"] == 1
    await service.aclose()
    await asyncio.gather(*hogs, return_exceptions=True)


async def test_resolution_cancelled_when_every_asker_has_gone_but_not_for_a_refresh():
    service, dns = hardened(ServiceSettings(lookup_timeout=30.0, concurrency=4, per_client=4))
    one = asyncio.ensure_future(service.lookup("a.x.hang", client=1))
    two = asyncio.ensure_future(service.lookup("a.x.hang", client=2))
    await asyncio.sleep(0.01)
    fut = service.inflight["a.x.hang"]
    one.cancel()  # first connection closed: the other still waits
    await asyncio.sleep(0.01)
    assert not fut.done() and service.counters["resolutions_cancelled"] == 0
    two.cancel()  # nobody waits any more
    await asyncio.sleep(0.01)
    assert fut.cancelled() and "a.x.hang" not in service.inflight
    assert service.counters["resolutions_cancelled"] == 1
    assert service._pool.active == 0 and dns.running["x"] == 0
    # A refresh keeps its resolution even when the live asker that joined it goes away.
    refresh = asyncio.ensure_future(service.resolve("b.x.hang"))
    live = asyncio.ensure_future(service.lookup("b.x.hang", client=3))
    await asyncio.sleep(0.01)
    live.cancel()
    await asyncio.sleep(0.01)
    assert not service.inflight["b.x.hang"].done() and service.counters["resolutions_cancelled"] == 1
    await service.aclose()
    await asyncio.gather(one, two, refresh, live, return_exceptions=True)


async def test_fair_pool_cancelled_waiter_hands_its_slot_on():
    from mxsec.daemon.service import FairPool

    pool = FairPool(1, 1)
    await pool.acquire("a")
    waiting = [asyncio.ensure_future(pool.acquire(c)) for c in ("b", "c")]
    await asyncio.sleep(0)
    waiting[0].cancel()
    await asyncio.sleep(0)
    pool.release("a")
    await asyncio.sleep(0)
    assert waiting[1].done() and pool.by_client == {"c": 1} and pool.waiters == 0
    # None is a client like any other (the refresher's, ``mxsec query``'s)
    none_waits = asyncio.ensure_future(pool.acquire(None))
    await asyncio.sleep(0)
    pool.release("c")
    await asyncio.sleep(0)
    assert none_waits.done() and pool.by_client == {None: 1}


async def test_100000_distinct_names_asked_once_leave_no_state_and_no_dns_traffic_after_negative_ttl():
    """Every destination asked once (NXDOMAIN, no MX): after the negative TTL the refresher's sweep leaves the
    tables as they were before, and no DNS query is ever sent for those names again (the old daemon kept
    ~1.1 KB per name and re-queried the MX of every one every few minutes, forever)."""
    clock = Clock()
    dns = SlowDns()
    service, dns = hardened(ServiceSettings(lookup_timeout=30.0, negative_ttl=300.0), dns, clock)
    refresher = Refresher(service, tick=60.0)
    await service.lookup("example.com")
    baseline = service.table_sizes()
    names = [f"d{i}.flood.example" for i in range(100_000)]
    gc.disable()  # only to keep the test fast: full collections over the growing tables dominate otherwise
    try:
        for start in range(0, len(names), 5000):
            await asyncio.gather(*(service.lookup(n, client="attacker") for n in names[start:start + 5000]))
    finally:
        gc.enable()
    assert len(service.negatives) == 100_000 and len(service.dane) >= 100_000
    flood = set(names)
    queried_before = sum(dns.queried[n] for n in flood) + sum(dns.queried["_mta-sts." + n] for n in flood)
    assert queried_before >= 200_000  # TXT and MX, once each
    dns.queried.clear()
    for minute in range(1, 91):  # 90 minutes of refresher rounds; example.com keeps being asked
        clock.now += 60
        await refresher.run_once()
        await asyncio.sleep(0)
        if minute % 10 == 0:
            assert (await service.lookup("example.com")).mode == "enforce"
    sizes = service.table_sizes()
    assert sizes == baseline, sizes
    assert not service.failures and service._pool.active == 0
    assert not any(n in flood or n.removeprefix("_mta-sts.") in flood for n in dns.queried), \
        sorted(dns.queried)[:5]


async def test_tables_hold_at_most_table_limit_oldest_dropped_first():
    service, dns = hardened(ServiceSettings(table_limit=50))
    for i in range(200):
        await service.lookup(f"n{i}.cap.example")
    assert len(service.negatives) == 50 and len(service.dane) == 50 and len(service.asked) <= 50
    assert "n199.cap.example" in service.negatives and "n0.cap.example" not in service.negatives
    assert service.counters["table_evictions"] >= 300


async def test_dane_renewed_only_for_destinations_asked_recently():
    clock = Clock()
    service, dns = hardened(ServiceSettings(asked_ttl=7200.0), clock=clock)
    await service.lookup("example.com")  # a cached policy: its DANE decision is renewed while it is asked
    assert "example.com" in service.dane
    dns.queried.clear()
    until = service.dane["example.com"][0]
    clock.now = until - 30
    assert service.refresh_dane_due(within=60) == 1
    await asyncio.sleep(0)
    assert dns.queried["example.com"] == 1  # MX looked up again
    clock.now += 7200  # not asked for two hours: dropped, not renewed
    dns.queried.clear()
    assert service.refresh_dane_due(within=60) == 0
    assert "example.com" not in service.dane and dns.queried["example.com"] == 0


async def test_newcomer_gets_the_next_free_slot_however_many_clients_flood():
    """50 clients each pipeline 4 slow names (pool of 8, 2 per client): a client asking for one name (as Postfix
    does) gets the very next slot that frees up, not a turn after the 50 flooding ones."""
    service, dns = hardened(ServiceSettings(lookup_timeout=5.0, concurrency=8, per_client=2), SlowDns(slow=0.2))
    floods = [asyncio.ensure_future(service.lookup(f"n{i}.c{c}.slow", client=c))
              for c in range(50) for i in range(4)]
    await asyncio.sleep(0.05)
    assert service._pool.active == 8 and service._pool.waiters == 192
    loop = asyncio.get_running_loop()
    started = loop.time()
    v = await service.lookup("example.com", client="newcomer")
    assert v.mode == "enforce" and loop.time() - started < 0.35  # one slow name's time, not 50 turns (2.5 s)
    for f in floods:
        f.cancel()
    await asyncio.gather(*floods, return_exceptions=True)
    assert service._pool.active == 0 and service._pool.waiters == 0


async def test_sweep_alone_empties_the_tables_after_the_negative_ttl():
    """With the refresher switched off the server's periodic sweep is all there is: it must do the job alone."""
    clock = Clock()
    service, dns = hardened(ServiceSettings(negative_ttl=300.0), clock=clock)
    await asyncio.gather(*(service.lookup(f"n{i}.sweep.example") for i in range(1000)))
    assert service.table_sizes()["dane"] == 1000
    clock.now += 299
    service.sweep()
    assert len(service.negatives) == 1000 and len(service.dane) == 1000  # still answering from memory
    clock.now += 2
    assert service.sweep() == 3000
    assert service.table_sizes() == {"policies": 0, "negatives": 0, "failures": 0, "dane": 0, "dane_hosts": 0,
                                     "asked": 0, "inflight": 0, "unsaved": 0}


async def test_sts_e_1_changed_mx_rrset_invalidates_strict_answer(world):
    """Strict MX-name replies list the MX hosts: a renewed DANE decision with other MX hosts (same level and
    reason: still unsigned) must tell the listeners, so the server's memo of the old reply is dropped."""
    service, dns, fetcher, clock, _ = world
    dns.rr[("example.com", "MX")] = RRAnswer("ok", ((10, "mail.example.com"),), False, 300)
    v = await service.lookup("example.com")
    assert format_reply(v, Zone()) == "OK secure match=mail.example.com servername=hostname"
    seen = []
    service.listeners.append(seen.append)
    dns.rr[("example.com", "MX")] = RRAnswer("ok", ((10, "rogue.attacker.test"),), False, 300)
    clock.now += 301
    await service._resolve_dane("example.com")
    assert seen == ["example.com"]
    v = await service.lookup("example.com")
    assert format_reply(v, Zone()).startswith("OK secure match=no-mx-host-matches-the-policy.invalid ")
    await service._resolve_dane("example.com")  # unchanged: nobody is told
    assert seen == ["example.com"]
