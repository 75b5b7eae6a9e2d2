"""Connection limits of ``mxsec reports serve``: a cap on open connections and header/body timeouts.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and caps the size of a request head
(``h11_max_incomplete_event_size``), but it has no deadline for the request head itself and no cap on open
connections: a client that opens a thousand connections and sends one byte now and then keeps them all, and
the file descriptors run out. :class:`GuardedH11Protocol` is uvicorn's h11 protocol with three additions:

* **header timeout**: a connection must complete its request line and headers within ``header_timeout``
  seconds of being opened (and, on a kept-alive connection, of the previous response); else it is closed;
* **body timeout**: once the headers are in, the whole body must arrive within ``body_timeout`` seconds;
* **connection cap**: with ``max_connections`` connections open, a new one makes room by closing the oldest
  connection that has not yet sent a complete request head (the half-open ones an attacker holds), taken
  from the client address that holds the most of them; when every open connection is busy with a request,
  the new one gets a 503 and is closed.

So however many half-open connections an attacker holds, a client that sends its request promptly is served.
With TLS, the handshake gets ``header_timeout`` too (asyncio's default is 60 s).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("mxsec.reports.web")

DEFAULT_MAX_CONNECTIONS = 200
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 120.0
#: Largest request line plus headers (h11 answers 400 beyond it); uvicorn's default is the same.
MAX_HEAD_BYTES = 16 * 1024

_BUSY_TEXT = b"too many connections; try again\n"
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
         b"content-length: " + str(len(_BUSY_TEXT)).encode() + b"\r\n\r\n" + _BUSY_TEXT)


class ConnectionGuard:
    """The open connections of one server, oldest first, and the limits that apply to them."""

    def __init__(self, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 header_timeout: float = DEFAULT_HEADER_TIMEOUT, body_timeout: float = DEFAULT_BODY_TIMEOUT) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if not header_timeout > 0 or not body_timeout > 0:
            raise ValueError("timeouts must be positive")
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.open: dict[GuardedH11Protocol, None] = {}
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    def admit(self, protocol: GuardedH11Protocol) -> bool:
        if len(self.open) >= self.max_connections:
            victim = self._victim()
            if victim is None:
                self.refused += 1
                return False
            self.evicted += 1
            victim.drop("connection cap reached; closing the oldest connection without a request")
        self.open[protocol] = None
        return True

    def _victim(self) -> GuardedH11Protocol | None:
        """The oldest connection without a complete request head, from the address that holds the most such
        connections: one flooding address loses its own connections first, not those of other clients."""
        waiting = [p for p in self.open if p.awaiting_head]
        if not waiting:
            return None
        counts: dict[Any, int] = {}
        for p in waiting:
            counts[p.peer_address] = counts.get(p.peer_address, 0) + 1
        most = max(counts.values())
        return next(p for p in waiting if counts[p.peer_address] == most)

    def release(self, protocol: GuardedH11Protocol) -> None:
        self.open.pop(protocol, None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol under a :class:`ConnectionGuard` (set on a subclass by :func:`protocol_class`)."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.awaiting_head = True
        self._deadline: asyncio.TimerHandle | None = None
        self._timing: str | None = None
        self._seen_cycle: Any = None
        self._admitted = False

    @property
    def peer_address(self) -> Any:
        return self.client[0] if self.client else None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # a stream server
        super().connection_made(transport)
        if not self.guard.admit(self):
            log.warning("%s: refused: %d connections open, all busy", _peer(self.client), len(self.guard.open))
            transport.write(_BUSY)
            transport.close()
            return
        self._admitted = True
        self._arm("header", self.guard.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request
        if self.transport.is_closing():
            return
        if self.cycle is self._seen_cycle:  # no new request started: wait for the next head
            self.awaiting_head = True
            self._arm("header", self.guard.header_timeout)
        self._follow()

    def _follow(self) -> None:
        """After events were handled: a new request head completes the header deadline and starts the body's."""
        cycle = self.cycle
        if cycle is not None and cycle is not self._seen_cycle:
            self._seen_cycle = cycle
            self.awaiting_head = False
            self._disarm()
            if cycle.more_body:
                self._arm("body", self.guard.body_timeout)
        elif self._timing == "body" and cycle is not None and not cycle.more_body:
            self._disarm()

    def _arm(self, what: str, seconds: float) -> None:
        self._disarm()
        self._timing = what
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._timing = None

    def _expired(self) -> None:
        what = self._timing
        self._deadline = None
        self._timing = None
        self.guard.timed_out += 1
        self.drop(f"no complete request {'head' if what == 'header' else 'body'} in time")

    def drop(self, why: str) -> None:
        log.info("%s: closed: %s", _peer(self.client), why)
        self._disarm()
        self.guard.release(self)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if hasattr(self.transport, "abort"):
            self.transport.abort()
        else:  # pragma: no cover - every asyncio transport has abort()
            self.transport.close()


def _peer(client: Any) -> str:
    if not client:
        return "client"
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def protocol_class(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass bound to *guard*, for ``uvicorn.Config(http=...)``."""
    return type("MxsecH11Protocol", (GuardedH11Protocol,), {"guard": guard})


def uvicorn_options(guard: ConnectionGuard) -> dict[str, Any]:
    """The ``uvicorn.Config`` keywords that go with *guard*."""
    return {"http": protocol_class(guard), "h11_max_incomplete_event_size": MAX_HEAD_BYTES}
