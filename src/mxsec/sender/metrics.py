"""Prometheus metrics of ``mxsec tlsrpt collect`` (``--metrics-listen HOST:PORT``), read from its counters at
scrape time:

* ``mxsec_tlsrpt_datagrams_total`` — datagrams received;
* ``mxsec_tlsrpt_sessions_total`` — sessions counted;
* ``mxsec_tlsrpt_bad_datagrams_total{code}`` — datagrams refused, by error code (``not-json``,
  ``unknown-version``, ``bad-type``, ``too-large`` …);
* ``mxsec_tlsrpt_datagram_warnings_total{code}`` — counted datagrams with something odd (``non-utf8``,
  ``unknown-result-code``, ``text-cut`` …);
* ``mxsec_tlsrpt_flushes_total``, ``mxsec_tlsrpt_write_errors_total`` — writes of counts, failed writes.
"""

from __future__ import annotations

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily

from .collect import CollectorStats

__all__ = ["start_collector_metrics"]


class _StatsCollector:
    def __init__(self, stats: CollectorStats) -> None:
        self.stats = stats

    def collect(self):
        s = self.stats
        yield CounterMetricFamily("mxsec_tlsrpt_datagrams", "Datagrams received", value=s.datagrams)
        yield CounterMetricFamily("mxsec_tlsrpt_sessions", "Sessions counted", value=s.sessions)
        for name, help_text, counts in (
            ("mxsec_tlsrpt_bad_datagrams", "Datagrams refused, by error code", s.bad),
            ("mxsec_tlsrpt_datagram_warnings", "Counted datagrams with something odd, by code", s.warnings),
        ):
            family = CounterMetricFamily(name, help_text, labels=["code"])
            for code, n in sorted(dict(counts).items()):
                family.add_metric([code], n)
            yield family
        yield CounterMetricFamily("mxsec_tlsrpt_flushes", "Writes of counted sessions", value=s.flushes)
        yield CounterMetricFamily("mxsec_tlsrpt_write_errors", "Failed writes (retried)", value=s.write_errors)


def start_collector_metrics(stats: CollectorStats, host: str, port: int):
    """Serve ``/metrics`` on a background thread; returns ``(httpd, thread)``."""
    registry = CollectorRegistry()
    registry.register(_StatsCollector(stats))
    return start_http_server(port, addr=host, registry=registry)
