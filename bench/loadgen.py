"""Socketmap load generator for bench/socketmap.py.

One process, one event loop (uvloop when importable), asyncio Protocols only.
Requests are pre-encoded netstrings; replies are checked without decoding when
they equal the reply learned for that domain (one memcmp per reply or batch),
and parsed netstring by netstring otherwise.

Run as ``python bench/loadgen.py JOB_JSON`` (or ``-`` to read the job from
stdin); prints one JSON object with the results on stdout.  Every mode is
bounded in time: nothing here loops without a deadline.

Modes (job["mode"]):
  warm       ask every domain until all answer ``OK secure`` (or timeout)
  closed     one request at a time per connection, fixed duration
  pipelined  ``depth`` requests per write per connection, wait for all replies
  paced      one request at a time per connection at a fixed total rate
  cold       each domain once, ``conns`` concurrent clients, total time
  single     ``conns`` x ``depth`` concurrent queries for one domain
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import select
import sys
import time

OK_PREFIX = b"OK secure"
perf = time.perf_counter


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def request(domain: str, name: str = "postfix") -> bytes:
    return netstring(f"{name} {domain}".encode())


def scan(buf: bytes, limit: int) -> tuple[int, int, int, list[bytes], bool]:
    """Parse up to ``limit`` complete netstrings from ``buf``.

    Returns (count, ok, end_pos, bad_samples, broken).  ``broken`` is true when the
    stream cannot be parsed as netstrings at all."""
    pos = 0
    end = len(buf)
    count = ok = 0
    bad: list[bytes] = []
    while count < limit and pos < end:
        colon = buf.find(b":", pos, pos + 11)
        if colon < 0:
            if end - pos >= 11:
                return count, ok, pos, bad, True
            break
        digits = buf[pos:colon]
        if not digits.isdigit():
            return count, ok, pos, bad, True
        stop = colon + 1 + int(digits)
        if stop >= end:
            break
        if buf[stop] != 44:
            return count, ok, pos, bad, True
        if buf.startswith(OK_PREFIX, colon + 1, stop):
            ok += 1
        elif len(bad) < 3:
            bad.append(buf[colon + 1 : stop])
        count += 1
        pos = stop + 1
    return count, ok, pos, bad, False


def pct(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    idx = min(len(sorted_values) - 1, max(0, round(p * (len(sorted_values) - 1))))
    return sorted_values[idx]


def latency_summary(values: list[float]) -> dict:
    values.sort()
    return {
        "samples": len(values),
        "p50_ms": None if not values else round(pct(values, 0.50) * 1e3, 4),
        "p99_ms": None if not values else round(pct(values, 0.99) * 1e3, 4),
        "p999_ms": None if not values else round(pct(values, 0.999) * 1e3, 4),
        "max_ms": None if not values else round(values[-1] * 1e3, 4),
    }


class Conn(asyncio.Protocol):
    """A client connection with at most one outstanding exchange.

    An exchange is ``n`` requests written at once; it completes when ``n`` replies
    are in.  ``expect`` is the exact reply bytes when known (fast path)."""

    __slots__ = ("buf", "busy", "expect", "ident", "lost", "n", "on_done", "sent_at", "transport")

    def __init__(self, ident: int, on_done) -> None:
        self.ident = ident
        self.on_done = on_done  # callable(conn, count, ok, bad_samples, now)
        self.transport = None
        self.buf = b""
        self.expect: bytes | None = None
        self.n = 0
        self.sent_at = 0.0
        self.lost = False
        self.busy = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.lost = True
        if self.busy:
            self.busy = False
            self.on_done(self, -1, 0, [b"<connection lost>"], perf())

    def send(self, data: bytes, n: int, expect: bytes | None) -> None:
        self.expect = expect
        self.n = n
        self.busy = True
        self.sent_at = perf()
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            # Unsolicited bytes: count them as one bad exchange.
            self.on_done(self, 0, 0, [b"<unsolicited> " + data[:60]], perf())
            return
        expect = self.expect
        buf = self.buf + data if self.buf else data
        if expect is not None:
            if buf == expect:
                self.buf = b""
                self.busy = False
                self.on_done(self, self.n, self.n, None, perf())
                return
            if len(buf) < len(expect) and expect.startswith(buf):
                self.buf = buf
                return
        count, ok, pos, bad, broken = scan(buf, self.n)
        if broken:
            self.buf = b""
            self.busy = False
            self.on_done(self, -1, ok, bad + [b"<broken netstring> " + buf[pos : pos + 60]], perf())
            self.transport.close()
            return
        if count >= self.n:
            self.buf = buf[pos:]
            self.busy = False
            self.on_done(self, count, ok, bad, perf())
        else:
            self.buf = buf


class RecordingConn(Conn):
    """A :class:`Conn` that also keeps the text of the last complete reply (``cold`` with ``answers``)."""

    __slots__ = ("text",)

    def __init__(self, ident: int, on_done) -> None:
        super().__init__(ident, on_done)
        self.text: bytes | None = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        colon = buf.find(b":", 0, 11)
        if colon > 0 and buf[:colon].isdigit() and colon + 1 + int(buf[:colon]) < len(buf):
            self.text = buf[colon + 1 : colon + 1 + int(buf[:colon])]
        super().data_received(data)


async def open_conns(host: str, port: int, count: int, on_done, timeout: float = 10.0,
                     conn_cls: type[Conn] = Conn) -> list[Conn]:
    loop = asyncio.get_running_loop()
    conns: list[Conn] = []

    async def one(i: int) -> None:
        _, proto = await loop.create_connection(lambda: conn_cls(i, on_done), host, port)
        conns.append(proto)

    # Connect in slices so a server with a small listen backlog is not flooded.
    for start in range(0, count, 100):
        await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(start, min(count, start + 100)))), timeout
        )
    conns.sort(key=lambda c: c.ident)
    return conns


def close_all(conns: list[Conn]) -> None:
    for c in conns:
        if c.transport is not None and not c.transport.is_closing():
            c.transport.close()


class Stats:
    def __init__(self) -> None:
        self.replies = 0
        self.ok = 0
        self.bad = 0
        self.exchanges = 0
        self.conn_errors = 0
        self.samples: list[bytes] = []
        self.lat: list[float] = []

    def add(self, count: int, ok: int, bad_samples) -> None:
        if count < 0:
            self.conn_errors += 1
            self.bad += 1
        else:
            self.replies += count
            self.ok += ok
            self.bad += count - ok
        if bad_samples and len(self.samples) < 5:
            self.samples.extend(bad_samples[: 5 - len(self.samples)])

    def result(self) -> dict:
        return {
            "replies": self.replies,
            "ok": self.ok,
            "errors": self.bad,
            "conn_errors": self.conn_errors,
            "bad_samples": [s.decode("utf-8", "replace") for s in self.samples],
        }


# --------------------------------------------------------------------------- warm / learn


async def warm(job: dict) -> dict:
    """Ask every domain (pipelined over a few connections) until each answers
    ``OK secure``; returns the reply text learned per domain."""
    host, port = job["host"], job["port"]
    domains: list[str] = job["domains"]
    timeout = float(job.get("timeout", 30.0))
    retry_pause = float(job.get("retry_pause", 0.25))
    width_max = int(job.get("conns", 10))
    t0 = perf()
    deadline = t0 + timeout
    learned: dict[str, str] = {}
    last_bad: dict[str, str] = {}
    errors: list[str] = []
    rounds = 0
    pending = list(domains)
    while pending and perf() < deadline:
        rounds += 1
        width = min(len(pending), width_max)
        groups = [pending[i::width] for i in range(width)]
        left = max(0.1, deadline - perf())
        results = await asyncio.gather(*(fetch_texts(host, port, g, left) for g in groups), return_exceptions=True)
        texts: dict[str, str] = {}
        for r in results:
            if isinstance(r, BaseException):
                if len(errors) < 3:
                    errors.append(f"{type(r).__name__}: {r}")
            else:
                texts.update(r)
        still = []
        for d in pending:
            t = texts.get(d)
            if t is not None and t.startswith("OK secure"):
                learned[d] = t
            else:
                last_bad[d] = t if t is not None else "<no reply>"
                still.append(d)
        pending = still
        if pending and perf() + retry_pause < deadline:
            await asyncio.sleep(retry_pause)
    return {
        "mode": "warm",
        "complete": not pending,
        "rounds": rounds,
        "pending": len(pending),
        "last_bad": {d: last_bad[d] for d in pending[:5]},
        "conn_errors": errors,
        "replies": learned,
        "seconds": round(perf() - t0, 3),
    }


async def fetch_texts(host: str, port: int, domains: list[str], timeout: float) -> dict[str, str]:
    """Ask each domain once on one connection (pipelined) and return the reply
    texts received before ``timeout`` (partial on timeout)."""
    deadline = perf() + timeout
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    out: dict[str, str] = {}
    try:
        writer.write(b"".join(request(d) for d in domains))
        buf = b""
        i = 0
        while i < len(domains):
            try:
                chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - perf()))
            except TimeoutError:
                break
            if not chunk:
                break
            buf += chunk
            while i < len(domains):
                colon = buf.find(b":")
                if colon < 0:
                    break
                size = int(buf[:colon])
                if len(buf) < colon + 2 + size:
                    break
                out[domains[i]] = buf[colon + 1 : colon + 1 + size].decode("utf-8", "replace")
                buf = buf[colon + 2 + size :]
                i += 1
    finally:
        writer.close()
    return out


async def learn(job: dict) -> dict[str, bytes]:
    """Reply bytes (full netstrings) per domain, each checked to be OK secure."""
    texts = await fetch_texts(job["host"], job["port"], job["domains"], 10.0)
    bad = {d: texts.get(d) for d in job["domains"] if not (texts.get(d) or "").startswith("OK secure")}
    if bad:
        raise SystemExit(f"loadgen: domains not answered OK secure before the run: {list(bad.items())[:3]}")
    return {d: netstring(t.encode()) for d, t in texts.items()}


# --------------------------------------------------------------------------- cached modes


async def closed(job: dict) -> dict:
    """One request at a time per connection (how Postfix asks)."""
    host, port = job["host"], job["port"]
    domains: list[str] = job["domains"]
    conns_n = int(job.get("conns", 64))
    warmup = float(job.get("warmup", 1.0))
    duration = float(job.get("duration", 5.0))
    replies = await learn(job)
    reqs = [request(d) for d in domains]
    exp = [replies[d] for d in domains]
    nd = len(domains)
    stats = Stats()
    state = {"measuring": False, "stopping": False}
    position = {}
    lat = stats.lat

    def on_done(conn: Conn, count, ok, bad, now):
        if state["measuring"]:
            stats.add(count, ok, bad)
            if count > 0:
                lat.append(now - conn.sent_at)
        if state["stopping"] or conn.lost:
            return
        i = position[conn.ident] = (position[conn.ident] + 1) % nd
        conn.send(reqs[i], 1, exp[i])

    conns = await open_conns(host, port, conns_n, on_done)
    for c in conns:
        i = position[c.ident] = c.ident % nd
        c.send(reqs[i], 1, exp[i])
    await asyncio.sleep(warmup)
    state["measuring"] = True
    t0 = perf()
    await asyncio.sleep(duration)
    state["measuring"] = False
    elapsed = perf() - t0
    state["stopping"] = True
    await drain(conns, 2.0)
    close_all(conns)
    res = stats.result()
    res.update(
        mode="closed",
        conns=conns_n,
        seconds=round(elapsed, 3),
        rate=round(stats.replies / elapsed, 1),
        **latency_summary(lat),
    )
    return res


async def wait_and_close(done: asyncio.Future, conns: list[Conn], t0: float, timeout: float) -> tuple[float, bool]:
    """Wait for ``done`` (at most ``timeout`` s), then close ``conns``; returns (seconds since t0, timed out)."""
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        timed_out = True
    elapsed = perf() - t0
    close_all(conns)
    return elapsed, timed_out


async def drain(conns: list[Conn], timeout: float) -> None:
    deadline = perf() + timeout
    while perf() < deadline and any(c.busy and not c.lost for c in conns):
        await asyncio.sleep(0.01)


async def pipelined(job: dict) -> dict:
    """``depth`` requests per write per connection; the next batch goes out when
    all replies of the previous one are in."""
    host, port = job["host"], job["port"]
    domains: list[str] = job["domains"]
    conns_n = int(job.get("conns", 16))
    depth = int(job.get("depth", 64))
    warmup = float(job.get("warmup", 1.0))
    duration = float(job.get("duration", 5.0))
    replies = await learn(job)
    nd = len(domains)
    batches = []
    for c in range(conns_n):
        idx = [(c * 7 + k) % nd for k in range(depth)]
        batches.append((b"".join(request(domains[i]) for i in idx), b"".join(replies[domains[i]] for i in idx)))
    stats = Stats()
    state = {"measuring": False, "stopping": False}
    lat = stats.lat

    def on_done(conn: Conn, count, ok, bad, now):
        if state["measuring"]:
            stats.add(count, ok, bad)
            if count > 0:
                lat.append(now - conn.sent_at)
        if state["stopping"] or conn.lost:
            return
        data, expect = batches[conn.ident]
        conn.send(data, depth, expect)

    conns = await open_conns(host, port, conns_n, on_done)
    for c in conns:
        data, expect = batches[c.ident]
        c.send(data, depth, expect)
    await asyncio.sleep(warmup)
    state["measuring"] = True
    t0 = perf()
    await asyncio.sleep(duration)
    state["measuring"] = False
    elapsed = perf() - t0
    state["stopping"] = True
    await drain(conns, 2.0)
    close_all(conns)
    res = stats.result()
    summary = latency_summary(lat)
    res.update(
        mode="pipelined",
        conns=conns_n,
        depth=depth,
        seconds=round(elapsed, 3),
        rate=round(stats.replies / elapsed, 1),
        batch_p50_ms=summary["p50_ms"],
        batch_p99_ms=summary["p99_ms"],
    )
    return res


def loop_poll_fd() -> int | None:
    """The event loop's epoll descriptor (the only one this process opens)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[eventpoll]":
                found.append(int(name))
        except OSError:
            pass
    return found[0] if len(found) == 1 else None


