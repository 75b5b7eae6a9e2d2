"""The attacker scenarios: the lab's on-path attacker (:mod:`mxsec.lab.attacker`) against the real Postfix and
the real Exim, one row per (attack, scenario, MTA).

``run_attacks(topo, mta, exim=None) -> list[AttackRow]`` runs four phases on a lab that is up (``runner.up``);
each phase switches its attacks on, sends one message per row, waits for the MTA's verdicts, checks the
evidence, empties the MTA's queue and switches the attacks off again:

1. **strip STARTTLS** on the MX of every *protected* scenario (an ``enforce`` MTA-STS policy, TLSA records in
   a signed zone, or DANE required by configuration) and of the unprotected controls (``no-policy``,
   ``sts-testing-bad-cert``, ``dane-unsigned-zone``).
2. **forged certificate**: every protected MX impersonated with a certificate for its own name from a CA
   nobody trusts; control ``no-policy``.
3. **one attack per representative domain**: a rogue MX with a valid certificate for its own name
   (``sts-enforce-ok``, ``dane-ok``), a self-signed certificate (``sts-wildcard-mx``), DNS dropped
   (``dane-rollover``), DNS delayed + STARTTLS stripped (``dane-cname-mx``), and — with the policy already
   cached by the daemon — HTTPS to the policy host dropped (``sts-id-change``) or delayed beyond the daemon's
   timeout (``sts-enforce-bad-cert``) or the ``_mta-sts`` record removed (NXDOMAIN, ``sts-enforce-mx-not-in-
   policy``) or its queries dropped (``sts-enforce-expired-cert``), each together with STARTTLS stripped.
4. **strict MX names** (``sts-strict-mx-names``: an MX name outside the policy with a valid certificate for
   ``victim.hosting.test``, which the ``*.hosting.test`` pattern covers): deferred; for Postfix also once
   through the daemon's map ``postfix-loose`` (``strict_mx_names = false``), where Postfix 3.7 delivers to the
   rogue — the weakness the strict answer closes.

A protected row is ``ok`` when the MTA deferred the message, it is still in the MTA's queue, the MX farm did
not store it and no impostor stored it. A control row is ``ok`` when the attack worked: delivered in clear
(strip) or to the impostor (forged certificate, ``postfix-loose``).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mxsec.lab import attacker, runner
from mxsec.lab.scenarios import Scenario
from mxsec.lab.topology import LabError, Topology

__all__ = ["CONTROLS", "AttackRow", "Step", "lab_exim", "protected", "run_attacks", "run_all", "stored_anywhere",
           "summary"]

#: scenarios nothing protects: the attacks must work there (proof that the attacker is real)
CONTROLS = ("no-policy", "sts-testing-bad-cert", "dane-unsigned-zone")
STRICT = "sts-strict-mx-names"

# expectations
DEFERRED = "deferred"
CLEAR = "downgraded: delivered in clear"
IMPOSTOR = "delivered to the impostor"
BOUNCED = "not delivered (bounced)"
#: scenarios whose message an MTA bounces rather than defers (none since the daemon answers Exim ``mode=temp``
#: for a destination that requires DANE without usable TLSA records, where ``hosts_require_dane`` bounced)
EXIM_BOUNCES: tuple[str, ...] = ()


@dataclass
class AttackRow:
    attack: str
    scenario: str
    mta: str
    expected: str
    actual: str = ""
    evidence: str = ""
    verdict: str = "FAIL"
    problems: list[str] = field(default_factory=list)
    rcpt: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict != "ok"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Step:
    """One attack switched on for one phase: ``attacker.attack(topo, kind, targets, **options)``."""

    kind: str
    targets: tuple[str, ...]
    options: tuple[tuple[str, Any], ...] = ()


def protected(sc: Scenario) -> bool:
    """An enforce MTA-STS policy the sender can fetch, TLSA records in a signed zone, or DANE required by the
    daemon's config. (An enforce policy behind a redirect, a 404 or a bad policy-host certificate is no policy
    at all — RFC 8461 §3.3 — so those domains are as open to the attacker as ``no-policy``.)"""
    ph = sc.policy_host
    fetchable = ph is None or (ph.behaviour == "ok" and ph.cert in ("valid", "acme"))
    return ((sc.sts is not None and sc.sts.mode == "enforce" and fetchable) or (sc.tlsa is not None and sc.signed)
            or sc.extra.get("dane") == "mandatory")


def _lab(topo: Topology) -> tuple[dict[str, Scenario], dict[str, str]]:
    _paths, scenarios, lab = runner._load_lab(topo)
    return {sc.name: sc for sc in scenarios}, dict(lab["addresses"])


def _mx_targets(sc: Scenario, hosts: dict[str, str], *, named: bool = False) -> list[str]:
    return [hosts[m.host] + (f"={m.host}" if named else "") for m in sc.mx]


Phase = tuple[list[Step], list[tuple[str, str, str]]]


def _phases(by: dict[str, Scenario], hosts: dict[str, str], mta: str) -> list[Phase]:
    """[(steps, [(attack label, scenario, expectation)])] for the scenarios this lab has."""
    prot = [n for n, sc in by.items() if protected(sc)]
    controls = [n for n in CONTROLS if n in by]
    phases: list[Phase] = []

    strip = [t for n in prot + controls for t in _mx_targets(by[n], hosts)]
    if strip:
        phases.append(([Step("strip-starttls", tuple(dict.fromkeys(strip)))],
                       [("strip STARTTLS", n, DEFERRED) for n in prot]
                       + [("strip STARTTLS", n, CLEAR) for n in controls]))

    forged_names = prot + (["no-policy"] if "no-policy" in by else [])
    forged = [t for n in forged_names for t in _mx_targets(by[n], hosts, named=True)]
    if forged:
        phases.append(([Step("forged-cert", tuple(dict.fromkeys(forged)), (("cert", "untrusted"),))],
                       [("forged certificate (untrusted CA, right name)", n, DEFERRED) for n in prot]
                       + ([("forged certificate (untrusted CA, right name)", "no-policy", IMPOSTOR)]
                          if "no-policy" in by else [])))

    steps: list[Step] = []
    rows: list[tuple[str, str, str]] = []

    def mx(name: str) -> tuple[str, ...]:
        return tuple(_mx_targets(by[name], hosts))

    def policy_host(name: str, port: int = 443) -> tuple[str, ...]:
        return (f"{hosts[by[name].policy_host_name]}:{port}",)

    wanted = {
        "rogue": [n for n in ("sts-enforce-ok", "dane-ok") if n in by],
        "self-signed": "sts-wildcard-mx", "dns-drop": "dane-rollover", "dns-delay": "dane-cname-mx",
        "https-drop": "sts-id-change", "https-delay": "sts-enforce-bad-cert",
        "sts-record": "sts-enforce-mx-not-in-policy", "sts-record-drop": "sts-enforce-expired-cert",
    }
    if wanted["rogue"]:
        steps.append(Step("rogue-mx", tuple(t for n in wanted["rogue"] for t in mx(n))))
        rows += [(f"rogue MX (valid certificate for {attacker.ROGUE_MX})", n, DEFERRED) for n in wanted["rogue"]]
    if (n := wanted["self-signed"]) in by:
        steps.append(Step("forged-cert", tuple(_mx_targets(by[n], hosts, named=True)), (("cert", "self-signed"),)))
        rows.append(("self-signed certificate", n, DEFERRED))
    if (n := wanted["dns-drop"]) in by:
        steps.append(Step("dns", (by[n].domain,), (("action", "drop"),)))
        rows.append(("DNS dropped (every name of the domain)", n, DEFERRED))
    if (n := wanted["dns-delay"]) in by:
        steps.append(Step("dns", (by[n].domain,), (("action", "delay"), ("seconds", 2.0))))
        steps.append(Step("strip-starttls", mx(n)))
        rows.append(("DNS delayed 2 s + strip STARTTLS", n, DEFERRED))
    if (n := wanted["https-drop"]) in by and by[n].sts is not None:
        steps.append(Step("drop", policy_host(n)))
        steps.append(Step("strip-starttls", mx(n)))
        rows.append(("policy host HTTPS dropped (policy cached) + strip STARTTLS", n, DEFERRED))
    if (n := wanted["https-delay"]) in by and by[n].sts is not None:
        steps.append(Step("delay", policy_host(n), (("seconds", 6.0),)))
        steps.append(Step("strip-starttls", mx(n)))
        rows.append(("policy host HTTPS delayed 6 s (policy cached) + strip STARTTLS", n, DEFERRED))
    if (n := wanted["sts-record"]) in by and by[n].sts is not None:
        steps.append(Step("sts-record", (by[n].domain,), (("action", "nxdomain"),)))
        steps.append(Step("strip-starttls", mx(n)))
        rows.append(("_mta-sts record removed (NXDOMAIN, policy cached) + strip STARTTLS", n, DEFERRED))
    if (n := wanted["sts-record-drop"]) in by and by[n].sts is not None:
        steps.append(Step("sts-record", (by[n].domain,), (("action", "drop"),)))
        steps.append(Step("strip-starttls", mx(n)))
        rows.append(("_mta-sts record queries dropped (policy cached) + strip STARTTLS", n, DEFERRED))
    if steps:
        phases.append((steps, rows))

    if STRICT in by:
        label = "strict MX names: rogue MX name, valid certificate for victim.hosting.test"
        phases.append(([], [(label, STRICT, DEFERRED)]))
        if mta == "postfix":
            phases.append(([], [(label + f" (map {runner.LOOSE_MAP}: strict_mx_names = false)", STRICT, IMPOSTOR)]))
    return phases


class _Mta:
    """What the phases need from an MTA: send a batch, outcomes, queue, clean up."""

    name = ""

    def send_all(self, rcpts: list[str], deadline: float) -> dict[str, Any]:
        raise NotImplementedError

    def queued(self, rcpt: str, outcome: Any) -> bool:
        raise NotImplementedError

    def clean(self) -> None:
        raise NotImplementedError


class _Postfix(_Mta):
    name = "Postfix"

    def __init__(self, topo: Topology) -> None:
        self.pf = runner.lab_postfix(topo)
        if not self.pf.running():
            raise LabError("the lab's Postfix is not running")
        self._queue: list[dict] | None = None

    def send_all(self, rcpts: list[str], deadline: float) -> dict[str, Any]:
        for r in rcpts:
            if self.pf.send(runner.SENDER, r, subject="mxsec lab attacker", timeout=15) is None:
                raise LabError(f"{r}: the message did not show up in Postfix's log")
        self.pf.flush()
        out = runner._wait_outcomes(self.pf, rcpts, deadline)
        self._queue = self.pf.queue()
        return out

    def queued(self, rcpt: str, outcome: Any) -> bool:
        for msg in self._queue or []:
            if msg.get("queue_name") in ("deferred", "active", "incoming", "hold") and any(
                    r.get("address") == rcpt for r in msg.get("recipients", [])):
                return True
        return False

    def clean(self) -> None:
        self.pf.delete_queue()

    def set_map(self, name: str) -> None:
        self.pf.postconf("-e", f"smtp_tls_policy_maps=socketmap:inet:127.0.0.1:{runner.DAEMON_PORT}:{name}")
        self.pf.reload()


class _Exim(_Mta):
    name = "Exim"

    def __init__(self, exim: Any) -> None:
        self.exim = exim
        self._queue: list[str] = []

    def send_all(self, rcpts: list[str], deadline: float) -> dict[str, Any]:
        out = {}
        for r in rcpts:
            self.exim.clear_retry()
            out[r] = self.exim.send(runner.SENDER, r, subject="mxsec lab attacker",
                                    timeout=max(10.0, deadline - time.monotonic()))
        self._queue = self.exim.queue_ids()
        return out

    def queued(self, rcpt: str, outcome: Any) -> bool:
        return outcome.message_id is not None and outcome.message_id in self._queue

    def clean(self) -> None:
        self.exim.delete_queue()


def _status(mta: _Mta, o: Any) -> tuple[str, str]:
    """(status, one-line description) from a Postfix Outcome or an EximOutcome."""
    status = o.status
    if status == "sent":
        status = "delivered"
    reason = (o.reason or "").strip()
    return status, f"{status}: {reason[:70]}" if reason and status != "delivered" else status


def _evidence(topo: Topology, sc: Scenario, rcpt: str) -> tuple[Any, Any]:
    """(the MX farm's stored message for rcpt or None, an impostor's stored message or None)."""
    from mxsec.lab.mx import read_received

    paths = runner.LabPaths.of(topo)
    real = next((rec for m in sc.mx for rec in read_received(paths.mail_dir, m.host) if rcpt in rec.rcpt_tos), None)
    fake = next((rec for rec in attacker.rogue_received(topo) if rcpt in rec.rcpt_tos), None)
    return real, fake


def _judge(row: AttackRow, status: str, queued: bool, real: Any, fake: Any) -> None:
    seen = []
    if real is not None:
        seen.append(f"MX {real.mx} stored it ({'TLS ' + str(real.tls_version) if real.tls else 'in clear'})")
    if fake is not None:
        seen.append(f"the attacker's {fake.mx} stored it ({'TLS' if fake.tls else 'in clear'})")
    if not seen:
        seen.append("nothing stored" + (", queued" if queued else ""))
    row.evidence = "; ".join(seen)
    p = row.problems
    if row.expected == DEFERRED:
        if status != "deferred":
            p.append(f"expected deferred, the MTA says {status}")
        if not queued:
            p.append("the message is not in the MTA's queue")
        if real is not None:
            p.append("the real MX stored the message")
        if fake is not None:
            p.append("an impostor stored the message")
    elif row.expected == BOUNCED:
        if status != "failed" or real is not None or fake is not None:
            p.append(f"expected a bounce and nothing stored, the MTA says {status}")
    elif row.expected == CLEAR:
        if status != "delivered" or real is None or real.tls:
            p.append("expected the strip to work (delivered in clear to the real MX)")
    elif row.expected == IMPOSTOR:
        if status != "delivered" or (fake is None and real is None):
            p.append("expected delivery to the impostor")
    row.verdict = "ok" if not p else "FAIL"


def run_attacks(topo: Topology, mta: str = "postfix", exim: Any = None, *, timeout: float = 90.0,
                progress: Callable[[str], None] = lambda _m: None) -> list[AttackRow]:
    """Run every attacker phase against ``mta`` (``postfix`` or ``exim``, then ``exim`` is an
    :class:`mxsec.lab.exim.Exim` set up in the lab); returns one row per (attack, scenario)."""
    by, hosts = _lab(topo)
    if mta == "postfix":
        agent: _Mta = _Postfix(topo)
    elif mta == "exim":
        if exim is None:
            raise LabError("run_attacks(mta='exim') needs the lab's Exim instance")
        agent = _Exim(exim)
    else:
        raise LabError(f"unknown MTA {mta!r}")
    rows: list[AttackRow] = []
    attacker.clear(topo)
    tag = secrets.token_hex(3)
    for number, (steps, wanted) in enumerate(_phases(by, hosts, mta), 1):
        t0 = time.monotonic()
        loose = any(runner.LOOSE_MAP in label for label, _n, _x in wanted)
        if any(s.kind in ("drop", "delay", "sts-record") for s in steps):
            _ensure_cached(topo, [by[n] for _l, n, _x in wanted])
        try:
            for s in steps:
                attacker.attack(topo, s.kind, list(s.targets), **dict(s.options))
            if loose:
                assert isinstance(agent, _Postfix)
                agent.set_map(runner.LOOSE_MAP)
            batch = [AttackRow(label, n, agent.name,
                               BOUNCED if mta == "exim" and n in EXIM_BOUNCES and x == DEFERRED else x,
                               rcpt=f"{tag}-a{number}-{i}@{by[n].domain}")
                     for i, (label, n, x) in enumerate(wanted)]
            outcomes = agent.send_all([r.rcpt for r in batch], time.monotonic() + timeout)
            for r in batch:
                o = outcomes[r.rcpt]
                status, r.actual = _status(agent, o)
                real, fake = _evidence(topo, by[r.scenario], r.rcpt)
                _judge(r, status, agent.queued(r.rcpt, o), real, fake)
            rows += batch
        finally:
            if loose:
                assert isinstance(agent, _Postfix)
                agent.set_map("postfix")
            agent.clean()
            attacker.clear(topo)
        progress(f"{agent.name}: attacker phase {number}: {len(wanted)} messages "
                 f"({time.monotonic() - t0:.1f} s)")
    return rows


def _ensure_cached(topo: Topology, scenarios: Sequence[Scenario]) -> None:
    """The attacks on policy discovery presume a cached policy: ask the daemon until it has one (bounded)."""
    paths = runner.LabPaths.of(topo)
    wanted = [sc.domain for sc in scenarios if sc.sts is not None and sc.sts.mode == "enforce"]
    deadline = time.monotonic() + 20
    while True:
        cached = runner._cached_policies(paths)
        missing = [d for d in wanted if d not in cached]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise LabError(f"the daemon has no cached policy for {', '.join(missing)}")
        runner.ask_daemon(topo, missing)
        time.sleep(0.2)


def summary(rows: Sequence[AttackRow]) -> dict[str, int]:
    return {"ok": sum(not r.failed for r in rows), "FAIL": sum(r.failed for r in rows)}


def lab_exim(topo: Topology) -> Any:
    """The Exim instance the attacker runs use (``<state dir>/exim-attacker``), set up; ``None`` when Debian's
    Exim is not unpacked here (:func:`mxsec.lab.exim.unavailable`)."""
    from mxsec.lab.exim import Exim, EximSpec, unavailable

    if unavailable():
        return None
    paths = runner.LabPaths.of(topo)
    return Exim(EximSpec(directory=topo.state_dir / "exim-attacker", netns=topo.sender_ns,
                         socket=f"inet:127.0.0.1:{runner.DAEMON_PORT}", ca_file=paths.ca_file)).setup()


def run_all(topo: Topology, *, exim: bool = True, progress: Callable[[str], None] = lambda _m: None
            ) -> list[AttackRow]:
    """:func:`run_attacks` for Postfix, then for Exim when ``exim`` and Exim is available."""
    rows = run_attacks(topo, "postfix", progress=progress)
    instance = lab_exim(topo) if exim else None
    if instance is not None:
        rows += run_attacks(topo, "exim", instance, progress=progress)
    elif exim:
        progress("Exim not available: attacker rows for Postfix only")
    return rows


def stored_anywhere(topo: Topology, rcpts: Sequence[str]) -> dict[str, list[str]]:
    """Every place (MX farm host or impostor) that stored a message for one of ``rcpts``: rcpt → [where], each
    ``"MX farm <host> (TLS)"``, ``"MX farm <host> (in clear)"`` or ``"attacker <host> (…)"``."""
    from mxsec.lab.mx import read_received

    wanted = set(rcpts)
    found: dict[str, list[str]] = {}
    mail = runner.LabPaths.of(topo).mail_dir
    rogue = topo.state_dir / "attacker" / "rogue"
    for base, label in ((mail, "MX farm"), (rogue, "attacker")):
        for d in sorted(base.iterdir()) if base.is_dir() else ():
            if not d.is_dir():
                continue
            for rec in read_received(base, d.name):
                for r in wanted.intersection(rec.rcpt_tos):
                    found.setdefault(r, []).append(f"{label} {d.name} ({'TLS' if rec.tls else 'in clear'})")
    return found
