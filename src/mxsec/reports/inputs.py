"""Where received reports come from: files, messages, mbox files, Maildir folders and standard input.

Everything here turns bytes into :class:`~mxsec.storage.reportdb.Incoming` values and hands them to the
report database; the IMAP reader (:mod:`mxsec.reports.imap`) and the HTTPS endpoint use the same pieces.

One *input* is one thing a user can point at: a report file, a message file, one message of an mbox file or
of a Maildir. An input is stored whole or not at all, and so is a whole mbox file; several inputs are grouped
into one database transaction for speed (a crash loses the whole group, never part of an input or an mbox).

What a file holds is told by its content, not its name: gzip or zip magic bytes, JSON text, an mbox
``From `` line, or else an RFC 5322 message.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from ..errors import ParseError
from ..fsutil import make_dirs
from ..storage.reportdb import Incoming, IngestResult, ReportDB
from ..tlsrpt.filenames import filename_parts
from ..tlsrpt.parse import parse_report
from ..tlsrpt.report import ReportWarning
from ..tlsrpt.unpack import GZIP_MAGIC, ZIP_MAGIC

#: Largest input file read (an mbox may hold many reports; a single report is limited by the parser).
MAX_FILE_BYTES = 256 * 1024 * 1024
#: Inputs per database transaction.
BATCH_INPUTS = 500


def _log():
    """The ``mxsec.reports`` logger (logging is imported only when there is something to say)."""
    import logging

    return logging.getLogger("mxsec.reports")


#: DKIM verification of one message: returns (status, signing domains), status ``pass``, ``fail`` or ``none``.
DkimVerifier = Callable[[bytes], "tuple[str, tuple[str, ...]]"]


@dataclass
class Input:
    """One input and what became of it. ``error`` is a one-line reason when it was rejected; ``results``
    are the database outcomes of its reports once stored."""

    name: str
    kind: str  # report, message, mbox-message, maildir-message
    incoming: list[Incoming] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    results: list[IngestResult] = field(default_factory=list)
    #: A Maildir message file to move once stored (see ``move_processed``).
    path: Path | None = None
    #: Inputs of one group (the messages of one mbox file) always share a transaction.
    group: str | None = None

    @property
    def rejected(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class Options:
    """``dkim`` verifies mailed reports (``None``: not checked, stored as such); ``require_dkim`` rejects
    messages whose verdict is not ``pass`` (RFC 8460 §3: mailed reports must be DKIM-signed)."""

    dkim: DkimVerifier | None = None
    require_dkim: bool = False
    #: Maildir folder into which processed Maildir messages are moved (created if missing).
    move_processed: Path | None = None
    #: Maildir folder for Maildir messages that were rejected (left in place when ``None``).
    move_rejected: Path | None = None


class InputError(ParseError):
    """A path that cannot be read as an input at all (missing, a directory that is not a Maildir...)."""


# ------------------------------------------------------------------------------------------- reading


def kind_of(data: bytes) -> str:
    """``report`` (gzip, zip or JSON), ``mbox`` or ``message``, from the content alone."""
    if data[:2] == GZIP_MAGIC or data[:4] == ZIP_MAGIC:
        return "report"
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if head in (b"{", b"["):
        return "report"
    from ..tlsrpt.message import looks_like_mbox  # the e-mail modules only for mail (bare reports start faster)

    if looks_like_mbox(data):
        return "mbox"
    return "message"


def report_input(data: bytes, name: str, source: str) -> Input:
    """A bare report (JSON, gzip or zip); the file name's policy domain fills a missing ``policy-domain``."""
    item = Input(name, "report")
    try:
        report = parse_report(data)
        # The file name is read only when a policy lacks its domain (the fallback changes nothing else; a
        # truncated warning list might hide that warning).
        if report.warnings and any(code in ("policy-domain-missing", "warnings-truncated")
                                   for code in report.warning_codes):
            parts = filename_parts(os.path.basename(name))
            if parts is not None:
                report = parse_report(data, fallback_domain=parts.policy_domain)
    except ParseError as exc:
        item.error = str(exc)
        return item
    item.incoming.append(Incoming(report, source, name))
    return item


