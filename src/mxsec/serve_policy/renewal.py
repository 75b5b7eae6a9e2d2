"""When serve-policy asks its ACME server for a certificate. Pure: times in, times out.

* A host without a usable certificate is ordered at once.
* A certificate is renewed when a third of its lifetime remains (30 days of a 90-day certificate, 2 days of a
  6-day one), or ``renew_before`` ahead of its expiry when the administrator sets it.
* A failed order is retried after 1 minute, then 2, 4, … up to 6 hours (a tenth of jitter, so a fleet of
  hosts that failed together does not retry together), or later when the server said when (Retry-After).
  The old certificate is served all the while: it is replaced only by a new one that works.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

__all__ = ["RENEW_FRACTION", "HostRenewal", "renewal_due", "retry_delay"]

RENEW_FRACTION = 1 / 3
FIRST_RETRY = 60.0
MAX_RETRY = 6 * 3600.0


def renewal_due(
    not_before: _dt.datetime, not_after: _dt.datetime, *, renew_before: _dt.timedelta | None = None
) -> _dt.datetime:
    """The moment a certificate valid from ``not_before`` to ``not_after`` should be renewed."""
    lifetime = max(not_after - not_before, _dt.timedelta(0))
    margin = renew_before if renew_before is not None else lifetime * RENEW_FRACTION
    return not_after - margin


def retry_delay(
    failures: int,
    *,
    first: float = FIRST_RETRY,
    maximum: float = MAX_RETRY,
    jitter: float = 0.0,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after the ``failures``-th failure in a row; ``jitter`` in [0, 1) shortens it up to 10%."""
    delay = min(first * 2 ** max(failures - 1, 0), maximum) * (1.0 - 0.1 * min(max(jitter, 0.0), 1.0))
    if retry_after is not None:
        delay = max(delay, min(retry_after, 24 * 3600.0))
    return delay


@dataclass
class HostRenewal:
    """What serve-policy knows about one host's certificate and its orders."""

    host: str
    due: _dt.datetime | None = None  # None: no usable certificate, order now
    failures: int = 0
    next_attempt: _dt.datetime | None = None  # set after a failure
    last_error: str = ""

    def wants_order(self, now: _dt.datetime) -> bool:
        if self.next_attempt is not None and now < self.next_attempt:
            return False
        return self.due is None or now >= self.due

    def next_wakeup(self) -> _dt.datetime | None:
        """The earliest moment this host may want an order (None: now)."""
        # a failed order happened because one was wanted: the retry time is the next moment
        return self.next_attempt if self.next_attempt is not None else self.due

    def succeeded(self, not_before: _dt.datetime, not_after: _dt.datetime, *,
                  renew_before: _dt.timedelta | None = None) -> None:
        self.due = renewal_due(not_before, not_after, renew_before=renew_before)
        self.failures = 0
        self.next_attempt = None
        self.last_error = ""

    def failed(self, now: _dt.datetime, error: str, *, first: float = FIRST_RETRY, jitter: float = 0.0,
               retry_after: float | None = None) -> float:
        """Record a failed order; returns the seconds until the next attempt."""
        self.failures += 1
        self.last_error = error
        delay = retry_delay(self.failures, first=first, jitter=jitter, retry_after=retry_after)
        self.next_attempt = now + _dt.timedelta(seconds=delay)
        return delay
