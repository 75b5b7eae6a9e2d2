"""`mxsec daemon` under attack: a real daemon process on 127.0.0.1, a fake DNS that never answers the
attackers' names (docs/daemon.md, "Limits").

* starving: connections pipelining thousands of requests for names whose DNS never answers used to fill the
  shared pool of 256 resolutions, and a new `enforce` domain then got `NOTFOUND` (a downgrade) once the
  lookup budget ran out; the daemon also grew to hundreds of MB. Now: TEMP beyond 100 unanswered requests per
  connection, a fair share of the pool per connection, and the new domain gets its `OK secure` reply.
* lockout: connections holding half a netstring used to fill the connection cap and every new connection,
  Postfix's included, was reset. Now the least useful connection makes room, also under a 1,024 open-files
  limit.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request

import pytest

from mxsec.daemon.server import FD_RESERVE
from mxsec.daemon.socketmap import encode
from mxsec.testing.fakeworld import FakeWorld, PolicySpec, WorldThread, policy_text

from .daemonproc import Daemon, free_port

pytestmark = pytest.mark.integration

ENFORCE = "OK secure match=mx.enforce.test servername=hostname"
ATTACKERS = 10
PER_ATTACKER = 1000  # 10,000 requests: the old shared pool of 256 was full for minutes


def attack_names(conn: int) -> list[str]:
    return [f"a{conn}-{i}.attack.test" for i in range(PER_ATTACKER)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    fw = FakeWorld(dns=("127.0.92.1", 0), https=("127.0.92.2", 443), state_dir=tmp_path_factory.mktemp("world"))
    fw.add_domain("enforce.test", txt=["v=STSv1; id=1"], policy=PolicySpec(body=policy_text(["mx.enforce.test"])),
                  mx=["mx.enforce.test"])
    for c in range(ATTACKERS):
        for name in attack_names(c):
            fw.set_failure(name, "drop")  # never answered, whatever the type
            fw.set_failure("_mta-sts." + name, "drop")
    thread = WorldThread(fw)
    thread.start()
    yield fw
    thread.stop()


def start(tmp_path, world, daemon_toml: str = "", prefix=None):
    mport = free_port()
    config = tmp_path / "mxsec.toml"
    config.write_text(f'[daemon]\nlookup_timeout = 10.0\n{daemon_toml}\n[metrics]\nlisten = "127.0.0.1:{mport}"\n')
    d = Daemon(tmp_path, world=world, cache="memory://", config=config, prefix=prefix).start()
    return d, mport


def metrics(mport: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_flooding_connections_cannot_downgrade_a_new_enforce_domain(world, tmp_path):
    d, mport = start(tmp_path, world)
    attackers = []
    try:
        for c in range(ATTACKERS):
            s = socket.create_connection((d.host, d.port), timeout=10)
            s.sendall(b"".join(encode(f"postfix {n}".encode()) for n in attack_names(c)))
            attackers.append(s)  # never reads its answers
        time.sleep(1.0)
        m = metrics(mport)
        # 100 unanswered per connection at most; the other 900 of each were answered TEMP at once
        assert m["mxsec_socketmap_pending_cap_hits_total"] >= ATTACKERS * (PER_ATTACKER - 100) * 0.9, m
        assert m['mxsec_resolution_slots{state="busy"}'] >= 200  # the pool is busy with the attack...
        assert m['mxsec_dns_queries_total{kind="sent"}'] >= 200  # the attack's lookups reached the resolver
        c = d.client()
        c.sock.settimeout(15)
        started = time.monotonic()
        first = c.ask("enforce.test")
        took = time.monotonic() - started
        # ...yet the new domain gets its secure answer, never "no policy" (the old daemon: NOTFOUND after 10 s)
        assert first == ENFORCE or first.startswith("TEMP "), first
        assert took < 9.0, took
        deadline = time.monotonic() + 15
        reply = first
        while reply != ENFORCE and time.monotonic() < deadline:
            time.sleep(0.5)
            reply = c.ask("enforce.test")
        assert reply == ENFORCE
        rss = rss_mb(d.proc.pid)
        assert rss < 200, rss
        assert m["mxsec_connections"] >= ATTACKERS
        # the attackers go away: the work only they waited for is cancelled, the pool drains
        for s in attackers:
            s.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = metrics(mport)
            if m['mxsec_resolution_slots{state="busy"}'] == 0 and m['mxsec_resolution_slots{state="waiting"}'] == 0:
                break
            time.sleep(0.2)
        assert m['mxsec_resolution_slots{state="busy"}'] == 0, m
        assert m["mxsec_resolutions_cancelled_total"] >= 100, m
        # log volume stays small: client-caused lines are rate-limited
        assert len(d.log_records()) < 300, len(d.log_records())
    finally:
        for s in attackers:
            s.close()
        d.stop()


def hold_connections(host: str, port: int, n: int, data: bytes) -> list[socket.socket]:
    held = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=10)
        if data:
            s.sendall(data)
        held.append(s)
    return held


@pytest.mark.parametrize("data", [b"19:postfix exa", b""], ids=["half-netstring", "idle"])
def test_stalled_connections_beyond_the_cap_do_not_lock_a_new_client_out(world, tmp_path, data):
    d, mport = start(tmp_path, world, "max_connections = 50\npartial_timeout = 60.0\nidle_timeout = 60.0\n")
    held = []
    try:
        held = hold_connections(d.host, d.port, 60, data)
        c = d.client()
        assert c.ask("enforce.test") == ENFORCE
        m = metrics(mport)
        reason = "partial" if data else "idle"
        assert m[f'mxsec_socketmap_evictions_total{{reason="{reason}"}}'] >= 11, m
        assert m["mxsec_connections"] <= 50
        assert any(r.get("msg") == "connection limit reached; closed a connection to make room"
                   for r in d.log_records())
    finally:
        for s in held:
            s.close()
        d.stop()


def test_1025th_half_netstring_connection_at_the_default_cap(world, tmp_path):
    d, mport = start(tmp_path, world)
    held = []
    try:
        held = hold_connections(d.host, d.port, 1025, b"19:postfix exa")
        c = d.client()
        assert c.ask("enforce.test") == ENFORCE
        assert metrics(mport)['mxsec_socketmap_evictions_total{reason="partial"}'] >= 2
    finally:
        for s in held:
            s.close()
        d.stop()


def test_1100_connections_under_a_1024_open_files_limit(world, tmp_path):
    d, mport = start(tmp_path, world, prefix=["prlimit", "--nofile=1024:1024", "--"])
    held = []
    try:
        assert any(r.get("msg", "").startswith("too few file descriptors") for r in d.log_records())
        held = hold_connections(d.host, d.port, 1100, b"19:postfix exa")
        c = d.client()
        assert c.ask("enforce.test") == ENFORCE
        m = metrics(mport)
        assert m["mxsec_connections"] <= 1024 - FD_RESERVE
        assert m['mxsec_socketmap_evictions_total{reason="partial"}'] >= 1100 - (1024 - FD_RESERVE)
    finally:
        for s in held:
            s.close()
        d.stop()


def test_idle_and_half_netstring_connections_time_out(world, tmp_path):
    d, mport = start(tmp_path, world, "partial_timeout = 0.5\nidle_timeout = 1.5\n")
    try:
        half = d.client()
        half.send_raw(b"19:postfix exa")
        idle = d.client()
        assert idle.ask("enforce.test") == ENFORCE
        assert half.closed_by_peer(3.0)
        assert idle.closed_by_peer(4.0)
        m = metrics(mport)
        assert m['mxsec_socketmap_timeouts_total{kind="partial"}'] == 1
        assert m['mxsec_socketmap_timeouts_total{kind="idle"}'] == 1
        assert d.client().ask("enforce.test") == ENFORCE  # a client that comes back is served as before
    finally:
        d.stop()
