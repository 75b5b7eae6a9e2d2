"""When to fetch and what to serve: the MTA-STS cache rules as pure functions (RFC 8461 §3.3, §5.1, §10.2).

Vocabulary:

* a *cached policy* is the last policy fetched successfully for a domain, with the TXT ``id`` it was fetched
  under, the time of that fetch (``fetched_at``) and the time the TXT ``id`` was last confirmed
  (``checked_at``);
* it is *usable* until ``fetched_at + max_age`` (STS-D-1). Only a successful fetch moves ``fetched_at``: a TXT
  lookup that finds the same ``id`` confirms the policy is current (``checked_at``) but does not extend its
  life; the proactive refresher refetches the body well before expiry instead (STS-D-5, STS-D-6), so a
  healthy domain never lapses.

Every function takes ``now`` (seconds since the epoch) so tests can walk through time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mxsec.sts.record import RecordSelection
from mxsec.results import ResultType

#: STS-B-11: after a failed fetch, no new attempt for the same domain and id for this long.
FETCH_RETRY_AFTER = 300.0


@dataclass(frozen=True, slots=True)
class CacheTimes:
    """The timing facts of one cached policy."""

    policy_id: str
    fetched_at: float
    expires_at: float
    checked_at: float


def usable(cached: CacheTimes | None, now: float) -> bool:
    """STS-D-1 / STS-B-14: a cached policy applies until ``max_age`` after its last successful fetch."""
    return cached is not None and now < cached.expires_at


class Step(enum.Enum):
    """What a lookup does next, once the TXT record has been read."""

    SERVE_CACHED = "serve-cached"  # the TXT id equals the cached id: no fetch (STS-D-2)
    FETCH = "fetch"  # new id, or nothing cached, or a forced refresh: fetch over HTTPS
    FETCH_HELD_BACK = "fetch-held-back"  # a fetch for this id failed moments ago (STS-B-11)
    NO_POLICY = "no-policy"  # no usable record and nothing usable cached (STS-A-9, STS-B-13)


@dataclass(frozen=True, slots=True)
class FailureMark:
    """A failed fetch, remembered for the rate limit of STS-B-11."""

    policy_id: str
    failed_at: float
    result_type: ResultType
    detail: str


def next_step(
    cached: CacheTimes | None,
    selection: RecordSelection | None,
    now: float,
    *,
    last_failure: FailureMark | None = None,
    force_fetch: bool = False,
    retry_after: float = FETCH_RETRY_AFTER,
) -> Step:
    """Decide the step after the TXT lookup.

    ``selection`` is ``None`` when the lookup itself failed (timeout, SERVFAIL): like a missing record, this
    never removes a usable cached policy (STS-A-10, STS-D-3).
    """
    record = selection.record if selection is not None else None
    if record is None:
        return Step.SERVE_CACHED if usable(cached, now) else Step.NO_POLICY
    if (
        last_failure is not None
        and last_failure.policy_id == record.id
        and now - last_failure.failed_at < retry_after
    ):
        return Step.FETCH_HELD_BACK
    if cached is not None and cached.policy_id == record.id and usable(cached, now) and not force_fetch:
        return Step.SERVE_CACHED
    return Step.FETCH


def after_failed_fetch(cached: CacheTimes | None, now: float) -> bool:
    """STS-B-13 / STS-B-14 / STS-D-4: a failed fetch falls back to a usable cached policy, else to none."""
    return usable(cached, now)


class Refresh(enum.Enum):
    NOTHING = "nothing"
    RECHECK = "recheck"  # look the TXT id up; fetch only if it changed
    REFETCH = "refetch"  # fetch the body whatever the TXT says (EC-19, STS-D-6)


@dataclass(frozen=True, slots=True)
class RefreshTiming:
    recheck_after: float = 3600.0
    force_fetch_after: float = 86400.0


def refresh_due(cached: CacheTimes, now: float, timing: RefreshTiming) -> Refresh:
    """What the proactive refresher (STS-D-5) should do for one cached policy now.

    The body is refetched at least every ``force_fetch_after`` seconds, and in any case once half of the
    policy's lifetime has gone, so that a policy is renewed long before it expires even when ``max_age`` is
    short (STS-D-6). The TXT id is re-checked every ``recheck_after`` seconds, or every quarter of the
    lifetime when that is shorter, so that a new policy is picked up quickly (STS-D-2).
    """
    lifetime = max(cached.expires_at - cached.fetched_at, 0.0)
    age = now - cached.fetched_at
    if age >= min(timing.force_fetch_after, lifetime / 2):
        return Refresh.REFETCH
    if now - cached.checked_at >= min(timing.recheck_after, lifetime / 4):
        return Refresh.RECHECK
    return Refresh.NOTHING
