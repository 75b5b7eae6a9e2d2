"""The lab runner: bring the whole lab up, send one message per scenario with the real Postfix, compare.

::

    up(topo, scenarios_file=None)   namespaces → addresses → lab CA → MX farm (inet ns) → TLSA data from the MX
                                    certificates → policy hosts (inet ns) → Knot + Unbound → mxsec daemon
                                    (sender ns, 127.0.0.1:8461) → Postfix (sender ns). Everything is recorded
                                    in the lab state; on any failure the lab is torn down again.
    run(topo, names=None)           one message per scenario (all at once), wait for Postfix's verdicts, read
                                    what the MX hosts saw, ask the daemon what it answers → list[Row]
    down(topo)                      stop Postfix, unregister its directory, destroy the lab (idempotent)
    lab_status(topo)                JSON-able summary

``up``, ``run`` and ``down`` may run in different processes: ``run`` finds everything through the state file.
Every wait is bounded; nothing is sent from the host's namespace to a lab address (socketmap queries and DNS
queries go through sockets created inside the sender namespace, Postfix commands run under
``ip netns exec <sender ns>``).

The scenario ``sts-id-change`` (any scenario with ``sts.next_id``) gets a second message: after the first one
is delivered, the runner publishes ``next_id`` in the ``_mta-sts`` TXT record and a changed policy (one more
``mx`` pattern, ``mx-next.<domain>``), waits until the daemon has fetched it (its cache holds the new id and
its socketmap answer changed; the lab daemon re-checks ids every 2 s), then sends the second message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mxsec.fsutil import make_dirs
from mxsec.lab import acme, policyhosts, topology
from mxsec.lab import state as lab_state
from mxsec.lab.dns import LabDns, tlsa_311
from mxsec.lab.scenarios import (
    Scenario,
    load_scenarios,
    tlsa_rdatas,
    zone_specs,
)
from mxsec.lab.topology import LabError, Topology

__all__ = [
    "DAEMON_PORT",
    "SENDER",
    "LabPaths",
    "Row",
    "ask_daemon",
    "down",
    "lab_status",
    "run",
    "summary",
    "up",
]

DAEMON_PORT = 8461
SENDER = "sender@sender.lab.test"
MXSEC = str(Path(sys.executable).with_name("mxsec"))
Progress = Callable[[str], None]

LAB_CONFIG = """\
# mxsec daemon configuration for the lab (written by mxsec.lab.runner)
[refresh]
# walk the cache every second and re-check _mta-sts ids after 2 s, so a new id is picked up within seconds
interval = 1
recheck_after = 2

# the map name of the old behaviour: match= lists the policy's patterns, not the allowed MX host names
# (used by the attacker tests to show what strict_mx_names protects against, sts-strict-mx-names)
[daemon.zones.postfix-loose]
strict_mx_names = false
"""
#: the daemon map name whose enforce answers list the policy's patterns (``strict_mx_names = false``)
LOOSE_MAP = "postfix-loose"


def _quiet(_msg: str) -> None:
    pass


@dataclass(frozen=True)
class LabPaths:
    """Where each component keeps its files, under the lab's state directory."""

    root: Path

    @classmethod
    def of(cls, topo: Topology) -> LabPaths:
        return cls(topo.state_dir)

    @property
    def scenarios(self) -> Path:  # the scenario file the lab was brought up with (a copy)
        return self.root / "scenarios.toml"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def ca_file(self) -> Path:
        return self.ca_dir / "ca.crt"

    @property
    def mail_dir(self) -> Path:
        return self.root / "mx"

    @property
    def policy_dir(self) -> Path:
        return self.root / "policyhosts"

    @property
    def policy_spec(self) -> Path:
        return self.policy_dir / "policy.json"

    @property
    def daemon_dir(self) -> Path:
        return self.root / "daemon"

    @property
    def daemon_log(self) -> Path:
        return self.daemon_dir / "daemon.log"

    @property
    def daemon_cache(self) -> Path:
        return self.daemon_dir / "cache.sqlite3"

    @property
    def daemon_config(self) -> Path:
        return self.daemon_dir / "mxsec.toml"

    @property
    def postfix_dir(self) -> Path:
        return self.root / "postfix"


