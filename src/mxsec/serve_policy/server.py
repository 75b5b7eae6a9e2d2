"""The HTTPS server of ``mxsec serve-policy`` (RFC 8461 §3.3).

It answers exactly ``GET``/``HEAD /.well-known/mta-sts.txt`` with the policy file's bytes, status 200 and
``Content-Type: text/plain; charset=utf-8``; any other path is 404 and any other method on the policy path
405, each with a one-line text body. Nothing redirects, nothing lists a directory, no response names the server
software or its version.

Layers:

* sans-I/O checks: :func:`policy_warnings` (weak settings) and :func:`certificate_problems` (names, validity,
  key usage of the leaf certificate);
* loaders that read files and raise :class:`~mxsec.errors.ConfigError` with a one-line message:
  :func:`load_policy`, :func:`load_certificate`;
* :class:`PolicyServer`: aiohttp's low-level web server on asyncio TLS listeners. The listeners keep one base
  TLS context for their whole life; its SNI callback (OpenSSL calls it for every ClientHello, with or without
  SNI) switches each new handshake to the certificate loaded last, which is how SIGHUP swaps certificates
  without closing the listening sockets;
* :func:`run`: start, SIGHUP = reload, SIGTERM/SIGINT = stop (exit status 0).

Decisions are explained in docs/generate.md ("Serving the policy without a web server").
"""


from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import ssl
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler

from mxsec.config import parse_listen
from mxsec.errors import ConfigError
from mxsec.serve_policy.acme import AcmeManager, AcmeOptions
from mxsec.serve_policy.challenges import ACME_TLS_ALPN
from mxsec.serve_policy.clienthello import ClientHello, ClientHelloError, read_client_hello
from mxsec.serve_policy.files import (
    LoadedCertificate,
    LoadedPolicy,
    _one_line,
    _when,
    load_certificate,
    policy_host,
    server_tls_context,
)
from mxsec.serve_policy.sites import Site, SiteSet, load_sites, reload_sites

__all__ = ["CACHE_CONTROL", "CONTENT_TYPE", "POLICY_PATH", "PolicyServer", "ServeSettings", "prepare", "run"]

log = logging.getLogger("mxsec.serve_policy")

POLICY_PATH = "/.well-known/mta-sts.txt"
CONTENT_TYPE = "text/plain; charset=utf-8"
#: Senders must not use HTTP caching (RFC 8461 §3.3); this tells any cache that sits in front of us the same,
#: so a policy edited together with a new TXT id is never answered from an older stored copy.
CACHE_CONTROL = "no-cache"
#: The ``Server`` header of every response: the product only, never a version.
SERVER_HEADER = "mxsec"
DEFAULT_LISTEN = ("0.0.0.0:443", "[::]:443")

# Request limits (aiohttp.web RequestHandler settings).
MAX_LINE_SIZE = 4096
MAX_FIELD_SIZE = 4096
MAX_HEADERS = 32
KEEPALIVE_TIMEOUT = 5.0
LINGERING_TIME = 1.0
MAX_LOGGED_PATH = 200
#: bytes peeked for the ClientHello (a record of 16 KiB and a little more)
PEEK_BYTES = 16384 + 5 + 1024
#: at most one log line a second about connections refused at the limit (it says how many)
REFUSAL_LOG_INTERVAL = 1.0


