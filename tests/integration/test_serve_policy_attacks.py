# ruff: noqa: F811  (the fixtures imported from test_serve_policy are parameters here)
"""Hostile clients against `mxsec serve-policy`'s own accept path (issue 17).

serve-policy accepts each socket itself, refuses connections beyond ``--max-connections`` at accept time, peeks
at the ClientHello for up to ``--handshake-timeout`` (re-peeking every 20 ms while it is incomplete), and only
then starts TLS. Each test here is one attack on that path, run against the real CLI process on 127.0.87.2:
a half-open flood, a dripped ClientHello, bytes that are no TLS at all, acme-tls/1 hellos with no challenge
pending (and a flood of them with random server names), unknown SNI and Host names, oversized hellos. Each
checks that the attacker's connections are closed in time, that the server process burns no CPU and grows no
memory while it waits, that its log has no traceback, and that a real client is served afterwards.
"""

from __future__ import annotations

import os
import random
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from mxsec.net.https import POLICY_PATH
from mxsec.testing.pki import TestCA, write_pem
from tests.integration.test_serve_policy import (  # noqa: F401  (ca, files and serve are fixtures)
    DOMAIN,
    ENFORCE,
    HOST,
    SERVER_IP,
    Serve,
    ca,
    client_context,
    exchange,
    files,
    get,
    serve,
)

pytestmark = pytest.mark.integration

LIMIT = 20
ACME_TLS_ALPN = "acme-tls/1"


