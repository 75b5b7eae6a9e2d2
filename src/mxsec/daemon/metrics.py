"""Prometheus metrics of the daemon, read from its own counters at scrape time.

The hot path only bumps plain integers; this collector turns them into metric families when Prometheus
scrapes ``http://LISTEN/metrics`` (config ``metrics.listen``).

Exported:

* ``mxsec_socketmap_replies_total{kind}`` — replies by kind (``ok``, ``notfound``, ``temp``, ``perm``);
* ``mxsec_socketmap_memo_hits_total`` — requests answered from the in-memory answer table;
* ``mxsec_cache_hits_total`` / ``mxsec_cache_misses_total`` — service lookups served without / with I/O;
* ``mxsec_policy_fetches_total{outcome}`` — HTTPS policy fetches: ``ok`` or the RFC 8460 result type;
* ``mxsec_resolutions_total``, ``mxsec_single_flight_joins_total``, ``mxsec_lookup_timeouts_total``;
* ``mxsec_cached_policies``, ``mxsec_connections`` — gauges;
* limits (docs/daemon.md, "Limits"): ``mxsec_socketmap_evictions_total{reason}`` (``partial``, ``idle``,
  ``busy``), ``mxsec_socketmap_refused_connections_total``, ``mxsec_socketmap_timeouts_total{kind}``
  (``partial``, ``idle``), ``mxsec_socketmap_pending_cap_hits_total``, ``mxsec_socketmap_bad_netstrings_total``,
  ``mxsec_socketmap_abandoned_connections_total``,
  ``mxsec_resolutions_cancelled_total``, ``mxsec_budget_temps_total``, ``mxsec_table_evictions_total``,
  ``mxsec_log_lines_suppressed_total``, and the gauges ``mxsec_table_entries{table}`` and
  ``mxsec_resolution_slots{state}`` (``busy``, ``waiting``);
* ``mxsec_refresh_overdue_policies`` — cached policies whose proactive refresh is past due by more than one
  refresher round (:data:`REFRESH_ROUND`): the refresher falls behind, or their refresh keeps failing;
* ``mxsec_socketmap_latency_seconds`` — histogram of the time from a request's arrival to its reply being
  written (whole pipelined batches are timed once and counted per request).
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from mxsec.daemon.server import BUCKETS, KINDS, SocketmapServer

log = logging.getLogger("mxsec.metrics")

#: The refresher's longest round (docs/daemon.md, "Proactive refresh": every minute at most); a policy due for
#: longer than this was missed by at least one round.
REFRESH_ROUND = 60.0


def refresh_overdue(service, *, lag: float = REFRESH_ROUND) -> int | None:
    """Cached policies that were already due for a refresh ``lag`` seconds ago and are still not refreshed.

    A policy being refreshed right now is not counted (:meth:`PolicyService.due_for_refresh` leaves it out).
    Scrapes run on the HTTP server's thread while the event loop may change the cache, so a scan that meets a
    change is tried again (three times at most); ``None`` if none got through.
    """
    for _ in range(3):
        try:
            return len(service.due_for_refresh(service.clock() - lag))
        except RuntimeError:  # the cache changed size during the scan
            continue
    return None


class DaemonCollector:
    def __init__(self, server: SocketmapServer) -> None:
        self.server = server

    def collect(self):
        server = self.server
        service = server.service
        replies = CounterMetricFamily("mxsec_socketmap_replies", "Socketmap replies by kind", labels=["kind"])
        for kind, count in zip(KINDS, server.reply_counts):
            replies.add_metric([kind], count)
        yield replies
        yield CounterMetricFamily("mxsec_socketmap_memo_hits", "Requests answered from the answer table",
                                  value=server.memo_hits)
        for name, key, text in (
            ("mxsec_cache_hits", "cache_hits", "Lookups answered from the policy cache"),
            ("mxsec_cache_misses", "cache_misses", "Lookups that needed a resolution"),
            ("mxsec_resolutions", "resolutions", "Resolutions started (TXT lookup, maybe a fetch)"),
            ("mxsec_single_flight_joins", "single_flight_joins", "Lookups that joined a running resolution"),
            ("mxsec_lookup_timeouts", "lookup_timeouts", "Lookups that ran out of their time budget"),
        ):
            yield CounterMetricFamily(name, text, value=service.counters[key])
        fetches = CounterMetricFamily("mxsec_policy_fetches", "Policy fetches by outcome", labels=["outcome"])
        for outcome, count in sorted(service.fetch_outcomes.items()):
            fetches.add_metric([outcome], count)
        yield fetches
        yield GaugeMetricFamily("mxsec_cached_policies", "Policies in the cache", value=len(service.entries))
        yield GaugeMetricFamily("mxsec_connections", "Open socketmap connections", value=len(server.connections))
        evictions = CounterMetricFamily("mxsec_socketmap_evictions", "Connections closed to make room for a new one",
                                        labels=["reason"])
        for reason in ("partial", "idle", "busy"):
            evictions.add_metric([reason], server.evictions[reason])
        yield evictions
        yield CounterMetricFamily("mxsec_socketmap_refused_connections",
                                  "Connections the system refused at accept (out of file descriptors)",
                                  value=server.rejected_connections)
        timeouts = CounterMetricFamily("mxsec_socketmap_timeouts", "Connections closed by a timeout", labels=["kind"])
        for why in ("partial", "idle"):
            timeouts.add_metric([why], server.timeouts[why])
        yield timeouts
        yield CounterMetricFamily("mxsec_socketmap_pending_cap_hits",
                                  "Requests answered TEMP because their connection had max_pending unanswered",
                                  value=server.pending_cap_hits)
        yield CounterMetricFamily("mxsec_socketmap_bad_netstrings", "Connections closed for broken framing",
                                  value=server.bad_netstrings)
        yield CounterMetricFamily("mxsec_socketmap_abandoned_connections",
                                  "Connections their client closed with many requests unanswered (work dropped)",
                                  value=server.abandoned)
        for name, key, text in (
            ("mxsec_resolutions_cancelled", "resolutions_cancelled", "Resolutions cancelled: every asker had gone"),
            ("mxsec_budget_temps", "budget_temps", "TEMP answers caused by our own time budget or back-pressure"),
            ("mxsec_table_evictions", "table_evictions", "Entries dropped because a table was full"),
        ):
            yield CounterMetricFamily(name, text, value=service.counters[key])
        fleet = CounterMetricFamily(
            "mxsec_fleet_resolutions",
            "Resolutions coordinated with the other daemons on the shared store: led here, taken from another daemon "
            "when asked, taken at once when another daemon announced a new policy, resolved here after waiting "
            "three leases, resolved here because the store failed",
            labels=["role"])
        for role, key in (("lead", "fleet_leads"), ("follow", "fleet_follows"), ("announced", "fleet_announced"),
                          ("wait_timeout", "fleet_wait_timeouts"), ("store_error", "fleet_store_errors")):
            fleet.add_metric([role], service.counters[key])
        yield fleet
        yield CounterMetricFamily("mxsec_store_operations", "Operations asked of the cache store (reads, writes "
                                  "and fleet leases)",
                                  value=service.counters["store_calls"] + (service.fleet.calls if service.fleet else 0))
        yield CounterMetricFamily("mxsec_store_errors", "Cache store operations that failed (store down, timeout)",
                                  value=service.counters["store_errors"])
        yield GaugeMetricFamily("mxsec_store_up", "1 while the cache store answers, 0 during an outage",
                                value=1 if service.store_ok else 0)
        yield CounterMetricFamily("mxsec_log_lines_suppressed", "Log lines left out by rate limiting",
                                  value=server.quiet.suppressed_total + service.quiet.suppressed_total)
        tables = GaugeMetricFamily("mxsec_table_entries", "Entries in the in-memory tables", labels=["table"])
        for table, size in sorted(service.table_sizes().items()):
            tables.add_metric([table], size)
        tables.add_metric(["memo"], len(server.memo))
        yield tables
        stats = getattr(service.dns, "stats", None)
        if stats is not None:
            dns_counts = CounterMetricFamily("mxsec_dns_queries", "DNS traffic to the resolvers: datagrams sent, of "
                                             "which sent again after a silent try, queries asked again over TCP, "
                                             "queries that failed", labels=["kind"])
            for what in ("sent", "resent", "tcp", "failed"):
                dns_counts.add_metric([what], stats[what])
            yield dns_counts
        pool = service._pool
        slots = GaugeMetricFamily("mxsec_resolution_slots", "Resolution slots busy and resolutions waiting",
                                  labels=["state"])
        slots.add_metric(["busy"], pool.active)
        slots.add_metric(["waiting"], pool.waiters)
        yield slots
        overdue = refresh_overdue(service)
        if overdue is not None:
            yield GaugeMetricFamily("mxsec_refresh_overdue_policies",
                                    "Cached policies whose refresh is past due by more than one refresher round",
                                    value=overdue)
        hist = server.latency
        cumulative = []
        running = 0
        for bound, count in zip(list(BUCKETS) + [float("inf")], hist.counts):
            running += count
            cumulative.append((str(bound) if bound != float("inf") else "+Inf", running))
        latency = HistogramMetricFamily("mxsec_socketmap_latency_seconds", "Request to reply time")
        latency.add_metric([], cumulative, sum_value=hist.total)
        yield latency


def start_metrics(server: SocketmapServer, host: str, port: int):
    """Serve ``/metrics`` on a background thread; returns the HTTP server (``shutdown()`` to stop)."""
    registry = CollectorRegistry()
    registry.register(DaemonCollector(server))
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics listening", extra={"listen": f"{host}:{port}"})
    return httpd, thread