def message_input(data: bytes, name: str, source: str, options: Options, kind: str = "message") -> Input:
    """Every report attached to one RFC 5322 message; a message without any is rejected."""
    from ..tlsrpt.message import MessageError, extract_reports

    item = Input(name, kind)
    try:
        message = extract_reports(data)
    except MessageError as exc:
        item.error = str(exc)
        return item
    if not message.attachments:
        item.error = "message holds no TLSRPT report"
        return item
    dkim: str | None = None
    domains: tuple[str, ...] = ()
    if options.dkim is not None:
        dkim, domains = options.dkim(data)
        if options.require_dkim and dkim != "pass":
            item.error = f"DKIM {dkim}: rejected by --require-dkim (RFC 8460 §3 wants mailed reports signed)"
            return item
    label = message.message_id or name
    warnings: list[ReportWarning] = list(message.warnings)
    if dkim is not None and dkim != "pass":
        warnings.append(ReportWarning("dkim-" + dkim, f"DKIM verification: {dkim}"))
    for attachment in message.attachments:
        try:
            report = attachment.parse()
        except ParseError as exc:
            item.error = f"{attachment.filename or 'attachment'}: {exc}"
            item.incoming.clear()
            return item
        item.incoming.append(Incoming(
            report, source, label, dkim=dkim, dkim_domains=tuple(domains),
            transport_warnings=tuple(warnings) + tuple(attachment.warnings),
        ))
    return item


def bytes_inputs(data: bytes, name: str, source: str, options: Options) -> Iterator[Input]:
    """The inputs in one file's (or stdin's) bytes."""
    kind = kind_of(data)
    if kind == "report":
        yield report_input(data, name, source)
    elif kind == "mbox":
        from ..tlsrpt.message import iter_mbox

        for number, message in enumerate(iter_mbox(data), 1):
            item = message_input(message, f"{name}#{number}", "mbox", options, "mbox-message")
            item.group = name
            yield item
    else:
        yield message_input(data, name, "message" if source == "file" else source, options)


def is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def maildir_inputs(path: Path, options: Options) -> Iterator[Input]:
    """Messages in ``new/`` then ``cur/``, oldest name first (Maildir names begin with the delivery time).

    Only regular files are read. A symbolic link is skipped with a one-line warning, never followed (it could
    point anywhere outside the folder), and so is anything else that is not a regular file (a FIFO would
    block the reader forever)."""
    for sub in ("new", "cur"):
        for entry in sorted((path / sub).iterdir(), key=lambda p: p.name):
            if entry.name.startswith("."):
                continue
            try:
                mode = entry.lstat().st_mode
            except OSError:
                continue  # gone since the listing (another reader moved it)
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                _log().warning("%s: skipped: %s in a Maildir", entry, _file_kind(mode))
                continue
            try:
                data = _read(entry, follow=False)
            except InputError as exc:
                yield Input(str(entry), "maildir-message", error=str(exc), path=entry)
                continue
            item = message_input(data, str(entry), "maildir", options, "maildir-message")
            item.path = entry
            yield item


def path_inputs(name: str, options: Options, stdin: "Callable[[], bytes] | None" = None) -> Iterator[Input]:
    """The inputs named by one command-line argument (``-`` is standard input)."""
    if name == "-":
        reader = stdin or (lambda: sys.stdin.buffer.read(MAX_FILE_BYTES + 1))
        data = reader()
        if len(data) > MAX_FILE_BYTES:
            yield Input("-", "report", error=f"standard input is larger than {MAX_FILE_BYTES} bytes")
            return
        yield from bytes_inputs(data, "-", "stdin", options)
        return
    try:
        mode: int | None = os.stat(name).st_mode
    except (OSError, ValueError):
        mode = None  # _read says what is wrong
    if mode is not None and stat.S_ISDIR(mode):
        path = Path(name)
        if not is_maildir(path):
            yield Input(name, "report", error="a directory that is not a Maildir (no cur/ and new/)")
            return
        yield from maildir_inputs(path, options)
        return
    try:
        data = _read(name, mode=mode)
    except InputError as exc:
        yield Input(name, "report", error=str(exc))
        return
    yield from bytes_inputs(data, name, "file", options)


