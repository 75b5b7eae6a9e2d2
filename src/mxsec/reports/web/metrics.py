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
* ``mxsec_tlsrpt_stored_reports`` — every stored report, with or without policies;
* ``mxsec_tlsrpt_database_up`` — 1, or 0 when the database could not be read (the others are then absent).

Reports without a policy domain are labelled ``policy_domain="(none)"``.
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

from mxsec.store.base import StoreError
from mxsec.store.reportdb import ReportDB

log = logging.getLogger("mxsec.reports.web")


class ReportCollector:
    """A custom collector: each scrape runs a handful of aggregate queries."""

    def __init__(self, db: ReportDB) -> None:
        self.db = db

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
        by_pair = db.by_organization_and_domain()
        by_domain = db.by_policy_domain()
        failures = db.failures_by_domain()
        last = db.last_report_by_domain()

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
        return [reports, sessions, failed, last_end, last_received, total]


def registry_for(db: ReportDB) -> CollectorRegistry:
    """A fresh registry holding only the report collector (one per application)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReportCollector(db))
    return registry


async def endpoint(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
