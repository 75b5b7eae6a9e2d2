"""Prometheus metrics of the stored reports (``GET /metrics``), read from the database at scrape time.

All are gauges over everything stored (bounded by the retention of the database); alert on their
change (``increase()``/``delta()``) or on ratios:

* ``mxsec_tlsrpt_reports{organization,policy_domain}`` — reports naming that policy domain from that reporter;
* ``mxsec_tlsrpt_sessions{policy_domain,result}`` — sessions, ``result`` ``successful`` or ``failed``
  (the reports' summary counts);
* ``mxsec_tlsrpt_failed_sessions{policy_domain,result_type}`` — failed sessions by RFC 8460 result type (the
  failure details' counts; one session may appear under several types, so these need not add up to the
  ``failed`` sessions);
* ``mxsec_tlsrpt_last_report_timestamp_seconds{policy_domain}`` — end of the newest report's date range;
* ``mxsec_tlsrpt_last_received_timestamp_seconds{policy_domain}`` — when the latest report was stored;
* ``mxsec_tlsrpt_stored_reports`` — every stored report, with or without policies (one copy per report: the
  counted one, see :mod:`mxsec.storage.reportdb`; so are all the figures above);
* ``mxsec_tlsrpt_conflicting_reports`` — reports stored in several different copies (same organization and
  report-id; alert on any increase: one may be forged);
* ``mxsec_tlsrpt_database_up`` — 1, or 0 when the database could not be read (the others are then absent).

Reports without a policy domain are labelled ``policy_domain="(none)"``.

Label values come from reports, which anyone can send, so their number is bounded: the
:data:`MAX_ORGANIZATIONS` organizations with the most reports and the :data:`MAX_DOMAINS` policy domains with
the most sessions keep their own labels; the others are summed under ``"(other)"`` (for the timestamps, the
latest of them). Result types outside RFC 8460 §4.3 are summed under ``result_type="(other)"`` too. A scrape
therefore has at most a few thousand series, however many reporters and domains the database holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mxsec.storage.base import StoreError
from mxsec.storage.reportdb import ReportDB, Totals
from mxsec.tlsrpt.report import RESULT_TYPES

log = logging.getLogger("mxsec.reports.web")

#: Organizations with their own ``organization`` label (most reports first); the rest are ``(other)``.
MAX_ORGANIZATIONS = 50
#: Policy domains with their own ``policy_domain`` label (most sessions first); the rest are ``(other)``.
MAX_DOMAINS = 100
#: Label value of everything beyond the caps.
OTHER = "(other)"


def _top(volume: dict[str, int], limit: int) -> set[str]:
    """The *limit* keys of largest volume (ties by name, so the choice is stable between scrapes)."""
    if len(volume) <= limit:
        return set(volume)
    return {key for key, _ in sorted(volume.items(), key=lambda item: (-item[1], item[0]))[:limit]}


def _add(target: dict[Any, Totals], key: Any, totals: Totals) -> None:
    have = target.get(key)
    if have is None:
        target[key] = Totals(totals.reports, totals.successful_sessions, totals.failed_sessions)
    else:
        target[key] = Totals(have.reports + totals.reports, have.successful_sessions + totals.successful_sessions,
                             have.failed_sessions + totals.failed_sessions)


class ReportCollector:
    """A custom collector: each scrape runs a handful of aggregate queries."""

    def __init__(self, db: ReportDB, *, max_organizations: int = MAX_ORGANIZATIONS,
                 max_domains: int = MAX_DOMAINS) -> None:
        self.db = db
        self.max_organizations = max_organizations
        self.max_domains = max_domains

    def describe(self) -> list[Any]:
        return []  # nothing is read at registration; families are known only at scrape time

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            families = self._families()
        except StoreError as exc:
            log.error("metrics: %s", exc)
            yield GaugeMetricFamily("mxsec_tlsrpt_database_up", "1 if the report database could be read", value=0)
            return
        yield GaugeMetricFamily("mxsec_tlsrpt_database_up", "1 if the report database could be read", value=1)
        yield from families

    def _families(self) -> list[GaugeMetricFamily]:
        db = self.db
        stored = db.totals().reports
        raw_pairs = db.by_organization_and_domain()
        raw_domains = db.by_policy_domain()
        raw_failures = db.failures_by_domain()
        raw_last = db.last_report_by_domain()

        domains = _top({d: t.successful_sessions + t.failed_sessions for d, t in raw_domains.items()},
                       self.max_domains)
        org_volume: dict[str, int] = {}
        for (organization, _), totals in raw_pairs.items():
            org_volume[organization] = org_volume.get(organization, 0) + totals.reports
        organizations = _top(org_volume, self.max_organizations)

        def dom(name: str) -> str:
            return name if name in domains else OTHER

        by_pair: dict[tuple[str, str], Totals] = {}
        for (organization, domain), totals in raw_pairs.items():
            _add(by_pair, (organization if organization in organizations else OTHER, dom(domain)), totals)
        by_domain: dict[str, Totals] = {}
        for domain, totals in raw_domains.items():
            _add(by_domain, dom(domain), totals)
        failures: dict[str, dict[str, int]] = {}
        for domain, types in raw_failures.items():
            bucket = failures.setdefault(dom(domain), {})
            for result_type, count in types.items():
                kind = result_type if result_type in RESULT_TYPES else OTHER
                bucket[kind] = bucket.get(kind, 0) + count
        last: dict[str, tuple[Any, Any]] = {}
        for domain, (end, received) in raw_last.items():
            key = dom(domain)
            if key in last:
                end, received = max(end, last[key][0]), max(received, last[key][1])
            last[key] = (end, received)

        reports = GaugeMetricFamily(
            "mxsec_tlsrpt_reports", "Stored TLSRPT reports by reporting organization and policy domain",
            labels=["organization", "policy_domain"],
        )
        for (organization, domain), totals in sorted(by_pair.items()):
            reports.add_metric([organization, domain], totals.reports)
        sessions = GaugeMetricFamily(
            "mxsec_tlsrpt_sessions", "Sessions in stored reports by policy domain and result",
            labels=["policy_domain", "result"],
        )
        for domain, totals in sorted(by_domain.items()):
            sessions.add_metric([domain, "successful"], totals.successful_sessions)
            sessions.add_metric([domain, "failed"], totals.failed_sessions)
        failed = GaugeMetricFamily(
            "mxsec_tlsrpt_failed_sessions", "Failed sessions in stored failure details by policy domain and "
            "result type", labels=["policy_domain", "result_type"],
        )
        for domain, types in sorted(failures.items()):
            for result_type, count in sorted(types.items()):
                failed.add_metric([domain, result_type], count)
        last_end = GaugeMetricFamily(
            "mxsec_tlsrpt_last_report_timestamp_seconds",
            "End of the date range of the newest stored report, by policy domain", labels=["policy_domain"],
        )
        last_received = GaugeMetricFamily(
            "mxsec_tlsrpt_last_received_timestamp_seconds",
            "When the latest report was stored, by policy domain", labels=["policy_domain"],
        )
        for domain, (end, received) in sorted(last.items()):
            last_end.add_metric([domain], end.timestamp())
            last_received.add_metric([domain], received.timestamp())
        total = GaugeMetricFamily("mxsec_tlsrpt_stored_reports", "Stored TLSRPT reports", value=stored)
        conflicting = GaugeMetricFamily(
            "mxsec_tlsrpt_conflicting_reports",
            "TLSRPT reports stored in several different copies (same organization and report-id)",
            value=db.conflicts(limit=0)[0],
        )
        return [reports, sessions, failed, last_end, last_received, total, conflicting]


def registry_for(db: ReportDB, *, max_organizations: int = MAX_ORGANIZATIONS,
                 max_domains: int = MAX_DOMAINS) -> CollectorRegistry:
    """A fresh registry holding only the report collector (one per application)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(db, max_organizations=max_organizations, max_domains=max_domains))
    return registry


async def endpoint(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
