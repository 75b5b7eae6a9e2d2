"""``mxsec reports serve`` for real: uvicorn with TLS on 127.0.0.1 (certificates from a throw-away ``trustme``
CA), reports POSTed over HTTPS (RFC 8460 §5.4), stored in SQLite and in a real PostgreSQL server.

The expected figures are the corpus' own (``Case.successful``/``Case.failed`` summed), so a report lost or
counted twice on the way in shows up as a wrong total.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from mxsec.errors import ConfigError
from mxsec.reports.web.server import serve
from mxsec.storage.reportdb import Filters, ReportDB
from tests import tlsrpt_corpus as tc

from .servers import free_port, postgres_bindir, report_server_thread, running_postgres, running_report_server

pytestmark = pytest.mark.integration

CASES = tc.corpus()
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "localhost")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return {"cert": str(cert_file), "key": str(key_file), "context": client_context}


@contextlib.contextmanager
def running_server(db: ReportDB, pki: dict[str, object], **kwargs: object) -> Iterator[str]:
    """The app on a uvicorn server in a thread, with TLS, on a kernel-chosen port; yields the base URL."""
    with running_report_server(db, cert=str(pki["cert"]), key=str(pki["key"]), host=HOST, **kwargs) as port:
        yield f"https://{HOST}:{port}"


def post_corpus(client: httpx.Client, base: str, packing: str) -> list[tuple[int, dict[str, object]]]:
    out = []
    for case in CASES:
        body = case.gzip() if packing == "gzip" else case.json()
        response = client.post(f"{base}/tlsrpt", content=body,
                               headers={"content-type": f"application/tlsrpt+{packing}"})
        out.append((response.status_code, response.json()))
    return out


def check_corpus_round_trip(db: ReportDB, pki: dict[str, object]) -> None:
    with running_server(db, pki) as base, httpx.Client(verify=pki["context"], timeout=10) as client:
        first = post_corpus(client, base, "gzip")
        assert [status for status, _ in first] == [201] * len(CASES)
        assert [body["outcome"] for _, body in first] == ["stored"] * len(CASES)
        summary = db.summary()
        assert summary["reports"] == len(CASES)
        assert summary["successful_sessions"] == sum(c.successful for c in CASES)
        assert summary["failed_sessions"] == sum(c.failed for c in CASES)
        assert summary["by_organization"]["Company-X"] == {
            "reports": 2, "successful_sessions": 2 * 5326, "failed_sessions": 2 * 303}
        # The same reports again, as JSON this time: the same documents, so duplicates of the same rows.
        second = post_corpus(client, base, "json")
        assert [status for status, _ in second] == [200] * len(CASES)
        assert [body for _, body in second] == [
            {"outcome": "duplicate", "id": body["id"], "auth": "none", "counted": True} for _, body in first]
        assert db.summary() == summary
        rows = db.reports(Filters(), limit=100)
        assert {(r.source, r.source_name) for r in rows} == {("https", HOST)}
        # The dashboard over the same server shows the same totals.
        page = client.get(f"{base}/")
        assert page.status_code == 200 and 'id="card-reports"><span class="num" title="27">27<' in page.text


def test_post_the_corpus_over_https_into_sqlite(tmp_path: Path, pki: dict[str, object]) -> None:
    db = ReportDB(f"sqlite:///{tmp_path}/reports.db")
    try:
        check_corpus_round_trip(db, pki)
    finally:
        db.close()


def test_post_the_corpus_over_https_into_postgresql(pki: dict[str, object]) -> None:
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with running_postgres("mxsec_reports_web") as server:
        db = ReportDB(server.url)
        try:
            check_corpus_round_trip(db, pki)
            with running_server(db, pki) as base, httpx.Client(verify=pki["context"], timeout=10) as client:
                metrics = client.get(f"{base}/metrics").text
            assert "mxsec_tlsrpt_stored_reports 27.0" in metrics
            assert 'mxsec_tlsrpt_sessions{policy_domain="company-y.example",result="failed"} 606.0' in metrics
        finally:
            db.close()


def _connect(base: str, pki: dict[str, object]) -> ssl.SSLSocket:
    port = int(base.rsplit(":", 1)[1])
    context: ssl.SSLContext = pki["context"]  # type: ignore[assignment]
    return context.wrap_socket(socket.create_connection((HOST, port), timeout=10), server_hostname=HOST)


def _read_head(conn: ssl.SSLSocket) -> bytes:
    answer = b""
    conn.setblocking(True)
    conn.settimeout(10)
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in answer:
            data = conn.recv(65536)
            if not data:
                break
            answer += data
    return answer


def _push_chunks(conn: ssl.SSLSocket, offered: int) -> tuple[int, str, bytes]:
    """Send a chunked body of up to *offered* bytes until the server answers or drops the connection;
    return (bytes sent, "answered" | "dropped" | "all sent", the first bytes of the answer)."""
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    pending = chunk
    sent = 0
    conn.setblocking(False)
    deadline = time.monotonic() + 30
    while sent < offered and time.monotonic() < deadline:
        readable, writable, _ = select.select([conn], [conn], [], 1)
        if readable:
            try:
                data = conn.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                data = None  # a TLS record without application data (a TLS 1.3 session ticket)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
                return sent, "dropped", b""
            if data == b"":
                return sent, "dropped", b""
            if data:
                return sent, "answered", data
        if not writable:
            continue
        try:
            n = conn.send(pending)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            continue
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
            return sent, "dropped", b""
        sent += n
        pending = pending[n:] or chunk
    return sent, "all sent", b""


def test_oversize_bodies_are_refused_early_and_the_server_keeps_serving(
        tmp_path: Path, pki: dict[str, object]) -> None:
    """A declared Content-Length over the cap is refused before any body byte is read. A chunked body (no
    length to check) is refused once the cap is passed, long before the client could send all it offers:
    the client either reads the 413 or, when it was still sending, finds the connection closed (unread data
    makes the kernel reset it). Either way the server goes on serving other clients."""
    db = ReportDB(f"sqlite:///{tmp_path}/reports.db")
    limit = 256 * 1024
    offered = 256 * 1024 * 1024
    try:
        with running_server(db, pki, max_body=limit) as base:
            with _connect(base, pki) as conn:
                conn.sendall(b"POST /tlsrpt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/tlsrpt+gzip"
                             b"\r\nContent-Length: %d\r\n\r\n" % (limit * 4))
                answer = _read_head(conn)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

            with _connect(base, pki) as conn:
                conn.sendall(b"POST /tlsrpt HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Content-Type: application/tlsrpt+json\r\nTransfer-Encoding: chunked\r\n\r\n")
                sent, ended, answer = _push_chunks(conn, offered)
            assert ended != "all sent", f"the server took {sent} bytes without refusing"
            assert sent < 64 * 1024 * 1024, f"{sent} bytes went in before the server refused"
            assert ended == "dropped" or answer.startswith(b"HTTP/1.1 413"), (ended, answer[:200])

            with httpx.Client(verify=pki["context"], timeout=10) as client:
                ok = client.post(f"{base}/tlsrpt", content=tc.case("google-heartbeat").gzip(),
                                 headers={"content-type": "application/tlsrpt+gzip"})
                assert ok.status_code == 201
                assert client.get(f"{base}/healthz").text == "ok"
        assert db.totals().reports == 1
    finally:
        db.close()


def test_serve_runs_until_sigterm(tmp_path: Path, pki: dict[str, object]) -> None:
    """The CLI's entry point in its own process: TLS, the listen address, a clean exit on SIGTERM."""
    port = free_port()
    url = f"sqlite:///{tmp_path}/reports.db"
    code = (
        "import sys; from mxsec.reports.web.server import serve; "
        "serve(sys.argv[1], sys.argv[2], tls_cert=sys.argv[3], tls_key=sys.argv[4])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, url, f"{HOST}:{port}", str(pki["cert"]), str(pki["key"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        with httpx.Client(verify=pki["context"], timeout=5) as client:
            while True:
                assert proc.poll() is None, proc.stderr.read().decode()
                try:
                    health = client.get(f"https://{HOST}:{port}/healthz")
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline, "serve() did not come up"
                    time.sleep(0.1)
            assert health.status_code == 200 and health.text == "ok"
            posted = client.post(f"https://{HOST}:{port}/tlsrpt", content=tc.case("postfix-dane").json(),
                                 headers={"content-type": "application/tlsrpt+json"})
            assert posted.status_code == 201
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    db = ReportDB(url)
    assert db.totals().as_dict() == {"reports": 1, "successful_sessions": 88, "failed_sessions": 2}
    db.close()


def test_serve_refuses_a_busy_port_and_bad_tls_files(tmp_path: Path, pki: dict[str, object]) -> None:
    url = f"sqlite:///{tmp_path}/reports.db"
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen(1)
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1:"):
            serve(url, f"{HOST}:{taken.getsockname()[1]}")
    with pytest.raises(ConfigError, match="TLS key"):
        serve(url, f"{HOST}:0", tls_cert=str(pki["cert"]), tls_key=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="listen address"):
        serve(url, "127.0.0.1")


# ------------------------------------------------------------------ connection limits and login, real uvicorn


from mxsec.reports.web.auth import AuthSettings, hash_password  # noqa: E402
from mxsec.reports.web.limits import ConnectionGuard  # noqa: E402


def plain_server(db: ReportDB, **kwargs: object):
    """``build_server`` over plain HTTP on 127.0.0.1 in a thread; yields (port, server)."""
    return report_server_thread(db, **kwargs)


def _wait_serving(client: httpx.Client, proc: subprocess.Popen, port: int) -> None:
    """Until ``reports serve`` (*proc*) answers ``/healthz`` on *port* (20 s at most; it must not exit)."""
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            assert client.get(f"http://{HOST}:{port}/healthz").text == "ok"
            return
        except httpx.ConnectError:
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.1)


