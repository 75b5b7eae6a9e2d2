"""MTA-STS policy fetch over HTTPS (RFC 8461 §3.2, §3.3, §7) with httpx.

:class:`PolicyFetcher` fetches ``https://mta-sts.<domain>/.well-known/mta-sts.txt``:

1. the policy host name is built from the Policy Domain (never from where a ``_mta-sts`` CNAME points, EC-23)
   and resolved through :class:`~mxsec.net.dns.DnsClient` (so custom nameservers apply);
2. every address is checked by the :class:`~mxsec.net.guard.AddressGuard` (SSRF);
3. the TCP connection goes to a vetted IP address (each in turn until one connects), while SNI, the Host
   header and the certificate name check all use ``mta-sts.<domain>``. This is done by a custom httpcore
   network backend that maps the host name to the vetted addresses of the current fetch (a context
   variable), so nothing else ever resolves the name;
4. TLS >= 1.2, system trust store or ``ca_file`` *instead of* it, DNS-ID only (no CN fallback);
5. no redirects (3xx -> ``redirect``), 200 only, ``text/plain``, body streamed and capped, one total deadline
   for DNS + connect + TLS + response, no HTTP cache, no cookies, no proxies from the environment.

Every failure is a :class:`FetchOutcome` with a :class:`~mxsec.sts.results.FetchProblem` and a one-line detail;
``fetch`` itself raises nothing but cancellation.
"""

from __future__ import annotations

import asyncio
import contextvars
import http.cookiejar
import re
import ssl
import time
import typing
from dataclasses import dataclass, field

import httpcore
import httpx

from mxsec import __version__
from mxsec.errors import ConfigError
from mxsec.net.dns import DnsClient
from mxsec.net.guard import AddressGuard
from mxsec.sts.policy import media_type_ok
from mxsec.sts.results import FetchProblem

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


@dataclass(frozen=True)
class FetchOutcome:
    body: bytes | None
    problem: FetchProblem | None
    detail: str
    status: int | None = None
    content_type: str | None = None
    address: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.body is not None


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


# --------------------------------------------------------------------------- network backend
@dataclass
class _Target:
    host: str
    addresses: tuple[str, ...]
    connected: str | None = None
    errors: list[str] = field(default_factory=list)


_TARGET: contextvars.ContextVar[_Target | None] = contextvars.ContextVar("mxsec_fetch_target", default=None)


def _addr_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the vetted addresses of the current fetch instead of resolving the host name.

    Delegates the sockets (and TLS) to httpcore's asyncio backend. Refuses any host the current fetch did not
    vet, so no code path can reach an unchecked address.
    """

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        target = _TARGET.get()
        if target is None or target.host != host.lower():
            raise httpcore.ConnectError(f"no vetted address for {host}")
        addresses = target.addresses[:MAX_ADDRESSES]
        deadline = None if timeout is None else time.monotonic() + timeout
        last: Exception | None = None
        for index, ip in enumerate(addresses):
            attempt: float | None = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                left = len(addresses) - index
                attempt = remaining if left == 1 else max(min(remaining, 1.0), remaining / left)
            try:
                stream = await self._inner.connect_tcp(
                    ip, port, timeout=attempt, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                target.errors.append(f"{_addr_port(ip, port)}: {_describe_connect_error(exc)}")
                last = exc
                continue
            target.connected = ip
            return stream
        summary = "; ".join(target.errors) or "no address left within the deadline"
        if isinstance(last, httpcore.ConnectTimeout) and len(target.errors) == 1:
            raise httpcore.ConnectTimeout(summary) from last
        raise httpcore.ConnectError(summary) from last

    async def connect_unix_socket(self, *args: typing.Any, **kwargs: typing.Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for policy fetches")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Transport(httpx.AsyncHTTPTransport):
    """httpx's transport with the pinned network backend (httpx 0.28 exposes no backend parameter)."""

    def __init__(self, ssl_context: ssl.SSLContext, max_connections: int) -> None:
        super().__init__(verify=ssl_context, trust_env=False, http1=True, http2=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=min(32, max_connections),
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=_PinnedBackend(),
        )


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
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, ConnectionResetError):
            return "connection reset"
        if isinstance(item, (TimeoutError, httpcore.ConnectTimeout)):
            return "connect timeout"
        if isinstance(item, OSError) and item.strerror:
            return _one_line(item.strerror).lower()
    return _one_line(exc) or type(exc).__name__


def _tls_reason(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason).lower().replace("_", " ")
    return _one_line(exc.strerror or exc)


def _classify(exc: BaseException, host: str) -> tuple[FetchProblem, str]:
    chain = _chain(exc)
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            message = item.verify_message or _tls_reason(item)
            return _P.CERTIFICATE_INVALID, f"certificate verify failed: {_one_line(message)}"
    for item in chain:
        if isinstance(item, ssl.SSLError):
            return _P.TLS_ERROR, f"TLS handshake with {host} failed: {_tls_reason(item)}"
    if isinstance(exc, (httpx.TimeoutException, httpcore.TimeoutException)):
        if isinstance(exc, httpx.ConnectTimeout):
            return _P.TIMEOUT, f"timeout connecting to {host}: {_one_line(exc)}"
        return _P.TIMEOUT, f"timeout waiting for {host}"
    if isinstance(exc, httpx.ConnectError):
        text = _one_line(exc)
        if "Connection reset" in text or "EndOfStream" in text or not text:
            return _P.CONNECT_ERROR, f"{host} closed the connection during the TLS handshake"
        return _P.CONNECT_ERROR, f"cannot connect to {host}: {text}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return _P.CONNECT_ERROR, f"HTTP protocol error from {host}: {_one_line(exc)}"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.NetworkError)):
        return _P.CONNECT_ERROR, f"connection to {host} failed: {_describe_connect_error(exc)}"
    for item in chain:
        if isinstance(item, OSError):
            return _P.CONNECT_ERROR, f"connection to {host} failed: {_describe_connect_error(item)}"
    return _P.CONNECT_ERROR, f"fetch from {host} failed: {type(exc).__name__}: {_one_line(exc)}"


