"""``mxsec tlsrpt collect``: libtlsrpt datagrams from a Unix socket into the sender's database.

libtlsrpt sends each datagram with ``MSG_DONTWAIT``: when the socket's queue is full (about eleven datagrams
with Linux's default ``net.unix.max_dgram_qlen`` of 10) the send fails and the MTA's session is not counted.
So the receive path never waits on anything but the socket:

* one thread receives, parses (:mod:`mxsec.tlsrpt.datagram`) and adds to an in-memory :class:`Tally`; it
  drains the socket without blocking and sleeps in ``poll`` only when the queue is empty;
* every ``flush_interval`` seconds (default 1) it hands the tally to a writer thread and starts a new one;
  the writer adds it to the database in one transaction. If the database is unavailable, the writer keeps
  the counts, merges newer ones into them and tries again; nothing is dropped;
* ``SIGTERM``/``SIGINT``: the last tally is written before the process exits, so a clean stop loses nothing;
  ``kill -9`` loses at most what arrived since the last flush (about a second).

The receive path is kept cheap: each datagram is read into one preallocated buffer (``recv`` of a 256 KiB size
costs a large allocation per call, often an ``mmap``/``mremap``/``munmap`` round trip), and while :meth:`Collector.run`
runs the interpreter's thread switch interval is lowered to :data:`SWITCH_INTERVAL`, so the receiving thread gets the
GIL back within half a millisecond when the writer thread is busy (the default, 5 ms, is about 50 datagrams at
10,000 a second: several times the socket's queue), and the garbage collector's thresholds are raised to
:data:`GC_THRESHOLD` (the parser's caches keep over a hundred thousand small objects alive, which the default
thresholds have the cycle collector walk through again and again; the per-datagram objects form no reference
cycles). Both are restored when it returns.

A session is counted on the UTC day the datagram arrives (the datagram has no time of its own). Bad datagrams
are counted per error code and logged at most once per :data:`LOG_EVERY` seconds per code.
"""

from __future__ import annotations

import errno
import functools
import gc
import grp
import logging
import os
import select
import signal
import socket
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from ..errors import MxsecError
from ..fsutil import make_dirs
from ..storage.senderdb import SenderDB
from ..tlsrpt.datagram import MAX_DATAGRAM, DatagramError, DatagramParser
from ..tlsrpt.served import ServedPolicy, with_fetch_failures
from ..tlsrpt.session import Tally

__all__ = ["Collector", "CollectorStats", "LOG_EVERY", "bind_socket"]

log = logging.getLogger("mxsec.tlsrpt.collect")

#: Seconds between two log lines about the same kind of bad datagram.
LOG_EVERY = 10.0
#: Receive buffer asked for (the queue-length limit is separate and usually the tighter one).
RCVBUF = 4 * 1024 * 1024
#: ``sys.setswitchinterval`` while :meth:`Collector.run` runs (seconds); restored afterwards.
SWITCH_INTERVAL = 0.0005
#: ``gc.set_threshold`` while :meth:`Collector.run` runs (each value raised to this at least); restored afterwards.
GC_THRESHOLD = (20000, 20, 20)


class CollectorError(MxsecError):
    pass


@dataclass
class CollectorStats:
    datagrams: int = 0
    sessions: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    flushes: int = 0
    write_errors: int = 0


