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
* ``mxsec_socketmap_latency_seconds`` — histogram of the time from a request's arrival to its reply being
  written (whole pipelined batches are timed once and counted per request).
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from mxsec.daemon.server import BUCKETS, KINDS, SocketmapServer

log = logging.getLogger("mxsec.metrics")


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