# --------------------------------------------------------------------------------------------- up / down


def up(topo: Topology, scenarios_file: str | os.PathLike[str] | None = None, *,
       progress: Progress = _quiet) -> dict[str, Any]:
    """Bring the lab up (see the module docstring); returns :func:`lab_status`. Raises :class:`LabError` (or
    the component's error) after tearing everything down again when any step fails."""
    scenarios = load_scenarios(scenarios_file)  # validated before anything is created
    text = (Path(scenarios_file).read_text(encoding="utf-8") if scenarios_file is not None
            else _packaged_scenarios_text())
    started = time.monotonic()
    topology.create(topo)
    try:
        _up(topo, scenarios, text, progress)
    except BaseException:
        progress("failure: tearing the lab down again")
        down(topo)
        raise
    progress(f"lab {topo.prefix!r} up in {time.monotonic() - started:.1f} s")
    return lab_status(topo)


def _packaged_scenarios_text() -> str:
    from importlib import resources

    return resources.files("mxsec.lab").joinpath("scenarios.toml").read_text(encoding="utf-8")


def _step(progress: Progress, what: str) -> Callable[[], None]:
    t0 = time.monotonic()
    return lambda: progress(f"{what} ({time.monotonic() - t0:.1f} s)")


def _up(topo: Topology, scenarios: list[Scenario], scenarios_text: str, progress: Progress) -> None:
    from mxsec.testing.pki import TestCA
    from mxsec.lab import tlsrpt as loop
    from mxsec.lab.mx import save_ca

    paths = LabPaths.of(topo)
    for d in (paths.ca_dir, paths.mail_dir, paths.policy_dir, paths.daemon_dir):
        make_dirs(d, 0o755)
    paths.scenarios.write_text(scenarios_text, encoding="utf-8")
    loop.check_names(scenarios)
    addresses = loop.lab_addresses(scenarios, topo)  # the scenario hosts, then the TLSRPT receiving side
    topology.add_addresses(topo, addresses.values())
    with lab_state.update(topo.prefix) as st:
        st.extra["lab"] = {
            "scenarios": [sc.name for sc in scenarios],
            "addresses": addresses,
            "postfix_dir": str(paths.postfix_dir),  # recorded before Postfix is set up: down unregisters it
            "daemon": f"127.0.0.1:{DAEMON_PORT}",
            "policy_generation": 1,
            "changed": {},
        }
    progress(f"namespaces {topo.inet_ns} + {topo.sender_ns}, {len(addresses)} host addresses")

    save_ca(TestCA("mxsec lab root CA"), paths.ca_dir)
    loop.prepare(topo, paths.ca_dir)  # DKIM key of sender.test, HTTPS certificate of reports.test

    done = _step(progress, "MX farm")
    _start_mx_farm(topo, scenarios, addresses, paths)
    tlsa = _tlsa_data(scenarios, paths)
    done()

    done = _step(progress, "policy hosts")
    policyhosts.write_spec(paths.policy_spec, policyhosts.spec_for_scenarios(scenarios, 1))
    _spawn_and_wait(
        topo, topo.inet_ns, "policy-hosts",
        [sys.executable, "-m", "mxsec.lab.policyhosts", "--spec", str(paths.policy_spec),
         "--ca-dir", str(paths.ca_dir), "--state-dir", str(paths.policy_dir), "--https", "0.0.0.0:443"],
        paths.policy_dir / "policyhosts.log", lambda: (paths.policy_dir / policyhosts.READY).exists(),
    )
    done()

    done = _step(progress, f"DNS: Knot + Unbound, {len(scenarios)} zones")
    LabDns(topo).start(zone_specs(scenarios, addresses, tlsa) + loop.zone_specs(topo, addresses))
    done()

    hosts = acme.acme_scenarios(scenarios)
    acme_done = _step(progress, f"ACME: Pebble + mxsec serve-policy for {len(hosts)} policy hosts") if hosts else None
    acme.start(topo, scenarios, addresses, paths.root, paths.ca_dir, _spawn_and_wait)
    if acme_done is not None:
        acme_done()

    done = _step(progress, f"mxsec reports serve on {loop.REPORTS_WEB}:{loop.HTTPS_PORT}")
    loop.start_receiver(topo, addresses, _spawn_and_wait)
    done()

    done = _step(progress, f"mxsec daemon in {topo.sender_ns} on 127.0.0.1:{DAEMON_PORT}")
    _start_daemon(topo, paths, scenarios)
    done()

    done = _step(progress, f"Postfix in {topo.sender_ns}")
    pf = lab_postfix(topo)
    pf.setup()
    pf.start()
    done()


