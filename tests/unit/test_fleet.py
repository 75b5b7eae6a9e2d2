"""Daemons of a fleet on one shared store resolve each domain once (mxsec.daemon.fleet, docs/fleet.md).

Several PolicyService objects share one in-process store with the lease semantics of the Redis and PostgreSQL
stores (mxsec.testing.fleetstore; the real ones are tested in tests/integration/test_fleet_servers.py), and one counting DNS
and HTTPS fake: exact counts of TXT look-ups and fetches show who did the work."""

import asyncio
import time

import pytest

from mxsec.daemon.fleet import Outcome
from mxsec.daemon.service import PolicyService, ServiceSettings
from mxsec.results import ResultType
from mxsec.storage.base import FleetStore
from mxsec.storage.memory import MemoryStore
from mxsec.testing.fleetstore import SharedMemoryStore
from mxsec.sts.cache import RefreshTiming

from .test_service import ENFORCE, Clock, FakeDns, FakeFetcher
from .test_service import Outcome as Fetched


def fleet(n=3, lease=5.0, **settings):
    clock, dns, fetcher = Clock(), FakeDns(), FakeFetcher()
    store = SharedMemoryStore()
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=one"]
    fetcher.outcomes["example.com"] = Fetched(ENFORCE)
    options = dict(lookup_timeout=10.0, dane=False, fleet_lease=lease,
                   timing=RefreshTiming(recheck_after=3600, force_fetch_after=86400))
    options.update(settings)
    services = [PolicyService(dns=dns, fetcher=fetcher, store=store, clock=clock,
                              settings=ServiceSettings(**options)) for _ in range(n)]
    return services, store, dns, fetcher, clock


def test_the_test_store_is_a_fleet_store():
    services, store, *_ = fleet(1)
    assert isinstance(store, FleetStore) and services[0].fleet is not None
    assert PolicyService(dns=FakeDns(), fetcher=FakeFetcher(), store=MemoryStore()).fleet is None  # local store
    assert fleet(1, lease=0)[0][0].fleet is None  # switched off


async def test_a_fleet_resolves_a_domain_once():
    services, store, dns, fetcher, _ = fleet()
    fetcher.delay = 0.1
    verdicts = await asyncio.gather(*(services[i % 3].lookup("example.com") for i in range(900)))
    assert {(v.mode, v.policy_id) for v in verdicts} == {("enforce", "one")}
    assert (dns.calls, fetcher.calls) == (1, 1)
    assert sum(s.counters["fleet_leads"] for s in services) == 1
    assert sum(s.counters["fleet_follows"] for s in services) == 2
    assert store.leases == {}  # released: the entry in the store is the result


async def test_no_policy_is_found_once_and_published():
    services, store, dns, fetcher, clock = fleet()
    dns.delay = 0.1
    verdicts = await asyncio.gather(*(services[i % 3].lookup("nopolicy.example") for i in range(30)))
    assert all(v.policy is None and v.source == "none" for v in verdicts)
    assert dns.calls == 1 and fetcher.calls == 0
    followers = [s for s in services if s.counters["fleet_follows"]]
    assert len(followers) == 2
    for service in followers:
        verdict = service.cached_verdict("nopolicy.example", clock.now)
        assert verdict is not None and "another daemon of the fleet" in verdict.notes[0]
    (owner, outcome, _), = store.leases.values()
    assert owner == "" and Outcome.decode(outcome).kind == "none"


async def test_sts_b_11_a_failed_fetch_is_held_back_by_every_daemon():
    services, store, dns, fetcher, clock = fleet()
    fetcher.outcomes.clear()  # HTTP 404
    fetcher.delay = 0.05
    verdicts = await asyncio.gather(*(services[i % 3].lookup("example.com") for i in range(30)))
    assert {v.failure for v in verdicts} == {ResultType.STS_POLICY_FETCH_ERROR}
    assert fetcher.calls == 1
    assert all(s.failures["example.com"].policy_id == "one" for s in services)
    clock.now += 100  # within fail_retry: nobody fetches again, even asked afresh
    for service in services:
        service.negatives.clear()
    await asyncio.gather(*(s.lookup("example.com") for s in services))
    assert fetcher.calls == 1