async def paced(job: dict) -> dict:
    """Open-loop load at a fixed mean rate over a pool of ``conns`` connections,
    one outstanding request per connection at most (as Postfix's clients).

    Arrivals are Poisson (seeded exponential gaps).  Timers of the event loop
    have millisecond granularity, which would send each millisecond's requests
    as one burst; the pacer instead re-runs itself on every loop iteration
    (``call_soon``) and sends each request when its due time has passed.
    Between sends it sleeps in select() on the loop's epoll descriptor with a
    microsecond timeout (wakes for replies or the next due time), so it does
    not spin a core that the server needs.  Latency is measured from the write.
    A request that finds no idle connection waits for one; ``late`` counts the
    requests written more than 1 ms after their due time."""
    import random

    host, port = job["host"], job["port"]
    domains: list[str] = job["domains"]
    conns_n = int(job.get("conns", 64))
    rate = float(job["rate"])
    warmup = float(job.get("warmup", 1.0))
    duration = float(job.get("duration", 5.0))
    replies = await learn(job)
    reqs = [request(d) for d in domains]
    exp = [replies[d] for d in domains]
    nd = len(domains)
    loop = asyncio.get_running_loop()
    stats = Stats()
    state = {"measuring": False, "stopping": False, "late": 0, "sent": 0, "i": 0}
    lat = stats.lat
    idle: list[Conn] = []
    rnd = random.Random(8461)
    gap = rnd.expovariate
    due = [0.0]

    def on_done(conn: Conn, count, ok, bad, now):
        if state["measuring"]:
            stats.add(count, ok, bad)
            if count > 0:
                lat.append(now - conn.sent_at)
        if not conn.lost:
            idle.append(conn)

    def tick():
        if state["stopping"]:
            return
        now = perf()
        d = due[0]
        while d <= now and idle:
            conn = idle.pop()
            i = state["i"] = (state["i"] + 1) % nd
            conn.send(reqs[i], 1, exp[i])
            state["sent"] += 1
            if now - d > 0.001 and state["measuring"]:
                state["late"] += 1  # sent over 1 ms after its due time
            d += gap(rate)
        due[0] = d
        if epfd is not None:
            # Sleep until the next due time or until the loop has I/O, whichever
            # comes first (select() takes microsecond timeouts; the loop's own
            # epoll_wait only milliseconds).
            wait = (d - perf()) if idle else 0.002
            if wait > 100e-6:
                select.select([epfd], [], [], min(wait - 20e-6, 0.002))
        loop.call_soon(tick)

    epfd = loop_poll_fd() if job.get("pace", "select") == "select" else None
    conns = await open_conns(host, port, conns_n, on_done)
    idle.extend(conns)
    due[0] = perf()
    loop.call_soon(tick)
    await asyncio.sleep(warmup)
    state["measuring"] = True
    sent0 = state["sent"]
    t0 = perf()
    await asyncio.sleep(duration)
    state["measuring"] = False
    elapsed = perf() - t0
    sent = state["sent"] - sent0
    state["stopping"] = True
    await drain(conns, 2.0)
    close_all(conns)
    res = stats.result()
    res.update(
        mode="paced",
        conns=conns_n,
        target_rate=round(rate, 1),
        offered_rate=round(sent / elapsed, 1),
        rate=round(stats.replies / elapsed, 1),
        late=state["late"],
        seconds=round(elapsed, 3),
        **latency_summary(lat),
    )
    return res


