"""MTA-STS policy fetch over HTTPS (RFC 8461 §3.2, §3.3, §7) with aiohttp.

:class:`PolicyFetcher` fetches ``https://mta-sts.<domain>/.well-known/mta-sts.txt``:

1. the policy host name is built from the Policy Domain (never from where a ``_mta-sts`` CNAME points, EC-23)
   and resolved through :class:`~mxsec.net.dns.DnsClient` (so custom nameservers apply): aiohttp's connector
   asks our own :class:`aiohttp.abc.AbstractResolver`, nothing else ever resolves the name;
2. every address is checked by the :class:`~mxsec.net.guard.AddressGuard` (SSRF) inside that resolver, which
   hands the connector only the allowed ones;
3. the connector connects to those vetted addresses in order (happy eyeballs, each in turn until one connects)
   while SNI, the Host header and the certificate name check all use ``mta-sts.<domain>``;
4. TLS >= 1.2 with one shared context, system trust store or ``ca_file`` *instead of* it, DNS-ID only (no CN
   fallback); on uvloop the TLS runs in uvloop's native SSL transport;
5. no redirects (3xx -> ``redirect``), 200 only, ``text/plain``, body streamed and capped, one total deadline
   for DNS + connect + TLS + response, no HTTP cache, no cookies, no proxies from the environment.

Every failure is a :class:`FetchOutcome` with a :class:`~mxsec.sts.fetch.FetchProblem` and a one-line detail;
``fetch`` itself raises nothing but cancellation.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import socket
import ssl
import typing
from dataclasses import dataclass

import aiohttp
import aiohttp.abc
from yarl import URL

from mxsec import __version__
from mxsec.errors import ConfigError
from mxsec.net.dns import DnsClient
from mxsec.net.guard import AddressGuard
from mxsec.sts.policy import media_type_ok
from mxsec.sts.fetch import FetchOutcome
from mxsec.sts.fetch import FetchProblem

__all__ = ["FetchOutcome", "HttpsSettings", "PolicyFetcher", "POLICY_PATH", "policy_url"]

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_ADDRESSES = 8  # addresses tried per fetch, in DNS order


class _P:
    """FetchProblem members looked up by value (the values are the contract)."""

    DNS_ERROR = FetchProblem("dns-error")
    CONNECT_ERROR = FetchProblem("connect-error")
    TIMEOUT = FetchProblem("timeout")
    TLS_ERROR = FetchProblem("tls-error")
    CERTIFICATE_INVALID = FetchProblem("certificate-invalid")
    HTTP_STATUS = FetchProblem("http-status")
    REDIRECT = FetchProblem("redirect")
    MEDIA_TYPE = FetchProblem("media-type")
    TOO_LARGE = FetchProblem("too-large")
    POLICY_INVALID = FetchProblem("policy-invalid")
    ADDRESS_REFUSED = FetchProblem("address-refused")


_DOMAIN_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$")


@dataclass
class HttpsSettings:
    timeout: float = 20.0
    ca_file: str | None = None
    max_body: int = 65536
    user_agent: str = f"mxsec/{__version__}"
    port: int = 443
    max_connections: int = 256


def policy_url(domain: str, port: int = 443) -> str:
    host = f"mta-sts.{domain}"
    return f"https://{host}{POLICY_PATH}" if port == 443 else f"https://{host}:{port}{POLICY_PATH}"


def build_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Client context: TLS >= 1.2, hostname check (DNS-ID only), ``ca_file`` replaces the system store."""
    try:
        if ca_file:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        else:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(f"cannot load CA file {ca_file}: {reason}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.hostname_checks_common_name = False  # STS-B-5: DNS-ID only
    except (AttributeError, ValueError):  # pragma: no cover - very old OpenSSL
        pass
    return ctx


# --------------------------------------------------------------------------- per-fetch state
class _Fetch:
    """What one fetch learned so far (for the deadline message and the outcome's address)."""

    __slots__ = ("host", "stage", "allowed", "connected", "failure", "not_after")

    def __init__(self, host: str) -> None:
        self.host = host
        self.stage = f"while resolving {host}"
        self.allowed: tuple[str, ...] = ()
        self.connected: str | None = None
        self.failure: _ResolveFailed | None = None
        self.not_after: float | None = None  # when the policy host's certificate expires (unix time)


_CURRENT: contextvars.ContextVar[_Fetch | None] = contextvars.ContextVar("mxsec_fetch", default=None)


def _addr_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class _ResolveFailed(OSError):
    """Raised by the resolver; aiohttp wraps it in ``ClientConnectorDNSError``, the fetcher unwraps it."""

    def __init__(self, problem: FetchProblem, detail: str, address: str | None = None) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail
        self.address = address


class _GuardedResolver(aiohttp.abc.AbstractResolver):
    """Resolves the policy host through our :class:`DnsClient` and returns only guard-approved addresses."""

    def __init__(self, dns: DnsClient, guard: AddressGuard, what: str = "policy host") -> None:
        self._dns = dns
        self._guard = guard
        self._what = what

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        fetch = _CURRENT.get()
        answer = await self._dns.addresses(host)
        failure: _ResolveFailed | None = None
        allowed: list[str] = []
        if answer.status == "error":
            failure = _ResolveFailed(_P.DNS_ERROR, f"cannot resolve {self._what} {host}: {answer.error}")
        elif not answer.addresses:
            why = "NXDOMAIN" if answer.status == "nxdomain" else "no A/AAAA records"
            failure = _ResolveFailed(_P.DNS_ERROR, f"{self._what} {host} has no address ({why})")
        else:
            refused: list[str] = []
            check = self._guard.check
            for ip in answer.addresses:
                reason = check(ip)
                if reason is None:
                    allowed.append(ip)
                else:
                    refused.append(f"{ip} ({reason})")
            if not allowed:
                failure = _ResolveFailed(
                    _P.ADDRESS_REFUSED,
                    f"{self._what} {host} resolves only to refused addresses: {', '.join(refused)}",
                    answer.addresses[0],
                )
        if failure is not None:
            if fetch is not None:
                fetch.failure = failure
            raise failure
        del allowed[MAX_ADDRESSES:]
        if fetch is not None:
            fetch.allowed = tuple(allowed)
            fetch.stage = f"while connecting to {host}"
        inet6, inet = socket.AF_INET6, socket.AF_INET
        return [
            {"hostname": host, "host": ip, "port": port, "family": inet6 if ":" in ip else inet, "proto": 0,
             "flags": 0}
            for ip in allowed
        ]

    async def close(self) -> None:
        return None


class _Connector(aiohttp.TCPConnector):
    """aiohttp's TCP connector that records which vetted address the current fetch is connected to."""

    async def connect(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        conn = await super().connect(*args, **kwargs)
        fetch = _CURRENT.get()
        if fetch is not None:
            transport = conn.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            if isinstance(peer, tuple) and peer:
                fetch.connected = str(peer[0])
            fetch.not_after = _certificate_not_after(transport)
            where = f" ({fetch.connected})" if fetch.connected else ""
            fetch.stage = f"while waiting for the response from {fetch.host}{where}"
        return conn


# --------------------------------------------------------------------------- error classification
def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 12:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _describe_connect_error(exc: BaseException) -> str:
    for item in _chain(exc):
        if isinstance(item, aiohttp.ClientConnectorError):
            item = item.os_error
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, ConnectionResetError):
            return "connection reset"
        if isinstance(item, TimeoutError):
            return "connect timeout"
        if isinstance(item, OSError) and item.strerror:
            return _one_line(item.strerror).lower()
    return _one_line(exc) or type(exc).__name__


def _tls_reason(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason).lower().replace("_", " ")
    return _one_line(exc.strerror or exc)


def _classify(exc: BaseException, fetch: _Fetch, port: int) -> tuple[FetchProblem, str]:
    host = fetch.host
    chain = _chain(exc)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        chain.insert(0, exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorError):
        chain.insert(0, exc.os_error)
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            message = item.verify_message or _tls_reason(item)
            return _P.CERTIFICATE_INVALID, f"certificate verify failed: {_one_line(message)}"
        if isinstance(item, ssl.CertificateError) and not isinstance(item, ssl.SSLError):  # pragma: no cover
            return _P.CERTIFICATE_INVALID, f"certificate verify failed: {_one_line(item)}"
    for item in chain:
        if isinstance(item, ssl.SSLError):
            return _P.TLS_ERROR, f"TLS handshake with {host} failed: {_tls_reason(item)}"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return _P.TIMEOUT, f"timeout waiting for {host}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            # The TCP connection was up (a refused or unreachable address fails before this): the server
            # dropped it during the TLS handshake, e.g. a TLS 1.1-only server that does not even send an alert.
            return _P.TLS_ERROR, f"TLS handshake with {host} failed: connection closed by the server"
        where = ", ".join(_addr_port(ip, port) for ip in fetch.allowed)
        what = _describe_connect_error(exc)
        return _P.CONNECT_ERROR, f"cannot connect to {host}" + (f" ({where})" if where else "") + f": {what}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return _P.CONNECT_ERROR, f"{host} closed the connection without a response"
    if isinstance(exc, (aiohttp.ClientResponseError, aiohttp.ClientPayloadError)):
        return _P.CONNECT_ERROR, f"HTTP protocol error from {host}: {_one_line(exc)}"
    for item in chain:
        if isinstance(item, OSError):
            return _P.CONNECT_ERROR, f"connection to {host} failed: {_describe_connect_error(item)}"
    return _P.CONNECT_ERROR, f"fetch from {host} failed: {type(exc).__name__}: {_one_line(exc)}"


# --------------------------------------------------------------------------- the fetcher
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None)