async def test_a_daemon_whose_lease_expires_unreleased_is_taken_over():
    services, store, dns, fetcher, _ = fleet(2, lease=0.4)
    store.claim("example.com", "a daemon that died", 0.3)  # held, never released nor published
    started = time.monotonic()
    verdict = await services[0].lookup("example.com")
    waited = time.monotonic() - started
    assert verdict.mode == "enforce" and fetcher.calls == 1
    assert 0.25 <= waited < 2.0


async def test_a_cancelled_leader_lets_the_next_daemon_take_over_at_once():
    services, store, dns, fetcher, _ = fleet(2, lease=5.0)
    fetcher.delay = 0.3
    asker = asyncio.ensure_future(services[0].lookup("example.com"))
    await asyncio.sleep(0.05)
    assert fetcher.calls == 1
    asker.cancel()  # its only asker gone, the leader's resolution is cancelled (not a refresh)
    await asyncio.gather(asker, return_exceptions=True)
    await asyncio.sleep(0.05)  # the release runs in the background
    assert services[0].counters["resolutions_cancelled"] == 1 and store.leases == {}
    started = time.monotonic()
    verdict = await services[1].lookup("example.com")
    assert verdict.mode == "enforce" and fetcher.calls == 2 and time.monotonic() - started < 2.0


async def test_a_store_that_fails_leaves_every_daemon_resolving_on_its_own():
    services, store, dns, fetcher, _ = fleet()
    store.down = True
    verdicts = await asyncio.gather(*(s.lookup("example.com") for s in services))
    assert all(v.mode == "enforce" for v in verdicts)
    assert fetcher.calls == 3 and all(s.counters["fleet_store_errors"] == 1 for s in services)


async def test_sts_d_5_a_recheck_done_by_one_daemon_serves_them_all():
    services, store, dns, fetcher, clock = fleet()
    await asyncio.gather(*(s.lookup("example.com") for s in services))
    assert (dns.calls, fetcher.calls) == (1, 1)
    clock.now += 4000  # past recheck_after: every daemon's refresher finds the id re-check due
    verdicts = await asyncio.gather(*(s.resolve("example.com") for s in services))
    assert all(v.mode == "enforce" for v in verdicts)
    assert (dns.calls, fetcher.calls) == (2, 1)
    assert {s.entries["example.com"].entry.checked_at for s in services} == {clock.now}


async def test_an_older_fetch_never_replaces_a_newer_policy_in_the_store():
    services, store, dns, fetcher, clock = fleet(2)
    await services[0].lookup("example.com")
    old = store.get("example.com")
    newer = old.__class__(**{**old.__dict__, "policy_id": "two", "fetched_at": old.fetched_at + 10})
    store.put(newer)
    store.put(old)
    assert store.get("example.com").policy_id == "two"


@pytest.mark.parametrize("text", ["", "{", "[]", '{"kind": "maybe", "until": 1, "note": ""}',
                                  '{"kind": "none", "until": "x", "note": ""}',
                                  '{"kind": "none", "until": 1, "note": "", "failure": "bogus"}',
                                  '{"kind": "none", "until": 1, "note": "", "policy_id": 5}'])
def test_an_outcome_this_version_cannot_read_is_ignored(text):
    assert Outcome.decode(text) is None


def test_outcomes_round_trip_and_bound_their_note():
    outcome = Outcome("kept", 123.5, "x" * 2000, ResultType.STS_WEBPKI_INVALID, "id1")
    back = Outcome.decode(outcome.encode())
    assert back.kind == "kept" and back.until == 123.5 and len(back.note) == 500
    assert back.failure is ResultType.STS_WEBPKI_INVALID and back.policy_id == "id1"


async def test_sts_b_14_a_failed_refetch_keeps_the_cached_policy_on_every_daemon():
    services, store, dns, fetcher, clock = fleet()
    await asyncio.gather(*(s.lookup("example.com") for s in services))
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=two"]
    fetcher.outcomes.clear()  # the new policy cannot be fetched
    fetcher.delay = 0.05
    clock.now += 4000
    verdicts = await asyncio.gather(*(s.resolve("example.com") for s in services))
    assert fetcher.calls == 2  # the first fetch, and one refetch for the fleet
    assert {(v.policy_id, v.source, v.failure) for v in verdicts} == {
        ("one", "cache", ResultType.STS_POLICY_FETCH_ERROR)}
    assert {s.failures["example.com"].policy_id for s in services} == {"two"}


