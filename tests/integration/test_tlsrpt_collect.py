"""``mxsec tlsrpt collect`` as a real process: libtlsrpt datagrams in, exact counts in the database out.

The collector runs as a subprocess (``mxsec.cli.main`` under this interpreter) on a Unix datagram socket in a
short temporary directory. The test sends datagrams in libtlsrpt's own encoding (:func:`encode`: string
members as ``"key": "value"`` with a space after the colon, numbers and arrays without; members in the
library's order; empty arrays and absent strings left out) with *blocking* ``sendto``, so the test itself
loses nothing even when the collector's queue (``net.unix.max_dgram_qlen``) is full. After ``SIGTERM`` and
exit 0 the counts are read back with :class:`~mxsec.storage.senderdb.SenderDB` and compared exactly: per
report domain, per policy and per failure detail.

A session is counted on the UTC day it arrives; every read sums the days between the first send and the
stop, so a run across midnight still adds up.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from mxsec.testing.libtlsrpt import Detail, Pol, encode
from mxsec.storage.senderdb import SenderDB
from mxsec.tlsrpt.session import Failure, PolicyTotals

from .servers import postgres_server  # noqa: F401  (session fixture used by name)

pytestmark = pytest.mark.integration

# How the collector is started: `python -m mxsec.cli` does not reach the `tlsrpt` group (cli.py calls main()
# before registering it), so the entry point is called directly, as the console script does.
COMMAND = [sys.executable, "-c", "from mxsec.cli import main; main()", "tlsrpt", "collect"]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0

STS, TLSA, NO_POLICY = 2, 1, 9
HEX_A = "8f" * 32
HEX_B = "3c" * 32

# ------------------------------------------------------------------------------------------------ encoder


def rua(domain: str) -> str:
    return f"v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"


def test_encoder_matches_libtlsrpt_bytes():
    """The encoder gives exactly the bytes of a datagram Postfix 3.10 sent for a host-name mismatch."""
    expected = (
        b'{"dpv": "1","d": "sts-domain.example","pr": "v=TLSRPTv1; rua=mailto:tlsrpt@sts-domain.example",'
        b'"policies":[{"policy-type":2,"policy-domain": "sts-domain.example","policy-string":["version: STSv1",'
        b'"mode: enforce","mx: mx1.sts-domain.example","mx: *.backup.sts-domain.example","max_age: 604800"],'
        b'"mx-host":["mx1.sts-domain.example","*.backup.sts-domain.example"],"failure-details":[{"c":202,'
        b'"s": "192.0.2.10","n": "a.backup.sts-domain.example","h": "a.backup.sts-domain.example ESMTP",'
        b'"r": "198.51.100.26","f": "hostname mismatch"}],"t":1,"f":1}]}'
    )
    assert STS_MISMATCH == expected


# ------------------------------------------------------------------------------------------- the process


def _short_dir() -> Path:
    # sun_path holds 108 bytes: keep socket paths short whatever pytest's tmp_path is.
    return Path(tempfile.mkdtemp(prefix="mxtr-", dir="/tmp"))


@pytest.fixture
def sockdir() -> Iterator[Path]:
    path = _short_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Collector:
    """``mxsec tlsrpt collect`` in a subprocess; stderr goes to a file."""

    _ids = itertools.count()

    def __init__(self, socket_path: Path, db_url: str, *extra: str, workdir: Path | None = None) -> None:
        self.socket_path = socket_path
        self.db_url = db_url
        workdir = workdir or socket_path.parent
        self.stderr_path = workdir / f"collector-{next(self._ids)}.err"
        config = workdir / "empty.toml"
        config.touch()
        self.argv = [*COMMAND, "--socket", str(socket_path), "--db", db_url, "--config", str(config),
                     "--log-format", "text", *extra]
        self.proc: subprocess.Popen | None = None

    def start(self, *, wait: bool = True) -> Collector:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=err, start_new_session=True)
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited with {self.proc.returncode}: {self.stderr()}")
            if b"listening on" in self.stderr_path.read_bytes():
                return
            time.sleep(0.02)
        raise AssertionError(f"collector did not start listening: {self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_bytes().decode("utf-8", "replace")

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"collector did not stop within {STOP_TIMEOUT} s: {self.stderr()}") from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def summary(self) -> tuple[int, int]:
        """(sessions counted, bad datagrams) from the collector's closing line."""
        for line in self.stderr().splitlines():
            if "stopped;" in line:
                words = line.split("stopped;", 1)[1].replace(",", "").split()
                return int(words[0]), int(words[3])
        raise AssertionError(f"no closing line: {self.stderr()}")


@pytest.fixture
def collectors() -> Iterator[list[Collector]]:
    started: list[Collector] = []
    yield started
    for collector in started:
        collector.cleanup()


