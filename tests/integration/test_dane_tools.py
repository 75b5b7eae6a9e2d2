"""`mxsec dane verify` / `mxsec dane rollover` and the STARTTLS probe against local servers.

A tiny STARTTLS SMTP server (asyncio, in a background thread, on 127.0.87.x) presents certificates generated
here; the session FakeWorld serves the MX host's A record and its TLSA records, secure (AD bit) or not. The
real command line runs as a subprocess. Nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mxsec.dane.tlsa import tlsa_for_certificate
from mxsec.testing.fakeworld import FakeWorld
from mxsec.testing.pki import TestCA, pem_to_der, self_signed, write_pem
from mxsec.net.smtp import MAX_LINE, MAX_LINES, probe_starttls
from tests.integration.conftest import UNUSED_IP, unique_domain

from .daemonproc import MXSEC

pytestmark = pytest.mark.integration

_IPS = itertools.count(1)


# ------------------------------------------------------------------------------------------- fake MX server


class FakeMx:
    """A minimal ESMTP server: 220 banner, EHLO (STARTTLS offered or not), STARTTLS, QUIT.

    ``chain_pems`` is what the server presents (leaf first); ``sni`` collects the server names the clients sent
    (``None`` = no SNI). ``script`` replaces the whole dialogue with raw bytes (hostile-server tests).
    """

    def __init__(self, tmp: Path, *, chain_pems: Sequence[bytes] = (), key_pem: bytes = b"",
                 starttls: bool = True, script: bytes | None = None,
                 max_version: ssl.TLSVersion | None = None) -> None:
        self.ip = f"127.0.87.{next(_IPS)}"
        self.port = 0
        self.starttls = starttls
        self.script = script
        self.sni: list[str | None] = []
        self.ehlo: list[str] = []
        self.ctx: ssl.SSLContext | None = None
        if chain_pems:
            cert_file = write_pem(tmp / f"mx-{self.ip}.crt", *chain_pems)
            key_file = write_pem(tmp / f"mx-{self.ip}.key", key_pem)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert_file, key_file)
            ctx.sni_callback = self._sni
            if max_version is not None:
                ctx.maximum_version = max_version
            self.ctx = ctx
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task] = set()

    def _sni(self, _obj, name, _ctx):
        self.sni.append(name)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            if self.script is not None:
                writer.write(self.script)
                await writer.drain()
                await asyncio.sleep(3)
                return
            writer.write(b"220-fake.mx ESMTP\r\n220 ready\r\n")
            await writer.drain()
            for _ in range(20):
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    return
                command = line.decode("ascii", "replace").strip()
                verb = command.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    self.ehlo.append(command[5:])
                    offer = b"250-STARTTLS\r\n" if self.starttls and self.ctx is not None else b""
                    writer.write(b"250-fake.mx\r\n250-PIPELINING\r\n" + offer + b"250 8BITMIME\r\n")
                elif verb == "STARTTLS" and self.starttls and self.ctx is not None:
                    writer.write(b"220 2.0.0 go ahead\r\n")
                    await writer.drain()
                    await writer.start_tls(self.ctx)
                    continue
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"502 5.5.2 not here\r\n")
                await writer.drain()
        except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def main() -> None:
            self._stop = asyncio.Event()
            server = await asyncio.start_server(self._handle, self.ip, 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

        try:
            loop.run_until_complete(main())
        finally:
            self._ready.set()
            loop.close()

    def __enter__(self) -> FakeMx:
        self._thread = threading.Thread(target=self._run, name=f"fake-mx-{self.ip}", daemon=True)
        self._thread.start()
        assert self._ready.wait(10) and self.port, "fake MX did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)


# ------------------------------------------------------------------------------------------- helpers


def publish(world: FakeWorld, host: str, mx: FakeMx, records: Sequence[str] | None, *, secure: bool = True,
            secure_addresses: bool = True) -> str:
    """A record for ``host`` -> the fake MX, TLSA at ``_PORT._tcp.host``; returns the TLSA owner name."""
    owner = f"_{mx.port}._tcp.{host}"
    world.set_record(host, "A", [mx.ip])
    world.set_secure(host, secure_addresses)
    if records is not None:
        world.set_record(owner, "TLSA", list(records))
    world.set_secure(owner, secure)
    return owner


def mxsec(*args: str, world: FakeWorld | None = None, allow: bool = True) -> subprocess.CompletedProcess:
    cmd = [MXSEC, *args]
    if world is not None:
        ip, port = world.dns_address
        cmd += ["--nameserver", f"{ip}:{port}", "--timeout", "3"]
        if allow:
            cmd += ["--allow-address", "127.0.0.0/8"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def verify(world: FakeWorld, host: str, mx: FakeMx, *extra: str, allow: bool = True) -> subprocess.CompletedProcess:
    return mxsec("dane", "verify", "--host", host, "--port", str(mx.port), *extra, world=world, allow=allow)


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


def assert_one_line_error(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 2, result
    assert_no_traceback(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mxsec: "), result.stderr


def record_311(cert_pem: bytes) -> str:
    return tlsa_for_certificate(cert_pem, usage=3, selector=1, mtype=1).to_text()


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("mxsec DANE test private CA")


@pytest.fixture
def host() -> str:
    return f"mx.{unique_domain('dane')}"


@contextlib.contextmanager
def self_signed_mx(tmp_path: Path, host: str, **kwargs) -> Iterator[tuple[FakeMx, bytes]]:
    cert, key = self_signed([host])
    with FakeMx(tmp_path, chain_pems=[cert], key_pem=key, **kwargs) as mx:
        yield mx, cert


# ------------------------------------------------------------------------------------------- dane verify


def test_dane_h_26_matching_3_1_1_passes_and_says_it_matched_the_leaf(fake_world, tmp_path, host):
    with self_signed_mx(tmp_path, host) as (mx, cert):
        publish(fake_world, host, mx, [record_311(cert)])
        result = verify(fake_world, host, mx)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "127.0.87." in result.stdout
    assert "PASS  3 1 1 matched the leaf certificate" in result.stdout
    assert "DNSSEC-secure" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("PASS: DANE applies")


def test_dane_h_15_sni_is_the_mx_host(fake_world, tmp_path, host):
    """The probe's SNI is the MX host name (the TLSA base domain), in A-label lower case."""
    with self_signed_mx(tmp_path, host) as (mx, cert):
        publish(fake_world, host, mx, [record_311(cert)])
        result = verify(fake_world, host.upper() + ".", mx)
        assert result.returncode == 0, result.stdout + result.stderr
        assert mx.sni == [host]


