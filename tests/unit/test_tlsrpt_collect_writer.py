"""The collector's writer thread: counts handed over while the database is unavailable are kept, merged with
newer ones and written once it is back; closing writes what is left. A flaky in-process store stands in for an
outage of a real database (the collector process itself is tested in tests/integration/test_tlsrpt_collect.py)."""

from __future__ import annotations

import threading
import time
from datetime import date

from mxsec.sender.collect import CollectorStats, _Writer
from mxsec.storage.base import StoreError
from mxsec.tlsrpt.session import Policy, PolicyOutcome, PolicyType, Session, Tally

DAY = date(2026, 12, 1)
POLICY = Policy(PolicyType.NO_POLICY_FOUND, "example.com")


class FlakyDB:
    """Refuses the first *failures* writes, then keeps what it is given."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[Tally] = []
        self.lock = threading.Lock()

    def add(self, tally: Tally, **_: object) -> None:
        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                raise StoreError("database is locked")
            self.written.append(tally)

    def served_at(self, domain: str, ts: float) -> None:
        return None

    def sessions(self) -> int:
        return sum(c.successful + c.failed for t in self.written for _, c in t.items())


def tally(n: int) -> Tally:
    t = Tally()
    for _ in range(n):
        t.add(Session("example.com", (PolicyOutcome(POLICY, False),)), DAY)
    return t


def test_counts_survive_a_database_outage_and_are_written_once_it_is_back():
    db = FlakyDB(failures=2)
    stats = CollectorStats()
    writer = _Writer(db, stats)  # type: ignore[arg-type]
    writer.start()
    writer.hand(tally(5))
    deadline = time.monotonic() + 5
    while stats.write_errors < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.hand(tally(7))  # arrives during the outage: merged with the kept counts
    assert writer.close(timeout=30)
    assert stats.write_errors == 2
    assert db.sessions() == 12
    assert len(db.written) == 1  # kept and merged, written in one piece


def test_close_gives_up_after_repeated_failures_and_says_so():
    db = FlakyDB(failures=1000)
    stats = CollectorStats()
    writer = _Writer(db, stats)  # type: ignore[arg-type]
    writer.start()
    writer.hand(tally(3))
    assert writer.close(timeout=30) is False
    assert db.sessions() == 0 and stats.write_errors >= 3


def test_a_stop_with_the_database_down_keeps_the_counts_in_a_file_for_the_next_start(tmp_path):
    import socket

    from mxsec.sender.collect import Collector, bind_socket, load_spills

    def run_collector(db, datagrams: int) -> Collector:
        sock = bind_socket(str(tmp_path / "c.sock"))
        collector = Collector(sock, db, flush_interval=0.05, spill_dir=str(tmp_path / "state"))  # type: ignore[arg-type]
        thread = threading.Thread(target=collector.run)
        thread.start()
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        datagram = (b'{"dpv": "1","d": "example.com","pr": "v=TLSRPTv1; rua=mailto:r@example.com",'
                    b'"policies":[{"policy-type":9,"t":0,"f":0}]}')
        for _ in range(datagrams):
            sender.sendto(datagram, str(tmp_path / "c.sock"))
        sender.close()
        time.sleep(0.3)
        collector.stop()
        thread.join(120)
        sock.close()
        (tmp_path / "c.sock").unlink()
        return collector

    down = FlakyDB(failures=10**6)
    run_collector(down, 4)
    (kept,) = load_spills(str(tmp_path / "state"))
    assert kept[1].sessions == 4 and down.sessions() == 0
    back = FlakyDB(failures=0)
    run_collector(back, 2)
    assert back.sessions() == 6  # the kept four and the two new ones
    assert load_spills(str(tmp_path / "state")) == []