def _spawn_and_wait(topo: Topology, ns: str, name: str, argv: list[str], log: Path,
                    ready: Callable[[], bool], timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
    proc = topology.spawn(topo, ns, name, argv, log, env=env)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise LabError(f"{name} exited with {proc.returncode}: {_tail(log)}")
        if time.monotonic() > deadline:
            raise LabError(f"{name} not ready after {timeout:g} s: {_tail(log)}")
        time.sleep(0.05)


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _start_mx_farm(topo: Topology, scenarios: list[Scenario], addresses: dict[str, str], paths: LabPaths) -> None:
    from mxsec.lab import tlsrpt as loop
    from mxsec.lab.mx import MxSpec

    specs = [MxSpec(m.host, addresses[m.host], m.cert, cert_name=m.cert_name) for sc in scenarios for m in sc.mx]
    specs.append(loop.mx_spec(addresses))  # mx.reports.test: where the lab's mailed TLS reports go
    spec_file = paths.mail_dir / "mx-spec.json"
    spec_file.write_text(json.dumps([dataclasses.asdict(s) for s in specs], indent=1), encoding="utf-8")
    ready = paths.mail_dir / "ready"
    ready.unlink(missing_ok=True)
    _spawn_and_wait(
        topo, topo.inet_ns, "mx-farm",
        [sys.executable, "-m", "mxsec.lab.mx", "--spec", str(spec_file), "--mail-dir", str(paths.mail_dir),
         "--ca-dir", str(paths.ca_dir), "--ready-file", str(ready)],
        paths.mail_dir / "mx-farm.log", ready.exists,
    )


def _tlsa_data(scenarios: list[Scenario], paths: LabPaths) -> dict[str, list[str]]:
    """TLSA rdatas per MX host of every scenario with ``tlsa``: ``current`` from the certificate the MX
    presents, ``other`` from a freshly made key that no lab certificate uses (so a mismatch really is one)."""
    from cryptography.hazmat.primitives import serialization

    from mxsec.testing.pki import new_key

    spki = new_key().public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    other = "3 1 1 " + hashlib.sha256(spki).hexdigest()
    out: dict[str, list[str]] = {}
    for sc in scenarios:
        if sc.tlsa is None:
            continue
        for m in sc.mx:
            cert = paths.mail_dir / m.host / "cert.pem"
            current = tlsa_311(cert.read_bytes()) if cert.exists() else other  # no-starttls: nothing to match
            if current == other:
                raise LabError(f"{m.host}: the 'other' TLSA key equals the MX key")
            out[m.host] = tlsa_rdatas(sc.tlsa, current, other)
    return out


def daemon_config_text(scenarios: Sequence[Scenario]) -> str:
    """The lab daemon's TOML: :data:`LAB_CONFIG` plus the ``[dane]`` lists asked for by scenarios'
    ``extra.dane`` (``"mandatory"`` or ``"disabled"``)."""
    lists: dict[str, list[str]] = {"mandatory": [], "disabled": []}
    for sc in scenarios:
        kind = sc.extra.get("dane")
        if kind is None:
            continue
        if kind not in lists:
            raise LabError(f"scenario {sc.name}: extra.dane must be 'mandatory' or 'disabled', got {kind!r}")
        lists[kind].append(sc.domain)
    text = LAB_CONFIG
    if any(lists.values()):
        text += "[dane]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in lists.items() if v)
    return text


def _start_daemon(topo: Topology, paths: LabPaths, scenarios: Sequence[Scenario]) -> None:
    from mxsec.lab import tlsrpt as loop

    paths.daemon_config.write_text(daemon_config_text(scenarios) + loop.daemon_config(topo), encoding="utf-8")
    argv = [
        MXSEC, "daemon",
        "--listen", f"127.0.0.1:{DAEMON_PORT}",
        "--cache", f"sqlite:///{paths.daemon_cache}",
        "--config", str(paths.daemon_config),
        "--nameserver", topo.resolver_ip,
        "--ca-file", str(acme.trust_bundle(paths.root)),  # the lab CA and Pebble's root
        "--allow-address", topo.host_net,
        "--allow-address", topo.dns_net,
        "--timeout", "3",
        "--log-format", "json",
    ]
    _spawn_and_wait(topo, topo.sender_ns, "mxsec-daemon", argv, paths.daemon_log,
                    lambda: '"msg": "ready"' in _tail(paths.daemon_log, 1 << 20))


def lab_postfix(topo: Topology) -> Any:
    """The lab's Postfix instance (every Postfix command runs inside the sender namespace)."""
    from mxsec.lab.postfix import Postfix, PostfixSpec

    class NsPostfix(Postfix):
        """Runs every Postfix command (start, stop, sendmail, postqueue…) under ``ip netns exec``: even an
        unexpected DNS lookup then stays inside the lab."""

        ns_cmd = ("ip", "netns", "exec", topo.sender_ns)

        def _run(self, args: Sequence[str], **kwargs: Any) -> Any:
            return super()._run([*self.ns_cmd, *args], **kwargs)

        def _run_tty(self, args: Sequence[str], **kwargs: Any) -> Any:
            return super()._run_tty([*self.ns_cmd, *args], **kwargs)

    paths = LabPaths.of(topo)
    spec = PostfixSpec(
        directory=paths.postfix_dir,
        policy_map=f"127.0.0.1:{DAEMON_PORT}",
        ca_file=paths.ca_file,
        netns_cmd=None,
        myhostname="sender.lab.test",
        smtpd_listen="127.0.0.1:25",  # the relay of `mxsec tlsrpt send` (the closed TLSRPT loop)
    )
    return NsPostfix(spec)


def down(topo: Topology) -> list[str]:
    """Stop Postfix, remove its entry from ``alternate_config_directories``, destroy the lab. Idempotent."""
    from mxsec.lab.postfix import unregister_config_dir

    done: list[str] = []
    st = lab_state.load(topo.prefix)
    pf_dir = (st.extra.get("lab", {}) if st else {}).get("postfix_dir")
    if pf_dir:
        if topology.exists(topo) and (Path(pf_dir) / "etc" / "main.cf").exists():
            try:
                lab_postfix(topo).stop(timeout=10)
                done.append("stopped Postfix")
            except Exception as exc:  # noqa: BLE001 - destroy kills what is left
                done.append(f"Postfix stop: {exc}")
        unregister_config_dir(Path(pf_dir) / "etc")
        done.append(f"unregistered {pf_dir}/etc from alternate_config_directories")
    done += topology.destroy(topo)
    return done


def lab_status(topo: Topology) -> dict[str, Any]:
    out = topology.status(topo)
    lab = out.get("extra", {}).get("lab", {})
    pf_pid = None
    if lab.get("postfix_dir") and topology.exists(topo):
        pf_pid = lab_postfix(topo).master_pid()
    out["lab"] = {
        "postfix_master_pid": pf_pid,
        "scenarios": lab.get("scenarios", []),
        "daemon": lab.get("daemon"),
        "postfix_dir": lab.get("postfix_dir"),
        "hosts": lab.get("addresses", {}),
    }
    out.pop("extra", None)
    return out


# --------------------------------------------------------------------------------------------- queries


def ask_daemon(topo: Topology, keys: Sequence[str], map_name: str = "postfix", timeout: float = 35.0) -> list[str]:
    """Ask the lab's daemon (pipelined, one connection from inside the sender namespace) for ``keys``."""
    from mxsec.daemon.socketmap import NetstringDecoder, encode

    sock = topology.netns_socket(topo.sender_ns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", DAEMON_PORT))
        sock.sendall(b"".join(encode(f"{map_name} {k}".encode()) for k in keys))
        decoder = NetstringDecoder(max_payload=1 << 20)
        replies: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(replies) < len(keys):
            if time.monotonic() > deadline:
                raise TimeoutError("daemon did not answer in time")
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"daemon closed after {len(replies)} of {len(keys)} replies")
            for item in decoder.feed(data):
                if not isinstance(item, bytes):
                    raise ConnectionError(f"the daemon's replies break the netstring framing: {item.reason}")
                replies.append(item)
        return [bytes(r).decode() for r in replies[: len(keys)]]
    finally:
        sock.close()


def _cached_policies(paths: LabPaths) -> dict[str, Any]:
    """The daemon's cache, read from its SQLite file (domain → CacheEntry)."""
    from mxsec.storage.sqlite import SqliteStore

    if not paths.daemon_cache.exists():
        return {}
    store = SqliteStore(str(paths.daemon_cache))
    try:
        return {e.domain: e for e in store.load_all()}
    finally:
        store.close()


def _daemon_notes(paths: LabPaths) -> dict[str, str]:
    """Per domain, the last thing the daemon logged about a failed or absent policy (its reason)."""
    notes: dict[str, str] = {}
    try:
        text = paths.daemon_log.read_text(errors="replace")
    except OSError:
        return notes
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        domain = rec.get("domain")
        if not isinstance(domain, str):
            continue
        what = rec.get("result_type") or rec.get("reason") or rec.get("detail")
        if what and rec.get("level") in ("warning", "error", "info"):
            notes[domain] = str(what)
    return notes


# --------------------------------------------------------------------------------------------- run


@dataclass
class Row:
    """One scenario's result (JSON-able with :meth:`to_json`)."""

    scenario: str
    domain: str
    about: str
    expected: str
    policy: str = ""
    reply: str = ""
    actual: str = ""
    tls_seen: str = ""
    verdict: str = "FAIL"  # ok | FAIL | xfail | XPASS
    problems: list[str] = field(default_factory=list)
    xfail: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)  # per message: rcpt, status, reason, tls, mx

    @property
    def failed(self) -> bool:
        return self.verdict == "FAIL"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _expected_text(sc: Scenario) -> str:
    x = sc.expect
    if x.delivered:
        return {"verified": "delivered, verified TLS", "dane": "delivered, DANE", "any": "delivered"}[x.tls or "any"]
    return f"deferred: {x.reason}"


