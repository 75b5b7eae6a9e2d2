"""`mxsec daemon` end to end: a real daemon process, raw netstrings, DNS and HTTPS from a local fake world.

The fake world runs in a background thread on 127.0.82.1 (DNS, random port) and 127.0.82.2:443 (policy hosts,
certificates from its own CA passed as --ca-file).
"""

from __future__ import annotations

import concurrent.futures
import signal
import time
import urllib.request

import pytest

from mxsec.daemon.socketmap import encode
from mxsec.testing.fakeworld import FakeWorld, PolicySpec, WorldThread, policy_text

from .daemonproc import Client, Daemon, free_port

pytestmark = pytest.mark.integration

#: strict MX names (the default): the MX host names that match the policy, not its patterns (docs/daemon.md)
ENFORCE = "OK secure match=mx.enforce.test:a.mx.enforce.test servername=hostname"


def build_world(world: FakeWorld) -> None:
    world.add_domain("enforce.test", txt=["v=STSv1; id=1"],
                     policy=PolicySpec(body=policy_text(["mx.enforce.test", "*.mx.enforce.test"])),
                     mx=["mx.enforce.test", "a.mx.enforce.test", "b.c.mx.enforce.test"])
    world.add_domain("testing.test", txt=["v=STSv1; id=1"],
                     policy=PolicySpec(body=policy_text(["mx.testing.test"], mode="testing")), mx=["mx.testing.test"])
    world.add_domain("none.test", txt=["v=STSv1; id=1"], policy=PolicySpec(body=policy_text([], mode="none")))
    world.add_domain("nopolicy.test")
    world.add_domain("redirect.test", txt=["v=STSv1; id=1"],
                     policy=PolicySpec(status=301, location="https://elsewhere.test/"))
    world.add_domain("split.test", txt=[["v=STSv1; ", "id=20240101"]],
                     policy=PolicySpec(body=policy_text(["mail.split.test"])), mx=["mail.split.test"])
    world.add_domain("badcert.test", txt=["v=STSv1; id=1"],
                     policy=PolicySpec(body=policy_text(["mx.badcert.test"]), cert="expired"))
    for i in range(40):
        world.add_domain(f"bulk{i}.test", txt=["v=STSv1; id=1"],
                         policy=PolicySpec(body=policy_text([f"mx.bulk{i}.test"])), mx=[f"mx.bulk{i}.test"])
    world.add_domain("flight.test", txt=["v=STSv1; id=1"],
                     policy=PolicySpec(body=policy_text(["mx.flight.test"]), delay=0.3), mx=["mx.flight.test"])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    fw = FakeWorld(dns=("127.0.82.1", 0), https=("127.0.82.2", 443),
                   state_dir=tmp_path_factory.mktemp("world"))
    build_world(fw)
    thread = WorldThread(fw)
    thread.start()
    yield fw
    thread.stop()


@pytest.fixture(scope="module")
def daemon(world, tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("daemon"), world=world).start()
    yield d
    d.stop()


def test_enforce_reply_exact(daemon):
    c = daemon.client()
    assert c.ask("enforce.test") == ENFORCE


def test_key_forms_case_trailing_dot_and_query_map(daemon):
    c = daemon.client()
    assert c.ask("ENFORCE.Test.") == ENFORCE
    assert c.ask("enforce.test", "QUERY") == ENFORCE


def test_notfound_for_testing_none_and_no_policy(daemon):
    c = daemon.client()
    for domain in ("testing.test", "none.test", "nopolicy.test", "[192.0.2.1]", ".enforce.test"):
        assert c.ask(domain) == "NOTFOUND ", domain


def test_ec_9_redirect_is_fetch_failure_no_policy(daemon):
    assert daemon.client().ask("redirect.test") == "NOTFOUND "


def test_sts_b_4_expired_policy_host_certificate_no_policy(daemon):
    assert daemon.client().ask("badcert.test") == "NOTFOUND "


def test_ec_11_multi_string_txt_record(daemon):
    assert daemon.client().ask("split.test") == "OK secure match=mail.split.test servername=hostname"


def test_sts_a_14_bracketed_next_hop_uses_host_policy(daemon):
    assert daemon.client().ask("[enforce.test]:587") == ENFORCE


def test_tlsrpt_dialect(daemon):
    reply = daemon.client().ask("enforce.test", "tlsrpt")
    assert reply.startswith(ENFORCE + " policy_type=sts policy_domain=enforce.test mx_host_pattern=mx.enforce.test")
    assert "{ policy_string = mx: *.mx.enforce.test }" in reply


def test_pipelined_requests_answered_in_order(daemon):
    c = daemon.client()
    domains = [f"bulk{i}.test" for i in range(40)] + ["nopolicy.test", "enforce.test"]
    c.send_raw(b"".join(encode(f"postfix {d}".encode()) for d in domains))
    replies = c.replies(len(domains))
    for domain, reply in zip(domains, replies):
        if domain.startswith("bulk"):
            assert reply == f"OK secure match=mx.{domain} servername=hostname"
    assert replies[-2:] == ["NOTFOUND ", ENFORCE]
    # and again, now all from memory, still in order
    c.send_raw(b"".join(encode(f"postfix {d}".encode()) for d in domains))
    assert c.replies(len(domains)) == replies


def test_perm_on_unknown_map_and_bad_domain_connection_kept(daemon):
    c = daemon.client()
    assert c.ask("enforce.test", "nosuchmap").startswith("PERM ")
    assert c.ask("bad_domain!.test").startswith("PERM ")
    assert c.ask("enforce.test") == ENFORCE