# --------------------------------------------------------------------------- uncached modes


async def cold(job: dict) -> dict:
    """Every domain asked once by ``conns`` concurrent clients; total time.  With ``"answers": true`` the
    result also has ``answers``: domain -> reply text (or ``<no reply>``) and ``answer_ms``: domain -> latency,
    for callers that judge the replies themselves (bench/cold.py); ``ok``/``errors`` still count
    ``OK secure`` replies."""
    host, port = job["host"], job["port"]
    domains: list[str] = job["domains"]
    conns_n = min(int(job.get("conns", 100)), len(domains))
    timeout = float(job.get("timeout", 60.0))
    record = bool(job.get("answers"))
    loop = asyncio.get_running_loop()
    stats = Stats()
    lat = stats.lat
    it = iter(domains)
    done = loop.create_future()
    active = [conns_n]
    asked: dict[int, str] = {}
    answers: dict[str, str] = {}
    answer_ms: dict[str, float] = {}

    def next_or_finish(conn: Conn) -> None:
        d = next(it, None)
        if d is None or conn.lost:
            active[0] -= 1
            if active[0] == 0 and not done.done():
                done.set_result(None)
            return
        if record:
            asked[conn.ident] = d
        conn.send(request(d), 1, None)

    def on_done(conn: Conn, count, ok, bad, now):
        stats.add(count, ok, bad)
        if count > 0:
            lat.append(now - conn.sent_at)
        if record and conn.ident in asked:
            d = asked.pop(conn.ident)
            text = conn.text if count > 0 else None
            answers[d] = (text.decode("utf-8", "replace") if text is not None
                          else (bad[0] if bad else b"<no reply>").decode("utf-8", "replace"))
            answer_ms[d] = round((now - conn.sent_at) * 1e3, 2)
        next_or_finish(conn)

    conns = await open_conns(host, port, conns_n, on_done, conn_cls=RecordingConn if record else Conn)
    t0 = perf()
    for c in conns:
        next_or_finish(c)
    elapsed, timed_out = await wait_and_close(done, conns, t0, timeout)
    res = stats.result()
    res.update(
        mode="cold",
        conns=conns_n,
        **({"answers": {d: answers.get(d, "<no reply>") for d in domains}, "answer_ms": answer_ms} if record else {}),
        domains=len(domains),
        unanswered=len(domains) - stats.replies,
        timed_out=timed_out,
        seconds=round(elapsed, 3),
        rate=round(stats.replies / elapsed, 1) if elapsed > 0 else None,
        **latency_summary(lat),
    )
    return res


