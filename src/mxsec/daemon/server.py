"""The socketmap server: asyncio listeners in front of the policy service.

Hot path: a request whose answer is known (a cached policy, a remembered "no policy") is answered inside
``data_received`` from a table keyed by the raw request bytes, without creating a task or touching the
network; a batch of pipelined requests becomes one ``write``. Requests that need a resolution become tasks;
replies always leave in request order (a connection's later answers wait for its earlier ones).

A framing error (not a netstring, oversized) gets one ``PERM`` reply and closes that connection only; a
well-framed but unusable request (unknown map, bad domain) gets ``PERM`` and the connection stays open.

Limits against clients that misbehave (docs/daemon.md, "Limits"):

* at most ``max_pending`` unanswered requests per connection: requests beyond it are answered ``TEMP`` at once
  (in their place in the reply order) and the connection is not read from until its backlog shrinks;
* at most ``max_connections`` connections; a new one is always accepted: the least useful connection (one
  waiting in the middle of a netstring, else the one idle longest, else the one with the most unanswered
  requests) is closed to make room;
* a connection stuck in the middle of a netstring is closed after ``partial_timeout`` seconds, an idle one
  (nothing unanswered) after ``idle_timeout`` seconds (Postfix itself closes its idle connections after 10 s
  and reconnects when it needs to);
* each resolution slot taken is charged to the connection that asked (:class:`~mxsec.daemon.service.FairPool`),
  and a connection that closes cancels the resolutions nobody else waits for;
* log lines a client can cause are rate-limited (:class:`~mxsec.daemon.lograte.RateLimitedLog`), and every
  eviction, timeout and refusal is counted (Prometheus metrics).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Literal

from mxsec.daemon.lograte import RateLimitedLog
from mxsec.daemon.replies import Zone, format_reply, not_applicable_reply, reply_kind
from mxsec.daemon.service import PolicyService
from mxsec.daemon.socketmap import Framing, NetstringDecoder, RequestError, encode, parse_request
from mxsec.errors import ParseError
from mxsec.names import is_ip_literal, normalize_domain
from mxsec.verdict import Verdict

log = logging.getLogger("mxsec.daemon")

#: reply kinds, in the order of ``SocketmapServer.reply_counts`` (and of the replies metric's ``kind`` label)
ReplyKind = Literal["ok", "notfound", "temp", "perm"]
KINDS: tuple[ReplyKind, ...] = ("ok", "notfound", "temp", "perm")
#: (keyed by any text: ``reply_kind`` returns a plain string, unknown kinds count as ``perm``)
_KIND_INDEX: dict[str, int] = {k: i for i, k in enumerate(KINDS)}
#: the index of each kind in ``reply_counts`` and in a memo entry (plain ints: the fast path indexes a list)
OK_AT, NOTFOUND_AT, TEMP_AT, PERM_AT = (_KIND_INDEX[k] for k in ("ok", "notfound", "temp", "perm"))
#: latency histogram bucket bounds, seconds
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0, 60.0)
#: memo size bound: beyond it the table is cleared (it refills from the service's own tables)
MEMO_LIMIT = 200_000
#: requests that never depend on the network (address literals...) are remembered this long
STATIC_MEMO_SECONDS = 86400.0
#: how often expired ready replies are dropped and the service's tables swept, seconds
SWEEP_INTERVAL = 60.0
#: the reason given with the TEMP answering a request beyond a connection's ``max_pending``
BUSY_REASON = "too many unanswered requests on this connection"
#: unanswered requests a client may leave behind when it half-closes and still get its answers (Exim's
#: ``${readsocket}`` sends one request, then shuts its side); with more, it is taken as gone and the work dropped
HALF_CLOSE_PENDING = 8
#: Linux TCP states (``tcp_info.tcpi_state``): the peer has shut its side / the connection is reset
_TCP_CLOSE = 7
_TCP_CLOSE_WAIT = 8
#: file descriptors kept free for everything that is not a client connection: the DNS sockets of 256
#: resolutions running at once (MTA-STS and DANE queries side by side), HTTPS fetches, the store, listeners
FD_RESERVE = 64 + 2 * 256


def connection_cap(wanted: int, reserve: int = FD_RESERVE) -> int:
    """Raise the soft open-files limit to the hard one and return how many client connections fit in it
    (``wanted`` at most): with too few descriptors, ``accept`` would fail before the connection cap is reached,
    and new clients, Postfix's included, would be refused instead of making room."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
    except ImportError:  # pragma: no cover - not on POSIX
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - reserve))


