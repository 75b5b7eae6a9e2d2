"""The closed TLSRPT loop in the lab: the lab's MTAs report to the lab's receiving side.

What :func:`mxsec.lab.runner.up` adds for it (always; it costs one MX, two small zones and one process):

* ``reports.test`` (signed zone): ``MX 10 mx.reports.test`` — an MX of the MX farm with a valid lab-CA
  certificate that stores every message — and ``reports.test A`` — ``mxsec reports serve`` with a lab-CA
  certificate for ``reports.test`` on port 8443 of its own address in the internet namespace (port 443 of
  every address there belongs to the policy hosts, which bind ``0.0.0.0:443``). It stores POSTed reports in
  ``tlsrpt/received-https.sqlite3``.
* ``sender.test`` (signed zone): ``tlsrpt._domainkey.sender.test TXT "v=DKIM1; k=rsa; s=tlsrpt; p=…"``, the key
  the lab signs its reports with (``tlsrpt/dkim.pem``; the submitter is the domain of the contact-info
  ``tlsrpt@sender.test``).
* the daemon records what it answers (``[tlsrpt] record_policies = true``, ``db`` = ``tlsrpt/sender.sqlite3``);
* Postfix also listens on ``127.0.0.1:25`` of the sender namespace (smtpd, relaying for 127.0.0.0/8): the
  relay of ``mxsec tlsrpt send``. The report messages then take the same path as any mail: Postfix asks the
  daemon about ``reports.test`` and delivers to ``mx.reports.test``.

Scenarios with ``tlsrpt`` publish ``_smtp._tls`` records whose ``rua`` point there (``mailto:tlsrpt@reports.test``,
``https://reports.test:8443/tlsrpt`` or both) and say in ``expect.tlsrpt`` what the sessions to them are in
RFC 8460 terms (``success`` or a result type).

:func:`close_loop` (``mxsec lab tlsrpt``, the end of ``make demo``) then does, per MTA (Postfix always; Exim when
``/opt/mxsec/exim4`` is installed):

1. the scenario mail: Postfix's comes from ``mxsec lab run`` (or is sent here with ``send_postfix``); its queue
   is then emptied, so no retry runs after this point. Exim (``exim.sender.lab.test``) sends one message per
   TLSRPT scenario with ``exim4 -odf``;
2. a copy of the daemon's sender database (``tlsrpt/runs/<tag>/<mta>.sqlite3``, with the recorded policies)
   per MTA, so each MTA's reports hold its own sessions only;
3. ``mxsec tlsrpt follow-log LOG --mta M --once --from-start`` into that copy (in the sender namespace: DNS);
4. ``mxsec tlsrpt send --day today --unfinished`` with the organization name ``mxsec lab <MTA> <tag>`` (so each
   run's reports can be told apart at the receiver), DKIM-signed, relayed by the lab's Postfix;
5. the report messages stored by ``mx.reports.test`` become a Maildir that ``mxsec reports ingest
   --require-dkim`` reads into ``tlsrpt/received-mail.sqlite3``; the POSTed ones are in the serve database;
6. the comparison: per MTA, scenario and rua scheme, what the receiving side's summary (``mxsec reports summary
   --json --organization ORG``; per domain the same summary with ``--domain``) says against the ground truth.

Ground truth (independent of the log parsers): the MX farm's ``sessions.jsonl`` — every SMTP connection each
scenario MX accepted, with the client's HELO name (``sender.lab.test`` for Postfix, ``exim.sender.lab.test``
for Exim) and a start time on the reported UTC day — each counted as the scenario's ``expect.tlsrpt``. A
domain whose MTA never connected (DNS failure) has no row. Equality is exact: successful, failed and the
failure result types per domain, and DKIM ``pass`` for every mailed report.
"""

from __future__ import annotations

import json
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mxsec.fsutil import make_dirs
from mxsec.lab import topology
from mxsec.lab.dns import ZoneSpec
from mxsec.lab.scenarios import Scenario
from mxsec.lab.topology import LabError, Topology

