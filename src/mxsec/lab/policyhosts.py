"""The lab's MTA-STS policy hosts: one HTTPS server for every ``mta-sts.<domain>`` of the scenarios.

It is :class:`mxsec.testing.fakeworld.FakeWorld` (one HTTPS listener, a certificate per host chosen by SNI,
``/.well-known/mta-sts.txt`` served as each domain's :class:`~mxsec.testing.fakeworld.PolicySpec` says),
run inside the lab's internet namespace and bound to ``0.0.0.0:443`` there, which covers every ``/32`` on that
namespace's ``lo`` (each ``mta-sts.<domain>`` has its own address in the lab DNS). Certificates come from the
lab CA (``--ca-dir``, the one the MX farm and the sender trust). FakeWorld's own DNS server is not used: it
sits on ``127.0.0.1:0`` inside the namespace.

Command line, as the lab runner starts it (``ip netns exec <prefix>-inet …``)::

    python -m mxsec.lab.policyhosts --spec policy.json --ca-dir DIR --state-dir DIR [--https 0.0.0.0:443]

``policy.json`` is ``{"generation": N, "domains": {"<domain>": {<PolicySpec as JSON>}, ...}}`` (see
:func:`policy_spec_json`). Once listening the process writes ``STATE_DIR/ready.json``; on SIGHUP it re-reads
the spec file, applies it (replacing the policy of every domain named, removing domains no longer named) and
writes ``STATE_DIR/loaded.json`` with the generation it applied, so a caller in another process can change a
policy at run time (:func:`write_spec` + :func:`reload`). SIGTERM/SIGINT stop it cleanly.

Unlike FakeWorld's own command line, this one accepts any listen address: it is meant to run inside a lab
namespace, and the runner only ever starts it there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mxsec.fsutil import make_dirs
from mxsec.lab.scenarios import Scenario

__all__ = ["main", "policy_spec_json", "reload", "spec_for_scenarios", "wait_loaded", "write_spec"]

READY = "ready.json"
LOADED = "loaded.json"


def policy_spec_json(sc: Scenario, body: str | None = None) -> dict[str, Any] | None:
    """The :class:`PolicySpec` (as JSON) of ``sc``'s policy host, or ``None`` when it has no MTA-STS record.
    ``body`` replaces the policy text (run-time changes)."""
    if sc.sts is None or sc.policy_host is None or sc.policy_host.cert == "acme":
        return None  # no policy, or served by mxsec serve-policy with a certificate from Pebble (mxsec.lab.acme)
    ph = sc.policy_host
    spec: dict[str, Any] = {"body": body if body is not None else sc.sts.policy_text(), "cert": ph.cert}
    if ph.behaviour == "redirect":
        spec.update(status=301, body="moved\n", location=f"https://www.{sc.domain}/.well-known/mta-sts.txt")
    elif ph.behaviour == "404":
        spec.update(status=404, body="not found\n")
    return spec


def spec_for_scenarios(scenarios: Sequence[Scenario], generation: int = 1,
                       bodies: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The spec document for every scenario with a policy host; ``bodies`` overrides a domain's policy text."""
    domains: dict[str, Any] = {}
    for sc in scenarios:
        spec = policy_spec_json(sc, (bodies or {}).get(sc.domain))
        if spec is not None:
            domains[sc.domain] = spec
    return {"generation": generation, "domains": domains}


def write_spec(path: str | os.PathLike[str], document: Mapping[str, Any]) -> None:
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1))
    os.replace(tmp, p)


def reload(pid: int, state_dir: str | os.PathLike[str], generation: int, timeout: float = 10.0) -> None:
    """Ask the running process (``pid``) to re-read its spec file; wait until it applied ``generation``."""
    os.kill(pid, signal.SIGHUP)
    wait_loaded(state_dir, generation, timeout)


def wait_loaded(state_dir: str | os.PathLike[str], generation: int, timeout: float = 10.0) -> None:
    path = Path(state_dir) / LOADED
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            if int(json.loads(path.read_text()).get("generation", -1)) >= generation:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"policy hosts did not load generation {generation} in {timeout:g} s")
        time.sleep(0.05)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _apply(world: Any, spec_file: Path, state_dir: Path) -> int:
    from mxsec.testing.fakeworld import PolicySpec

    document = json.loads(spec_file.read_text(encoding="utf-8"))
    generation = int(document.get("generation", 0))
    wanted = dict(document.get("domains") or {})
    for domain in set(world.domains) - set(wanted):
        world.remove_domain(domain)
    for domain, policy in wanted.items():
        world.set_policy(domain, PolicySpec.from_json(policy))
    world.prewarm()
    _write_json(state_dir / LOADED, {"generation": generation, "domains": sorted(wanted)})
    return generation


async def _serve(spec_file: Path, ca_dir: Path, state_dir: Path, https: tuple[str, int]) -> int:
    from mxsec.testing.fakeworld import FakeWorld
    from mxsec.lab.mx import load_ca

    make_dirs(state_dir, 0o755)
    for name in (READY, LOADED):
        (state_dir / name).unlink(missing_ok=True)
    # SO_REUSEPORT: `mxsec serve-policy` may serve some policy hosts on their own addresses, port 443 too
    world = FakeWorld(dns=("127.0.0.1", 0), https=https, state_dir=state_dir / "world",
                      ca=load_ca(ca_dir, create=False), reuse_port=True)
    generation = _apply(world, spec_file, state_dir)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def on_hup() -> None:
        try:
            gen = _apply(world, spec_file, state_dir)
            print(f"mxsec lab policy hosts: loaded generation {gen}", flush=True)
        except Exception as exc:  # noqa: BLE001 - keep serving the previous policies
            print(f"mxsec lab policy hosts: reload failed: {type(exc).__name__}: {exc}", flush=True)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await world.start()
    try:
        _write_json(state_dir / READY, {"pid": os.getpid(), "https": list(world.https_address),
                                        "generation": generation, "domains": world.domains})
        print(f"mxsec lab policy hosts ready: {len(world.domains)} domains on "
              f"{world.https_address[0]}:{world.https_address[1]}", flush=True)
        await stop.wait()
    finally:
        (state_dir / READY).unlink(missing_ok=True)
        await world.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mxsec.lab.policyhosts", description="lab MTA-STS policy hosts")
    parser.add_argument("--spec", required=True, help="JSON: {generation, domains: {domain: PolicySpec}}")
    parser.add_argument("--ca-dir", required=True, help="directory with the lab CA's ca.crt + ca.key")
    parser.add_argument("--state-dir", required=True, help="ready.json, loaded.json, certificates")
    parser.add_argument("--https", default="0.0.0.0:443", help="listen address IP:PORT (default 0.0.0.0:443)")
    args = parser.parse_args(argv)
    host, _, port = args.https.rpartition(":")
    try:
        return asyncio.run(_serve(Path(args.spec), Path(args.ca_dir), Path(args.state_dir), (host, int(port))))
    except (OSError, ValueError) as exc:
        print(f"mxsec lab policy hosts: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
