"""Reading TLSRPT report mail from an IMAP mailbox (``mxsec reports fetch-imap``).

An I/O adapter around the standard library's :mod:`imaplib`: it logs in, finds the messages to read, fetches
them in bounded batches and hands each to :func:`mxsec.reports.inputs.message_input` and
:func:`mxsec.reports.inputs.ingest` like any other input. The mailbox is changed only after the database
transaction holding a message's reports has committed:

* stored messages (outcome stored, duplicate or conflict) get ``\\Seen``, and move to ``move_to`` if given;
* rejected messages are left as they were (still unseen: bodies are read with ``BODY.PEEK``), or move to
  ``move_rejected`` (unseen, so that a person notices them).

A crash between the commit and the flag change leaves the message unseen; the next run reads it again and
finds a duplicate, so nothing is lost or stored twice.

Connections use implicit TLS (``tls``, port 993, RFC 8314) or STARTTLS (``starttls``, port 143); ``none``
(no TLS at all) is accepted only for loopback addresses. Every socket operation has a time limit, a message
is read only up to ``max_size`` bytes (``RFC822.SIZE`` is looked at first, and the fetch itself asks for at
most one byte more), and one run reads at most ``limit`` messages, oldest first.

Errors that stop the run (connection refused, TLS, login, a missing mailbox, a lost connection) raise
:class:`ImapError` with one line for the user.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ..display import safe_text
from ..errors import ConfigError
from ..storage.reportdb import ReportDB
from .inputs import Input, Options, ingest, message_input

SECURITY_MODES = ("tls", "starttls", "none")
DEFAULT_PORTS = {"tls": 993, "starttls": 143, "none": 143}
#: Largest message read (a report message is a few kB to a few MB; larger ones are rejected unread).
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: Messages read per run unless told otherwise (the rest waits for the next run).
DEFAULT_LIMIT = 5000
#: Per-operation socket time limit, seconds.
DEFAULT_TIMEOUT = 60.0
#: One FETCH of bodies asks for at most this many messages and (by RFC822.SIZE) bytes; they form one
#: database transaction.
FETCH_MESSAGES = 50
FETCH_BYTES = 64 * 1024 * 1024
#: UIDs per SIZE fetch, STORE, MOVE, COPY or EXPUNGE command (keeps command lines short).
UIDS_PER_COMMAND = 200

_FETCH_START = re.compile(rb"^\d+ \(")
_UID = re.compile(rb"[( ]UID (\d+)")
_SIZE = re.compile(rb"[( ]RFC822\.SIZE (\d+)")
_BODY = re.compile(rb"[( ]BODY\[\](?:<\d+>)? ")


class ImapError(ConfigError):
    """The IMAP server could not be used (connection, TLS, login, mailbox); one line for the user."""


@dataclass(frozen=True)
class Account:
    """Where to read: server, credentials, mailbox. ``port`` ``None`` is the usual port of ``security``."""

    host: str
    user: str
    password: str = field(repr=False)
    port: int | None = None
    security: str = "tls"
    ca_file: str | None = None
    mailbox: str = "INBOX"
    timeout: float = DEFAULT_TIMEOUT

    @property
    def address(self) -> str:
        port = self.port or DEFAULT_PORTS.get(self.security, 993)
        return f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"


@dataclass(frozen=True)
class Plan:
    """What to read and what to do with it afterwards."""

    #: Every message not marked ``\\Deleted`` instead of only unseen ones.
    all_messages: bool = False
    #: Folder that stored messages are moved into (else they are marked ``\\Seen``).
    move_to: str | None = None
    #: Folder that rejected messages are moved into (else they stay where they are, unseen).
    move_rejected: str | None = None
    limit: int = DEFAULT_LIMIT
    max_size: int = MAX_MESSAGE_BYTES


@dataclass
class Fetched:
    """One message and what became of it: ``action`` is ``seen``, ``moved`` or ``left``."""

    uid: int
    item: Input
    action: str
    folder: str | None = None


@dataclass
class FetchRun:
    found: int = 0  # messages the search matched
    items: list[Fetched] = field(default_factory=list)
    #: How messages were moved: ``MOVE``, ``COPY+UID EXPUNGE`` or ``COPY+EXPUNGE`` (``None``: none moved).
    move_method: str | None = None

    @property
    def left(self) -> int:
        """Matching messages not read in this run because of the limit."""
        return max(0, self.found - len(self.items))

    @property
    def inputs(self) -> list[Input]:
        return [fetched.item for fetched in self.items]


# --------------------------------------------------------------------------------------------- checks


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_account(account: Account) -> None:
    """Reject unusable settings before anything is opened (:class:`~mxsec.errors.ConfigError`)."""
    if account.security not in SECURITY_MODES:
        raise ConfigError(f"--security must be one of {', '.join(SECURITY_MODES)}")
    if account.security == "none" and not is_loopback(account.host):
        raise ConfigError(
            f"--security none sends the password in clear: only allowed for loopback addresses, not {account.host!r}"
        )
    if not account.host or any(ch.isspace() or ord(ch) < 32 for ch in account.host):
        raise ConfigError(f"--host {account.host!r} is not a host name or address")
    if not account.user or any(ch in "\r\n\0" for ch in account.user):
        raise ConfigError("--user must be one line and not empty")
    if not account.password or any(ch in "\r\n\0" for ch in account.password):
        raise ConfigError("the IMAP password must be one line and not empty")
    if not account.mailbox or any(ord(ch) < 32 for ch in account.mailbox):
        raise ConfigError("--mailbox must not be empty nor hold control characters")


def check_plan(plan: Plan, mailbox: str) -> None:
    for option, folder in (("--move-to", plan.move_to), ("--move-rejected", plan.move_rejected)):
        if folder is None:
            continue
        if not folder or any(ord(ch) < 32 for ch in folder):
            raise ConfigError(f"{option} must not be empty nor hold control characters")
        if folder == mailbox:
            raise ConfigError(f"{option} {folder!r} is the mailbox being read")
    if plan.limit < 1 or plan.max_size < 1:
        raise ConfigError("--limit and --max-size must be positive")


# ------------------------------------------------------------------------------------------ the session


def mailbox_name(name: str) -> str:
    """*name* as an IMAP quoted string in modified UTF-7 (RFC 3501 §5.1.3), ready for a command line."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return quoted("".join(out))


