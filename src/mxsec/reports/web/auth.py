"""Who may see the dashboard of ``mxsec reports serve``: the allowed ``Host:`` names and the login.

Two ASGI middlewares, both pure (no Starlette session machinery):

* :class:`HostCheck` answers **400** to a dashboard request whose ``Host:`` is not an allowed name, which
  defeats DNS rebinding (a page on ``attacker.example`` whose name the attacker re-points at 127.0.0.1 reaches
  the dashboard with ``Host: attacker.example``). Allowed: the listen host, ``localhost``, any IP address
  literal (a rebinding page cannot make the browser send one), and the configured names (``*.example.com``
  matches one or more labels under ``example.com``).
* :class:`LoginGate` requires a login for everything but ``/healthz``, ``POST /tlsrpt`` (reporters cannot log
  in; that endpoint has its own authentication), ``/login`` and ``/static``. Two modes:

  - **password** (``[reports] password_hash``, made by ``mxsec reports hash-password``): ``/login`` takes the
    password and sets a session cookie — an expiry time and a random nonce signed with HMAC-SHA256,
    ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, and ``Secure`` when the request came over HTTPS. The
    signing key is derived from ``session_secret`` (random per process when unset: a restart logs everyone
    out) *and* the password hash, so changing the password ends every session. Failed logins are throttled
    per client address.
  - **proxy** (``[reports] auth_proxy_header``, e.g. ``X-Remote-User``): a reverse proxy authenticates and
    passes the user in that header; a request without it, or from an address outside ``auth_proxy_from``
    (loopback by default), is refused with 401, so the header cannot be forged by going around the proxy.

  ``/metrics`` also accepts ``Authorization: Bearer <metrics_token>`` so Prometheus can scrape it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from mxsec.errors import ConfigError

COOKIE = "mxsec_session"
#: scrypt parameters of new hashes: 16 MiB of memory, about 50 ms on a current CPU.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: Failed logins allowed per client address per :data:`THROTTLE_WINDOW` seconds before 429.
THROTTLE_FAILURES = 10
THROTTLE_WINDOW = 600.0
#: Largest login form body read.
MAX_FORM_BYTES = 4096
#: Paths open without a login (prefixes end with "/").
OPEN_PATHS = ("/healthz", "/login", "/static/")

# ------------------------------------------------------------------------------------------- passwords


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$SALT$HASH`` (base64 without padding) of *password*."""
    if not password:
        raise ConfigError("the password is empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password_hash(text: str) -> None:
    """ConfigError (one line, no secret in it) unless *text* is a hash :func:`hash_password` could make."""
    _parse_hash(text)


def verify_password(password: str, stored: str) -> bool:
    n, r, p, salt, expected = _parse_hash(stored)
    digest = hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p,
                            maxmem=256 * 1024 * 1024, dklen=len(expected))
    return hmac.compare_digest(digest, expected)


def _parse_hash(text: str) -> tuple[int, int, int, bytes, bytes]:
    problem = "expected scrypt$N$r$p$SALT$HASH as printed by `mxsec reports hash-password`"
    parts = text.split("$") if isinstance(text, str) else []
    if len(parts) != 6 or parts[0] != "scrypt" or not all(x.isdigit() for x in parts[1:4]):
        raise ConfigError(f"reports.password_hash: {problem}")
    n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16 or n * r * 128 > 2**28:
        raise ConfigError("reports.password_hash: scrypt parameters out of range")
    try:
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        raise ConfigError(f"reports.password_hash: {problem}") from None
    if len(salt) < 8 or len(digest) < 16:
        raise ConfigError(f"reports.password_hash: {problem}")
    return n, r, p, salt, digest


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None


# ------------------------------------------------------------------------------------------- settings


@dataclass
class AuthSettings:
    """What :func:`install` needs; built by ``reports serve`` from the ``[reports]`` section."""

    password_hash: str | None = None
    session_secret: str | None = None
    session_lifetime: float = 12 * 3600.0
    proxy_header: str | None = None
    proxy_from: list[str] = field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    metrics_token: str | None = None
    #: Extra ``Host:`` names (the listen host, localhost and IP literals are always allowed).
    allowed_hosts: list[str] = field(default_factory=list)
    #: ``None`` turns the host check off (tests, embedding).
    listen_host: str | None = None
    check_hosts: bool = True

    @property
    def mode(self) -> str:
        if self.password_hash:
            return "password"
        if self.proxy_header:
            return "proxy"
        return "none"

    def check(self) -> None:
        if self.password_hash and self.proxy_header:
            raise ConfigError("reports: set password_hash or auth_proxy_header, not both")
        if self.password_hash:
            check_password_hash(self.password_hash)
        if self.proxy_header is not None and not _is_token(self.proxy_header):
            raise ConfigError(f"reports.auth_proxy_header: {self.proxy_header!r} is not a header name")
        for text in self.proxy_from:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ConfigError(f"reports.auth_proxy_from: {text!r} is not an address or CIDR range") from None
        if self.session_secret is not None and len(self.session_secret) < 16:
            raise ConfigError("reports.session_secret: use at least 16 characters (32 random ones are best)")
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise ConfigError("reports.metrics_token: use at least 16 characters")
        if not self.session_lifetime > 0:
            raise ConfigError("reports.session_lifetime: must be a positive number of seconds")
        for name in self.allowed_hosts:
            if not _host_pattern_ok(name):
                raise ConfigError(f"reports.allowed_hosts: {name!r} is not a host name (or *.DOMAIN)")


