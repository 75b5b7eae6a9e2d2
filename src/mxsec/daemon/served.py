"""``mxsec daemon --record-policies``: what the daemon answered, per domain, kept for the TLSRPT log followers.

Every answer computed for a domain (not the memoised repeats) is turned into a
:class:`~mxsec.tlsrpt.served.ServedPolicy`; when it differs from the last one recorded for that domain, a row
goes into the TLSRPT sender's database (``tlsrpt.db``). Rows are written by a background task once a second in
one transaction, off the event loop; the queue is bounded (if the database stays unavailable the oldest rows
are dropped and counted, answers are never delayed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from ..storage.senderdb import SenderDB
from ..tlsrpt.served import served_from_verdict

__all__ = ["ServedRecorder"]

log = logging.getLogger("mxsec.daemon.served")

#: Domains whose last answer is remembered (least recently answered forgotten first: it is then recorded again).
MAX_DOMAINS = 100_000
#: Rows waiting to be written at most.
MAX_QUEUE = 10_000


class ServedRecorder:
    def __init__(self, url: str, *, clock: Callable[[], float] = time.time, interval: float = 1.0) -> None:
        self.url = url
        self.clock = clock
        self.interval = interval
        self.db: SenderDB | None = None
        self._last: OrderedDict[str, str] = OrderedDict()
        self._queue: list[tuple[str, str, str, float]] = []
        self._task: asyncio.Task | None = None
        self.recorded = 0
        self.dropped = 0

    async def start(self) -> None:
        self.db = await asyncio.to_thread(SenderDB, self.url)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def observe(self, verdict: object) -> None:
        served = served_from_verdict(verdict)
        fingerprint = served.fingerprint()
        domain = served.domain
        if self._last.get(domain) == fingerprint:
            self._last.move_to_end(domain)
            return
        self._last[domain] = fingerprint
        self._last.move_to_end(domain)
        if len(self._last) > MAX_DOMAINS:
            self._last.popitem(last=False)
        if len(self._queue) >= MAX_QUEUE:
            del self._queue[0]
            self.dropped += 1
        self._queue.append((domain, fingerprint, served.to_json(), self.clock()))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        if not self._queue or self.db is None:
            return
        rows, self._queue = self._queue, []
        try:
            await asyncio.to_thread(self.db.add_served, rows)
            self.recorded += len(rows)
        except Exception as exc:  # noqa: BLE001 - keep serving; try again next time
            log.error("cannot record served policies: %s", exc)
            self._queue[:0] = rows[-(MAX_QUEUE - len(self._queue)):] if len(self._queue) < MAX_QUEUE else []

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
        if self.db is not None:
            await asyncio.to_thread(self.db.close)