class Sender:
    """A blocking datagram socket towards the collector (a full queue makes ``sendto`` wait, not fail)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # room for the 300 KB hostile datagram (the default send buffer refuses it with EMSGSIZE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.sock.settimeout(30)
        self.sent = 0

    def send(self, data: bytes, times: int = 1) -> None:
        for _ in range(times):
            self.sock.sendto(data, self.path)
            self.sent += 1

    def close(self) -> None:
        self.sock.close()


def utc_today() -> date:
    return datetime.now(UTC).date()


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def day_totals(db: SenderDB, days: Iterable[date]) -> dict[str, tuple[int, int]]:
    result: dict[str, tuple[int, int]] = {}
    for day in days:
        for domain, (ok, bad) in db.day_totals(day).items():
            old = result.get(domain, (0, 0))
            result[domain] = (old[0] + ok, old[1] + bad)
    return result


@dataclass
class Counts:
    """A policy's counts summed over days: successful, failed and failure detail -> sessions."""

    successful: int = 0
    failed: int = 0
    failures: Counter[Failure] = field(default_factory=Counter)


def policy_totals(db: SenderDB, days: Iterable[date], domain: str) -> dict[tuple, Counts]:
    """Per policy (type, domain, strings, mx) of *domain*: :class:`Counts` summed over *days*."""
    result: dict[tuple, Counts] = {}
    for day in days:
        totals: list[PolicyTotals] = db.totals(day, domain)
        for item in totals:
            p = item.policy
            key = (p.type.value, p.domain, p.strings, p.mx_hosts)
            counts = result.setdefault(key, Counts())
            counts.successful += item.successful
            counts.failed += item.failed
            for failure, n in item.failures:
                counts.failures[failure] += n
    return result


# -------------------------------------------------------------------------------------- the datagram mix

STS_DOMAIN = "sts-domain.example"
STS_STRINGS = ("version: STSv1", "mode: enforce", "mx: mx1.sts-domain.example", "mx: *.backup.sts-domain.example",
               "max_age: 604800")
STS_MX = ("mx1.sts-domain.example", "*.backup.sts-domain.example")
STS_MISMATCH_DETAIL = Detail(202, s="192.0.2.10", n="a.backup.sts-domain.example", h="a.backup.sts-domain.example ESMTP",
                             r="198.51.100.26", f="hostname mismatch")
STS_MISMATCH = encode(STS_DOMAIN, rua(STS_DOMAIN),
                      [Pol(STS, STS_DOMAIN, STS_STRINGS, STS_MX, [STS_MISMATCH_DETAIL], failed=True)])
STS_OK = encode(STS_DOMAIN, rua(STS_DOMAIN), [Pol(STS, STS_DOMAIN, STS_STRINGS, STS_MX)])
# the same domain as an MTA may pass it: upper case, trailing dot (normalised into the same rows)
STS_OK_ODD_CASE = encode("STS-Domain.Example.", rua(STS_DOMAIN), [Pol(STS, "Sts-Domain.example.", STS_STRINGS, STS_MX)])
STS_NO_STARTTLS = encode(STS_DOMAIN, rua(STS_DOMAIN), [
    Pol(STS, STS_DOMAIN, STS_STRINGS, STS_MX, [Detail(201, s="192.0.2.11", n="mx1.sts-domain.example",
                                                      r="198.51.100.25")], failed=True)])

DANE_DOMAIN = "dane-domain.example"
DANE_MX = "mx.dane-domain.example"
DANE_STRINGS = (f"3 1 1 {HEX_A}", f"3 1 1 {HEX_B}")
DANE_OK = encode(DANE_DOMAIN, rua(DANE_DOMAIN), [Pol(TLSA, DANE_MX, DANE_STRINGS)])
DANE_TLSA_INVALID = encode(DANE_DOMAIN, rua(DANE_DOMAIN), [
    Pol(TLSA, DANE_MX, DANE_STRINGS, details=[Detail(304, s="192.0.2.10", n=DANE_MX, r="198.51.100.30",
                                                     h="mx.dane-domain.example ESMTP\r\n250-PIPELINING\r\n250 STARTTLS")],
        failed=True)])

PLAIN_DOMAIN = "plain.example"
PLAIN_OK = encode(PLAIN_DOMAIN, rua(PLAIN_DOMAIN), [Pol(NO_POLICY, None)])
PLAIN_NO_STARTTLS = encode(PLAIN_DOMAIN, rua(PLAIN_DOMAIN), [
    Pol(NO_POLICY, None, details=[Detail(201, s="192.0.2.10", n="mx.plain.example", r="198.51.100.40")],
        failed=True)])