def bind_socket(path: str, *, mode: int = 0o660, group: str | None = None) -> socket.socket:
    """A bound ``AF_UNIX``/``SOCK_DGRAM`` socket at *path* with *mode* and *group*.

    A socket file left by a collector that is gone is replaced; a live one (another collector) or a file
    that is not a socket is refused with a one-line error."""
    if os.path.lexists(path):
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise CollectorError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            probe.connect(path)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise CollectorError(f"{path}: {exc.strerror}") from None
            os.unlink(path)
        else:
            raise CollectorError(f"{path}: another collector is listening there")
        finally:
            probe.close()
    gid = -1
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            try:
                gid = int(group)
            except ValueError:
                raise CollectorError(f"--socket-group: no group named {group!r}") from None
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CollectorError(f"{directory}: no such directory for the socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        if gid != -1:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        except OSError:  # pragma: no cover - the default is used
            pass
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise CollectorError(f"{path}: {exc.strerror or exc}") from None
    return sock


class _Writer(threading.Thread):
    """Writes handed-over tallies; keeps (and merges) what could not be written yet."""

    def __init__(self, db: SenderDB, stats: CollectorStats) -> None:
        super().__init__(name="mxsec-tlsrpt-writer", daemon=True)
        self.db = db
        self.stats = stats
        self._cond = threading.Condition()
        self._pending: Tally | None = None
        #: called once the pending counts are stored (removal of the files they were read back from)
        self._on_stored: list[Callable[[], None]] = []
        self._closing = False
        self._idle = threading.Event()
        self._idle.set()
        self._retry_at = 0.0
        self._served_cache: dict[str, tuple[float, ServedPolicy | None]] = {}
        self._failures = 0

    def _served(self, domain: str) -> ServedPolicy | None:
        """What the policy daemon recorded for *domain* (``--record-policies``), looked up at most once a
        minute per domain: sessions Postfix counted without a policy become the daemon's fetch failures."""
        now = time.monotonic()
        cached = self._served_cache.get(domain)
        if cached is not None and cached[0] > now:
            return cached[1]
        text = self.db.served_at(domain, time.time())
        policy = ServedPolicy.from_json(text) if text else None
        if len(self._served_cache) > 50_000:
            self._served_cache.clear()
        self._served_cache[domain] = (now + 60.0, policy)
        return policy

    def hand(self, tally: Tally, on_stored: Callable[[], None] | None = None) -> None:
        with self._cond:
            if on_stored is not None:
                self._on_stored.append(on_stored)
            if self._pending is None:
                self._pending = tally
            else:
                self._pending.merge(tally)
            self._idle.clear()
            self._cond.notify()

    def close(self, timeout: float) -> bool:
        """Write what is left, then stop; ``False`` if it could not be written within *timeout*."""
        with self._cond:
            self._closing = True
            self._retry_at = 0.0
            self._cond.notify()
        self.join(timeout)
        return self._pending is None and not self.is_alive()

    def run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                if self._pending is None and self._closing:
                    return
                wait = self._retry_at - time.monotonic()
                if wait > 0 and not self._closing:
                    self._cond.wait(wait)
                    continue
                work, self._pending = self._pending, None
                assert work is not None  # the waits above end with counts pending, or return
                done, self._on_stored = self._on_stored, []
            try:
                self.db.add(with_fetch_failures(work, self._served))
            except Exception as exc:  # noqa: BLE001 - any storage error: keep the counts and retry
                self.stats.write_errors += 1
                self._failures += 1
                delay = min(30.0, 0.5 * 2 ** min(self._failures, 6))
                log.error("cannot store counted sessions (retrying in %.1f s): %s", delay, exc,
                          extra={"sessions": work.sessions})
                with self._cond:
                    if self._pending is not None:
                        work.merge(self._pending)
                    self._pending = work
                    self._on_stored[:0] = done
                    self._retry_at = time.monotonic() + delay
                    if self._closing and self._failures > 3:
                        return
                continue
            self._failures = 0
            self.stats.flushes += 1
            for callback in done:
                try:
                    callback()
                except OSError as exc:
                    log.error("%s", exc)
            with self._cond:
                if self._pending is None:
                    self._idle.set()

    def take_pending(self) -> tuple[Tally | None, list[Callable[[], None]]]:
        """What could not be written (after :meth:`close` failed), with its callbacks."""
        with self._cond:
            work, self._pending = self._pending, None
            done, self._on_stored = self._on_stored, []
        return work, done

    def wait_idle(self, timeout: float) -> bool:
        return self._idle.wait(timeout)


class Collector:
    """Receives datagrams on *sock* and counts them into *db* (see the module notes)."""

    def __init__(self, sock: socket.socket, db: SenderDB, *, flush_interval: float = 1.0,
                 spill_dir: str | None = None, stats: CollectorStats | None = None,
                 clock: Callable[[], float] = time.time, parser: DatagramParser | None = None) -> None:
        #: where counts go when the database is still unavailable at stop (read back at the next start)
        self.spill_dir = spill_dir
        self.sock = sock
        self.db = db
        self.flush_interval = flush_interval
        self.clock = clock
        self.parser = parser or DatagramParser()
        self.stats = stats if stats is not None else CollectorStats()
        self._stop = threading.Event()
        self._writer = _Writer(db, self.stats)
        self._last_log: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def stop(self) -> None:
        self._stop.set()

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def _bad(self, exc: DatagramError) -> None:
        self.stats.bad[exc.code] += 1
        now = time.monotonic()
        if now - self._last_log.get(exc.code, -LOG_EVERY) >= LOG_EVERY:
            self._last_log[exc.code] = now
            more = self._suppressed.pop(exc.code, 0)
            log.warning("bad datagram (%s): %s%s", exc.code, exc,
                        f" ({more} more of this kind not logged)" if more else "",
                        extra={"code": exc.code})
        else:
            self._suppressed[exc.code] += 1

    def run(self) -> CollectorStats:
        """Receive until :meth:`stop`; then write what is left. Returns the statistics."""
        switch = sys.getswitchinterval()
        thresholds = gc.get_threshold()
        sys.setswitchinterval(min(switch, SWITCH_INTERVAL))
        gc.set_threshold(*(max(mine, wanted) for mine, wanted in zip(thresholds, GC_THRESHOLD)))
        try:
            return self._run()
        finally:
            sys.setswitchinterval(switch)
            gc.set_threshold(*thresholds)

    def _run(self) -> CollectorStats:
        self._writer.start()
        if self.spill_dir is not None:
            for path, kept in load_spills(self.spill_dir):
                log.info("storing %d session(s) kept in %s by an earlier stop", kept.sessions, path)
                self._writer.hand(kept, on_stored=functools.partial(os.unlink, path))
        sock, parser, stats = self.sock, self.parser, self.stats
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        tally = Tally()
        day: date | None = None
        day_end = 0.0
        next_flush = time.monotonic() + self.flush_interval
        # one buffer for every datagram: a datagram longer than MAX_DATAGRAM is cut to MAX_DATAGRAM + 1 bytes
        # (and refused as too large), as recv(MAX_DATAGRAM + 1) would
        buffer = bytearray(MAX_DATAGRAM + 1)
        view = memoryview(buffer)
        recv_into = sock.recv_into
        while not self._stop.is_set():
            try:
                while True:
                    data = view[:recv_into(buffer)].tobytes()
                    stats.datagrams += 1
                    now = self.clock()
                    if now >= day_end or day is None:
                        current = datetime.fromtimestamp(now, UTC)
                        day = current.date()
                        day_end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC).timestamp()
                    try:
                        parsed = parser.parse(data)
                    except DatagramError as exc:
                        self._bad(exc)
                        continue
                    if parsed.warnings:
                        stats.warnings.update(parsed.warnings)
                    tally.add(parsed.session, day)
                    stats.sessions += 1
                    if stats.datagrams & 255 == 0 and time.monotonic() >= next_flush:
                        break
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EINTR):
                    log.error("socket error: %s", exc)
                    time.sleep(0.1)
            mono = time.monotonic()
            if mono >= next_flush:
                if tally:
                    self._writer.hand(tally)
                    tally = Tally()
                next_flush = mono + self.flush_interval
            # wake for the next flush, and at least every 200 ms to notice stop()
            poller.poll(max(1, min(200, int((next_flush - mono) * 1000))))
        # drain what is already queued, then write everything
        try:
            while True:
                data = view[:recv_into(buffer)].tobytes()
                stats.datagrams += 1
                try:
                    parsed = parser.parse(data)
                except DatagramError as exc:
                    self._bad(exc)
                    continue
                tally.add(parsed.session, day or datetime.fromtimestamp(self.clock(), UTC).date())
                stats.sessions += 1
        except OSError:
            pass
        if tally:
            self._writer.hand(tally)
        if not self._writer.close(timeout=60):
            left, done = self._writer.take_pending()
            if left is not None and self.spill_dir is not None:
                path = save_spill(self.spill_dir, left)
                for callback in done:  # files read back at start are in the new one now
                    callback()
                log.error("the database is unavailable: %d counted session(s) kept in %s; the next start stores "
                          "them", left.sessions, path)
            else:
                log.error("could not store the last counted sessions before stopping")
        return stats


SPILL_PREFIX = "tlsrpt-unsaved-"


def save_spill(directory: str, tally: Tally) -> str:
    """Write *tally* to a new file in *directory* (0600, written then renamed)."""
    make_dirs(directory)
    path = os.path.join(directory, f"{SPILL_PREFIX}{time.time_ns()}.json")
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(tally.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)
    return path


def load_spills(directory: str) -> list[tuple[str, Tally]]:
    """The tallies an earlier stop kept in *directory* (unreadable files are logged and left in place)."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.startswith(SPILL_PREFIX) and n.endswith(".json"))
    except OSError:
        return []
    out = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as fh:
                out.append((path, Tally.from_json(fh.read())))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("cannot read kept sessions from %s: %s", path, exc)
    return out