def _short_reply(reply: str, domain: str) -> str:
    return reply.replace("." + domain, ".…").strip() or repr(reply)


def _load_lab(topo: Topology) -> tuple[LabPaths, list[Scenario], dict[str, Any]]:
    st = lab_state.load(topo.prefix)
    if st is None or "lab" not in st.extra or not topology.exists(topo):
        raise LabError(f"lab {topo.prefix!r} is not up: run `mxsec lab up` first")
    paths = LabPaths.of(topo)
    return paths, load_scenarios(paths.scenarios), dict(st.extra["lab"])


def _policy_pid(topo: Topology) -> int:
    st = lab_state.load(topo.prefix)
    for p in st.processes if st else []:
        if p.name == "policy-hosts" and topology._alive(p.pid):
            return p.pid
    raise LabError("the policy hosts process is not running")


def _set_policy_state(topo: Topology, paths: LabPaths, scenarios: list[Scenario], changed: dict[str, bool]) -> int:
    """Publish, for every scenario with ``sts.next_id``, the original (``changed[domain]`` false) or the next
    TXT id and policy; returns the policy generation now served."""
    with lab_state.update(topo.prefix) as st:
        lab = st.extra["lab"]
        generation = int(lab.get("policy_generation", 1)) + 1
        lab["policy_generation"] = generation
        lab["changed"] = {**lab.get("changed", {}), **changed}
        all_changed = dict(lab["changed"])
    bodies = {sc.domain: _next_policy_text(sc) for sc in scenarios if all_changed.get(sc.domain)}
    policyhosts.write_spec(paths.policy_spec, policyhosts.spec_for_scenarios(scenarios, generation, bodies))
    policyhosts.reload(_policy_pid(topo), paths.policy_dir, generation)
    dns = LabDns(topo)
    for sc in scenarios:
        if sc.domain in changed and sc.sts is not None:
            new_id = sc.sts.next_id if changed[sc.domain] else sc.sts.id
            dns.set_rrset(sc.domain, "_mta-sts", "TXT", [f'"{sc.sts.txt(new_id)}"'])
    return generation


