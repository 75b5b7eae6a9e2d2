"""``mxsec reports fetch-imap``: read TLSRPT report mail from an IMAP mailbox and store it.

Registered on the ``reports`` group by :mod:`mxsec.cli` (its ``COMMANDS`` registration), like every
command group. The work is done by :mod:`mxsec.reports.imap`; this module only
turns options into its settings and prints what became of each message, the way ``reports ingest`` does.

Exit codes: 0 when every message read was stored (or was a duplicate), 1 when a message was rejected, 2 for
usage errors and when the server or the database cannot be used (one line on stderr), 3 when a conflicting
copy of a report was stored and nothing was rejected (as ``reports ingest``).
"""

from __future__ import annotations

import os
import sys

import click

from mxsec.cli.common import _fail, _guarded
from mxsec.cli.reports import db_option, dkim_options, echo_input, exit_code, open_db, totals_line
from mxsec.reports.imap import (
    DEFAULT_LIMIT,
    DEFAULT_TIMEOUT,
    MAX_MESSAGE_BYTES,
    SECURITY_MODES,
)

PASSWORD_ENV = "MXSEC_IMAP_PASSWORD"
#: A password file is read up to this many bytes (one line is used).
MAX_PASSWORD_FILE = 64 * 1024


def read_password(password_file: str | None) -> str:
    """The first line of *password_file*, else ``$MXSEC_IMAP_PASSWORD``; never from the command line."""
    if password_file:
        try:
            with open(password_file, "rb") as handle:
                raw = handle.read(MAX_PASSWORD_FILE)
        except FileNotFoundError:
            _fail(f"--password-file {password_file}: no such file")
        except IsADirectoryError:
            _fail(f"--password-file {password_file}: is a directory")
        except PermissionError:
            _fail(f"--password-file {password_file}: permission denied")
        except OSError as exc:
            _fail(f"--password-file {password_file}: {exc.strerror or exc}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            _fail(f"--password-file {password_file}: not UTF-8 text")
        password = text.split("\n", 1)[0].removesuffix("\r")
        if not password:
            _fail(f"--password-file {password_file}: the first line is empty")
        return password
    password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        _fail(f"no IMAP password: give --password-file FILE or set {PASSWORD_ENV}")
    return password


@click.command("fetch-imap")
@click.option("--host", required=True, metavar="HOST", help="IMAP server name or address.")
@click.option("--port", type=click.IntRange(1, 65535),
              help="IMAP port (default 993 with --security tls, 143 otherwise).")
@click.option("--security", type=click.Choice(SECURITY_MODES), default="tls", show_default=True,
              help="tls: implicit TLS; starttls: STARTTLS on the plain port; none: no TLS (loopback only).")
@click.option("--ca-file", type=click.Path(dir_okay=False),
              help="PEM trust roots replacing the system store (a private CA's certificate).")
@click.option("--user", required=True, metavar="NAME", help="IMAP login name.")
@click.option("--password-file", type=click.Path(dir_okay=False),
              help=f"File whose first line is the password (else ${PASSWORD_ENV}).")
@click.option("--mailbox", default="INBOX", show_default=True, metavar="NAME", help="Mailbox to read.")
@click.option("--all", "all_messages", is_flag=True,
              help="Read every message, not only unseen ones (stored reports come back as duplicates).")
@click.option("--move-to", metavar="FOLDER",
              help="Move stored messages (marked seen) into this folder, created if missing.")
@click.option("--move-rejected", metavar="FOLDER",
              help="Move rejected messages into this folder (else they stay, unseen).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=DEFAULT_LIMIT, show_default=True,
              help="Messages read in this run at most, oldest first (the rest waits for the next run).")
@click.option("--max-size", type=click.IntRange(1024, 256 * 1024 * 1024), default=MAX_MESSAGE_BYTES,
              show_default=True, metavar="BYTES", help="Larger messages are rejected without being read.")
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=DEFAULT_TIMEOUT, show_default=True,
              help="Time limit of each network operation, seconds.")
@db_option
@dkim_options("the report messages", "messages")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message per line.")
@click.option("-q", "--quiet", is_flag=True, help="Print only rejected messages and the total.")
@_guarded
def fetch_imap(host, port, security, ca_file, user, password_file, mailbox, all_messages, move_to,
               move_rejected, limit, max_size, timeout, db_url, dkim, require_dkim, nameservers, as_json, quiet):
    """Read TLSRPT report messages from an IMAP mailbox and store their reports.

    Unseen messages are read (--all: every message); once stored they are marked seen (and moved with
    --move-to). Rejected messages stay unseen, or move with --move-rejected. The password comes from
    --password-file or $MXSEC_IMAP_PASSWORD, never from the command line."""
    from mxsec.reports.imap import (
        Account,
        Plan,
        check_account,
        check_plan,
        fetch_reports,
    )
    from mxsec.reports.inputs import Options, count_outcomes

    account = Account(host=host, user=user, password=read_password(password_file), port=port,
                      security=security, ca_file=ca_file, mailbox=mailbox, timeout=timeout)
    plan = Plan(all_messages=all_messages, move_to=move_to, move_rejected=move_rejected, limit=limit,
                max_size=max_size)
    check_account(account)
    check_plan(plan, mailbox)
    verifier = None
    if dkim or require_dkim:
        from mxsec.reports.dkim import make_verifier

        verifier = make_verifier(list(nameservers))
    options = Options(dkim=verifier, require_dkim=require_dkim)

    def show(fetched) -> None:
        echo_input(fetched.item, as_json=as_json, quiet=quiet, uid=fetched.uid, action=fetched.action,
                   folder=fetched.folder)

    db = open_db(db_url)
    try:
        run = fetch_reports(db, account, plan, options, on_item=show)
    finally:
        db.close()
    counts = count_outcomes(run.inputs)
    if not as_json:
        left = f"; {run.left} more left for the next run (--limit)" if run.left else ""
        click.echo(totals_line(len(run.items), "message(s)", counts) + left)
    sys.exit(exit_code(counts, run.inputs))


