"""An in-process stand-in for a fleet's shared store (Redis, PostgreSQL): leases and compare-and-set writes.

The unit tests of :mod:`mxsec.daemon.fleet` and the fleet simulation of ``bench/fleet.py`` run several
:class:`~mxsec.daemon.service.PolicyService` objects on one :class:`SharedMemoryStore`; the real stores are
tested against real servers in ``tests/integration/test_fleet_servers.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from mxsec.storage.base import CacheEntry, Claim, StoreError
from mxsec.storage.memory import MemoryStore

__all__ = ["SharedMemoryStore"]


class SharedMemoryStore(MemoryStore):
    """A memory store with expiring leases and compare-and-set writes, shared by several services in one
    process: what a fleet's Redis or PostgreSQL does, for unit tests and simulations. ``down = True`` makes every
    call fail as an unreachable server does."""

    remote = True

    def __init__(self) -> None:
        super().__init__()
        #: domain -> (holder, published outcome or None, until on the monotonic clock)
        self.leases: dict[str, tuple[str, str | None, float]] = {}
        self.down = False
        self.calls = 0
        self._listeners: list[Callable[[str, str], None]] = []

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreError("shared store: connection refused")

    def get(self, domain: str) -> CacheEntry | None:
        self._check()
        return super().get(domain)

    def put(self, entry: CacheEntry) -> None:
        self._check()
        stored = super().get(entry.domain)
        if stored is None or stored.fetched_at <= entry.fetched_at:
            super().put(entry)

    def put_many(self, entries: Iterable[CacheEntry]) -> None:
        for entry in entries:
            self.put(entry)

    def load_all(self) -> list[CacheEntry]:
        self._check()
        return super().load_all()

    def delete(self, domain: str) -> None:
        self._check()
        super().delete(domain)

    def claim(self, domain: str, owner: str, ttl: float) -> Claim:
        self._check()
        now = time.monotonic()
        held = self.leases.get(domain)
        if held is None or held[2] < now:
            self.leases[domain] = (owner, None, now + ttl)
            return Claim(True)
        return Claim(False, held[1])

    def publish(self, domain: str, owner: str, outcome: str, ttl: float) -> None:
        self._check()
        held = self.leases.get(domain)
        if held is not None and held[0] == owner and held[1] is None:
            self.leases[domain] = ("", outcome, time.monotonic() + ttl)

    def release(self, domain: str, owner: str) -> None:
        self._check()
        held = self.leases.get(domain)
        if held is not None and held[0] == owner and held[1] is None:
            del self.leases[domain]

    def announce(self, domain: str, owner: str) -> None:
        self._check()
        for listener in list(self._listeners):
            listener(domain, owner)

    def listen(self, on_change: Callable[[str, str], None]) -> Callable[[], None]:
        self._listeners.append(on_change)
        return lambda: self._listeners.remove(on_change)