def _next_policy_text(sc: Scenario) -> str:
    assert sc.sts is not None
    extra = f"mx-next.{sc.domain}"
    return dataclasses.replace(sc.sts, mx=(*sc.sts.mx, extra)).policy_text()


def _wait_daemon_id(topo: Topology, paths: LabPaths, domain: str, policy_id: str, before: str | None,
                    timeout: float = 30.0) -> str:
    """Wait until the daemon's cache holds ``policy_id`` for ``domain`` and (when ``before`` is given) its
    socketmap answer under :data:`LOOSE_MAP` (the policy's patterns; the strict answer lists only the MX hosts,
    which the changed policy does not change) differs from ``before``; returns that answer."""
    deadline = time.monotonic() + timeout
    while True:
        entry = _cached_policies(paths).get(domain)
        if entry is not None and entry.policy_id == policy_id:
            reply = ask_daemon(topo, [domain], map_name=LOOSE_MAP)[0]
            if before is None or reply != before:
                return reply
        if time.monotonic() > deadline:
            got = entry.policy_id if entry is not None else None
            raise LabError(f"daemon did not pick up id {policy_id} of {domain} within {timeout:g} s (cache id {got})")
        time.sleep(0.2)


def run(topo: Topology, names: Iterable[str] | None = None, *, timeout: float = 60.0,
        progress: Progress = _quiet) -> list[Row]:
    """Send one message per selected scenario through the lab's Postfix and compare with the expectations."""
    paths, scenarios, lab = _load_lab(topo)
    every = list(scenarios)  # the policy hosts serve all of them, whatever is selected
    if names:
        wanted = list(dict.fromkeys(names))
        by_name = {sc.name: sc for sc in scenarios}
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise LabError(f"unknown scenario(s): {', '.join(unknown)} (known: {', '.join(by_name)})")
        scenarios = [by_name[n] for n in wanted]
    pf = lab_postfix(topo)
    if not pf.running():
        raise LabError("the lab's Postfix is not running")
    started = time.monotonic()
    wall_start = time.time()
    deadline = started + timeout
    tag = secrets.token_hex(3)
    two_step = [sc for sc in scenarios if sc.sts is not None and sc.sts.next_id]

    # A previous run may have left a changed id published: go back to the original, wait for the daemon.
    stale = [sc for sc in two_step if lab.get("changed", {}).get(sc.domain)]
    if stale:
        progress("restoring the original _mta-sts id of " + ", ".join(sc.name for sc in stale))
        _set_policy_state(topo, paths, every, {sc.domain: False for sc in stale})
        for sc in stale:
            assert sc.sts is not None
            _wait_daemon_id(topo, paths, sc.domain, sc.sts.id, None)
    pf.delete_queue()  # deferred leftovers of an earlier run would be retried in the middle of this one

    rcpt = {sc.name: f"{tag}-1@{sc.domain}" for sc in scenarios}
    for sc in scenarios:
        qid = pf.send(SENDER, rcpt[sc.name], subject=f"mxsec lab {sc.name}", body=f"{sc.about}\n", timeout=15)
        if qid is None:
            raise LabError(f"{sc.name}: the message did not show up in Postfix's log")
    pf.flush()
    progress(f"sent {len(scenarios)} messages ({time.monotonic() - started:.1f} s)")
    outcomes = _wait_outcomes(pf, list(rcpt.values()), deadline)
    progress(f"Postfix verdicts for {len(outcomes)} messages ({time.monotonic() - started:.1f} s)")

    second: dict[str, tuple[str, str, str]] = {}  # scenario -> (rcpt, reply before, reply after)
    for sc in two_step:
        assert sc.sts is not None and sc.sts.next_id is not None
        if outcomes[rcpt[sc.name]].status != "sent":
            continue  # the first message failed already; the row says why
        before = ask_daemon(topo, [sc.domain], map_name=LOOSE_MAP)[0]
        t0 = time.monotonic()
        _set_policy_state(topo, paths, every, {sc.domain: True})
        after = _wait_daemon_id(topo, paths, sc.domain, sc.sts.next_id, before,
                                timeout=max(5.0, deadline - time.monotonic()))
        progress(f"{sc.name}: id {sc.sts.id} → {sc.sts.next_id} picked up by the daemon in "
                 f"{time.monotonic() - t0:.1f} s")
        r2 = f"{tag}-2@{sc.domain}"
        if pf.send(SENDER, r2, subject=f"mxsec lab {sc.name} (after the id change)", timeout=15) is None:
            raise LabError(f"{sc.name}: the second message did not show up in Postfix's log")
        pf.flush()
        outcomes.update(_wait_outcomes(pf, [r2], deadline))
        second[sc.name] = (r2, before, after)

    keys = [sc.domain for sc in scenarios]
    replies = dict(zip(keys, ask_daemon(topo, keys), strict=True))
    cache = _cached_policies(paths)
    notes = _daemon_notes(paths)
    rows = []
    for sc in scenarios:
        msgs: list[str | None] = [rcpt[sc.name]]
        reply = _short_reply(replies[sc.domain], sc.domain)
        if sc.name in second:
            r2, before, after = second[sc.name]
            msgs.append(r2)
            reply = f"{_short_reply(before, sc.domain)} → {_short_reply(after, sc.domain)}"
        elif sc in two_step:
            msgs.append(None)  # not sent: the first message failed
        rows.append(_judge(sc, paths, msgs, outcomes, reply, _policy_text(sc, cache, notes), wall_start))
    progress(f"run finished in {time.monotonic() - started:.1f} s")
    return rows