def test_perm_on_garbage_closes_only_that_client(daemon):
    other = daemon.client()
    bad = daemon.client()
    bad.send_raw(b"GET / HTTP/1.0\r\n\r\n")
    assert bad.replies(1)[0].startswith("PERM ")
    assert bad.closed_by_peer()
    assert other.ask("enforce.test") == ENFORCE


def test_perm_on_oversized_netstring(daemon):
    c = daemon.client()
    c.send_raw(b"999999:postfix ")
    assert c.replies(1)[0].startswith("PERM ")
    assert daemon.client().ask("enforce.test") == ENFORCE


def test_single_flight_many_clients_one_txt_one_fetch(daemon, world):
    world.reset_stats()

    def ask(_):
        c = daemon.client()
        try:
            return c.ask("flight.test")
        finally:
            c.close()

    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        replies = list(pool.map(ask, range(300)))
    assert set(replies) == {"OK secure match=mx.flight.test servername=hostname"}
    assert world.stats.queries("_mta-sts.flight.test", "TXT") == 1
    assert world.stats.requests_for("mta-sts.flight.test") == 1


def test_cached_answers_do_not_wait_for_a_dead_network(daemon, world):
    c = daemon.client()
    assert c.ask("bulk1.test").startswith("OK secure")
    world.set_failure("_mta-sts.bulk1.test", "drop")
    try:
        started = time.perf_counter()
        assert c.ask("bulk1.test").startswith("OK secure")
        assert time.perf_counter() - started < 0.5
    finally:
        world.set_failure("_mta-sts.bulk1.test", None)


def test_kill_9_under_load_then_restart_serves_cached_policies(world, tmp_path):
    d = Daemon(tmp_path, world=world).start()
    domains = [f"bulk{i}.test" for i in range(40)]
    c = d.client()
    c.send_raw(b"".join(encode(f"postfix {x}".encode()) for x in domains))
    assert all(r.startswith("OK secure") for r in c.replies(40))
    # keep load on while killing
    load = d.client()
    load.send_raw(b"".join(encode(f"postfix {x}".encode()) for x in domains * 50))
    d.kill9()
    # the network is now down: only the cache can answer
    for x in domains:
        world.set_failure("_mta-sts." + x, "servfail")
        world.set_policy(x, PolicySpec(status=500))
    try:
        d2 = Daemon(tmp_path, world=world, cache=d.cache).start()
        try:
            c2 = d2.client()
            c2.send_raw(b"".join(encode(f"postfix {x}".encode()) for x in domains))
            replies = c2.replies(40)
            assert replies == [f"OK secure match=mx.{x} servername=hostname" for x in domains]
            loaded = [r for r in d2.log_records() if r.get("msg") == "cache loaded"]
            assert loaded and loaded[0]["policies"] >= 40
        finally:
            d2.stop()
    finally:
        for i, x in enumerate(domains):
            world.set_failure("_mta-sts." + x, None)
            world.set_policy(x, PolicySpec(body=policy_text([f"mx.{x}"])))


def test_listeners_ipv6_and_unix_socket(world, tmp_path):
    port6 = free_port("::1")
    sock_path = str(tmp_path / "mxsec.sock")
    d = Daemon(tmp_path, world=world, cache="memory://",
               listen=[f"[::1]:{port6}", f"unix:{sock_path}"]).start()
    try:
        c6 = Client("::1", port6)
        assert c6.ask("enforce.test") == ENFORCE
        cu = Client(path=sock_path)
        assert cu.ask("enforce.test") == ENFORCE
    finally:
        assert d.stop() == 0


def test_sighup_reload_adds_zone_and_sigterm_exits_cleanly(world, tmp_path):
    config = tmp_path / "mxsec.toml"
    config.write_text("[daemon]\n")
    d = Daemon(tmp_path, world=world, cache="memory://", config=config).start()
    try:
        c = d.client()
        assert c.ask("testing.test", "strict").startswith("PERM ")
        config.write_text("[daemon.zones.strict]\nstrict_testing = true\n")
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "configuration reloaded" not in d.log_text():
            time.sleep(0.05)
        assert c.ask("testing.test", "strict") == "OK secure match=mx.testing.test servername=hostname"
        assert c.ask("testing.test") == "NOTFOUND "
    finally:
        code = d.stop()
    assert code == 0
    assert any(r.get("msg") == "stopped" for r in d.log_records())


def test_metrics_endpoint(world, tmp_path):
    mport = free_port()
    d = Daemon(tmp_path, world=world, cache="memory://",
               extra=["--metrics-listen", f"127.0.0.1:{mport}"]).start()
    try:
        c = d.client()
        c.ask("enforce.test")
        c.ask("enforce.test")
        c.ask("redirect.test")
        c.ask("enforce.test", "nosuchmap")
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
        assert 'mxsec_socketmap_replies_total{kind="ok"} 2.0' in body
        assert 'mxsec_socketmap_replies_total{kind="perm"} 1.0' in body
        assert 'mxsec_policy_fetches_total{outcome="ok"} 1.0' in body
        assert 'mxsec_policy_fetches_total{outcome="sts-policy-fetch-error"} 1.0' in body
        assert "mxsec_socketmap_latency_seconds_bucket" in body
    finally:
        d.stop()


def test_logs_are_json_lines(daemon):
    records = daemon.log_records()
    assert records and all("ts" in r and "level" in r and "msg" in r for r in records)
    assert any(r["msg"] == "listening" for r in records)
