"""The socketmap server: asyncio listeners in front of the policy service.

Hot path: a request whose answer is known (a cached policy, a remembered "no policy") is answered inside
``data_received`` from a table keyed by the raw request bytes, without creating a task or touching the
network; a batch of pipelined requests becomes one ``write``. Requests that need a resolution become tasks;
replies always leave in request order (a connection's later answers wait for its earlier ones).

A framing error (not a netstring, oversized) gets one ``PERM`` reply and closes that connection only; a
well-framed but unusable request (unknown map, bad domain) gets ``PERM`` and the connection stays open.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable

from mxsec.daemon.replies import Zone, format_reply, not_applicable_reply, reply_kind
from mxsec.daemon.service import PolicyService
from mxsec.daemon.socketmap import Framing, NetstringDecoder, RequestError, encode, parse_request
from mxsec.errors import ParseError
from mxsec.names import is_ip_literal, normalize_domain
from mxsec.verdict import Verdict

log = logging.getLogger("mxsec.daemon")

KINDS = ("ok", "notfound", "temp", "perm")
_KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
#: latency histogram bucket bounds, seconds
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0, 60.0)
#: memo size bound: beyond it the table is cleared (it refills from the service's own tables)
MEMO_LIMIT = 200_000
#: requests that never depend on the network (address literals...) are remembered this long
STATIC_MEMO_SECONDS = 86400.0


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
    ) -> None:
        self.service = service
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
        self.rejected_connections = 0
        service.listeners.append(self.invalidate)

    # -- memo -----------------------------------------------------------------------------------------------
    def invalidate(self, domain: str) -> None:
        for raw in self.memo_by_domain.pop(domain, ()):
            self.memo.pop(raw, None)

    def clear_memo(self) -> None:
        self.memo.clear()
        self.memo_by_domain.clear()

    def _remember(self, payload: bytes, reply: bytes, seconds: float, kind: int, domain: str | None) -> None:
        if seconds <= 0:
            return
        if len(self.memo) >= MEMO_LIMIT:
            self.clear_memo()
        self.memo[payload] = (reply, self.loop.time() + seconds, kind)
        if domain is not None:
            self.memo_by_domain.setdefault(domain, []).append(payload)

    # -- answers --------------------------------------------------------------------------------------------
    def _perm(self, reason: str) -> bytes:
        self.reply_counts[3] += 1
        return encode(b"PERM " + reason.encode("utf-8", "replace"))

    async def answer(self, payload: bytes) -> bytes:
        """Answer one request that was not in the memo (the slow path)."""
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
            self._remember(payload, reply, STATIC_MEMO_SECONDS, 1, None)
            self.reply_counts[1] += 1
            return reply
        except (ParseError, RequestError) as exc:
            return self._perm(f"invalid domain: {exc}")
        verdict = await self.service.lookup(domain)
        if self.observer is not None:
            self.observer(verdict)
        text = format_reply(verdict, zone)
        kind = _KIND_INDEX.get(reply_kind(text), 3)
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
    __slots__ = ("server", "decoder", "transport", "queue", "close_after", "paused")

    def __init__(self, server: SocketmapServer) -> None:
        self.server = server
        self.decoder = NetstringDecoder()
        self.transport: asyncio.Transport | None = None
        #: replies waiting for an earlier slow answer: encoded bytes or futures, in request order
        self.queue: deque | None = None
        self.close_after = False

    def connection_made(self, transport) -> None:
        server = self.server
        if len(server.connections) >= server.max_connections:
            server.rejected_connections += 1
            transport.abort()
            return
        self.transport = transport
        server.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        if self.queue:
            for item in self.queue:
                if not isinstance(item, bytes):
                    item.cancel()
            self.queue = None
        self.transport = None

    def pause_writing(self) -> None:  # the client does not read its answers: stop reading its requests
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        """The client half-closed its side (Exim's ``${readsocket}`` with ``shutdown=yes``): answer what it
        asked, then close. Returning ``None`` when nothing is pending lets asyncio close the transport after
        writing what is buffered; with answers still being resolved the connection stays half-open until
        ``_flush`` has written the last one."""
        if self.queue:
            self.close_after = True
            return True
        return None

    def pending_futures(self) -> list:
        return [i for i in self.queue if not isinstance(i, bytes)] if self.queue else []

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        server = self.server
        started = time.perf_counter() if server.timing else 0.0
        items = self.decoder.feed(data)
        if not items:
            return
        memo = server.memo
        counts = server.reply_counts
        now = server.loop.time()
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
                task = server.loop.create_task(server.answer(item))
                if not queue:
                    if out:
                        self.transport.write(b"".join(out))
                        out = []
                    queue = self.queue = deque()
                queue.append(task)
                task.add_done_callback(self._flush)
            else:  # Framing: the stream is lost; answer PERM once, then close
                assert isinstance(item, Framing)
                log.warning("bad netstring from client; closing connection", extra={"reason": item.reason})
                reply = server._perm(item.reason)
                if queue:
                    queue.append(reply)
                    self.close_after = True
                else:
                    out.append(reply)
                    self.transport.write(b"".join(out))
                    self.transport.close()
                    return
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if fast:
            server.memo_hits += fast
            if started:
                server.latency.observe(time.perf_counter() - started, fast)

    def _flush(self, _task=None) -> None:
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
        if not queue:
            self.queue = None
            if self.close_after:
                transport.close()