def _closed_by_peer(conn: socket.socket, wait: float) -> bool:
    """True when the server closed *conn* within *wait* seconds (EOF or reset)."""
    conn.settimeout(wait)
    try:
        while True:
            data = conn.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_1024_half_open_connections_do_not_lock_out_a_new_client(tmp_path: Path) -> None:
    """The finding: 1,024 connections that never finish their headers locked `reports serve` out."""
    db = ReportDB(f"sqlite:///{tmp_path}/reports.db")
    guard = ConnectionGuard(max_connections=64, header_timeout=60)
    held: list[socket.socket] = []
    try:
        with plain_server(db, guard=guard) as (port, _):
            for _ in range(1024):
                conn = socket.create_connection((HOST, port), timeout=5)
                conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                held.append(conn)
            start = time.monotonic()
            with httpx.Client(timeout=5) as client:
                for _ in range(3):
                    response = client.get(f"http://{HOST}:{port}/healthz")
                    assert response.status_code == 200 and response.text == "ok"
                    page = client.get(f"http://{HOST}:{port}/")
                    assert page.status_code == 200
            assert time.monotonic() - start < 5
            assert len(guard.open) <= 64
            assert guard.evicted >= 1024 - 64
            # the oldest half-open connections were the ones closed
            assert _closed_by_peer(held[0], 2) and not _closed_by_peer(held[-1], 0.2)
    finally:
        for conn in held:
            conn.close()
        db.close()


