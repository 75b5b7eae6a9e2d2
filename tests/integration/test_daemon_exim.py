"""The ``exim`` map of a real `mxsec daemon` process, asked the way Exim's ``${readsocket}`` asks.

Exim sends one request, half-closes its side (``shutdown=yes``, the default) and reads until the daemon closes
the connection. The daemon must therefore answer a request that arrives together with the client's EOF — also
when the answer needs a resolution first (the slow path) — and then close. The real Exim does this in
``tests/lab/test_lab_exim.py``; here the same bytes come from a plain socket against a fake world.
"""

from __future__ import annotations

import socket
import time

import pytest

from mxsec.daemon.socketmap import NetstringDecoder, encode
from mxsec.testing.fakeworld import FakeWorld, PolicySpec, WorldThread, policy_text

from .daemonproc import Daemon

pytestmark = pytest.mark.integration

ENFORCE_RE = r"^(mx\.enforce\.test|[a-z0-9-]+\.mx\.enforce\.test)$"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    fw = FakeWorld(dns=("127.0.83.1", 0), https=("127.0.83.2", 443), state_dir=tmp_path_factory.mktemp("world"))
    fw.add_domain("enforce.test", txt=["v=STSv1; id=1"],
                  policy=PolicySpec(body=policy_text(["mx.enforce.test", "*.mx.enforce.test"])),
                  mx=["mx.enforce.test", "a.mx.enforce.test"])
    fw.add_domain("testing.test", txt=["v=STSv1; id=7"],
                  policy=PolicySpec(body=policy_text(["mx.testing.test"], mode="testing")), mx=["mx.testing.test"])
    fw.add_domain("none.test", txt=["v=STSv1; id=1"], policy=PolicySpec(body=policy_text([], mode="none")))
    fw.add_domain("nopolicy.test")
    for i in range(3):  # each answered only after a slow policy fetch
        fw.add_domain(f"slow{i}.test", txt=["v=STSv1; id=1"],
                      policy=PolicySpec(body=policy_text([f"mx.slow{i}.test"]), delay=0.4))
    thread = WorldThread(fw)
    thread.start()
    yield fw
    thread.stop()


@pytest.fixture(scope="module")
def daemon(world, tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("daemon"), world=world).start()
    yield d
    d.stop()


def readsocket(daemon, payload: bytes, *, timeout: float = 10.0) -> tuple[bytes, bool]:
    """What Exim's ``${readsocket{inet:…}{payload}{…:shutdown=yes}}`` does: send, half-close, read to EOF.
    Returns (everything read, whether the daemon closed the connection before the timeout)."""
    sock = socket.create_connection((daemon.host, daemon.port), timeout=timeout)
    try:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return data, False
            if not chunk:
                return data, True
            data += chunk
        return data, False
    finally:
        sock.close()


def replies(data: bytes) -> list[str]:
    decoder = NetstringDecoder(max_payload=1 << 20)
    items = decoder.feed(data)
    assert decoder.buffered == 0, f"trailing bytes after the replies: {data!r}"
    return [bytes(i).decode() for i in items]


def ask(domain: str) -> bytes:
    return encode(f"exim {domain}".encode())


def test_half_close_gets_a_slow_answer_then_close(daemon):
    """The request needs a TXT lookup and a 0.4 s policy fetch; the client's EOF arrived long before."""
    data, closed = readsocket(daemon, ask("slow0.test"))
    assert closed, "the daemon did not close the connection after answering"
    assert replies(data) == [r"mode=enforce mxre=^(mx\.slow0\.test)$ id=1"]


def test_half_close_gets_a_cached_answer_then_close(daemon):
    readsocket(daemon, ask("enforce.test"))  # resolve once; the second answer comes from the memo
    data, closed = readsocket(daemon, ask("enforce.test"))
    assert closed
    assert replies(data) == [f"mode=enforce mxre={ENFORCE_RE} id=1"]


def test_half_close_after_pipelined_requests_answers_all_in_order(daemon):
    data, closed = readsocket(daemon, ask("slow1.test") + ask("enforce.test") + ask("slow2.test"))
    assert closed
    assert replies(data) == [r"mode=enforce mxre=^(mx\.slow1\.test)$ id=1", f"mode=enforce mxre={ENFORCE_RE} id=1",
                             r"mode=enforce mxre=^(mx\.slow2\.test)$ id=1"]


@pytest.mark.parametrize(("key", "expected"), [
    ("testing.test", "mode=testing id=7"),
    ("none.test", "mode=none"),
    ("nopolicy.test", "mode=none"),
    ("Enforce.TEST.", f"mode=enforce mxre={ENFORCE_RE} id=1"),
    ("[192.0.2.1]", "mode=none"),  # address literal: MTA-STS never applies
])
def test_exim_dialect_replies(daemon, key, expected):
    data, closed = readsocket(daemon, ask(key))
    assert closed
    assert replies(data) == [expected]


def test_unknown_map_still_perm_and_closed(daemon):
    data, closed = readsocket(daemon, encode(b"eximx enforce.test"))
    assert closed
    assert replies(data)[0].startswith("PERM ")


def test_half_close_with_a_partial_request_just_closes(daemon):
    data, closed = readsocket(daemon, b"18:exim enfor")
    assert closed and data == b""


def test_postfix_client_connection_stays_open(daemon):
    """No half-close, no close: Postfix keeps its socketmap connection for many lookups."""
    c = daemon.client()
    try:
        assert c.ask("enforce.test", "exim") == f"mode=enforce mxre={ENFORCE_RE} id=1"
        assert c.ask("enforce.test").startswith("OK secure match=mx.enforce.test:a.mx.enforce.test ")
        c.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            c.sock.recv(1)  # nothing arrives and the connection is not closed
    finally:
        c.close()
