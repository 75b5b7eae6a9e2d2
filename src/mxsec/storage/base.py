"""The policy cache storage interface shared by every backend.

A store keeps one :class:`CacheEntry` per policy domain. It is a plain key-value table: deciding what is fresh,
what to refetch and what to serve is the job of :mod:`mxsec.sts.cache` and the daemon, not of the store.

Stores are synchronous. SQLite is local and each call is one short transaction, so the daemon may call them
from the event loop directly or from a single writer thread; every backend is safe to use from several threads.
Every backend class has a ``remote`` attribute: ``True`` (Redis, PostgreSQL) means calls go over the network and
may block for seconds, so the daemon runs them with ``asyncio.to_thread``; read it with
``getattr(store, "remote", False)`` (it is not part of the protocol, so test doubles need not define it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, runtime_checkable

from ..errors import MxsecError


class StoreError(MxsecError):
    """A store operation failed at run time (disk full, I/O error, database damaged after opening...)."""


@dataclass
class CacheEntry:
    """One cached MTA-STS policy.

    - ``domain``: the policy domain, normalised A-label form (the store does not normalise it).
    - ``policy_id``: the ``id`` of the ``_mta-sts`` TXT record the body was fetched under.
    - ``body``: the policy file text exactly as fetched.
    - ``fetched_at``: unix time of the last successful fetch of the body.
    - ``expires_at``: ``fetched_at + max_age``.
    - ``checked_at``: unix time the TXT record's id was last confirmed unchanged.
    - ``mode``: the policy mode (``enforce``, ``testing``, ``none``), kept for quick listing.
    """

    domain: str
    policy_id: str
    body: str
    fetched_at: float
    expires_at: float
    checked_at: float
    mode: str

    #: column order of the SQL stores' ``mxsec_policy`` table
    COLUMNS = ("domain", "policy_id", "body", "fetched_at", "expires_at", "checked_at", "mode")

    @classmethod
    def from_row(cls, row: tuple) -> "CacheEntry":
        """An entry from a database row in :attr:`COLUMNS` order (times coerced to float)."""
        domain, policy_id, body, fetched_at, expires_at, checked_at, mode = row
        return cls(domain, policy_id, body, float(fetched_at), float(expires_at), float(checked_at), mode)

    def to_row(self) -> tuple:
        """The entry as a database row in :attr:`COLUMNS` order."""
        return (self.domain, self.policy_id, self.body, float(self.fetched_at), float(self.expires_at),
                float(self.checked_at), self.mode)


@runtime_checkable
class PolicyStore(Protocol):
    """What the daemon needs from a cache backend."""

    def load_all(self) -> list[CacheEntry]:
        """Every stored entry (any order)."""
        ...

    def get(self, domain: str) -> CacheEntry | None:
        """The entry for ``domain`` or ``None``."""
        ...

    def put(self, entry: CacheEntry) -> None:
        """Insert or replace the entry for ``entry.domain``; durable when this returns. A shared store (Redis,
        PostgreSQL) keeps a stored entry that was fetched later than ``entry`` (compare-and-set on
        ``fetched_at``), so an older fetch never overwrites a newer policy."""
        ...

    def put_many(self, entries: Iterable[CacheEntry]) -> None:
        """Insert or replace several entries at once (one transaction where the backend has them)."""
        ...

    def delete(self, domain: str) -> None:
        """Forget ``domain``; no error when it is not stored."""
        ...

    def close(self) -> None:
        """Release the backend; calling it twice is harmless."""
        ...


@dataclass(frozen=True)
class Claim:
    """The answer to :meth:`FleetStore.claim`: ``held`` when the caller now holds the lease; otherwise
    ``outcome`` is what the last holder published (``None`` while another daemon still works on it)."""

    held: bool
    outcome: str | None = None


@runtime_checkable
class FleetStore(Protocol):
    """Leases that let the daemons of a fleet resolve each domain once (docs/fleet.md). Redis and PostgreSQL
    stores have them; a lease expires by itself after ``ttl`` seconds, so a daemon that dies while holding one
    delays the others by at most that long."""

    def claim(self, domain: str, owner: str, ttl: float) -> Claim:
        """Take the lease on ``domain`` for ``owner`` unless another daemon holds it or a published outcome is
        still valid."""
        ...

    def publish(self, domain: str, owner: str, outcome: str, ttl: float) -> None:
        """Replace ``owner``'s lease by ``outcome`` (text), which later claims return for ``ttl`` seconds."""
        ...

    def release(self, domain: str, owner: str) -> None:
        """Give the lease up (when the outcome is in the store itself, as a policy entry)."""
        ...

    def announce(self, domain: str, owner: str) -> None:
        """Tell the other daemons that ``owner`` stored a new policy for ``domain`` (best effort)."""
        ...

    def listen(self, on_change: Callable[[str, str], None]) -> Callable[[], None]:
        """Call ``on_change(domain, owner)`` for every announcement, from a thread of the store's own, until the
        returned function is called; the listener connects again by itself after the store was away (what is
        announced meanwhile is missed: each daemon still reads the store at its next miss or re-check)."""
        ...