__all__ = [
    "CONTACT",
    "HTTPS_PORT",
    "REPORTS_DOMAIN",
    "LoopPaths",
    "LoopResult",
    "LoopRow",
    "close_loop",
    "lab_addresses",
]

REPORTS_DOMAIN = "reports.test"
REPORTS_MX = "mx.reports.test"
REPORTS_WEB = "reports.test"
HTTPS_PORT = 8443
SUBMITTER_DOMAIN = "sender.test"
CONTACT = f"tlsrpt@{SUBMITTER_DOMAIN}"
DKIM_SELECTOR = "tlsrpt"
RELAY = "127.0.0.1:25"
POSTFIX_HELO = "sender.lab.test"
EXIM_HOSTNAME = "exim.sender.lab.test"
MXSEC = str(Path(sys.executable).with_name("mxsec"))
Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


@dataclass(frozen=True)
class LoopPaths:
    root: Path  # <state dir>/tlsrpt

    @classmethod
    def of(cls, topo: Topology) -> LoopPaths:
        return cls(topo.state_dir / "tlsrpt")

    @property
    def dkim_key(self) -> Path:
        return self.root / "dkim.pem"

    @property
    def dkim_record(self) -> Path:
        return self.root / "dkim.txt"

    @property
    def web_cert(self) -> Path:
        return self.root / "reports.test.crt"

    @property
    def web_key(self) -> Path:
        return self.root / "reports.test.key"

    @property
    def sender_db(self) -> Path:  # the daemon records its answers here
        return self.root / "sender.sqlite3"

    @property
    def received_mail_db(self) -> Path:
        return self.root / "received-mail.sqlite3"

    @property
    def received_https_db(self) -> Path:
        return self.root / "received-https.sqlite3"

    @property
    def serve_log(self) -> Path:
        return self.root / "reports-serve.log"

    @property
    def runs(self) -> Path:
        return self.root / "runs"


# --------------------------------------------------------------------------------------------- up


def check_names(scenarios: Sequence[Scenario]) -> None:
    taken = {REPORTS_DOMAIN, SUBMITTER_DOMAIN}
    for sc in scenarios:
        if sc.domain in taken:
            raise LabError(f"scenario {sc.name}: {sc.domain} is the lab's TLSRPT receiving/submitting domain")


def lab_addresses(scenarios: Sequence[Scenario], topo: Topology) -> dict[str, str]:
    """Every scenario host (as :func:`mxsec.lab.scenarios.host_addresses`, same addresses), then the
    receiving side's MX and HTTPS host."""
    return topo.host_addresses([*(h for sc in scenarios for h in sc.hosts()), REPORTS_MX, REPORTS_WEB])


def prepare(topo: Topology, ca_dir: Path) -> None:
    """The DKIM key (and its TXT record text) and the HTTPS certificate of ``reports.test``."""
    from mxsec.testing.pki import write_pem
    from mxsec.lab.mx import load_ca
    from mxsec.tlsrpt.dkim_sign import generate_key, key_record, load_signing_key

    paths = LoopPaths.of(topo)
    make_dirs(paths.root, 0o755)
    make_dirs(paths.runs, 0o755)
    pem = generate_key("rsa", 2048)
    paths.dkim_key.write_bytes(pem)
    paths.dkim_key.chmod(0o600)
    paths.dkim_record.write_text(key_record(load_signing_key(pem, source=str(paths.dkim_key))) + "\n")
    cert, key = load_ca(ca_dir, create=False).issue([REPORTS_WEB])
    write_pem(paths.web_cert, cert)
    write_pem(paths.web_key, key)
    paths.web_key.chmod(0o600)


def _txt(text: str) -> str:
    return " ".join('"' + text[i:i + 255] + '"' for i in range(0, len(text), 255))


def zone_specs(topo: Topology, addresses: dict[str, str]) -> list[ZoneSpec]:
    record = LoopPaths.of(topo).dkim_record.read_text().strip()
    return [
        ZoneSpec(REPORTS_DOMAIN, (
            f"{REPORTS_DOMAIN}. MX 10 {REPORTS_MX}.",
            f"{REPORTS_MX}. A {addresses[REPORTS_MX]}",
            f"{REPORTS_WEB}. A {addresses[REPORTS_WEB]}",
        )),
        ZoneSpec(SUBMITTER_DOMAIN, (f"{DKIM_SELECTOR}._domainkey.{SUBMITTER_DOMAIN}. TXT {_txt(record)}",)),
    ]


