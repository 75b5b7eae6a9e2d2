"""When a sender delivers a report and when it tries again (RFC 8460 §4.1, §5.5). Sans-I/O.

- A day's report is due after the day has ended plus a delay drawn per (day, report domain) from
  ``[0, max_delay)``: reporters that all send at 00:00 UTC make receivers' load spike (RFC 8460 §4.1 suggests a
  random delay). The delay is derived from a hash, so every run of ``mxsec tlsrpt send`` agrees on it.
- After a failed attempt the next one waits ``first_retry`` seconds, doubling each time up to ``max_retry``
  (exponential backoff, RFC 8460 §5.5); once ``give_up_after`` seconds have passed since the first attempt
  (24 hours by default, as the RFC suggests) the destination is given up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

__all__ = ["RetryPolicy", "due_time", "next_attempt"]


@dataclass(frozen=True)
class RetryPolicy:
    first_retry: float = 300.0
    max_retry: float = 4 * 3600.0
    give_up_after: float = 24 * 3600.0


def due_time(day: date, domain: str, max_delay: float) -> float:
    """Epoch seconds at which the report of (*day*, *domain*) is first sent."""
    end = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=UTC).timestamp()
    if max_delay <= 0:
        return end
    digest = hashlib.sha256(f"{day.isoformat()}\n{domain}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return end + fraction * max_delay


def next_attempt(first_attempt: float, attempts: int, now: float, policy: RetryPolicy = RetryPolicy()) -> float | None:
    """When to try again after the *attempts*-th failure (counting the one that just failed), or ``None`` to
    give up."""
    if now - first_attempt >= policy.give_up_after:
        return None
    wait: float = min(policy.max_retry, policy.first_retry * 2 ** max(0, attempts - 1))
    when = now + wait
    deadline = first_attempt + policy.give_up_after
    # one last try at the end of the window rather than none at all
    return min(when, deadline) if when > deadline and now < deadline else when
