"""Fixtures for lab tests (root, Linux network namespaces, Knot DNS, Unbound).

Reuse:

* ``lab_topology`` (session): a created :class:`~mxsec.lab.topology.Topology` with a test-only prefix
  (``mxsec-t<pid>``), every scenario host address already on the internet namespace's ``lo``; destroyed at the
  end of the session (and before, in case a crashed run left one behind).
* ``lab_scenarios`` (session): ``load_scenarios()``. ``lab_addresses`` (session): host → address.
* ``lab_tlsa`` (session): host → TLSA rdata texts. Here placeholders (no certificates exist in DNS-only
  tests); end-to-end tests override this fixture with data computed from the MX certificates
  (``tlsa_rdatas(kind, tlsa_311(cert), tlsa_311(other))``).
* ``lab_dns`` (session): a running :class:`~mxsec.lab.dns.LabDns` serving every scenario's zone.
  Tests that change a zone must restore it (``lab_dns.update_zone(name, original.records)``).

Tests skip (not fail) when not root or when knotd/unbound/keymgr are missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from mxsec.lab import topology
from mxsec.lab.dns import LabDns
from mxsec.lab.scenarios import (
    Scenario,
    host_addresses,
    load_scenarios,
    placeholder_tlsa,
    zone_specs,
)
from mxsec.lab.topology import Topology

REQUIRED_TOOLS = ("ip", "knotd", "knotc", "keymgr", "unbound", "unbound-control", "unbound-checkconf")


def lab_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces)"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        return "lab tests need " + ", ".join(missing)
    return None


def unique_prefix(tag: str = "t") -> str:
    """A lab prefix unique to this test process (namespaces <prefix>-inet / <prefix>-sender)."""
    return f"mxsec-{tag}{os.getpid()}"


@pytest.fixture(scope="session")
def lab_available() -> None:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_scenarios() -> list[Scenario]:
    return load_scenarios()


@pytest.fixture(scope="session")
def lab_topology(lab_available: None, lab_scenarios: list[Scenario]) -> Iterator[Topology]:
    topo = Topology(prefix=unique_prefix("t"))
    topology.destroy(topo)
    try:
        topology.create(topo)
        topology.add_addresses(topo, host_addresses(lab_scenarios, topo).values())
        yield topo
    finally:
        topology.destroy(topo)


@pytest.fixture(scope="session")
def lab_addresses(lab_topology: Topology, lab_scenarios: list[Scenario]) -> dict[str, str]:
    return host_addresses(lab_scenarios, lab_topology)


@pytest.fixture(scope="session")
def lab_tlsa(lab_scenarios: list[Scenario]) -> dict[str, list[str]]:
    return placeholder_tlsa(lab_scenarios)


@pytest.fixture(scope="session")
def lab_dns(
    lab_topology: Topology,
    lab_scenarios: list[Scenario],
    lab_addresses: dict[str, str],
    lab_tlsa: dict[str, list[str]],
) -> Iterator[LabDns]:
    dns_lab = LabDns(lab_topology)
    dns_lab.start(zone_specs(lab_scenarios, lab_addresses, lab_tlsa))
    try:
        yield dns_lab
    finally:
        dns_lab.stop()
