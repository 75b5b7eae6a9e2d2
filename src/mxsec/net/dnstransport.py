"""Sending DNS queries to the configured resolvers: shared UDP sockets, TCP when truncated.

A cold daemon asks hundreds of questions at once. dnspython opens one UDP socket per query; here queries to
one resolver share a connected UDP socket, told apart by their 16-bit ID (and the question, checked by
:func:`mxsec.net.dnswire.parse_response`). A socket takes at most :data:`QUERIES_PER_SOCKET` queries and is
closed as soon as none of its queries is waiting, so the source port keeps changing (an off-path attacker must
guess port and ID, RFC 5452) and nothing stays open when the work stops. IDs come from the operating system's
random source.

There is no cap on queries in flight here: a cap shared by every lookup would let lookups that hang (an
attacker's names whose servers never answer) hold up everyone else's; the daemon bounds its resolutions per
client instead. A resolver should have a receive buffer for its load (Unbound: ``so-rcvbuf``); datagrams it
drops are sent again.
Per query (``lifetime`` bounds all of it): the first try waits a third of the lifetime (at least 0.2 s, at
most 1 s), then the query is sent again (to the next resolver when there are several), each try waiting twice
as long as the one before. A resolver that answers
SERVFAIL, REFUSED or another error code, sends a malformed answer or refuses the connection is not asked again
for this query; when none is left, or the lifetime is over, :class:`DnsFailure` says what each one did, in one
line. A truncated answer is asked again over TCP from the same resolver.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from dataclasses import dataclass, field

import dns.rcode

from mxsec.net.dnswire import ParsedResponse, WireError, encode_query, parse_response

__all__ = ["DnsFailure", "DnsTransport", "QUERIES_PER_SOCKET"]

QUERIES_PER_SOCKET = 64
#: longest wait for one try before the query is sent again (a resolver drops datagrams under bursts)
MAX_TRY = 1.0
#: receive buffer asked for each socket (the kernel caps it at net.core.rmem_max): a burst of answers must not be
#: dropped while the event loop is busy elsewhere, or the query waits for its resend
RECEIVE_BUFFER = 1 << 20
MAX_TCP_RESPONSE = 65535
_ERROR_RCODES_FINAL = (dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN)


class DnsFailure(Exception):
    """No usable answer; ``str()`` is one line naming each resolver and what went wrong."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _server_text(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return _one_line(exc.strerror or str(exc)) or type(exc).__name__
    return _one_line(str(exc)) or type(exc).__name__


class _Ids:
    """16-bit query IDs from os.urandom, fetched 2 KiB at a time."""

    def __init__(self) -> None:
        self._values: list[int] = []

    def next(self) -> int:
        if not self._values:
            self._values = list(struct.unpack("!1024H", os.urandom(2048)))
        return self._values.pop()


@dataclass(slots=True)
class _Pending:
    qname: bytes
    rdtype: int
    future: asyncio.Future


