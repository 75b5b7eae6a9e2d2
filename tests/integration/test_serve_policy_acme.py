"""``mxsec serve-policy --acme-directory``: certificates for several policy hosts from Pebble (a real ACME server).

Pebble resolves the challenged names through a FakeWorld (each ``mta-sts.<domain>`` → the serve-policy address)
and validates TLS-ALPN-01 on serve-policy's HTTPS port, or HTTP-01 on its plain HTTP listener. The policies are
then fetched by mxsec's own policy fetcher (the daemon's HTTPS client), trusting only Pebble's root.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from mxsec.net.dns import DnsClient
from mxsec.net.https import POLICY_PATH, HttpsSettings, PolicyFetcher
from mxsec.sts.policy import parse_policy
from mxsec.testing.daemonproc import free_port
from mxsec.testing.fakeworld import FakeWorld
from mxsec.testing.pebble import PebbleServer, running_pebble
from tests.integration.conftest import dns_settings_for, loopback_guard, running_world
from tests.integration.test_serve_policy import Serve

pytestmark = pytest.mark.integration

SERVER_IP = "127.0.88.3"
DOMAINS = ("alpha.test", "beta.test")

SITES = """\
[policy]
mode = "enforce"
max_age = 604800

[domains."alpha.test"]
mx = ["mx1.alpha.test"]