class NotApplicable(Exception):
    """The key names no policy domain (address literal, parent-domain lookup): the answer is NOTFOUND."""


def policy_domain_from_key(key: str) -> str:
    """The MTA-STS policy domain for a socketmap key.

    * ``example.com`` / ``Example.COM.`` / U-labels → the A-label form;
    * ``[relay.example]`` and ``[relay.example]:587`` (a bracketed next hop, i.e. a smart host) → the host
      name, which is the policy domain for relayed mail (STS-A-14);
    * address literals (``[192.0.2.1]``, ``192.0.2.1``) and parent-domain style keys (``.example.com``) →
      :class:`NotApplicable` (STS-A-16: no MTA-STS for address literals; STS-A-15: no parent policy).

    Raises :class:`mxsec.names.DomainError` for keys that are not host names at all.
    """
    if key.startswith("["):
        close = key.find("]")
        if close < 0:
            raise RequestError("unbalanced '[' in key")
        rest = key[close + 1:]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            raise RequestError("unexpected text after ']' in key")
        key = key[1:close]
    if key.startswith(".") and len(key) > 1:
        raise NotApplicable("parent-domain lookup")
    if is_ip_literal(key) or key.lower().startswith("ipv6:"):
        raise NotApplicable("address literal")
    return normalize_domain(key)


class Histogram:
    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += times
        self.total += seconds * times
        self.n += times


