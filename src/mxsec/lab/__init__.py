"""A private mail internet in Linux network namespaces (``mxsec lab up | down | status``; needs root).

Building blocks (the runner composes them):

* :mod:`mxsec.lab.topology` — namespaces ``<prefix>-sender``, ``<prefix>-attk`` (an on-path router) and
  ``<prefix>-inet``, the two veth pairs, the address plan (TEST-NET ranges), :func:`~mxsec.lab.topology.destroy`
  (idempotent, also after a crash), helpers to run commands and daemons inside a namespace and to open sockets
  in one.
* :mod:`mxsec.lab.dns` — Knot DNS (root, ``test.``, domain zones; DNSSEC-signed, some unsigned, one bogus) and
  Unbound as the validating resolver; run-time zone updates.
* :mod:`mxsec.lab.scenarios` — the declarative scenario file (``scenarios.toml``), one entry per domain.
* :mod:`mxsec.lab.state` — the state directory and JSON state file used by ``down``/``status``.
* :mod:`mxsec.lab.mx`, :mod:`mxsec.lab.policyhosts`, :mod:`mxsec.lab.postfix` — MX hosts, MTA-STS policy hosts,
  the sender's private Postfix.
* :mod:`mxsec.lab.runner` — ``up`` / ``run`` / ``down`` / ``lab_status``: the whole lab and one message per
  scenario; :mod:`mxsec.lab.prerequisites` — can the lab run here (the ``mxsec lab`` commands are
  :mod:`mxsec.cli.lab`).
* :mod:`mxsec.lab.attacker` — attacks switched on per target in the router namespace (STARTTLS stripped,
  impostor MX, DNS/HTTPS dropped or delayed, ``_mta-sts`` record removed); :mod:`mxsec.lab.attackrun` — the
  attacker scenarios against Postfix and Exim.

See docs/lab.md.
"""

from __future__ import annotations

from mxsec.lab.dns import LabDns, ZoneSpec, lab_query, start_dns, tlsa_311
from mxsec.lab.scenarios import (
    Scenario,
    ScenarioError,
    host_addresses,
    load_scenarios,
    zone_specs,
)
from mxsec.lab.topology import (
    LabError,
    Topology,
    add_address,
    add_addresses,
    create,
    destroy,
    exists,
    status,
)

__all__ = [
    "LabDns",
    "LabError",
    "Scenario",
    "ScenarioError",
    "Topology",
    "ZoneSpec",
    "add_address",
    "add_addresses",
    "create",
    "destroy",
    "exists",
    "host_addresses",
    "lab_query",
    "load_scenarios",
    "start_dns",
    "status",
    "tlsa_311",
    "zone_specs",
]