def _is_token(name: str) -> bool:
    allowed = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return bool(name) and all(ch in allowed for ch in name)


def _host_pattern_ok(name: str) -> bool:
    text = name[2:] if name.startswith("*.") else name
    if not text or len(text) > 253:
        return False
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        pass
    return all(label and len(label) <= 63 and all(ch.isalnum() or ch in "-_" for ch in label)
               for label in text.rstrip(".").split("."))


# ------------------------------------------------------------------------------------------- host check


def host_of(header: str) -> str:
    """The host part of a ``Host:`` value, lower case, without port or the trailing dot."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class HostCheck:
    """ASGI middleware: 400 for a foreign ``Host:`` on every path but ``/tlsrpt`` and ``/healthz``."""

    def __init__(self, app: Any, settings: AuthSettings) -> None:
        self.app = app
        names = {"localhost"}
        if settings.listen_host and not _is_ip(settings.listen_host.strip("[]")):
            names.add(settings.listen_host.lower().rstrip("."))
        self.exact = names | {n.lower().rstrip(".") for n in settings.allowed_hosts if not n.startswith("*.")}
        self.suffixes = tuple("." + n[2:].lower().rstrip(".") for n in settings.allowed_hosts if n.startswith("*."))

    def allowed(self, header: str | None) -> bool:
        if not header:
            return False
        host = host_of(header)
        return host in self.exact or _is_ip(host) or (bool(self.suffixes) and host.endswith(self.suffixes))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in ("/tlsrpt", "/healthz"):
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"host")
        if self.allowed(header):
            await self.app(scope, receive, send)
            return
        await _plain(send, 400, "this server does not answer to that Host: name "
                                "(add it to [reports] allowed_hosts, or use --allowed-host)")


# ------------------------------------------------------------------------------------------- login


class LoginGate:
    """ASGI middleware: login required (see the module docstring); also serves ``/login`` and ``/logout``."""

    def __init__(self, app: Any, settings: AuthSettings, templates: Any) -> None:
        self.app = app
        self.settings = settings
        self.templates = templates
        self.mode = settings.mode
        secret = (settings.session_secret or "").encode() or secrets.token_bytes(32)
        self.key = hmac.new(secret, (settings.password_hash or "").encode(), hashlib.sha256).digest()
        self.proxies = [ipaddress.ip_network(t, strict=False) for t in settings.proxy_from]
        self.failures: dict[str, list[float]] = {}

    # -- sessions

    def make_cookie(self, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self.settings.session_lifetime)
        body = f"{expires}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._sign(body)}"

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())

    def session_ok(self, value: str | None, now: float | None = None) -> bool:
        if not value or value.count(".") != 2:
            return False
        body, signature = value.rsplit(".", 1)
        if not hmac.compare_digest(self._sign(body), signature):
            return False
        expires = body.split(".", 1)[0]
        return expires.isdigit() and int(expires) > (now if now is not None else time.time())

    # -- requests

    def _proxy_ok(self, scope: dict[str, Any]) -> bool:
        client = scope.get("client")
        try:
            address = ipaddress.ip_address(client[0]) if client else None
        except ValueError:
            address = None
        if address is None or not any(address in net for net in self.proxies):
            return False
        value = _header(scope, self.settings.proxy_header.lower().encode("latin-1"))  # type: ignore[union-attr]  # proxy mode only
        return bool(value and value.strip())

    def _bearer_ok(self, scope: dict[str, Any]) -> bool:
        token = self.settings.metrics_token
        header = _header(scope, b"authorization") or ""
        scheme, _, value = header.partition(" ")
        return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                                                  token.encode())  # type: ignore[union-attr]  # bool(token) first

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.mode == "none":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/tlsrpt" and scope["method"] == "POST":
            await self.app(scope, receive, send)  # reporters: the endpoint's own authentication
            return
        if path.startswith(OPEN_PATHS[2]) or path == OPEN_PATHS[0]:
            await self.app(scope, receive, send)
            return
        if self.mode == "proxy":
            if path == "/metrics" and self._bearer_ok(scope):
                await self.app(scope, receive, send)
            elif self._proxy_ok(scope):
                scope["mxsec_login"] = "proxy"
                await self.app(scope, receive, send)
            else:
                await _plain(send, 401, f"authentication required: this dashboard expects the "
                                        f"{self.settings.proxy_header} header from its reverse proxy")
            return
        if path == "/login":
            await self._login(scope, receive, send)
            return
        logged_in = self.session_ok(_cookie(scope, COOKIE))
        if path == "/logout":
            await _redirect(send, "/login", clear=True, secure=_secure(scope))
            return
        if logged_in or (path == "/metrics" and self._bearer_ok(scope)):
            scope["mxsec_login"] = "password" if logged_in else "token"
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD") and path != "/metrics" and not path.endswith(".json"):
            target = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
            await _redirect(send, "/login?next=" + quote(target, safe=""))
            return
        await _json(send, 401, {"error": "unauthorized", "message": "log in at /login first"})

    async def _login(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        method = scope["method"]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        target = _safe_next((query.get("next") or ["/"])[0])
        if method in ("GET", "HEAD"):
            await self._page(scope, receive, send, target, None, 200)
            return
        if method != "POST":
            await _plain(send, 405, "GET or POST /login")
            return
        client = (scope.get("client") or ("?", 0))[0]
        now = time.monotonic()
        recent = [t for t in self.failures.get(client, []) if now - t < THROTTLE_WINDOW]
        self.failures[client] = recent
        if len(self.failures) > 10_000:  # bounded memory: forget the quiet ones
            self.failures = {k: v for k, v in self.failures.items() if v and now - v[-1] < THROTTLE_WINDOW}
        if len(recent) >= THROTTLE_FAILURES:
            await _plain(send, 429, "too many failed logins from this address; wait a few minutes")
            return
        origin = _header(scope, b"origin")
        if origin and origin != "null" and host_of(urlsplit(origin).netloc) != host_of(_header(scope, b"host") or ""):
            await _plain(send, 403, "login form posted from another site")
            return
        body = await _read_body(receive, MAX_FORM_BYTES)
        if body is None:
            await _plain(send, 413, "login form too large")
            return
        form = parse_qs(body.decode("utf-8", "replace"))
        password = (form.get("password") or [""])[0]
        target = _safe_next((form.get("next") or [target])[0])
        from starlette.concurrency import run_in_threadpool

        assert self.settings.password_hash is not None
        verified = bool(password) and await run_in_threadpool(verify_password, password, self.settings.password_hash)
        if verified:
            self.failures.pop(client, None)
            await _redirect(send, target, cookie=self.make_cookie(), secure=_secure(scope),
                            lifetime=int(self.settings.session_lifetime))
            return
        self.failures.setdefault(client, []).append(now)
        await self._page(scope, receive, send, target, "Wrong password.", 401)

    async def _page(self, scope: dict[str, Any], receive: Any, send: Any, target: str, error: str | None,
                    status: int) -> None:
        from starlette.requests import Request

        from .params import DateRange

        request = Request(scope, receive)
        context = {"next": target, "error": error, "range": DateRange(), "page_title": "Log in"}
        response = self.templates.TemplateResponse(request, "login.html", context, status_code=status)
        response.headers["cache-control"] = "no-store"
        await response(scope, receive, send)


def _safe_next(target: str) -> str:
    """A local path to go to after the login (never another site: no scheme, no ``//``, no backslash)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or any(ord(c) < 32 for c in target):
        return "/"
    return target


def _secure(scope: dict[str, Any]) -> bool:
    return scope.get("scheme") == "https"


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _cookie(scope: dict[str, Any], name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return v
    return None


async def _read_body(receive: Any, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _plain(send: Any, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Any, status: int, payload: dict[str, str]) -> None:
    import json

    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), (b"www-authenticate", b'Bearer realm="mxsec"')]})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Any, location: str, *, cookie: str | None = None, clear: bool = False,
                    secure: bool = False, lifetime: int = 0) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0"), (b"cache-control", b"no-store")]
    flags = "; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    if cookie is not None:
        headers.append((b"set-cookie", f"{COOKIE}={cookie}; Max-Age={lifetime}{flags}".encode()))
    elif clear:
        headers.append((b"set-cookie", f"{COOKIE}=; Max-Age=0{flags}".encode()))
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def install(app: Any, settings: AuthSettings, templates: Any) -> None:
    """Add the login gate, then the host check outside it (a foreign Host: is refused before anything)."""
    settings.check()
    app.add_middleware(LoginGate, settings=settings, templates=templates)
    if settings.check_hosts:
        app.add_middleware(HostCheck, settings=settings)