def mx_spec(addresses: dict[str, str]) -> Any:
    from mxsec.lab.mx import MxSpec

    return MxSpec(REPORTS_MX, addresses[REPORTS_MX], "valid")


def daemon_config(topo: Topology) -> str:
    return ("\n# the closed TLSRPT loop: what the daemon answers is recorded for `mxsec tlsrpt follow-log`\n"
            f"[tlsrpt]\nrecord_policies = true\ndb = \"sqlite:///{LoopPaths.of(topo).sender_db}\"\n")


def start_receiver(topo: Topology, addresses: dict[str, str], spawn_and_wait: Callable[..., None]) -> None:
    """``mxsec reports serve`` (HTTPS, POST /tlsrpt) on reports.test:8443 in the internet namespace."""
    paths = LoopPaths.of(topo)
    ip = addresses[REPORTS_WEB]
    argv = [MXSEC, "reports", "serve", "--db", f"sqlite:///{paths.received_https_db}",
            "--listen", f"{ip}:{HTTPS_PORT}", "--tls-cert", str(paths.web_cert), "--tls-key", str(paths.web_key)]
    spawn_and_wait(topo, topo.inet_ns, "reports-serve", argv, paths.serve_log,
                   lambda: _listening(topo.inet_ns, ip, HTTPS_PORT))


def _listening(ns: str, ip: str, port: int) -> bool:
    sock = topology.netns_socket(ns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(0.5)
        sock.connect((ip, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


# --------------------------------------------------------------------------------------------- the loop


@dataclass
class LoopRow:
    """One MTA × scenario domain: what the MX farm saw against what the receiving side was told."""

    mta: str
    scenario: str
    domain: str
    rua: list[str]
    expected: str  # expect.tlsrpt: success or a result type
    sessions: int = 0  # ground truth: SMTP connections the MX farm recorded from this MTA
    truth: dict[str, Any] = field(default_factory=dict)  # successful, failed, result_types
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)  # mailto/https -> same keys + dkim
    delivery: dict[str, str] = field(default_factory=dict)  # rua -> state of mxsec tlsrpt send
    problems: list[str] = field(default_factory=list)
    xfail: str | None = None  # expect.tlsrpt_xfail: a known gap of the reporting

    @property
    def verdict(self) -> str:
        """``ok``, ``FAIL``, ``xfail`` (a known gap, as expected) or ``XPASS`` (the gap is closed)."""
        if self.xfail:
            return "xfail" if self.problems else "XPASS"
        return "FAIL" if self.problems else "ok"

    @property
    def ok(self) -> bool:
        return self.verdict != "FAIL"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict, "ok": self.ok}


@dataclass
class LoopResult:
    tag: str
    day: str
    rows: list[LoopRow]
    mtas: list[str]
    skipped: dict[str, str]  # MTA -> why it did not take part
    summaries: dict[str, dict[str, Any]]  # "<mta> <scheme>" -> mxsec reports summary --json --organization
    steps: dict[str, Any]  # MTA -> follow-log / send / ingest output
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.ok for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "day": self.day, "mtas": self.mtas, "skipped": self.skipped, "ok": self.ok,
                "problems": self.problems, "rows": [r.to_json() for r in self.rows], "summaries": self.summaries,
                "steps": self.steps}


def has_reporting(topo: Topology) -> bool:
    """Whether the lab's scenarios have any ``tlsrpt`` record (the loop has something to do)."""
    from mxsec.lab import runner

    _paths, scenarios, _lab = runner._load_lab(topo)
    return any(sc.tlsrpt for sc in scenarios)


def organization(mta: str, tag: str) -> str:
    return f"mxsec lab {mta} {tag}"