class SocketmapServer:
    def __init__(
        self,
        service: PolicyService,
        zones: dict[str, Zone],
        *,
        max_connections: int = 1024,
        unix_mode: int | None = None,
        max_pending: int = 100,
        idle_timeout: float = 300.0,
        partial_timeout: float = 10.0,
    ) -> None:
        self.service = service
        self.max_pending = max_pending
        self.idle_timeout = idle_timeout
        self.partial_timeout = partial_timeout
        #: called with every verdict answered on the slow path (``--record-policies``)
        self.observer: Callable[[Verdict], None] | None = None
        self.zones = zones
        self.max_connections = max_connections
        self.unix_mode = unix_mode
        self.loop = asyncio.get_running_loop()
        #: raw request payload → (encoded reply, valid until (loop time), reply kind index)
        self.memo: dict[bytes, tuple[bytes, float, int]] = {}
        self.memo_by_domain: dict[str, list[bytes]] = {}
        self.reply_counts = [0] * len(KINDS)
        self.memo_hits = 0
        self.latency = Histogram()
        #: time every reply for the latency histogram; only worth its cost when metrics are served
        self.timing = False
        self.connections: set[SocketmapProtocol] = set()
        self.servers: dict[str, asyncio.AbstractServer] = {}
        #: connections refused (the system ran out of file descriptors at accept)
        self.rejected_connections = 0
        #: connections closed to make room for a new one, by what they were doing: partial, idle, busy
        self.evictions: Counter[str] = Counter()
        #: connections closed by a timeout: partial (stuck mid-netstring), idle
        self.timeouts: Counter[str] = Counter()
        #: requests answered TEMP because their connection had ``max_pending`` unanswered requests already
        self.pending_cap_hits = 0
        self.bad_netstrings = 0
        #: connections closed by their client with more than HALF_CLOSE_PENDING requests unanswered
        self.abandoned = 0
        self.quiet = RateLimitedLog(log)
        self._busy_replies: dict[bytes, bytes] = {}
        self._housekeeping: asyncio.TimerHandle | None = None
        self._last_sweep = 0.0
        service.listeners.append(self.invalidate)

    # -- memo -----------------------------------------------------------------------------------------------
    def invalidate(self, domain: str) -> None:
        for raw in self.memo_by_domain.pop(domain, ()):
            self.memo.pop(raw, None)

    def clear_memo(self) -> None:
        self.memo.clear()
        self.memo_by_domain.clear()
        self._busy_replies.clear()  # the zones may have changed (reload)

    def _remember(self, payload: bytes, reply: bytes, seconds: float, kind: int, domain: str | None) -> None:
        if seconds <= 0:
            return
        if len(self.memo) >= MEMO_LIMIT:
            self.clear_memo()
        self.memo[payload] = (reply, self.loop.time() + seconds, kind)
        if domain is not None:
            payloads = self.memo_by_domain.setdefault(domain, [])
            if payload not in payloads:
                payloads.append(payload)

    def sweep_memo(self, now: float | None = None) -> int:
        """Drop ready replies past their time (they would never be served again); returns how many."""
        now = self.loop.time() if now is None else now
        memo = self.memo
        dead = [k for k, v in memo.items() if v[1] <= now]
        for k in dead:
            del memo[k]
        if dead:
            by_domain = self.memo_by_domain
            for domain, payloads in list(by_domain.items()):
                keep = [p for p in payloads if p in memo]
                if keep:
                    by_domain[domain] = keep
                else:
                    del by_domain[domain]
        return len(dead)

    def busy_reply(self, payload: bytes) -> bytes:
        """``TEMP`` (``mode=temp`` for Exim) for a request beyond its connection's ``max_pending``."""
        name = payload.partition(b" ")[0][:64]
        reply = self._busy_replies.get(name)
        if reply is None:
            zone = self.zones.get(name.decode("utf-8", "replace"))
            text = format_reply(Verdict("-", temp_reason=BUSY_REASON), zone) if zone else "TEMP " + BUSY_REASON
            reply = encode(text.encode("utf-8"))
            if len(self._busy_replies) < 64:
                self._busy_replies[name] = reply
        return reply

    # -- answers --------------------------------------------------------------------------------------------
    def _perm(self, reason: str) -> bytes:
        self.reply_counts[PERM_AT] += 1
        return encode(b"PERM " + reason.encode("utf-8", "replace"))

    async def answer(self, payload: bytes, client: object = None) -> bytes:
        """Answer one request that was not in the memo (the slow path); ``client`` is the asking connection."""
        started = time.perf_counter()
        try:
            request = parse_request(payload)
        except RequestError as exc:
            return self._perm(str(exc))
        zone = self.zones.get(request.map_name)
        if zone is None:
            return self._perm(f"unknown map name {request.map_name[:64]!r}")
        try:
            domain = policy_domain_from_key(request.key)
        except NotApplicable:
            reply = encode(not_applicable_reply(zone).encode())
            self._remember(payload, reply, STATIC_MEMO_SECONDS, NOTFOUND_AT, None)
            self.reply_counts[NOTFOUND_AT] += 1
            return reply
        except (ParseError, RequestError) as exc:
            return self._perm(f"invalid domain: {exc}")
        verdict = await self.service.lookup(domain, client)
        if self.observer is not None and not (verdict.temp_reason is not None and verdict.dane is None):
            # (a TEMP from our own time budget says nothing about the domain: not recorded as served)
            self.observer(verdict)
        text = format_reply(verdict, zone)
        kind = _KIND_INDEX.get(reply_kind(text), PERM_AT)
        reply = encode(text.encode("utf-8"))
        if verdict.expires_at is not None and verdict.temp_reason is None:
            self._remember(payload, reply, verdict.expires_at - self.service.clock(), kind, domain)
        self.reply_counts[kind] += 1
        self.latency.observe(time.perf_counter() - started)
        return reply

    # -- listeners ------------------------------------------------------------------------------------------
    async def listen(self, address) -> None:
        """Start one listener; ``address`` is a ``ListenAddress`` (kind, host, port, path)."""
        key = _listen_key(address)
        if key in self.servers:
            return
        factory = lambda: SocketmapProtocol(self)  # noqa: E731
        if address.kind == "unix":
            path = address.path
            if os.path.exists(path) and _is_socket(path):
                os.unlink(path)  # a stale socket left by a crash
            server = await self.loop.create_unix_server(factory, path=path)
            if self.unix_mode is not None:
                os.chmod(path, self.unix_mode)
        else:
            host = address.host
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = await self.loop.create_server(
                factory, host=host, port=address.port, family=family, reuse_address=True, backlog=1024
            )
        self.servers[key] = server
        log.info("listening", extra={"listen": key})
        self._start_housekeeping()

    # -- connection limits ----------------------------------------------------------------------------------
    def admit(self, newcomer: "SocketmapProtocol") -> None:
        """Make room for a new connection when the cap is reached: close the least useful one."""
        while len(self.connections) >= self.max_connections and self.connections:
            victim: SocketmapProtocol | None = None
            victim_key: tuple[int, float] | None = None
            for conn in self.connections:
                if conn.partial_since is not None and not (conn.backlogged or conn.write_paused):
                    key = (0, conn.partial_since)
                elif not conn.queue:
                    key = (1, conn.last_active)
                else:
                    key = (2, -conn.outstanding)
                if victim_key is None or key < victim_key:
                    victim, victim_key = conn, key
            assert victim is not None and victim_key is not None  # the set was not empty
            reason = ("partial", "idle", "busy")[victim_key[0]]
            self.evictions[reason] += 1
            self.quiet.log(logging.WARNING, "evict", "connection limit reached; closed a connection to make room",
                           reason=reason, max_connections=self.max_connections)
            self.connections.discard(victim)
            victim.abort()
        self.connections.add(newcomer)

    def _start_housekeeping(self) -> None:
        if self.loop.get_exception_handler() is None:
            self.loop.set_exception_handler(self.accept_failed)
        if self._housekeeping is None:
            self._last_sweep = self.loop.time()
            self._housekeeping = self.loop.call_later(self._housekeeping_interval(), self._housekeep)

    def _housekeeping_interval(self) -> float:
        return min(1.0, max(0.05, min(self.partial_timeout, self.idle_timeout) / 4))

    def _housekeep(self) -> None:
        self._housekeeping = None
        try:
            self.check_timeouts()
            now = self.loop.time()
            if now - self._last_sweep >= SWEEP_INTERVAL:
                self._last_sweep = now
                self.sweep_memo(now)
                self.service.sweep()
            self.quiet.flush()
            self.service.quiet.flush()
        except Exception:  # never let housekeeping die
            log.exception("housekeeping failed")
        if self.servers or self.connections:
            self._housekeeping = self.loop.call_later(self._housekeeping_interval(), self._housekeep)

    def check_timeouts(self, now: float | None = None) -> int:
        """Close connections stuck mid-netstring longer than ``partial_timeout`` and connections idle (nothing
        unanswered) longer than ``idle_timeout``; returns how many were closed."""
        now = self.loop.time() if now is None else now
        partial_before = now - self.partial_timeout
        idle_before = now - self.idle_timeout
        closed = []
        gone = []
        for conn in self.connections:
            if conn.backlogged or conn.write_paused:
                # Not read from: a client that went away would go unnoticed until its answers are written.
                if conn.peer_gone():
                    gone.append(conn)
                continue  # we stopped reading, not the client: the partial clock starts again when we read
            if conn.partial_since is not None and conn.partial_since <= partial_before:
                closed.append((conn, "partial"))
            elif not conn.queue and conn.last_active <= idle_before:
                closed.append((conn, "idle"))
        for conn, why in closed:
            self.timeouts[why] += 1
            self.quiet.log(logging.INFO, "timeout-" + why,
                           "closed a connection stuck in the middle of a request" if why == "partial"
                           else "closed an idle connection", timeout=self.partial_timeout if why == "partial"
                           else self.idle_timeout)
            self.connections.discard(conn)
            conn.close()
        for conn in gone:
            self.abandoned += 1
            self.connections.discard(conn)
            conn.abort()  # connection_lost cancels the lookups only it waited for
        return len(closed) + len(gone)

    def accept_failed(self, loop, context: dict) -> None:
        """Loop exception handler: count (and log, rate-limited) connections the system refused at accept
        because it ran out of file descriptors; everything else goes to the default handler."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
            self.rejected_connections += 1
            self.quiet.log(logging.ERROR, "accept", "cannot accept connections: out of file descriptors",
                           error=str(exc))
            return
        loop.default_exception_handler(context)

    async def unlisten(self, key: str) -> None:
        server = self.servers.pop(key, None)
        if server is not None:
            server.close()
            await server.wait_closed()
            log.info("stopped listening", extra={"listen": key})

    async def close(self, timeout: float) -> None:
        """Stop accepting, let open connections finish their pending answers (up to ``timeout``), close."""
        for server in self.servers.values():
            server.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        pending = [f for conn in self.connections for f in conn.pending_futures()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for conn in list(self.connections):
            conn.close()
        for key in list(self.servers):
            await self.unlisten(key)


def _listen_key(address) -> str:
    if address.kind == "unix":
        return "unix:" + address.path
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{host}:{address.port}"


def _is_socket(path: str) -> bool:
    import stat

    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


class SocketmapProtocol(asyncio.Protocol):
    __slots__ = ("server", "decoder", "transport", "queue", "close_after", "outstanding", "last_active",
                 "partial_since", "write_paused", "backlogged")

    def __init__(self, server: SocketmapServer) -> None:
        self.server = server
        self.decoder = NetstringDecoder()
        self.transport: asyncio.Transport | None = None
        #: replies waiting for an earlier slow answer: encoded bytes or futures, in request order
        self.queue: deque | None = None
        self.close_after = False
        #: slow answers not finished yet
        self.outstanding = 0
        #: loop time of the last data received or last reply written
        self.last_active = server.loop.time()
        #: loop time since which a netstring has been incomplete, or None
        self.partial_since: float | None = None
        #: reading is paused because the client does not read its answers / because its backlog is full
        self.write_paused = False
        self.backlogged = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.admit(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def peer_gone(self) -> bool:
        """For a connection we are not reading from: has the client closed it (reset, or shut its side with
        more requests unanswered than a half-closing Exim would leave)? TCP only (the kernel's view of the
        connection state); ``False`` when unknown."""
        transport = self.transport
        if transport is None:
            return False
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family == socket.AF_UNIX or not hasattr(socket, "TCP_INFO"):
            return False
        try:
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        except OSError:
            return False
        if state == _TCP_CLOSE_WAIT:
            return self.outstanding > HALF_CLOSE_PENDING
        return state == _TCP_CLOSE

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        if self.queue:
            for item in self.queue:
                if not isinstance(item, bytes):
                    item.cancel()
            self.queue = None
        self.transport = None

    def pause_writing(self) -> None:  # the client does not read its answers: stop reading its requests
        self.write_paused = True
        if self.transport is not None and not self.backlogged:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.backlogged:
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self.partial_since is not None:  # the time we were not reading does not count against the client
            self.partial_since = self.server.loop.time()
        transport = self.transport
        assert transport is not None  # called only while connected (resume_writing, _flush check it)
        transport.resume_reading()

    def eof_received(self) -> bool | None:
        """The client half-closed its side (Exim's ``${readsocket}`` with ``shutdown=yes``): answer what it
        asked, then close. Returning ``None`` when nothing is pending lets asyncio close the transport after
        writing what is buffered; with answers still being resolved the connection stays half-open until
        ``_flush`` has written the last one. A client that leaves more than ``HALF_CLOSE_PENDING`` requests
        unanswered is no such client: most likely it has gone altogether, so the connection is closed at once
        and the lookups nobody else waits for are cancelled (``connection_lost``)."""
        if self.queue:
            if self.outstanding > HALF_CLOSE_PENDING:
                self.server.abandoned += 1
                self.abort()
                return None
            self.close_after = True
            return True
        return None

    def pending_futures(self) -> list:
        return [i for i in self.queue if not isinstance(i, bytes)] if self.queue else []

    def close(self) -> None:
        """Close after writing what is buffered; at once if the client does not read what it was sent."""
        transport = self.transport
        if transport is not None:
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()

    def data_received(self, data: bytes) -> None:
        # Data arrives only while connected, so self.transport is set here; the hot path does not check it
        # (the "type: ignore[union-attr]  # connected" comments below tell mypy so at no cost).
        server = self.server
        started = time.perf_counter() if server.timing else 0.0
        decoder = self.decoder
        items = decoder.feed(data)
        now = server.loop.time()
        self.last_active = now
        if decoder._buf:
            if self.partial_since is None:
                self.partial_since = now
        elif self.partial_since is not None:
            self.partial_since = None
        if not items:
            return
        memo = server.memo
        counts = server.reply_counts
        queue = self.queue
        out = []
        fast = 0
        for item in items:
            if item.__class__ is bytes:
                hit = memo.get(item)
                if hit is not None and hit[1] > now:
                    counts[hit[2]] += 1
                    fast += 1
                    if queue:
                        queue.append(hit[0])
                    else:
                        out.append(hit[0])
                    continue
                if self.outstanding >= server.max_pending:  # answered TEMP at once, in its place
                    server.pending_cap_hits += 1
                    counts[TEMP_AT] += 1
                    reply = server.busy_reply(item)
                    if queue:
                        queue.append(reply)
                    else:
                        out.append(reply)
                    continue
                self.outstanding += 1
                task = server.loop.create_task(server.answer(item, self))
                if not queue:
                    if out:
                        self.transport.write(b"".join(out))  # type: ignore[union-attr]  # connected
                        out = []
                    queue = self.queue = deque()
                queue.append(task)
                task.add_done_callback(self._flush)
            else:  # Framing: the stream is lost; answer PERM once, then close
                assert isinstance(item, Framing)
                server.bad_netstrings += 1
                server.quiet.log(logging.WARNING, "bad-netstring", "bad netstring from client; closing connection",
                                 reason=item.reason)
                reply = server._perm(item.reason)
                if queue:
                    queue.append(reply)
                    self.close_after = True
                else:
                    out.append(reply)
                    self.transport.write(b"".join(out))  # type: ignore[union-attr]  # connected
                    self.transport.close()  # type: ignore[union-attr]  # connected
                    return
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])  # type: ignore[union-attr]  # connected
        if queue and len(queue) >= server.max_pending and not self.backlogged:
            self.backlogged = True  # read no more until the answers it waits for have gone out
            if not self.write_paused:
                self.transport.pause_reading()  # type: ignore[union-attr]  # connected
        if fast:
            server.memo_hits += fast
            if started:
                server.latency.observe(time.perf_counter() - started, fast)

    def _flush(self, task=None) -> None:
        if task is not None:
            self.outstanding -= 1
        queue = self.queue
        transport = self.transport
        if queue is None or transport is None:
            return
        out = []
        while queue:
            head = queue[0]
            if isinstance(head, bytes):
                out.append(queue.popleft())
            elif head.done():
                queue.popleft()
                if head.cancelled():
                    out.append(encode(b"TEMP lookup cancelled"))
                elif head.exception() is not None:
                    log.error("answer failed", extra={"error": repr(head.exception())})
                    out.append(encode(b"TEMP internal error"))
                else:
                    out.append(head.result())
            else:
                break
        if out:
            transport.write(b"".join(out))
            self.last_active = self.server.loop.time()
        if self.backlogged and len(queue) < self.server.max_pending // 2 + 1:
            self.backlogged = False
            if not self.write_paused and not self.close_after:
                self._resume_reading()
        if not queue:
            self.queue = None
            if self.close_after:
                transport.close()
