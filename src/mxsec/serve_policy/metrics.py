"""Prometheus metrics of ``mxsec serve-policy`` (``--metrics-listen HOST:PORT``), read at scrape time.

* ``mxsec_serve_policy_hosts`` — policy hosts served (a ``--policy`` without ``--domain`` counts as one);
* ``mxsec_serve_policy_responses_total{status}`` — HTTP responses by status code (policy and HTTP-01 listeners);
* ``mxsec_serve_policy_connections`` — connections open now; ``mxsec_serve_policy_refused_connections_total``
  — connections closed at accept because ``--max-connections`` were open;
* ``mxsec_serve_policy_certificate_not_after_seconds{host}`` — when the certificate served for each host
  expires (unix time; with ``--cert`` the one certificate, per host);
* with ``--acme-directory``: ``mxsec_serve_policy_acme_orders_total{result}`` (``ok``, ``failed``) and
  ``mxsec_serve_policy_acme_order_failures{host}`` — failed orders in a row for each host (0 after a success).

The alerts ``MxsecPolicyHostCertificateExpiring`` and ``MxsecPolicyHostOrdersFailing`` in
``contrib/prometheus/mxsec-alerts.yml`` read them (docs/monitoring.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from mxsec.serve_policy.server import PolicyServer

__all__ = ["ServePolicyCollector", "start_metrics"]

log = logging.getLogger("mxsec.serve_policy")


class ServePolicyCollector:
    def __init__(self, server: PolicyServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        sites = server.sites
        yield GaugeMetricFamily("mxsec_serve_policy_hosts", "Policy hosts served",
                                value=len(sites.sites) or (1 if sites.any_host is not None else 0))
        responses = CounterMetricFamily("mxsec_serve_policy_responses", "HTTP responses by status code",
                                        labels=["status"])
        for status, count in sorted(list(server.responses.items())):
            responses.add_metric([str(status)], count)
        yield responses
        yield GaugeMetricFamily("mxsec_serve_policy_connections", "Connections open now",
                                value=server.active + server.opening)
        yield CounterMetricFamily("mxsec_serve_policy_refused_connections",
                                  "Connections closed at accept because --max-connections were open",
                                  value=server.refused)
        expiry = GaugeMetricFamily("mxsec_serve_policy_certificate_not_after_seconds",
                                   "When the certificate served for the host expires (unix time)", labels=["host"])
        if server.acme is not None:
            for host, loaded in sorted(list(server.acme.certificates.items())):
                expiry.add_metric([host], loaded.not_after.timestamp())
        elif server.certificate is not None:
            hosts = sorted(site.host for site in sites.sites.values()) or ["*"]
            for host in hosts:
                expiry.add_metric([host], server.certificate.not_after.timestamp())
        yield expiry
        if server.acme is not None:
            acme = server.acme
            orders = CounterMetricFamily("mxsec_serve_policy_acme_orders", "ACME certificate orders by result",
                                         labels=["result"])
            orders.add_metric(["ok"], acme.obtained)
            orders.add_metric(["failed"], acme.failures)
            yield orders
            failing = GaugeMetricFamily("mxsec_serve_policy_acme_order_failures",
                                        "Failed ACME orders in a row for the host (0 after a success)",
                                        labels=["host"])
            for host, renewal in sorted(list(acme.renewals.items())):
                failing.add_metric([host], renewal.failures)
            yield failing


def start_metrics(server: PolicyServer, host: str, port: int) -> Any:
    """Serve ``/metrics`` on a background thread; returns the HTTP server (``shutdown()`` to stop)."""
    registry = CollectorRegistry()
    registry.register(ServePolicyCollector(server))
    httpd, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics listening", extra={"listen": f"{host}:{port}"})
    return httpd
