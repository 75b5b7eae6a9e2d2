"""``mxsec_refresh_overdue_policies`` (mxsec.daemon.metrics.refresh_overdue): cached policies past due for a
refresh by more than one refresher round (alert MxsecRefreshOverdue in contrib/prometheus/mxsec-alerts.yml)."""

from __future__ import annotations

from mxsec.daemon.metrics import REFRESH_ROUND, refresh_overdue
from mxsec.daemon.refresh import Refresher
from mxsec.daemon.service import PolicyService, ServiceSettings
from mxsec.storage.memory import MemoryStore
from mxsec.sts.cache import RefreshTiming
from mxsec.sts.fetch import FetchProblem

from .test_service import ENFORCE, Clock, FakeDns, FakeFetcher, Outcome


def make_service():
    dns, fetcher, clock = FakeDns(), FakeFetcher(), Clock()
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=one"]
    fetcher.outcomes["example.com"] = Outcome(ENFORCE)
    settings = ServiceSettings(lookup_timeout=2.0, timing=RefreshTiming(recheck_after=3600, force_fetch_after=86400))
    return PolicyService(dns=dns, fetcher=fetcher, store=MemoryStore(), settings=settings, clock=clock), dns, \
        fetcher, clock


async def test_due_but_within_one_round_is_not_overdue_then_is_until_refreshed():
    service, dns, fetcher, clock = make_service()
    assert refresh_overdue(service) == 0  # empty cache
    await service.lookup("example.com")
    assert refresh_overdue(service) == 0
    clock.now += 3600 + REFRESH_ROUND - 1  # the TXT re-check is due, for less than a round
    assert service.due_for_refresh() and refresh_overdue(service) == 0
    clock.now += 2  # missed one round
    assert refresh_overdue(service) == 1
    await Refresher(service).run_once()  # the refresher catches up
    assert refresh_overdue(service) == 0
    await service.aclose()


async def test_a_refresh_that_keeps_failing_stays_overdue():
    service, dns, fetcher, clock = make_service()
    await service.lookup("example.com")
    dns.txt_records["_mta-sts.example.com"] = ["v=STSv1; id=two"]  # a new id: a fetch is needed ...
    fetcher.outcomes["example.com"] = Outcome(problem=FetchProblem("http-status"), detail="HTTP 500")  # ... fails
    refresher = Refresher(service)
    for _ in range(3):
        clock.now += 3600 + REFRESH_ROUND + 1
        await refresher.run_once()
    assert fetcher.calls > 1  # it did try again
    clock.now += REFRESH_ROUND + 1
    assert refresh_overdue(service) == 1
    await service.aclose()


class Racing:
    """A service whose cache changes under the scan *failures* times (the scrape runs on another thread)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def clock(self) -> float:
        return 0.0

    def due_for_refresh(self, now: float):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("dictionary changed size during iteration")
        return [("a.example", None), ("b.example", None)]


def test_scan_retried_when_the_cache_changes_and_given_up_after_three():
    assert refresh_overdue(Racing(2)) == 2
    assert refresh_overdue(Racing(3)) is None
