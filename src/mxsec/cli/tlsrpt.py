"""``mxsec tlsrpt …``: the TLSRPT sender (collect, report, send, status).

    mxsec tlsrpt collect --socket /run/mxsec/tlsrpt.sock --socket-group postfix
    mxsec tlsrpt report --day 2026-12-01 --out DIR
    mxsec tlsrpt send [--day D] [--dry-run --out DIR] [--smtp HOST[:PORT]] [--dkim-key F --dkim-selector S]
    mxsec tlsrpt status [--json]
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from mxsec.cli.common import _guarded, _load, network_options
from mxsec.errors import ConfigError
from mxsec.fsutil import make_dirs


def _config_option(fn):
    return click.option("--config", "config_path", type=click.Path(dir_okay=False),
                        help="TOML file (default /etc/mxsec/mxsec.toml if present).")(fn)


def _sender_options(fn):
    """--db, --organization-name, --contact-info (with --config from network_options or _config_option)."""
    options = [
        click.option("--db", "tlsrpt_db", metavar="URL",
                     help="Database of counted sessions and report state: sqlite:///PATH (default in the "
                          "state directory) or postgresql://USER@HOST/DB (one store for a fleet of MTAs)."),
        click.option("--organization-name", help="organization-name of the reports (config tlsrpt.organization_name)."),
        click.option("--contact-info", metavar="ADDR",
                     help="contact-info of the reports; its domain is the submitter (config tlsrpt.contact_info)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _config(config_path, **overrides):
    config, _ = _load(config_path, **overrides)
    return config


def _open_db(config):
    from mxsec.storage.senderdb import SenderDB

    return SenderDB(config.tlsrpt.db)


def _need_identity(config) -> tuple[str, str]:
    tlsrpt = config.tlsrpt
    if not tlsrpt.organization_name or not tlsrpt.contact_info:
        raise ConfigError("reports need --organization-name and --contact-info (or tlsrpt.organization_name and "
                          "tlsrpt.contact_info in the configuration)")
    from mxsec.tlsrpt.build import submitter_of

    try:
        submitter_of(tlsrpt.contact_info)
    except ValueError as exc:
        raise ConfigError(f"--contact-info: {exc}") from None
    return tlsrpt.organization_name, tlsrpt.contact_info


@click.group("tlsrpt")
def tlsrpt() -> None:
    """Send SMTP TLS reports (RFC 8460): count the TLS sessions of Postfix and Exim, build the daily reports,
    DKIM-sign and deliver them to each domain's rua."""


@tlsrpt.command("collect")
@click.option("--socket", "socket_path", metavar="PATH",
              help="Unix datagram socket Postfix's smtp_tlsrpt_socket_name points at (config tlsrpt.socket).")