def _policy_text(sc: Scenario, cache: dict[str, Any], notes: dict[str, str]) -> str:
    entry = cache.get(sc.domain)
    if entry is not None:
        return f"{entry.mode} (id {entry.policy_id})"
    note = notes.get(sc.domain)
    return f"no ({note})" if note else "no"


def _wait_outcomes(pf: Any, rcpts: list[str], deadline: float) -> dict[str, Any]:
    from mxsec.lab.postfix import outcome_from_log

    while True:
        text = pf.log_text()
        result = {r: outcome_from_log(text, r) for r in rcpts}
        if all(o.status != "pending" for o in result.values()) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def _mx_facts(sc: Scenario, paths: LabPaths, rcpt: str, since: float) -> tuple[Any, list[Any]]:
    """The stored message for ``rcpt`` (or None) and the session records of the scenario's MX hosts that
    started at or after ``since`` (unix time)."""
    from mxsec.lab.mx import read_received, read_sessions

    got = None
    sessions: list[Any] = []
    for m in sc.mx:
        for rec in read_received(paths.mail_dir, m.host):
            if rcpt in rec.rcpt_tos:
                got = rec
        for s in read_sessions(paths.mail_dir, m.host):
            try:
                if datetime.fromisoformat(s.started_at).timestamp() >= since - 1:
                    sessions.append(s)
            except ValueError:
                continue
    return got, sessions