BOTH_DOMAIN = "both.example"
BOTH_STRINGS = ("version: STSv1", "mode: testing", "mx: *.mail.both.example", "max_age: 86400")
BOTH = encode(BOTH_DOMAIN, rua(BOTH_DOMAIN), [
    Pol(STS, BOTH_DOMAIN, BOTH_STRINGS, ["*.mail.both.example"],
        [Detail(303, s="192.0.2.10", n="a.mail.both.example", r="198.51.100.50", a="unknown issuer")], failed=True),
    Pol(TLSA, "a.mail.both.example", [f"3 0 1 {HEX_A}"]),
])

TWO_DOMAIN = "two.example"
TWO_DETAIL_A = Detail(202, s="192.0.2.10", n="a.mx.two.example", r="198.51.100.60", f="name mismatch")
TWO_DETAIL_B = Detail(204, s="192.0.2.10", n="b.mx.two.example", r="198.51.100.61", f="expired")
TWO = encode(TWO_DOMAIN, rua(TWO_DOMAIN), [
    Pol(STS, TWO_DOMAIN, ["version: STSv1", "mode: enforce", "mx: *.mx.two.example", "max_age: 86400"],
        ["*.mx.two.example"], [TWO_DETAIL_A, TWO_DETAIL_B], failed=True)])

ODD_DOMAIN = "odd.example"
ODD_POLICY = dict(type=STS, domain=ODD_DOMAIN, strings=["version: STSv1", "mode: enforce", "mx: mx.odd.example",
                                                         "max_age: 86400"], mx=["mx.odd.example"], failed=True)
ODD_299 = encode(ODD_DOMAIN, rua(ODD_DOMAIN), [Pol(**ODD_POLICY, details=[Detail(299, n="mx.odd.example")])])
ODD_299_WITH_INFO = encode(ODD_DOMAIN, rua(ODD_DOMAIN), [
    Pol(**ODD_POLICY, details=[Detail(299, n="mx.odd.example", a="peer said no")])])

CODES_DOMAIN = "codes.example"
RESULT_NAMES = {
    201: "starttls-not-supported", 202: "certificate-host-mismatch", 203: "certificate-not-trusted",
    204: "certificate-expired", 205: "validation-failure", 301: "sts-policy-fetch-error",
    302: "sts-policy-invalid", 303: "sts-webpki-invalid", 304: "tlsa-invalid", 305: "dnssec-invalid",
    306: "dane-required",
}
CODES = {code: encode(CODES_DOMAIN, rua(CODES_DOMAIN), [
    Pol(NO_POLICY, None, details=[Detail(code, s="192.0.2.10", n="mx.codes.example", r="198.51.100.70")],
        failed=True)]) for code in RESULT_NAMES}

LATIN_DOMAIN = "latin.example"
LATIN = encode(LATIN_DOMAIN, rua(LATIN_DOMAIN), [
    Pol(NO_POLICY, None, details=[Detail(202, n="mx.latin.example", h=b"mx.latin.example ESMTP caf\xe9 \xff\xfe",
                                         r="198.51.100.80")], failed=True)])

HOSTILE_DOMAIN = "hostile.example"
_VALID_HOSTILE = encode(HOSTILE_DOMAIN, rua(HOSTILE_DOMAIN), [Pol(NO_POLICY, None)])
HOSTILE: dict[str, bytes] = {
    "not JSON": b"this is not JSON",
    "empty": b"",
    "truncated": _VALID_HOSTILE[:-5],
    "top level array": b"[" + _VALID_HOSTILE + b"]",
    "dpv 2": encode(HOSTILE_DOMAIN, rua(HOSTILE_DOMAIN), [Pol(NO_POLICY, None)], dpv="2"),
    "dpv number": _VALID_HOSTILE.replace(b'"dpv": "1"', b'"dpv":1'),
    "no dpv": _VALID_HOSTILE.replace(b'"dpv": "1",', b""),
    "policy-type string": _VALID_HOSTILE.replace(b'"policy-type":9', b'"policy-type": "9"'),
    "policy-type 7": _VALID_HOSTILE.replace(b'"policy-type":9', b'"policy-type":7'),
    "policies object": _VALID_HOSTILE.replace(b'"policies":[', b'"policies":{"x":').replace(b"]}", b"}}"),
    "policies empty": encode(HOSTILE_DOMAIN, rua(HOSTILE_DOMAIN), []),
    "f string": _VALID_HOSTILE.replace(b'"f":0', b'"f": "0"'),
    "f 2": _VALID_HOSTILE.replace(b'"f":0', b'"f":2'),
    "c string": encode(HOSTILE_DOMAIN, rua(HOSTILE_DOMAIN), [
        Pol(NO_POLICY, None, details=[Detail(201)], failed=True)]).replace(b'"c":201', b'"c": "201"'),
    "c 1234": encode(HOSTILE_DOMAIN, rua(HOSTILE_DOMAIN), [Pol(NO_POLICY, None, details=[Detail(1234)], failed=True)]),
    "no record": _VALID_HOSTILE.replace(b'"pr": "v=TLSRPTv1; rua=mailto:tlsrpt@hostile.example",', b""),
    "record of another kind": encode(HOSTILE_DOMAIN, "v=spf1 -all", [Pol(NO_POLICY, None)]),
    "d number": _VALID_HOSTILE.replace(b'"d": "hostile.example"', b'"d":42'),
    "d not a domain": encode("not a domain!", rua(HOSTILE_DOMAIN), [Pol(NO_POLICY, None)]),
    "raw control character": _VALID_HOSTILE.replace(b"hostile.example", b"hostile\x01.example", 1),
    "raw newline": _VALID_HOSTILE.replace(b"hostile.example", b"hostile\n.example", 1),
    "escaped control character in d": encode("hostile\x07.example", rua(HOSTILE_DOMAIN), [Pol(NO_POLICY, None)]),
    "NUL bytes": b"\x00" * 64,
    "deep nesting": b"[" * 5000 + b"]" * 5000,
    "oversized 300 KB": encode(HOSTILE_DOMAIN, rua(HOSTILE_DOMAIN), [
        Pol(NO_POLICY, None, details=[Detail(201, a="x" * (300 * 1024))], failed=True)]),
}