# --------------------------------------------------------------------------- HTTP
class _RequestLogger(AbstractAccessLogger):
    """One log line per response: method, path, status, peer (and bytes, duration)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if getattr(response, "_mxsec_bad_request", False):
            method, path = "-", "-"  # the request could not be parsed; aiohttp's stand-in request means nothing
        else:
            method = request.method
            path = request.rel_url.raw_path
            if len(path) > MAX_LOGGED_PATH:
                path = path[:MAX_LOGGED_PATH] + "..."
        status = response.status
        self.logger.info(
            f"{method} {path} {status}",
            extra={
                "method": method,
                "path": path,
                "status": status,
                "peer": _peer(request),
                "bytes": response.body_length,
                "ms": round(time * 1000, 1),
            },
        )


def _peer(request: web.BaseRequest) -> str:
    transport = request.transport
    peer = _peer_of(transport) if transport is not None else "-"
    return peer if peer != "-" else request.remote or "-"


class _Handler(RequestHandler):
    """aiohttp's protocol with: a cap on each connection's lifetime, short error replies, no version banner,
    one-line error logging (no tracebacks from clients' bad requests)."""

    def __init__(self, manager: _WebServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._mxsec_server = manager.owner
        self._mxsec_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        owner = self._mxsec_server
        owner.active += 1
        super().connection_made(transport)
        if owner.active > owner.settings.max_connections:
            log.warning("too many connections; closing a new one",
                        extra={"limit": owner.settings.max_connections})
            self.force_close()
            return
        self._mxsec_deadline = self._loop.call_later(owner.settings.connection_timeout, self._expire)

    def _expire(self) -> None:
        self._mxsec_deadline = None
        log.debug("connection timeout; closing", extra={"timeout": self._mxsec_server.settings.connection_timeout})
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._mxsec_deadline is not None:
            self._mxsec_deadline.cancel()
            self._mxsec_deadline = None
        self._mxsec_server.active -= 1
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("internal error", extra={"error": _one_line(exc) if exc else message or str(status)})
        else:
            log.debug("bad request", extra={"error": _one_line(message or exc or status)})
        self._mxsec_server.responses[status] += 1
        response = _plain(status, _REASONS.get(status, "bad request"))
        if status < 500:  # a request aiohttp could not parse: its stand-in request has no real method or path
            response._mxsec_bad_request = True  # type: ignore[attr-defined]  # our own mark, read by the access log
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("exc_info", None)
        log.debug(*args, **kwargs)


class _WebServer(web.Server):
    """``aiohttp.web.Server`` whose connections use :class:`_Handler`."""

    def __init__(self, owner: PolicyServer, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.owner = owner

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


_REASONS = {
    400: "bad request",
    404: "not found",
    405: "method not allowed",
    408: "request timeout",
    413: "request too large",
    414: "request line too long",
    431: "request header fields too large",
    500: "internal error",
    503: "unavailable",
    504: "timeout",
}


def _plain(status: int, text: str) -> web.Response:
    """An error reply: one line of text, and the connection closed after it."""
    response = web.Response(
        status=status,
        body=(text + "\n").encode("ascii"),
        headers={"Content-Type": CONTENT_TYPE, "Server": SERVER_HEADER, "Cache-Control": "no-store"},
    )
    response.force_close()
    return response


# --------------------------------------------------------------------------- the server
@dataclass
class ServeSettings:
    policy_path: str | None = None  # one policy file (for every --domain)
    cert_path: str | None = None
    key_path: str | None = None
    listen: Sequence[str] = ()  # empty: DEFAULT_LISTEN
    domains: Sequence[str] = ()
    connection_timeout: float = 30.0  # whole life of one connection after the TLS handshake
    handshake_timeout: float = 10.0  # from accept to the end of the TLS handshake
    shutdown_timeout: float = 5.0
    max_connections: int = 512
    backlog: int = 128
    policy_dir: str | None = None  # one <domain>.txt per domain
    sites_path: str | None = None  # the TOML template with per-domain MX lists
    acme: AcmeOptions | None = None  # obtain the certificates by ACME instead of --cert/--key
    http_listen: Sequence[str] = ()  # plain HTTP listeners, for ACME HTTP-01 answers only
    reuse_port: bool = False  # SO_REUSEPORT: share the port with another server (handover, a wildcard listener)
    metrics_listen: str | None = None  # HOST:PORT for Prometheus (serve_policy/metrics.py)


class _ChallengeAnswer(asyncio.Protocol):
    """A TLS-ALPN-01 validation: the handshake with the challenge certificate is the whole answer."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        log.info("TLS-ALPN-01 challenge answered", extra={"peer": _peer_of(transport)})
        transport.close()


@dataclass
class PolicyServer:
    """Serves the policy of each site with its certificate; :meth:`reload` swaps what changed and is valid."""

    settings: ServeSettings
    sites: SiteSet
    certificate: LoadedCertificate | None = None  # --cert/--key: one certificate for every host
    acme: AcmeManager | None = None  # --acme-directory: one certificate per host, obtained and renewed
    active: int = 0  # connections past their TLS handshake
    opening: int = 0  # connections accepted, TLS handshake not finished
    bound: list[str] = field(default_factory=list)
    http_bound: list[str] = field(default_factory=list)
    _listeners: list[socket.socket] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _web: _WebServer | None = None
    _http_web: _WebServer | None = None
    _base_context: ssl.SSLContext | None = None
    _refused_logged_at: float = float("-inf")
    _refused_unlogged: int = 0  # connections refused at accept since the last log line about them
    _refused_flush: asyncio.TimerHandle | None = None
    #: responses by status code (policy and challenge listeners alike), connections refused at the limit
    responses: Counter[int] = field(default_factory=Counter)
    refused: int = 0

    @property
    def policy(self) -> LoadedPolicy:
        """The policy served when there is one for every host (``--policy``), else the first site's."""
        site = self.sites.any_host or next(iter(self.sites.sites.values()))
        return site.policy

    # ----------------------------------------------------------------- requests
    def _site(self, request: web.BaseRequest) -> Site | None:
        if self.sites.any_host is not None:
            return self.sites.any_host
        host = request.headers.get("Host")
        if host:
            return self.sites.for_host(host)
        if len(self.sites.sites) == 1:  # HTTP/1.0 without Host: the only site there is
            return next(iter(self.sites.sites.values()))
        return None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.rel_url.raw_path != POLICY_PATH:
            return _plain(404, "not found")
        if request.method not in ("GET", "HEAD"):
            response = _plain(405, "method not allowed")
            response.headers["Allow"] = "GET, HEAD"
            return response
        site = self._site(request)  # one snapshot per request: a reload never mixes two files
        if site is None:
            return _plain(404, "not found")
        return web.Response(
            status=200,
            body=site.policy.body,
            headers={
                "Content-Type": CONTENT_TYPE,
                "Cache-Control": CACHE_CONTROL,
                "X-Content-Type-Options": "nosniff",
                "Server": SERVER_HEADER,
            },
        )

    async def handle_http(self, request: web.BaseRequest) -> web.StreamResponse:
        """The plain HTTP listener: ACME HTTP-01 answers, nothing else (policies are served over HTTPS only)."""
        answer = self.acme.pending.http01_answer(request.rel_url.raw_path) if self.acme is not None else None
        if answer is None or request.method not in ("GET", "HEAD"):
            return _plain(404, "not found")
        log.info("HTTP-01 challenge answered", extra={"path": request.rel_url.raw_path, "peer": _peer(request)})
        return web.Response(status=200, body=answer.encode("ascii"),
                            headers={"Content-Type": "application/octet-stream", "Server": SERVER_HEADER})

    # ----------------------------------------------------------------- TLS
    def _context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        if self.acme is not None:
            return self.acme.context_for(server_name) or self.acme.default_context()
        return self.certificate.context if self.certificate is not None else None

    def _sni(self, ssl_object: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> int | None:
        current = self._context_for(server_name)
        if current is None:  # no certificate (yet) for any host: refuse the handshake
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        if ssl_object.context is not current:
            ssl_object.context = current  # the certificate loaded last; the listener's context stays
        return None

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors and the like: pause, never spin
                log.warning("accept failed", extra={"error": _one_line(exc)})
                await asyncio.sleep(0.1)
                continue
            if self.active + self.opening >= self.settings.max_connections:
                conn.close()
                self.refused += 1
                self._refused_unlogged += 1
                wait = self._refused_logged_at + REFUSAL_LOG_INTERVAL - loop.time()
                if wait <= 0:  # a flood writes one line a second, saying how many
                    self._log_refused()
                elif self._refused_flush is None:
                    self._refused_flush = loop.call_later(wait, self._log_refused)
            else:
                self.opening += 1
                task = loop.create_task(self._open(conn))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(0)  # a flood of ready connections must not starve the requests being served

    def _log_refused(self) -> None:
        self._refused_flush = None
        if self._refused_unlogged:
            log.warning("too many connections; closing a new one",
                        extra={"limit": self.settings.max_connections, "refused": self._refused_unlogged})
        self._refused_logged_at, self._refused_unlogged = asyncio.get_running_loop().time(), 0

    async def _open(self, conn: socket.socket) -> None:
        """Read the ClientHello without consuming it, choose the TLS context, then hand the socket to TLS."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.handshake_timeout
        factory: Any = self._web
        context = self._base_context
        try:
            conn.setblocking(False)
            try:
                hello = await asyncio.wait_for(_peek_client_hello(conn), self.settings.handshake_timeout)
            except (TimeoutError, OSError):
                conn.close()
                return
            if hello is not None and ACME_TLS_ALPN in hello.alpn and self.acme is not None:
                challenge = self.acme.pending.tls_alpn01_context(hello.server_name)
                if challenge is not None:
                    context, factory = challenge, _ChallengeAnswer
            try:
                await loop.connect_accepted_socket(
                    factory, conn, ssl=context,
                    ssl_handshake_timeout=max(0.1, deadline - loop.time()),
                    ssl_shutdown_timeout=min(5.0, self.settings.shutdown_timeout),
                )
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                log.debug("TLS handshake failed", extra={"error": _one_line(exc)})
                conn.close()
        finally:
            self.opening -= 1

    # ----------------------------------------------------------------- lifecycle
    def _web_server(self, handler: Any) -> _WebServer:
        async def counted(request: web.BaseRequest) -> web.StreamResponse:
            response = await handler(request)
            self.responses[response.status] += 1
            return response

        return _WebServer(
            self,
            counted,
            handler_cancellation=True,
            access_log_class=_RequestLogger,
            access_log=logging.getLogger("mxsec.serve_policy.request"),
            logger=log,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            lingering_time=LINGERING_TIME,
            max_line_size=MAX_LINE_SIZE,
            max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
            auto_decompress=False,
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._web = self._web_server(self.handle)
        # The listeners keep this context; its SNI callback hands every handshake the certificate of its host.
        self._base_context = server_tls_context()
        self._base_context.sni_callback = self._sni
        explicit = bool(self.settings.listen)
        for addr in self.settings.listen or DEFAULT_LISTEN:
            listener = _bind(addr, self.settings.backlog, explicit=explicit, reuse_port=self.settings.reuse_port)
            if listener is None:
                continue
            self._listeners.append(listener)
            where = _where(listener)
            self.bound.append(where)
            log.info("listening", extra={"listen": where})
            task = loop.create_task(self._accept(listener))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self.settings.http_listen:
            self._http_web = self._web_server(self.handle_http)
            for addr in self.settings.http_listen:
                listener = _bind(addr, self.settings.backlog, explicit=True, reuse_port=self.settings.reuse_port)
                assert listener is not None
                server = await loop.create_server(self._http_web, sock=listener)
                self._servers.append(server)
                self.http_bound.append(_where(listener))
                log.info("listening for ACME HTTP-01", extra={"listen": _where(listener)})
        if self.acme is not None:
            task = loop.create_task(self.acme.run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _hosts(self) -> list[str]:
        return [site.host for site in self.sites.sites.values()]

    def reload(self) -> tuple[bool, bool]:
        """SIGHUP: re-read the policies and the certificate; each replaces the running one only when valid."""
        settings = self.settings
        sites, errors = reload_sites(self.sites, policy_path=settings.policy_path, policy_dir=settings.policy_dir,
                                     sites_path=settings.sites_path, domains=settings.domains)
        for error in errors:
            log.error("reload: policy not replaced; still serving the previous one",
                      extra={"policy": sites.source, "error": error})
        changed = _changed_sites(self.sites, sites)
        self.sites = sites
        for site in changed:
            for warning in site.policy.warnings:
                log.warning(warning, extra={"policy": site.policy.path})
        if changed or not errors:
            policy = self.policy
            log.info("policy reloaded", extra={"policy": sites.source, "changed": bool(changed),
                                               "changed_domains": len(changed), "domains": len(sites.sites),
                                               "mode": policy.policy.mode, "max_age": policy.policy.max_age})
        if self.acme is not None:
            self.acme.set_hosts(self._hosts())
            return not errors, True
        assert settings.cert_path is not None and settings.key_path is not None and self.certificate is not None
        try:
            certificate = load_certificate(settings.cert_path, settings.key_path, sites.domains or settings.domains)
        except ConfigError as exc:
            log.error("reload: certificate not replaced; still serving the previous one",
                      extra={"cert": settings.cert_path, "error": str(exc)})
            return not errors, False
        cert_changed = (certificate.serial != self.certificate.serial
                        or certificate.subject != self.certificate.subject)
        self.certificate = certificate
        for warning in certificate.warnings:
            log.warning(warning, extra={"cert": certificate.cert_path})
        log.info("certificate reloaded", extra={"cert": certificate.cert_path, "changed": cert_changed,
                                                "not_after": _when(certificate.not_after)})
        return not errors, True

    async def stop(self) -> None:
        if self._refused_flush is not None:
            self._refused_flush.cancel()
            self._refused_flush = None
        tasks = list(self._tasks)  # accept loops first: a loop on a closed listener would only log errors
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        for server in self._servers:
            server.close()
        for webserver in (self._web, self._http_web):
            if webserver is None:
                continue
            try:
                await asyncio.wait_for(webserver.shutdown(self.settings.shutdown_timeout),
                                       self.settings.shutdown_timeout + 1)
            except TimeoutError:  # pragma: no cover - shutdown() bounds itself
                log.warning("connections still open at shutdown; closing them")
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), self.settings.shutdown_timeout)
            except TimeoutError:  # pragma: no cover
                pass
        self._servers.clear()


def _every_site(sites: SiteSet) -> dict[str, Site]:
    """The sites by host, the one served for every host included (under "")."""
    return {**sites.sites, **({"": sites.any_host} if sites.any_host is not None else {})}


def _changed_sites(before: SiteSet, after: SiteSet) -> list[Site]:
    old = _every_site(before)
    return [site for key, site in _every_site(after).items()
            if key not in old or old[key].policy.body != site.policy.body]


async def _wait_readable(conn: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def mark() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), mark)
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())


async def _peek_client_hello(conn: socket.socket) -> ClientHello | None:
    """The ClientHello at the head of ``conn``, left unread for TLS; None when it is no ClientHello we can read.

    The caller bounds the time. A hello that arrives in pieces is peeked again every 20 ms (the socket stays
    readable while the first piece waits, so waiting for readability alone would spin). A peer that resets or
    half-closes before its hello is complete is given up at once (ConnectionResetError), not at the time limit.
    """
    seen = 0
    while True:
        await _wait_readable(conn)
        data = conn.recv(PEEK_BYTES, socket.MSG_PEEK)
        if not data:
            raise ConnectionResetError("closed before the TLS handshake")
        try:
            hello = read_client_hello(data)
        except ClientHelloError:
            return None  # TLS itself answers (and fails) a hello we cannot read
        if hello is not None or len(data) >= PEEK_BYTES:
            return hello
        if len(data) == seen:
            if _peer_gone(conn):  # a reset or FIN after part of a hello: peeking would see the same bytes forever
                raise ConnectionResetError("closed during the ClientHello")
            await asyncio.sleep(0.02)
        seen = len(data)


#: TCP states (Linux include/net/tcp_states.h) in which the peer will send nothing more: CLOSE (it reset the
#: connection), CLOSE_WAIT (it sent FIN)
_TCP_PEER_GONE = frozenset({7, 8})


def _peer_gone(conn: socket.socket) -> bool:
    """True when the peer has reset or half-closed ``conn`` (TCP_INFO's state); False where that is unknown."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return False
    try:
        return conn.getsockopt(socket.IPPROTO_TCP, tcp_info, 1)[0] in _TCP_PEER_GONE
    except OSError:
        return False


def _bind(addr: str, backlog: int, *, explicit: bool, reuse_port: bool = False) -> socket.socket | None:
    """A non-blocking listening socket; None for the default IPv6 address on a machine without IPv6.

    ``reuse_port`` sets SO_REUSEPORT: another process of the same user may then bind the same port (a new
    serve-policy taking over from an old one, or a server bound to the wildcard address beside this one; the
    kernel hands a connection to the listener bound to its exact destination address first).
    """
    address = _listen_address(addr)
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        listener = socket.create_server((address.host, address.port), family=family, backlog=backlog,
                                        reuse_port=reuse_port, dualstack_ipv6=False)
    except OSError as exc:
        if not explicit and family == socket.AF_INET6 and _no_ipv6(exc):
            log.info("IPv6 not available; not listening on it", extra={"listen": addr})
            return None
        hint = ""
        if exc.errno in (errno.EACCES, errno.EPERM) and address.port < 1024:
            hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        raise ConfigError(f"cannot listen on {addr}: {exc.strerror or exc}{hint}") from None
    listener.setblocking(False)
    return listener


def _where(sock: socket.socket) -> str:
    name = sock.getsockname()
    return f"[{name[0]}]:{name[1]}" if sock.family == socket.AF_INET6 else f"{name[0]}:{name[1]}"


def _peer_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
    return "-"


def _listen_address(addr: str) -> Any:
    address = parse_listen(addr)
    if address.kind != "tcp":
        raise ConfigError(f"bad listen address {addr!r}: serve-policy listens on HOST:PORT or [IPv6]:PORT only")
    return address


def _no_ipv6(exc: OSError) -> bool:
    return not socket.has_ipv6 or exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


def _start_metrics(server: PolicyServer, addr: str) -> Any:
    from mxsec.serve_policy.metrics import start_metrics

    address = _listen_address(addr)
    try:
        return start_metrics(server, address.host, address.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {addr} for metrics: {exc.strerror or exc}") from None


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    detail = f"{type(exc).__name__}: {_one_line(exc)}" if exc is not None else ""
    log.warning(_one_line(context.get("message", "event loop error")), extra={"error": detail})


# --------------------------------------------------------------------------- entry point
def prepare(settings: ServeSettings) -> PolicyServer:
    """Load and check everything before anything listens; raises :class:`ConfigError` (one line)."""
    for domain in settings.domains:
        policy_host(domain)
    metrics = [settings.metrics_listen] if settings.metrics_listen else []
    for addr in (*settings.listen, *settings.http_listen, *metrics):
        _listen_address(addr)
    sites = load_sites(policy_path=settings.policy_path, policy_dir=settings.policy_dir,
                       sites_path=settings.sites_path, domains=settings.domains)
    if settings.acme is not None:
        if settings.cert_path or settings.key_path:
            raise ConfigError("--cert/--key and --acme-directory exclude each other: give one way to get certificates")
        if not sites.sites:
            raise ConfigError("--acme-directory needs the policy domains: give --domain (with --policy), "
                              "--policy-dir or --sites")
        acme = AcmeManager(settings.acme, http01=bool(settings.http_listen))
        server = PolicyServer(settings, sites, acme=acme)
        acme.set_hosts(server._hosts())
        return server
    if settings.http_listen:
        raise ConfigError("--acme-http-listen answers ACME HTTP-01 challenges; it needs --acme-directory")
    if not settings.cert_path or not settings.key_path:
        raise ConfigError("give --cert and --key, or --acme-directory to obtain the certificates by ACME")
    certificate = load_certificate(settings.cert_path, settings.key_path, sites.domains or settings.domains)
    return PolicyServer(settings, sites, certificate=certificate)


async def run(settings: ServeSettings) -> int:
    """Serve until SIGTERM or SIGINT; SIGHUP reloads. Returns the exit status (0)."""
    server = prepare(settings)
    for site in _every_site(server.sites).values():
        for warning in site.policy.warnings:
            log.warning(warning, extra={"policy": site.policy.path})
    if server.certificate is not None:
        for warning in server.certificate.warnings:
            log.warning(warning, extra={"cert": server.certificate.cert_path})
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_exception)
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    try:
        try:
            await server.start()
            metrics = _start_metrics(server, settings.metrics_listen) if settings.metrics_listen else None
        except BaseException:
            await server.stop()
            raise
        hosts = server._hosts()
        policy = server.policy
        log.info(
            "ready",
            extra={
                "listen": list(server.bound),
                "policy": server.sites.source,
                "mode": policy.policy.mode,
                "max_age": policy.policy.max_age,
                "cert": server.certificate.cert_path if server.certificate is not None
                else f"ACME {settings.acme.directory_url if settings.acme else ''}",
                "not_after": _when(server.certificate.not_after) if server.certificate is not None else None,
                "domains": hosts[:20] + ([f"... {len(hosts)} in all"] if len(hosts) > 20 else []),
            },
        )
        await stopping.wait()
        log.info("stopping")
        if metrics is not None:
            metrics.shutdown()
        await server.stop()
        log.info("stopped")
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