class PolicyFetcher:
    """Fetches MTA-STS policies; one shared aiohttp session, TLS context and pool per fetcher.

    The session needs a running event loop, so it is created on the first :meth:`fetch`.
    """

    def __init__(self, settings: HttpsSettings | None, dns: DnsClient, guard: AddressGuard) -> None:
        self.settings = settings if settings is not None else HttpsSettings()
        if not self.settings.timeout > 0:
            raise ConfigError("HTTPS timeout must be positive")
        if self.settings.max_body < 1:
            raise ConfigError("max_body must be positive")
        self.dns = dns
        self.guard = guard
        self.ssl_context = build_ssl_context(self.settings.ca_file)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._headers = {
            "User-Agent": self.settings.user_agent,
            "Accept": "text/plain",
            "Accept-Encoding": "identity",
            "Cache-Control": "no-cache",
        }

    def _open_session(self) -> aiohttp.ClientSession:
        connector = _Connector(
            resolver=_GuardedResolver(self.dns, self.guard),
            use_dns_cache=False,  # our DnsClient (and its callers) decide about caching
            ssl=self.ssl_context,
            limit=max(1, self.settings.max_connections),
            limit_per_host=0,
            force_close=True,  # policy hosts are distinct; a fresh connection per fetch
        )
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(
            connector=connector,
            connector_owner=True,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=False,
            timeout=_NO_TIMEOUT,  # the one total deadline is fetch()'s
            headers=self._headers,
            raise_for_status=False,
        )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        loop, self._loop = self._loop, None
        if session is not None and not session.closed and loop is asyncio.get_running_loop():
            await session.close()

    async def __aenter__(self) -> PolicyFetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def fetch(self, domain: str) -> FetchOutcome:
        """Fetch the policy of ``domain`` (an A-label Policy Domain) within ``settings.timeout`` seconds."""
        domain = domain.strip().rstrip(".").lower()
        if not _DOMAIN_RE.match(domain) or len(domain) > 245:
            return FetchOutcome(None, _P.DNS_ERROR, f"invalid policy domain {domain!r}")
        host = f"mta-sts.{domain}"
        fetch = _Fetch(host)
        timeout = self.settings.timeout
        token = _CURRENT.set(fetch)
        try:
            async with asyncio.timeout(timeout):
                return await self._fetch(host, fetch)
        except TimeoutError:
            return FetchOutcome(
                None, _P.TIMEOUT, f"timeout after {timeout:g}s {fetch.stage}", address=fetch.connected
            )
        finally:
            _CURRENT.reset(token)

    async def _fetch(self, host: str, fetch: _Fetch) -> FetchOutcome:
        session = self._session
        if session is None or session.closed or self._loop is not asyncio.get_running_loop():
            session = self._open_session()  # first fetch, or a fetcher reused under a new event loop
        port = self.settings.port
        url = URL.build(scheme="https", host=host, port=None if port == 443 else port, path=POLICY_PATH,
                        encoded=True)
        try:
            async with session.get(url, allow_redirects=False) as response:
                return await self._read(response, host, fetch)
        except _ResolveFailed as failure:  # pragma: no cover - aiohttp wraps it; kept for safety
            return FetchOutcome(None, failure.problem, failure.detail, address=failure.address)
        except Exception as exc:  # aiohttp/ssl/OS errors -> a problem value
            if fetch.failure is not None:  # DNS or guard refusal, raised by our resolver
                refused = fetch.failure
                return FetchOutcome(None, refused.problem, refused.detail, address=refused.address)
            if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ServerTimeoutError):
                raise  # the total deadline: reported by fetch()
            problem, detail = _classify(exc, fetch, port)
            address = fetch.connected or (fetch.allowed[0] if len(fetch.allowed) == 1 else None)
            return FetchOutcome(None, problem, detail, address=address)

    async def _read(self, response: aiohttp.ClientResponse, host: str, fetch: _Fetch) -> FetchOutcome:
        max_body = self.settings.max_body
        address = fetch.connected
        fetch.stage = f"while reading the response from {host}"
        status = response.status
        headers = response.headers
        content_type = headers.get("Content-Type")

        not_after = fetch.not_after

        def outcome(problem: FetchProblem | None, detail: str, body: bytes | None = None) -> FetchOutcome:
            if problem is not None:
                response.close()  # drop the connection instead of reading what is left
            return FetchOutcome(body, problem, detail, status, content_type, address, not_after)

        if 300 <= status < 400:
            location = headers.get("Location")
            where = f"to {_one_line(location)}" if location else "without a Location header"
            return outcome(_P.REDIRECT, f"HTTP {status} redirect {where} (not followed)")
        if status != 200:
            phrase = f" {response.reason}" if response.reason else ""
            return outcome(_P.HTTP_STATUS, f"HTTP {status}{phrase} (only 200 is a policy)")
        if not media_type_ok(content_type):
            shown = repr(content_type) if content_type is not None else "missing"
            return outcome(_P.MEDIA_TYPE, f"media type {shown} is not text/plain")
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            return outcome(_P.POLICY_INVALID, f"unexpected Content-Encoding {encoding!r}")
        length = headers.get("Content-Length", "")
        if length.strip().isdigit() and int(length) > max_body:
            return outcome(_P.TOO_LARGE, f"policy is {int(length)} bytes, limit {max_body}")
        content = response.content
        body = b""
        while True:
            chunk = await content.readany()
            if not chunk:
                break
            body += chunk
            if len(body) > max_body:
                return outcome(_P.TOO_LARGE, f"policy body exceeds {max_body} bytes (stopped reading)")
        return outcome(None, f"HTTP 200, {len(body)} bytes from {address or host}", body)


def _certificate_not_after(transport: typing.Any) -> float | None:
    """When the peer's (verified) certificate expires, as unix time; None when it cannot be read."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    try:
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        return float(ssl.cert_time_to_seconds(cert["notAfter"])) if cert and "notAfter" in cert else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
