"""`mxsec serve-policy` as a real process on 127.0.87.x, fetched by our own PolicyFetcher and by raw TLS clients.

The fake world (127.0.87.1) answers ``A mta-sts.example.test`` with 127.0.87.2, where each test's server listens
on a port of its own; the certificates come from a throw-away CA (``mxsec.testing.pki``).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mxsec.testing.daemonproc import MXSEC, free_port
from mxsec.testing.fakeworld import FakeWorld
from mxsec.testing.pki import TestCA, write_pem
from mxsec.net.dns import DnsClient
from mxsec.net.https import POLICY_PATH, HttpsSettings, PolicyFetcher
from mxsec.sts.policy import media_type_ok, parse_policy
from tests.integration.conftest import dns_settings_for, loopback_guard, running_world

pytestmark = pytest.mark.integration

DOMAIN = "example.test"
HOST = f"mta-sts.{DOMAIN}"
SERVER_IP = "127.0.87.2"
ENFORCE = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmx: *.mx.example.test\r\nmax_age: 604800\r\n"
LONGER = ENFORCE.replace(b"max_age: 604800", b"max_age: 1209600")
BROKEN = b"version: STSv1\r\nmode: enforcing\r\nmx: mx1.example.test\r\nmax_age: 604800\r\n"
_runs = itertools.count(1)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("serve-policy integration root")


@pytest.fixture(scope="module")
def world() -> Iterator[FakeWorld]:
    with running_world(dns_ip="127.0.87.1", https_ip="127.0.87.9") as fw:
        fw.set_record(HOST, "A", [SERVER_IP])
        yield fw


@pytest.fixture
def files(tmp_path: Path, ca: TestCA) -> dict[str, Path]:
    cert, key = ca.issue([HOST])
    paths = {
        "policy": tmp_path / "mta-sts.txt",
        "cert": write_pem(tmp_path / "fullchain.pem", cert),
        "key": write_pem(tmp_path / "privkey.pem", key),
        "ca": ca.write(tmp_path / "ca.pem"),
    }
    os.chmod(paths["key"], 0o600)
    paths["policy"].write_bytes(ENFORCE)
    return paths


class Serve:
    """One `mxsec serve-policy` process; its JSON log goes to a file."""

    def __init__(self, tmp: Path, files: dict[str, Path] | None, *extra: str,
                 listen: tuple[str, ...] = (f"{SERVER_IP}:0",)) -> None:
        """``files`` None: ``extra`` names the policies and certificates itself."""
        self.log_path = tmp / f"serve-{next(_runs)}.log"
        given = [] if files is None else ["--policy", str(files["policy"]), "--cert", str(files["cert"]),
                                          "--key", str(files["key"])]
        self.args = [MXSEC, "serve-policy", *given, "--log-format", "json", *extra]
        for addr in listen:
            self.args += ["--listen", addr]
        self.proc: subprocess.Popen | None = None
        self.listen: list[str] = []

    def start(self, wait: float = 20.0) -> Serve:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        ready = self.wait_for(lambda r: r.get("msg") == "ready", wait)
        self.listen = ready["listen"]
        return self

    @property
    def port(self) -> int:
        return int(self.listen[0].rpartition(":")[2])

    def records(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 10.0, after: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.records()[after:]:
                if predicate(record):
                    return record
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no such log record within {timeout}s: {self.log_path.read_text()[-2000:]}")

    def hup(self) -> int:
        """Send SIGHUP; returns how many log records there were before, for ``wait_for(after=...)``."""
        count = len(self.records())
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGHUP)
        return count

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def factory(files: dict[str, Path], *extra: str, **kwargs: Any) -> Serve:
        server = Serve(tmp_path, files, *extra, **kwargs)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.kill()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MXSEC, "serve-policy", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess, *parts: str) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mxsec: ")
    for part in parts:
        assert part in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


async def fetch(world: FakeWorld, ca_file: Path, port: int) -> Any:
    fetcher = PolicyFetcher(HttpsSettings(timeout=5.0, ca_file=str(ca_file), port=port),
                            DnsClient(dns_settings_for(world)), loopback_guard())
    try:
        return await fetcher.fetch(DOMAIN)
    finally:
        await fetcher.aclose()


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def exchange(port: int, request: bytes, ca_file: Path, *, ip: str = SERVER_IP,
             context: ssl.SSLContext | None = None, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes, dict]:
    """Send one raw request over TLS (SNI mta-sts.example.test); read until the server closes."""
    ctx = context or client_context(ca_file)
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as raw:
        raw.settimeout(timeout)
        raw.connect((ip, port))
        with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
            peer = tls.getpeercert()
            tls.sendall(request)
            data = b""
            while True:
                try:
                    chunk = tls.recv(65536)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body, peer


def get(method: str, path: str, *extra_headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Connection: close", *extra_headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_no_banner(headers: dict[str, str]) -> None:
    assert headers.get("server", "mxsec") == "mxsec", headers
    assert "location" not in headers


# --------------------------------------------------------------------------- serving
async def test_our_fetcher_gets_the_policy(world: FakeWorld, files: dict[str, Path], serve: Any) -> None:
    server = serve(files, "--domain", DOMAIN)
    outcome = await fetch(world, files["ca"], server.port)
    assert outcome.ok, outcome.detail
    assert outcome.status == 200
    assert outcome.address == SERVER_IP
    assert outcome.body == ENFORCE
    assert outcome.content_type == "text/plain; charset=utf-8" and media_type_ok(outcome.content_type)
    # when the policy host's certificate expires, as read off the verified connection (mxsec check warns)
    from cryptography import x509

    leaf = x509.load_pem_x509_certificates(files["cert"].read_bytes())[0]
    assert outcome.certificate_not_after == int(leaf.not_valid_after_utc.timestamp())
    policy = parse_policy(outcome.body)
    assert (policy.mode, policy.mx, policy.max_age) == ("enforce", ("mx1.example.test", "*.mx.example.test"), 604800)
    request = server.wait_for(lambda r: r.get("status") == 200)
    assert request["logger"] == "mxsec.serve_policy.request"
    assert (request["method"], request["path"], request["level"]) == ("GET", POLICY_PATH, "info")
    assert request["peer"].startswith("127.") and request["peer"].rpartition(":")[2].isdigit()
    assert request["msg"] == f"GET {POLICY_PATH} 200"


def test_head_404_405_without_banner_or_redirect(files: dict[str, Path], serve: Any) -> None:
    server = serve(files)
    ca_file = files["ca"]

    status, headers, body, _ = exchange(server.port, get("GET", POLICY_PATH), ca_file)
    assert (status, body) == (200, ENFORCE)
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert_no_banner(headers)

    status, headers, body, _ = exchange(server.port, get("HEAD", POLICY_PATH), ca_file)
    assert status == 200 and body == b""
    assert headers["content-length"] == str(len(ENFORCE))
    assert headers["content-type"] == "text/plain; charset=utf-8"

    for path in ("/", "/.well-known/", "/.well-known/mta-sts.txt/", "/favicon.ico"):
        status, headers, body, _ = exchange(server.port, get("GET", path), ca_file)
        assert (status, body) == (404, b"not found\n"), path
        assert_no_banner(headers)

    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        request = get(method, POLICY_PATH, "Content-Length: 5") + b"hello"
        status, headers, body, _ = exchange(server.port, request, ca_file)
        assert (status, body) == (405, b"method not allowed\n"), method
        assert headers["allow"] == "GET, HEAD"
        assert_no_banner(headers)

    logged = [(r["method"], r["path"], r["status"]) for r in server.records() if "status" in r]
    assert ("HEAD", POLICY_PATH, 200) in logged and ("GET", "/favicon.ico", 404) in logged
    assert ("DELETE", POLICY_PATH, 405) in logged


def test_malformed_and_oversized_requests(files: dict[str, Path], serve: Any) -> None:
    server = serve(files)
    ca_file = files["ca"]
    cases = [
        b"NOT HTTP AT ALL\r\n\r\n",
        get("GET", POLICY_PATH, "X-Big: " + "a" * 10000),  # header field over the limit
        get("GET", POLICY_PATH, *(f"X-{i}: {i}" for i in range(100))),  # too many header fields
        get("GET", "/" + "a" * 10000),  # request line over the limit
    ]
    for request in cases:
        status, headers, body, _ = exchange(server.port, request, ca_file)
        assert 400 <= status < 500, (request[:40], status)
        assert_no_banner(headers)
        assert len(body) < 64 and b"Traceback" not in body
    status, _, body, _ = exchange(server.port, get("GET", POLICY_PATH), ca_file)  # still serving
    assert (status, body) == (200, ENFORCE)
    text = server.log_path.read_text()
    assert "Traceback" not in text
    assert sum(1 for r in server.records() if r.get("method") == "-" and 400 <= r.get("status", 0) < 500) == 4


def test_tls_below_1_2_is_refused(files: dict[str, Path], serve: Any) -> None:
    server = serve(files)
    ctx = client_context(files["ca"])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((SERVER_IP, server.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST) as tls:
        assert tls.version() == "TLSv1.2"

    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot offer TLS 1.1")
    with socket.create_connection((SERVER_IP, server.port), timeout=5) as raw, \
            pytest.raises((ssl.SSLError, ConnectionResetError)) as info:
        old.wrap_socket(raw, server_hostname=HOST)
    reason = str(info.value).upper()
    if "NO_PROTOCOLS_AVAILABLE" in reason or "NO PROTOCOLS AVAILABLE" in reason:
        pytest.skip("this OpenSSL cannot offer TLS 1.1")
    # the server answered the TLS 1.1 ClientHello with a protocol_version alert or by hanging up
    assert any(word in reason for word in ("VERSION", "ALERT", "EOF", "RESET")), info.value


def test_slow_client_is_cut_off(files: dict[str, Path], serve: Any) -> None:
    server = serve(files, "--connection-timeout", "1")
    ctx = client_context(files["ca"])
    with socket.create_connection((SERVER_IP, server.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST) as tls:
        started = time.monotonic()
        tls.sendall(f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {HOST}\r\n".encode())  # never finished
        try:
            assert tls.recv(1024) == b""
        except (ssl.SSLEOFError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - started
    assert 0.5 < elapsed < 4, elapsed


def test_connections_beyond_the_limit_are_closed(files: dict[str, Path], serve: Any) -> None:
    server = serve(files, "--max-connections", "1")
    ctx = client_context(files["ca"])
    with socket.create_connection((SERVER_IP, server.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST) as first:
        first.sendall(f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())  # keep-alive
        data = b""
        while not data.endswith(ENFORCE):
            chunk = first.recv(4096)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")  # served, and the connection stays open
        # the server closes the connection beyond the limit at once, before any TLS work
        with socket.create_connection((SERVER_IP, server.port), timeout=10) as raw2:
            try:
                with ctx.wrap_socket(raw2, server_hostname=HOST) as second:
                    second.sendall(get("GET", POLICY_PATH))
                    assert second.recv(1024) == b""
            except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError):
                pass
    server.wait_for(lambda r: r.get("msg") == "too many connections; closing a new one")
    deadline = time.monotonic() + 5  # once the server has seen the first connection close, the slot is free
    while True:
        try:
            status, _, body, _ = exchange(server.port, get("GET", POLICY_PATH), files["ca"])
            break
        except (IndexError, OSError):  # closed without a response: not yet
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert (status, body) == (200, ENFORCE)


def test_several_listen_addresses(files: dict[str, Path], serve: Any) -> None:
    listen = ["127.0.87.3:0", "127.0.87.4:0"]
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
            listen.append("[::1]:0")
        except OSError:
            pass
    server = serve(files, listen=tuple(listen))
    assert len(server.listen) == len(listen)
    for where in server.listen:
        host, _, port = where.rpartition(":")
        status, _, body, _ = exchange(int(port), get("GET", POLICY_PATH), files["ca"], ip=host.strip("[]"))
        assert (status, body) == (200, ENFORCE), where


def test_weak_policy_starts_with_a_warning(files: dict[str, Path], serve: Any) -> None:
    files["policy"].write_bytes(b"version: STSv1\nmode: testing\nmx: mx1.example.test\nmax_age: 3600\n")
    server = serve(files)
    warnings = [r["msg"] for r in server.records() if r.get("level") == "warning"]
    assert any(w.startswith("mode testing") for w in warnings), warnings
    assert any(w.startswith("max_age 3600 is under one day") for w in warnings), warnings


# --------------------------------------------------------------------------- signals
async def test_sighup_serves_the_new_policy(world: FakeWorld, files: dict[str, Path], serve: Any) -> None:
    server = serve(files, "--domain", DOMAIN)
    assert (await fetch(world, files["ca"], server.port)).body == ENFORCE
    files["policy"].write_bytes(LONGER)
    mark = server.hup()
    record = server.wait_for(lambda r: r.get("msg") == "policy reloaded", after=mark)
    assert record["changed"] is True and record["max_age"] == 1209600
    outcome = await fetch(world, files["ca"], server.port)
    assert outcome.ok and outcome.body == LONGER


async def test_sighup_with_a_broken_policy_keeps_the_old_one(world: FakeWorld, files: dict[str, Path],
                                                           serve: Any) -> None:
    server = serve(files, "--domain", DOMAIN)
    files["policy"].write_bytes(BROKEN)
    mark = server.hup()
    record = server.wait_for(lambda r: r.get("level") == "error", after=mark)
    assert record["msg"] == "reload: policy not replaced; still serving the previous one"
    assert "mode must be enforce, testing or none" in record["error"]
    assert str(files["policy"]) in record["error"]
    outcome = await fetch(world, files["ca"], server.port)
    assert outcome.ok and outcome.body == ENFORCE

    files["policy"].write_bytes(LONGER)  # fixed: the next SIGHUP takes it
    mark = server.hup()
    server.wait_for(lambda r: r.get("msg") == "policy reloaded", after=mark)
    assert (await fetch(world, files["ca"], server.port)).body == LONGER
    assert server.proc.poll() is None


def test_sighup_swaps_the_certificate_and_keeps_a_bad_one_out(files: dict[str, Path], ca: TestCA,
                                                             serve: Any) -> None:
    server = serve(files, "--domain", DOMAIN)
    first = exchange(server.port, get("GET", POLICY_PATH), files["ca"])[3]["serialNumber"]

    cert, key = ca.issue([HOST], fresh_key=True)  # renewal with a new key
    write_pem(files["key"], key)
    write_pem(files["cert"], cert)
    mark = server.hup()
    server.wait_for(lambda r: r.get("msg") == "certificate reloaded", after=mark)
    second = exchange(server.port, get("GET", POLICY_PATH), files["ca"])[3]["serialNumber"]
    assert second != first

    wrong, _ = ca.issue(["mta-sts.other.test"], key=None)  # shared CA key: wrong key *and* wrong name
    write_pem(files["cert"], wrong)
    mark = server.hup()
    record = server.wait_for(lambda r: r.get("level") == "error", after=mark)
    assert record["msg"] == "reload: certificate not replaced; still serving the previous one"
    status, _, body, peer = exchange(server.port, get("GET", POLICY_PATH), files["ca"])
    assert (status, body, peer["serialNumber"]) == (200, ENFORCE, second)


def test_sigterm_stops_cleanly(files: dict[str, Path], serve: Any) -> None:
    server = serve(files)
    ctx = client_context(files["ca"])
    with socket.create_connection((SERVER_IP, server.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST):  # an idle open connection
        started = time.monotonic()
        assert server.stop(timeout=15) == 0
        assert time.monotonic() - started < 10
    messages = [r.get("msg") for r in server.records()]
    assert messages[-1] == "stopped"
    with pytest.raises(OSError):
        socket.create_connection((SERVER_IP, server.port), timeout=2).close()


# --------------------------------------------------------------------------- refusing to start
def test_invalid_policy_at_start(files: dict[str, Path]) -> None:
    files["policy"].write_bytes(BROKEN)
    result = run_cli("--policy", str(files["policy"]), "--cert", str(files["cert"]), "--key", str(files["key"]),
                     "--listen", f"{SERVER_IP}:0")
    line = assert_one_line_error(result, f"policy {files['policy']} is not a valid MTA-STS policy",
                                 "line 2: mode must be enforce, testing or none, not 'enforcing'")
    assert line.startswith("mxsec: policy ")


def test_certificate_must_cover_the_domain(files: dict[str, Path], serve: Any) -> None:
    base = ["--policy", str(files["policy"]), "--cert", str(files["cert"]), "--key", str(files["key"]),
            "--listen", f"{SERVER_IP}:0"]
    result = run_cli(*base, "--domain", "other.test")
    assert_one_line_error(result, "does not cover mta-sts.other.test", HOST)
    result = run_cli(*base, "--domain", DOMAIN, "--domain", "example.org")
    assert_one_line_error(result, "does not cover mta-sts.example.org")
    serve(files, "--domain", DOMAIN)  # the same certificate with the name it covers starts


def test_expired_certificate_at_start(files: dict[str, Path], ca: TestCA) -> None:
    cert, _ = ca.expired([HOST])
    write_pem(files["cert"], cert)
    result = run_cli("--policy", str(files["policy"]), "--cert", str(files["cert"]), "--key", str(files["key"]),
                     "--listen", f"{SERVER_IP}:0", "--domain", DOMAIN)
    assert_one_line_error(result, "certificate expired on")


def test_address_in_use(files: dict[str, Path]) -> None:
    with socket.socket() as busy:
        busy.bind((SERVER_IP, 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("--policy", str(files["policy"]), "--cert", str(files["cert"]), "--key",
                         str(files["key"]), "--listen", f"{SERVER_IP}:{port}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"mxsec: cannot listen on {SERVER_IP}:{port}: ")


async def test_reuse_port_hands_over_to_a_new_process(world: FakeWorld, files: dict[str, Path],
                                                      serve: Any) -> None:
    """--reuse-port: a second serve-policy binds the same address and port while the first still runs, and
    serves alone once the first stops (a restart without a moment of refused connections)."""
    port = free_port(SERVER_IP)
    old = serve(files, "--reuse-port", listen=(f"{SERVER_IP}:{port}",))
    refused = run_cli("--policy", str(files["policy"]), "--cert", str(files["cert"]), "--key", str(files["key"]),
                      "--listen", f"{SERVER_IP}:{port}")
    assert refused.returncode == 2 and "cannot listen on" in refused.stderr  # without the flag: in use
    new = serve(files, "--reuse-port", listen=(f"{SERVER_IP}:{port}",))
    assert new.port == old.port == port
    assert old.stop() == 0
    outcome = await fetch(world, files["ca"], port)
    assert outcome.ok and outcome.body == ENFORCE


@pytest.mark.parametrize(
    ("args", "part"),
    [
        (["--listen", "unix:/tmp/x.sock"], "HOST:PORT or [IPv6]:PORT only"),
        (["--listen", "127.0.87.2"], "no port"),
        (["--domain", "mta-sts.example.test"], "not the policy host"),
    ],
)
def test_bad_options(files: dict[str, Path], args: list[str], part: str) -> None:
    result = run_cli("--policy", str(files["policy"]), "--cert", str(files["cert"]), "--key", str(files["key"]),
                     *args)
    assert_one_line_error(result, part)
