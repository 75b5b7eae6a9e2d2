"""Policy hosts that get their certificates by ACME, in the lab: Pebble and ``mxsec serve-policy``.

Scenarios whose ``policy_host.cert`` is ``"acme"`` are not served by the lab's own policy hosts
(:mod:`mxsec.lab.policyhosts`) but by the real ``mxsec serve-policy --policy-dir … --acme-directory …``, which
obtains a certificate for each ``mta-sts.<domain>`` from Pebble (Debian's ACME test server). Both run in the
internet namespace:

* Pebble listens on ``127.0.0.1:14000`` there (its own HTTPS certificate comes from the lab CA) and validates
  through the lab's validating resolver, so it sees exactly the names and addresses the lab DNS publishes; its
  validator answers TLS-ALPN-01 on port 443 of each policy host's address.
* ``serve-policy`` listens on each ACME policy host's own address, port 443, beside the lab policy hosts bound
  to ``0.0.0.0:443`` (both set SO_REUSEPORT; the kernel hands a connection to the listener bound to its exact
  destination address).

Pebble makes a new root at every start. :func:`start` appends it to the CA bundle the lab's mxsec daemon
trusts for policy fetches (:data:`TRUST_FILE`), so the sender accepts the policy hosts' certificates like any
client that trusts Let's Encrypt.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mxsec.lab import topology
from mxsec.lab.scenarios import Scenario
from mxsec.lab.topology import LabError, Topology

__all__ = ["ACME_DIRECTORY", "acme_scenarios", "start", "trust_bundle"]

PEBBLE_LISTEN = "127.0.0.1:14000"
PEBBLE_MANAGEMENT = "127.0.0.1:15000"
ACME_DIRECTORY = f"https://{PEBBLE_LISTEN}/dir"
#: under the lab state directory
DIR = "acme"
TRUST_FILE = "https-trust.pem"


def acme_scenarios(scenarios: Sequence[Scenario]) -> list[Scenario]:
    return [sc for sc in scenarios if sc.policy_host is not None and sc.policy_host.cert == "acme"]


def trust_bundle(state_dir: Path) -> Path:
    """The CA bundle the lab's sender trusts for HTTPS: the lab CA, plus Pebble's root when ACME hosts run."""
    return state_dir / DIR / TRUST_FILE


SpawnAndWait = Callable[..., None]


def start(topo: Topology, scenarios: Sequence[Scenario], addresses: Mapping[str, str], state_dir: Path,
          ca_dir: Path, spawn_and_wait: SpawnAndWait, *, timeout: float = 90.0) -> list[str]:
    """Start Pebble and serve-policy for the ACME scenarios; wait until every host has its certificate.

    Writes :func:`trust_bundle` in every case (the lab CA alone when there is no ACME scenario). Returns the
    policy hosts served. Raises :class:`LabError` when a certificate does not arrive within ``timeout``.
    """
    from mxsec.lab.mx import load_ca
    from mxsec.testing.pebble import environment, pebble_binary, write_config
    from mxsec.testing.pki import write_pem

    work = state_dir / DIR
    work.mkdir(mode=0o755, parents=True, exist_ok=True)
    lab_ca = (ca_dir / "ca.crt").read_bytes()
    chosen = acme_scenarios(scenarios)
    if not chosen:
        (work / TRUST_FILE).write_bytes(lab_ca)
        return []
    binary = pebble_binary()
    if binary is None:
        raise LabError("the lab's ACME policy hosts need pebble (Debian package pebble)")

    # Pebble, with an HTTPS certificate for 127.0.0.1 from the lab CA
    cert_pem, key_pem = load_ca(ca_dir, create=False).issue(["127.0.0.1", "localhost"], fresh_key=True)
    write_pem(work / "pebble-cert.pem", cert_pem)
    write_pem(work / "pebble-key.pem", key_pem)
    write_config(work / "pebble.json", listen=PEBBLE_LISTEN, management=PEBBLE_MANAGEMENT,
                 cert=work / "pebble-cert.pem", key=work / "pebble-key.pem", http_port=80, tls_port=443)
    pebble_log = work / "pebble.log"
    spawn_and_wait(topo, topo.inet_ns, "pebble",
                   [binary, "-config", str(work / "pebble.json"), "-strict=false",
                    "-dnsserver", f"{topo.resolver_ip}:53"],
                   pebble_log, lambda: "ACME directory available at" in _read(pebble_log), env=environment())
    roots = _pebble_roots(topo, ca_dir)
    (work / TRUST_FILE).write_bytes(lab_ca.rstrip(b"\n") + b"\n" + roots)

    # serve-policy: one policy file per ACME domain, one listener per policy host address
    policies = work / "policies"
    shutil.rmtree(policies, ignore_errors=True)
    policies.mkdir(mode=0o755)
    hosts = []
    listen: list[str] = []
    for sc in chosen:
        assert sc.sts is not None and sc.policy_host_name is not None
        (policies / f"{sc.domain}.txt").write_text(sc.sts.policy_text(), encoding="utf-8")
        hosts.append(sc.policy_host_name)
        listen += ["--listen", f"{addresses[sc.policy_host_name]}:443"]
    serve_log = work / "serve-policy.log"
    mxsec = str(Path(sys.executable).with_name("mxsec"))
    spawn_and_wait(topo, topo.inet_ns, "serve-policy",
                   [mxsec, "serve-policy", "--policy-dir", str(policies), "--acme-directory", ACME_DIRECTORY,
                    "--acme-ca-bundle", str(ca_dir / "ca.crt"), "--acme-state", str(work / "state"),
                    "--acme-email", "hostmaster@lab.test", "--acme-retry", "2", "--reuse-port", *listen,
                    "--log-format", "json"],
                   serve_log, lambda: all(_obtained(serve_log, h) for h in hosts), timeout=timeout)
    return hosts


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _obtained(log: Path, host: str) -> bool:
    for line in _read(log).splitlines():
        try:
            record: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        if record.get("msg") in ("certificate obtained", "certificate loaded") and record.get("host") == host:
            return True
    return False


def _pebble_roots(topo: Topology, ca_dir: Path, timeout: float = 15.0) -> bytes:
    """Pebble's root and intermediate, asked from inside the internet namespace (the host never talks to the
    lab's addresses)."""
    script = (
        "import ssl, sys, urllib.request\n"
        f"ctx = ssl.create_default_context(cafile={str(ca_dir / 'ca.crt')!r})\n"
        "for part in ('roots/0', 'intermediates/0'):\n"
        f"    with urllib.request.urlopen('https://{PEBBLE_MANAGEMENT}/' + part, context=ctx, timeout=5) as r:\n"
        "        sys.stdout.write(r.read().decode().strip() + '\\n')\n"
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            done = topology.check_in(topo.inet_ns, [sys.executable, "-c", script], timeout=10)
            if "BEGIN CERTIFICATE" in done.stdout:
                return done.stdout.encode()
        except (subprocess.SubprocessError, LabError, OSError):
            pass
        if time.monotonic() > deadline:
            raise LabError("cannot read Pebble's root certificate from its management interface")
        time.sleep(0.2)
