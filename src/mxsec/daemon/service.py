"""The policy service: MTA-STS resolution with a cache, single-flight, rate limits and time budgets.

Composition only: the rules live in :mod:`mxsec.sts` (pure), the I/O in :mod:`mxsec.net` and
:mod:`mxsec.storage`, reached through the Protocols of :mod:`mxsec.daemon.ports`. One instance serves the
socketmap server, ``mxsec query`` and the refresher.

* Cached policies live in memory (``self.entries``) in front of the store; the store is written through on
  every change, so a restart, or a ``kill -9``, loses nothing that was ever served.
* Single-flight: concurrent lookups of one domain share one resolution (one TXT lookup, at most one fetch).
* Bounded, fair concurrency: at most ``concurrency`` resolutions run at once, and one client (a socketmap
  connection) at most ``per_client`` of them; waiting clients get freed slots in turn (round robin), so a
  client that floods the daemon with slow names cannot make another client's lookup wait for all of them.
* STS-B-11: after a failed fetch, no new fetch for the same domain and id for ``fail_retry`` seconds.
* Time budget: a caller waits at most ``lookup_timeout`` seconds (queueing for a slot included) and then gets
  a ``TEMP`` verdict (our own back-pressure, not a fetch failure: the MTA retries); the resolution itself goes
  on in the background and its result is cached for the next caller.
* Work nobody waits for is dropped: when every caller of a resolution has gone (its connection closed), the
  resolution is cancelled, unless a refresh asked for it.
* Bounded memory: "no policy" answers, fetch failure marks and DANE decisions are removed once past their
  time (:meth:`PolicyService.sweep`, run by the refresher and the server), each table holds at most
  ``table_limit`` destinations (oldest dropped first), and DANE decisions are renewed in the background only
  for destinations asked within ``asked_ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any, Callable

from mxsec.dane.destination import DaneDecision, disabled_decision, listed, mandatory
from mxsec.daemon.fleet import FIRST_PAUSE, LONGEST_PAUSE, WAIT_LEASES, Fleet, Outcome
from mxsec.daemon.lograte import RateLimitedLog
from mxsec.daemon.ports import PolicySource, ServiceDns
from mxsec.dane.gather import SharedHostFacts, destination_decision
from mxsec.errors import ParseError
from mxsec.storage.base import CacheEntry, FleetStore, PolicyStore
from mxsec.sts.cache import (
    CacheTimes,
    after_failed_fetch,
    FailureMark,
    Refresh,
    RefreshTiming,
    Step,
    next_step,
    refresh_due,
    usable,
)
from mxsec.sts.policy import StsPolicy, parse_policy
from mxsec.sts.record import RecordSelection, select_record
from mxsec.results import ResultType
from mxsec.sts.fetch import result_type_for
from mxsec.verdict import Verdict, VerdictSource

log = logging.getLogger("mxsec.daemon")


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    lookup_timeout: float = 30.0
    concurrency: int = 256
    fail_retry: float = 300.0
    negative_ttl: float = 300.0
    #: how long a DNS lookup error is remembered as "no policy" (kept short: errors are transient)
    error_ttl: float = 30.0
    timing: RefreshTiming = RefreshTiming()
    #: look DANE up (MX, addresses, TLSA with their DNSSEC state) and let it take precedence over MTA-STS
    dane: bool = True
    #: a DANE decision past its DNS TTL is still served (and refreshed in the background) this long
    dane_stale_grace: float = 3600.0
    #: MX hosts examined per destination
    max_mx_hosts: int = 10
    #: destinations that must use DANE (DANE-H-41) / for which DANE is switched off (DANE-H-42);
    #: exact names or ``.parent`` for every subdomain
    dane_mandatory: tuple[str, ...] = ()
    dane_disabled: tuple[str, ...] = ()
    #: resolutions one client (socketmap connection) may have running at once, of ``concurrency``
    per_client: int = 32
    #: destinations each table (negatives, failures, DANE decisions, last asked) holds at most
    table_limit: int = 100_000
    #: a DANE decision is renewed in the background only if its destination was asked within this many seconds
    #: (a memoised answer reaches the service at least once per DNS TTL, which is at most an hour)
    asked_ttl: float = 7200.0
    #: seconds a fleet lease lives (docs/fleet.md): on a shared Redis or PostgreSQL store the daemons resolve
    #: each domain once, the others wait at most this long; 0 switches coordination off
    fleet_lease: float = 20.0


@dataclass(slots=True)
class Cached:
    """A cached policy: the stored entry and its parsed form."""

    entry: CacheEntry
    policy: StsPolicy

    @property
    def times(self) -> CacheTimes:
        e = self.entry
        return CacheTimes(e.policy_id, e.fetched_at, e.expires_at, e.checked_at)


def _times(cached: Cached | None) -> CacheTimes | None:
    return cached.times if cached is not None else None


_NOBODY = object()


class FairPool:
    """At most ``size`` slots in use, at most ``per_client`` per client; a freed slot goes to the waiting client
    that asks least (slots held plus lookups waiting), in turn among equals (round robin), first come first
    served within one client."""

    def __init__(self, size: int, per_client: int) -> None:
        self.size = max(1, size)
        self.per_client = max(1, min(per_client, self.size))
        self.active = 0
        self.by_client: dict[object, int] = {}
        #: clients with waiters, in turn order → their waiting futures
        self.waiting: dict[object, deque] = {}
        self.waiters = 0

    def _free_for(self, client: object) -> bool:
        return self.active < self.size and self.by_client.get(client, 0) < self.per_client

    def _take(self, client: object) -> None:
        self.active += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1

    async def acquire(self, client: object) -> None:
        if client not in self.waiting and self._free_for(client):
            self._take(client)
            return
        fut = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(client, deque()).append(fut)
        self.waiters += 1
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(client)  # granted just as we were cancelled: hand the slot on
            else:
                queue = self.waiting.get(client)
                if queue is not None:
                    try:
                        queue.remove(fut)
                        self.waiters -= 1
                    except ValueError:
                        pass
                    if not queue:
                        del self.waiting[client]
            raise

    def release(self, client: object) -> None:
        self.active -= 1
        n = self.by_client.get(client, 0) - 1
        if n > 0:
            self.by_client[client] = n
        else:
            self.by_client.pop(client, None)
        self._wake()

    def _wake(self) -> None:
        by_client, per_client = self.by_client, self.per_client
        while self.active < self.size and self.waiting:
            # The waiting client that asks least (slots held + lookups waiting) goes first: a client with one
            # lookup — Postfix asks one at a time — is served before clients that pipeline many, however many of
            # those wait; among equals, the one whose turn came longest ago (round robin).
            best = _NOBODY  # (None is a client: the refresher's and ``mxsec query``'s lookups)
            best_load = 0
            for client, queue in self.waiting.items():
                held = by_client.get(client, 0)
                if held >= per_client:
                    continue
                load = held + len(queue)
                if best is _NOBODY or load < best_load:
                    best, best_load = client, load
                    if load == 1:
                        break
            if best is _NOBODY:
                return
            queue = self.waiting.pop(best)
            fut = queue.popleft()
            self.waiters -= 1
            if queue:
                self.waiting[best] = queue  # to the back of the turn order
            if fut.done():  # cancelled while waiting
                continue
            self._take(best)
            fut.set_result(None)


class PolicyService:
    def __init__(
        self,
        *,
        dns: ServiceDns,
        fetcher: PolicySource,
        store: PolicyStore,
        settings: ServiceSettings = ServiceSettings(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dns = dns
        self.fetcher = fetcher
        self.store = store
        self.settings = settings
        self.clock = clock
        self.entries: dict[str, Cached] = {}
        #: domain → (unix time until which "no policy" stands, verdict to give meanwhile)
        self.negatives: dict[str, tuple[float, Verdict]] = {}
        #: domain → (unix time until which the decision is fresh (DNS TTL), DANE decision)
        self.dane: dict[str, tuple[float, DaneDecision]] = {}
        self._dane_refreshing: set[str] = set()
        #: what DNS said about each MX host (addresses, TLSA), shared by the destinations it serves, for its TTL
        self.dane_hosts = SharedHostFacts(limit=settings.table_limit, clock=clock)
        self.failures: dict[str, FailureMark] = {}
        self.inflight: dict[str, asyncio.Future] = {}
        #: resolution → callers waiting for it; resolutions a refresh (or a caller without budget) waits for
        self._waiters: dict[asyncio.Future, int] = {}
        self._keep: set[asyncio.Future] = set()
        #: domain → unix time it was last asked (by a lookup), oldest first
        self.asked: dict[str, float] = {}
        self._pool = FairPool(settings.concurrency, settings.per_client)
        self.quiet = RateLimitedLog(log)
        #: called with a domain whenever what the service would answer for it changes
        self.listeners: list[Callable[[str], None]] = []
        self.counters: Counter[str] = Counter()
        self.fetch_outcomes: Counter[str] = Counter()
        #: domains whose last policy write failed (the store was down), in order; written again once it works
        self.unsaved: dict[str, None] = {}
        self.store_ok = True
        self.fleet: Fleet | None = None
        self._set_fleet(settings)
        self._stop_listening: Callable[[], None] | None = None
        #: domains another daemon announced a new policy for, to read from the store, in order
        self._announcements: dict[str, None] = {}
        self._announcement_task: asyncio.Future | None = None
        #: domains this daemon waits on another's lease for: an announcement ends the current pause at once
        self._waiting: dict[str, asyncio.Event] = {}

    def _set_fleet(self, settings: ServiceSettings) -> None:
        """Leases on a shared store (Redis, PostgreSQL) when ``fleet_lease`` is on; a local store has none."""
        store = self.store
        if settings.fleet_lease <= 0 or not getattr(store, "remote", False) or not isinstance(store, FleetStore):
            self.fleet = None
        elif self.fleet is None:
            self.fleet = Fleet(store, lease=settings.fleet_lease, on_failed=self._store_failed,
                               on_worked=self._store_worked)
        else:
            self.fleet.lease = settings.fleet_lease

    # -- start-up -------------------------------------------------------------------------------------------
    def load(self) -> int:
        """Fill the memory table from the store; entries that expired or no longer parse are dropped.

        A store that cannot be read (a fleet's Redis or PostgreSQL being down) is logged and the daemon starts
        with an empty table: it resolves afresh rather than not serving at all.
        """
        now = self.clock()
        try:
            stored = self.store.load_all()
        except Exception as exc:
            log.error("cache store unreadable at start; starting empty", extra={"error": str(exc)})
            return 0
        loaded = 0
        for entry in stored:
            cached = self._admit(entry, now)
            if cached is None:
                self._store_sync(self.store.delete, entry.domain)
                continue
            self.entries[entry.domain] = cached
            loaded += 1
        return loaded

    @staticmethod
    def _admit(entry: CacheEntry, now: float) -> Cached | None:
        """A stored entry as a usable cached policy, or ``None`` (expired, or no longer parses)."""
        if entry.expires_at <= now:
            return None
        try:
            return Cached(entry, parse_policy(entry.body))
        except ParseError:
            return None

    def reconfigure(self, *, dns=None, fetcher=None, settings: ServiceSettings | None = None) -> None:
        if dns is not None:
            self.dns = dns
        if fetcher is not None:
            self.fetcher = fetcher
        if settings is not None:
            if (settings.concurrency, settings.per_client) != (self.settings.concurrency, self.settings.per_client):
                self._pool = FairPool(settings.concurrency, settings.per_client)
            self.settings = settings
            self._set_fleet(settings)
        self.negatives.clear()
        for domain in list(self.entries):
            self._changed(domain)

    # -- answers ---------------------------------------------------------------------------------------------
    def cached_verdict(self, domain: str, now: float | None = None) -> Verdict | None:
        """The answer known without any I/O, or ``None`` when a resolution is needed."""
        now = self.clock() if now is None else now
        sts = self._cached_sts(domain, now)
        if sts is None or not self.settings.dane:
            return sts
        known = self.dane.get(domain)
        if known is None:
            return None
        until, decision = known
        if now >= until:
            if now >= until + self.settings.dane_stale_grace:
                return None
            self._refresh_dane_soon(domain)  # serve the stale decision, renew it in the background
        return self._compose(sts, decision, until)

    def _cached_sts(self, domain: str, now: float) -> Verdict | None:
        cached = self.entries.get(domain)
        if cached is not None and now < cached.entry.expires_at:
            return self._verdict(cached, "cache")
        negative = self.negatives.get(domain)
        if negative is not None:
            if now < negative[0]:
                return negative[1]
            del self.negatives[domain]
        return None

    @staticmethod
    def _compose(sts: Verdict, decision: DaneDecision | None, dane_until: float | None) -> Verdict:
        """DANE > MTA-STS > none (RFC 8461 §2, STS-G-1)."""
        if decision is None:
            return sts
        expires = sts.expires_at
        if dane_until is not None:
            expires = dane_until if expires is None else min(expires, dane_until)
        notes = sts.notes
        temp = None
        if decision.applies:
            notes = (f"DANE applies ({decision.level}): {decision.reason}; MTA-STS not consulted",) + notes
        elif decision.level == "temp":
            temp = decision.reason
            notes = (f"DANE state unknown: {decision.reason}",) + notes
        elif decision.level == "off":
            notes = (decision.reason,) + notes
        return replace(sts, dane=decision, expires_at=expires, temp_reason=temp, notes=notes)

    async def lookup(self, domain: str, client: object = None) -> Verdict:
        """The verdict for ``domain``: from memory when known, else resolved within the time budget.

        ``client`` identifies the asker (a socketmap connection) for the fair share of resolution slots."""
        now = self.clock()
        asked = self.asked
        if asked.pop(domain, None) is None and len(asked) >= self.settings.table_limit:
            del asked[next(iter(asked))]
        asked[domain] = now
        verdict = self.cached_verdict(domain, now)
        if verdict is not None:
            self.counters["cache_hits"] += 1
            return verdict
        self.counters["cache_misses"] += 1
        return await self.resolve(domain, wait=self.settings.lookup_timeout, client=client)

    async def resolve(self, domain: str, *, force_fetch: bool = False, wait: float | None = None,
                      client: object = None) -> Verdict:
        """Resolve now (single-flight). With ``wait``, give up waiting after that many seconds: the answer is
        then a ``TEMP`` verdict and the resolution goes on. Without ``wait`` (a refresh), the resolution is kept
        even if every other caller goes away."""
        fut = self.inflight.get(domain)
        if fut is None:
            fut = asyncio.ensure_future(self._resolve(domain, force_fetch, client))
            self.inflight[domain] = fut

            def _done(f: asyncio.Future, domain=domain) -> None:
                if self.inflight.get(domain) is f:
                    del self.inflight[domain]
                self._waiters.pop(f, None)
                self._keep.discard(f)
                if not f.cancelled() and f.exception() is not None:
                    log.error("resolution crashed", extra={"domain": domain, "error": repr(f.exception())})

            fut.add_done_callback(_done)
        else:
            self.counters["single_flight_joins"] += 1
        waiters = self._waiters
        waiters[fut] = waiters.get(fut, 0) + 1
        if wait is None:
            self._keep.add(fut)
        gone = False
        try:
            if wait is None:
                return await asyncio.shield(fut)
            return await asyncio.wait_for(asyncio.shield(fut), wait)
        except asyncio.TimeoutError:
            self.counters["lookup_timeouts"] += 1
            self.quiet.log(
                logging.WARNING, "budget",
                "lookup exceeded its time budget; answered TEMP, resolution continues",
                domain=domain, budget=wait,
            )
            return self.budget_verdict(domain, f"policy lookup still running after {wait:g}s")
        except asyncio.CancelledError:
            gone = True
            raise
        finally:
            left = waiters.get(fut, 0) - 1
            if left > 0:
                waiters[fut] = left
            else:
                waiters.pop(fut, None)
                if gone and not fut.done() and fut not in self._keep:
                    # Every caller has gone (their connections closed): nobody waits for this work any more.
                    # Out of the single-flight table at once: a new caller starts afresh, never joins a cancelled one.
                    if self.inflight.get(domain) is fut:
                        del self.inflight[domain]
                    fut.cancel()
                    self.counters["resolutions_cancelled"] += 1

    def budget_verdict(self, domain: str, why: str) -> Verdict:
        """The answer when our own limits (time budget, back-pressure), not the domain, stop a lookup: TEMP,
        so the MTA retries later; never "no policy", which would let an attacker downgrade a destination by
        keeping the daemon busy (RFC 8461 §3.3's "as if no policy" is for failed fetches)."""
        self.counters["budget_temps"] += 1
        return Verdict(domain, source="none", temp_reason=why + "; try again later",
                       notes=(f"{why}; answered TEMP (our own limit, not a fetch failure)",))

    # -- the resolution ------------------------------------------------------------------------------------
    async def _resolve(self, domain: str, force_fetch: bool, client: object = None) -> Verdict:
        pool = self._pool
        await pool.acquire(client)
        try:
            if self.settings.dane:
                # MTA-STS and DANE side by side: one extra task rather than a gather (two tasks and a future).
                dane = asyncio.ensure_future(self._resolve_dane(domain))
                try:
                    sts = await self._resolve_sts(domain, force_fetch)
                    await dane
                except BaseException:
                    dane.cancel()
                    raise
                known = self.dane.get(domain)
                return self._compose(sts, known[1], known[0]) if known else sts
            return await self._resolve_sts(domain, force_fetch)
        finally:
            pool.release(client)

    async def _resolve_sts(self, domain: str, force_fetch: bool) -> Verdict:
        try:
            return await self._resolve_now(domain, force_fetch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an adapter failure: never take the daemon down
            log.exception("resolution failed", extra={"domain": domain})
            cached = self.entries.get(domain)
            if cached is not None and usable(cached.times, self.clock()):
                return self._verdict(cached, "cache", note=f"internal error ({exc!r}); kept cached policy")
            return Verdict(domain, notes=(f"internal error: {exc!r}",))

    # -- DANE (RFC 7672 §2.2) --------------------------------------------------------------------------------
    async def _resolve_dane(self, domain: str) -> DaneDecision:
        try:
            decision = await self._dane_now(domain)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("DANE resolution failed", extra={"domain": domain})
            decision = DaneDecision("temp", f"internal error: {exc!r}", ttl=30)
        now = self.clock()
        dane = self.dane
        old = dane.pop(domain, None)
        if old is None and len(dane) >= self.settings.table_limit:
            del dane[next(iter(dane))]
            self.counters["table_evictions"] += 1
        dane[domain] = (now + decision.ttl, decision)
        if (old is None or old[1].level != decision.level or old[1].reason != decision.reason
                or old[1].mx_hosts != decision.mx_hosts):  # strict MX-name answers list the MX hosts
            if decision.level == "temp":
                # rate-limited: anyone can ask for names whose DNS never answers
                self.quiet.log(logging.WARNING, "dane-temp", "DANE state of destination unknown; deferring",
                               domain=domain, reason=decision.reason, alert=True)
            self._changed(domain)
        return decision

    async def _dane_now(self, domain: str) -> DaneDecision:
        if listed(domain, self.settings.dane_disabled):
            return disabled_decision()
        decision = await destination_decision(self.dns, domain, self.settings.max_mx_hosts, self.dane_hosts)
        if listed(domain, self.settings.dane_mandatory):
            return mandatory(decision)
        return decision

    def _refresh_dane_soon(self, domain: str) -> None:
        if domain in self._dane_refreshing:
            return
        self._dane_refreshing.add(domain)

        async def run() -> None:
            pool = self._pool
            try:
                await pool.acquire("dane-refresh")
                try:
                    await self._resolve_dane(domain)
                finally:
                    pool.release("dane-refresh")
            finally:
                self._dane_refreshing.discard(domain)

        asyncio.ensure_future(run())

    def warm_dane(self) -> int:
        """After start-up: look DANE up in the background for every cached policy's domain."""
        if not self.settings.dane:
            return 0
        for domain in list(self.entries):
            self._refresh_dane_soon(domain)
        return len(self.entries)

    def refresh_dane_due(self, within: float = 60.0) -> int:
        """Proactively renew DANE decisions that expire within ``within`` seconds (refresher), for destinations
        that still have a policy or a "no policy" answer and were asked within ``asked_ttl``; the others are
        dropped (asked again, they are resolved again). Sweeps the tables first. Returns the renewals started."""
        now = self.clock()
        self.sweep(now)
        recent = now - self.settings.asked_ttl
        asked, entries, negatives = self.asked, self.entries, self.negatives
        due = [(d, until) for d, (until, _) in self.dane.items() if until - now <= within]
        renewed = 0
        for domain, until in due:
            if asked.get(domain, -1.0) >= recent and (
                domain in entries
                # a "no policy" answer that ends first brings a full resolution anyway: no renewal for it
                or (domain in negatives and negatives[domain][0] > until)
            ):
                self._refresh_dane_soon(domain)
                renewed += 1
            else:
                del self.dane[domain]
        return renewed

    def sweep(self, now: float | None = None) -> int:
        """Remove what is past its time: "no policy" answers, fetch failure marks no longer holding a fetch
        back, DANE decisions too old to be served even stale or with nothing to be served with, destinations not
        asked within ``asked_ttl``.
        Returns the number of entries removed."""
        now = self.clock() if now is None else now
        removed = 0
        negatives = self.negatives
        gone = [d for d, (until, _) in negatives.items() if until <= now]
        for domain in gone:
            del negatives[domain]
        removed += len(gone)
        retry = self.settings.fail_retry
        failures = self.failures
        gone = [d for d, mark in failures.items() if mark.failed_at + retry <= now]
        for domain in gone:
            del failures[domain]
        removed += len(gone)
        # A DANE decision is only ever served next to a policy or a "no policy" answer (cached_verdict): without
        # either (and no resolution under way) it is dead weight; with one, it goes once too old even for stale use.
        grace = self.settings.dane_stale_grace
        dane, entries, inflight, refreshing = self.dane, self.entries, self.inflight, self._dane_refreshing
        gone = [d for d, (until, _) in dane.items()
                if d not in refreshing and d not in inflight
                and (until + grace <= now or (d not in entries and d not in negatives))]
        for domain in gone:
            del dane[domain]
        removed += len(gone)
        # Last-asked times matter only for destinations that have a policy or a "no policy" answer (their DANE
        # decision may be renewed) or are being resolved; the others, and those asked too long ago, go.
        asked = self.asked
        oldest = now - self.settings.asked_ttl
        gone = [d for d, at in asked.items()
                if at < oldest or (d not in entries and d not in negatives and d not in inflight)]
        for domain in gone:
            del asked[domain]
        removed += len(gone)
        removed += self.dane_hosts.sweep(now)
        self.counters["swept"] += removed
        return removed

    def table_sizes(self) -> dict[str, int]:
        return {"policies": len(self.entries), "negatives": len(self.negatives), "failures": len(self.failures),
                "dane": len(self.dane), "dane_hosts": len(self.dane_hosts), "asked": len(self.asked),
                "inflight": len(self.inflight), "unsaved": len(self.unsaved)}

    async def _resolve_now(self, domain: str, force_fetch: bool) -> Verdict:
        fleet = self.fleet
        if fleet is None:
            return await self._resolve_here(domain, force_fetch)
        return await self._resolve_in_fleet(fleet, domain, force_fetch)

    # -- a fleet on one shared store (daemon/fleet.py, docs/fleet.md) ----------------------------------------
    async def _resolve_in_fleet(self, fleet: Fleet, domain: str, force_fetch: bool) -> Verdict:
        """Resolve ``domain`` once for the whole fleet: take over what another daemon stored or published, or
        take the lease and resolve; after waiting :data:`~mxsec.daemon.fleet.WAIT_LEASES` leases, resolve here
        anyway."""
        known = self.entries.get(domain)
        verdict = await self._adopt_stored(domain, known, force_fetch)
        if verdict is not None:
            return verdict
        loop = asyncio.get_running_loop()
        # A lease expires by itself, so a dead holder is replaced by the next claim (ours or another waiter's);
        # waiting is still bounded, in case the store keeps answering "busy".
        deadline = loop.time() + WAIT_LEASES * fleet.lease
        waker = self._waiting[domain] = asyncio.Event()
        try:
            return await self._wait_in_fleet(fleet, domain, known, force_fetch, deadline, waker)
        finally:
            if self._waiting.get(domain) is waker:
                del self._waiting[domain]

    async def _wait_in_fleet(self, fleet: Fleet, domain: str, known: Cached | None, force_fetch: bool,
                             deadline: float, waker: asyncio.Event) -> Verdict:
        """Claim the lease until it is ours, an outcome or a stored policy is there to take, or ``deadline``;
        the pauses between claims grow from 20 to 250 ms and end early when the holder announces its policy."""
        loop = asyncio.get_running_loop()
        pause = FIRST_PAUSE
        while True:
            claim = await fleet.claim(domain)
            if claim is None:  # the store does not answer: every daemon on its own
                self.counters["fleet_store_errors"] += 1
                break
            if claim.held:
                shared = False
                try:
                    # the previous holder may have stored its result and released the lease just now
                    verdict = await self._adopt_stored(domain, known, force_fetch)
                    if verdict is not None:
                        self.counters["fleet_follows"] += 1
                        await fleet.release(domain)
                        shared = True
                        return verdict
                    self.counters["fleet_leads"] += 1
                    verdict = await self._resolve_here(domain, force_fetch, read_store=False)
                    await self._share(fleet, domain, verdict)
                    shared = True
                    return verdict
                finally:
                    if not shared:  # cancelled or failed: let the next daemon take over at once
                        asyncio.ensure_future(fleet.release(domain))
            outcome = Outcome.decode(claim.outcome) if claim.outcome is not None else None
            if outcome is not None:
                self.counters["fleet_follows"] += 1
                return self._follow(domain, outcome)
            if loop.time() >= deadline:
                self.counters["fleet_wait_timeouts"] += 1
                break
            try:  # the holder announcing the policy it stored ends the pause at once
                await asyncio.wait_for(waker.wait(), pause)
            except TimeoutError:
                pass
            waker.clear()
            pause = min(pause * 2, LONGEST_PAUSE)
            verdict = await self._adopt_stored(domain, known, force_fetch)
            if verdict is not None:
                self.counters["fleet_follows"] += 1
                return verdict
        return await self._resolve_here(domain, force_fetch, read_store=False)

    async def _adopt_stored(self, domain: str, known: Cached | None, force_fetch: bool) -> Verdict | None:
        """The verdict from the shared store's entry when it is newer than what this daemon knows (checked
        later, and for a refetch fetched later); ``None`` when there is nothing newer to take."""
        stored = await self._store_async(self.store.get, domain)
        if stored is None:
            return None
        now = self.clock()
        candidate = self._admit(stored, now)
        if candidate is None:
            return None
        if known is not None:
            old = known.entry
            if stored.checked_at <= old.checked_at or stored.fetched_at < old.fetched_at:
                return None
            if force_fetch and stored.fetched_at <= old.fetched_at:
                return None
        self.entries[domain] = candidate
        self.negatives.pop(domain, None)
        self.failures.pop(domain, None)
        self._changed(domain)
        if known is None and force_fetch:
            return None
        self.counters["store_hits"] += 1
        note = "found in the shared cache store" if known is None else "refreshed by another daemon of the fleet"
        return self._verdict(candidate, "cache", note=note)

    async def _share(self, fleet: Fleet, domain: str, verdict: Verdict) -> None:
        """Leave what this resolution found to the other daemons: a policy entry is already in the store (the
        lease is released); "no policy" and a failed fetch are published in the lease's place while they hold."""
        now = self.clock()
        mark = self.failures.get(domain) if verdict.failure is not None else None
        policy_id = mark.policy_id if mark is not None else None
        outcome: Outcome | None = None
        if verdict.temp_reason is None and verdict.source == "none" and verdict.expires_at is not None:
            outcome = Outcome("none", verdict.expires_at, verdict.notes[0] if verdict.notes else "",
                              verdict.failure, policy_id)
        elif verdict.source == "cache" and mark is not None:
            outcome = Outcome("kept", mark.failed_at + self.settings.fail_retry, verdict.notes[-1],
                              verdict.failure, policy_id)
        if outcome is not None and outcome.until > now:
            await fleet.publish(domain, outcome, outcome.until - now)
        else:
            await fleet.release(domain)

    def _follow(self, domain: str, outcome: Outcome) -> Verdict:
        """The verdict for an outcome another daemon of the fleet published (held no longer than this daemon's
        own settings would hold it, whatever the store says)."""
        now = self.clock()
        longest = max(self.settings.negative_ttl, self.settings.fail_retry, self.settings.error_ttl)
        if outcome.until > now + longest:
            outcome = replace(outcome, until=now + longest)
        note = f"{outcome.note} (found by another daemon of the fleet)"
        if outcome.failure is not None and outcome.policy_id is not None:
            self._mark_failure(domain, FailureMark(outcome.policy_id, outcome.until - self.settings.fail_retry,
                                                   outcome.failure, outcome.note))
        cached = self.entries.get(domain)
        if outcome.kind == "kept" and cached is not None and usable(cached.times, now):
            return self._verdict(cached, "cache", note=note, failure=outcome.failure)
        return self._negative(domain, now, outcome.until - now, note, failure=outcome.failure)

    def start_listening(self) -> None:
        """Take the policies other daemons of the fleet announce (call once the event loop runs)."""
        if self.fleet is not None and self._stop_listening is None:
            self._stop_listening = self.fleet.listen(self._announced)

    def _announced(self, domain: str) -> None:
        """Another daemon stored a new policy for ``domain``: read it now if this daemon serves the domain (or
        waits for it)."""
        waker = self._waiting.get(domain)
        if waker is not None:
            waker.set()  # its wait loop reads the store itself
            return
        if domain not in self.entries and domain not in self.negatives:
            return  # unknown here: the store is read at its first miss anyway
        changes = self._announcements
        if domain not in changes and len(changes) >= self.settings.table_limit:
            self.counters["table_evictions"] += 1
            return
        changes[domain] = None
        if self._announcement_task is None:
            self._announcement_task = asyncio.ensure_future(self._take_announced())

    async def _take_announced(self) -> None:
        try:
            while self._announcements:
                domain = next(iter(self._announcements))
                del self._announcements[domain]
                if domain in self.inflight:
                    continue  # resolved here right now: it reads the store too
                if await self._adopt_stored(domain, self.entries.get(domain), False) is not None:
                    self.counters["fleet_announced"] += 1
        finally:
            self._announcement_task = None

    def _mark_failure(self, domain: str, mark: FailureMark) -> None:
        failures = self.failures
        if failures.pop(domain, None) is None and len(failures) >= self.settings.table_limit:
            del failures[next(iter(failures))]
            self.counters["table_evictions"] += 1
        failures[domain] = mark

    async def _resolve_here(self, domain: str, force_fetch: bool, *, read_store: bool = True) -> Verdict:
        if read_store and domain not in self.entries:
            # Another daemon sharing this store (a fleet) may have fetched the policy already.
            stored = await self._store_async(self.store.get, domain)
            cached = self._admit(stored, self.clock()) if stored is not None else None
            if cached is not None:
                self.entries[domain] = cached
                self.negatives.pop(domain, None)
                self._changed(domain)
                if not force_fetch:
                    self.counters["store_hits"] += 1
                    return self._verdict(cached, "cache", note="found in the shared cache store")
        self.counters["resolutions"] += 1
        txt = await self.dns.txt("_mta-sts." + domain)
        now = self.clock()
        cached = self.entries.get(domain)
        selection: RecordSelection | None
        if txt.status == "ok":
            selection = select_record(list(txt.records))
        elif txt.status in ("nxdomain", "nodata"):
            selection = RecordSelection(None, "no-record")
        else:
            selection = None
        step = next_step(
            _times(cached),
            selection,
            now,
            last_failure=self.failures.get(domain),
            force_fetch=force_fetch,
            retry_after=self.settings.fail_retry,
        )

        if step is Step.SERVE_CACHED:
            assert cached is not None
            if selection is not None and selection.record is not None:
                # STS-D-2: same id, the cached policy is current.
                cached.entry = replace(cached.entry, checked_at=now)
                await self._persist(cached.entry)
                return self._verdict(cached, "cache", note=f"TXT id {selection.record.id} unchanged")
            why = txt.error if selection is None else selection.problem
            # STS-A-10 / STS-D-3: a missing or broken TXT record does not remove a usable cached policy.
            return self._verdict(cached, "cache", note=f"TXT record unusable ({why}); cached policy kept")

        if step is Step.NO_POLICY:
            if cached is not None:  # present but expired: useless from now on
                await self._forget(domain)
            if selection is None:
                note = f"TXT lookup for _mta-sts.{domain} failed: {txt.error}"
                return self._negative(domain, now, self.settings.error_ttl, note)
            what = {"no-record": "no _mta-sts TXT record"}.get(selection.problem or "", selection.problem)
            return self._negative(domain, now, self.settings.negative_ttl, f"no MTA-STS policy: {what}")

        if step is Step.FETCH_HELD_BACK:
            mark = self.failures[domain]
            note = (
                f"fetch for id {mark.policy_id} failed {now - mark.failed_at:.0f}s ago ({mark.detail}); "
                "not retried yet (RFC 8461 §3.3)"
            )
            if cached is not None and usable(cached.times, now):
                return self._verdict(cached, "cache", note=note, failure=mark.result_type)
            until = mark.failed_at + self.settings.fail_retry
            return self._negative(domain, now, until - now, note, failure=mark.result_type)

        # Step.FETCH
        assert selection is not None and selection.record is not None
        record = selection.record
        outcome = await self.fetcher.fetch(domain)
        now = self.clock()
        if outcome.ok:
            body = outcome.body
            assert body is not None  # ok: the fetch gave a body
            try:
                policy = parse_policy(body)
            except ParseError as exc:
                return self._fetch_failed(domain, record.id, now, ResultType.STS_POLICY_INVALID,
                                          f"policy invalid: {exc}")
            entry = CacheEntry(
                domain=domain,
                policy_id=record.id,
                body=body.decode("utf-8"),
                fetched_at=now,
                expires_at=now + policy.max_age,
                checked_at=now,
                mode=policy.mode,
            )
            fresh = Cached(entry, policy)
            changed = cached is None or cached.entry.body != entry.body or cached.entry.policy_id != record.id
            self.entries[domain] = fresh
            self.failures.pop(domain, None)
            self.negatives.pop(domain, None)
            await self._persist(entry)
            self.fetch_outcomes["ok"] += 1
            if changed and self.fleet is not None:
                await self.fleet.announce(domain)
            if changed:
                log.info(
                    "policy fetched",
                    extra={"domain": domain, "policy_id": record.id, "mode": policy.mode, "max_age": policy.max_age},
                )
            for warning in policy.warnings:
                log.warning("policy accepted with a warning", extra={"domain": domain, "warning": warning})
            self._changed(domain)
            return self._verdict(fresh, "fetched")
        problem = outcome.problem
        result_type = result_type_for(problem) if problem is not None else ResultType.STS_POLICY_FETCH_ERROR
        return self._fetch_failed(domain, record.id, now, result_type, outcome.detail)

    def _fetch_failed(self, domain: str, policy_id: str, now: float, result_type: ResultType, detail: str) -> Verdict:
        self.fetch_outcomes[result_type.value] += 1
        self._mark_failure(domain, FailureMark(policy_id, now, result_type, detail))
        cached = self.entries.get(domain)
        keep = after_failed_fetch(_times(cached), now)
        extra: dict[str, object] = {"domain": domain, "policy_id": policy_id, "result_type": result_type.value,
                                    "detail": detail}
        if keep:
            assert cached is not None
            extra["expires_in"] = round(cached.entry.expires_at - now)
            # STS-D-7: alert, unless the cached policy is mode none.
            level = logging.INFO if cached.policy.mode == "none" else logging.WARNING
            extra["alert"] = level == logging.WARNING
            log.log(level, "policy fetch failed; cached policy kept", extra=extra)
            return self._verdict(cached, "cache", note=f"fetch failed ({detail}); cached policy kept",
                                 failure=result_type)
        log.warning("policy fetch failed; no cached policy, delivering without MTA-STS", extra=extra)
        return self._negative(domain, now, self.settings.fail_retry, f"policy fetch failed: {detail}",
                              failure=result_type)

    # -- helpers ------------------------------------------------------------------------------------------
    def _verdict(self, cached: Cached, source: VerdictSource, *, note: str | None = None,
                 failure: ResultType | None = None) -> Verdict:
        e = cached.entry
        notes = [f"MTA-STS policy id {e.policy_id}, mode {cached.policy.mode}, "
                 f"fetched {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(e.fetched_at))}"]
        if note:
            notes.append(note)
        return Verdict(
            domain=e.domain,
            policy=cached.policy,
            policy_id=e.policy_id,
            source=source,
            expires_at=e.expires_at,
            failure=failure,
            notes=tuple(notes),
        )

    def _negative(self, domain: str, now: float, ttl: float, note: str, failure: ResultType | None = None) -> Verdict:
        until = now + max(ttl, 0.0)
        verdict = Verdict(domain, source="none", expires_at=until, failure=failure, notes=(note,))
        negatives = self.negatives
        if negatives.pop(domain, None) is None and len(negatives) >= self.settings.table_limit:
            del negatives[next(iter(negatives))]  # the oldest answer
            self.counters["table_evictions"] += 1
        negatives[domain] = (until, verdict)
        self._changed(domain)
        return verdict

    def _store_sync(self, fn, *args):
        return self._store_result(fn, *args)[1]

    async def _store_async(self, fn, *args):
        """Run a store call; remote stores (Redis, PostgreSQL) run in a thread so the loop never blocks."""
        return (await self._store_call(fn, *args))[1]

    async def _store_call(self, fn, *args) -> tuple[bool, Any]:
        """``(True, result)`` of a store call, or ``(False, None)`` when it failed (logged once per outage)."""
        if getattr(self.store, "remote", False):
            self.counters["store_calls"] += 1
            try:
                result = await asyncio.to_thread(fn, *args)
            except Exception as exc:
                self._store_failed(getattr(fn, "__name__", "?"), exc)
                return False, None
            self._store_worked()
            return True, result
        return self._store_result(fn, *args)

    def _store_result(self, fn, *args) -> tuple[bool, Any]:
        self.counters["store_calls"] += 1
        try:
            result = fn(*args)
        except Exception as exc:
            self._store_failed(getattr(fn, "__name__", "?"), exc)
            return False, None
        self._store_worked()
        return True, result

    def _store_failed(self, op: str, exc: Exception) -> None:
        """Every failed store call, policy reads and writes and fleet leases alike: counted; one log line when
        the store stops answering (each daemon then resolves on its own and keeps its writes)."""
        self.counters["store_errors"] += 1
        if self.store_ok:
            self.store_ok = False
            log.error("cache store unavailable; serving from memory, writes kept for later",
                      extra={"op": op, "error": str(exc)})

    def _store_worked(self) -> None:
        if not self.store_ok:
            self.store_ok = True
            log.warning("cache store available again", extra={"unsaved": len(self.unsaved)})
            if self.unsaved:
                try:
                    asyncio.get_running_loop()
                except RuntimeError:
                    return  # at start (load): the refresher's first round writes them
                asyncio.ensure_future(self.flush_unsaved())

    async def flush_unsaved(self) -> int:
        """Write the policies whose writes failed while the store was down (as soon as a store call works again,
        and in every refresher round while some are left); returns how many were written."""
        domains = [d for d in self.unsaved if d in self.entries]
        if not domains:
            self.unsaved.clear()
            return 0
        ok, _ = await self._store_call(self.store.put_many, [self.entries[d].entry for d in domains])
        if not ok:
            return 0
        for domain in domains:
            self.unsaved.pop(domain, None)
        log.info("policy writes replayed to the cache store", extra={"policies": len(domains)})
        return len(domains)

    async def _persist(self, entry: CacheEntry) -> None:
        # Written before the answer is served: a crash right after serving loses nothing. A failing store is
        # logged; the policy stays cached in memory and keeps being served.
        ok, _ = await self._store_call(self.store.put, entry)
        if not ok:
            unsaved = self.unsaved
            if unsaved.pop(entry.domain, None) is None and len(unsaved) >= self.settings.table_limit:
                del unsaved[next(iter(unsaved))]
                self.counters["table_evictions"] += 1
            unsaved[entry.domain] = None
        elif self.unsaved:
            await self.flush_unsaved()

    async def _forget(self, domain: str) -> None:
        self.entries.pop(domain, None)
        await self._store_async(self.store.delete, domain)
        self._changed(domain)

    def _changed(self, domain: str) -> None:
        for listener in self.listeners:
            listener(domain)

    # -- proactive refresh (STS-D-5..D-7) -----------------------------------------------------------------
    def due_for_refresh(self, now: float | None = None) -> list[tuple[str, Refresh]]:
        now = self.clock() if now is None else now
        due: list[tuple[str, Refresh]] = []
        for domain, cached in self.entries.items():
            if domain in self.inflight:
                continue
            action = refresh_due(cached.times, now, self.settings.timing)
            if action is not Refresh.NOTHING:
                due.append((domain, action))
        return due

    async def expire(self, now: float | None = None) -> list[str]:
        """Drop cached policies past their lifetime (they can no longer be served)."""
        now = self.clock() if now is None else now
        gone = [d for d, c in self.entries.items() if c.entry.expires_at <= now and d not in self.inflight]
        for domain in gone:
            log.warning("cached policy expired without a successful refresh",
                        extra={"domain": domain, "alert": True})
            await self._forget(domain)
        return gone

    async def aclose(self) -> None:
        if self._stop_listening is not None:
            stop, self._stop_listening = self._stop_listening, None
            await asyncio.to_thread(stop)
        if self._announcement_task is not None:
            self._announcement_task.cancel()
        pending = list(self.inflight.values())
        for fut in pending:
            fut.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