@dataclass(eq=False)
class _UdpSocket(asyncio.DatagramProtocol):
    server: tuple[str, int]
    pending: dict[int, _Pending] = field(default_factory=dict)
    transport: asyncio.DatagramTransport | None = None
    used: int = 0
    broken: bool = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) < 12:
            return
        entry = self.pending.get(data[0] << 8 | data[1])
        if entry is None or entry.future.done():
            return
        try:
            parsed = parse_response(data, data[0] << 8 | data[1], entry.qname, entry.rdtype)
        except WireError as exc:
            entry.future.set_exception(exc)
            return
        if parsed is not None:
            entry.future.set_result((data, parsed))

    def error_received(self, exc: Exception) -> None:
        self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("socket closed"))

    def _fail(self, exc: BaseException) -> None:
        self.broken = True
        for entry in self.pending.values():
            if not entry.future.done():
                entry.future.set_exception(exc)

    @property
    def takes_queries(self) -> bool:
        """Open, unbroken and not yet used up: new queries may go to it."""
        return self.transport is not None and not self.broken and self.used < QUERIES_PER_SOCKET

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class DnsTransport:
    """Queries to ``servers`` (``(ip, port)`` pairs, asked in order); usable from one event loop at a time."""

    def __init__(self, servers: list[tuple[str, int]]) -> None:
        if not servers:
            raise ValueError("no nameserver")
        self.servers = list(servers)
        self._ids = _Ids()
        self._current: dict[tuple[str, int], _UdpSocket] = {}
        self._opening: dict[tuple[str, int], asyncio.Future] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: datagrams sent, of which resent after a silent try; queries asked again over TCP; queries failed
        self.stats = {"sent": 0, "resent": 0, "tcp": 0, "failed": 0}

    async def query(self, qname: bytes, rdtype: int, lifetime: float) -> tuple[bytes, ParsedResponse]:
        """The response to one question (wire bytes and what :func:`parse_response` found).

        The RCODE is NOERROR, NXDOMAIN or YXDOMAIN; anything else counts as that resolver failing.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._current.clear()  # sockets of an earlier loop are that loop's business
            self._opening.clear()
            self._loop = loop
        deadline = loop.time() + lifetime
        per_try = min(max(lifetime / 3, 0.2), MAX_TRY)
        usable = list(self.servers)
        errors: dict[tuple[str, int], str] = {}
        turn = 0
        while usable:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            server = usable[turn % len(usable)]
            if turn:
                self.stats["resent"] += 1
            turn += 1
            try:
                # each try waits twice as long as the one before (a resolver that is slow, not lossy, is
                # not flooded with copies), all within the lifetime
                wire, parsed = await self._udp(server, qname, rdtype, min(per_try * (1 << min(turn - 1, 4)), remaining))
                if parsed.tc:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        errors[server] = "timeout over TCP"
                        break
                    self.stats["tcp"] += 1
                    wire, parsed = await self._tcp(server, qname, rdtype, remaining)
            except TimeoutError:
                errors.setdefault(server, "timeout")
                continue
            except WireError as exc:
                errors[server] = f"malformed response ({_one_line(str(exc))})"
                usable.remove(server)
                continue
            except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
                errors[server] = _describe_os_error(exc)
                usable.remove(server)
                continue
            if parsed.rcode in _ERROR_RCODES_FINAL:
                return wire, parsed
            errors[server] = dns.rcode.Rcode.to_text(parsed.rcode)
            usable.remove(server)
        self.stats["failed"] += 1
        detail = "; ".join(f"{what} from {_server_text(server)}" for server, what in errors.items())
        if usable and all(what == "timeout" for what in errors.values()):
            raise DnsFailure(f"timeout after {lifetime:g}s ({detail})" if detail else f"timeout after {lifetime:g}s")
        raise DnsFailure(detail or "no nameserver answered")

    # ------------------------------------------------------------------------------------------- UDP

    async def _socket(self, server: tuple[str, int]) -> _UdpSocket:
        """The socket new queries to ``server`` go to (a fresh one when the current one is used up)."""
        while True:  # every pass either returns or waits for a new socket, which the first waiters take
            sock = self._current.get(server)
            if sock is not None and sock.takes_queries:
                return sock
            opening = self._opening.get(server)
            if opening is None or opening.done():
                # A finished opening must never be awaited again here: awaiting a done future does not yield,
                # and with its socket used up this loop would spin without ever letting the event loop run.
                opening = self._opening[server] = asyncio.ensure_future(self._open(server))
            await asyncio.shield(opening)

    async def _open(self, server: tuple[str, int]) -> _UdpSocket:
        try:
            sock = _UdpSocket(server)
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: sock,
                                                                                     remote_addr=server)
            try:
                transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except (OSError, AttributeError):  # pragma: no cover - a platform without it keeps the default
                pass
            self._current[server] = sock
            return sock
        finally:
            if self._opening.get(server) is asyncio.current_task():
                del self._opening[server]

    async def _udp(self, server: tuple[str, int], qname: bytes, rdtype: int,
                   wait: float) -> tuple[bytes, ParsedResponse]:
        sock = self._current.get(server)
        if sock is None or not sock.takes_queries:
            sock = await self._socket(server)
        qid = self._ids.next()
        while qid in sock.pending:
            qid = self._ids.next()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        sock.pending[qid] = _Pending(qname, rdtype, future)
        sock.used += 1
        self.stats["sent"] += 1
        # one timer per try (cheaper than a timeout context: this runs for every query of a cold start)
        timer = loop.call_later(wait, _expire, future)
        try:
            sock.transport.sendto(encode_query(qid, qname, rdtype))  # type: ignore[union-attr]  # set on connection
            return await future
        finally:
            timer.cancel()
            del sock.pending[qid]
            if not sock.pending:
                # Nothing is waiting on it: close it, the next query gets a fresh port.
                sock.close()
                if self._current.get(server) is sock:
                    del self._current[server]

    # ------------------------------------------------------------------------------------------- TCP

    async def _tcp(self, server: tuple[str, int], qname: bytes, rdtype: int,
                   wait: float) -> tuple[bytes, ParsedResponse]:
        qid = self._ids.next()
        query = encode_query(qid, qname, rdtype)
        writer = None
        try:
            async with asyncio.timeout(wait):
                reader, writer = await asyncio.open_connection(server[0], server[1])
                writer.write(struct.pack("!H", len(query)) + query)
                await writer.drain()
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                wire = await reader.readexactly(size)
        finally:
            if writer is not None:
                writer.close()
        parsed = parse_response(wire, qid, qname, rdtype)
        if parsed is None:
            raise WireError("the TCP answer is for another question")
        return wire, parsed