def test_slow_headers_and_slow_bodies_are_cut_off(tmp_path: Path) -> None:
    db = ReportDB(f"sqlite:///{tmp_path}/reports.db")
    guard = ConnectionGuard(max_connections=16, header_timeout=1.0, body_timeout=1.0)
    try:
        with plain_server(db, guard=guard) as (port, _):
            slow_head = socket.create_connection((HOST, port), timeout=5)
            slow_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow_body = socket.create_connection((HOST, port), timeout=5)
            slow_body.sendall(b"POST /tlsrpt HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/tlsrpt+json\r\n"
                              b"content-length: 1000\r\n\r\n{")
            start = time.monotonic()
            for _ in range(4):  # a byte now and then does not extend the deadline
                time.sleep(0.2)
                slow_head.sendall(b"X: y\r\n")
            assert _closed_by_peer(slow_head, 3) and _closed_by_peer(slow_body, 3)
            assert time.monotonic() - start < 3
            # a prompt client on a kept-alive connection is not cut off
            with httpx.Client(timeout=5) as client:
                for _ in range(3):
                    assert client.get(f"http://{HOST}:{port}/healthz").status_code == 200
                    time.sleep(0.5)
            assert guard.timed_out >= 2
            # a kept-alive connection must send its next request head in time too
            idle = socket.create_connection((HOST, port), timeout=5)
            idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert idle.recv(4096).startswith(b"HTTP/1.1 200")
            idle.sendall(b"GET /healthz HTTP/1.1\r\n")
            assert _closed_by_peer(idle, 3)
            for conn in (slow_head, slow_body, idle):
                conn.close()
    finally:
        db.close()


