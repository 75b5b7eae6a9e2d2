"""A shared cache (Redis, PostgreSQL) with a local SQLite copy, so that a daemon restarted while the shared
cache is down still starts with every policy it served (docs/fleet.md, "Failures").

Every write goes to the copy first (local, it does not fail with the network), then to the shared store; every
policy read from the shared store (at start, or one another daemon stored) is written to the copy too, so the
copy holds every policy this daemon may serve. Reads go to the shared store, except
:meth:`MirroredStore.load_all` at start, which reads the copy when the shared store cannot be read. Leases and
announcements are the shared store's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from .base import CacheEntry, Claim, FleetStore, PolicyStore, StoreError
from .sqlite import SqliteStore

log = logging.getLogger("mxsec.storage")

__all__ = ["MirroredStore"]


class MirroredStore:
    """``shared`` with the local SQLite ``copy`` (a :class:`~mxsec.storage.base.PolicyStore` and, when
    ``shared`` is one, a :class:`~mxsec.storage.base.FleetStore`)."""

    #: the shared store goes over the network: the daemon calls this store off the event loop
    remote = True

    def __init__(self, shared: PolicyStore, copy: SqliteStore) -> None:
        self.shared = shared
        self.copy = copy
        #: what the copy holds of each domain (fetch, check, id): a read that finds the same is not written again
        #: (a daemon waiting for another's fetch reads the same entry many times)
        self._copied: dict[str, tuple[float, float, str]] = {}

    @staticmethod
    def _version(entry: CacheEntry) -> tuple[float, float, str]:
        return entry.fetched_at, entry.checked_at, entry.policy_id

    def _remember(self, entries: Iterable[CacheEntry]) -> None:
        for entry in entries:
            self._copied[entry.domain] = self._version(entry)

    def load_all(self) -> list[CacheEntry]:
        try:
            entries = self.shared.load_all()
        except StoreError as exc:
            entries = self.copy.load_all()
            log.error("shared cache unreadable at start; starting from its local copy",
                      extra={"error": str(exc), "policies": len(entries), "copy": self.copy.path})
            return entries
        self.copy.put_many(entries)  # what this daemon starts with is what it can start with next time
        self._remember(entries)
        return entries

    def get(self, domain: str) -> CacheEntry | None:
        entry = self.shared.get(domain)
        # a policy another daemon stored, which this daemon may now serve: into the copy, once per version
        if entry is not None and self._copied.get(domain) != self._version(entry):
            self.copy.put(entry)
            self._remember([entry])
        return entry

    def put(self, entry: CacheEntry) -> None:
        self.copy.put(entry)
        self._remember([entry])
        self.shared.put(entry)

    def put_many(self, entries: Iterable[CacheEntry]) -> None:
        entries = list(entries)
        self.copy.put_many(entries)
        self._remember(entries)
        self.shared.put_many(entries)

    def delete(self, domain: str) -> None:
        self.copy.delete(domain)
        self._copied.pop(domain, None)
        self.shared.delete(domain)

    def close(self) -> None:
        try:
            self.shared.close()
        finally:
            self.copy.close()

    # -- FleetStore: the shared store's ---------------------------------------------------------------------

    def _fleet(self) -> FleetStore:
        if not isinstance(self.shared, FleetStore):  # pragma: no cover - the service checks before calling
            raise StoreError(f"{self.shared!r} has no fleet leases")
        return self.shared

    def claim(self, domain: str, owner: str, ttl: float) -> Claim:
        return self._fleet().claim(domain, owner, ttl)

    def publish(self, domain: str, owner: str, outcome: str, ttl: float) -> None:
        self._fleet().publish(domain, owner, outcome, ttl)

    def release(self, domain: str, owner: str) -> None:
        self._fleet().release(domain, owner)

    def announce(self, domain: str, owner: str) -> None:
        self._fleet().announce(domain, owner)

    def listen(self, on_change: Callable[[str, str], None]) -> Callable[[], None]:
        return self._fleet().listen(on_change)

    def __repr__(self) -> str:
        return f"MirroredStore({self.shared!r}, copy={self.copy.path!r})"
