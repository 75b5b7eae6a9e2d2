"""``mxsec serve-policy``: a small built-in HTTPS host for one MTA-STS policy file (RFC 8461 §3.3).

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
import datetime as _dt
import errno
import logging
import os
import signal
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from mxsec.config import parse_listen
from mxsec.errors import ConfigError
from mxsec.names import DomainError, normalize_domain
from mxsec.sts.policy import MAX_POLICY_BYTES, PolicyError, StsPolicy, parse_policy

__all__ = [
    "CACHE_CONTROL",
    "CONTENT_TYPE",
    "POLICY_PATH",
    "LoadedCertificate",
    "LoadedPolicy",
    "PolicyServer",
    "ServeSettings",
    "certificate_covers",
    "certificate_problems",
    "load_certificate",
    "load_policy",
    "policy_host",
    "policy_warnings",
    "prepare",
    "run",
    "server_tls_context",
]

log = logging.getLogger("mxsec.serve_policy")

POLICY_PATH = "/.well-known/mta-sts.txt"
CONTENT_TYPE = "text/plain; charset=utf-8"
#: Senders must not use HTTP caching (RFC 8461 §3.3); this tells any cache that sits in front of us the same,
#: so a policy edited together with a new TXT id is never answered from an older stored copy.
CACHE_CONTROL = "no-cache"
#: The ``Server`` header of every response: the product only, never a version.
SERVER_HEADER = "mxsec"
DEFAULT_LISTEN = ("0.0.0.0:443", "[::]:443")

#: Below one day a policy (enforce or testing) gets a warning; one week is what the warning suggests.
SHORT_MAX_AGE = 86400
RECOMMENDED_MAX_AGE = 604800
#: A certificate that expires within this many days gets a warning.
EXPIRY_WARNING_DAYS = 14
MAX_CERT_FILE_BYTES = 1 << 20

# Request limits (aiohttp.web RequestHandler settings).
MAX_LINE_SIZE = 4096
MAX_FIELD_SIZE = 4096
MAX_HEADERS = 32
KEEPALIVE_TIMEOUT = 5.0
LINGERING_TIME = 1.0
MAX_LOGGED_PATH = 200


# --------------------------------------------------------------------------- the policy file
@dataclass(frozen=True)
class LoadedPolicy:
    """A policy file that parsed: the bytes served as they are, and what the parser made of them."""

    path: str
    body: bytes
    policy: StsPolicy
    warnings: tuple[str, ...] = ()


def policy_warnings(policy: StsPolicy) -> list[str]:
    """Advice about a valid policy: weak modes, a short ``max_age``, and what the parser had to skip."""
    warnings = [f"policy: {note}" for note in policy.warnings]
    if policy.mode == "none":
        warnings.append(
            "mode none: senders drop this domain's MTA-STS policy and enforce nothing (this is how MTA-STS is "
            "withdrawn; keep serving it for at least the old max_age)"
        )
    elif policy.mode == "testing":
        warnings.append(
            "mode testing: senders report failures (TLSRPT) but still deliver without a verified TLS connection; "
            "switch to enforce once the reports are clean"
        )
    if policy.mode != "none" and policy.max_age < SHORT_MAX_AGE:
        warnings.append(
            f"max_age {policy.max_age} is under one day: senders forget the policy quickly and a downgrade "
            f"attack can strip it; use at least {RECOMMENDED_MAX_AGE} (one week)"
        )
    return warnings


def load_policy(path: str | os.PathLike[str]) -> LoadedPolicy:
    """Read and validate the policy file; raise :class:`ConfigError` (one line) when it is unusable."""
    shown = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            body = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read policy {shown}: {exc.strerror or exc}") from None
    try:
        policy = parse_policy(body)
    except PolicyError as exc:
        raise ConfigError(f"policy {shown} is not a valid MTA-STS policy: {_one_line(exc)}") from None
    return LoadedPolicy(shown, body, policy, tuple(policy_warnings(policy)))


# --------------------------------------------------------------------------- the certificate
def policy_host(domain: str) -> str:
    """``mta-sts.<domain>`` as an A-label; raise :class:`ConfigError` for a name that is not a policy domain."""
    try:
        name = normalize_domain(domain)
    except DomainError as exc:
        raise ConfigError(f"--domain {domain!r}: {exc}") from None
    if name.startswith("mta-sts."):
        raise ConfigError(
            f"--domain {domain!r}: give the policy domain ({name[len('mta-sts.'):]}), not the policy host ({name})"
        )
    return f"mta-sts.{name}"


def certificate_covers(dns_names: Iterable[str], host: str) -> bool:
    """True when one of the certificate's DNS names matches ``host`` the way TLS clients check it.

    An exact name (case-insensitive), or ``*.`` plus the parent of ``host``: the wildcard is the whole
    left-most label and stands for exactly one label. Partial wildcards (``mta*.example.com``) do not match,
    as in OpenSSL's host check with partial wildcards off (Python's default).
    """
    host = host.lower().rstrip(".")
    labels = host.split(".")
    parent = ".".join(labels[1:]) if len(labels) > 2 else None
    for name in dns_names:
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if parent is not None and name.startswith("*.") and name[2:] == parent:
            return True
    return False


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in san.get_values_for_type(x509.DNSName)]


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string() or "(empty subject)"
    except ValueError:  # pragma: no cover - undecodable subject
        return "(undecodable subject)"


def certificate_problems(
    cert: x509.Certificate, domains: Sequence[str] = (), *, now: _dt.datetime | None = None
) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` for the leaf certificate of the policy host. Sans-I/O.

    Errors: not yet valid, expired, an extended key usage without TLS server authentication, and with
    ``domains`` any ``mta-sts.<domain>`` that no DNS name (subjectAltName) of the certificate covers.
    Warnings: expires within :data:`EXPIRY_WARNING_DAYS` days, self-signed, and without ``domains`` a
    certificate that names no ``mta-sts.`` host at all. The chain is not checked against any trust store.
    """
    now = now if now is not None else _dt.datetime.now(_dt.UTC)
    errors: list[str] = []
    warnings: list[str] = []
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    if now < not_before:
        errors.append(f"certificate is not valid before {_when(not_before)}")
    if now > not_after:
        errors.append(f"certificate expired on {_when(not_after)}")
    elif not_after - now < _dt.timedelta(days=EXPIRY_WARNING_DAYS):
        days = (not_after - now).days
        warnings.append(f"certificate expires in {days} day{'s' if days != 1 else ''}, on {_when(not_after)}")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    server_usages = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)
    if eku is not None and not any(usage in eku for usage in server_usages):
        errors.append("certificate's extended key usage does not include TLS server authentication (serverAuth)")
    names = _dns_names(cert)
    if domains:
        for domain in domains:
            host = policy_host(domain)
            if certificate_covers(names, host):
                continue
            if names:
                listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                errors.append(f"certificate does not cover {host} (its DNS names: {listed})")
            else:
                errors.append(
                    f"certificate does not cover {host}: it has no DNS names (subjectAltName), and senders do "
                    "not use the subject CN"
                )
    elif not any(n.lower().startswith(("mta-sts.", "*.")) for n in names):
        shown = ", ".join(names[:8]) if names else "none"
        warnings.append(
            f"certificate names no mta-sts.* host (DNS names: {shown}); senders check it against "
            "mta-sts.<your domain> (give --domain to have this checked)"
        )
    if cert.issuer == cert.subject and not errors:
        warnings.append("certificate is self-signed: senders will not trust it")
    return errors, warnings


