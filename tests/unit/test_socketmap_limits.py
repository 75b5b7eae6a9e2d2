"""SocketmapServer limits against misbehaving clients, in process on 127.0.0.1 (docs/daemon.md, "Limits"):
per-connection cap on unanswered requests, connection cap that makes room instead of refusing, idle and
partial-netstring timeouts, cancellation when a connection closes, rate-limited logs, memo sweep."""

import asyncio
import logging

import pytest

from mxsec.daemon.lograte import RateLimitedLog
from mxsec.daemon.replies import Zone
from mxsec.daemon.server import BUSY_REASON, SocketmapServer
from mxsec.daemon.service import PolicyService, ServiceSettings
from mxsec.daemon.socketmap import NetstringDecoder, encode
from mxsec.storage.memory import MemoryStore

from .test_service import ENFORCE, FakeFetcher, Outcome, SlowDns

ZONES = {"postfix": Zone("postfix"), "exim": Zone("exim")}
OK = "OK secure match=no-mx-host-matches-the-policy.invalid servername=hostname"  # no MX in the fake DNS


class Addr:
    kind, host, port, path = "tcp", "127.0.0.1", 0, None


async def start(settings=None, **kwargs):
    dns = SlowDns()
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=one"]
    fetcher = FakeFetcher()
    fetcher.outcomes["example.com"] = Outcome(ENFORCE)
    service = PolicyService(dns=dns, fetcher=fetcher, store=MemoryStore(),
                            settings=settings or ServiceSettings(lookup_timeout=5.0))
    server = SocketmapServer(service, ZONES, **kwargs)
    await server.listen(Addr())
    port = next(iter(server.servers.values())).sockets[0].getsockname()[1]
    return server, service, port


async def replies(reader, n, timeout=5.0):
    dec, out = NetstringDecoder(max_payload=1 << 16), []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError(f"closed after {len(out)} replies")
            out += dec.feed(data)
    return [p.decode() for p in out]


async def closed(reader, timeout=5.0):
    try:
        async with asyncio.timeout(timeout):
            return await reader.read(1) == b""
    except ConnectionResetError:
        return True


async def ask(port, domain="example.com", map_name="postfix"):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(encode(f"{map_name} {domain}".encode()))
    got = await replies(r, 1)
    w.close()
    return got[0]


async def test_requests_beyond_max_pending_answered_temp_in_order():
    server, service, port = await start(ServiceSettings(lookup_timeout=0.3), max_pending=10)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    await ask(port)  # example.com now cached (memo)
    batch = b"".join(encode(f"postfix n{i}.x.hang".encode()) for i in range(15))
    w.write(batch + encode(b"exim n99.x.hang") + encode(b"postfix example.com"))
    got = await replies(r, 17)
    assert all(g.startswith("TEMP policy lookup still running") for g in got[:10]), got[:10]
    assert got[10:15] == ["TEMP " + BUSY_REASON] * 5
    assert got[15].startswith("mode=temp ") and got[16] == OK  # Exim's dialect; order kept
    assert server.pending_cap_hits == 6 and server.reply_counts[2] >= 16
    assert service._pool.active <= 10
    w.close()
    await server.close(1)
    await service.aclose()


async def test_backlogged_connection_is_not_read_until_its_answers_go_out():
    server, service, port = await start(ServiceSettings(lookup_timeout=0.3), max_pending=4)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"".join(encode(f"postfix n{i}.x.hang".encode()) for i in range(4)))
    await asyncio.sleep(0.05)
    conn = next(iter(server.connections))
    assert conn.backlogged and conn.outstanding == 4
    w.write(encode(b"postfix example.com"))  # stays in the socket until the backlog is answered
    got = await replies(r, 5)
    assert got[4] == OK and not conn.backlogged
    w.close()
    await server.close(1)
    await service.aclose()


async def test_connection_cap_closes_a_stuck_connection_for_a_newcomer():
    server, service, port = await start(max_connections=5, partial_timeout=60.0)
    stuck = []
    for _ in range(5):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"19:postfix exa")  # half a netstring, then nothing
        stuck.append((r, w))
    await asyncio.sleep(0.05)
    assert len(server.connections) == 5
    assert await ask(port) == OK  # the sixth is served...
    assert server.evictions["partial"] == 1  # ...after the oldest stuck one was closed
    assert await closed(stuck[0][0], 1.0)
    busy = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
    for _, w in busy:
        w.write(encode(b"postfix a.x.hang"))
    await asyncio.sleep(0.05)
    assert await ask(port) == OK  # idle ones go before busy ones, then the busiest
    assert server.rejected_connections == 0 and len(server.connections) <= 5
    for _, w in stuck + busy:
        w.close()
    await server.close(1)
    await service.aclose()


async def test_partial_and_idle_timeouts_close_connections_but_not_active_ones():
    server, service, port = await start(partial_timeout=0.3, idle_timeout=0.8)
    pr, pw = await asyncio.open_connection("127.0.0.1", port)
    pw.write(b"19:postfix exa")
    ir, iw = await asyncio.open_connection("127.0.0.1", port)
    ar, aw = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await closed(pr, 2.0)
    assert 0.25 <= loop.time() - t0 < 1.5 and server.timeouts["partial"] == 1
    for _ in range(6):  # asks every 0.2 s: never idle
        aw.write(encode(b"postfix example.com"))
        assert (await replies(ar, 1))[0] == OK
        await asyncio.sleep(0.2)
    assert await closed(ir, 1.0) and server.timeouts["idle"] == 1
    aw.write(encode(b"postfix example.com"))
    assert (await replies(ar, 1))[0] == OK
    for w in (pw, iw, aw):
        w.close()
    await server.close(1)
    await service.aclose()


