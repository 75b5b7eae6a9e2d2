"""``mxsec tlsrpt follow-log``: sessions of Postfix 3.7–3.9 and Exim from their mail log.

The log follower reads the MTA's log file line by line, hands each line to the MTA's parser
(:mod:`mxsec.tlsrpt.postfix_log`, :mod:`mxsec.tlsrpt.exim_log`), and turns every delivery attempt into a
TLSRPT session (:func:`mxsec.tlsrpt.served.session_for_attempt`) with

- the policy the daemon served for the domain at that time (``mxsec daemon --record-policies`` writes it into
  the same database; without it every session is ``no-policy-found``);
- a check that the domain publishes exactly one valid ``_smtp._tls`` record (RFC 8460 §3; looked up once an
  hour per domain): other domains' sessions are not counted;
- the sessions that carried mxsec's own reports left out (their Message-IDs are in the database; RFC 8460 §3);
- for MTA-STS ``testing`` domains, which the MTA delivers to with opportunistic TLS, the log judged against the
  policy (:func:`mxsec.tlsrpt.served.testing_result`); where the log says too little (a chain the MTA found
  trusted or untrusted without checking names), the MX is probed once an hour (:class:`MxProber`: STARTTLS, SNI,
  the PKIX check of ``mxsec dane verify`` and ``mxsec check``), unless ``probe=False``.

Every ``flush_interval`` seconds the counts and the file position (inode and offset of the last whole line
read) are written in one transaction, so a restart resumes exactly after the last counted line: nothing is
counted twice. Sessions whose log lines were still incomplete when the follower was killed are lost (a clean
stop completes them first). Rotation: when the file at the path is replaced (a new inode), the old file is
read to its end first; when it is truncated (``copytruncate``), reading starts again at the beginning. On a
restart after a rotation the rotated file is looked for beside the path (``maillog.1``, ``maillog-DATE``) by
its inode.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, BinaryIO

from ..net.dns import DnsClient
from ..net.guard import AddressGuard
from ..net.smtp import probe_starttls
from ..storage.senderdb import SenderDB
from ..tlsrpt.attempt import Attempt
from ..tlsrpt.record import select_record, tlsrpt_owner
from ..sts.match import matching_pattern
from ..tlsrpt.served import NEEDS_A_LOOK, ServedPolicy, session_for_attempt
from ..tlsrpt.session import Tally

__all__ = ["FollowStats", "LogFollower", "MxProber", "make_parser"]

log = logging.getLogger("mxsec.tlsrpt.follow")

#: Seconds a domain's ``_smtp._tls`` verdict is reused.
RECORD_TTL = 3600.0
#: Seconds to wait before asking again after a failed lookup.
RECORD_RETRY = 60.0
#: Attempts waiting for a record lookup at most (more are counted as unreported).
MAX_WAITING = 100_000
_READ = 1 << 20


def make_parser(mta: str, *, tz: tzinfo | None = None, clock: Callable[[], float] = time.time) -> Any:
    """The parser of *mta*'s log. Syslog stamps carry no year and no zone: the year is the one that puts the
    line closest before *clock*, the zone *tz* (default: this machine's local zone, as syslog and Postfix's
    ``maillog_file`` write local time)."""
    zone = tz if tz is not None else datetime.now().astimezone().tzinfo
    now = lambda: datetime.fromtimestamp(clock(), UTC)  # noqa: E731
    if mta == "postfix":
        from ..tlsrpt.postfix_log import PostfixLogParser

        return PostfixLogParser(clock=now, tz=zone)
    if mta == "exim":
        from ..tlsrpt.exim_log import EximLogParser

        return EximLogParser(clock=now, tz=zone)
    raise ValueError(f"unknown MTA {mta!r} (postfix or exim)")


class MxProber:
    """What an MX's certificate says for its host name, learnt by a STARTTLS probe, at most once per
    :attr:`ttl` per (host, address); addresses the SSRF guard refuses are not probed."""

    def __init__(self, guard: AddressGuard, *, ca_file: str | None = None, timeout: float = 10.0,
                 ttl: float = 3600.0, concurrency: int = 4, clock: Callable[[], float] = time.monotonic) -> None:
        self.guard = guard
        self.ca_file = ca_file
        self.timeout = timeout
        self.ttl = ttl
        self.clock = clock
        self._limit = asyncio.Semaphore(concurrency)
        self._cache: dict[tuple[str, str], tuple[float, tuple[str | None, str | None] | None]] = {}
        self.probes = 0

    async def judge(self, host: str, address: str) -> tuple[str | None, str | None] | None:
        """``(result type, reason)`` (``(None, None)``: the certificate is good for *host*), ``None`` when the
        probe could not tell."""
        key = (host, address)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        verdict: tuple[str | None, str | None] | None = None
        if self.guard.check(address) is None:
            async with self._limit:
                self.probes += 1
                probe = await probe_starttls(address, 25, server_name=host, pkix_names=[host],
                                             ca_file=self.ca_file, timeout=self.timeout)
            if probe.pkix is not None:
                verdict = (None, None) if probe.pkix.ok else (probe.pkix.result_type, probe.pkix.reason)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (self.clock() + self.ttl, verdict)
        return verdict


@dataclass
class FollowStats:
    lines: int = 0
    attempts: int = 0
    sessions: int = 0
    no_tlsrpt: int = 0
    report_messages: int = 0
    lookup_failures: int = 0
    domains: set[str] = field(default_factory=set)


class LogFollower:
    def __init__(self, db: SenderDB, parser: Any, path: str | os.PathLike[str], *, dns: DnsClient,
                 source: str | None = None, sending_ip: str | None = None, flush_interval: float = 1.0,
                 prober: MxProber | None = None, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.parser = parser
        self.path = Path(path)
        self.dns = dns
        self.source = source or f"log:{self.path}"
        self.sending_ip = sending_ip
        self.prober = prober
        self.flush_interval = flush_interval
        self.clock = clock
        self.stats = FollowStats()
        self._records: dict[str, tuple[float, str | None]] = {}
        self._served: dict[tuple[str, int], ServedPolicy | None] = {}
        self._waiting: list[Attempt] = []
        self._file: BinaryIO | None = None
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""

    # --------------------------------------------------------------------------------------- positions

    def _position(self) -> str:
        return json.dumps({"inode": self._inode, "offset": self._offset - len(self._partial)})

    def _open_at_saved(self, from_start: bool) -> None:
        saved = self.db.position(self.source)
        st = os.stat(self.path)
        if saved is None:
            self._switch(self.path, 0 if from_start else st.st_size)
            return
        where = json.loads(saved)
        inode, offset = where.get("inode"), int(where.get("offset", 0))
        if inode == st.st_ino:
            self._switch(self.path, offset if offset <= st.st_size else 0)
            return
        rotated = self._find_rotated(inode)
        if rotated is not None:
            log.info("resuming in the rotated file %s", rotated)
            self._switch(rotated, offset)
        else:
            log.warning("%s was rotated while the follower was stopped and the old file is gone; lines written "
                        "to it after the last position are not counted", self.path)
            self._switch(self.path, 0)

    def _find_rotated(self, inode: int | None) -> Path | None:
        if inode is None:
            return None
        for candidate in sorted(self.path.parent.glob(self.path.name + "*")):
            try:
                if candidate != self.path and candidate.stat().st_ino == inode and candidate.is_file():
                    return candidate
            except OSError:
                continue
        return None

    def _switch(self, path: Path, offset: int) -> None:
        if self._file is not None:
            self._file.close()
        handle = open(path, "rb")  # noqa: SIM115 - kept open while following
        handle.seek(offset)
        self._file = handle
        self._inode = os.fstat(handle.fileno()).st_ino
        self._offset = offset
        self._partial = b""

    # ------------------------------------------------------------------------------------------ reading

    def _read_available(self) -> list[Attempt]:
        assert self._file is not None
        attempts: list[Attempt] = []
        while True:
            chunk = self._file.read(_READ)
            if not chunk:
                break
            self._offset += len(chunk)
            data = self._partial + chunk
            lines = data.split(b"\n")
            self._partial = lines.pop()
            for line in lines:
                self.stats.lines += 1
                attempts.extend(self.parser.feed(line))
        return attempts

    def _rotated(self) -> bool:
        """The file at the path is another one now, or was truncated: switch (after reading the old one)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        if st.st_ino != self._inode:
            log.info("%s was rotated; reading the new file", self.path)
            self._switch(self.path, 0)
            return True
        if st.st_size < self._offset - len(self._partial):
            log.info("%s was truncated; reading from its start", self.path)
            self._switch(self.path, 0)
            return True
        return False

    # ----------------------------------------------------------------------------------------- counting

    async def _record(self, domain: str) -> tuple[bool, str | None]:
        """``(known, record)``: the domain's single valid TLSRPT record, ``None`` when it has none."""
        now = self.clock()
        cached = self._records.get(domain)
        if cached is not None and cached[0] > now:
            return True, cached[1]
        answer = await self.dns.txt(tlsrpt_owner(domain))
        if answer.status == "error":
            self.stats.lookup_failures += 1
            return False, None
        selection = select_record(answer.records if answer.ok else ())
        text = None
        if selection.record is not None:
            text = next(r for r in answer.records if r.startswith("v=TLSRPTv1"))
        if len(self._records) > 100_000:
            self._records.clear()
        self._records[domain] = (now + RECORD_TTL, text)
        return True, text

    def _served_policy(self, domain: str, ts: float) -> ServedPolicy | None:
        key = (domain, int(ts) // 10)
        if key in self._served:
            return self._served[key]
        text = self.db.served_at(domain, ts)
        policy = ServedPolicy.from_json(text) if text else None
        if len(self._served) > 50_000:
            self._served.clear()
        self._served[key] = policy
        return policy

    async def _sessions(self, attempts: list[Attempt]) -> Tally:
        tally = Tally()
        waiting: list[Attempt] = []
        for attempt in [*self._waiting, *attempts]:
            if attempt.message_id and self.db.is_report_message(f"<{attempt.message_id.strip('<>')}>"):
                self.stats.report_messages += 1
                continue
            try:
                known, record = await self._record(attempt.domain)
            except Exception as exc:  # noqa: BLE001 - a bad name must not stop the follower
                log.warning("cannot look up the TLSRPT record of %s: %s", attempt.domain, exc)
                continue
            if not known:
                if len(waiting) < MAX_WAITING:
                    waiting.append(attempt)
                continue
            if record is None:
                self.stats.no_tlsrpt += 1
                continue
            ts = attempt.time.timestamp() if attempt.time is not None else self.clock()
            served = self._served_policy(attempt.domain, ts)
            judged = None
            if (self.prober is not None and served is not None and served.sts is not None
                    and served.sts_mode == "testing" and attempt.result_type is None
                    and attempt.tls in NEEDS_A_LOOK and attempt.mx_host and attempt.mx_ip
                    and matching_pattern(served.sts.mx_hosts, attempt.mx_host) is not None):
                judged = await self.prober.judge(attempt.mx_host, attempt.mx_ip)
            session = session_for_attempt(attempt, served, sending_ip=self.sending_ip, record=record, judged=judged)
            day = attempt.day or datetime.fromtimestamp(self.clock(), UTC).date()
            tally.add(session, day)
            self.stats.sessions += 1
            self.stats.domains.add(attempt.domain)
        self._waiting = waiting
        return tally

    async def _flush(self, attempts: list[Attempt]) -> None:
        self.stats.attempts += len(attempts)
        tally = await self._sessions(attempts)
        await asyncio.to_thread(self.db.add, tally, positions={self.source: self._position()}, now=self.clock())

    async def run(self, stop: asyncio.Event, *, once: bool = False, from_start: bool = False) -> FollowStats:
        """Follow until *stop* is set (or, with *once*, until the end of the file)."""
        self._open_at_saved(from_start)
        pending: list[Attempt] = []
        next_flush = time.monotonic() + self.flush_interval
        while True:
            pending.extend(self._read_available())
            if self._rotated():
                continue
            if once:
                break
            if time.monotonic() >= next_flush:
                await self._flush(pending)
                pending = []
                next_flush = time.monotonic() + self.flush_interval
            if stop.is_set():
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.2)
            except TimeoutError:
                pass
        pending.extend(self.parser.flush())
        await self._flush(pending)
        if self._waiting:
            log.warning("%d session(s) not counted: their domains' TLSRPT records could not be looked up",
                        len(self._waiting))
        if self._file is not None:
            self._file.close()
        return self.stats
