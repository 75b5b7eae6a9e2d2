"""A fleet of `mxsec daemon` processes on one Redis or PostgreSQL store (docs/fleet.md), with real servers.

Three daemons share a store started by the tests and one fake world whose DNS and HTTPS counters show who did
the work: 1,000 concurrent queries for one uncached domain, spread over the three, cost exactly one TXT
look-up and one policy fetch; a daemon killed while it fetches is taken over by another; a store stopped in
the middle and started again costs no wrong answer, and the policies written meanwhile reach it afterwards.
The lease operations themselves are checked on both servers too.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.request
from pathlib import Path

import pytest

from mxsec.daemon.socketmap import encode
from mxsec.storage import open_store
from mxsec.storage.base import CacheEntry
from mxsec.testing.fakeworld import FakeWorld, PolicySpec, policy_text

from .conftest import running_world, unique_domain
from .daemonproc import Daemon, free_port
from .servers import postgres_server, redis_server  # noqa: F401 - session fixtures used by name

pytestmark = pytest.mark.integration

_databases = itertools.count(1)


@pytest.fixture(params=["redis", "postgres"])
def store(request):
    """(kind, URL, server) of a fresh store on a running server."""
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.start()
        server.flush()
        return "redis", server.url, server
    server = request.getfixturevalue("postgres_server")
    server.start()
    return "postgres", server.create_database(f"mxsec_fleet_{next(_databases)}"), server


@pytest.fixture(scope="module")
def world():
    with running_world(https_port=443) as started:  # the daemons fetch policies on port 443
        yield started


def add_policy_domain(world: FakeWorld, prefix: str, delay: float = 0.0) -> str:
    domain = unique_domain(prefix)
    world.add_domain(domain, txt=["v=STSv1; id=1"], mx=[f"mx.{domain}"],
                     policy=PolicySpec(body=policy_text([f"mx.{domain}"]), delay=delay))
    return domain


def start_fleet(tmp: Path, world: FakeWorld, url: str, n: int = 3, lease: float = 20.0,
                more: dict[int, str] | None = None) -> list:
    """``n`` daemons on ``url``; ``more[i]`` is TOML added to daemon ``i``'s configuration."""
    daemons = []
    for i in range(n):
        state = tmp / f"d{i}"
        state.mkdir()
        config = state / "fleet.toml"
        config.write_text(f"[cache]\nfleet_lease = {lease}\n" + (more or {}).get(i, ""))
        metrics_port = free_port()
        daemon = Daemon(state, world=world, cache=url, config=config,
                        extra=["--metrics-listen", f"127.0.0.1:{metrics_port}"])
        daemon.metrics_port = metrics_port
        daemons.append(daemon.start())
    return daemons