@click.option("--socket-mode", metavar="MODE", help="Permissions of the socket, octal (default 0660).")
@click.option("--socket-group", metavar="GROUP", help="Group of the socket, e.g. postfix.")
@click.option("--flush-interval", type=click.FloatRange(min=0.05), help="Seconds between writes (default 1).")
@click.option("--metrics-listen", metavar="HOST:PORT", help="Serve Prometheus metrics on /metrics here.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.option("--log-format", type=click.Choice(["json", "text"]), default=None)
@_config_option
@_sender_options
@_guarded
def collect(socket_path, socket_mode, socket_group, flush_interval, metrics_listen, log_level, log_format,
            config_path, tlsrpt_db, organization_name, contact_info):
    """Count the sessions Postfix 3.10+ reports over libtlsrpt datagrams (smtp_tlsrpt_enable = yes).

    One datagram is one session, counted on the UTC day it arrives. Bad datagrams are logged (rate-limited)
    and counted, never fatal. SIGTERM stops after storing everything received."""
    from mxsec.config import default_state_dir, parse_listen
    from mxsec.logs import setup_logging
    from mxsec.sender.collect import Collector, CollectorStats, bind_socket
    from mxsec.sender.metrics import start_collector_metrics

    config = _config(config_path, tlsrpt_db=tlsrpt_db, log_level=log_level, log_format=log_format)
    setup_logging(config.log.level, config.log.format)
    settings = config.tlsrpt
    mode = settings.socket_mode if socket_mode is None else _mode(socket_mode)
    path = socket_path or settings.socket
    stats = CollectorStats()
    metrics = None
    if metrics_listen:
        where = parse_listen(metrics_listen)
        if where.kind == "unix":
            raise ConfigError("--metrics-listen must be HOST:PORT")
        assert where.host is not None and where.port is not None  # a tcp address has both
        try:
            metrics = start_collector_metrics(stats, where.host, where.port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {metrics_listen}: {exc.strerror or exc}") from None
    try:
        db = _open_db(config)
        try:
            sock = bind_socket(path, mode=mode if mode is not None else 0o660,
                               group=socket_group or settings.socket_group)
        except BaseException:
            db.close()
            raise
        collector = Collector(sock, db, flush_interval=flush_interval or settings.flush_interval,
                              spill_dir=default_state_dir(), stats=stats)
        collector.install_signals()
        click.echo(f"mxsec tlsrpt collect: listening on {path}", err=True)
        try:
            collector.run()
        finally:
            sock.close()
            try:
                Path(path).unlink()
            except OSError:
                pass
            db.close()
    finally:
        if metrics is not None:
            metrics[0].shutdown()
    bad = sum(stats.bad.values())
    click.echo(f"mxsec tlsrpt collect: stopped; {stats.sessions} sessions counted, {bad} bad datagrams", err=True)


def _mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise ConfigError(f"--socket-mode: expected an octal mode such as 0660, got {text!r}") from None
    if not 0 <= value <= 0o777:
        raise ConfigError(f"--socket-mode: {text!r} is out of range")
    return value


@tlsrpt.command("follow-log")
@click.argument("log_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--mta", type=click.Choice(["postfix", "exim"]), default="postfix", show_default=True,
              help="Whose log it is: Postfix 3.7-3.9 (maillog) or Exim 4.96+ (mainlog).")
@click.option("--once", is_flag=True, help="Read to the end of the file, store, and stop (for cron and tests).")
@click.option("--from-start", is_flag=True, help="With no saved position, start at the beginning of the file "
                                                 "(default: its end, so history is not counted).")
@click.option("--sending-ip", metavar="IP", help="This MTA's address, for sending-mta-ip in failure details.")
@click.option("--no-probe", is_flag=True, help="Never probe MXes of MTA-STS testing domains to judge their "
                                               "certificates (see docs/tlsrpt-sending.md).")
@click.option("--flush-interval", type=click.FloatRange(min=0.05), help="Seconds between writes (default 1).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.option("--log-format", type=click.Choice(["json", "text"]), default=None)
@network_options
@_sender_options
@_guarded
def follow_log(log_file, mta, once, from_start, sending_ip, no_probe, flush_interval, log_level, log_format,
               config_path, nameservers, ca_file, timeout, allow_addresses, tlsrpt_db, organization_name,
               contact_info):
    """Count the sessions of Postfix 3.7-3.9 or Exim from their mail log, joined with the policy the daemon
    served (run `mxsec daemon --record-policies` with the same --db), for domains with a TLSRPT record.
    Resumes after the last counted line; follows rotation."""
    import signal

    from mxsec.config.wiring import make_dns_and_guard
    from mxsec.logs import setup_logging
    from mxsec.sender.follow import LogFollower, MxProber, make_parser

    config = _config(config_path, tlsrpt_db=tlsrpt_db, nameservers=nameservers, timeout=timeout,
                     ca_file=ca_file, allow_addresses=allow_addresses, log_level=log_level, log_format=log_format)
    setup_logging(config.log.level, config.log.format)
    if not Path(log_file).is_file():
        raise ConfigError(f"{log_file}: no such log file")
    if sending_ip is not None:
        import ipaddress

        try:
            ipaddress.ip_address(sending_ip)
        except ValueError:
            raise ConfigError(f"--sending-ip: not an IP address: {sending_ip!r}") from None
    dns, guard = make_dns_and_guard(config)
    prober = None if no_probe else MxProber(guard, ca_file=config.tls.ca_file, timeout=min(config.https.timeout, 15))
    with _open_db(config) as db:
        follower = LogFollower(db, make_parser(mta), log_file, dns=dns, sending_ip=sending_ip, prober=prober,
                               flush_interval=flush_interval or config.tlsrpt.flush_interval)

        async def run():
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            return await follower.run(stop, once=once, from_start=from_start)

        stats = asyncio.run(run())
    click.echo(f"mxsec tlsrpt follow-log: {stats.lines} lines, {stats.attempts} delivery attempts, "
               f"{stats.sessions} sessions counted for {len(stats.domains)} domains "
               f"({stats.no_tlsrpt} to domains without TLSRPT, {stats.report_messages} carrying reports)",
               err=True)


@tlsrpt.command("report")
@click.option("--day", metavar="YYYY-MM-DD", required=True, help="UTC day to report (must be over).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write each report's .json.gz here.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON (one object per line).")
@_config_option
@_sender_options
@_guarded
def report(day, out_dir, as_json, config_path, tlsrpt_db, organization_name, contact_info):
    """Build the reports of one finished UTC day, one per report domain (RFC 8460 §4), and store them for
    `send`; with --out also write them as SUBMITTER!DOMAIN!BEGIN!END!ID.json.gz. Running it again for a day
    gives the same report-ids."""
    from mxsec.sender.send import day_of
    from mxsec.tlsrpt.build import build_report

    config = _config(config_path, tlsrpt_db=tlsrpt_db, organization_name=organization_name,
                     contact_info=contact_info)
    organization, contact = _need_identity(config)
    the_day = day_of(day)
    if the_day >= datetime.now(UTC).date():
        raise ConfigError(f"{the_day.isoformat()} is not over yet (UTC); its report is built after midnight")
    out = Path(out_dir) if out_dir else None
    if out is not None:
        make_dirs(out)
    with _open_db(config) as db:
        counted = db.day_policies(the_day)
        domains = list(counted)
        built_reports = [build_report(the_day, domain, policies, organization_name=organization,
                                      contact_info=contact) for domain, policies in counted.items()]
        db.save_reports((b.day, b.domain, b.report_id, b.filename, b.gzip_bytes, b.successful, b.failed)
                        for b in built_reports)
        for built in built_reports:
            if out is not None:
                (out / built.filename).write_bytes(built.gzip_bytes)
            if as_json:
                click.echo(built.json_bytes.decode("utf-8"))
            else:
                where = f" -> {out / built.filename}" if out is not None else ""
                click.echo(f"{built.domain}: {built.successful} successful, {built.failed} failed sessions, "
                           f"report-id {built.report_id}{where}")
    if not domains and not as_json:
        click.echo(f"no sessions counted on {the_day.isoformat()}")


def _relay(config, smtp, starttls, user):
    from mxsec.net.submit import SmtpRelay
    from mxsec.sender.send import password_from_env

    text = smtp or config.tlsrpt.smtp
    host, port = text, 25
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
        port = int(port_text) if port_text.isdigit() else 25
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit():
            raise ConfigError(f"--smtp: bad port in {text!r}")
        port = int(port_text)
    if not host or not 0 < port < 65536:
        raise ConfigError(f"--smtp: expected HOST[:PORT], got {text!r}")
    return SmtpRelay(host=host, port=port, starttls=starttls, username=user, password=password_from_env(),
                     timeout=config.https.timeout, ca_file=config.tls.ca_file)


@tlsrpt.command("send")
@click.option("--day", metavar="YYYY-MM-DD", help="Build (again) and deliver this UTC day only; default: every "
                                                  "finished day still pending.")
@click.option("--unfinished", is_flag=True,
              help="With --day (today): send the reports of the day so far, now, once, keeping no state — a "
                   "trial of the whole path; the day's real reports still follow after midnight.")
@click.option("--dry-run", is_flag=True, help="Write messages and POST bodies to --out instead of sending.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder for --dry-run.")
@click.option("--smtp", metavar="HOST[:PORT]", help="Relay for mailto: reports (default 127.0.0.1:25).")
@click.option("--smtp-starttls", type=click.Choice(["none", "opportunistic", "require"]), default="opportunistic",
              show_default=True, help="STARTTLS towards the relay.")
@click.option("--smtp-user", metavar="USER", help="AUTH user at the relay (password from $MXSEC_SMTP_PASSWORD).")
@click.option("--from", "from_addr", metavar="ADDR", help="Sender address (default: the contact-info address).")
@click.option("--dkim-key", metavar="FILE", help="PEM private key (RSA or Ed25519) signing mailed reports.")
@click.option("--dkim-selector", metavar="SEL", help="Selector of that key.")
@click.option("--dkim-domain", metavar="DOMAIN", help="d= of the signature (default: the submitter domain).")
@click.option("--max-delay", type=click.FloatRange(min=0), help="Spread first deliveries over this many seconds "
                                                                "after 00:00 UTC (default 3600).")
@click.option("--loop", is_flag=True, help="Keep running: a pass every --interval seconds until SIGTERM.")
@click.option("--interval", type=click.FloatRange(min=1), default=300.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per destination.")
@network_options
@_sender_options
@_guarded
def send(day, unfinished, dry_run, out_dir, smtp, smtp_starttls, smtp_user, from_addr, dkim_key, dkim_selector,
         dkim_domain, max_delay, loop, interval, as_json, config_path, nameservers, ca_file, timeout, allow_addresses,
         tlsrpt_db, organization_name, contact_info):
    """Deliver the reports of every finished day to each rua of the domain's current _smtp._tls record:
    mailto: as a DKIM-signed RFC 8460 §5.3 message through the relay, https: as a POST. Failed deliveries are
    retried with exponential backoff for 24 hours. Exit 1 if a destination failed for good."""
    from mxsec.config.wiring import make_dns_and_guard
    from mxsec.sender.send import DkimSettings, SendSettings, Sender, day_of, read_key
    from mxsec.tlsrpt.build import submitter_of

    config = _config(config_path, tlsrpt_db=tlsrpt_db, organization_name=organization_name,
                     contact_info=contact_info, nameservers=nameservers, ca_file=ca_file, timeout=timeout,
                     allow_addresses=allow_addresses)
    organization, contact = _need_identity(config)
    settings = config.tlsrpt
    if dry_run and not out_dir:
        raise ConfigError("--dry-run needs --out DIR")
    key_file = dkim_key or settings.dkim_key
    dkim = None
    if key_file:
        from mxsec.extras import require

        require("dkim", "tlsrpt", "signing reports (--dkim-key)")
        selector = dkim_selector or settings.dkim_selector
        if not selector:
            raise ConfigError("--dkim-key needs --dkim-selector")
        dkim = DkimSettings(read_key(key_file), selector, dkim_domain or settings.dkim_domain or submitter_of(contact))
    elif not dry_run:
        click.echo("mxsec: warning: no --dkim-key: mailed reports go out unsigned, and RFC 8460 §3 lets receivers "
                   "ignore them", err=True)
    send_settings = SendSettings(
        organization_name=organization, contact_info=contact, from_addr=from_addr or settings.from_address,
        relay=_relay(config, smtp, smtp_starttls, smtp_user), dkim=dkim,
        max_delay=settings.max_delay if max_delay is None else max_delay, ca_file=config.tls.ca_file,
        https_timeout=config.https.timeout, dry_run_dir=Path(out_dir) if dry_run else None,
    )
    the_day = day_of(day) if day else None
    dns, guard = make_dns_and_guard(config)
    failed_for_good = False
    with _open_db(config) as db:
        sender = Sender(db, dns, guard, send_settings)

        if unfinished and the_day is None:
            raise ConfigError("--unfinished needs --day")
        # One reporter per database: a second `send` (another host of the fleet) waits as a stand-by with
        # --loop, and otherwise leaves at once. A trial (--unfinished, --dry-run) changes nothing: no lease.
        if not (unfinished or dry_run):
            while not db.take_sending_lease():
                if not loop:
                    click.echo("mxsec: another `mxsec tlsrpt send` is sending from this database; nothing done",
                               err=True)
                    return
                if _sleep(interval):
                    return

        async def one_pass():
            if unfinished:
                assert the_day is not None  # checked above: --unfinished needs --day
                return await sender.send_unfinished(the_day)
            lines = await sender.run_once(the_day)
            if dry_run:
                lines = [*lines, *await _dry_run_rest(sender)]
            return lines

        while True:
            lines = asyncio.run(one_pass())
            for line in lines:
                failed_for_good |= line.state == "failed"
                if as_json:
                    click.echo(json.dumps(line.as_dict(), ensure_ascii=False))
                else:
                    click.echo(f"{line.day.isoformat()} {line.domain} {line.destination}: {line.state} "
                               f"({line.detail})")
            if not loop:
                break
            if _sleep(interval):
                break
    if failed_for_good:
        raise SystemExit(1)


async def _dry_run_rest(sender):
    """In a dry run, pending destinations not yet due are written too (nothing is marked)."""
    pending = [d for d in sender.db.deliveries(states=("pending",)) if d.next_attempt_ts > sender.clock()]
    return [await sender._deliver(d) for d in pending]


def _sleep(seconds: float) -> bool:
    """Sleep; ``True`` when SIGTERM/SIGINT arrived."""
    import signal

    stop = {"flag": False}

    def handler(*_):
        stop["flag"] = True

    old = signal.signal(signal.SIGTERM, handler)
    try:
        end = time.monotonic() + seconds
        while not stop["flag"] and time.monotonic() < end:
            time.sleep(min(1.0, end - time.monotonic()))
    except KeyboardInterrupt:
        return True
    finally:
        signal.signal(signal.SIGTERM, old)
    return stop["flag"]


@tlsrpt.command("status")
@click.option("--json", "as_json", is_flag=True)
@_config_option
@_sender_options
@_guarded
def status(as_json, config_path, tlsrpt_db, organization_name, contact_info):
    """Sessions counted today, and the reports per day and destination with their state."""
    config = _config(config_path, tlsrpt_db=tlsrpt_db)
    today = datetime.now(UTC).date()
    with _open_db(config) as db:
        counted = db.day_totals(today)
        reports = db.reports()
        deliveries = db.deliveries()
    by_report: dict[int, list] = {}
    for d in deliveries:
        by_report.setdefault(d.report.pk, []).append(d)
    doc: dict[str, Any] = {  # the --json document
        "today": {"day": today.isoformat(),
                  "sessions": {dom: {"successful": ok, "failed": bad} for dom, (ok, bad) in counted.items()}},
        "reports": [
            {"day": r.day.isoformat(), "domain": r.domain, "report_id": r.report_id, "filename": r.filename,
             "successful": r.successful, "failed": r.failed,
             "deliveries": [{"destination": d.destination, "state": d.state, "attempts": d.attempts,
                             "next_attempt": _iso(d.next_attempt_ts) if d.state == "pending" else None,
                             "last_error": d.last_error} for d in by_report.get(r.pk, [])]}
            for r in reports
        ],
    }
    if as_json:
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
        return
    from mxsec.display import safe_text

    total_ok = sum(ok for ok, _ in counted.values())
    total_bad = sum(bad for _, bad in counted.values())
    click.echo(f"today ({today.isoformat()} UTC): {total_ok} successful, {total_bad} failed sessions counted "
               f"towards {len(counted)} domains")
    for r in doc["reports"]:
        click.echo(f"{r['day']} {safe_text(r['domain'])}: {r['successful']} ok / {r['failed']} failed, "
                   f"report-id {r['report_id']}")
        for d in r["deliveries"]:
            extra = f", next attempt {d['next_attempt']}" if d["next_attempt"] else ""
            error = f", last error: {safe_text(d['last_error'])}" if d["last_error"] else ""
            click.echo(f"    {safe_text(d['destination'])}: {d['state']} after {d['attempts']} attempt(s)"
                       f"{extra}{error}")


def _iso(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
