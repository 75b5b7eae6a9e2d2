"""Running the dashboard and ``POST /tlsrpt`` under uvicorn (``mxsec reports serve``).

:func:`serve` opens the database, binds the listening socket itself (so a taken port or a bad address is a
one-line :class:`~mxsec.errors.ConfigError`, not a log line from deep inside uvicorn), checks the TLS files
by loading them, and runs until SIGINT or SIGTERM. :func:`build_server` does the same without running, for
tests and embedding (``server.run(sockets=[sock])`` in a thread; ``server.should_exit = True`` stops it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from mxsec.errors import ConfigError
from mxsec.storage.reportdb import ReportDB

from .app import DEFAULT_MAX_BODY, create_app
from .auth import AuthSettings
from .limits import ConnectionGuard, uvicorn_options
from .post_auth import PostAuth

DEFAULT_LISTEN = "127.0.0.1:8025"


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port). Port 0 asks the kernel for a free port."""
    text = (listen or "").strip()
    if not text:
        raise ConfigError("listen address is empty; write HOST:PORT or [IPv6]:PORT, e.g. 127.0.0.1:8025")
    if any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise ConfigError(f"listen address {listen!r} contains a space or control character")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"listen address {listen!r}: write [IPv6]:PORT, e.g. [::1]:8025")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"listen address {listen!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"listen address {listen!r}: write HOST:PORT or [IPv6]:PORT, e.g. 127.0.0.1:8025")
        if ":" in host:
            raise ConfigError(f"listen address {listen!r}: put an IPv6 address in brackets, e.g. [::1]:8025")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"listen address {listen!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); ConfigError with the reason when that fails."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"cannot listen on {_show(host, port)}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {_show(host, port)}: {exc.strerror or exc}") from None
    return sock


def check_tls(tls_cert: str | None, tls_key: str | None) -> None:
    """Both or neither; both readable and a matching certificate chain and key."""
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key (or neither, for plain HTTP)")
    if tls_cert is None or tls_key is None:
        return
    for label, path in (("TLS certificate", tls_cert), ("TLS key", tls_key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{label} {path}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls_cert, tls_key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError(f"TLS certificate {tls_cert} with key {tls_key} cannot be used: {reason}") from None


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGINT/SIGTERM end :meth:`run` normally instead of being raised again
    after the graceful shutdown (so ``serve()`` returns and the CLI exits 0). A second SIGINT forces the exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    #: Seconds a TLS handshake may take (asyncio's default is 60): set by :func:`build_server`.
    handshake_timeout: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup, with :attr:`handshake_timeout` passed to the event loop's ``create_server``."""
        if self.handshake_timeout is None or self.config.ssl is None:
            await super().startup(sockets)
            return
        loop = asyncio.get_running_loop()
        create_server = loop.create_server
        timeout = self.handshake_timeout

        async def with_timeout(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("ssl") is not None:
                kwargs.setdefault("ssl_handshake_timeout", timeout)
            return await create_server(*args, **kwargs)

        loop.create_server = with_timeout  # type: ignore[method-assign]  # restored below
        try:
            await super().startup(sockets)
        finally:
            del loop.create_server  # the instance attribute: the class's method shows again


def build_server(db: ReportDB, *, tls_cert: str | None = None, tls_key: str | None = None,
                 max_body: int = DEFAULT_MAX_BODY, log_level: str = "warning",
                 log_config: Any = None, post_auth: PostAuth | None = None, auth: AuthSettings | None = None,
                 guard: ConnectionGuard | None = None) -> uvicorn.Server:
    """A uvicorn server for the app over *db*, not yet running (see the module docstring). *post_auth*: who
    may POST /tlsrpt (:mod:`.post_auth`; a client CA needs TLS). *auth*: the dashboard's Host: check and login
    (:mod:`.auth`; none without it). *guard*: connection cap and header/body timeouts (:mod:`.limits`;
    defaults when not given)."""
    guard = guard or ConnectionGuard()
    check_tls(tls_cert, tls_key)
    post_auth = post_auth or PostAuth()
    if post_auth.client_ca is not None and tls_cert is None:
        raise ConfigError("reports.post_client_ca needs TLS: give --tls-cert and --tls-key")
    level = (log_level or "warning").lower()
    if level not in ("critical", "error", "warning", "info", "debug", "trace"):
        raise ConfigError(f"log level {log_level!r}: use critical, error, warning, info or debug")
    config = uvicorn.Config(
        create_app(db, max_body=max_body, post_auth=post_auth, auth=auth),
        log_level=level,
        log_config=log_config,
        access_log=level in ("info", "debug", "trace"),
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        lifespan="off",
        **_protocol_options(post_auth, guard),
    )
    server = _Server(config)
    server.handshake_timeout = guard.header_timeout
    return server


def _protocol_options(post_auth: PostAuth, guard: ConnectionGuard) -> dict[str, Any]:
    """uvicorn keywords of both: the guarded h11 protocol, under the client-certificate layer if any."""
    options = {**post_auth.uvicorn_options(), **uvicorn_options(guard)}
    if post_auth.client_ca is not None:
        from .post_auth import tls_client_protocol

        options["http"] = tls_client_protocol(options["http"])
    return options


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a wildcard or any other address is not."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int, auth: AuthSettings | None) -> str | None:
    """The warning for a dashboard reachable from other machines without a login, or None."""
    if is_loopback(host) or (auth is not None and auth.mode != "none"):
        return None
    return (f"mxsec: warning: the dashboard listens on {_show(host, port)}, not loopback, without a login: anyone "
            "who can reach it can read the reports. Set [reports] password_hash (mxsec reports hash-password) or "
            "auth_proxy_header (docs/reports.md, \"Dashboard login\")")


def serve(db_url: str, listen: str = DEFAULT_LISTEN, *, tls_cert: str | None = None, tls_key: str | None = None,
          max_body: int = 10 * 1024 * 1024, log_level: str = "warning", post_auth: PostAuth | None = None,
          auth: AuthSettings | None = None, guard: ConnectionGuard | None = None) -> None:
    """Serve the dashboard, ``POST /tlsrpt``, ``/metrics`` and ``/healthz`` until SIGINT/SIGTERM."""
    host, port = parse_listen(listen)
    if max_body < 1:
        raise ConfigError("the body size limit must be at least 1 byte")
    check_tls(tls_cert, tls_key)
    auth = auth if auth is not None else AuthSettings()
    auth.listen_host = host
    auth.check()
    db = ReportDB(db_url)
    try:
        server = build_server(db, tls_cert=tls_cert, tls_key=tls_key, max_body=max_body, log_level=log_level,
                              log_config=uvicorn.config.LOGGING_CONFIG, post_auth=post_auth, auth=auth,
                              guard=guard)
        sock = bind(host, port)
        warning = exposure_warning(host, port, auth)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
    finally:
        db.close()


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