@dataclass
class MixRun:
    """What one collector run of the whole mix left behind."""

    db_url: str
    days: list[date]
    returncode: int
    stderr: str
    sessions: int
    bad: int
    sent_good: int
    sent_hostile: int

    def db(self) -> SenderDB:
        return SenderDB(self.db_url)


@pytest.fixture(scope="module")
def mix_run() -> Iterator[MixRun]:
    """One collector, the whole mix (hostile datagrams between good ones), SIGTERM, the figures."""
    work = _short_dir()
    collector = Collector(work / "c.sock", f"sqlite:///{work}/sender.sqlite3")
    try:
        first_day = utc_today()
        collector.start()
        sender = Sender(collector.socket_path)
        hostile = list(HOSTILE.values())

        def some_hostile(n: int) -> None:
            for _ in range(n):
                if hostile:
                    sender.send(hostile.pop(0))

        good_before = sender.sent
        sender.send(STS_OK, 40)
        some_hostile(4)
        sender.send(STS_OK_ODD_CASE, 2)
        sender.send(STS_MISMATCH, 7)
        sender.send(STS_NO_STARTTLS, 3)
        some_hostile(4)
        sender.send(DANE_OK, 25)
        sender.send(DANE_TLSA_INVALID, 4)
        some_hostile(4)
        sender.send(PLAIN_OK, 12)
        sender.send(PLAIN_NO_STARTTLS, 2)
        some_hostile(4)
        sender.send(BOTH, 5)
        sender.send(TWO, 3)
        some_hostile(4)
        sender.send(ODD_299, 2)
        sender.send(ODD_299_WITH_INFO, 1)
        for code in RESULT_NAMES:
            sender.send(CODES[code])
        some_hostile(len(hostile))
        sender.send(LATIN)
        # the collector is still counting after all the hostile ones
        sender.send(STS_OK, 10)
        sent_total = sender.sent - good_before
        sender.close()
        returncode = collector.terminate()
        sessions, bad = collector.summary()
        yield MixRun(collector.db_url, days_between(first_day, utc_today()), returncode, collector.stderr(), sessions,
                     bad, sent_total - len(HOSTILE), len(HOSTILE))
    finally:
        collector.cleanup()
        shutil.rmtree(work, ignore_errors=True)


EXPECTED_DAY_TOTALS = {
    STS_DOMAIN: (40 + 2 + 10, 7 + 3),
    DANE_DOMAIN: (25, 4),
    PLAIN_DOMAIN: (12, 2),
    BOTH_DOMAIN: (5, 5),  # two policies per session: 5 failed under sts, 5 successful under tlsa
    TWO_DOMAIN: (0, 3),
    ODD_DOMAIN: (0, 3),
    CODES_DOMAIN: (0, len(RESULT_NAMES)),
    LATIN_DOMAIN: (0, 1),
}


def _failure(result_type: str, **values: str) -> Failure:
    return Failure(result_type, values.get("s"), values.get("n"), values.get("h"), values.get("r"), values.get("a"),
                   values.get("f"))


def test_collector_stops_cleanly_and_counts_every_good_datagram(mix_run):
    assert mix_run.returncode == 0, mix_run.stderr
    assert "Traceback" not in mix_run.stderr
    assert mix_run.sent_good == 128
    assert mix_run.sessions == mix_run.sent_good
    assert mix_run.bad == mix_run.sent_hostile == len(HOSTILE)


def test_exact_totals_per_report_domain(mix_run):
    with mix_run.db() as db:
        assert day_totals(db, mix_run.days) == EXPECTED_DAY_TOTALS