# --------------------------------------------------------------------------- the fetcher
class PolicyFetcher:
    """Fetches MTA-STS policies; one shared httpx client, TLS context and pool per fetcher."""

    def __init__(self, settings: HttpsSettings | None, dns: DnsClient, guard: AddressGuard) -> None:
        self.settings = settings if settings is not None else HttpsSettings()
        if not self.settings.timeout > 0:
            raise ConfigError("HTTPS timeout must be positive")
        if self.settings.max_body < 1:
            raise ConfigError("max_body must be positive")
        self.dns = dns
        self.guard = guard
        self.ssl_context = build_ssl_context(self.settings.ca_file)
        no_cookies = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self._client = httpx.AsyncClient(
            transport=_Transport(self.ssl_context, max(1, self.settings.max_connections)),
            follow_redirects=False,
            trust_env=False,
            cookies=no_cookies,
            timeout=httpx.Timeout(self.settings.timeout),
            headers={
                "User-Agent": self.settings.user_agent,
                "Accept": "text/plain",
                "Accept-Encoding": "identity",
                "Cache-Control": "no-cache",
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()

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
        state: dict[str, typing.Any] = {"stage": f"while resolving {host}", "target": None}
        timeout = self.settings.timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._fetch(domain, host, state)
        except TimeoutError:
            target: _Target | None = state["target"]
            stage = state["stage"]
            if target is not None and target.connected and stage.startswith("while connecting"):
                stage = f"while waiting for the response from {host} ({target.connected})"
            address = state.get("address") or (target.connected if target is not None else None)
            return FetchOutcome(None, _P.TIMEOUT, f"timeout after {timeout:g}s {stage}", address=address)

    async def _fetch(self, domain: str, host: str, state: dict[str, typing.Any]) -> FetchOutcome:
        answer = await self.dns.addresses(host)
        if answer.status == "error":
            return FetchOutcome(None, _P.DNS_ERROR, f"cannot resolve policy host {host}: {answer.error}")
        if not answer.addresses:
            why = "NXDOMAIN" if answer.status == "nxdomain" else "no A/AAAA records"
            return FetchOutcome(None, _P.DNS_ERROR, f"policy host {host} has no address ({why})")
        allowed: list[str] = []
        refused: list[str] = []
        for ip in answer.addresses:
            reason = self.guard.check(ip)
            if reason is None:
                allowed.append(ip)
            else:
                refused.append(f"{ip} ({reason})")
        if not allowed:
            return FetchOutcome(
                None,
                _P.ADDRESS_REFUSED,
                f"policy host {host} resolves only to refused addresses: {', '.join(refused)}",
                address=answer.addresses[0],
            )
        target = _Target(host, tuple(allowed))
        state["target"] = target
        token = _TARGET.set(target)
        url = policy_url(domain, self.settings.port)
        state["stage"] = f"while connecting to {host}"
        try:
            return await self._get(url, host, target, state)
        except Exception as exc:  # httpx/httpcore/ssl/OS errors -> a problem value
            if isinstance(exc, TimeoutError) and not isinstance(exc, httpx.TimeoutException):
                raise  # the total deadline: reported by fetch()
            problem, detail = _classify(exc, host)
            return FetchOutcome(None, problem, detail, address=target.connected)
        finally:
            _TARGET.reset(token)

    async def _get(self, url: str, host: str, target: _Target, state: dict[str, typing.Any]) -> FetchOutcome:
        max_body = self.settings.max_body
        async with self._client.stream("GET", url) as response:
            address = _peer(response) or target.connected
            if address:
                state["address"] = address
            state["stage"] = f"while reading the response from {host}"
            status = response.status_code
            content_type = response.headers.get("content-type")

            def outcome(problem: FetchProblem | None, detail: str, body: bytes | None = None) -> FetchOutcome:
                return FetchOutcome(body, problem, detail, status, content_type, address)

            if 300 <= status < 400:
                location = response.headers.get("location")
                where = f"to {_one_line(location)}" if location else "without a Location header"
                return outcome(_P.REDIRECT, f"HTTP {status} redirect {where} (not followed)")
            if status != 200:
                phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
                return outcome(_P.HTTP_STATUS, f"HTTP {status}{phrase} (only 200 is a policy)")
            if not media_type_ok(content_type):
                shown = repr(content_type) if content_type is not None else "missing"
                return outcome(_P.MEDIA_TYPE, f"media type {shown} is not text/plain")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                return outcome(_P.POLICY_INVALID, f"unexpected Content-Encoding {encoding!r}")
            length = response.headers.get("content-length", "")
            if length.strip().isdigit() and int(length) > max_body:
                return outcome(_P.TOO_LARGE, f"policy is {int(length)} bytes, limit {max_body}")
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > max_body:
                    return outcome(
                        _P.TOO_LARGE, f"policy body exceeds {max_body} bytes (stopped reading)"
                    )
            return outcome(None, f"HTTP 200, {len(body)} bytes from {address or host}", bytes(body))


def _peer(response: httpx.Response) -> str | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    try:
        peer = stream.get_extra_info("server_addr")
    except Exception:  # pragma: no cover
        return None
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None