def _tls_seen(got: Any, sessions: list[Any], domain: str) -> str:
    """What the MX side saw: the delivering session's TLS, else a summary of the connections without mail."""
    def sni(name: str | None) -> str:
        return "no SNI" if not name else "SNI " + name.replace("." + domain, ".…")

    if got is not None:
        return f"{got.tls_version}, {sni(got.sni)}" if got.tls else "plaintext"
    if not sessions:
        return "no connection"
    s = sessions[-1]
    more = f" (×{len(sessions)})" if len(sessions) > 1 else ""
    if s.tls:
        return f"{s.tls_version}, {sni(s.sni)}; closed, no mail{more}"
    if s.tls_error:
        return f"TLS failed: {_short_reason(s.tls_error, 40)}{more}"
    if s.starttls:
        return f"STARTTLS refused, no mail{more}"
    return f"plaintext, no STARTTLS, no mail{more}"


def _judge(sc: Scenario, paths: LabPaths, rcpts: list[str | None], outcomes: dict[str, Any], reply: str,
           policy: str, since: float) -> Row:
    row = Row(scenario=sc.name, domain=sc.domain, about=sc.about, expected=_expected_text(sc), policy=policy,
              reply=reply, xfail=sc.expect_fail_until)
    actual: list[str] = []
    seen: list[str] = []
    x = sc.expect
    for n, rcpt in enumerate(rcpts, 1):
        label = f"message {n}: " if len(rcpts) > 1 else ""
        if rcpt is None:
            row.problems.append(f"{label}not sent (the first message was not delivered)")
            actual.append(f"{label}not sent")
            continue
        o = outcomes[rcpt]
        got, sessions = _mx_facts(sc, paths, rcpt, since)
        seen.append(f"{label}{_tls_seen(got, sessions, sc.domain)}")
        row.messages.append({
            "rcpt": rcpt, "status": o.status, "reason": o.reason, "relay": o.relay, "dsn": o.dsn,
            "tls_trust": o.tls_trust, "tls_line": o.tls_line, "notes": list(o.notes), "status_line": o.status_line,
            "mx": {"tls": got.tls, "tls_version": got.tls_version, "sni": got.sni, "cipher": got.cipher,
                   "mx": got.mx} if got is not None else None,
        })
        if o.status == "sent":
            actual.append(f"{label}delivered" + (f", {o.tls_trust} TLS" if o.tls_trust else ", no TLS"))
        elif o.status == "pending":
            actual.append(f"{label}no verdict in time")
        else:
            actual.append(f"{label}{o.status}: {_short_reason((o.reason or '').replace('.' + sc.domain, '.…'))}")
        row.problems += [f"{label}{p}" for p in _check(x, o, got)]
    if x.reply is not None and not reply.startswith(x.reply):
        row.problems.append(f"expected the daemon to answer {x.reply!r}..., it answered {reply!r}")
    row.actual = "; ".join(actual)
    row.tls_seen = "; ".join(seen)
    passed = not row.problems
    if row.xfail:
        row.verdict = "XPASS" if passed else "xfail"
    else:
        row.verdict = "ok" if passed else "FAIL"
    return row