# --------------------------------------------------------------------------- helpers
def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (proc(5): fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def hello_bytes(server_name: str | None = HOST, alpn: Iterable[str] = ()) -> bytes:
    """A real ClientHello (Python's own TLS client), as the bytes it would send first."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    data = outgoing.read()
    assert data[:1] == b"\x16" and data[5] == 1  # a handshake record holding a ClientHello
    return data


def connect(port: int) -> socket.socket:
    return socket.create_connection((SERVER_IP, port), timeout=10)


def wait_closed(socks: list[socket.socket], timeout: float) -> list[float | None]:
    """Seconds until the server closed each socket (EOF or reset), None for those still open at ``timeout``."""
    started = time.monotonic()
    closed: list[float | None] = [None] * len(socks)
    with selectors.DefaultSelector() as sel:
        for i, sock in enumerate(socks):
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, i)
        deadline = started + timeout
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                sock = socks[key.data]
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # reset
                    data = b""
                if not data:  # an alert or the like is read and ignored; EOF is the close
                    closed[key.data] = time.monotonic() - started
                    sel.unregister(sock)
    return closed


def closed_after(sock: socket.socket, timeout: float) -> float | None:
    return wait_closed([sock], timeout)[0]


def policy_served(port: int, ca_file: Path) -> None:
    status, _, body, _ = exchange(port, get("GET", POLICY_PATH), ca_file)
    assert (status, body) == (200, ENFORCE)


def assert_healthy(server: Serve) -> None:
    assert server.proc is not None and server.proc.poll() is None
    text = server.log_path.read_text(errors="replace")
    assert "Traceback" not in text
    assert not [r for r in server.records() if r.get("level") in ("error", "critical") or "raw" in r]


def leaf_der(pem: bytes) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def handshake(port: int, server_name: str | None, alpn: Iterable[str] = ()) -> tuple[bytes | None, str | None]:
    """A full TLS handshake without verification; (the server's leaf DER, the ALPN chosen), or (None, None)
    when the server refused the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    with connect(port) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                return tls.getpeercert(binary_form=True), tls.selected_alpn_protocol()
        except (ssl.SSLError, ConnectionResetError):
            return None, None


@pytest.fixture
def acme_state(tmp_path: Path, ca: TestCA) -> dict[str, Any]:
    """An ACME state directory that already holds a valid certificate for mta-sts.example.test, so that
    ``--acme-directory`` (an address where nothing answers) serves it without any order."""
    state = tmp_path / "acme-state"
    (state / "certs").mkdir(parents=True)
    os.chmod(state, 0o700)
    os.chmod(state / "certs", 0o700)
    cert, key = ca.issue([HOST], fresh_key=True)
    path = write_pem(state / "certs" / f"{HOST}.pem", key, cert)
    os.chmod(path, 0o600)
    return {"dir": state, "leaf": leaf_der(cert)}


def acme_server(serve: Any, files: dict[str, Path], state: dict[str, Any], *extra: str) -> Serve:
    return serve(None, "--policy", str(files["policy"]), "--domain", DOMAIN,
                 "--acme-directory", "https://127.0.0.1:9/directory", "--acme-state", str(state["dir"]),
                 "--acme-retry", "3600", "--max-connections", str(LIMIT), *extra)


# --------------------------------------------------------------------------- half-open flood
def test_half_open_flood_is_refused_beyond_the_limit_and_timed_out(files: dict[str, Path], serve: Any) -> None:
    server = serve(files, "--max-connections", str(LIMIT), "--handshake-timeout", "2")
    pid = server.proc.pid
    cpu_before = cpu_seconds(pid)
    hello = hello_bytes()
    socks = []
    try:
        started = time.monotonic()
        for i in range(LIMIT + 10):
            sock = connect(server.port)
            if i % 2:
                sock.sendall(hello[:11])  # half a ClientHello, then silence: re-peeked every 20 ms
            socks.append(sock)
        early = wait_closed(socks, 1.0)
        # the excess are closed at once, the first LIMIT are kept (they are within their handshake time)
        assert [t is not None for t in early] == [False] * LIMIT + [True] * 10, early
        rest = socks[:LIMIT]
        late = wait_closed(rest, 4.0)
        elapsed = time.monotonic() - started
        assert all(t is not None for t in late), late  # every idle one closed by the server
        assert 1.0 < elapsed < 4.5, elapsed  # around the 2 s handshake timeout, not before
    finally:
        for sock in socks:
            sock.close()
    assert cpu_seconds(pid) - cpu_before < 0.5  # waiting for 20 connections costs (almost) nothing
    policy_served(server.port, files["ca"])
    refused = [r for r in server.records() if r.get("msg") == "too many connections; closing a new one"]
    # one line a second at most, saying how many were refused since the previous one
    assert 1 <= len(refused) <= 3 and sum(r["refused"] for r in refused) == 10 and refused[0]["limit"] == LIMIT
    assert_healthy(server)  # the refusals are warnings, nothing worse


def test_a_client_is_served_while_the_limit_is_not_reached(files: dict[str, Path], serve: Any) -> None:
    server = serve(files, "--max-connections", str(LIMIT), "--handshake-timeout", "3")
    socks = [connect(server.port) for _ in range(LIMIT - 2)]  # silent, within their handshake time
    try:
        started = time.monotonic()
        policy_served(server.port, files["ca"])  # one slot left: a real client gets through at once
        assert time.monotonic() - started < 1.5
        assert all(t is None for t in wait_closed(socks, 0.2))
    finally:
        for sock in socks:
            sock.close()
    assert_healthy(server)


# --------------------------------------------------------------------------- a dripped ClientHello
def test_dripped_client_hello_is_cut_off_without_cpu_spin(files: dict[str, Path], serve: Any) -> None:
    server = serve(files, "--max-connections", str(LIMIT), "--handshake-timeout", "3")
    pid = server.proc.pid
    hello = hello_bytes()
    assert len(hello) > 100  # 5 s of drip or more: the whole hello never arrives in time
    results: dict[int, tuple[float, int]] = {}

    def drip(index: int) -> None:
        with connect(server.port) as sock:
            started = time.monotonic()
            sent = 0
            try:
                for byte in hello:
                    if time.monotonic() - started > 8:
                        break
                    sock.sendall(bytes([byte]))
                    sent += 1
                    time.sleep(0.05)
                    sock.setblocking(False)
                    try:
                        if sock.recv(1) == b"":
                            break
                    except BlockingIOError:
                        pass
                    finally:
                        sock.setblocking(True)
            except OSError:  # reset, or a broken pipe after the server closed
                pass
            results[index] = (time.monotonic() - started, sent)

    cpu_before = cpu_seconds(pid)
    threads = [threading.Thread(target=drip, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    for _ in range(3):  # other clients are served meanwhile
        started = time.monotonic()
        policy_served(server.port, files["ca"])
        assert time.monotonic() - started < 1.5
        time.sleep(0.3)
    for thread in threads:
        thread.join(10)
    cpu_used = cpu_seconds(pid) - cpu_before
    assert len(results) == 4, results
    for elapsed, sent in results.values():
        assert 2.5 < elapsed < 4.5 and sent < len(hello), results  # cut off at the 3 s handshake timeout
    assert cpu_used < 0.5, cpu_used  # four drippers for 3 s, plus three real requests
    assert_healthy(server)


# --------------------------------------------------------------------------- no TLS at all
def _sslv2_hello() -> bytes:
    """An SSLv2-compatible CLIENT-HELLO (the record form of pre-TLS clients, RFC 5246 appendix E.2)."""
    specs = bytes.fromhex("00002f000035010080")  # three 3-byte cipher specs
    challenge = bytes(range(16))
    body = b"\x01\x03\x01" + len(specs).to_bytes(2, "big") + b"\x00\x00" + len(challenge).to_bytes(2, "big")
    body += specs + challenge
    return (0x8000 | len(body)).to_bytes(2, "big") + body


def _garbage() -> list[tuple[str, bytes]]:
    rng = random.Random(17)
    noise = bytes(rng.randrange(256) for _ in range(2000))
    record_noise = bytes(rng.randrange(256) for _ in range(300))
    return [
        ("http in clear", f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()),
        ("random bytes", b"\x00" + noise),
        ("random ascii", bytes(0x41 + b % 26 for b in noise)),
        ("sslv2 hello", _sslv2_hello()),
        ("handshake record of noise", b"\x16\x03\x01" + len(record_noise).to_bytes(2, "big") + record_noise),
        ("a ServerHello", b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"),
        ("an alert record", b"\x15\x03\x03\x00\x02\x02\x28"),
        ("record version 3.9", b"\x16\x03\x09\x00\x05\x01\x00\x00\x01\x00"),
    ]


@pytest.mark.parametrize("name", [name for name, _ in _garbage()])
def test_garbage_instead_of_tls_is_closed(files: dict[str, Path], serve: Any, name: str) -> None:
    data = dict(_garbage())[name]
    server = serve(files, "--max-connections", str(LIMIT), "--handshake-timeout", "5", "--log-level", "debug")
    with connect(server.port) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass
        closed = closed_after(sock, 4.0)
    assert closed is not None and closed < 3, (name, closed)  # refused at once, not left to the timeout
    policy_served(server.port, files["ca"])
    assert_healthy(server)


def test_connections_that_close_or_reset_at_once_give_their_slot_back(files: dict[str, Path],
                                                                       serve: Any) -> None:
    server = serve(files, "--max-connections", str(LIMIT), "--handshake-timeout", "5")
    partial = hello_bytes()[:20]
    for _ in range(LIMIT * 2):  # twice the limit: a slot kept by any of them would show below
        with connect(server.port):
            pass  # FIN before any byte
        sock = connect(server.port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(partial)
        sock.close()  # RST in the middle of a ClientHello
        time.sleep(0.005)  # a burst beyond the limit is refused (counted as open until seen closed): pace it
    time.sleep(0.3)
    held = [connect(server.port) for _ in range(LIMIT - 1)]  # every slot but one is free again ...
    try:
        assert all(t is None for t in wait_closed(held, 0.3))
        policy_served(server.port, files["ca"])  # ... and so is the last one
    finally:
        for sock in held:
            sock.close()
    assert_healthy(server)


def test_part_of_a_hello_then_fin_is_closed_at_once(files: dict[str, Path], serve: Any) -> None:
    """The peeked bytes stay in the socket, so a peer gone after part of a hello is seen from the TCP state."""
    server = serve(files, "--max-connections", str(LIMIT), "--handshake-timeout", "5")
    hello = hello_bytes()
    socks = []
    for size in (1, 5, 11, len(hello) - 1):
        sock = connect(server.port)
        sock.sendall(hello[:size])
        sock.shutdown(socket.SHUT_WR)  # FIN: the rest of the hello never comes
        socks.append(sock)
    try:
        closed = wait_closed(socks, 4.0)
    finally:
        for sock in socks:
            sock.close()
    assert all(t is not None and t < 1.0 for t in closed), closed  # not held for the 5 s handshake timeout
    policy_served(server.port, files["ca"])
    assert_healthy(server)


# --------------------------------------------------------------------------- oversized ClientHello
def test_oversized_client_hello_is_closed(files: dict[str, Path], serve: Any) -> None:
    server = serve(files, "--max-connections", str(LIMIT), "--handshake-timeout", "3")
    chunk = bytes(range(256)) * 64  # 16 KiB
    hello = hello_bytes()
    cases = {
        # a record longer than TLS allows (2^14 + 256)
        "record too long": b"\x16\x03\x01\xff\xff\x01" + chunk,
        # a ClientHello claiming 16 MiB, its first 16 KiB sent in one record
        "hello claims 16 MiB": b"\x16\x03\x01\x40\x00\x01\xff\xff\xff" + chunk[:16380],
        # the real hello's header rewritten to claim 20000 bytes, the rest never comes
        "hello claims 20000 bytes": hello[:6] + (20000).to_bytes(3, "big") + hello[9:],
    }
    socks = {}
    for name, data in cases.items():
        sock = connect(server.port)
        try:
            sock.sendall(data)
        except OSError:
            pass
        socks[name] = sock
    try:
        closed = dict(zip(socks, wait_closed(list(socks.values()), 5.0)))
    finally:
        for sock in socks.values():
            sock.close()
    assert all(t is not None and t < 4.0 for t in closed.values()), closed  # at most the handshake timeout
    assert closed["record too long"] < 1.5 and closed["hello claims 16 MiB"] < 1.5, closed
    policy_served(server.port, files["ca"])
    assert_healthy(server)


# --------------------------------------------------------------------------- acme-tls/1 with nothing pending
def test_acme_alpn_without_acme_gets_the_normal_certificate(files: dict[str, Path], serve: Any) -> None:
    server = serve(files, "--max-connections", str(LIMIT))
    leaf = leaf_der(files["cert"].read_bytes())
    for alpn in ([ACME_TLS_ALPN], ["http/1.1", ACME_TLS_ALPN]):
        assert handshake(server.port, HOST, alpn) == (leaf, None)
    policy_served(server.port, files["ca"])
    assert_healthy(server)


def test_acme_alpn_with_no_challenge_pending(files: dict[str, Path], serve: Any,
                                             acme_state: dict[str, Any]) -> None:
    server = acme_server(serve, files, acme_state)
    server.wait_for(lambda r: r.get("msg") == "certificate loaded" and r.get("host") == HOST)
    leaf = acme_state["leaf"]
    # the validator's hello with nothing pending: the host's own certificate, no acme-tls/1 selected
    assert handshake(server.port, HOST, [ACME_TLS_ALPN]) == (leaf, None)
    assert handshake(server.port, "mta-sts.other.test", [ACME_TLS_ALPN]) == (leaf, None)  # default
    assert handshake(server.port, None, [ACME_TLS_ALPN]) == (leaf, None)
    status, _, body, peer = exchange(server.port, get("GET", POLICY_PATH), files["ca"])
    assert (status, body) == (200, ENFORCE)
    assert not [r for r in server.records() if r.get("msg") == "TLS-ALPN-01 challenge answered"]
    assert server.proc.poll() is None and "Traceback" not in server.log_path.read_text()


def test_a_flood_of_acme_hellos_with_random_names_does_not_grow_memory(files: dict[str, Path],
                                                                    serve: Any, acme_state: dict[str, Any]) -> None:
    server = acme_server(serve, files, acme_state)
    pid = server.proc.pid
    rng = random.Random(1717)

    def name() -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(20)) + ".example.test"

    def flood(count: int) -> None:
        for i in range(count):
            if i % 2:  # a full handshake
                assert handshake(server.port, name(), [ACME_TLS_ALPN]) == (acme_state["leaf"], None)
            else:  # the hello alone, then gone
                with connect(server.port) as sock:
                    sock.sendall(hello_bytes(name(), [ACME_TLS_ALPN]))

    flood(100)  # warm up: imports, caches, allocator arenas
    time.sleep(0.3)
    before = rss_kib(pid)
    flood(400)
    time.sleep(0.3)
    grown = rss_kib(pid) - before
    assert grown < 4096, f"VmRSS grew by {grown} KiB over 400 hellos"
    policy_served(server.port, files["ca"])
    assert server.proc.poll() is None and "Traceback" not in server.log_path.read_text()


# --------------------------------------------------------------------------- unknown names
def test_unknown_sni_gets_the_default_certificate_and_unknown_host_404(files: dict[str, Path],
                                                                     serve: Any) -> None:
    server = serve(files, "--domain", DOMAIN, "--max-connections", str(LIMIT))
    leaf = leaf_der(files["cert"].read_bytes())
    for sni in ("mta-sts.unknown.test", "unknown.test", None):
        assert handshake(server.port, sni) == (leaf, None), sni
    ctx = client_context(files["ca"])
    for host in ("mta-sts.unknown.test", "127.0.87.2", "x" * 300):
        request = f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        status, _, body, _ = exchange(server.port, request, files["ca"], context=ctx)
        assert (status, body) == (404, b"not found\n"), host
    policy_served(server.port, files["ca"])
    assert_healthy(server)


def test_unknown_sni_under_acme_gets_the_first_hosts_certificate(files: dict[str, Path], serve: Any,
                                                                 acme_state: dict[str, Any]) -> None:
    server = acme_server(serve, files, acme_state)
    server.wait_for(lambda r: r.get("msg") == "certificate loaded")
    for sni in ("mta-sts.unknown.test", None):
        assert handshake(server.port, sni) == (acme_state["leaf"], None), sni
    request = f"GET {POLICY_PATH} HTTP/1.1\r\nHost: mta-sts.unknown.test\r\nConnection: close\r\n\r\n".encode()
    status, _, body, _ = exchange(server.port, request, files["ca"])
    assert (status, body) == (404, b"not found\n")
    assert server.proc.poll() is None and "Traceback" not in server.log_path.read_text()
