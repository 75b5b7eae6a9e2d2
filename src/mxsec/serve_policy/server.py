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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler

from mxsec.config import parse_listen
from mxsec.errors import ConfigError
from mxsec.serve_policy.files import (
    LoadedCertificate,
    LoadedPolicy,
    _one_line,
    _when,
    load_certificate,
    load_policy,
    policy_host,
)

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
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return request.remote or "-"


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
        response = _plain(status, _REASONS.get(status, "bad request"))
        response.force_close()
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
    return web.Response(
        status=status,
        body=(text + "\n").encode("ascii"),
        headers={"Content-Type": CONTENT_TYPE, "Server": SERVER_HEADER, "Cache-Control": "no-store"},
    )


# --------------------------------------------------------------------------- the server
@dataclass
class ServeSettings:
    policy_path: str
    cert_path: str
    key_path: str
    listen: Sequence[str] = ()  # empty: DEFAULT_LISTEN
    domains: Sequence[str] = ()
    connection_timeout: float = 30.0  # whole life of one connection after the TLS handshake
    handshake_timeout: float = 10.0
    shutdown_timeout: float = 5.0
    max_connections: int = 512
    backlog: int = 128


@dataclass
class PolicyServer:
    """Serves ``policy`` with ``certificate``; :meth:`reload` swaps either when the new one is valid."""

    settings: ServeSettings
    policy: LoadedPolicy
    certificate: LoadedCertificate
    active: int = 0
    bound: list[str] = field(default_factory=list)
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _web: _WebServer | None = None
    _base_context: ssl.SSLContext | None = None

    # ----------------------------------------------------------------- requests
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.rel_url.raw_path != POLICY_PATH:
            response = _plain(404, "not found")
            response.force_close()
            return response
        if request.method not in ("GET", "HEAD"):
            response = _plain(405, "method not allowed")
            response.headers["Allow"] = "GET, HEAD"
            response.force_close()
            return response
        policy = self.policy  # one snapshot per request: a reload never mixes two files
        return web.Response(
            status=200,
            body=policy.body,
            headers={
                "Content-Type": CONTENT_TYPE,
                "Cache-Control": CACHE_CONTROL,
                "X-Content-Type-Options": "nosniff",
                "Server": SERVER_HEADER,
            },
        )

    # ----------------------------------------------------------------- TLS
    def _sni(self, ssl_object: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
        current = self.certificate.context
        if ssl_object.context is not current:
            ssl_object.context = current  # the certificate loaded last; the listener's context stays

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._web = _WebServer(
            self,
            self.handle,
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
        # The listeners keep this context; its SNI callback hands every handshake the certificate loaded last.
        self._base_context = self.certificate.context
        self._base_context.sni_callback = self._sni
        explicit = bool(self.settings.listen)
        for addr in self.settings.listen or DEFAULT_LISTEN:
            address = _listen_address(addr)
            try:
                server = await loop.create_server(
                    self._web,
                    address.host,
                    address.port,
                    ssl=self._base_context,
                    ssl_handshake_timeout=self.settings.handshake_timeout,
                    ssl_shutdown_timeout=min(5.0, self.settings.shutdown_timeout),
                    backlog=self.settings.backlog,
                    reuse_address=True,
                )
            except OSError as exc:
                if not explicit and ":" in address.host and _no_ipv6(exc):
                    log.info("IPv6 not available; not listening on it", extra={"listen": addr})
                    continue
                hint = ""
                if exc.errno in (errno.EACCES, errno.EPERM) and address.port < 1024:
                    hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                raise ConfigError(f"cannot listen on {addr}: {exc.strerror or exc}{hint}") from None
            self._servers.append(server)
            for sock in server.sockets:
                name = sock.getsockname()
                where = f"[{name[0]}]:{name[1]}" if sock.family == socket.AF_INET6 else f"{name[0]}:{name[1]}"
                self.bound.append(where)
                log.info("listening", extra={"listen": where})

    def reload(self) -> tuple[bool, bool]:
        """SIGHUP: re-read the policy and the certificate; each replaces the running one only when valid."""
        policy_ok = cert_ok = False
        try:
            policy = load_policy(self.settings.policy_path)
        except ConfigError as exc:
            log.error("reload: policy not replaced; still serving the previous one",
                      extra={"policy": self.settings.policy_path, "error": str(exc)})
        else:
            changed = policy.body != self.policy.body
            self.policy = policy
            policy_ok = True
            for warning in policy.warnings:
                log.warning(warning, extra={"policy": policy.path})
            log.info("policy reloaded", extra={"policy": policy.path, "changed": changed, "mode": policy.policy.mode,
                                               "max_age": policy.policy.max_age})
        try:
            certificate = load_certificate(self.settings.cert_path, self.settings.key_path, self.settings.domains)
        except ConfigError as exc:
            log.error("reload: certificate not replaced; still serving the previous one",
                      extra={"cert": self.settings.cert_path, "error": str(exc)})
        else:
            changed = certificate.serial != self.certificate.serial or certificate.subject != self.certificate.subject
            self.certificate = certificate
            cert_ok = True
            for warning in certificate.warnings:
                log.warning(warning, extra={"cert": certificate.cert_path})
            log.info("certificate reloaded", extra={"cert": certificate.cert_path, "changed": changed,
                                                    "not_after": _when(certificate.not_after)})
        return policy_ok, cert_ok

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self._web is not None:
            try:
                await asyncio.wait_for(self._web.shutdown(self.settings.shutdown_timeout),
                                       self.settings.shutdown_timeout + 1)
            except TimeoutError:  # pragma: no cover - shutdown() bounds itself
                log.warning("connections still open at shutdown; closing them")
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), self.settings.shutdown_timeout)
            except TimeoutError:  # pragma: no cover
                pass
        self._servers.clear()


def _listen_address(addr: str) -> Any:
    address = parse_listen(addr)
    if address.kind != "tcp":
        raise ConfigError(f"bad listen address {addr!r}: serve-policy listens on HOST:PORT or [IPv6]:PORT only")
    return address


def _no_ipv6(exc: OSError) -> bool:
    return not socket.has_ipv6 or exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    detail = f"{type(exc).__name__}: {_one_line(exc)}" if exc is not None else ""
    log.warning(_one_line(context.get("message", "event loop error")), extra={"error": detail})


# --------------------------------------------------------------------------- entry point
def prepare(settings: ServeSettings) -> PolicyServer:
    """Load and check everything before anything listens; raises :class:`ConfigError` (one line)."""
    for domain in settings.domains:
        policy_host(domain)
    for addr in settings.listen:
        _listen_address(addr)
    policy = load_policy(settings.policy_path)
    certificate = load_certificate(settings.cert_path, settings.key_path, settings.domains)
    return PolicyServer(settings, policy, certificate)


async def run(settings: ServeSettings) -> int:
    """Serve until SIGTERM or SIGINT; SIGHUP reloads. Returns the exit status (0)."""
    server = prepare(settings)
    for warning in server.policy.warnings:
        log.warning(warning, extra={"policy": server.policy.path})
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
        except BaseException:
            await server.stop()
            raise
        log.info(
            "ready",
            extra={
                "listen": list(server.bound),
                "policy": server.policy.path,
                "mode": server.policy.policy.mode,
                "max_age": server.policy.policy.max_age,
                "cert": server.certificate.cert_path,
                "not_after": _when(server.certificate.not_after),
                "domains": [policy_host(d) for d in settings.domains],
            },
        )
        await stopping.wait()
        log.info("stopping")
        await server.stop()
        log.info("stopped")
        return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