async def test_writes_that_fail_while_the_store_is_down_are_replayed_when_it_is_back(caplog):
    from mxsec.daemon.refresh import Refresher

    services, store, dns, fetcher, clock = fleet(1)
    service = services[0]
    store.down = True
    dns.txt_records["_mta-sts.other.example"] = ["v=STSv1; id=o1"]
    fetcher.outcomes["other.example"] = Fetched(ENFORCE)
    with caplog.at_level("INFO", logger="mxsec.daemon"):
        for domain in ("example.com", "other.example"):
            assert (await service.lookup(domain)).mode == "enforce"  # served although nothing could be stored
        assert list(service.unsaved) == ["example.com", "other.example"]
        assert service.table_sizes()["unsaved"] == 2
        store.down = False
        await Refresher(service).run_once()
    assert service.unsaved == {} and {e.domain for e in store.load_all()} == {"example.com", "other.example"}
    changes = [r.getMessage() for r in caplog.records if "cache store" in r.getMessage()]
    assert changes == ["cache store unavailable; serving from memory, writes kept for later",
                       "cache store available again", "policy writes replayed to the cache store"]
    assert service.counters["store_errors"] >= 4  # every failed call counted, one line said


async def test_a_new_policy_stored_by_one_daemon_reaches_the_others_at_once():
    services, store, dns, fetcher, clock = fleet()
    for service in services:
        service.start_listening()
    await asyncio.gather(*(s.lookup("example.com") for s in services))
    # the domain publishes a new policy; one daemon's refresher finds it first
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=two"]
    fetcher.outcomes["example.com"] = Fetched(ENFORCE.replace(b"mail.example.com", b"mx2.example.com"))
    clock.now += 4000
    assert (await services[0].resolve("example.com")).policy_id == "two"
    await asyncio.sleep(0.05)  # the announcement is taken in the background
    for service in services[1:]:
        verdict = service.cached_verdict("example.com", clock.now)
        assert verdict.policy_id == "two" and verdict.policy.mx == ("mx2.example.com",)
        assert service.counters["fleet_announced"] == 1
    assert services[0].counters["fleet_announced"] == 0  # its own announcement is not read back
    assert fetcher.calls == 2
    for service in services:
        await service.aclose()
    assert store._listeners == []


async def test_an_announcement_for_a_domain_a_daemon_does_not_serve_costs_nothing():
    services, store, dns, fetcher, clock = fleet(2)
    for service in services:
        service.start_listening()
    before = store.calls
    await services[0].lookup("example.com")
    await asyncio.sleep(0.05)
    assert services[1].entries == {} and services[1].counters["fleet_announced"] == 0
    assert store.calls - before == 6  # read, claim, read, write, announce, release: nothing by the other daemon
    for service in services:
        await service.aclose()


async def test_an_outcome_is_never_held_longer_than_this_daemons_own_settings():
    services, store, dns, fetcher, clock = fleet(1, negative_ttl=300.0, fail_retry=300.0)
    forged = Outcome("none", clock.now + 10 * 365 * 86400, "forged: no policy for ten years")
    store.leases["example.com"] = ("", forged.encode(), time.monotonic() + 60)
    verdict = await services[0].lookup("example.com")
    assert verdict.policy is None and verdict.expires_at <= clock.now + 300


def test_a_shared_store_with_a_local_copy_starts_from_the_copy_when_it_is_down(tmp_path, caplog):
    from mxsec.storage.mirror import MirroredStore
    from mxsec.storage.sqlite import SqliteStore

    copy_path = str(tmp_path / "copy.sqlite3")
    shared = SharedMemoryStore()
    store = MirroredStore(shared, SqliteStore(copy_path))
    assert isinstance(store, FleetStore) and store.claim("x.example", "me", 5).held  # the shared store's leases
    dns, fetcher = FakeDns(), FakeFetcher()
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=one"]
    fetcher.outcomes["example.com"] = Fetched(ENFORCE)
    settings = ServiceSettings(dane=False)
    first = PolicyService(dns=dns, fetcher=fetcher, store=store, settings=settings)
    assert asyncio.run(first.lookup("example.com")).mode == "enforce"
    assert shared.get("example.com") is not None  # written to both
    store.close()
    shared.down = True  # the shared cache is down when the daemon starts again
    again = MirroredStore(shared, SqliteStore(copy_path))
    restarted = PolicyService(dns=FakeDns(), fetcher=FakeFetcher(), store=again, settings=settings)
    with caplog.at_level("ERROR", logger="mxsec.storage"):
        assert restarted.load() == 1
    assert "starting from its local copy" in caplog.text
    assert restarted.cached_verdict("example.com").mode == "enforce"
    again.close()