def test_hostile_datagrams_are_not_counted(mix_run):
    with mix_run.db() as db:
        totals = day_totals(db, mix_run.days)
    assert HOSTILE_DOMAIN not in totals
    assert not any("hostile" in domain or "domain!" in domain for domain in totals)
    assert sum(ok + bad for ok, bad in totals.values()) == sum(ok + bad for ok, bad in EXPECTED_DAY_TOTALS.values())
    # logged (rate-limited per code), one line each, never a traceback
    for code in ("not-json", "bad-type", "unknown-version", "too-large", "bad-domain", "no-record", "no-policies",
                 "bad-policy-type", "bad-result-code"):
        assert f"({code})" in mix_run.stderr, code


def test_sts_policy_success_and_failures(mix_run):
    with mix_run.db() as db:
        policies = policy_totals(db, mix_run.days, STS_DOMAIN)
    assert list(policies) == [("sts", STS_DOMAIN, STS_STRINGS, STS_MX)]
    counts = policies[("sts", STS_DOMAIN, STS_STRINGS, STS_MX)]
    assert (counts.successful, counts.failed) == (52, 10)
    assert counts.failures == {
        _failure("certificate-host-mismatch", s="192.0.2.10", n="a.backup.sts-domain.example",
                 h="a.backup.sts-domain.example ESMTP", r="198.51.100.26", f="hostname mismatch"): 7,
        _failure("starttls-not-supported", s="192.0.2.11", n="mx1.sts-domain.example", r="198.51.100.25"): 3,
    }
    with mix_run.db() as db:
        assert db.record(STS_DOMAIN) == rua(STS_DOMAIN)


def test_dane_policy_domain_is_the_mx_host(mix_run):
    with mix_run.db() as db:
        policies = policy_totals(db, mix_run.days, DANE_DOMAIN)
    assert list(policies) == [("tlsa", DANE_MX, DANE_STRINGS, ())]
    counts = policies[("tlsa", DANE_MX, DANE_STRINGS, ())]
    assert (counts.successful, counts.failed) == (25, 4)
    assert counts.failures == {
        _failure("tlsa-invalid", s="192.0.2.10", n=DANE_MX, r="198.51.100.30",
                 h="mx.dane-domain.example ESMTP\r\n250-PIPELINING\r\n250 STARTTLS"): 4,
    }


def test_ec_36_no_policy_found_gets_the_report_domain_as_policy_domain(mix_run):
    with mix_run.db() as db:
        policies = policy_totals(db, mix_run.days, PLAIN_DOMAIN)
    assert list(policies) == [("no-policy-found", PLAIN_DOMAIN, (), ())]
    counts = policies[("no-policy-found", PLAIN_DOMAIN, (), ())]
    assert (counts.successful, counts.failed) == (12, 2)
    assert counts.failures == {
        _failure("starttls-not-supported", s="192.0.2.10", n="mx.plain.example", r="198.51.100.40"): 2}


def test_datagram_with_two_policies_counts_under_each(mix_run):
    with mix_run.db() as db:
        policies = policy_totals(db, mix_run.days, BOTH_DOMAIN)
    sts = policies.pop(("sts", BOTH_DOMAIN, BOTH_STRINGS, ("*.mail.both.example",)))
    tlsa = policies.pop(("tlsa", "a.mail.both.example", (f"3 0 1 {HEX_A}",), ()))
    assert not policies
    assert (sts.successful, sts.failed) == (0, 5)
    assert sts.failures == {_failure("sts-webpki-invalid", s="192.0.2.10", n="a.mail.both.example",
                                     r="198.51.100.50", a="unknown issuer"): 5}
    assert (tlsa.successful, tlsa.failed, dict(tlsa.failures)) == (5, 0, {})


def test_rpt_i_42_two_details_one_failed_session(mix_run):
    with mix_run.db() as db:
        (counts,) = policy_totals(db, mix_run.days, TWO_DOMAIN).values()
    assert (counts.successful, counts.failed) == (0, 3)
    assert counts.failures == {
        _failure("certificate-host-mismatch", s="192.0.2.10", n="a.mx.two.example", r="198.51.100.60",
                 f="name mismatch"): 3,
        _failure("certificate-expired", s="192.0.2.10", n="b.mx.two.example", r="198.51.100.61", f="expired"): 3,
    }
    assert sum(counts.failures.values()) == 2 * counts.failed


def test_rpt_i_38_unknown_result_code_is_kept_as_validation_failure(mix_run):
    with mix_run.db() as db:
        (counts,) = policy_totals(db, mix_run.days, ODD_DOMAIN).values()
    assert (counts.successful, counts.failed) == (0, 3)
    assert counts.failures == {
        _failure("validation-failure", n="mx.odd.example", a="unknown result code 299"): 2,
        _failure("validation-failure", n="mx.odd.example", a="unknown result code 299; peer said no"): 1,
    }