def _when(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def server_tls_context() -> ssl.SSLContext:
    """A server context: TLS 1.2 and 1.3 only, no compression, no session tickets needed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


@dataclass(frozen=True)
class LoadedCertificate:
    cert_path: str
    key_path: str
    context: ssl.SSLContext
    subject: str
    dns_names: tuple[str, ...]
    not_after: _dt.datetime
    serial: int
    warnings: tuple[str, ...] = ()


def _no_password() -> str:
    raise ConfigError("the private key is encrypted; give an unencrypted key file (readable only by this service)")


def _read_limited(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CERT_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CERT_FILE_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_CERT_FILE_BYTES} bytes")
    return data


def load_certificate(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    domains: Sequence[str] = (),
    *,
    now: _dt.datetime | None = None,
) -> LoadedCertificate:
    """Load the certificate chain (leaf first) and its key into a TLS context and check the leaf.

    Raises :class:`ConfigError` (one line) for an unreadable file, no PEM certificate, a key that does not
    match or is encrypted, and every error of :func:`certificate_problems`.
    """
    cert_file, key_file = os.fspath(cert_path), os.fspath(key_path)
    data = _read_limited(cert_file, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"certificate {cert_file} holds no PEM certificate") from None
    leaf = chain[0]
    errors, warnings = certificate_problems(leaf, domains, now=now)
    if errors:
        raise ConfigError(f"certificate {cert_file}: {errors[0]}")
    _read_limited(key_file, "key")  # a readable key file, for a clear message before OpenSSL's
    ctx = server_tls_context()
    try:
        ctx.load_cert_chain(cert_file, key_file, password=_no_password)
    except ConfigError as exc:
        raise ConfigError(f"key {key_file}: {exc}") from None
    except ssl.SSLError as exc:
        reason = str(getattr(exc, "reason", "") or "")
        if reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"the key in {key_file} does not belong to the certificate in {cert_file}") from None
        detail = reason.lower().replace("_", " ") if reason else _one_line(exc)
        raise ConfigError(f"cannot load certificate {cert_file} with key {key_file}: {detail}") from None
    except OSError as exc:
        raise ConfigError(f"cannot load certificate {cert_file} with key {key_file}: {exc.strerror or exc}") from None
    if _read_limited(cert_file, "certificate") != data:
        raise ConfigError(f"certificate {cert_file} changed while it was being loaded; try again")
    try:
        mode = os.stat(key_file).st_mode
    except OSError:  # pragma: no cover - read a moment ago
        mode = 0
    if mode & 0o004:
        warnings.append(f"key {key_file} is readable by every user of this machine (chmod 600 or 640)")
    return LoadedCertificate(
        cert_path=cert_file,
        key_path=key_file,
        context=ctx,
        subject=_subject(leaf),
        dns_names=tuple(_dns_names(leaf)),
        not_after=leaf.not_valid_after_utc,
        serial=leaf.serial_number,
        warnings=tuple(warnings),
    )


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


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


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
