"""`make demo`: the lab demo by default, the fake-world demo with ``--fake-world``.

``python -m mxsec.cli.demo`` (the lab; root): brings the lab up (network namespaces, Knot + Unbound with
DNSSEC, MX hosts, MTA-STS policy hosts, ``mxsec daemon`` and a real Postfix in the sender namespace), sends one
message per scenario of ``src/mxsec/lab/scenarios.toml``, waits for Postfix's verdicts, prints a table
(domain, policy found, daemon reply, expected, actual, TLS seen by the MX), then closes the TLSRPT loop
(:mod:`mxsec.lab.tlsrpt`: Postfix's and Exim's sessions reported to the lab's receiving side and compared with
what the MX farm saw), then lets the on-path attacker loose (:mod:`mxsec.lab.attackrun`: STARTTLS stripped,
forged certificates, a rogue MX, DNS and HTTPS dropped or delayed, the ``_mta-sts`` record removed, strict MX
names — against Postfix and Exim; its table, rows ``attack: … → scenario``, comes last), tears the lab down and
exits 1 if any row differs from its expectation. Before the lab: a sample month of received reports
(``mxsec reports`` summary). Options: ``--scenario NAME`` (repeatable), ``--scenarios FILE``, ``--json``,
``--keep`` (leave the lab up), ``--prefix`` (default ``mxsec-demo``). Same as ``mxsec lab demo``.

``python -m mxsec.cli.demo --fake-world``: the policy daemon against a local fake world (loopback only),
through the real socketmap protocol:

1. A fake world starts on loopback: a DNS server and HTTPS policy hosts for a dozen scenario domains
   (certificates from a throw-away CA).
2. `mxsec daemon` starts as a child process with an SQLite cache, pointed at that DNS server and CA.
3. Every scenario domain is asked over a raw socketmap connection, as Postfix asks; the table shows the
   expected and actual reply.
4. The daemon is killed with SIGKILL, the fake world's DNS and HTTPS are broken on purpose, the daemon is
   restarted: the cached policies are still served.

Exit status 0 when every row is as expected, 1 otherwise. Needs root (the policy hosts listen on port 443).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mxsec.daemon.replies import NO_MX_MATCHES
from mxsec.daemon.socketmap import encode
from mxsec.testing.daemonproc import Client, DaemonProcess
from mxsec.testing.fakeworld import FakeWorld, PolicySpec, WorldThread, policy_text

DNS_ADDR = ("127.0.84.1", 0)
HTTPS_ADDR = ("127.0.84.2", 443)


@dataclass
class Scenario:
    name: str
    domain: str
    expect: str
    what: str


def _enforce(*names: str) -> str:
    """The daemon's answer with strict MX names: the MX hosts that the policy allows (docs/daemon.md)."""
    return "OK secure match=" + ":".join(names) + " servername=hostname"


SCENARIOS = [
    Scenario("sts-enforce-ok", "enforce.demo.test", _enforce("mx1.enforce.demo.test", "mx2.enforce.demo.test"),
             "enforce policy, two MX patterns, both MX hosts allowed"),
    Scenario("sts-wildcard-mx", "wildcard.demo.test", _enforce("a.mail.wildcard.demo.test"),
             "*.mail.wildcard.demo.test allows the MX a.mail… but not x.y.mail… (one label)"),
    Scenario("sts-mx-not-allowed", "rogue.demo.test", _enforce(NO_MX_MATCHES),
             "MX rogue.attacker.demo.test matches no pattern: no certificate can pass"),
    Scenario("sts-txt-split", "split.demo.test", _enforce("mx.split.demo.test"),
             "TXT record in two strings, joined without a space (RFC 8461 §3.1)"),
    Scenario("sts-txt-cname", "customer.demo.test", _enforce("mx.provider.demo.test"),
             "_mta-sts CNAME to a provider, policy still from mta-sts.customer (EC-23)"),
    Scenario("sts-testing", "testing.demo.test", "NOTFOUND ", "testing mode: deliver as usual, report only"),
    Scenario("sts-none", "none.demo.test", "NOTFOUND ", "mode none: policy withdrawn"),
    Scenario("no-policy", "plain.demo.test", "NOTFOUND ", "no _mta-sts record"),
    Scenario("sts-two-records", "tworecords.demo.test", "NOTFOUND ", "two v=STSv1 records: no policy (§3.1)"),
    Scenario("sts-policy-redirect", "redirect.demo.test", "NOTFOUND ", "301 from the policy host: not followed"),
    Scenario("sts-policy-404", "missing.demo.test", "NOTFOUND ", "404 from the policy host"),
    Scenario("sts-policy-bad-cert", "badcert.demo.test", "NOTFOUND ", "policy host certificate expired"),
    Scenario("sts-policy-html", "html.demo.test", "NOTFOUND ", "policy served as text/html"),
    Scenario("sts-policy-invalid", "invalid.demo.test", "NOTFOUND ", "enforce policy without any mx line"),
    Scenario("address-literal", "[192.0.2.25]", "NOTFOUND ", "no MTA-STS for address literals"),
]