def test_rpt_i_38_every_libtlsrpt_code_maps_to_its_result_type(mix_run):
    with mix_run.db() as db:
        (counts,) = policy_totals(db, mix_run.days, CODES_DOMAIN).values()
    assert (counts.successful, counts.failed) == (0, len(RESULT_NAMES))
    assert counts.failures == {
        _failure(name, s="192.0.2.10", n="mx.codes.example", r="198.51.100.70"): 1 for name in RESULT_NAMES.values()}


def test_non_utf8_helo_is_counted_with_replacement_characters(mix_run):
    with mix_run.db() as db:
        (counts,) = policy_totals(db, mix_run.days, LATIN_DOMAIN).values()
    assert (counts.successful, counts.failed) == (0, 1)
    ((failure, n),) = counts.failures.items()
    assert n == 1
    assert failure.result_type == "certificate-host-mismatch"
    assert failure.receiving_mx_helo == "mx.latin.example ESMTP caf\ufffd \ufffd\ufffd"


def test_in_process_the_parser_flags_what_the_collector_counts_and_refuses():
    """The same bytes given to the parser directly: the non-UTF-8 datagram is a session with the ``non-utf8``
    warning (the collector counts it; warnings are not logged), every hostile one a DatagramError."""
    from mxsec.tlsrpt.datagram import DatagramError, DatagramParser

    parser = DatagramParser()
    assert "non-utf8" in parser.parse(LATIN).warnings
    assert "unknown-result-code" in parser.parse(ODD_299).warnings
    assert parser.parse(STS_MISMATCH).warnings == ()
    for name, data in HOSTILE.items():
        try:
            parser.parse(data[:262145])  # what the collector's read keeps of the oversized one
        except DatagramError:
            continue
        pytest.fail(f"hostile datagram {name!r} was accepted")


def _padded(size: int) -> bytes:
    """A valid datagram of exactly *size* bytes (the padding is additional-information, cut when stored)."""
    def build(pad: int) -> bytes:
        return encode(PLAIN_DOMAIN, rua(PLAIN_DOMAIN), [
            Pol(NO_POLICY, None, details=[Detail(201, a="p" * pad)], failed=True)])
    base = len(build(0))
    data = build(size - base)
    assert len(data) == size
    return data


def test_in_process_collector_size_limit_and_interpreter_settings(sockdir):
    """Collector.run in a thread: a datagram of exactly MAX_DATAGRAM bytes is counted, one byte more is refused
    as too large, and the switch interval and GC thresholds it changes while running are restored."""
    import gc
    import threading

    from mxsec.sender.collect import GC_THRESHOLD, SWITCH_INTERVAL, Collector as InProcess, bind_socket
    from mxsec.tlsrpt.datagram import MAX_DATAGRAM

    switch, thresholds = sys.getswitchinterval(), gc.get_threshold()
    path = sockdir / "c.sock"
    sock = bind_socket(str(path))
    db = SenderDB(f"sqlite:///{sockdir}/sender.sqlite3")
    collector = InProcess(sock, db, flush_interval=0.1)
    seen: dict[str, object] = {}
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(stats=collector.run()), daemon=True)
    first_day = utc_today()
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while sys.getswitchinterval() != SWITCH_INTERVAL and time.monotonic() < deadline:
            time.sleep(0.01)
        seen["switch"], seen["gc"] = sys.getswitchinterval(), gc.get_threshold()
        sender = Sender(path)
        sender.send(_padded(MAX_DATAGRAM))
        sender.send(_padded(MAX_DATAGRAM + 1))
        sender.send(PLAIN_OK, 3)
        sender.close()
        time.sleep(0.3)
    finally:
        collector.stop()
        thread.join(30)
        sock.close()
    stats = result["stats"]
    assert (stats.datagrams, stats.sessions, dict(stats.bad)) == (5, 4, {"too-large": 1})
    assert stats.warnings["text-cut"] == 1
    assert seen["switch"] == min(switch, SWITCH_INTERVAL)
    assert seen["gc"] == tuple(max(a, b) for a, b in zip(thresholds, GC_THRESHOLD))
    assert (sys.getswitchinterval(), gc.get_threshold()) == (switch, thresholds)
    with db:
        assert day_totals(db, days_between(first_day, utc_today())) == {PLAIN_DOMAIN: (3, 1)}


# ------------------------------------------------------------------------------------ kill -9 and restart


def _paced_datagram(i: int) -> bytes:
    domain = f"paced{i % 40}.example"
    if i % 5 == 0:
        return encode(domain, rua(domain), [Pol(STS, domain, ["version: STSv1", "mode: enforce",
                                                              f"mx: mx.{domain}", "max_age: 86400"],
                                                [f"mx.{domain}"], [Detail(201, s="192.0.2.10",
                                                                          n=f"mx.{domain}")], failed=True)])
    return encode(domain, rua(domain), [Pol(NO_POLICY, None)])