def quoted(text: str) -> str:
    """*text* (ASCII) as an IMAP quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def uid_sets(uids: Sequence[int], size: int = UIDS_PER_COMMAND) -> Iterator[str]:
    """``1:3,7`` style sets of at most *size* UIDs each."""
    ordered = sorted(set(uids))
    for start in range(0, len(ordered), size):
        chunk = ordered[start:start + size]
        ranges: list[str] = []
        first = last = chunk[0]
        for uid in chunk[1:]:
            if uid == last + 1:
                last = uid
                continue
            ranges.append(f"{first}:{last}" if last != first else str(first))
            first = last = uid
        ranges.append(f"{first}:{last}" if last != first else str(first))
        yield ",".join(ranges)


def _text(value: object, limit: int = 200) -> str:
    """Server text for a one-line message: decoded, control characters escaped, shortened."""
    if isinstance(value, (list, tuple)) and value:
        value = value[-1]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = safe_text(value).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fetch_responses(data: Iterable[object]) -> Iterator[tuple[bytes, bytes | None]]:
    """imaplib's FETCH data as (response text without literals, first literal or ``None``) per response.

    imaplib gives a response holding a literal as a ``(text before it, literal)`` tuple followed by the text
    after it (``b")"`` or ``b" UID 7)"``) as its own item; a response without literal is one bytes item.
    """
    head: bytes | None = None
    literal: bytes | None = None
    for entry in data:
        if isinstance(entry, tuple) and len(entry) == 2:
            text, blob = entry
            if head is not None and _FETCH_START.match(text or b""):
                yield head, literal
                head, literal = None, None
            if head is None:
                head, literal = bytes(text or b""), bytes(blob) if blob is not None else None
            else:  # a second literal within the same response (not asked for): keep the text only
                head += b" " + bytes(text or b"")
        elif isinstance(entry, bytes):
            if head is not None and not _FETCH_START.match(entry):
                head += entry
                continue
            if head is not None:
                yield head, literal
            head, literal = entry, None
    if head is not None:
        yield head, literal


class ImapSession:
    """One logged-in connection; every method raises :class:`ImapError` (one line) when something fails."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.conn: imaplib.IMAP4 | None = None
        self.capabilities: set[str] = set()
        self.move_method: str | None = None

    # ------------------------------------------------------------------------------------------ errors

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        where = self.account.address
        try:
            yield
        except ImapError:
            raise
        except imaplib.IMAP4.abort as exc:
            raise ImapError(f"IMAP {where}: connection lost while {doing}: {_text(exc.args)}") from None
        except imaplib.IMAP4.error as exc:
            raise ImapError(f"IMAP {where}: {doing}: {_text(exc.args)}") from None
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or _text(exc.reason or exc)
            raise ImapError(f"IMAP {where}: TLS certificate not accepted: {reason}") from None
        except ssl.SSLError as exc:
            reason = _text(exc.reason or exc)
            if reason == "WRONG_VERSION_NUMBER":
                reason += " (no TLS on this port: --security starttls or another --port?)"
            raise ImapError(f"IMAP {where}: TLS failed while {doing}: {reason}") from None
        except TimeoutError:
            raise ImapError(
                f"IMAP {where}: no answer within {self.account.timeout:g} s while {doing}"
            ) from None
        except ConnectionRefusedError:
            raise ImapError(f"IMAP {where}: connection refused") from None
        except socket.gaierror as exc:
            raise ImapError(f"IMAP {where}: cannot resolve host: {_text(exc.strerror or exc)}") from None
        except OSError as exc:
            raise ImapError(f"IMAP {where}: {doing}: {_text(exc.strerror or exc)}") from None
        except UnicodeError as exc:
            raise ImapError(f"IMAP {where}: {doing}: {_text(exc)}") from None

    def _check(self, typ: str, data: object, doing: str) -> None:
        if typ != "OK":
            raise ImapError(f"IMAP {self.account.address}: {doing}: {typ} {_text(data)}")

    def _command(self, doing: str, command: str, *args: str) -> list:
        assert self.conn is not None
        with self._errors(doing):
            typ, data = self.conn.uid(command, *args)
        self._check(typ, data, doing)
        return data

    # ----------------------------------------------------------------------------------- connecting

    def _tls_context(self) -> ssl.SSLContext:
        ca_file = self.account.ca_file
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except FileNotFoundError:
            raise ConfigError(f"--ca-file {ca_file}: no such file") from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"--ca-file {ca_file}: not usable PEM certificates ({_text(exc)})") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def open(self) -> ImapSession:
        """Connect, secure the connection, log in, learn the capabilities."""
        account = self.account
        check_account(account)
        port = account.port or DEFAULT_PORTS[account.security]
        context = self._tls_context() if account.security != "none" else None
        with self._errors("connecting"):
            if account.security == "tls":
                self.conn = imaplib.IMAP4_SSL(account.host, port, ssl_context=context, timeout=account.timeout)
            else:
                self.conn = imaplib.IMAP4(account.host, port, timeout=account.timeout)
            if account.security == "starttls":
                if "STARTTLS" not in self.conn.capabilities:
                    raise ImapError(f"IMAP {account.address}: the server does not offer STARTTLS")
                self.conn.starttls(ssl_context=context)
        self._login()
        with self._errors("asking for capabilities"):
            typ, data = self.conn.capability()
        self._check(typ, data, "asking for capabilities")
        self.capabilities = {word.upper() for line in data if isinstance(line, bytes)
                             for word in line.decode("ascii", "replace").split()}
        return self

    def _login(self) -> None:
        assert self.conn is not None
        account = self.account
        pre_login = {c.upper() for c in self.conn.capabilities}
        if self.conn.state != "NONAUTH":  # PREAUTH greeting
            return
        plain_ok = account.user.isascii() and account.password.isascii()
        doing = f"login as {account.user!r} failed"
        with self._errors(doing):
            if plain_ok and "LOGINDISABLED" not in pre_login:
                self.conn.login(quoted(account.user), account.password)  # imaplib quotes the password
            elif "AUTH=PLAIN" in pre_login:
                secret = b"\0" + account.user.encode("utf-8") + b"\0" + account.password.encode("utf-8")
                self.conn.authenticate("PLAIN", lambda _challenge: secret)
            elif not plain_ok:
                raise ImapError(
                    f"IMAP {account.address}: a user name or password beyond ASCII needs AUTH=PLAIN, "
                    "which the server does not offer"
                )
            else:
                raise ImapError(f"IMAP {account.address}: the server refuses LOGIN (LOGINDISABLED) without TLS")

    def close(self) -> None:
        """Log out (never CLOSE: that would expunge messages someone else marked ``\\Deleted``)."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            conn.logout()

    # ------------------------------------------------------------------------------------- mailboxes

    def ensure_folder(self, folder: str) -> None:
        """Create *folder* (and subscribe to it) unless it exists."""
        assert self.conn is not None
        quoted = mailbox_name(folder)
        with self._errors(f"looking for folder {folder!r}"):
            typ, _data = self.conn.status(quoted, "(MESSAGES)")
        if typ == "OK":
            return
        with self._errors(f"creating folder {folder!r}"):
            typ, data = self.conn.create(quoted)
        self._check(typ, data, f"creating folder {folder!r}")
        with contextlib.suppress(Exception):
            self.conn.subscribe(quoted)

    def select(self, mailbox: str) -> int:
        """Open *mailbox* read-write; the number of messages in it."""
        assert self.conn is not None
        with self._errors(f"opening mailbox {mailbox!r}"):
            try:
                typ, data = self.conn.select(mailbox_name(mailbox))
            except imaplib.IMAP4.readonly:
                raise ImapError(f"IMAP {self.account.address}: mailbox {mailbox!r} is read-only") from None
        if typ != "OK":
            raise ImapError(f"IMAP {self.account.address}: no mailbox {mailbox!r}: {_text(data)}")
        try:
            return int(data[0] or 0)
        except (TypeError, ValueError, IndexError):
            return 0

    def search(self, all_messages: bool) -> list[int]:
        """UIDs of unseen (or all) messages not marked ``\\Deleted``, ascending (oldest first)."""
        criteria = "UNDELETED" if all_messages else "UNSEEN UNDELETED"
        data = self._command("searching", "SEARCH", criteria)
        uids: set[int] = set()
        for line in data:
            if isinstance(line, bytes):
                uids.update(int(word) for word in line.split() if word.isdigit())
        return sorted(uids)

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """UID -> RFC822.SIZE (messages expunged meanwhile are missing)."""
        result: dict[int, int] = {}
        wanted = set(uids)
        for uid_set in uid_sets(uids):
            data = self._command("asking for message sizes", "FETCH", uid_set, "(UID RFC822.SIZE)")
            for head, _literal in _fetch_responses(data):
                uid, size = _UID.search(head), _SIZE.search(head)
                if uid and size and int(uid.group(1)) in wanted:
                    result[int(uid.group(1))] = int(size.group(1))
        return result

    def bodies(self, uids: Sequence[int], max_size: int) -> dict[int, bytes]:
        """UID -> message bytes, at most ``max_size + 1`` bytes each (``BODY.PEEK``: flags stay as they are)."""
        result: dict[int, bytes] = {}
        if not uids:
            return result
        wanted = set(uids)
        for uid_set in uid_sets(uids):
            data = self._command("fetching messages", "FETCH", uid_set, f"(UID BODY.PEEK[]<0.{max_size + 1}>)")
            for head, literal in _fetch_responses(data):
                uid = _UID.search(head)
                if uid and literal is not None and _BODY.search(head) and int(uid.group(1)) in wanted:
                    result[int(uid.group(1))] = literal
        return result

    def mark_seen(self, uids: Sequence[int]) -> None:
        for uid_set in uid_sets(uids):
            self._command("marking messages seen", "STORE", uid_set, "+FLAGS.SILENT", r"(\Seen)")

    def move(self, uids: Sequence[int], folder: str) -> None:
        """UID MOVE (RFC 6851) where offered, else COPY, ``\\Deleted`` and (UID) EXPUNGE."""
        quoted = mailbox_name(folder)
        doing = f"moving messages to {folder!r}"
        for uid_set in uid_sets(uids):
            if "MOVE" in self.capabilities:
                self.move_method = "MOVE"
                self._command(doing, "MOVE", uid_set, quoted)
                continue
            self._command(doing, "COPY", uid_set, quoted)
            self._command(doing, "STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)")
            if "UIDPLUS" in self.capabilities:
                self.move_method = "COPY+UID EXPUNGE"
                self._command(doing, "EXPUNGE", uid_set)
            else:  # without UIDPLUS only a plain EXPUNGE exists: it also removes others' \Deleted messages
                self.move_method = "COPY+EXPUNGE"
                assert self.conn is not None
                with self._errors(doing):
                    typ, data = self.conn.expunge()
                self._check(typ, data, doing)


# ---------------------------------------------------------------------------------------------- the run


def _groups(uids: Sequence[int], sizes: dict[int, int], max_size: int) -> Iterator[list[int]]:
    """Consecutive groups of at most FETCH_MESSAGES messages and FETCH_BYTES readable bytes."""
    group: list[int] = []
    weight = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        size = size if size <= max_size else 0
        if group and (len(group) >= FETCH_MESSAGES or weight + size > FETCH_BYTES):
            yield group
            group, weight = [], 0
        group.append(uid)
        weight += size
    if group:
        yield group


def fetch_reports(db: ReportDB, account: Account, plan: Plan | None = None, options: Options | None = None,
                  on_item: Callable[[Fetched], None] | None = None) -> FetchRun:
    """Read the unseen (or all) messages of ``account.mailbox``, store their reports, then mark or move
    them; call *on_item* for each message once its fate is sealed. Raises :class:`ImapError`."""
    plan = plan if plan is not None else Plan()
    options = options if options is not None else Options()
    check_account(account)
    check_plan(plan, account.mailbox)
    session = ImapSession(account)
    run = FetchRun()
    try:
        session.open()
        for folder in (plan.move_to, plan.move_rejected):
            if folder is not None:
                session.ensure_folder(folder)
        session.select(account.mailbox)
        uids = session.search(plan.all_messages)
        run.found = len(uids)
        chosen = uids[: plan.limit]
        sizes = session.sizes(chosen)
        for group in _groups(chosen, sizes, plan.max_size):
            readable = [uid for uid in group if uid in sizes and sizes[uid] <= plan.max_size]
            bodies = session.bodies(readable, plan.max_size)
            batch: list[tuple[int, Input]] = []
            for uid in group:
                if uid not in sizes or (uid in readable and uid not in bodies):
                    run.found -= 1  # expunged by another client meanwhile
                    continue
                batch.append((uid, _message(uid, sizes[uid], bodies.get(uid), account.mailbox, plan, options)))
            if not batch:
                continue
            ingest(db, [item for _uid, item in batch], options, batch=len(batch))
            # The transaction has committed: now the mailbox may change.
            for fetched in _settle(session, batch, plan):
                run.items.append(fetched)
                if on_item is not None:
                    on_item(fetched)
        run.move_method = session.move_method
        return run
    finally:
        session.close()


def _message(uid: int, size: int, data: bytes | None, mailbox: str, plan: Plan, options: Options) -> Input:
    name = f"imap:{mailbox}/{uid}"
    if data is None or size > plan.max_size or len(data) > plan.max_size:
        actual = max(size, len(data or b""))
        return Input(name, "imap-message", error=f"{actual} bytes, more than the limit of {plan.max_size} (--max-size)")
    return message_input(data, name, "imap", options, "imap-message")


def _settle(session: ImapSession, batch: list[tuple[int, Input]], plan: Plan) -> list[Fetched]:
    processed = [uid for uid, item in batch if not item.rejected]
    rejected = [uid for uid, item in batch if item.rejected]
    done = "a database transaction committed, but "
    try:
        if processed:
            session.mark_seen(processed)  # before a move too: MOVE and COPY keep the flags
            if plan.move_to is not None:
                session.move(processed, plan.move_to)
        if rejected and plan.move_rejected is not None:
            session.move(rejected, plan.move_rejected)
    except ImapError as exc:  # the reports are stored; the next run finds them again as duplicates
        raise ImapError(done + str(exc)) from None
    result = []
    for uid, item in batch:
        if not item.rejected:
            folder = plan.move_to
        else:
            folder = plan.move_rejected
        action = "moved" if folder is not None else ("left" if item.rejected else "seen")
        result.append(Fetched(uid, item, action, folder))
    return result