def metric(daemon, line_start: str) -> float:
    """The value of the first metrics line of ``daemon`` that starts with ``line_start``."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=10).read().decode()
    return next(float(line.split()[-1]) for line in body.splitlines() if line.startswith(line_start))


async def ask(port: int, domain: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode(f"postfix {domain}".encode()))
        await writer.drain()
        data = b""
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), 40)
            if not chunk:
                raise ConnectionError(f"closed after {data!r}")
            data += chunk
            length, _, rest = data.partition(b":")
            if length.isdigit() and len(rest) > int(length):
                return rest[: int(length)].decode()
    finally:
        writer.close()


def ask_all(pairs: list[tuple[int, str]]) -> list[str]:
    async def run() -> list[str]:
        return list(await asyncio.gather(*(ask(port, domain) for port, domain in pairs)))

    return asyncio.run(run())


def expected(domain: str) -> str:
    return f"OK secure match=mx.{domain} servername=hostname"


def stop_all(daemons: list) -> None:
    for daemon in daemons:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()


def test_leases_on_a_real_server(store):
    kind, url, _ = store
    a, b = open_store(url), open_store(url)
    try:
        assert a.claim("lease.test", "a", 0.5).held
        assert b.claim("lease.test", "b", 0.5) == b.claim("lease.test", "b", 0.5)  # busy, nothing published
        assert not b.claim("lease.test", "b", 0.5).held
        b.release("lease.test", "b")  # not the holder: nothing happens
        b.publish("lease.test", "b", "by b", 5)
        assert not b.claim("lease.test", "b", 0.5).held and b.claim("lease.test", "b", 0.5).outcome is None
        a.publish("lease.test", "a", '{"kind": "none"}', 0.6)
        assert b.claim("lease.test", "b", 0.5).outcome == '{"kind": "none"}'
        time.sleep(0.8)  # the outcome expires: the lease can be taken again
        assert b.claim("lease.test", "b", 0.3).held
        b.release("lease.test", "b")
        assert a.claim("lease.test", "a", 0.3).held  # released: free at once
        time.sleep(0.5)
        assert b.claim("lease.test", "b", 0.3).held  # a's lease expired unreleased
        # leases never show up as policies
        assert a.load_all() == [] and a.get("lease.test") is None
    finally:
        a.close()
        b.close()


def test_an_older_fetch_never_overwrites_a_newer_policy(store):
    kind, url, _ = store
    a = open_store(url)
    try:
        newer = CacheEntry("cas.test", "two", "version: STSv1\n", 2000.0, 90000.0, 2000.0, "enforce")
        older = CacheEntry("cas.test", "one", "version: STSv1\n", 1000.0, 90000.0, 3000.0, "enforce")
        a.put(newer)
        a.put(older)
        a.put_many([older])
        assert a.get("cas.test").policy_id == "two"
        rechecked = CacheEntry("cas.test", "two", "version: STSv1\n", 2000.0, 90000.0, 5000.0, "enforce")
        a.put(rechecked)  # the same fetch, checked again: written
        assert a.get("cas.test").checked_at == 5000.0
    finally:
        a.close()


def test_three_daemons_1000_queries_one_txt_lookup_one_fetch(store, world, tmp_path):
    kind, url, _ = store
    domain = add_policy_domain(world, f"fleet-{kind}", delay=0.5)
    daemons = start_fleet(tmp_path, world, url)
    try:
        replies = ask_all([(daemons[i % 3].port, domain) for i in range(1000)])
        assert set(replies) == {expected(domain)}
        assert world.stats.queries(f"_mta-sts.{domain}", "TXT") == 1
        assert world.stats.requests_for(f"mta-sts.{domain}") == 1
        # a domain without a policy: looked up once for the fleet too
        nopolicy = unique_domain(f"fleet-none-{kind}")
        world.add_domain(nopolicy, mx=[f"mx.{nopolicy}"])
        assert set(ask_all([(daemons[i % 3].port, nopolicy) for i in range(300)])) == {"NOTFOUND "}
        assert world.stats.queries(f"_mta-sts.{nopolicy}", "TXT") == 1
        leads = sum(metric(d, 'mxsec_fleet_resolutions_total{role="lead"}') for d in daemons)
        follows = sum(metric(d, 'mxsec_fleet_resolutions_total{role="follow"}') for d in daemons)
        assert leads == 2 and 1 <= follows <= 4  # one daemon led each domain; the others took its result
    finally:
        stop_all(daemons)


def test_a_daemon_killed_while_fetching_is_taken_over(store, world, tmp_path):
    kind, url, _ = store
    domain = add_policy_domain(world, f"fleet-kill-{kind}", delay=2.0)
    daemons = start_fleet(tmp_path, world, url, lease=2.0)
    try:
        async def leader_then_kill() -> None:
            pending = asyncio.ensure_future(ask(daemons[0].port, domain))
            for _ in range(200):
                if world.stats.requests_for(f"mta-sts.{domain}") == 1:
                    break
                await asyncio.sleep(0.02)
            daemons[0].kill9()  # holds the lease, never releases it
            await asyncio.gather(pending, return_exceptions=True)

        asyncio.run(leader_then_kill())
        started = time.monotonic()
        replies = ask_all([(daemons[1 + i % 2].port, domain) for i in range(100)])
        assert set(replies) == {expected(domain)}
        assert time.monotonic() - started < 15
        assert world.stats.requests_for(f"mta-sts.{domain}") == 2  # the dead one's, and one for the others
    finally:
        stop_all(daemons)


def test_a_store_stopped_and_started_again_costs_no_wrong_answer(store, world, tmp_path):
    kind, url, server = store
    before = add_policy_domain(world, f"fleet-out-a-{kind}")
    during = add_policy_domain(world, f"fleet-out-b-{kind}")
    after = add_policy_domain(world, f"fleet-out-c-{kind}")
    daemons = start_fleet(tmp_path, world, url)
    try:
        assert set(ask_all([(d.port, before) for d in daemons])) == {expected(before)}
        server.stop()
        replies = ask_all([(d.port, name) for d in daemons for name in (before, during)])
        assert replies == [expected(name) for _ in daemons for name in (before, during)]
        assert [metric(d, "mxsec_store_up ") for d in daemons] == [0, 0, 0]
        # a daemon restarted now starts from its local copy: it still enforces "before", whose policy host now
        # fails (a daemon without the copy would find no policy and answer NOTFOUND)
        world.set_policy(before, PolicySpec(status=503))
        daemons[1].stop()
        daemons[1].start()
        assert ask_all([(daemons[1].port, before)]) == [expected(before)]
        assert '"msg": "shared cache unreadable at start; starting from its local copy"' in daemons[1].log_text()
        world.set_policy(before, PolicySpec(body=policy_text([f"mx.{before}"])))
        server.start()
        # the next write that works replays the one that failed ("during")
        assert set(ask_all([(d.port, after) for d in daemons])) == {expected(after)}
        reader = open_store(url)
        try:
            for _ in range(50):  # the daemons write what they kept as soon as the store answers them again
                stored = {entry.domain for entry in reader.load_all()}
                if {during, after} <= stored:
                    break
                time.sleep(0.1)
        finally:
            reader.close()
        assert {during, after} <= stored
        if kind == "postgres":  # PostgreSQL keeps its data over the restart (the test Redis has no persistence)
            assert before in stored
        assert any('"msg": "cache store unavailable' in d.log_text() for d in daemons)
        assert [metric(d, "mxsec_store_up ") for d in daemons] == [1, 1, 1]
        assert metric(daemons[0], "mxsec_store_errors_total ") > 0
    finally:
        stop_all(daemons)
        if not server.running:
            server.start()


def test_one_tlsrpt_reporter_per_postgresql_database(postgres_server):  # noqa: F811
    from mxsec.storage.senderdb import SenderDB

    url = postgres_server.create_database(f"mxsec_sender_{next(_databases)}")
    first, second = SenderDB(url), SenderDB(url)
    try:
        assert first.take_sending_lease() and not second.take_sending_lease()
        first.close()  # the session ends: the lease goes with it (the server notices within moments)
        for _ in range(100):
            if second.take_sending_lease():
                break
            time.sleep(0.05)
        assert second.take_sending_lease()
    finally:
        first.close()
        second.close()


def test_a_new_policy_one_daemon_fetched_reaches_the_others_at_once(store, world, tmp_path):
    kind, url, _ = store
    domain = add_policy_domain(world, f"fleet-news-{kind}")
    # daemon 0 re-checks every second; the others would re-check only after an hour
    daemons = start_fleet(tmp_path, world, url, more={0: "[refresh]\ninterval = 1\nrecheck_after = 1\n"})
    try:
        assert set(ask_all([(d.port, domain) for d in daemons])) == {expected(domain)}
        world.set_txt(domain, ["v=STSv1; id=2"])
        world.set_policy(domain, PolicySpec(body=policy_text([f"mx.{domain}"], mode="testing")))
        new = "NOTFOUND "  # a testing policy: Postfix is told nothing (docs/daemon.md)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if ask_all([(d.port, domain) for d in daemons[1:]]) == [new, new]:
                break
            time.sleep(0.2)
        assert ask_all([(d.port, domain) for d in daemons]) == [new, new, new]
        assert world.stats.requests_for(f"mta-sts.{domain}") == 2  # the first fetch, daemon 0's refetch
    finally:
        stop_all(daemons)
