"""Postfix 3.7–3.9 mail logs → delivery attempts (:class:`~mxsec.tlsrpt.attempt.Attempt`). Sans-I/O.

Postfix 3.10 reports TLS sessions to libtlsrpt itself; older versions only log them. This parser reads the
log of the ``smtp(8)`` client (``smtp_tls_loglevel = 1`` or more, which every TLS setup has) and rebuilds the
sessions. The line formats are those of Postfix's source (``src/tls/tls_verify.c``, ``tls_client.c``,
``tls_misc.c``, ``src/smtp/smtp_proto.c``, ``smtp_connect.c``, ``smtp_trouble.c``, ``smtp_tls_policy.c``,
``src/global/log_adhoc.c``, ``src/cleanup/cleanup_message.c``, tags 3.7–3.9) and were checked against the
logs of a real Postfix 3.7 in mxsec's lab.

Line prefixes: syslog (``Dec  2 18:00:01 host postfix/smtp[123]: …``), Postfix's own ``maillog_file``
(``Dec 02 18:00:01 …``) and RFC 3339 (``2026-12-02T18:00:01.123456+00:00 host postfix/smtp[123]: …``). The
program is ``<syslog_name>/<command>``: any syslog name (``postfix``, ``postfix-lab``, ``postfix/relay``…)
with the command ``smtp`` (or ``smtp-…``, e.g. ``postfix/smtp-tlsrpt``) is the SMTP client; ``lmtp`` is
ignored; ``cleanup`` gives the Message-ID (``QUEUEID: message-id=<…>``), ``qmgr``'s ``QUEUEID: removed``
forgets it.

How one ``smtp`` process logs one delivery request (one message, one next-hop), per MX host tried::

    warning: TLS policy lookup for DEST/HOST: REASON              DANE policy failed; the host is skipped
    warning: HOST[ADDR]:25: all TLSA records unusable[, fallback to unauthenticated TLS]
    [server |CA ]certificate verification failed for HOST[ADDR]:25: DETAIL     (levels that must match)
    SSL_connect error to HOST[ADDR]:25: …                        the handshake broke off
    Verified|Trusted|Untrusted|Anonymous TLS connection established|reused to HOST[ADDR]:25: TLSv1.3 with …
    QUEUEID: REASON                                               the host failed, another MX remains
    QUEUEID: to=<RCPT>, relay=HOST[ADDR]:25, [conn_use=N, ]delay=…, dsn=X.Y.Z, status=STATUS (REASON)

The last line is written once per recipient, and only for the host that ends the request (delivered, or the
last one tried): the sessions that ended with a ``QUEUEID: REASON`` line learn their recipient domains from
the request's later status lines. Lines without a queue id belong to the process's next session.

Result types (RFC 8460 §4.3)
    ====================================================================  ==========================
    log text                                                              result type
    ====================================================================  ==========================
    ``TLS is required, but was not offered by host H[A]``                 starttls-not-supported
    ``TLS is required, but host H[A] refused to start TLS: …``            starttls-not-supported
    ``… verification failed …: num=62:hostname mismatch`` (also 64)       certificate-host-mismatch
    ``… certificate has expired`` / ``certificate not yet valid``         certificate-expired
    ``… untrusted issuer …`` / ``self-signed certificate`` /
    ``not trusted by local or TLSA policy`` (and OpenSSL's other trust
    errors, see :func:`~mxsec.tlsrpt.attempt.classify_certificate_error`)  certificate-not-trusted
    ``… num=65:no matching DANE TLSA records``                            validation-failure
    ``Server certificate not verified`` without a detail line: by the
    summary's trust word (``Trusted`` → host mismatch, ``Untrusted`` →
    not trusted), else                                                    validation-failure
    ``Cannot start TLS: handshake failure``                               validation-failure
    ``all TLSA records unusable`` / ``TLSA records unusable``             tlsa-invalid
    ``TLSA lookup error for H:25``                                        dnssec-invalid
    ``no TLSA records found`` / ``non DNSSEC destination`` (``dane-only``)  dane-required
    ====================================================================  ==========================

    Why a TLSA mismatch is ``validation-failure``: RFC 8460 §4.3.2.1 defines ``tlsa-invalid`` as "a
    validation error in the TLSA record associated with a DANE policy. None of the records in the RRset were
    found to be valid" — records that are broken or unusable, which is Postfix's "TLSA records unusable". A
    certificate that matches none of several *valid* records is a failure of the certificate, and none of the
    certificate types of §4.3.1 describes it (the chain may be perfectly trusted), so it falls to
    ``validation-failure``, "a general failure for a reason not matching a category above", with
    ``failure_reason_code`` ``num=65:no matching DANE TLSA records`` saying exactly what failed. (Postfix 3.10's
    own TLSRPT code reports this case as ``certificate-not-trusted``, and self-signed certificates and unknown
    issuers as ``validation-failure``; mxsec follows the RFC's wording of §4.3.1 for those instead.)

    Why ``non DNSSEC destination`` and ``no TLSA records found`` are ``dane-required``, not
    ``dnssec-invalid``: Postfix writes them only at level ``dane-only``, for an MX host that has no
    DNSSEC-validated TLSA records — word for word RFC 8460's ``dane-required`` ("configured to require DANE
    TLSA records …, but no DNSSEC-validated TLSA records were present for the MX host"). ``dnssec-invalid`` is
    for answers that did not validate ("no valid records were returned from the recursive resolver", a
    SERVFAIL), which is ``TLSA lookup error``. Exim's own DANE events make the same split.

    ``all TLSA records unusable, fallback to unauthenticated TLS`` (level ``dane``) lets the delivery go on
    encrypted but unauthenticated; the attempt still carries ``tlsa-invalid``, since the domain's DANE policy
    could not be applied (Postfix 3.10 reports it the same way).

    A session whose TLS was established and that then failed for another reason (greylisting, a lost
    connection) is a successful TLS session (``result_type`` ``None``). Certificate problems at opportunistic
    levels are not failures the MTA acted on: the session is delivered, ``tls`` says ``untrusted`` or
    ``trusted`` and the caller decides with the domain's policy (e.g. MTA-STS ``testing``).

Plaintext sessions (no TLS line at all: no STARTTLS offered at level ``may``, or TLS off) are attempts with
``tls`` ``none`` when they delivered or got an answer to ``MAIL FROM``/``RCPT TO``/``DATA`` — the log then shows
the session went on without TLS; a plaintext deferral for another reason (lost connection, 4xx greeting) may not
have got past EHLO and is taken for a transient failure. A status line without handshake lines of its own that
repeats a session just closed (same process, queue id and relay within :data:`STRAGGLER_SECONDS`) is a late
recipient line of that session.

Not visible in Postfix 3.7 logs at level 1: whether a ``Verified`` session was authenticated by DANE (only
``smtp_tls_loglevel`` 2 logs ``H[A]:25: Matched DANE …``, which sets ``dane``); MX hosts whose connection failed
before STARTTLS (no attempt, see :mod:`mxsec.tlsrpt.attempt`). ``smtp_tls_loglevel = 0`` logs no TLS at all:
every session would look like plaintext.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mxsec.results import ResultType
from mxsec.tlsrpt.attempt import (
    Draft,
    LogParser,
    TlsOutcome,
    classify_certificate_error,
    mx_host,
    mx_ip,
)

__all__ = ["MAX_MESSAGE_IDS", "MAX_PROCESSES", "MAX_WAITING", "MTA", "STRAGGLER_SECONDS", "PostfixLogParser"]

MTA = "postfix"
#: At most this many ``smtp`` processes are followed at once (the least recently active one goes first).
MAX_PROCESSES = 4096
#: At most this many queue id → Message-ID pairs are kept (removed queue files go at once).
MAX_MESSAGE_IDS = 50_000
#: At most this many concluded sessions wait per process for the domains of their delivery request.
MAX_WAITING = 64
#: A status line without handshake lines that repeats a closed session's process, queue id and relay within this
#: many seconds is a late recipient line of that session, not a new plaintext session.
STRAGGLER_SECONDS = 60

# syslog / maillog_file / RFC 3339 prefix, then "program[pid]: "
_PREFIX = re.compile(
    r"(?:(?P<mon>[A-Z][a-z]{2}) (?P<day>[ \d]?\d) (?P<hms>\d\d:\d\d:\d\d)(?:\.\d{1,9})?"
    r"|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?))"
    r" \S{1,255} (?P<prog>[^\s\[\]:]{1,200})\[(?P<pid>\d{1,10})\]: "
)
_QID_LINE = re.compile(r"([0-9A-Za-z]{5,20}): ")
_SEVERITIES = ("warning: ", "error: ", "fatal: ", "panic: ")
_STATUS = re.compile(
    r"to=<(?P<rcpt>.*?)>, (?:orig_to=<.*?>, )?relay=(?P<relay>[^,\s]+), (?:conn_use=(?P<use>\d{1,9}), )?"
    r"(?:[a-z_]+=[^,]*, )*?dsn=[^,\s]*, status=(?P<status>[a-z]+)(?: \((?P<reason>.*)\))?\Z",
    re.S,
)
_NAMADDR = r"(?P<host>[^\s\[\]]*)\[(?P<addr>[^\]\s]*)\](?::(?P<port>\d{1,5}))?"
_RELAY = re.compile(_NAMADDR + r"\Z")
_SUMMARY = re.compile(
    r"(?P<trust>Verified|Trusted|Untrusted|Anonymous) TLS connection (?P<usage>established|reused) to "
    + _NAMADDR + r": "
)
_VERIFY = re.compile(r"(?:(?:server|CA|client) )?certificate verification failed for " + _NAMADDR
                     + r": (?P<detail>.*)\Z", re.S)
_SSL_CONNECT = re.compile(r"SSL_connect error to " + _NAMADDR + r": (?P<detail>.*)\Z", re.S)
_HOST_NOTE = re.compile(_NAMADDR + r": (?P<note>.*)\Z", re.S)
_POLICY = re.compile(r"TLS policy lookup (?:error )?for [^/\s]{1,300}/(?P<host>[^:\s]{1,300}): (?P<reason>.*)\Z",
                     re.S)
_NOT_OFFERED = re.compile(r"TLS is required, but was not offered by host " + _NAMADDR)
_REFUSED = re.compile(r"TLS is required, but host " + _NAMADDR + r" refused to start TLS")
_TLSA_LOOKUP = re.compile(r"TLSA lookup error for (?P<host>[^:\s]{1,300})(?::\d+)?")
_EXTERNAL = re.compile(r"external policy failure \((?P<type>[a-z-]{1,40})\)")
_TRANSACTION = re.compile(r"\(in reply to (?:MAIL FROM|RCPT TO|DATA|end of DATA|BDAT)")
_SESSION_END = re.compile(
    r"(?:lost connection with |conversation with |host \S+ refused to talk to me|host \S+ said: |Protocol error"
    r"|local data error while talking to )"
)

_RESULT_BY_NAME = {rt.value: rt for rt in ResultType}
_TRUST = {
    "Verified": TlsOutcome.VERIFIED,
    "Trusted": TlsOutcome.TRUSTED,
    "Untrusted": TlsOutcome.UNTRUSTED,
    "Anonymous": TlsOutcome.ANONYMOUS,
}

# What a "QUEUEID: REASON" or status reason says about the session.
_STARTTLS = 1  # not offered / refused: starttls-not-supported
_CERT = 2  # Server certificate not verified: the detail is in the session's earlier lines
_HANDSHAKE = 3  # Cannot start TLS: handshake failure
_DANE_POLICY = 4  # a DANE policy failure before any connection
_END = 5  # a non-TLS problem that ends the session
_RCPT = 6  # a recipient refused; the session goes on


@dataclass(slots=True)
class _Reason:
    kind: int
    result_type: ResultType | None = None
    code: str | None = None
    host: str | None = None
    addr: str | None = None


def _classify(reason: str) -> _Reason | None:
    """What a Postfix deferral reason (``QUEUEID: REASON`` or a status line's ``(REASON)``) means."""
    if reason.startswith("TLS is required, but "):
        match = _NOT_OFFERED.match(reason)
        if match:
            return _Reason(_STARTTLS, ResultType.STARTTLS_NOT_SUPPORTED, "TLS is required, but was not offered",
                           match["host"], match["addr"])
        match = _REFUSED.match(reason)
        if match:
            return _Reason(_STARTTLS, ResultType.STARTTLS_NOT_SUPPORTED,
                           "TLS is required, but host refused to start TLS", match["host"], match["addr"])
        return None  # "our TLS engine is unavailable", "unavailable": the sender's own problem
    if reason.startswith("Server certificate not verified"):
        return _Reason(_CERT)
    if reason.startswith("Cannot start TLS: handshake failure"):
        return _Reason(_HANDSHAKE, ResultType.VALIDATION_FAILURE, "Cannot start TLS: handshake failure")
    dane = _dane_reason(reason)
    if dane is not None:
        return dane
    if _SESSION_END.match(reason):
        return _Reason(_RCPT if "(in reply to RCPT TO command)" in reason else _END)
    return None


def _dane_reason(reason: str) -> _Reason | None:
    """DANE policy failures of ``smtp_tls_policy.c`` (logged before any connection to the host)."""
    if reason.startswith("TLSA lookup error for "):
        match = _TLSA_LOOKUP.match(reason)
        return _Reason(_DANE_POLICY, ResultType.DNSSEC_INVALID, "TLSA lookup error",
                       match["host"] if match else None)
    if reason.startswith("no TLSA records found"):
        return _Reason(_DANE_POLICY, ResultType.DANE_REQUIRED, "no TLSA records found")
    if reason.startswith("non DNSSEC destination"):
        return _Reason(_DANE_POLICY, ResultType.DANE_REQUIRED, "non DNSSEC destination")
    if reason.startswith("TLSA records unusable"):
        return _Reason(_DANE_POLICY, ResultType.TLSA_INVALID, "TLSA records unusable")
    return None


@dataclass(slots=True)
class _Handshake:
    """What the lines before a session's conclusion said about its TLS handshake."""

    host: str | None
    addr: str | None
    stage: int = 0  # 0 DANE set-up, 1 certificate verdict, 2 summary or handshake error
    trust: TlsOutcome | None = None
    reused: bool = False
    verify: str | None = None  # certificate verification failure text
    tlsa_unusable: bool = False
    handshake_error: bool = False
    dane: bool = False
    time: datetime | None = None

    def same_peer(self, host: str | None, addr: str | None) -> bool:
        return self.addr == addr and (self.host == host or host is None or self.host is None)


@dataclass(slots=True)
class _Process:
    """One ``smtp`` process: the delivery request it works on and its session being built."""

    pid: str = ""
    qid: str | None = None
    handshake: _Handshake | None = None
    waiting: list[Draft] = field(default_factory=list)  # concluded, waiting for the request's domains
    collecting: list[Hashable] = field(default_factory=list)  # open drafts fed by the status lines
    status_key: Hashable | None = None  # the session the current burst of status lines belongs to
    status_time: datetime | None = None  # … and the time of its first line
    last_peer: tuple[str | None, str | None] | None = None  # last concluded session (plaintext-retry check)
    last_tls: bool = False  # … and whether it tried TLS
    status_act: int | None = None  # qmgr activations of the burst's message when the burst began
    serial: int = 0


class PostfixLogParser(LogParser):
    """Feeds on Postfix log lines, returns :class:`Attempt` values (see the module docstring).

    ``year``/``clock``/``tz``: how to read time stamps without year or zone (see :mod:`mxsec.tlsrpt.attempt`).
    Not thread-safe; one parser per log stream."""

    mta = MTA

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._procs: OrderedDict[str, _Process] = OrderedDict()
        self._message_ids: OrderedDict[str, str] = OrderedDict()
        #: qmgr's "(queue active)" lines per queue id: a new delivery attempt of the message begins
        self._activations: OrderedDict[str, int] = OrderedDict()
        #: status-session key -> the activation count when it was emitted (a later one means a new attempt)
        self._emitted_in: OrderedDict[Hashable, int] = OrderedDict()

    def _stop_collecting(self) -> None:
        for proc in self._procs.values():
            proc.collecting = []
            proc.status_key = None
    @property
    def state_size(self) -> int:
        """Entries held in memory (processes, Message-IDs, open and remembered sessions)."""
        waiting = sum(len(p.waiting) for p in self._procs.values())
        return len(self._procs) + len(self._message_ids) + len(self.sessions) + self.sessions.remembered + waiting

    # -------------------------------------------------------------------------------------------- lines

    def _line(self, text: str, out: list[Draft]) -> None:
        if "smtp[" not in text and "smtp-" not in text and "cleanup[" not in text and "qmgr[" not in text:
            return
        match = _PREFIX.match(text)
        if match is None:
            return
        prog = match["prog"]
        command = prog.rpartition("/")[2]
        if "/" not in prog:
            return
        msg = text[match.end():]
        if command == "smtp" or command.startswith("smtp-"):
            self._smtp(match, msg, out)
        elif command == "cleanup":
            self._cleanup(msg)
        elif command == "qmgr" and msg.endswith(": removed"):
            self._message_ids.pop(msg[:-9], None)
            self._activations.pop(msg[:-9], None)
        elif command == "qmgr" and msg.endswith("(queue active)"):
            qid_match = _QID_LINE.match(msg)
            if qid_match is not None:
                acts = self._activations
                acts[qid_match.group(1)] = acts.get(qid_match.group(1), 0) + 1
                acts.move_to_end(qid_match.group(1))
                if len(acts) > MAX_MESSAGE_IDS:
                    acts.popitem(last=False)

    def _time(self, match: re.Match[str]) -> datetime | None:
        if match["iso"] is not None:
            return self.stamps.iso(match["iso"])
        return self.stamps.syslog(match["mon"], match["day"], match["hms"])

    def _cleanup(self, msg: str) -> None:
        qid_match = _QID_LINE.match(msg)
        if qid_match is None or msg.startswith(_SEVERITIES):
            return
        rest = msg[qid_match.end():]
        if not rest.startswith("message-id="):
            return
        value = rest[11:].strip()
        start = value.find("<")
        if start >= 0:
            end = value.find(">", start)
            value = value[start + 1:end] if end > start else value[start + 1:]
        value = value.strip()[:998]
        if not value or any(ord(c) < 0x21 or c == "\x7f" for c in value):
            return
        ids = self._message_ids
        ids[qid_match.group(1)] = value
        if len(ids) > MAX_MESSAGE_IDS:
            ids.popitem(last=False)
            self._stats.evicted += 1

    def _process(self, pid: str, out: list[Draft]) -> _Process:
        procs = self._procs
        proc = procs.get(pid)
        if proc is None:
            proc = procs[pid] = _Process(pid)
            if len(procs) > MAX_PROCESSES:
                _old_pid, old = procs.popitem(last=False)
                self._stats.evicted += 1
                self._stats.dropped += len(old.waiting)
                for key in old.collecting:
                    out.extend(self.sessions.close(key))
        else:
            procs.move_to_end(pid)
        return proc

    def _smtp(self, match: re.Match[str], msg: str, out: list[Draft]) -> None:
        proc = self._process(match["pid"], out)
        if msg.startswith(_SEVERITIES):
            if msg.startswith("warning: "):
                self._end_burst(proc, out)
                self._warning(proc, msg[9:], match)
            return
        qid_match = _QID_LINE.match(msg)
        if qid_match is not None:
            qid = qid_match.group(1)
            rest = msg[qid_match.end():]
            if rest.startswith("to=<"):
                status = _STATUS.match(rest)
                if status is not None:
                    self._status(proc, qid, status, match, out)
                return
            self._end_burst(proc, out)
            self._request(proc, qid)
            self._skip(proc, qid, rest, match)
            return
        self._end_burst(proc, out)
        first = msg[:1]
        if first in "VTUA":
            summary = _SUMMARY.match(msg)
            if summary is not None:
                hs = self._handshake(proc, summary["host"], summary["addr"], 2, match)
                hs.trust = _TRUST[summary["trust"]]
                hs.reused = summary["usage"] == "reused"
                hs.stage = 2
                return
        if "certificate verification failed for " in msg:
            verify = _VERIFY.match(msg)
            if verify is not None:
                hs = self._handshake(proc, verify["host"], verify["addr"], 1, match)
                hs.verify = verify["detail"]
                hs.stage = 1
            return
        if msg.startswith("SSL_connect error to "):
            failed = _SSL_CONNECT.match(msg)
            if failed is not None:
                hs = self._handshake(proc, failed["host"], failed["addr"], 2, match)
                hs.handshake_error = True
                hs.stage = 2
            return
        if msg.startswith("connect to "):
            proc.handshake = None  # a new TCP connection failed: nothing of the draft carries over
            return
        note = _HOST_NOTE.match(msg)
        if note is not None and note["note"].startswith("Matched DANE "):
            hs = self._handshake(proc, note["host"], note["addr"], 1, match)
            hs.dane = True

    def _warning(self, proc: _Process, msg: str, match: re.Match[str]) -> None:
        if msg.startswith("TLS policy lookup "):
            policy = _POLICY.match(msg)
            if policy is None:
                return
            reason = _dane_reason(policy["reason"])
            if reason is None:
                return  # a broken policy table or a lookup error of the sender's own: not the domain's failure
            draft = Draft(MTA, time=self._time(match), mx_host=mx_host(policy["host"]))
            assert reason.result_type is not None  # every DANE policy reason names its result type
            draft.fail(reason.result_type, reason.code)
            self._conclude(proc, draft, qid=None, tls_tried=False)
            return
        note = _HOST_NOTE.match(msg)
        if note is not None and note["note"].startswith("all TLSA records unusable"):
            hs = self._handshake(proc, note["host"], note["addr"], 0, match)
            hs.tlsa_unusable = True

    # -------------------------------------------------------------------------------------------- sessions

    def _handshake(self, proc: _Process, host: str, addr: str, stage: int, match: re.Match[str]) -> _Handshake:
        """The handshake being described, or a new one when these lines start another session."""
        peer_host, peer_addr = mx_host(host), mx_ip(addr)
        hs = proc.handshake
        if hs is not None and hs.same_peer(peer_host, peer_addr) and hs.stage < stage:
            hs.time = self._time(match)
            return hs
        if hs is not None and hs.trust is not None and not hs.handshake_error:
            # A session that was established but never concluded (no reason line): it took place.
            self._conclude(proc, self._draft(hs, None), qid=None, tls_tried=True)
        hs = proc.handshake = _Handshake(peer_host, peer_addr, time=self._time(match))
        return hs

    def _draft(self, hs: _Handshake | None, reason: _Reason | None, *, host: str | None = None,
               addr: str | None = None, time: datetime | None = None) -> Draft:
        """A draft from what the handshake lines said and the reason that concluded the session."""
        draft = Draft(MTA, time=time if time is not None else (hs.time if hs else None))
        if hs is not None:
            draft.mx_host, draft.mx_ip = hs.host, hs.addr
            draft.tls = hs.trust if hs.trust is not None and not hs.handshake_error else TlsOutcome.NONE
        if host is not None:
            draft.mx_host = mx_host(host)
        if addr is not None:
            draft.mx_ip = mx_ip(addr)
        if reason is None:
            if hs is not None and hs.tlsa_unusable and hs.trust is not None:
                draft.fail(ResultType.TLSA_INVALID, "all TLSA records unusable")
            elif hs is not None:
                draft.dane = hs.dane and hs.trust is TlsOutcome.VERIFIED
            return draft
        if reason.kind == _CERT:
            draft.fail(*_certificate_failure(hs))
        elif reason.kind == _HANDSHAKE:
            draft.tls = TlsOutcome.NONE
            if hs is not None and hs.tlsa_unusable:
                draft.fail(ResultType.TLSA_INVALID, "all TLSA records unusable")
            else:
                draft.fail(ResultType.VALIDATION_FAILURE, reason.code)
        elif reason.kind in (_STARTTLS, _DANE_POLICY):
            draft.tls = TlsOutcome.NONE
            assert reason.result_type is not None  # every STARTTLS and DANE policy reason names its result type
            draft.fail(reason.result_type, reason.code)
        return draft

    def _conclude(self, proc: _Process, draft: Draft, *, qid: str | None, tls_tried: bool) -> None:
        """A session ended without a status line of its own: it waits for the request's recipients. *qid*
        is the request it ended in, ``None`` when its last line named none (it belongs to the next one)."""
        if qid:
            draft.queue_id = qid
            draft.message_id = self._message_ids.get(qid)
        proc.handshake = None
        proc.last_peer = (draft.mx_host, draft.mx_ip)
        proc.last_tls = tls_tried
        if len(proc.waiting) >= MAX_WAITING:
            proc.waiting.pop(0)
            self._stats.dropped += 1
        proc.waiting.append(draft)

    def _request(self, proc: _Process, qid: str) -> None:
        """A line of delivery request *qid*: when the process moved on to another request, sessions of the
        old one that never saw a recipient are dropped; those without a request yet stay for the new one."""
        if proc.qid == qid:
            return
        if proc.waiting:
            kept = []
            for draft in proc.waiting:
                if draft.queue_id and draft.queue_id != qid:
                    self._stats.dropped += 1
                else:
                    kept.append(draft)
            proc.waiting = kept
        proc.qid = qid
        proc.last_peer = None
        proc.last_tls = False

    def _end_burst(self, proc: _Process, out: list[Draft]) -> None:
        """Any line but a status line ends the burst of status lines of the process's last session."""
        if proc.collecting:
            for key in proc.collecting:
                out.extend(self.sessions.close(key))
            proc.collecting = []
        proc.status_key = None

    def _skip(self, proc: _Process, qid: str, reason_text: str, match: re.Match[str]) -> None:
        """``QUEUEID: REASON``: the session with the current host ended and another MX remains."""
        reason = _classify(reason_text)
        if reason is None or reason.kind == _RCPT:
            return
        hs = proc.handshake
        time = self._time(match)
        if reason.kind == _END:
            if hs is not None and hs.trust is not None and not hs.handshake_error:
                self._conclude(proc, self._draft(hs, None, time=time), qid=qid, tls_tried=True)
            proc.handshake = None
            return
        if reason.kind == _DANE_POLICY:
            if not _seen(proc.waiting, reason):
                self._conclude(proc, self._draft(None, reason, host=reason.host, time=time), qid=qid,
                               tls_tried=False)
            return
        if reason.kind == _STARTTLS and hs is not None \
                and not hs.same_peer(mx_host(reason.host), mx_ip(reason.addr)):
            hs = None
        draft = self._draft(hs, reason, host=reason.host, addr=reason.addr, time=time)
        self._conclude(proc, draft, qid=qid, tls_tried=reason.kind != _STARTTLS)

    def _status(self, proc: _Process, qid: str, status: re.Match[str], match: re.Match[str],
                out: list[Draft]) -> None:
        """``QUEUEID: to=<…>, relay=…, status=…``: one recipient of the session with ``relay``."""
        relay = status["relay"]
        rcpt = status["rcpt"]
        key = ("pf", proc.pid, qid, relay)
        time = self._time(match)
        if proc.status_key == key and _close_in_time(proc.status_time, time) \
                and proc.status_act == self._activations.get(qid):  # another recipient of the burst
            for open_key in proc.collecting:
                draft = self.sessions.get(open_key)
                if draft is not None:
                    draft.add_recipient(rcpt)
            return
        self._end_burst(proc, out)
        self._request(proc, qid)
        proc.status_key, proc.status_time = key, time
        proc.status_act = self._activations.get(qid)
        collecting: list[Hashable] = []
        # Sessions that ended earlier in this request carried these recipients too.
        waiting, proc.waiting = proc.waiting, []
        message_id = self._message_ids.get(qid)
        for draft in waiting:
            if not draft.queue_id:
                draft.queue_id, draft.message_id = qid, message_id
            draft.add_recipient(rcpt)
            proc.serial += 1
            wait_key = ("pf-wait", proc.pid, proc.serial)
            out.extend(self.sessions.open(wait_key, draft))
            collecting.append(wait_key)
        session = self._status_session(proc, relay, status, time, key, waiting)
        if session is not None:
            session.queue_id, session.message_id = qid, message_id
            session.add_recipient(rcpt)
            out.extend(self.sessions.open(key, session))
            self._emitted_in[key] = self._activations.get(qid, 0)
            self._emitted_in.move_to_end(key)
            if len(self._emitted_in) > MAX_MESSAGE_IDS:
                self._emitted_in.popitem(last=False)
            collecting.append(key)
        proc.collecting = collecting

    def _status_session(self, proc: _Process, relay: str, status: re.Match[str], time: datetime | None,
                        key: Hashable, waiting: list[Draft]) -> Draft | None:
        """The session a status line concludes, or ``None`` when it is no new session."""
        hs = proc.handshake
        proc.handshake = None
        reason_text = status["reason"] or ""
        reason = _classify(reason_text) if status["status"] != "sent" else None
        if relay == "none":
            if reason is not None and reason.kind == _DANE_POLICY and not _seen(waiting, reason):
                return self._draft(None, reason, host=reason.host, time=time)
            return None  # no connection: a DNS failure, or every host skipped (counted above)
        peer = _RELAY.match(relay)
        if peer is None:
            return None
        host, addr = mx_host(peer["host"]), mx_ip(peer["addr"])
        if hs is not None and not hs.same_peer(host, addr):
            if hs.trust is not None and not hs.handshake_error:
                self._conclude(proc, self._draft(hs, None), qid=proc.qid, tls_tried=True)
            hs = None
        use = status["use"]
        if (use is not None and use != "1") or (hs is not None and hs.reused):
            return None  # a cached connection: its TLS handshake was counted when it was made
        if hs is None and _straggler(self.sessions.recent(key), time) \
                and self._emitted_in.get(key) == self._activations.get(proc.qid or ""):
            return None  # a late recipient line of a session already emitted (not a new attempt: qmgr
            # logged no "(queue active)" for the message since)
        if status["status"] != "sent" and (reason is None or reason.kind in (_END, _RCPT)):
            reason = None  # not a TLS problem: the TLS outcome is what the handshake lines said
            if hs is None and not _TRANSACTION.search(reason_text):
                return None  # a plaintext session that may not have got past EHLO: a transient failure
        if reason is not None and reason.kind == _STARTTLS:
            hs = None
        if hs is None and reason is None and proc.last_peer == (host, addr) and proc.last_tls:
            return None  # plaintext retry of the host whose TLS session just failed
        proc.last_peer = (host, addr)
        proc.last_tls = hs is not None
        return self._draft(hs, reason, host=peer["host"], addr=peer["addr"], time=time)


def _straggler(closed: Draft | None, time: datetime | None) -> bool:
    """Whether a status line without handshake lines of its own belongs to the closed session *closed* of the
    same process, request and relay: it does unless the clocks say it came much later (a retry)."""
    return closed is not None and _close_in_time(closed.time, time)


def _close_in_time(first: datetime | None, then: datetime | None) -> bool:
    if first is None or then is None:
        return True
    return abs((then - first).total_seconds()) <= STRAGGLER_SECONDS


def _seen(drafts: list[Draft], reason: _Reason) -> bool:
    """Whether one of *drafts* already stands for this DANE policy failure (the warning line and the
    status line name the same one)."""
    return any(d.result_type is reason.result_type and d.failure_reason_code == reason.code for d in drafts)


def _certificate_failure(hs: _Handshake | None) -> tuple[ResultType, str]:
    """``Server certificate not verified``: the cause is in the session's earlier lines."""
    if hs is None:
        return ResultType.VALIDATION_FAILURE, "Server certificate not verified"
    if hs.tlsa_unusable:
        return ResultType.TLSA_INVALID, "all TLSA records unusable"
    if hs.verify is not None:
        external = _EXTERNAL.match(hs.verify)
        if external is not None and external["type"] in _RESULT_BY_NAME:
            return _RESULT_BY_NAME[external["type"]], hs.verify
        return classify_certificate_error(hs.verify), hs.verify
    if hs.trust is TlsOutcome.TRUSTED:
        return ResultType.CERTIFICATE_HOST_MISMATCH, "Server certificate not verified"
    if hs.trust is TlsOutcome.UNTRUSTED:
        return ResultType.CERTIFICATE_NOT_TRUSTED, "Server certificate not verified"
    return ResultType.VALIDATION_FAILURE, "Server certificate not verified"
