"""The Pebble harness (mxsec.testing.pebble): a real ACME exchange (RFC 8555) against Debian's Pebble.

Pebble resolves the challenged name through a private FakeWorld (mta-sts.example.test → 127.0.0.1) and fetches
the http-01 key authorization (RFC 8555 §8.3) from a responder the test runs on 127.0.0.1:httpPort. The
certificate must name the policy host and chain to the CA Pebble made at start (RFC 8461 §3.3: the policy host
needs a certificate valid for mta-sts.<domain>).
"""

from __future__ import annotations

import datetime as _dt
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import josepy as jose
import pytest
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from mxsec.testing.fakeworld import FakeWorld
from mxsec.testing.pebble import PebbleServer, running_pebble
from mxsec.testing.servers import free_port
from tests.integration.conftest import running_world

pytestmark = pytest.mark.integration

POLICY_HOST = "mta-sts.example.test"
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


@dataclass
class Responder:
    """A minimal http-01 responder on 127.0.0.1:``port``: serves ``answers[path]``, records every request."""

    port: int
    answers: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)


@pytest.fixture
def responder() -> Iterator[Responder]:
    state = Responder(port=free_port())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.requests.append((self.path, self.headers.get("Host", "")))
            body = state.answers.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def world() -> Iterator[FakeWorld]:
    with running_world() as started:
        started.set_record(POLICY_HOST, "A", ["127.0.0.1"])
        yield started


@pytest.fixture
def pebble(world: FakeWorld, responder: Responder) -> Iterator[PebbleServer]:
    dns_host, dns_port = world.dns_address
    with running_pebble(http_port=responder.port, tls_port=free_port(), dns_server=f"{dns_host}:{dns_port}") as p:
        yield p


def _acme_client(pebble: PebbleServer) -> tuple[client.ClientV2, jose.JWKEC]:
    account_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    # verify_ssl goes to requests' ``verify``, which takes a CA bundle path too (acme annotates it as bool)
    net = client.ClientNetwork(
        account_key, alg=jose.ES256, verify_ssl=str(pebble.ca_bundle), user_agent="mxsec-test"  # type: ignore[arg-type]
    )
    acme = client.ClientV2(client.ClientV2.get_directory(pebble.directory_url, net), net)
    acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    return acme, account_key


def _csr(host: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return crypto_util.make_csr(key_pem, [host])


def _order_with_http01(
    acme: client.ClientV2, account_key: jose.JWKEC, responder: Responder, *, corrupt: bool = False
) -> messages.OrderResource:
    """A new order for POLICY_HOST whose http-01 challenges are published (``corrupt``: a wrong answer) and
    answered; returns it after finalization (raises if validation fails)."""
    order = acme.new_order(_csr(POLICY_HOST))
    answered = 0
    for authz in order.authorizations:
        for challb in authz.body.challenges:
            if isinstance(challb.chall, challenges.HTTP01):
                response, validation = challb.response_and_validation(account_key)
                body = validation.encode() + (b"x" if corrupt else b"")
                responder.answers[CHALLENGE_PREFIX + challb.chall.encode("token")] = body
                acme.answer_challenge(challb, response)
                answered += 1
    assert answered == len(order.authorizations) == 1
    return acme.poll_and_finalize(order, deadline=_dt.datetime.now() + _dt.timedelta(seconds=15))


def test_pebble_issues_a_certificate_for_the_policy_host_over_http01(
    pebble: PebbleServer, world: FakeWorld, responder: Responder
) -> None:
    acme, account_key = _acme_client(pebble)
    final = _order_with_http01(acme, account_key, responder)

    chain = x509.load_pem_x509_certificates(final.fullchain_pem.encode())
    leaf, intermediates = chain[0], chain[1:]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [POLICY_HOST]

    roots_and_intermediate = x509.load_pem_x509_certificates(pebble.roots_pem())
    assert len(roots_and_intermediate) == 2
    root = roots_and_intermediate[0]
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(POLICY_HOST))
    verified = verifier.verify(leaf, intermediates)
    assert verified[-1] == root
    # the same chain does not verify for another name
    other = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName("mta-sts.other.test"))
    with pytest.raises(VerificationError):
        other.verify(leaf, intermediates)

    # Pebble's validator asked our DNS for the name and fetched the token from 127.0.0.1:httpPort
    assert world.stats.queries(POLICY_HOST, "A") >= 1
    assert responder.requests
    assert all(path.startswith(CHALLENGE_PREFIX) for path, _host in responder.requests)
    assert {host for _path, host in responder.requests} == {f"{POLICY_HOST}:{responder.port}"}


def test_pebble_refuses_a_wrong_http01_answer(pebble: PebbleServer, responder: Responder) -> None:
    acme, account_key = _acme_client(pebble)
    with pytest.raises(errors.ValidationError) as caught:
        _order_with_http01(acme, account_key, responder, corrupt=True)
    assert "unauthorized" in str(caught.value)
    assert responder.requests  # the validator did come, and did not like what it got


def test_a_second_pebble_has_its_own_ca(pebble: PebbleServer) -> None:
    with running_pebble() as second:
        assert second.directory_url != pebble.directory_url
        assert second.roots_pem() != pebble.roots_pem()


def test_a_pebble_that_cannot_start_says_why() -> None:
    server = PebbleServer()
    server.key_path = server.dir / "missing-key.pem"  # Pebble cannot load its HTTPS key and exits
    try:
        with pytest.raises(RuntimeError, match="pebble did not start") as caught:
            server.start()
        assert "missing-key.pem" in str(caught.value)  # the log tail names the cause
        assert not server.running
    finally:
        server.cleanup()
    assert not server.dir.exists()