async def single(job: dict) -> dict:
    """``conns`` connections, each writes ``depth`` queries for the same domain at
    the same instant."""
    host, port = job["host"], job["port"]
    domain = job["domains"][0]
    conns_n = int(job.get("conns", 100))
    depth = int(job.get("depth", 10))
    timeout = float(job.get("timeout", 30.0))
    loop = asyncio.get_running_loop()
    stats = Stats()
    lat = stats.lat
    done = loop.create_future()
    active = [conns_n]

    def on_done(conn: Conn, count, ok, bad, now):
        stats.add(count, ok, bad)
        if count > 0:
            lat.append(now - conn.sent_at)
        active[0] -= 1
        if active[0] == 0 and not done.done():
            done.set_result(None)

    conns = await open_conns(host, port, conns_n, on_done)
    data = request(domain) * depth
    t0 = perf()
    for c in conns:
        c.send(data, depth, None)
    elapsed, timed_out = await wait_and_close(done, conns, t0, timeout)
    res = stats.result()
    res.update(
        mode="single",
        domain=domain,
        queries=conns_n * depth,
        conns=conns_n,
        depth=depth,
        unanswered=conns_n * depth - stats.replies,
        timed_out=timed_out,
        seconds=round(elapsed, 3),
        **latency_summary(lat),
    )
    return res


MODES = {"warm": warm, "closed": closed, "pipelined": pipelined, "paced": paced, "cold": cold, "single": single}


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    job = json.loads(sys.stdin.read() if argv[0] == "-" else argv[0])
    raise_nofile()
    loop_name = "asyncio"
    if job.get("loop", "auto") in ("auto", "uvloop"):
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            loop_name = "uvloop"
        except ImportError:
            if job.get("loop") == "uvloop":
                raise
    # Hard bound on the whole process, whatever the mode does.
    budget = float(job.get("budget", 120.0))
    try:
        result = asyncio.run(asyncio.wait_for(MODES[job["mode"]](job), budget))
    except TimeoutError:
        result = {"mode": job["mode"], "error": f"loadgen budget of {budget}s exceeded"}
    except (OSError, SystemExit) as exc:
        result = {"mode": job["mode"], "error": str(exc) or type(exc).__name__}
    result["loadgen_loop"] = loop_name
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