def _in_sender(topo: Topology, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", topo.sender_ns, *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _copy_db(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


def _exim(topo: Topology, ca_file: Path) -> Any:
    from mxsec.lab.exim import Exim, EximSpec
    from mxsec.lab.runner import DAEMON_PORT

    return Exim(EximSpec(directory=topo.state_dir / "exim-tlsrpt", netns=topo.sender_ns,
                         socket=f"inet:127.0.0.1:{DAEMON_PORT}", ca_file=ca_file, hostname=EXIM_HOSTNAME))


def close_loop(topo: Topology, *, exim: bool = True, send_postfix: bool = False, timeout: float = 60.0,
               progress: Progress = _quiet) -> LoopResult:
    """Run the closed loop on a lab that is up (see the module docstring)."""
    from mxsec.lab import runner
    from mxsec.lab.exim import unavailable

    paths, scenarios, _lab = runner._load_lab(topo)
    loop = LoopPaths.of(topo)
    if not loop.sender_db.exists():
        raise LabError("this lab was brought up without the TLSRPT receiving side: bring it up again")
    reporting = [sc for sc in scenarios if sc.tlsrpt]
    if not reporting:
        raise LabError("no scenario has a tlsrpt record")
    started = time.monotonic()
    tag = datetime.now(UTC).strftime("%H%M%S") + secrets.token_hex(2)
    run_dir = loop.runs / tag
    make_dirs(loop.runs, 0o755)
    run_dir.mkdir(0o755)  # new: a clash of tags fails here
    run_dir.chmod(0o755)
    pf = runner.lab_postfix(topo)
    if send_postfix:
        runner.run(topo, [sc.name for sc in reporting], timeout=timeout, progress=progress)
    # no retry of deferred scenario mail after this point: what was tried is all that will be counted. Hold
    # first, so that an attempt under way ends (and is logged) before the queue is emptied.
    pf.hold_queue()
    _wait(lambda: all(m.get("queue_name") == "hold" for m in pf.queue()), timeout,
          "Postfix's delivery attempts to end")
    pf.delete_queue()
    _wait(lambda: not pf.queue(), timeout, "Postfix's queue to empty")
    mtas = {"Postfix": ("postfix", pf.log_file, POSTFIX_HELO)}
    skipped: dict[str, str] = {}
    if exim:
        reason = unavailable()
        if reason:
            skipped["Exim"] = reason
        else:
            t0 = time.monotonic()
            ex = _exim(topo, paths.ca_file)
            if not ex.config.exists():
                ex.setup()
            for sc in reporting:
                ex.clear_retry()
                ex.send(runner.SENDER, f"exim-{tag}@{sc.domain}", subject=f"mxsec lab exim {sc.name}")
            ex.delete_queue()
            progress(f"Exim sent {len(reporting)} messages ({time.monotonic() - t0:.1f} s)")
            mtas["Exim"] = ("exim", ex.mainlog, EXIM_HOSTNAME)
    else:
        skipped["Exim"] = "not asked for"

    day = datetime.now(UTC).date()
    steps: dict[str, Any] = {}
    problems: list[str] = []
    report_ids: dict[str, dict[str, str]] = {}  # mta -> domain -> report_id
    deliveries: dict[str, dict[str, dict[str, str]]] = {}  # mta -> domain -> rua -> state
    common = ["--nameserver", topo.resolver_ip]
    for mta, (kind, log_file, _helo) in mtas.items():
        db = run_dir / f"{kind}.sqlite3"
        _copy_db(loop.sender_db, db)
        url = f"sqlite:///{db}"
        follow = _in_sender(topo, [MXSEC, "tlsrpt", "follow-log", str(log_file), "--mta", kind, "--db", url,
                                   *common, "--once", "--from-start", "--sending-ip", topo.sender_ip,
                                   "--ca-file", str(paths.ca_file), "--allow-address", topo.host_net,
                                   "--log-format", "json"])
        steps[mta] = {"follow_log": {"rc": follow.returncode, "stdout": follow.stdout[-4000:],
                                     "stderr": follow.stderr[-4000:]}}
        if follow.returncode != 0:
            problems.append(f"{mta}: follow-log exited {follow.returncode}: {follow.stderr.strip()[-500:]}")
            continue
        send = _in_sender(topo, [
            MXSEC, "tlsrpt", "send", "--day", "today", "--unfinished", "--db", url,
            "--organization-name", organization(mta, tag), "--contact-info", CONTACT,
            "--dkim-key", str(loop.dkim_key), "--dkim-selector", DKIM_SELECTOR,
            "--smtp", RELAY, "--smtp-starttls", "none", *common, "--ca-file", str(paths.ca_file),
            "--allow-address", topo.host_net, "--json"])
        lines = [json.loads(x) for x in send.stdout.splitlines() if x.strip().startswith("{")]
        steps[mta]["send"] = {"rc": send.returncode, "lines": lines, "stderr": send.stderr[-4000:]}
        if send.returncode != 0 and not lines:
            problems.append(f"{mta}: send exited {send.returncode}: {send.stderr.strip()[-500:]}")
        for line in lines:
            deliveries.setdefault(mta, {}).setdefault(line["domain"], {})[line["destination"]] = line["state"]
            if line["destination"].startswith("mailto:") and line["state"] == "delivered":
                report_ids.setdefault(mta, {})[line["domain"]] = line["report_id"]
    progress(f"follow-log + send for {', '.join(mtas)} ({time.monotonic() - started:.1f} s)")

    # the mailed reports: wait until mx.reports.test stored each one, then ingest them from a Maildir
    wanted = {rid for per in report_ids.values() for rid in per.values()}
    maildir = run_dir / "maildir"
    for sub in ("new", "cur", "tmp"):
        make_dirs((maildir / sub), 0o755)
    stored = _wait_reports(paths.mail_dir, wanted, timeout)
    for n, (rid, data) in enumerate(sorted(stored.items())):
        (maildir / "new" / f"{int(time.time())}.{n}.{tag}").write_bytes(data.encode("utf-8"))
    missing = wanted - set(stored)
    if missing:
        problems.append(f"{len(missing)} mailed report(s) never reached {REPORTS_MX}: {sorted(missing)}")
    ingest = _in_sender(topo, [MXSEC, "reports", "ingest", "--db", f"sqlite:///{loop.received_mail_db}",
                               *common, "--require-dkim", "--json", str(maildir)])
    steps["ingest"] = {"rc": ingest.returncode, "stdout": ingest.stdout[-4000:], "stderr": ingest.stderr[-2000:]}
    if stored and ingest.returncode != 0:
        problems.append(f"reports ingest exited {ingest.returncode}: {(ingest.stderr or ingest.stdout)[-500:]}")
    progress(f"{len(stored)} mailed reports ingested ({time.monotonic() - started:.1f} s)")

    summaries: dict[str, dict[str, Any]] = {}
    rows: list[LoopRow] = []
    for mta, (_kind, _log, helo) in mtas.items():
        org = organization(mta, tag)
        received = {"mailto": loop.received_mail_db, "https": loop.received_https_db}
        for scheme, db in received.items():
            summaries[f"{mta} {scheme}"] = _summary_cli(db, org)
        for sc in reporting:
            rows.append(_row(sc, mta, helo, day, paths.mail_dir, received, org,
                             deliveries.get(mta, {}).get(sc.domain, {})))
    progress(f"closed loop finished in {time.monotonic() - started:.1f} s")
    return LoopResult(tag, day.isoformat(), rows, list(mtas), skipped, summaries, steps, problems)


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise LabError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _wait_reports(mail_dir: Path, wanted: set[str], timeout: float) -> dict[str, str]:
    """report-id -> the stored message, once every wanted report arrived at mx.reports.test (or on timeout)."""
    from mxsec.lab.mx import read_received

    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, str] = {}
        for rec in read_received(mail_dir, REPORTS_MX):
            subject = rec.headers.get("subject", "")
            for rid in wanted:
                if rid in subject:
                    found[rid] = rec.data
        if set(found) >= wanted or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _summary_cli(db: Path, org: str) -> dict[str, Any]:
    """``mxsec reports summary --json --organization ORG`` of a receiving database."""
    if not db.exists():
        return {}
    proc = subprocess.run([MXSEC, "reports", "summary", "--db", f"sqlite:///{db}", "--organization", org,
                           "--json"], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise LabError(f"mxsec reports summary failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def _truth(sc: Scenario, helo: str, day: Any, mail_dir: Path) -> int:
    from mxsec.lab.mx import read_sessions

    count = 0
    for m in sc.mx:
        for s in read_sessions(mail_dir, m.host):
            try:
                started = datetime.fromisoformat(s.started_at)
            except ValueError:
                continue
            if (s.first_helo or s.helo or "").lower() == helo and started.astimezone(UTC).date() == day:
                count += 1
    return count


def _belongs(policy_domain: str, domain: str) -> bool:
    return policy_domain == domain or policy_domain.endswith("." + domain)


def _reported(db: Path, org: str, domain: str) -> dict[str, Any] | None:
    """What the receiving database holds for ``domain`` from ``org``: the summary per policy domain of it
    (``mxsec reports summary --domain PD --organization ORG``; a DANE policy's domain is the MX host) and
    the DKIM results of the reports."""
    from mxsec.reports.summary import summary_data
    from mxsec.storage.reportdb import Filters, ReportDB

    if not db.exists():
        return None
    with ReportDB(f"sqlite:///{db}") as rdb:
        overall = summary_data(rdb, Filters(organization=org))
        pds = [pd for pd in overall.get("by_policy_domain", {}) if _belongs(pd, domain)]
        if not pds:
            return None
        ok = bad = 0
        types: dict[str, int] = {}
        for pd in pds:
            data = summary_data(rdb, Filters(organization=org, domain=pd))
            ok += int(data["successful_sessions"])
            bad += int(data["failed_sessions"])
            for t, n in data["by_result_type"].items():
                types[t] = types.get(t, 0) + int(n)
    con = sqlite3.connect(db)
    try:
        dkim = sorted({str(r[0]) for r in con.execute(
            "SELECT DISTINCT r.dkim FROM tlsrpt_report r JOIN tlsrpt_policy p ON p.report = r.id "
            "WHERE r.organization_name = ? AND (p.policy_domain = ? OR p.policy_domain LIKE ?)",
            (org, domain, "%." + domain))})
    finally:
        con.close()
    return {"successful": ok, "failed": bad, "result_types": types, "dkim": dkim, "policy_domains": pds}


def _row(sc: Scenario, mta: str, helo: str, day: Any, mail_dir: Path, received: dict[str, Path], org: str,
         delivery: dict[str, str]) -> LoopRow:
    rua = [u.strip() for u in (sc.tlsrpt or "").split(",") if u.strip()]
    expected = (sc.expect.tlsrpt_exim if mta == "Exim" else None) or sc.expect.tlsrpt or "success"
    row = LoopRow(mta, sc.name, sc.domain, rua, expected, delivery=delivery, xfail=sc.expect.tlsrpt_xfail)
    n = row.sessions = _truth(sc, helo, day, mail_dir)
    row.truth = ({"successful": n, "failed": 0, "result_types": {}} if expected == "success"
                 else {"successful": 0, "failed": n, "result_types": {expected: n} if n else {}})
    for uri in rua:
        scheme = uri.partition(":")[0]
        got = _reported(received[scheme], org, sc.domain)
        if n == 0:
            if got is not None:
                row.problems.append(f"{scheme}: a report although {mta} never connected")
            row.reported[scheme] = got or {}
            continue
        if got is None:
            row.problems.append(f"{scheme}: no report received ({uri}: {delivery.get(uri, 'not sent')})")
            continue
        row.reported[scheme] = got
        for key in ("successful", "failed", "result_types"):
            if got[key] != row.truth[key]:
                row.problems.append(f"{scheme}: {key} {got[key]} reported, {row.truth[key]} true")
        if scheme == "mailto" and got["dkim"] != ["pass"]:
            row.problems.append(f"mailto: DKIM {got['dkim']}, expected pass")
    return row