async def test_closing_the_connection_cancels_the_resolutions_it_alone_waited_for():
    server, service, port = await start()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"".join(encode(f"postfix n{i}.x.hang".encode()) for i in range(20)))
    await asyncio.sleep(0.05)
    assert len(service.inflight) == 20 and service.dns.running["x"] == 20
    w.close()
    for _ in range(100):
        if not service.inflight:
            break
        await asyncio.sleep(0.01)
    assert not service.inflight and service.dns.running["x"] == 0 and service._pool.active == 0
    assert service.counters["resolutions_cancelled"] == 20 and server.abandoned == 1
    await server.close(1)
    await service.aclose()


async def test_bad_netstring_logs_are_rate_limited(caplog):
    server, service, port = await start()
    caplog.set_level(logging.WARNING, logger="mxsec.daemon")
    for _ in range(40):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"garbage, not a netstring at all")
        assert (await replies(r, 1))[0].startswith("PERM ")
        w.close()
    lines = [rec for rec in caplog.records if rec.getMessage() == "bad netstring from client; closing connection"]
    assert server.bad_netstrings == 40 and len(lines) == server.quiet.per_window
    await server.close(1)
    await service.aclose()


def test_rate_limited_log_summarises_what_it_left_out(caplog):
    now = [0.0]
    quiet = RateLimitedLog(logging.getLogger("mxsec.test"), per_window=3, window=60.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="mxsec.test")
    written = [quiet.log(logging.WARNING, "x", "event x") for _ in range(10)]
    assert written == [True] * 3 + [False] * 7
    now[0] = 61.0
    quiet.flush()
    summary = [r for r in caplog.records if r.getMessage() == "suppressed similar messages"]
    assert len(summary) == 1 and summary[0].suppressed == 7 and quiet.suppressed_total == 7
    assert quiet.log(logging.WARNING, "x", "event x")  # a new window


async def test_memo_sweep_drops_expired_ready_replies():
    server, service, port = await start()
    for i in range(3):
        assert (await ask(port, f"n{i}.gone.example")).startswith("NOTFOUND")
    assert len(server.memo) == 3 and len(server.memo_by_domain) == 3
    assert server.sweep_memo(server.loop.time() + 10_000) == 3
    assert not server.memo and not server.memo_by_domain
    await server.close(1)
    await service.aclose()


@pytest.mark.parametrize("wanted", [10, 10_000_000])
def test_connection_cap_fits_the_open_files_limit(wanted):
    import resource

    from mxsec.daemon.server import FD_RESERVE, connection_cap

    cap = connection_cap(wanted)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert cap == min(wanted, soft - FD_RESERVE)


async def test_half_close_with_few_requests_still_answered():
    """Exim's ${readsocket} sends its request and shuts its side: the answer still comes back."""
    server, service, port = await start(ServiceSettings(lookup_timeout=5.0))
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(encode(b"exim example.com") + encode(b"postfix n1.gone.example"))
    w.write_eof()
    got = await replies(r, 2)
    assert got[0].startswith("mode=enforce") and got[1] == "NOTFOUND " and await closed(r, 2.0)
    assert server.abandoned == 0
    w.close()
    await server.close(1)
    await service.aclose()


async def test_partial_timeout_does_not_run_while_the_daemon_is_not_reading():
    """A pipelining client whose backlog is full waits for us; its half-read netstring is not its fault."""
    server, service, port = await start(ServiceSettings(lookup_timeout=0.8), max_pending=2, partial_timeout=0.3)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(encode(b"postfix n1.x.hang") + encode(b"postfix n2.x.hang") + b"19:postfix exa")
    await asyncio.sleep(0.6)
    conn = next(iter(server.connections))
    assert conn.backlogged and server.timeouts["partial"] == 0
    got = await replies(r, 2, timeout=3.0)
    assert all(g.startswith("TEMP ") for g in got)
    assert await closed(r, 2.0) and server.timeouts["partial"] == 1  # its own clock, once we read again
    w.close()
    await server.close(1)
    await service.aclose()


async def test_client_gone_while_we_do_not_read_it_is_noticed_and_its_work_cancelled():
    """A backlogged connection is not read from, so its client's close would go unnoticed until answers are
    written; the housekeeping asks the kernel instead and drops the work within a second or so."""
    server, service, port = await start(ServiceSettings(lookup_timeout=30.0), max_pending=20)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"".join(encode(f"postfix n{i}.x.hang".encode()) for i in range(40)))
    await asyncio.sleep(0.1)
    conn = next(iter(server.connections))
    assert conn.backlogged and len(service.inflight) == 20
    w.close()
    for _ in range(300):
        if not service.inflight:
            break
        await asyncio.sleep(0.01)
    assert not service.inflight and service._pool.active == 0 and server.abandoned == 1
    assert service.counters["resolutions_cancelled"] == 20
    await server.close(1)
    await service.aclose()