def test_when_every_connection_is_busy_a_new_one_gets_503(tmp_path: Path) -> None:
    db = ReportDB(f"sqlite:///{tmp_path}/reports.db")
    guard = ConnectionGuard(max_connections=2, header_timeout=30, body_timeout=30)
    busy = []
    try:
        with plain_server(db, guard=guard) as (port, _):
            for _ in range(2):  # requests whose bodies are still coming: not evictable
                conn = socket.create_connection((HOST, port), timeout=5)
                conn.sendall(b"POST /tlsrpt HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/tlsrpt+json\r\n"
                             b"content-length: 1000\r\n\r\n{")
                busy.append(conn)
            time.sleep(0.3)
            extra = socket.create_connection((HOST, port), timeout=5)
            extra.settimeout(5)
            answer = extra.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections" in answer
            extra.close()
            assert guard.refused == 1
            for conn in busy:
                conn.close()
            time.sleep(0.3)
            with httpx.Client(timeout=5) as client:
                assert client.get(f"http://{HOST}:{port}/healthz").status_code == 200
    finally:
        db.close()


def test_dashboard_login_and_host_check_over_real_uvicorn(tmp_path: Path) -> None:
    db = ReportDB(f"sqlite:///{tmp_path}/reports.db")
    auth = AuthSettings(password_hash=hash_password("correct horse battery"), listen_host=HOST,
                        allowed_hosts=["reports.example"])
    try:
        with plain_server(db, auth=auth) as (port, _), httpx.Client(timeout=5) as client:
            base = f"http://{HOST}:{port}"
            first = client.get(f"{base}/reports?page=1")
            assert first.status_code == 303 and first.headers["location"] == "/login?next=%2Freports%3Fpage%3D1"
            assert client.get(f"{base}/metrics").status_code == 401
            assert client.get(f"{base}/healthz").text == "ok"
            posted = client.post(f"{base}/tlsrpt", content=tc.case("postfix-dane").json(),
                                 headers={"content-type": "application/tlsrpt+json"})
            assert posted.status_code == 201  # reporters do not log in
            wrong = client.post(f"{base}/login", data={"password": "nope", "next": "/reports"})
            assert wrong.status_code == 401 and "Wrong password." in wrong.text
            login = client.post(f"{base}/login", data={"password": "correct horse battery", "next": "/reports"})
            assert login.status_code == 303 and login.headers["location"] == "/reports"
            cookie = login.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie  # plain HTTP
            assert client.get(f"{base}/reports").status_code == 200
            assert client.get(f"{base}/metrics").status_code == 200
            # DNS rebinding: a foreign name is refused even with a valid session
            assert client.get(f"{base}/", headers={"host": f"attacker.example:{port}"}).status_code == 400
            assert client.get(f"{base}/", headers={"host": "reports.example"}).status_code == 200
            assert client.get(f"{base}/", headers={"host": f"localhost:{port}"}).status_code == 200
            out = client.post(f"{base}/logout")
            assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
            client.cookies.clear()
            assert client.get(f"{base}/reports").status_code == 303
    finally:
        db.close()