def build_world(world: FakeWorld) -> None:
    ok = ["v=STSv1; id=20261124"]
    enforce = ["mx1.enforce.demo.test", "mx2.enforce.demo.test"]
    world.add_domain("enforce.demo.test", txt=ok, policy=PolicySpec(body=policy_text(enforce)), mx=enforce)
    world.add_domain("wildcard.demo.test", txt=ok, policy=PolicySpec(body=policy_text(["*.mail.wildcard.demo.test"])),
                     mx=["a.mail.wildcard.demo.test", "x.y.mail.wildcard.demo.test"])
    world.add_domain("rogue.demo.test", txt=ok, policy=PolicySpec(body=policy_text(["mx.rogue.demo.test"])),
                     mx=["rogue.attacker.demo.test"])
    world.add_domain("split.demo.test", txt=[["v=STSv1; ", "id=2026"]],
                     policy=PolicySpec(body=policy_text(["mx.split.demo.test"], newline="\n")),
                     mx=["mx.split.demo.test"])
    world.add_domain("provider.demo.test", txt=ok)
    world.add_domain("customer.demo.test", policy=PolicySpec(body=policy_text(["mx.provider.demo.test"])),
                     mx=["mx.provider.demo.test"])
    world.set_record("_mta-sts.customer.demo.test", "CNAME", ["_mta-sts.provider.demo.test."])
    world.add_domain("testing.demo.test", txt=ok,
                     policy=PolicySpec(body=policy_text(["mx.testing.demo.test"], mode="testing")))
    world.add_domain("none.demo.test", txt=ok, policy=PolicySpec(body=policy_text([], mode="none")))
    world.add_domain("plain.demo.test")
    world.add_domain("tworecords.demo.test", txt=["v=STSv1; id=1", "v=STSv1; id=2"],
                     policy=PolicySpec(body=policy_text(["mx.tworecords.demo.test"])))
    world.add_domain("redirect.demo.test", txt=ok,
                     policy=PolicySpec(status=301, location="https://www.redirect.demo.test/mta-sts.txt"))
    world.add_domain("missing.demo.test", txt=ok, policy=PolicySpec(status=404, body="not found"))
    world.add_domain("badcert.demo.test", txt=ok,
                     policy=PolicySpec(body=policy_text(["mx.badcert.demo.test"]), cert="expired"))
    world.add_domain("html.demo.test", txt=ok,
                     policy=PolicySpec(body=policy_text(["mx.html.demo.test"]), content_type="text/html"))
    world.add_domain("invalid.demo.test", txt=ok,
                     policy=PolicySpec(body="version: STSv1\r\nmode: enforce\r\nmax_age: 86400\r\n"))


def _ask_all(daemon: DaemonProcess, keys: list[str]) -> list[str]:
    """Pipelined, like a busy MTA: every request in one write, replies in order."""
    client = Client(daemon.host, daemon.port, timeout=30)
    try:
        client.send_raw(b"".join(encode(f"postfix {k}".encode()) for k in keys))
        return client.replies(len(keys))
    finally:
        client.close()