def test_kill_9_loses_at_most_about_the_last_second(sockdir, collectors):
    rate, seconds = 1000, 3.0
    db_url = f"sqlite:///{sockdir}/sender.sqlite3"
    first_day = utc_today()
    collector = Collector(sockdir / "c.sock", db_url).start()
    collectors.append(collector)
    sender = Sender(collector.socket_path)
    times: list[float] = []
    began = time.monotonic()
    total = int(rate * seconds)
    for i in range(total):
        due = began + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sender.send(_paced_datagram(i))
        times.append(time.monotonic())
    killed_at = time.monotonic()
    collector.kill()
    sender.close()
    assert os.path.exists(collector.socket_path)  # left behind by the killed process
    with SenderDB(db_url) as db:
        stored = sum(ok + bad for ok, bad in day_totals(db, days_between(first_day, utc_today())).values())
    old_enough = sum(1 for t in times if t < killed_at - 1.5)
    assert old_enough <= stored <= total, (old_enough, stored, total)

    # a new collector replaces the stale socket and goes on counting into the same database
    again = Collector(sockdir / "c.sock", db_url).start()
    collectors.append(again)
    sender = Sender(again.socket_path)
    sender.send(_paced_datagram(1), 100)
    sender.close()
    assert again.terminate() == 0, again.stderr()
    assert again.summary() == (100, 0)
    with SenderDB(db_url) as db:
        after = sum(ok + bad for ok, bad in day_totals(db, days_between(first_day, utc_today())).values())
    assert after == stored + 100


# ------------------------------------------------------------------------------------ the socket file