def test_cli_warns_when_the_dashboard_is_exposed_without_login(tmp_path: Path) -> None:
    """`reports serve --listen 0.0.0.0:PORT` without a login: one warning line on stderr; then it serves."""
    port = free_port()
    config = tmp_path / "mxsec.toml"
    config.write_text("[reports]\nmax_connections = 50\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from mxsec.cli import main; main()", "reports", "serve", "--db",
         f"sqlite:///{tmp_path}/r.db", "--config",
         str(config), "--listen", f"0.0.0.0:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        with httpx.Client(timeout=5) as client:
            _wait_serving(client, proc, port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        stderr = proc.stderr.read().decode()
        warnings = [line for line in stderr.splitlines() if line.startswith("mxsec: warning:")]
        assert len(warnings) == 1 and f"0.0.0.0:{port}, not loopback, without a login" in warnings[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_cli_server_with_1024_descriptors_survives_1100_half_open_connections(tmp_path: Path) -> None:
    """The finding as measured: a `reports serve` process limited to 1,024 file descriptors (a common default)
    and 1,100 connections that never finish their headers. Without the cap the process runs out of descriptors
    and a new client is never answered; with it, the new client is served at once."""
    import resource

    port = free_port()
    (tmp_path / "none.toml").write_text("")

    def limit_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    proc = subprocess.Popen(
        [sys.executable, "-c", "from mxsec.cli import main; main()", "reports", "serve", "--db",
         f"sqlite:///{tmp_path}/r.db", "--config", str(tmp_path / "none.toml"), "--listen", f"{HOST}:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limit_descriptors,
    )
    held: list[socket.socket] = []
    try:
        with httpx.Client(timeout=5) as client:
            _wait_serving(client, proc, port)
            for _ in range(1100):
                conn = socket.create_connection((HOST, port), timeout=5)
                conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                held.append(conn)
            time.sleep(0.5)
            start = time.monotonic()
            assert client.get(f"http://{HOST}:{port}/healthz").text == "ok"
            assert client.get(f"http://{HOST}:{port}/").status_code == 200
            assert time.monotonic() - start < 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        for conn in held:
            conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_tls_handshake_gets_the_header_timeout(tmp_path: Path, pki: dict[str, object]) -> None:
    """A client that connects to the HTTPS server and never starts the TLS handshake is closed after the
    header timeout (asyncio's own default would keep it 60 s); a real client is served meanwhile."""
    db = ReportDB(f"sqlite:///{tmp_path}/reports.db")
    try:
        with running_server(db, pki, guard=ConnectionGuard(header_timeout=1.0)) as base:
            port = int(base.rsplit(":", 1)[1])
            silent = socket.create_connection((HOST, port), timeout=5)
            start = time.monotonic()
            with httpx.Client(verify=pki["context"], timeout=5) as client:
                assert client.get(f"{base}/healthz").text == "ok"
            assert _closed_by_peer(silent, 4)
            assert time.monotonic() - start < 4
            silent.close()
    finally:
        db.close()


def test_a_flooding_address_loses_its_own_connections_first(tmp_path: Path) -> None:
    """At the cap, the half-open connection closed is the oldest of the address holding the most: a client on
    another address that is still sending its headers is not the one cut off, however old."""
    db = ReportDB(f"sqlite:///{tmp_path}/reports.db")
    guard = ConnectionGuard(max_connections=10, header_timeout=30)
    flood: list[socket.socket] = []
    try:
        with plain_server(db, guard=guard) as (port, _):
            patient = socket.create_connection((HOST, port), timeout=5, source_address=("127.0.0.2", 0))
            patient.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # oldest, head not complete yet
            time.sleep(0.2)
            for _ in range(100):
                conn = socket.create_connection((HOST, port), timeout=5)
                conn.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
                flood.append(conn)
            time.sleep(0.3)
            assert guard.evicted >= 90
            patient.sendall(b"\r\n")
            patient.settimeout(5)
            assert patient.recv(4096).startswith(b"HTTP/1.1 200 ")
            patient.close()
    finally:
        for conn in flood:
            conn.close()
        db.close()
