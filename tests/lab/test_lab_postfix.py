"""A private Postfix (mxsec.lab.postfix) delivering to lab MX servers on 127.0.90.x, without the DNS lab.

Routing without DNS: a transport map sends each recipient domain to one MX by address
(``smtp:[127.0.90.N]:25``); a static socketmap responder run by the test answers the TLS policy per next hop
(Postfix asks with the key ``[127.0.90.N]:25``).

Network safety: Postfix runs in a private mount namespace (``unshare -m``) where ``/etc/resolv.conf`` names
127.0.0.1, and ``dnssec_probe`` is off, so even an unexpected DNS lookup stays on loopback.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("aiosmtpd")

from mxsec.testing.pki import TestCA
from mxsec.lab.mx import MxFarm, MxFarmProcess, MxSpec, save_ca
from mxsec.lab.postfix import (
    Postfix,
    PostfixSpec,
    _alternate_dirs,
    _processes_with_config,
    outcome_from_log,
)

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="runs Postfix and binds port 25: needs root"),
    pytest.mark.skipif(shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists(),
                       reason="Postfix is not installed"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)"),
]

MX = {
    "valid": MxSpec("mx1.lab.test", "127.0.90.1", "valid"),
    "expired": MxSpec("mx2.lab.test", "127.0.90.2", "expired"),
    "plain": MxSpec("mx3.lab.test", "127.0.90.3", "no-starttls"),
    "wrong": MxSpec("mx4.lab.test", "127.0.90.4", "wrong-name"),
}
# Recipient domain -> MX; policy reply per next hop.
ROUTES = {f"{kind}.lab.test": spec for kind, spec in MX.items()}
REPLIES = {
    "[127.0.90.1]:25": "OK secure match=mx1.lab.test servername=mx1.lab.test",
    "[127.0.90.2]:25": "OK secure match=mx2.lab.test servername=mx2.lab.test",
    "[127.0.90.3]:25": "OK secure match=mx3.lab.test servername=mx3.lab.test",
    "[127.0.90.4]:25": "OK secure match=mx4.lab.test servername=mx4.lab.test",
}


class StaticSocketmap:
    """A tiny socketmap (netstring) server answering from a fixed table; ``NOTFOUND `` otherwise."""

    def __init__(self, replies: dict[str, str], unix_path: Path | None = None) -> None:
        self.replies = replies
        self.unix_path = unix_path
        self.requests: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(10_000):  # bounded per connection
                length = int((await reader.readuntil(b":"))[:-1])
                if length > 4096:
                    break
                data = (await reader.readexactly(length + 1))[:-1].decode()
                self.requests.append(data)
                _name, _, key = data.partition(" ")
                reply = self.replies.get(key, "NOTFOUND ").encode()
                writer.write(b"%d:%s," % (len(reply), reply))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def start(self) -> StaticSocketmap:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            if self.unix_path is not None:
                server = self._loop.run_until_complete(asyncio.start_unix_server(self._handle, str(self.unix_path)))
                self.unix_path.chmod(0o666)  # Postfix's smtp client runs as the postfix user
            else:
                server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
                self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            server.close()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(5)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)


@pytest.fixture(scope="module")
def lab_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are mode 0700 and the postfix user must reach the queue.
    path = Path(tempfile.mkdtemp(prefix="mxsec-lab-pf-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("mxsec lab postfix test CA")


@pytest.fixture(scope="module")
def farm(ca: TestCA, lab_dir: Path) -> Iterator[MxFarm]:
    with MxFarm(MX.values(), ca, lab_dir / "mail") as running:
        yield running


@pytest.fixture(scope="module")
def policy() -> Iterator[StaticSocketmap]:
    responder = StaticSocketmap(REPLIES).start()
    yield responder
    responder.stop()


def _netns_cmd(lab_dir: Path) -> list[str]:
    """A private mount namespace whose /etc/resolv.conf names 127.0.0.1 (like ``ip netns exec`` does with
    /etc/netns/NS/resolv.conf)."""
    resolv = lab_dir / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions trust-ad\n")
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv)]


def _spec(lab_dir: Path, name: str, policy: StaticSocketmap, ca_file: Path) -> PostfixSpec:
    transport = ", ".join(f"{domain}=smtp:[{spec.address}]:25" for domain, spec in ROUTES.items())
    return PostfixSpec(
        lab_dir / name,
        policy_map=f"127.0.0.1:{policy.port}",
        ca_file=ca_file,
        netns_cmd=_netns_cmd(lab_dir),
        myhostname=f"{name}.sender.test",
        extra_main_cf={
            "dnssec_probe": "",
            "transport_maps": f"inline:{{{name}.sender.test=discard:, {transport}}}",
        },
    )


@pytest.fixture(scope="module")
def postfix(lab_dir: Path, farm: MxFarm, policy: StaticSocketmap, ca: TestCA) -> Iterator[Postfix]:
    ca_file = ca.write(lab_dir / "ca.pem")
    instance = Postfix(_spec(lab_dir, "pf1", policy, ca_file))
    instance.setup()
    try:
        instance.start()
        yield instance
    finally:
        instance.teardown()


def test_valid_certificate_is_delivered_with_verified_tls(postfix: Postfix, farm: MxFarm) -> None:
    queue_id = postfix.send("alice@pf1.sender.test", "bob@valid.lab.test", "valid", "hello valid\n")
    assert queue_id
    outcome = postfix.wait_outcome(queue_id, 30)
    assert outcome.status == "sent", postfix.log_tail()
    assert outcome.dsn == "2.0.0"
    assert outcome.relay == "127.0.90.1[127.0.90.1]:25"
    assert outcome.tls_trust == "Verified"
    assert outcome.tls_line.startswith("Verified TLS connection established to 127.0.90.1[127.0.90.1]:25: TLSv1.")
    assert postfix.outcome("bob@valid.lab.test").queue_id == queue_id
    message = next(m for m in farm.received("mx1.lab.test") if "hello valid" in m.data)
    assert message.tls and message.sni == "mx1.lab.test"  # servername=mx1.lab.test
    assert message.mail_from == "alice@pf1.sender.test" and message.rcpt_tos == ("bob@valid.lab.test",)
    assert message.helo == "pf1.sender.test"


def test_expired_certificate_is_deferred(postfix: Postfix, farm: MxFarm) -> None:
    queue_id = postfix.send("alice@pf1.sender.test", "bob@expired.lab.test", "expired")
    outcome = postfix.wait_outcome(queue_id, 30)
    assert outcome.status == "deferred", postfix.log_tail()
    assert outcome.dsn == "4.7.5"
    assert outcome.reason == "Server certificate not verified"
    assert outcome.tls_trust == "Untrusted"
    assert any(
        note == "server certificate verification failed for 127.0.90.2[127.0.90.2]:25: certificate has expired"
        for note in outcome.notes
    ), outcome.notes
    assert farm.received("mx2.lab.test") == []


def test_wrong_name_is_deferred_as_hostname_mismatch(postfix: Postfix, farm: MxFarm) -> None:
    queue_id = postfix.send("alice@pf1.sender.test", "bob@wrong.lab.test", "wrong")
    outcome = postfix.wait_outcome(queue_id, 30)
    assert outcome.status == "deferred" and outcome.reason == "Server certificate not verified"
    assert any("num=62:hostname mismatch" in note for note in outcome.notes), outcome.notes
    assert farm.received("mx4.lab.test") == []


def test_no_starttls_with_secure_policy_is_deferred(postfix: Postfix, farm: MxFarm) -> None:
    queue_id = postfix.send("alice@pf1.sender.test", "bob@plain.lab.test", "plain")
    outcome = postfix.wait_outcome(queue_id, 30)
    assert outcome.status == "deferred", postfix.log_tail()
    assert outcome.dsn == "4.7.4"
    assert outcome.reason == "TLS is required, but was not offered by host 127.0.90.3[127.0.90.3]"
    assert outcome.tls_line is None
    assert farm.received("mx3.lab.test") == []
    assert any(session.messages == 0 and not session.starttls for session in farm.sessions("mx3.lab.test"))


def test_queue_idle_and_policy_requests(postfix: Postfix, policy: StaticSocketmap) -> None:
    assert postfix.wait_idle(30)
    assert {item["queue_name"] for item in postfix.queue()} <= {"deferred"}
    assert "postfix [127.0.90.1]:25" in policy.requests
    assert outcome_from_log(postfix.log_text(), "nobody@nowhere.test").status == "pending"


def test_two_instances_coexist_and_stop_leaves_nothing(
    lab_dir: Path, postfix: Postfix, policy: StaticSocketmap, ca: TestCA, farm: MxFarm
) -> None:
    second = Postfix(_spec(lab_dir, "pf2", policy, lab_dir / "ca.pem"))
    second.setup()
    try:
        second.start()
        assert postfix.running() and second.running()
        assert postfix.master_pid() != second.master_pid()
        assert str(second.config_dir) in _alternate_dirs()
        queue_id = second.send("carol@pf2.sender.test", "dave@valid.lab.test", "from pf2")
        outcome = second.wait_outcome(queue_id, 30)
        assert outcome.status == "sent" and outcome.tls_trust == "Verified"
        assert queue_id not in postfix.log_text()  # separate logs
        master = second.master_pid()
        assert master is not None and _processes_with_config(second.config_dir)
        second.stop()
        second.stop()  # idempotent
        assert not second.running()
        assert _processes_with_config(second.config_dir) == []
        state = Path(f"/proc/{master}/stat")
        assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] == "Z"
        assert postfix.running()  # the other instance is untouched
    finally:
        second.teardown()
    assert str(second.config_dir) not in _alternate_dirs()


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2")
def test_postfix_and_mx_farm_inside_a_network_namespace(lab_dir: Path, ca: TestCA) -> None:
    """The lab's way: MX farm (CLI) and Postfix each started with ``ip netns exec``; the policy map on a
    Unix socket (reachable from any network namespace)."""
    ns = f"mxsec-pft-{os.getpid()}"
    netns = ["ip", "netns", "exec", ns]
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    responder = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=10)
        save_ca(ca, lab_dir / "ns-ca")
        responder = StaticSocketmap(
            {"[127.0.90.9]:25": "OK secure match=mx9.lab.test servername=hostname"}, unix_path=lab_dir / "policy.sock"
        ).start()
        instance = Postfix(PostfixSpec(
            lab_dir / "pfns",
            policy_map=f"socketmap:unix:{lab_dir / 'policy.sock'}:postfix",
            ca_file=lab_dir / "ns-ca" / "ca.crt",
            netns_cmd=netns,
            myhostname="pfns.sender.test",
            extra_main_cf={"dnssec_probe": "", "relayhost": "[127.0.90.9]:25"},
        ))
        with MxFarmProcess([MxSpec("mx9.lab.test", "127.0.90.9", "valid")], lab_dir / "ns-mail", lab_dir / "ns-ca",
                           netns_cmd=netns) as mx:
            # The MX listens only inside the namespace.
            with pytest.raises(OSError):
                smtplib.SMTP("127.0.90.9", 25, timeout=2)
            instance.setup()
            try:
                instance.start()
                queue_id = instance.send("alice@pfns.sender.test", "bob@ns.lab.test", "in netns")
                outcome = instance.wait_outcome(queue_id, 30)
                assert outcome.status == "sent", instance.log_tail()
                assert outcome.tls_trust == "Verified"
            finally:
                instance.teardown()
            message = mx.received("mx9.lab.test")[-1]
            # servername=hostname with an IP-literal next hop: Postfix sends the IP address as SNI.
            assert message.tls and message.sni == "127.0.90.9"
        assert "postfix [127.0.90.9]:25" in responder.requests
    finally:
        if responder is not None:
            responder.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10)


SAMPLE_LOG = """\
Nov 24 09:08:03 sender postfix/smtp[1]: 0AAA: to=<x@a.test>, relay=h[192.0.2.4]:25, delay=1, delays=0/0/0/0, dsn=2.0.0, status=sent (ok)
Nov 24 09:08:03 sender postfix/smtp[1]: 1BBB: TLS is required, but was not offered by host mx1.b.test[192.0.2.5]
Nov 24 09:08:03 sender postfix/smtp[1]: Verified TLS connection established to mx2.b.test[192.0.2.6]:25: TLSv1.3 with cipher X (256/256 bits)
Nov 24 09:08:03 sender postfix/smtp[2]: Untrusted TLS connection established to other[192.0.2.7]:25: TLSv1.3 with cipher X (256/256 bits)
Nov 24 09:08:03 sender postfix/smtp[1]: 1BBB: to=<a@b.test>, relay=mx2.b.test[192.0.2.6]:25, delay=1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)
Nov 24 09:08:03 sender postfix/smtp[1]: 1BBB: to=<c@b.test>, orig_to=<cc@b.test>, relay=mx2.b.test[192.0.2.6]:25, delay=1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)
Nov 24 09:09:00 sender postfix/smtp[3]: 2CCC: to=<d@e.test>, relay=none, delay=1, delays=0/0/0/0, dsn=4.4.1, status=deferred (connect to e.test[192.0.2.9]:25: Connection refused)
Nov 24 09:19:00 sender postfix/qmgr[4]: 2CCC: from=<s@x.test>, status=expired, returned to sender
"""


def test_outcome_parsing_per_attempt_and_recipient() -> None:
    """Pure log parsing (no Postfix): TLS line of the same smtp process, other recipients of the same attempt,
    per-MX deferral notes, queue lifetime expiry."""
    for key in ("a@b.test", "C@B.TEST", "1BBB"):
        result = outcome_from_log(SAMPLE_LOG, key)
        assert result.status == "sent" and result.queue_id == "1BBB"
        assert result.tls_trust == "Verified" and "mx2.b.test[192.0.2.6]:25" in result.tls_line
        assert result.notes == ("1BBB: TLS is required, but was not offered by host mx1.b.test[192.0.2.5]",)
    plain = outcome_from_log(SAMPLE_LOG, "0AAA")
    assert plain.status == "sent" and plain.tls_line is None and plain.reason == "ok"
    expired = outcome_from_log(SAMPLE_LOG, "d@e.test")
    assert expired.status == "bounced" and expired.reason == "expired, returned to sender"
    assert expired.dsn == "4.4.1"
    assert outcome_from_log(SAMPLE_LOG, "nobody@x.test").status == "pending"