[domains."beta.test"]
mx = ["mail.beta.test", "*.mx.beta.test"]
mode = "testing"
max_age = 86400
"""


@pytest.fixture
def world() -> Iterator[FakeWorld]:
    with running_world() as started:
        for domain in DOMAINS:
            started.set_record(f"mta-sts.{domain}", "A", [SERVER_IP])
        yield started


@pytest.fixture
def ports() -> dict[str, int]:
    return {"https": free_port(SERVER_IP), "http": free_port(SERVER_IP)}


def pebble_for(world: FakeWorld, ports: dict[str, int], **kwargs: Any) -> Any:
    host, port = world.dns_address
    return running_pebble(http_port=ports["http"], tls_port=ports["https"], dns_server=f"{host}:{port}", **kwargs)


@pytest.fixture
def pebble(world: FakeWorld, ports: dict[str, int]) -> Iterator[PebbleServer]:
    with pebble_for(world, ports) as started:
        yield started


@pytest.fixture
def roots(tmp_path: Path, pebble: PebbleServer) -> Path:
    path = tmp_path / "pebble-root.pem"
    path.write_bytes(pebble.roots_pem())
    return path


@pytest.fixture
def sites(tmp_path: Path) -> Path:
    path = tmp_path / "sites.toml"
    path.write_text(SITES)
    return path


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def factory(*args: str, wait: float = 20.0) -> Serve:
        server = Serve(tmp_path, None, *args, listen=())
        started.append(server)
        return server.start(wait)

    yield factory
    for server in started:
        server.kill()


def acme_args(pebble: PebbleServer, state: Path, ports: dict[str, int], *extra: str) -> list[str]:
    return ["--acme-directory", pebble.directory_url, "--acme-ca-bundle", str(pebble.ca_bundle),
            "--acme-state", str(state), "--acme-email", "hostmaster@alpha.test", "--acme-retry", "1",
            "--listen", f"{SERVER_IP}:{ports['https']}", *extra]


async def fetch(world: FakeWorld, roots: Path, port: int, domain: str) -> Any:
    fetcher = PolicyFetcher(HttpsSettings(timeout=5.0, ca_file=str(roots), port=port),
                            DnsClient(dns_settings_for(world)), loopback_guard())
    try:
        return await fetcher.fetch(domain)
    finally:
        await fetcher.aclose()


def served_certificate(port: int, host: str, roots: Path) -> x509.Certificate:
    """The leaf served for SNI ``host``, verified against Pebble's root and for the name."""
    ctx = ssl.create_default_context(cafile=str(roots))
    with socket.create_connection((SERVER_IP, port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def obtained(server: Serve, host: str, after: int = 0, timeout: float = 60.0) -> dict:
    return server.wait_for(lambda r: r.get("msg") == "certificate obtained" and r.get("host") == host,
                           timeout, after=after)


async def test_certificates_for_several_domains_over_tls_alpn_01(world: FakeWorld, pebble: PebbleServer,
                                                                 roots: Path, sites: Path, ports: dict[str, int],
                                                                 tmp_path: Path, serve: Any) -> None:
    state = tmp_path / "acme"
    server = serve("--sites", str(sites), *acme_args(pebble, state, ports))
    for domain in DOMAINS:
        obtained(server, f"mta-sts.{domain}")
    # each host gets its own certificate, chosen by SNI, and its own policy, chosen by Host
    bodies = {}
    for domain in DOMAINS:
        leaf = served_certificate(ports["https"], f"mta-sts.{domain}", roots)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [f"mta-sts.{domain}"]
        outcome = await fetch(world, roots, ports["https"], domain)
        assert outcome.ok, outcome.detail
        bodies[domain] = parse_policy(outcome.body)
    assert bodies["alpha.test"].mode == "enforce" and bodies["alpha.test"].mx == ("mx1.alpha.test",)
    assert bodies["beta.test"].mode == "testing" and bodies["beta.test"].max_age == 86400
    records = server.records()
    assert sum(r.get("msg") == "TLS-ALPN-01 challenge answered" for r in records) >= 2
    assert not any(r.get("msg") == "HTTP-01 challenge answered" for r in records)
    # keys and certificates are private
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in [state / "account-key.pem", state / "account.json", *(state / "certs").glob("*.pem")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(p.name for p in (state / "certs").glob("*.pem")) == ["mta-sts.alpha.test.pem",
                                                                       "mta-sts.beta.test.pem"]

    # a restart serves the stored certificates at once and orders nothing
    assert server.stop() == 0
    again = serve("--sites", str(sites), *acme_args(pebble, state, ports))
    loaded = [r for r in again.records() if r.get("msg") == "certificate loaded"]
    assert sorted(r["host"] for r in loaded) == ["mta-sts.alpha.test", "mta-sts.beta.test"]
    assert (await fetch(world, roots, ports["https"], "beta.test")).ok
    time.sleep(0.5)
    assert not any(r.get("msg") == "ordering certificate" for r in again.records())


async def test_http_01_on_a_plain_http_listener(world: FakeWorld, pebble: PebbleServer, roots: Path,
                                                ports: dict[str, int], tmp_path: Path, serve: Any) -> None:
    policy = tmp_path / "policy.txt"
    policy.write_bytes(b"version: STSv1\r\nmode: enforce\r\nmx: mx1.alpha.test\r\nmax_age: 604800\r\n")
    server = serve("--policy", str(policy), "--domain", "alpha.test",
                   *acme_args(pebble, tmp_path / "acme", ports, "--acme-challenge", "http-01",
                              "--acme-http-listen", f"{SERVER_IP}:{ports['http']}"))
    obtained(server, "mta-sts.alpha.test")
    assert any(r.get("msg") == "HTTP-01 challenge answered" for r in server.records())
    outcome = await fetch(world, roots, ports["https"], "alpha.test")
    assert outcome.ok and outcome.body == policy.read_bytes()
    # the plain listener answers challenges only: never the policy
    with socket.create_connection((SERVER_IP, ports["http"]), timeout=5) as raw:
        raw.sendall(f"GET {POLICY_PATH} HTTP/1.1\r\nHost: mta-sts.alpha.test\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := raw.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 404")


async def test_short_lived_certificates_are_renewed_and_served_without_a_gap(world: FakeWorld, ports: dict[str, int],
                                                                            sites: Path, tmp_path: Path,
                                                                            serve: Any) -> None:
    """Pebble issues 9-second certificates here: each is renewed when a third of its life remains (6 s)."""
    with pebble_for(world, ports, validity_seconds=9) as pebble:
        root = tmp_path / "root.pem"
        root.write_bytes(pebble.roots_pem())
        server = serve("--sites", str(sites), *acme_args(pebble, tmp_path / "acme", ports))
        first = {d: obtained(server, f"mta-sts.{d}") for d in DOMAINS}
        mark = len(server.records())
        second = {d: obtained(server, f"mta-sts.{d}", after=mark, timeout=30) for d in DOMAINS}
        for domain in DOMAINS:
            assert second[domain]["serial"] != first[domain]["serial"]
            assert second[domain]["replaced"] == first[domain]["serial"]
        # the renewed certificate is the one served; a connection keeps working across the swap
        for domain in DOMAINS:
            host = f"mta-sts.{domain}"
            serials = {f"{served_certificate(ports['https'], host, root).serial_number:x}"}
            assert serials & {r["serial"] for r in server.records()
                              if r.get("msg") == "certificate obtained" and r.get("host") == host}
            assert (await fetch(world, root, ports["https"], domain)).ok


async def test_a_failing_domain_backs_off_and_the_others_are_served(world: FakeWorld, pebble: PebbleServer,
                                                                    roots: Path, ports: dict[str, int],
                                                                    tmp_path: Path, serve: Any) -> None:
    directory = tmp_path / "policies"
    directory.mkdir()
    for domain in (*DOMAINS, "gamma.test"):
        (directory / f"{domain}.txt").write_bytes(
            f"version: STSv1\nmode: enforce\nmx: mx.{domain}\nmax_age: 604800\n".encode())
    # gamma.test's policy host does not resolve yet: Pebble cannot validate it
    server = serve("--policy-dir", str(directory), *acme_args(pebble, tmp_path / "acme", ports))
    for domain in DOMAINS:
        obtained(server, f"mta-sts.{domain}")
    failures = [server.wait_for(lambda r, n=n: r.get("msg") == "certificate order failed; trying again later"
                                and r.get("host") == "mta-sts.gamma.test" and r.get("failures") == n, 30)
                for n in (1, 2)]
    assert failures[0]["serving"] == "no certificate for this host yet"
    assert 0.9 * 2 <= failures[1]["retry_in"] <= 2.0  # 1 s, then 2 s: doubled
    assert (await fetch(world, roots, ports["https"], "alpha.test")).ok
    # fixed in DNS: the next attempt succeeds and the host is served
    world.set_record("mta-sts.gamma.test", "A", [SERVER_IP])
    obtained(server, "mta-sts.gamma.test", timeout=60)
    outcome = await fetch(world, roots, ports["https"], "gamma.test")
    assert outcome.ok and b"mx.gamma.test" in outcome.body


async def test_sighup_adds_a_domain_and_orders_its_certificate(world: FakeWorld, pebble: PebbleServer, roots: Path,
                                                               ports: dict[str, int], tmp_path: Path,
                                                               serve: Any) -> None:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "alpha.test.txt").write_bytes(b"version: STSv1\nmode: enforce\nmx: mx.alpha.test\nmax_age: 604800\n")
    server = serve("--policy-dir", str(directory), *acme_args(pebble, tmp_path / "acme", ports))
    obtained(server, "mta-sts.alpha.test")
    # a keep-alive connection open across the reload is served afterwards too
    ctx = ssl.create_default_context(cafile=str(roots))
    with socket.create_connection((SERVER_IP, ports["https"]), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="mta-sts.alpha.test") as tls:
        request = f"GET {POLICY_PATH} HTTP/1.1\r\nHost: mta-sts.alpha.test\r\n\r\n".encode()
        tls.sendall(request)
        assert tls.recv(4096).startswith(b"HTTP/1.1 200")
        (directory / "beta.test.txt").write_bytes(b"version: STSv1\nmode: testing\nmx: mx.beta.test\nmax_age: 86400\n")
        mark = server.hup()
        obtained(server, "mta-sts.beta.test", after=mark)
        tls.sendall(request)
        assert tls.recv(4096).startswith(b"HTTP/1.1 200")
    outcome = await fetch(world, roots, ports["https"], "beta.test")
    assert outcome.ok and parse_policy(outcome.body).mode == "testing"


def test_acme_usage_errors_are_one_line(tmp_path: Path, sites: Path) -> None:
    from tests.integration.test_serve_policy import assert_one_line_error, run_cli

    policy = tmp_path / "policy.txt"
    policy.write_bytes(b"version: STSv1\nmode: enforce\nmx: mx.alpha.test\nmax_age: 604800\n")
    url = "https://127.0.0.1:9/dir"
    assert_one_line_error(run_cli("--policy", str(policy), "--acme-directory", url, "--acme-state",
                                  str(tmp_path / "a")), "needs the policy domains")
    assert_one_line_error(run_cli("--sites", str(sites), "--acme-email", "a@b.test"), "--acme-email needs --acme-directory")
    assert_one_line_error(run_cli("--sites", str(sites), "--acme-directory", url, "--cert", str(policy),
                                  "--key", str(policy)), "exclude each other")
    assert_one_line_error(run_cli("--sites", str(sites), "--acme-directory", url, "--acme-state", str(tmp_path / "b"),
                                  "--acme-challenge", "http-01"), "needs --acme-http-listen")
    assert_one_line_error(run_cli("--sites", str(sites)), "give --cert and --key, or --acme-directory")
    assert_one_line_error(run_cli("--sites", str(sites), "--acme-directory", url, "--acme-eab-kid", "k"),
                          "--acme-eab-kid and --acme-eab-hmac-key-file go together")
    assert_one_line_error(run_cli("--sites", str(sites), "--acme-directory", url, "--acme-state", str(tmp_path / "c"),
                                  "--acme-eab-kid", "k", "--acme-eab-hmac-key-file", str(tmp_path / "missing")),
                          "cannot read --acme-eab-hmac-key-file")
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    assert_one_line_error(run_cli("--sites", str(sites), "--acme-directory", url, "--acme-state", str(open_dir)),
                          "open to other users")


async def test_external_account_binding(world: FakeWorld, ports: dict[str, int], tmp_path: Path,
                                        sites: Path, serve: Any) -> None:
    """A CA that requires an External Account Binding (RFC 8555 §7.3.4): refused without one, one line, backed
    off; registered and served with --acme-eab-kid and the MAC key from a file."""
    mac_key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
    with pebble_for(world, ports, eab_keys={"kid-1": mac_key}) as pebble:
        root = tmp_path / "root.pem"
        root.write_bytes(pebble.roots_pem())
        without = serve("--sites", str(sites), *acme_args(pebble, tmp_path / "acme-a", ports))
        failed = without.wait_for(lambda r: r.get("msg") == "certificate order failed; trying again later", 30)
        assert "externalAccountRequired" in failed["error"] and "\n" not in failed["error"]
        assert without.stop() == 0
        key_file = tmp_path / "eab.key"
        key_file.write_text(mac_key + "\n")
        key_file.chmod(0o600)
        server = serve("--sites", str(sites), *acme_args(pebble, tmp_path / "acme-b", ports),
                       "--acme-eab-kid", "kid-1", "--acme-eab-hmac-key-file", str(key_file))
        for domain in DOMAINS:
            obtained(server, f"mta-sts.{domain}")
        assert (await fetch(world, root, ports["https"], "alpha.test")).ok
        assert server.stop() == 0
        wrong = tmp_path / "wrong.key"
        wrong.write_text("c2hvcnQ\n")  # a valid base64url key the CA does not know
        bad = serve("--sites", str(sites), *acme_args(pebble, tmp_path / "acme-c", ports),
                    "--acme-eab-kid", "kid-1", "--acme-eab-hmac-key-file", str(wrong))
        failed = bad.wait_for(lambda r: r.get("msg") == "certificate order failed; trying again later", 30)
        assert "ACME server refused" in failed["error"]