def test_dane_h_16_client_sends_sni(tmp_path):
    """DANE TLS clients must support SNI: the server sees the name the probe was given."""
    cert, key = self_signed(["mx.sni.test"])
    with FakeMx(tmp_path, chain_pems=[cert], key_pem=key) as mx:
        probe = asyncio.run(probe_starttls(mx.ip, mx.port, server_name="mx.sni.test", timeout=5))
        assert probe.ok, probe
        assert mx.sni == ["mx.sni.test"]
        assert probe.chain == (pem_to_der(cert),)
        assert probe.starttls_offered is True and probe.tls_version in ("TLSv1.2", "TLSv1.3")
        assert mx.ehlo and mx.ehlo[0] == probe.ehlo_name


def test_dane_h_22_mismatching_tlsa_is_a_validation_failure(fake_world, tmp_path, host):
    with self_signed_mx(tmp_path, host) as (mx, cert):
        other, _ = TestCA("other").issue([host], fresh_key=True)
        publish(fake_world, host, mx, [record_311(other)])
        result = verify(fake_world, host, mx)
    assert_no_traceback(result)
    assert result.returncode == 1
    assert "FAIL  validation-failure" in result.stdout
    assert f"the leaf's own record would be: {record_311(cert)}" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("FAIL: 1 of 1 address did not authenticate")


def test_no_starttls_offered_is_starttls_not_supported(fake_world, tmp_path, host):
    with self_signed_mx(tmp_path, host, starttls=False) as (mx, cert):
        publish(fake_world, host, mx, [record_311(cert)])
        result = verify(fake_world, host, mx)
    assert_no_traceback(result)
    assert result.returncode == 1
    assert "starttls-not-supported" in result.stdout
    assert "STARTTLS not offered" in result.stdout