def _short_reason(reason: str, limit: int = 60) -> str:
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def _check(x: Any, o: Any, got: Any) -> list[str]:
    problems: list[str] = []
    if x.delivered:
        if o.status != "sent":
            problems.append(f"expected delivered, Postfix says {o.status} ({o.reason})")
            return problems
        if got is None:
            problems.append("Postfix says sent, but the MX stored no such message")
            return problems
        if x.tls in ("verified", "dane"):
            if o.tls_trust not in ("Verified", "Trusted"):
                problems.append(f"expected verified TLS, Postfix logged {o.tls_trust or 'no'} TLS")
            if not got.tls:
                problems.append("the MX did not see TLS")
    else:
        if o.status != "deferred":
            problems.append(f"expected deferred, Postfix says {o.status} ({o.reason})")
        text = "\n".join([o.reason or "", *o.notes])
        if x.reason and x.reason not in text:
            problems.append(f"reason {x.reason!r} not in Postfix's log for this message ({o.reason!r})")
        if got is not None:
            problems.append("the MX stored the message although it should have been deferred")
    return problems


def summary(rows: Sequence[Row]) -> dict[str, int]:
    out = {"ok": 0, "FAIL": 0, "xfail": 0, "XPASS": 0}
    for r in rows:
        out[r.verdict] = out.get(r.verdict, 0) + 1
    return out