def _one_line_error(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_second_collector_on_a_live_socket_is_refused(sockdir, collectors):
    db_url = f"sqlite:///{sockdir}/sender.sqlite3"
    first = Collector(sockdir / "c.sock", db_url).start()
    collectors.append(first)
    second = Collector(sockdir / "c.sock", f"sqlite:///{sockdir}/other.sqlite3")
    collectors.append(second)
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(START_TIMEOUT) == 2
    line = _one_line_error(second.stderr())
    assert "another collector is listening there" in line
    # the first one is undisturbed: its socket is still there and still counts
    sender = Sender(first.socket_path)
    sender.send(PLAIN_OK, 5)
    sender.close()
    assert first.terminate() == 0
    assert first.summary() == (5, 0)
    assert not os.path.exists(first.socket_path)  # removed on a clean stop


def test_stale_socket_file_is_replaced(sockdir, collectors):
    path = sockdir / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    collector = Collector(path, f"sqlite:///{sockdir}/sender.sqlite3").start()
    collectors.append(collector)
    sender = Sender(path)
    sender.send(STS_OK, 3)
    sender.close()
    assert collector.terminate() == 0
    assert collector.summary() == (3, 0)


def test_regular_file_at_the_socket_path_is_refused(sockdir, collectors):
    path = sockdir / "c.sock"
    path.write_text("precious")
    collector = Collector(path, f"sqlite:///{sockdir}/sender.sqlite3")
    collectors.append(collector)
    collector.start(wait=False)
    assert collector.proc is not None
    assert collector.proc.wait(START_TIMEOUT) == 2
    assert "is not a socket" in _one_line_error(collector.stderr())
    assert path.read_text() == "precious"


@pytest.mark.parametrize(("args", "mode"), [((), 0o660), (("--socket-mode", "0600"), 0o600)])
def test_socket_mode(sockdir, collectors, args, mode):
    collector = Collector(sockdir / "c.sock", f"sqlite:///{sockdir}/sender.sqlite3", *args).start()
    collectors.append(collector)
    st = os.stat(collector.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == mode
    assert collector.terminate() == 0


# ---------------------------------------------------------------------------------------------- PostgreSQL

_pg_names = itertools.count()


def test_pg_two_collectors_one_database_exact_sums(postgres_server, sockdir, collectors):  # noqa: F811
    url = postgres_server.create_database(f"mxsec_collect_{os.getpid()}_{next(_pg_names)}")
    first_day = utc_today()
    one = Collector(sockdir / "one.sock", url)
    two = Collector(sockdir / "two.sock", url)
    collectors.extend([one, two])
    one.start(wait=False)  # both create the schema at the same time
    two.start(wait=False)
    one.wait_listening()
    two.wait_listening()
    a, b = Sender(one.socket_path), Sender(two.socket_path)
    # the same rows from both (additive upserts), and rows only one of them sees
    for _ in range(3):
        a.send(STS_OK, 100)
        b.send(STS_OK, 50)
        a.send(STS_MISMATCH, 2)
        b.send(STS_MISMATCH, 1)
        a.send(DANE_OK, 7)
        b.send(PLAIN_NO_STARTTLS, 4)
        a.send(TWO)
        b.send(TWO)
        a.send(HOSTILE["dpv 2"])
        b.send(HOSTILE["not JSON"])
    a.close()
    b.close()
    assert one.terminate() == 0, one.stderr()
    assert two.terminate() == 0, two.stderr()
    assert one.summary() == (3 * (100 + 2 + 7 + 1), 3)
    assert two.summary() == (3 * (50 + 1 + 4 + 1), 3)
    days = days_between(first_day, utc_today())
    with SenderDB(url) as db:
        assert day_totals(db, days) == {
            STS_DOMAIN: (450, 9),
            DANE_DOMAIN: (21, 0),
            PLAIN_DOMAIN: (0, 12),
            TWO_DOMAIN: (0, 6),
        }
        (sts,) = policy_totals(db, days, STS_DOMAIN).values()
        assert sts.failures == {_failure("certificate-host-mismatch", s="192.0.2.10", n="a.backup.sts-domain.example",
                                         h="a.backup.sts-domain.example ESMTP", r="198.51.100.26",
                                         f="hostname mismatch"): 9}
        (two,) = policy_totals(db, days, TWO_DOMAIN).values()
        assert (two.successful, two.failed) == (0, 6)
        assert sorted(two.failures.values()) == [6, 6]
        (plain,) = policy_totals(db, days, PLAIN_DOMAIN).values()
        assert plain.failures == {
            _failure("starttls-not-supported", s="192.0.2.10", n="mx.plain.example", r="198.51.100.40"): 12}



def test_sts_policy_fetch_failures_recorded_by_the_daemon_are_reported(sockdir, collectors):
    """Postfix 3.10 counts a session under no-policy-found when the daemon had no policy to give; when the daemon
    recorded that it could not fetch a published policy (RFC 8461 §6), the session is reported as a failed sts
    session with the daemon's result type."""
    from mxsec.tlsrpt.served import ServedPolicy

    db_url = f"sqlite:///{sockdir}/fetch.sqlite3"
    with SenderDB(db_url) as db:
        broken = ServedPolicy("broken.example", sts_failure="sts-policy-fetch-error")
        db.add_served([("broken.example", broken.fingerprint(), broken.to_json(), time.time() - 60)])
    collector = Collector(sockdir / "fetch.sock", db_url).start()
    collectors.append(collector)
    sender = Sender(collector.socket_path)
    sender.send(encode("broken.example", rua("broken.example"), [Pol(9, None)]), times=3)
    sender.send(encode("fine.example", rua("fine.example"), [Pol(9, None)]), times=2)
    sender.close()
    assert collector.terminate() == 0
    with SenderDB(db_url) as db:
        (sts,) = db.totals(utc_today(), "broken.example")
        (plain,) = db.totals(utc_today(), "fine.example")
    assert (sts.policy.type.value, sts.policy.domain, sts.successful, sts.failed) == ("sts", "broken.example", 0, 3)
    assert [(f.result_type, n) for f, n in sts.failures] == [("sts-policy-fetch-error", 3)]
    assert (plain.policy.type.value, plain.successful, plain.failed) == ("no-policy-found", 2, 0)


def test_metrics_count_sessions_and_bad_datagrams_by_code(sockdir, collectors):
    import urllib.request

    from .servers import free_port

    port = free_port()
    collector = Collector(sockdir / "m.sock", f"sqlite:///{sockdir}/m.sqlite3", "--metrics-listen",
                          f"127.0.0.1:{port}").start()
    collectors.append(collector)
    sender = Sender(collector.socket_path)
    sender.send(encode("m.example", rua("m.example"), [Pol(9, None)]), times=4)
    sender.send(b"not json", times=2)
    sender.send(encode("m.example", rua("m.example"), [Pol(9, None)], dpv="2"))
    sender.close()
    deadline = time.monotonic() + 10
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        if "mxsec_tlsrpt_sessions_total 4.0" in text or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "mxsec_tlsrpt_datagrams_total 7.0" in text
    assert "mxsec_tlsrpt_sessions_total 4.0" in text
    assert 'mxsec_tlsrpt_bad_datagrams_total{code="not-json"} 2.0' in text
    assert 'mxsec_tlsrpt_bad_datagrams_total{code="unknown-version"} 1.0' in text
    assert collector.terminate() == 0
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        busy = Collector(sockdir / "m2.sock", f"sqlite:///{sockdir}/m.sqlite3", "--metrics-listen",
                         f"127.0.0.1:{holder.getsockname()[1]}")
        busy.start(wait=False)
        collectors.append(busy)
        assert busy.proc.wait(START_TIMEOUT) == 2
        assert "cannot listen on" in busy.stderr() and "Traceback" not in busy.stderr()
        assert not (sockdir / "m2.sock").exists()
    finally:
        holder.close()