def test_dane_h_3_insecure_tlsa_means_dane_does_not_apply(fake_world, tmp_path, host):
    with self_signed_mx(tmp_path, host) as (mx, cert):
        publish(fake_world, host, mx, [record_311(cert)], secure=False)
        result = verify(fake_world, host, mx)
    assert_no_traceback(result)
    assert result.returncode == 1
    assert "DANE does not apply" in result.stdout
    assert "NOT DNSSEC-validated" in result.stdout
    assert "would pass" in result.stdout  # the records were still checked, for information
    assert "PASS:" not in result.stdout


def test_dane_h_9_insecure_addresses_mean_dane_does_not_apply(fake_world, tmp_path, host):
    with self_signed_mx(tmp_path, host) as (mx, cert):
        publish(fake_world, host, mx, [record_311(cert)], secure_addresses=False)
        result = verify(fake_world, host, mx)
    assert result.returncode == 1
    assert "address records" in result.stdout and "DANE does not apply" in result.stdout


def test_dane_h_4_tlsa_servfail_is_an_error_not_no_records(fake_world, tmp_path, host):
    with self_signed_mx(tmp_path, host) as (mx, cert):
        owner = publish(fake_world, host, mx, [record_311(cert)])
        fake_world.set_failure(owner, "servfail", "TLSA")
        try:
            result = verify(fake_world, host, mx)
        finally:
            fake_world.set_failure(owner, None, "TLSA")
    assert_no_traceback(result)
    assert result.returncode == 1
    assert "LOOKUP ERROR" in result.stdout
    assert "lookup error, not 'no records'" in result.stdout
    assert "no TLSA records" not in result.stdout
    assert mx.ehlo == []  # nothing was probed