def _file_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _read(path: Path | str, *, follow: bool = True, mode: int | None = None) -> bytes:
    """The bytes of a regular file. Anything else (a FIFO, a device, a socket; with ``follow=False`` also a
    symbolic link) is refused before it is opened; the file is opened with ``O_NONBLOCK`` (and ``O_NOFOLLOW``
    when not following) and checked again through the open descriptor, so a FIFO swapped in after the check
    cannot block the reader. *mode*: the ``st_mode`` the caller has just read (saves a second stat)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        if mode is None:
            mode = (os.stat(path) if follow else os.lstat(path)).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"skipped: {_file_kind(mode)}, not a regular file")
        fd = os.open(path, flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InputError(f"skipped: {_file_kind(info.st_mode)}, not a regular file")
            if info.st_size > MAX_FILE_BYTES:
                raise InputError(f"{info.st_size} bytes, more than the limit of {MAX_FILE_BYTES}")
            # Up to MAX_FILE_BYTES + 1 bytes or the end of the file, in reads sized by fstat (one byte more, to
            # see a file still growing), not in one buffer of MAX_FILE_BYTES + 1 allocated for every file.
            chunks: list[bytes] = []
            total = 0
            want = info.st_size + 1
            while total <= MAX_FILE_BYTES:
                ask = min(want, MAX_FILE_BYTES + 1 - total)
                chunk = os.read(fd, ask)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if len(chunk) < ask:
                    break  # a regular file reads short only at its end
                want = 1 << 20
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise InputError("no such file") from None
    except PermissionError:
        raise InputError("permission denied") from None
    except IsADirectoryError:
        raise InputError("is a directory") from None
    except OSError as exc:
        if not follow and exc.errno == errno.ELOOP:
            raise InputError("skipped: a symbolic link") from None
        raise InputError(exc.strerror or str(exc)) from None


# ------------------------------------------------------------------------------------------- storing


def ingest(db: ReportDB, inputs: Iterable[Input], options: Options = Options(),
           *, batch: int = BATCH_INPUTS, on_done: Callable[[Input], None] | None = None) -> list[Input]:
    """Store the reports of every accepted input, about ``batch`` inputs per transaction (never splitting a
    group: the messages of one mbox file are stored together); move Maildir messages as *options* say once
    their transaction has committed; call *on_done* for each input in order, after its transaction committed."""
    done: list[Input] = []
    pending: list[Input] = []

    def flush() -> None:
        accepted = [item for item in pending if not item.rejected]
        results = db.ingest([incoming for item in accepted for incoming in item.incoming])
        position = 0
        for item in accepted:
            item.results = results[position:position + len(item.incoming)]
            position += len(item.incoming)
        for item in pending:
            _move(item, options)
            if on_done is not None:
                on_done(item)
        done.extend(pending)
        pending.clear()

    for item in inputs:
        if len(pending) >= batch and (item.group is None or item.group != pending[-1].group):
            flush()
        pending.append(item)
    if pending:
        flush()
    return done


def _move(item: Input, options: Options) -> None:
    if item.path is None:
        return
    target = options.move_rejected if item.rejected else options.move_processed
    if target is None:
        return
    for sub in ("cur", "new", "tmp"):
        make_dirs(target / sub)
    name = item.path.name
    if ":2," not in name:
        name += ":2,S"  # seen
    destination = target / "cur" / name
    try:
        os.rename(item.path, destination)
    except OSError:
        import shutil  # across file systems only

        shutil.move(str(item.path), str(destination))


def outcome_line(item: Input) -> str:
    """One line per input: ``NAME: stored 1 report (ORG, DAY, DOMAINS)`` / ``duplicate`` / ``rejected: WHY``."""
    if item.rejected:
        return f"{item.name}: rejected: {item.error}"
    parts = []
    for incoming, result in zip(item.incoming, item.results):
        report = incoming.report
        domains = ", ".join(sorted({p.policy_domain or "?" for p in report.policies})) or "no policies"
        day = report.day.isoformat() if report.day else report.start.strftime("%Y-%m-%d %H:%M")
        extra = f", {len(report.warnings)} warning(s)" if report.warnings else ""
        parts.append(f"{result.outcome} {report.organization_name} {day} ({domains}{extra})")
    return f"{item.name}: " + "; ".join(parts)


def count_outcomes(items: Sequence[Input]) -> dict[str, int]:
    counts = {"stored": 0, "duplicate": 0, "conflict": 0, "rejected": 0}
    for item in items:
        if item.rejected:
            counts["rejected"] += 1
        for result in item.results:
            counts[result.outcome] += 1
    return counts