def fake_world_main() -> int:
    console = Console(width=max(Console().width, 140))
    if os.geteuid() != 0:
        console.print("[red]demo: run as root (the fake policy hosts listen on port 443)[/red]")
        return 2
    state = Path(tempfile.mkdtemp(prefix="mxsec-demo-"))
    world = FakeWorld(dns=DNS_ADDR, https=HTTPS_ADDR, state_dir=state / "world")
    build_world(world)
    thread = WorldThread(world)
    thread.start()
    host, port = world.dns_address
    daemon = DaemonProcess(state, nameserver=f"{host}:{port}", ca_file=world.ca_file,
                           cache=f"sqlite:///{state / 'cache.sqlite3'}")
    failures = 0
    try:
        console.rule("[bold]mxsec demo: policy daemon against a local fake world")
        console.print(f"fake DNS {world.dns_address[0]}:{world.dns_address[1]}, policy hosts "
                      f"{world.https_address[0]}:443, daemon 127.0.0.1:{daemon.port}, state {state}")
        daemon.start()
        keys = [s.domain for s in SCENARIOS]
        replies = _ask_all(daemon, keys)
        failures += _table(console, "First queries (resolved over DNS + HTTPS)", SCENARIOS, replies)

        started = time.perf_counter()
        again = _ask_all(daemon, keys * 100)
        elapsed = time.perf_counter() - started
        same = again[: len(keys)] == replies and len(again) == len(keys) * 100
        console.print(f"{len(again)} pipelined repeat queries answered from the cache in {elapsed * 1000:.1f} ms"
                      f" — {'identical answers' if same else '[red]answers differ[/red]'}")
        failures += 0 if same else 1

        console.rule("[bold]kill -9, network down, restart")
        daemon.kill9()
        for s in SCENARIOS:
            if not s.domain.startswith("["):
                world.set_failure("_mta-sts." + s.domain, "servfail")
                world.set_policy(s.domain, PolicySpec(status=503))
        daemon.start()
        replies = _ask_all(daemon, keys)
        failures += _table(console, "After kill -9 and restart, with DNS and HTTPS failing", SCENARIOS, replies)
    finally:
        daemon.stop()
        thread.stop()
    if failures:
        console.print(f"[red bold]{failures} row(s) not as expected[/red bold] — daemon log: {daemon.log_path}")
        return 1
    console.print("[green bold]every row as expected[/green bold]")
    return 0


def _table(console: Console, title: str, scenarios: list[Scenario], replies: list[str]) -> int:
    table = Table(title=title, show_lines=False)
    for col in ("scenario", "domain", "daemon reply", "as expected"):
        table.add_column(col, overflow="fold")
    bad = 0
    for s, reply in zip(scenarios, replies + [""] * (len(scenarios) - len(replies))):
        ok = reply == s.expect
        bad += not ok
        table.add_row(s.name, s.domain, repr(reply) if reply.endswith(" ") else reply,
                      "[green]yes[/green]" if ok else f"[red]no, expected {s.expect!r}[/red]")
    console.print(table)
    return bad


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mxsec.cli.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--fake-world", action="store_true",
                        help="the loopback fake-world demo (daemon, kill -9, restart from the cache)")
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME", help="lab: only this scenario")
    parser.add_argument("--scenarios", metavar="FILE", help="lab: another scenario file")
    parser.add_argument("--json", action="store_true", help="lab: rows as JSON")
    parser.add_argument("--keep", action="store_true", help="lab: leave the lab running afterwards")
    parser.add_argument("--prefix", default="mxsec-demo", help="lab: name of the lab (default mxsec-demo)")
    args = parser.parse_args(argv)
    if args.fake_world:
        return fake_world_main()
    from mxsec.cli.lab import run_demo

    status = 0
    if not args.json and not args.scenario:  # first: the lab run ends with the closed TLSRPT loop's table
        status = reports_demo(Console())
    return max(status, run_demo(args.prefix, args.scenarios, args.scenario, args.json, args.keep))


def reports_demo(console: Console) -> int:
    """The receiving side: a sample month of TLSRPT reports ingested and summarised (docs/reports.md)."""
    import tempfile
    from pathlib import Path

    from mxsec.testing.sample_reports import write_samples
    from mxsec.reports.inputs import Options, count_outcomes, ingest, path_inputs
    from mxsec.reports.summary import render, summary_data
    from mxsec.storage.reportdb import Filters, ReportDB

    console.rule("TLSRPT reports received by example.com and example.net (a sample month)")
    with tempfile.TemporaryDirectory(prefix="mxsec-demo-reports-") as tmp:
        files = write_samples(Path(tmp) / "reports")
        with ReportDB(f"sqlite:///{tmp}/reports.sqlite3") as db:
            items = ingest(db, [item for path in files for item in path_inputs(str(path), Options())])
            again = ingest(db, [item for path in files for item in path_inputs(str(path), Options())])
            data = summary_data(db, Filters(), top=5)
    stored, duplicates = count_outcomes(items)["stored"], count_outcomes(again)["duplicate"]
    console.print(f"mxsec reports ingest: {stored} reports stored; ingested again: {duplicates} duplicates, "
                  "nothing stored twice")
    data["by_day"] = {}  # keep the demo short: headline, reporters, domains, failures
    render(data, console)
    ok = stored == len(files) == duplicates and data["by_result_type"].get("certificate-expired", 0) > 0
    console.print("[green bold]reports as expected[/green bold]" if ok
                  else "[red bold]reports not as expected[/red bold]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