def test_dane_h_5_no_tlsa_records_dane_does_not_apply(fake_world, tmp_path, host):
    with self_signed_mx(tmp_path, host) as (mx, _cert):
        publish(fake_world, host, mx, None)
        result = verify(fake_world, host, mx, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["tlsa"]["status"] == "nxdomain" and report["dane_applies"] is False
    assert "no TLSA records" in report["reason"]


def test_bad_host_is_a_one_line_usage_error(fake_world):
    for bad in ("bad host!", "192.0.2.1", ""):
        result = mxsec("dane", "verify", "--host", bad, world=fake_world)
        assert_one_line_error(result)
        assert "--host" in result.stderr


def test_bad_address_is_a_one_line_usage_error(fake_world):
    result = mxsec("dane", "verify", "--host", "mx.example.test", "--address", "not-an-ip", world=fake_world)
    assert_one_line_error(result)


def test_loopback_refused_without_allow_address(fake_world, tmp_path, host):
    """The SSRF guard applies to MX addresses: 127/8 is refused unless --allow-address covers it."""
    with self_signed_mx(tmp_path, host) as (mx, cert):
        publish(fake_world, host, mx, [record_311(cert)])
        result = verify(fake_world, host, mx, allow=False)
        assert mx.ehlo == []
    assert result.returncode == 1
    assert "not probed: loopback address" in result.stdout


def test_address_override_bypasses_dns_for_addresses_only(fake_world, tmp_path, host):
    with self_signed_mx(tmp_path, host) as (mx, cert):
        owner = f"_{mx.port}._tcp.{host}"
        fake_world.set_record(owner, "TLSA", [record_311(cert)])
        fake_world.set_secure(owner)
        # no A record at all for the host: --address supplies it
        result = verify(fake_world, host, mx, "--address", mx.ip, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["addresses"]["source"] == "command line"
    assert report["results"][0]["address"] == mx.ip
    assert report["results"][0]["matched"] == record_311(cert)
    assert report["results"][0]["depth"] == 0
    assert report["results"][0]["sni"] == host


def test_dane_h_29_private_ca_2_1_1_with_correct_name(fake_world, tmp_path, host, ca):
    leaf, key = ca.issue([host], fresh_key=True)
    ta = tlsa_for_certificate(ca.cert_pem, usage=2, selector=1, mtype=1).to_text()
    with FakeMx(tmp_path, chain_pems=[leaf, ca.cert_pem], key_pem=key) as mx:
        publish(fake_world, host, mx, [ta])
        result = verify(fake_world, host, mx)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  2 1 1 matched chain certificate 1" in result.stdout
    assert "as trust anchor" in result.stdout


def test_dane_h_33_private_ca_2_1_1_with_wrong_name_is_host_mismatch(fake_world, tmp_path, host, ca):
    leaf, key = ca.issue(["somewhere-else.example.test"], fresh_key=True)
    ta = tlsa_for_certificate(ca.cert_pem, usage=2, selector=1, mtype=1).to_text()
    with FakeMx(tmp_path, chain_pems=[leaf, ca.cert_pem], key_pem=key) as mx:
        publish(fake_world, host, mx, [ta])
        result = verify(fake_world, host, mx, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["results"][0]["result_type"] == "certificate-host-mismatch"
    assert report["ok"] is False and report["dane_applies"] is True


def test_dane_h_30_ta_digest_not_in_chain_fails(fake_world, tmp_path, host, ca):
    """A 2 1 1 anchor the server does not send cannot be used (the chain holds only the leaf)."""
    leaf, key = ca.issue([host], fresh_key=True)
    ta = tlsa_for_certificate(ca.cert_pem, usage=2, selector=1, mtype=1).to_text()
    with FakeMx(tmp_path, chain_pems=[leaf], key_pem=key) as mx:
        publish(fake_world, host, mx, [ta])
        result = verify(fake_world, host, mx)
    assert result.returncode == 1
    assert "validation-failure" in result.stdout


def test_dane_h_18_all_unusable_records_fail_as_tlsa_invalid(fake_world, tmp_path, host):
    with self_signed_mx(tmp_path, host) as (mx, cert):
        pkix_ee = tlsa_for_certificate(cert, usage=1, selector=1, mtype=1).to_text()
        publish(fake_world, host, mx, [pkix_ee])
        result = verify(fake_world, host, mx)
    assert result.returncode == 1
    assert "tlsa-invalid" in result.stdout
    assert "unusable: PKIX-EE(1)" in result.stdout


def test_verify_json_is_one_object_with_the_chain(fake_world, tmp_path, host, ca):
    leaf, key = ca.issue([host])
    with FakeMx(tmp_path, chain_pems=[leaf, ca.cert_pem], key_pem=key) as mx:
        publish(fake_world, host, mx, [record_311(leaf)])
        result = verify(fake_world, host, mx, "--json", "--ca-file", str(write_pem(tmp_path / "ca.pem", ca.cert_pem)))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    entry = report["results"][0]
    assert [c["index"] for c in entry["chain"]] == [0, 1]
    assert entry["chain"][0]["tlsa_3_1_1"] == record_311(leaf)
    assert entry["probe"]["chain_source"] == "unverified-chain"
    assert entry["probe"]["pkix"]["ok"] is True  # informational PKIX against --ca-file
    assert report["tlsa"]["records"][0] == {"record": record_311(leaf), "usable": True, "reason": None}


def test_unreachable_address_is_a_failure_not_a_crash(fake_world, host):
    fake_world.set_record(host, "A", [UNUSED_IP])
    fake_world.set_secure(host)
    owner = f"_25._tcp.{host}"
    fake_world.set_record(owner, "TLSA", ["3 1 1 " + "00" * 32])
    fake_world.set_secure(owner)
    result = mxsec("dane", "verify", "--host", host, world=fake_world)
    assert_no_traceback(result)
    assert result.returncode == 1
    assert "connect: " in result.stdout and "connection refused" in result.stdout


# ------------------------------------------------------------------------------------------- probe limits


@pytest.mark.parametrize(
    ("script", "stage", "message"),
    [
        (b"220 " + b"x" * (MAX_LINE + 10) + b"\r\n", "banner", "longer than"),
        (b"".join(b"220-line\r\n" for _ in range(MAX_LINES + 5)), "banner", "lines"),
        (b"554 go away\r\n", "banner", "not 220"),
        (b"220-a\r\n250 b\r\n", "banner", "code changed"),
        (b"HTTP/1.1 400 Bad Request\r\n", "banner", "not an SMTP reply"),
        (b"220 hi\r\n", "ehlo", "no complete reply"),  # never answers EHLO
    ],
)
def test_probe_bounds_hostile_servers(tmp_path, script, stage, message):
    with FakeMx(tmp_path, script=script) as mx:
        probe = asyncio.run(probe_starttls(mx.ip, mx.port, server_name="mx.test", timeout=1.5))
    assert not probe.ok
    assert probe.stage == stage, probe
    assert message in probe.error


def test_probe_refuses_data_sent_after_the_starttls_reply(tmp_path):
    """The CVE-2011-0411 pattern: plaintext pipelined behind the 220 must not be read as if it came over TLS."""
    script = (b"220 hi\r\n250-x\r\n250 STARTTLS\r\n220 go\r\n250 injected\r\n")
    with FakeMx(tmp_path, script=script) as mx:
        probe = asyncio.run(probe_starttls(mx.ip, mx.port, server_name="mx.test", timeout=1.5))
    assert probe.stage == "starttls"
    assert "before the TLS handshake" in probe.error


def test_probe_connect_refused_and_non_ip_address():
    refused = asyncio.run(probe_starttls(UNUSED_IP, 25, timeout=2))
    assert refused.stage == "connect" and "refused" in refused.error
    name = asyncio.run(probe_starttls("mx.example.test", 25, timeout=2))
    assert name.stage == "connect" and "not an IP address" in name.error


def test_dane_h_39_minimum_tls_version_is_configurable_and_failure_is_a_value(tmp_path):
    """TLS 1.2 is accepted by default; asking for 1.3 against a 1.2-only server fails at the handshake stage."""
    cert, key = self_signed(["mx.tls12.test"])
    with FakeMx(tmp_path, chain_pems=[cert], key_pem=key, max_version=ssl.TLSVersion.TLSv1_2) as mx:
        default = asyncio.run(probe_starttls(mx.ip, mx.port, server_name="mx.tls12.test", timeout=3))
        strict = asyncio.run(probe_starttls(mx.ip, mx.port, server_name="mx.tls12.test", timeout=3,
                                            min_version=ssl.TLSVersion.TLSv1_3))
    assert default.ok and default.tls_version == "TLSv1.2"
    assert not strict.ok and strict.stage == "handshake"
    assert strict.error.startswith("TLS handshake failed")
    assert strict.starttls_offered is True and strict.chain == ()


# ------------------------------------------------------------------------------------------- dane rollover


def test_rollover_cli_prints_both_records_then_wait_switch_remove(tmp_path, ca):
    current, _ = ca.issue(["mx.roll.test"], fresh_key=True)
    nxt, _ = ca.issue(["mx.roll.test"], fresh_key=True)
    cur_file, next_file = write_pem(tmp_path / "cur.pem", current), write_pem(tmp_path / "next.pem", nxt)
    result = mxsec("dane", "rollover", "--current", str(cur_file), "--next", str(next_file), "--host",
                   "mx.roll.test", "--ttl", "600")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"_25._tcp.mx.roll.test. IN TLSA {record_311(current)}" in out
    assert f"_25._tcp.mx.roll.test. IN TLSA {record_311(nxt)}" in out
    assert "1200 s" in out and "mxsec dane verify --host mx.roll.test" in out
    positions = [out.index(f"\n{n}) ") for n in (1, 2, 3, 4)]
    assert positions == sorted(positions)


def test_rollover_cli_bad_pem_is_a_one_line_error(tmp_path, ca):
    good = write_pem(tmp_path / "good.pem", ca.issue(["mx.roll.test"])[0])
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    for args in (["--current", str(good), "--next", str(bad)], ["--current", str(tmp_path / "missing.pem"),
                                                                 "--next", str(good)]):
        result = mxsec("dane", "rollover", *args, "--host", "mx.roll.test")
        assert_one_line_error(result)


def test_rollover_cli_json(tmp_path, ca):
    current, _ = ca.issue(["mx.roll.test"])
    renewed, _ = ca.issue(["mx.roll.test"])  # same shared key: same 3 1 1 record
    files = [write_pem(tmp_path / "a.pem", current), write_pem(tmp_path / "b.pem", renewed)]
    result = mxsec("dane", "rollover", "--current", str(files[0]), "--next", str(files[1]), "--host",
                   "mx.roll.test", "--json")
    assert result.returncode == 0
    plan = json.loads(result.stdout)
    assert plan["same_record"] is True and plan["dns_change_needed"] is False
    assert plan["publish_now"] == [f"_25._tcp.mx.roll.test. IN TLSA {record_311(current)}"]


def test_bad_ehlo_name_is_a_one_line_usage_error(fake_world):
    result = mxsec("dane", "verify", "--host", "mx.example.test", "--ehlo", "x\r\nQUIT", world=fake_world)
    assert_one_line_error(result)
    assert "--ehlo" in result.stderr
