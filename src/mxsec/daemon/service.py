"""The policy service: MTA-STS resolution with a cache, single-flight, rate limits and time budgets.

Composition only: the rules live in :mod:`mxsec.sts` (pure), the I/O in :mod:`mxsec.net` and
:mod:`mxsec.store`. One instance serves the socketmap server, ``mxsec query`` and the refresher.

* Cached policies live in memory (``self.entries``) in front of the store; the store is written through on
  every change, so a restart, or a ``kill -9``, loses nothing that was ever served.
* Single-flight: concurrent lookups of one domain share one resolution (one TXT lookup, at most one fetch).
* Bounded concurrency: at most ``concurrency`` resolutions run at once; the others wait their turn.
* STS-B-11: after a failed fetch, no new fetch for the same domain and id for ``fail_retry`` seconds.
* Time budget: a caller waits at most ``lookup_timeout`` seconds; the resolution itself goes on in the
  background and its result is cached for the next caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable

from mxsec.dane.destination import DaneDecision, disabled_decision, listed, mandatory
from mxsec.dane.gather import destination_decision
from mxsec.errors import ParseError
from mxsec.store.base import CacheEntry, PolicyStore
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
from mxsec.sts.results import result_type_for
from mxsec.verdict import Verdict

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


class PolicyService:
    def __init__(
        self,
        *,
        dns,
        fetcher,
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
        self.failures: dict[str, FailureMark] = {}
        self.inflight: dict[str, asyncio.Future] = {}
        self._sem = asyncio.Semaphore(settings.concurrency)
        #: called with a domain whenever what the service would answer for it changes
        self.listeners: list[Callable[[str], None]] = []
        self.counters: Counter[str] = Counter()
        self.fetch_outcomes: Counter[str] = Counter()

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
            if settings.concurrency != self.settings.concurrency:
                self._sem = asyncio.Semaphore(settings.concurrency)
            self.settings = settings
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

    async def lookup(self, domain: str) -> Verdict:
        """The verdict for ``domain``: from memory when known, else resolved within the time budget."""
        verdict = self.cached_verdict(domain)
        if verdict is not None:
            self.counters["cache_hits"] += 1
            return verdict
        self.counters["cache_misses"] += 1
        return await self.resolve(domain, wait=self.settings.lookup_timeout)

    async def resolve(self, domain: str, *, force_fetch: bool = False, wait: float | None = None) -> Verdict:
        """Resolve now (single-flight). With ``wait``, give up waiting after that many seconds."""
        fut = self.inflight.get(domain)
        if fut is None:
            fut = asyncio.ensure_future(self._resolve(domain, force_fetch))
            self.inflight[domain] = fut

            def _done(f: asyncio.Future, domain=domain) -> None:
                if self.inflight.get(domain) is f:
                    del self.inflight[domain]
                if not f.cancelled() and f.exception() is not None:
                    log.error("resolution crashed", extra={"domain": domain, "error": repr(f.exception())})

            fut.add_done_callback(_done)
        else:
            self.counters["single_flight_joins"] += 1
        if wait is None:
            return await asyncio.shield(fut)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), wait)
        except asyncio.TimeoutError:
            self.counters["lookup_timeouts"] += 1
            log.warning(
                "lookup exceeded its time budget; answered without MTA-STS, resolution continues",
                extra={"domain": domain, "budget": wait},
            )
            return Verdict(
                domain,
                source="none",
                failure="sts-policy-fetch-error",
                notes=(f"resolution still running after {wait:g}s; answered as no policy (RFC 8461 §3.3)",),
            )

    # -- the resolution ------------------------------------------------------------------------------------
    async def _resolve(self, domain: str, force_fetch: bool) -> Verdict:
        async with self._sem:
            if self.settings.dane:
                sts, dane = await asyncio.gather(
                    self._resolve_sts(domain, force_fetch), self._resolve_dane(domain), return_exceptions=True
                )
                if isinstance(sts, BaseException):
                    raise sts
                if isinstance(dane, BaseException):
                    raise dane
                known = self.dane.get(domain)
                return self._compose(sts, known[1], known[0]) if known else sts
            return await self._resolve_sts(domain, force_fetch)

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
        old = self.dane.get(domain)
        self.dane[domain] = (now + decision.ttl, decision)
        if old is None or old[1].level != decision.level or old[1].reason != decision.reason:
            if decision.level == "temp":
                log.warning("DANE state of destination unknown; deferring", extra={"domain": domain,
                            "reason": decision.reason, "alert": True})
            self._changed(domain)
        return decision

    async def _dane_now(self, domain: str) -> DaneDecision:
        if listed(domain, self.settings.dane_disabled):
            return disabled_decision()
        decision = await destination_decision(self.dns, domain, self.settings.max_mx_hosts)
        if listed(domain, self.settings.dane_mandatory):
            return mandatory(decision)
        return decision

    def _refresh_dane_soon(self, domain: str) -> None:
        if domain in self._dane_refreshing:
            return
        self._dane_refreshing.add(domain)

        async def run() -> None:
            try:
                async with self._sem:
                    await self._resolve_dane(domain)
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
        """Proactively renew DANE decisions that expire within ``within`` seconds (refresher)."""
        now = self.clock()
        due = [d for d, (until, _) in self.dane.items() if until - now <= within]
        for domain in due:
            if domain in self.entries or domain in self.negatives:
                self._refresh_dane_soon(domain)
            else:
                del self.dane[domain]
        return len(due)

    async def _resolve_now(self, domain: str, force_fetch: bool) -> Verdict:
        if domain not in self.entries:
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
            note = {"no-record": "no _mta-sts TXT record"}.get(selection.problem or "", selection.problem)
            return self._negative(domain, now, self.settings.negative_ttl, f"no MTA-STS policy: {note}")

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
            try:
                policy = parse_policy(outcome.body)
            except ParseError as exc:
                return self._fetch_failed(domain, record.id, now, "sts-policy-invalid", f"policy invalid: {exc}")
            entry = CacheEntry(
                domain=domain,
                policy_id=record.id,
                body=outcome.body.decode("utf-8"),
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
        result_type = result_type_for(problem).value if problem is not None else "sts-policy-fetch-error"
        return self._fetch_failed(domain, record.id, now, result_type, outcome.detail)

    def _fetch_failed(self, domain: str, policy_id: str, now: float, result_type: str, detail: str) -> Verdict:
        self.fetch_outcomes[result_type] += 1
        self.failures[domain] = FailureMark(policy_id, now, result_type, detail)
        cached = self.entries.get(domain)
        keep = after_failed_fetch(_times(cached), now)
        extra = {"domain": domain, "policy_id": policy_id, "result_type": result_type, "detail": detail}
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
    def _verdict(self, cached: Cached, source: str, *, note: str | None = None, failure: str | None = None) -> Verdict:
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

    def _negative(self, domain: str, now: float, ttl: float, note: str, failure: str | None = None) -> Verdict:
        until = now + max(ttl, 0.0)
        verdict = Verdict(domain, source="none", expires_at=until, failure=failure, notes=(note,))
        self.negatives[domain] = (until, verdict)
        self._changed(domain)
        return verdict

    def _store_sync(self, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:
            log.error("cache store operation failed", extra={"op": fn.__name__, "error": str(exc)})
            return None

    async def _store_async(self, fn, *args):
        """Run a store call; remote stores (Redis, PostgreSQL) run in a thread so the loop never blocks."""
        if getattr(self.store, "remote", False):
            try:
                return await asyncio.to_thread(fn, *args)
            except Exception as exc:
                log.error("cache store operation failed", extra={"op": fn.__name__, "error": str(exc)})
                return None
        return self._store_sync(fn, *args)

    async def _persist(self, entry: CacheEntry) -> None:
        # Written before the answer is served: a crash right after serving loses nothing. A failing store is
        # logged; the policy stays cached in memory and keeps being served.
        await self._store_async(self.store.put, entry)

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
        due = []
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
        pending = list(self.inflight.values())
        for fut in pending:
            fut.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