def test_the_local_copy_is_written_once_per_version_of_a_policy_read_from_the_shared_store(tmp_path):
    """A follower reads the same entry many times while it waits; the copy gets it once, and again when it
    changes."""
    from mxsec.storage.base import CacheEntry
    from mxsec.storage.mirror import MirroredStore
    from mxsec.storage.sqlite import SqliteStore

    class CountingCopy(SqliteStore):
        writes = 0

        def put(self, entry):
            type(self).writes += 1
            super().put(entry)

    shared = SharedMemoryStore()
    store = MirroredStore(shared, CountingCopy(str(tmp_path / "copy.sqlite3")))
    entry = CacheEntry(domain="example.com", policy_id="one", body=ENFORCE.decode() if isinstance(ENFORCE, bytes)
                       else ENFORCE, fetched_at=1000.0, expires_at=90000.0, checked_at=1000.0, mode="enforce")
    shared.put(entry)  # stored by another daemon
    for _ in range(20):
        assert store.get("example.com") is not None
    assert CountingCopy.writes == 1
    shared.put(CacheEntry(**{**entry.__dict__, "checked_at": 2000.0}))  # rechecked by the other daemon
    store.get("example.com")
    store.get("example.com")
    assert CountingCopy.writes == 2
    assert store.copy.get("example.com").checked_at == 2000.0
    store.close()


async def test_one_log_line_per_outage_whether_a_lease_or_a_write_noticed_it(caplog):
    """The fleet's lease calls and the policy reads and writes report to one record of the store's health:
    an outage is one line down and one line back, and every failed call is counted once."""
    services, store, dns, fetcher, _ = fleet(1)
    service = services[0]
    store.down = True
    with caplog.at_level("INFO", logger="mxsec.daemon"):
        assert (await service.lookup("example.com")).mode == "enforce"  # the claim fails, then the write
        assert not service.store_ok
        store.down = False
        dns.txt_records["_mta-sts.other.example"] = ["v=STSv1; id=o1"]
        fetcher.outcomes["other.example"] = Fetched(ENFORCE)
        assert (await service.lookup("other.example")).mode == "enforce"
    lines = [r.getMessage() for r in caplog.records if "store" in r.getMessage() or "lease" in r.getMessage()]
    assert lines.count("cache store unavailable; serving from memory, writes kept for later") == 1
    assert lines.count("cache store available again") == 1
    assert not any("fleet leases" in line for line in lines)
    assert service.store_ok and service.counters["store_errors"] >= 2 and service.counters["fleet_store_errors"] == 1


async def test_a_waiting_daemon_takes_the_policy_as_soon_as_the_holder_announces_it():
    """The pauses between claims grow to 250 ms; the holder's announcement ends the pause at once, so a
    follower answers right after the leader instead of at its next poll."""
    services, store, dns, fetcher, _ = fleet(2)
    for service in services:
        service.start_listening()
    fetcher.delay = 0.33  # the follower's polls would come at about 0.02, 0.06, 0.14, 0.30 and 0.55 s
    loop = asyncio.get_running_loop()
    done: dict[int, float] = {}

    async def ask(i: int) -> None:
        assert (await services[i].lookup("example.com")).mode == "enforce"
        done[i] = loop.time()

    leader = asyncio.ensure_future(ask(0))
    await asyncio.sleep(0.01)
    await asyncio.gather(leader, ask(1))
    assert fetcher.calls == 1 and services[1].counters["fleet_follows"] == 1
    assert done[1] - done[0] < 0.1, done  # woken, not polled at 0.55 s
    assert services[1]._waiting == {}
