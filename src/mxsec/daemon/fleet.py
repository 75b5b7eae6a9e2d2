"""One resolution per domain across a fleet of daemons sharing a Redis or PostgreSQL store (docs/fleet.md).

Before a daemon looks a domain's ``_mta-sts`` record up (a miss, a re-check or a refetch), it claims the
domain's lease in the shared store. The daemon that gets it resolves as usual and then either leaves its result
in the store (a policy entry, written compare-and-set) or, when there is no entry to leave (no policy, a failed
fetch), publishes an :class:`Outcome` in the lease's place for as long as that answer holds. The others wait
for the entry or the outcome, polling with a growing pause (20 ms to 250 ms); if the holder dies, its lease
expires and the next claim takes it over. A daemon waits three lease lifetimes at most, then resolves on its
own. A store that fails makes each daemon
resolve on its own: coordination saves work, it is never needed for a correct answer.

A daemon that stores a new policy announces it (Redis pub/sub, PostgreSQL ``NOTIFY``); the others take it from
the store at once when they know the domain (a cached policy or a "no policy" answer), instead of at their next
miss or re-check.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
from dataclasses import dataclass
from collections.abc import Callable
from typing import Literal, TypeVar

from mxsec.results import ResultType
from mxsec.storage.base import Claim, FleetStore, StoreError

T = TypeVar("T")


__all__ = ["Fleet", "Outcome", "owner_name"]

#: the pauses between two looks at a lease someone else holds
FIRST_PAUSE = 0.02
LONGEST_PAUSE = 0.25
#: a daemon waits for the others at most this many lease lifetimes in all, then resolves on its own
WAIT_LEASES = 3
#: the most characters of a note carried in an outcome
MAX_NOTE = 500


def owner_name() -> str:
    """This daemon's name in leases: host, process and a random part (a restarted process is someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Outcome:
    """What the holder of a lease found when it left no policy entry in the store.

    ``none``: no policy applies until ``until`` (no record, a failed look-up or fetch without a cached policy);
    ``kept``: the fetch failed and the cached policy stays (RFC 8461 §5.1). ``failure`` is the RFC 8460 result
    type of the problem and ``policy_id`` the record id it was met under, so that every daemon holds the next
    fetch back as long as the holder does (STS-B-11)."""

    kind: Literal["none", "kept"]
    until: float
    note: str
    failure: ResultType | None = None
    policy_id: str | None = None

    def encode(self) -> str:
        return json.dumps({"kind": self.kind, "until": self.until, "note": self.note[:MAX_NOTE],
                           "failure": self.failure.value if self.failure is not None else None,
                           "policy_id": self.policy_id}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> Outcome | None:
        """The outcome in ``text``, or ``None`` for anything this version does not understand."""
        try:
            doc = json.loads(text)
            kind, until, note = doc["kind"], float(doc["until"]), str(doc["note"])[:MAX_NOTE]
            failure = ResultType(doc["failure"]) if doc.get("failure") is not None else None
            policy_id = doc.get("policy_id")
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if kind not in ("none", "kept") or (policy_id is not None and not isinstance(policy_id, str)):
            return None
        return cls(kind, until, note, failure, policy_id)


def _ignore(*_args: object) -> None:
    pass


class Fleet:
    """The leases of one daemon on its shared store; every call runs in a thread and never raises a store
    error: the caller resolves on its own. Each call reports to ``on_failed(op, exc)`` or ``on_worked()`` (the
    service's one record of the store, which logs one line when the store stops answering and one when it
    answers again, for every kind of call alike)."""

    def __init__(self, store: FleetStore, *, lease: float, owner: str | None = None,
                 on_failed: Callable[[str, Exception], None] = _ignore,
                 on_worked: Callable[[], None] = _ignore) -> None:
        self.store = store
        self.lease = lease
        self.owner = owner or owner_name()
        self.on_failed = on_failed
        self.on_worked = on_worked
        #: lease operations asked of the store
        self.calls = 0

    async def claim(self, domain: str) -> Claim | None:
        """The claim's answer, or ``None`` when the store could not be asked."""
        return await self._call("claim", self.store.claim, domain, self.owner, self.lease)

    async def publish(self, domain: str, outcome: Outcome, ttl: float) -> None:
        await self._call("publish", self.store.publish, domain, self.owner, outcome.encode(), ttl)

    async def release(self, domain: str) -> None:
        await self._call("release", self.store.release, domain, self.owner)

    async def announce(self, domain: str) -> None:
        await self._call("announce", self.store.announce, domain, self.owner)

    async def _call(self, op: str, fn: Callable[..., T], *args: object) -> T | None:
        self.calls += 1
        try:
            result = await asyncio.to_thread(fn, *args)
        except StoreError as exc:
            self.on_failed(op, exc)
            return None
        self.on_worked()
        return result

    def listen(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        """Call ``on_change(domain)`` in the event loop for every policy another daemon announces; returns the
        function that stops listening."""
        loop = asyncio.get_running_loop()
        owner = self.owner

        def heard(domain: str, by: str) -> None:  # in the store's listener thread
            if by != owner:
                loop.call_soon_threadsafe(on_change, domain)

        return self.store.listen(heard)
