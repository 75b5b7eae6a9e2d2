"""Proactive refresh of cached policies (RFC 8461 §3.3 and §10.2; STS-D-5, STS-D-6, STS-D-7, EC-19).

Every ``tick`` seconds the refresher asks the service which cached policies are due
(:func:`mxsec.sts.cache.refresh_due`): a TXT id re-check, or a refetch of the body even when the id did not
change (at least daily, and always before half the policy's lifetime has passed). Failures are logged by the
service as alerts; expired policies are dropped. At most ``concurrency`` refreshes run at once, and they go
through the same single-flight path as live lookups, so a query and a refresh of one domain share one fetch.
"""

from __future__ import annotations

import asyncio
import logging

from mxsec.daemon.service import PolicyService
from mxsec.sts.cache import Refresh

log = logging.getLogger("mxsec.refresh")


class Refresher:
    def __init__(self, service: PolicyService, *, tick: float = 60.0, concurrency: int = 32) -> None:
        self.service = service
        self.tick = tick
        self.concurrency = concurrency
        self._task: asyncio.Task | None = None
        self.rounds = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("refresh round failed")
            await asyncio.sleep(self.tick)

    async def run_once(self) -> int:
        """One round: refresh what is due, then drop what expired. Returns the number of refreshes."""
        service = self.service
        if service.unsaved:  # policy writes that failed while the cache store was down
            await service.flush_unsaved()
        due = service.due_for_refresh()
        sem = asyncio.Semaphore(self.concurrency)

        async def one(domain: str, action: Refresh) -> None:
            async with sem:
                verdict = await service.resolve(domain, force_fetch=action is Refresh.REFETCH)
                log.debug("refreshed", extra={"domain": domain, "action": action.value, "source": verdict.source})

        if due:
            await asyncio.gather(*(one(d, a) for d, a in due))
        await service.expire()
        service.refresh_dane_due(within=self.tick)
        self.rounds += 1
        return len(due)
