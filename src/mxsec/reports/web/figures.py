"""What each dashboard page shows, gathered from the report database (synchronous: the pages run these in a
worker thread). Every figure is an aggregate SQL query of :class:`~mxsec.storage.reportdb.ReportDB`; nothing
here loops over stored rows.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

from mxsec.storage.reportdb import NO_DOMAIN, Filters, ReportDB, Totals
from mxsec.results import ResultType

from .params import DateRange

#: Reports listed on the overview, domain and reporter pages; the reports page pages by this many.
RECENT_REPORTS = 20
PAGE_SIZE = 50
#: Days of a chart are filled in (gaps shown as gaps) when the range spans at most this many days;
#: longer spans list only the days that have reports.
FILL_DAYS = 400
#: Raw JSON above this many bytes is not inlined on the report page (it is offered as a download).
RAW_INLINE_LIMIT = 2 * 1024 * 1024
#: Failure details shown per policy on the report page.
DETAILS_SHOWN = 500
#: Reports in conflicting copies listed on the overview (the notice gives the full count).
CONFLICTS_SHOWN = 10

#: Stable colours for the result types in charts, in RFC 8460 §4.3 order (the rest take the fallback palette in
#: dashboard.js).
RESULT_TYPE_ORDER = tuple(rt.value for rt in ResultType)


def filters_for(rng: DateRange, *, domain: str | None = None, organization: str | None = None) -> Filters:
    return Filters(since=rng.since, until=rng.until, domain=domain, organization=organization)


def _days(first: date, last: date, present: list[date]) -> list[date]:
    if (last - first).days <= FILL_DAYS:
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return present


def charts(db: ReportDB, filters: Filters) -> dict[str, Any]:
    """The data the charts draw (serialised into the page as JSON; see static/dashboard.js)."""
    by_day = db.by_day(filters)
    failures_by_day = db.failures_by_day(filters)
    by_type = db.by_result_type(filters)
    present = sorted(set(by_day) | set(failures_by_day))
    days = _days(present[0], present[-1], present) if present else []
    rate: list[float | None] = []
    successful: list[int | None] = []
    failed: list[int | None] = []
    for day in days:
        totals = by_day.get(day)
        if totals is None:
            rate.append(None)
            successful.append(None)
            failed.append(None)
            continue
        value = totals.success_rate
        rate.append(None if value is None else round(value * 100, 4))
        successful.append(totals.successful_sessions)
        failed.append(totals.failed_sessions)
    names = [n for n in RESULT_TYPE_ORDER if n in by_type] + sorted(n for n in by_type if n not in RESULT_TYPE_ORDER)
    series = [
        {"name": name, "data": [failures_by_day.get(day, {}).get(name) for day in days]} for name in names
    ]
    return {
        "days": [d.isoformat() for d in days],
        "rate": rate,
        "successful": successful,
        "failed": failed,
        "failuresByDay": series,
        "resultTypes": [{"name": name, "count": by_type[name]} for name in sorted(by_type, key=lambda n: -by_type[n])],
        "knownTypes": list(RESULT_TYPE_ORDER),
    }


def _common(db: ReportDB, filters: Filters) -> dict[str, Any]:
    totals = db.totals(filters)
    data = charts(db, filters)
    return {
        "totals": totals,
        "by_result_type": db.by_result_type(filters),
        "chart_data": data,
        "has_days": bool(data["days"]),
    }


def overview(db: ReportDB, rng: DateRange) -> dict[str, Any]:
    filters = filters_for(rng)
    out = _common(db, filters)
    out.update(
        by_organization=_sorted_totals(db.by_organization(filters)),
        by_policy_domain=_sorted_totals(db.by_policy_domain(filters)),
        by_policy_type=_sorted_totals(db.by_policy_type(filters)),
        reports=db.reports(filters, limit=RECENT_REPORTS),
        stored_range=db.day_range(),
    )
    out["conflict_count"], out["conflicts"] = db.conflicts(filters, limit=CONFLICTS_SHOWN)
    return out


def domain(db: ReportDB, rng: DateRange, name: str) -> dict[str, Any] | None:
    """The domain page, or None when no report ever named this policy domain."""
    if not db.by_policy_domain(Filters(domain=name)):
        return None
    filters = filters_for(rng, domain=name)
    out = _common(db, filters)
    out.update(
        by_organization=_sorted_totals(db.by_organization(filters)),
        by_policy_type=_sorted_totals(db.by_policy_type(filters)),
        by_mx=_sorted_mx(db.by_mx(filters)),
        failing_ips=db.failing_sending_ips(filters),
        policies_seen=db.policies_seen(filters),
        reports=db.reports(filters, limit=RECENT_REPORTS),
    )
    return out


def reporter(db: ReportDB, rng: DateRange, name: str) -> dict[str, Any] | None:
    """The reporter page, or None when no report of this organization is stored."""
    if not db.reports(Filters(organization=name), limit=1):
        return None
    filters = filters_for(rng, organization=name)
    out = _common(db, filters)
    reports = db.reports(filters, limit=RECENT_REPORTS)
    out.update(
        by_policy_domain=_sorted_totals(db.by_policy_domain(filters)),
        by_policy_type=_sorted_totals(db.by_policy_type(filters)),
        by_mx=_sorted_mx(db.by_mx(filters)),
        failing_ips=db.failing_sending_ips(filters),
        reports=reports,
        contacts=_contacts(reports),
    )
    return out


def report_list(db: ReportDB, rng: DateRange, *, domain: str | None, organization: str | None,
                page: int) -> dict[str, Any]:
    filters = filters_for(rng, domain=domain, organization=organization)
    total = db.totals(filters).reports
    return {
        "total": total,
        "reports": db.reports(filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE),
    }


def report(db: ReportDB, pk: int) -> dict[str, Any] | None:
    detail = db.report(pk)
    if detail is None:
        return None
    raw = detail.raw_json
    if len(raw) > RAW_INLINE_LIMIT:
        pretty = None
    else:
        try:
            pretty = json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
        except ValueError:
            pretty = raw.decode("utf-8", errors="replace")
    policies = []
    for policy in detail.policies:
        total = policy["successful"] + policy["failed"]
        details = policy["failure_details"]
        policies.append({
            **policy,
            "rate": policy["successful"] / total if total else None,
            "details_shown": details[:DETAILS_SHOWN],
            "details_hidden": max(0, len(details) - DETAILS_SHOWN),
            "domain_key": policy["policy_domain"] if policy["policy_domain"] is not None else NO_DOMAIN,
        })
    row = detail.row
    total = row.successful + row.failed
    return {
        "detail": detail,
        "row": row,
        "rate": row.successful / total if total else None,
        "policies": policies,
        "raw_pretty": pretty,
        "raw_size": len(raw),
        # Every copy of this report (same organization and report-id), the counted one first; one when no conflict.
        "copies": db.copies(pk),
    }


def _sorted_totals(items: dict[str, Totals]) -> list[tuple[str, Totals]]:
    """Rows for a table: most failed sessions first, then most sessions, then by name."""
    return sorted(
        items.items(),
        key=lambda kv: (-kv[1].failed_sessions, -(kv[1].successful_sessions + kv[1].failed_sessions), kv[0]),
    )


def _sorted_mx(items: dict[str, dict[str, int]]) -> list[tuple[str, int, dict[str, int]]]:
    rows = [(host, sum(types.values()), dict(sorted(types.items(), key=lambda kv: -kv[1])))
            for host, types in items.items()]
    return sorted(rows, key=lambda row: (-row[1], row[0]))


def _contacts(rows: list[Any]) -> list[str]:
    seen: list[str] = []
    for row in rows:
        if row.contact_info and row.contact_info not in seen:
            seen.append(row.contact_info)
    return seen[:5]
