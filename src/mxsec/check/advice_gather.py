"""Read what :func:`mxsec.check.advice.advise` needs from the report database: a thin gathering step.

Only read-only aggregate queries of :class:`~mxsec.storage.reportdb.ReportDB`, restricted to the domain's
``sts`` policies and the window of days; no judgement here.
"""

from __future__ import annotations

import datetime as _dt

from mxsec.check.advice import DayPolicy, MxFailure, ReportFigures, SessionCounts
from mxsec.storage.reportdb import Filters, ReportDB

__all__ = ["report_figures", "window"]


def window(today: _dt.date, days: int) -> tuple[_dt.date, _dt.date]:
    """The last ``days`` whole UTC days before ``today``: ``(since, until)``, both inclusive."""
    return today - _dt.timedelta(days=days), today - _dt.timedelta(days=1)


def report_figures(db: ReportDB, domain: str, since: _dt.date, until: _dt.date) -> ReportFigures:
    filters = Filters(since=since, until=until, domain=domain)
    totals = db.totals_by_organization(filters, "sts")
    by_org = {org: SessionCounts(t.successful_sessions, t.failed_sessions) for org, t in totals.items()}
    failures = tuple(MxFailure(host, result_type, org, count, first, last)
                     for host, result_type, org, count, first, last
                     in db.failures_by_mx_and_organization(filters, "sts"))
    days = tuple(DayPolicy(day, ptype, tuple(strings), SessionCounts(t.successful_sessions, t.failed_sessions))
                 for day, ptype, strings, t in db.policies_by_day(filters, "sts"))
    return ReportFigures(since, until, by_org, failures, days, sum(t.reports for t in totals.values()))
