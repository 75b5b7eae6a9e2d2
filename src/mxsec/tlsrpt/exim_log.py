"""Exim 4.96 main log → delivery attempts (:class:`~mxsec.tlsrpt.attempt.Attempt`). Sans-I/O.

Exim has no TLSRPT hook; its main log says per recipient which host took the message and how TLS went
(``X=`` cipher, ``CV=yes|no|dane`` with the default ``tls_certificate_verified`` log selector). This parser
rebuilds the sessions from it. The texts are those of Exim's source at tag ``exim-4.96`` (``deliver.c``:
``delivery_log``, ``deferral_log``, ``failure_log``, ``d_hostlog``, ``d_tlslog``; ``transports/smtp.c``;
``tls-gnu.c`` and ``tls-openssl.c``; ``host.c``: ``tlsa_lookup``; ``receive.c``) and were checked against the
main log of Debian's Exim 4.96 (a GnuTLS build) in mxsec's lab.

Line forms: the main log file (``2026-12-02 18:00:01[.123][ +0100] [pid] MESSAGEID …``) and syslog
(``Dec  2 18:00:01 host exim[123]: MESSAGEID …`` or an RFC 3339 stamp). Only lines with a message id matter::

    MSGID <= sender … id=MESSAGE-ID …                                    arrival: the Message-ID
    MSGID => rcpt [<orig>] R=r T=t H=host [ip]:25 X=TLS1.3:…:256 CV=yes DN="…" C="250 …"   first recipient
    MSGID -> rcpt2 … (same fields)                                       more recipients of the same delivery
    MSGID == rcpt R=r T=t defer (-37) H=host [ip]:25: TLS session: (certificate verification failed)
    MSGID ** rcpt R=r T=t[ H=… X=… CV=…]: MESSAGE                          permanent failure
    MSGID H=host [ip]:25: a TLS session is required, but the server did not offer TLS support
    MSGID DANE attempt failed; TLS connection to host [ip]: (certificate verification failed): …
    MSGID TLS session: …: delivering unencrypted to H=host [ip] (not in hosts_require_tls)
    MSGID [ip] SSL verify error: depth=0 error=certificate has expired cert=…     (OpenSSL builds)
    MSGID Completed

One attempt per session: ``=>`` starts a delivery over a new connection (``H=host [ip]*`` marks a reused
one: no new handshake, no attempt), ``->`` lines are further recipients of it; a host failure is logged once
by ``H=host [ip]: …`` (or ``DANE attempt failed; …``) and again on each recipient's ``==`` line when it was
the last host — lines of one message, host and address that tell the same kind of outcome within a few
minutes are one session. Sessions known only from a per-host line learn their domain from the message's next
recipient line (only recipients of that domain are counted with them).

Result types (RFC 8460 §4.3; Exim's own DANE events use the same names)
    ======================================================================  ==========================
    log text (after ``defer (N) H=… :`` / ``H=…:`` / ``**…:``)                  result type
    ======================================================================  ==========================
    ``a TLS session is required, but the server did not offer TLS support``  starttls-not-supported
    ``a TLS session is required, but an attempt to start TLS failed``         starttls-not-supported
    ``TLS session: (certificate verification failed)`` — GnuTLS says no
    more only for a name mismatch, the chain was trusted                      certificate-host-mismatch
    ``TLS session: (certificate verification failed): certificate invalid``
    — GnuTLS does not tell expired from untrusted                             validation-failure
    ``…: certificate revoked``                                                certificate-not-trusted
    ``…: TLSA record problem: …`` / ``DANE error: No usable TLSA records``    tlsa-invalid
    ``DANE attempt failed; …`` (TLSA mismatch: e.g. GnuTLS ``Verification
    failed. The certificate differs.``)                                       validation-failure
    OpenSSL ``TLS session: (SSL_connect): …certificate verify failed`` with
    the message's ``[ip] SSL verify error: … error=TEXT`` line: by TEXT as
    for Postfix (expired, name mismatch, untrusted issuer…)                   as TEXT says
    other ``TLS session: …`` (handshake failures), ``bad first read from
    TLS conn``                                                                validation-failure
    ``DANE error: tlsa lookup DEFER`` (SERVFAIL)                              dnssec-invalid
    ``DANE error: tlsa lookup FAIL`` / ``DANE error: HOST lookup not
    DNSSEC`` (``hosts_require_dane``)                                         dane-required
    ======================================================================  ==========================

    A delivery or a permanent rejection with ``X=`` had a working TLS session: ``CV=yes`` is ``verified``,
    ``CV=dane`` ``verified`` with ``dane``, ``CV=no`` (or no ``CV=``) ``untrusted``; without ``X=`` the
    session was plaintext (``tls`` ``none``, ``result_type`` ``None``: the caller knows the policy).

Not in Exim 4.96's log, so not counted: a TLS failure at a host that was *not* the last one tried, unless
it was a DANE failure or Exim retried in clear (``tls_tempfail_tryclear``) — Exim writes no per-host line for
``ERRNO_TLSFAILURE``; deferrals for non-TLS reasons (greylisting, time-outs), whose lines do not say whether
TLS was up; ``H=host [ip] TLS error on connection (…)`` I/O errors inside an established session.
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
    recipient_domain,
)

__all__ = ["MAX_MESSAGES", "MTA", "SAME_SESSION_SECONDS", "EximLogParser"]

MTA = "exim"
#: At most this many messages are followed at once (the least recently active one goes first).
MAX_MESSAGES = 50_000
#: Lines of one message, host and address further apart than this are different sessions (a retry).
SAME_SESSION_SECONDS = 300
#: Per message at most this many sessions wait for a recipient domain, and this many keys are tracked.
MAX_PER_MESSAGE = 64

_EXIM_PREFIX = re.compile(
    r"(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?(?: [+-]\d{4})?) (?:\[\d{1,10}\] )?"
    r"(?P<id>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) "
)
_SYSLOG_PREFIX = re.compile(
    r"(?:(?P<mon>[A-Z][a-z]{2}) (?P<day>[ \d]?\d) (?P<hms>\d\d:\d\d:\d\d)(?:\.\d{1,9})?"
    r"|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?))"
    r" \S{1,255} (?:[^\s\[\]:]{0,100}/)?exim[\w.-]{0,20}(?:\[\d{1,10}\])?: "
    r"(?P<id>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) "
)
_DELIVERY = re.compile(r"(?P<flag>=>|->|==|\*\*) (?P<rcpt>\S{1,1000})(?: <[^>]{0,1000}>)?")
_HOST = re.compile(r" H=(?P<host>\S{1,300})(?: DS)? \[(?P<addr>[0-9A-Fa-f:.]{2,45})\](?::\d{1,5})?(?P<cont>\*)?")
_TRANSPORT = re.compile(r" T=[\w.-]+")
_ROUTER = re.compile(r" R=[\w.-]+")
_DEFER = re.compile(r" defer \((?P<errno>-?\d{1,6})\)")
_MSGID_FIELD = re.compile(r" id\*?=(\S{1,998})")
_ADDR = r"\[(?P<addr>[0-9A-Fa-f:.]{2,45})\]"
_HOST_LINE = re.compile(r"H=(?P<host>\S{1,300})(?: DS)? " + _ADDR + r"(?::\d{1,5})?: (?P<reason>.*)\Z", re.S)
_DANE_FAILED = re.compile(r"DANE attempt failed; TLS connection to (?P<host>\S{1,300}) " + _ADDR
                          + r": (?P<detail>.*)\Z", re.S)
_CLEAR = re.compile(r"(?P<reason>.*): delivering unencrypted to H=(?P<host>\S{1,300}) " + _ADDR
                    + r" \(not in hosts_require_tls\)\Z", re.S)
_VERIFY = re.compile(r"\[(?P<addr>[0-9A-Fa-f:.]{2,45})\] SSL verify error(?: \(during [^)]{0,200}\))?: "
                     r"(?:depth=\d+ error=(?P<err>.*?) cert=|(?P<name>certificate name mismatch))")
_NOT_DNSSEC = re.compile(r"DANE error: (?:TLSA lookup for )?(?P<host>\S{1,300}) (?:lookup )?not DNSSEC")
_PARENS = re.compile(r"\((?P<where>[^()]{1,100})\)(?:: (?P<what>.*))?\Z", re.S)


@dataclass(slots=True)
class _Failure:
    result_type: ResultType
    code: str
    tls: TlsOutcome
    host: str | None = None


@dataclass(slots=True)
class _Message:
    """What is known about one message while its delivery lines come in."""

    id: str
    message_id: str | None = None
    waiting: dict[Hashable, Draft] = field(default_factory=dict)  # sessions waiting for a recipient domain
    collecting: list[Hashable] = field(default_factory=list)  # open drafts fed by further recipient lines
    keys: list[Hashable] = field(default_factory=list)  # every session key, closed by "Completed"
    verify_errors: dict[str, str] = field(default_factory=dict)  # OpenSSL: address → verify error text
    tlsa_unusable: bool = False
    dane_host: str | None = None


class EximLogParser(LogParser):
    """Feeds on Exim main-log lines, returns :class:`Attempt` values (see the module docstring).

    ``year``/``clock``/``tz``: how to read time stamps without year or zone (see :mod:`mxsec.tlsrpt.attempt`).
    Not thread-safe; one parser per log stream."""

    mta = MTA

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._messages: OrderedDict[str, _Message] = OrderedDict()

    def _stop_collecting(self) -> None:
        for message in self._messages.values():
            message.collecting = []
    @property
    def state_size(self) -> int:
        """Entries held in memory (messages, waiting, open and remembered sessions)."""
        waiting = sum(len(m.waiting) for m in self._messages.values())
        return len(self._messages) + waiting + len(self.sessions) + self.sessions.remembered

    # -------------------------------------------------------------------------------------------- lines

    def _line(self, text: str, out: list[Draft]) -> None:
        first = text[:1]
        if first.isdigit():
            match = _EXIM_PREFIX.match(text)
            if match is None:
                match = _SYSLOG_PREFIX.match(text)  # an RFC 3339 syslog stamp
                if match is None:
                    return
        elif "exim" in text:
            match = _SYSLOG_PREFIX.match(text)
            if match is None:
                return
        else:
            return
        msgid = match["id"]
        msg = text[match.end():]
        head = msg[:3]
        if head in ("=> ", "-> ", "== ", "** "):
            self._delivery(msgid, msg, match, out)
        elif head == "<= ":
            size = msg.find(" S=")  # id= follows the size (receive.c); the subject (T="…") comes later
            found = _MSGID_FIELD.search(msg, size) if size > 0 else None
            message = self._message(msgid, out)
            if found is not None:
                value = found.group(1)
                if value.startswith("<") and value.endswith(">"):
                    value = value[1:-1]
                message.message_id = value if value and value.isprintable() else None
        elif msg == "Completed":
            self._completed(msgid, out)
        elif head.startswith("H="):
            self._host_line(msgid, msg, match, out)
        elif msg.startswith("DANE "):
            self._dane_line(msgid, msg, match, out)
        elif msg[:1] == "[":
            verify = _VERIFY.match(msg)
            if verify is not None:
                message = self._message(msgid, out)
                if len(message.verify_errors) < MAX_PER_MESSAGE:
                    error = verify["err"] if verify["err"] is not None else verify["name"]
                    message.verify_errors[verify["addr"]] = error
        elif ": delivering unencrypted to H=" in msg:
            clear = _CLEAR.match(msg)
            if clear is not None:
                message = self._message(msgid, out)
                failure = self._failure(clear["reason"], message, clear["addr"])
                if failure is not None:
                    self._host_failure(message, clear["host"], clear["addr"], failure, self._time(match), out)

    def _time(self, match: re.Match[str]) -> datetime | None:
        if match.re is _EXIM_PREFIX:
            return self.stamps.iso(match["stamp"])
        if match["iso"] is not None:
            return self.stamps.iso(match["iso"])
        return self.stamps.syslog(match["mon"], match["day"], match["hms"])

    def _message(self, msgid: str, out: list[Draft]) -> _Message:
        messages = self._messages
        message = messages.get(msgid)
        if message is None:
            message = messages[msgid] = _Message(msgid)
            if len(messages) > MAX_MESSAGES:
                _old_id, old = messages.popitem(last=False)
                self._stats.evicted += 1
                self._stats.dropped += len(old.waiting)
        else:
            messages.move_to_end(msgid)
        return message

    def _completed(self, msgid: str, out: list[Draft]) -> None:
        message = self._messages.pop(msgid, None)
        if message is None:
            return
        for key in message.keys:
            out.extend(self.sessions.close(key))
        self._stats.dropped += len(message.waiting)

    # -------------------------------------------------------------------------------------------- failures

    def _failure(self, reason: str, message: _Message, addr: str | None) -> _Failure | None:
        """The TLS failure an Exim-written reason stands for, or ``None`` when it is not one. Only the start of
        the reason is looked at: a remote server's text comes later in it and cannot pose as Exim's."""
        if reason.startswith("a TLS session is required, but "):
            if reason.startswith("the server did not offer TLS support", 31):
                return _Failure(ResultType.STARTTLS_NOT_SUPPORTED,
                                "a TLS session is required, but the server did not offer TLS support",
                                TlsOutcome.NONE)
            if reason.startswith("an attempt to start TLS failed", 31):
                return _Failure(ResultType.STARTTLS_NOT_SUPPORTED,
                                "a TLS session is required, but an attempt to start TLS failed", TlsOutcome.NONE)
            return None
        if reason.startswith("TLS session: "):
            return self._tls_failure(reason[13:], message, addr)
        if reason.startswith("DANE error: "):
            detail = reason[12:]
            if detail.startswith("tlsa lookup DEFER"):
                return _Failure(ResultType.DNSSEC_INVALID, "DANE error: tlsa lookup DEFER", TlsOutcome.NONE)
            if detail.startswith("tlsa lookup FAIL"):
                return _Failure(ResultType.DANE_REQUIRED, "DANE error: tlsa lookup FAIL", TlsOutcome.NONE,
                                message.dane_host)
            not_dnssec = _NOT_DNSSEC.match(reason)
            if not_dnssec is not None:
                return _Failure(ResultType.DANE_REQUIRED, "DANE error: lookup not DNSSEC", TlsOutcome.NONE,
                                not_dnssec["host"])
            return _Failure(ResultType.VALIDATION_FAILURE, reason, TlsOutcome.NONE)
        if reason.startswith("bad first read from TLS conn"):
            return _Failure(ResultType.VALIDATION_FAILURE, "bad first read from TLS conn", TlsOutcome.NONE)
        return None

    def _tls_failure(self, detail: str, message: _Message, addr: str | None) -> _Failure:
        """``TLS session: DETAIL`` (``tls-gnu.c``/``tls-openssl.c``: ``(where): what``)."""
        parts = _PARENS.match(detail)
        where = parts["where"] if parts else ""
        what = (parts["what"] or "") if parts else detail
        code = f"{where}: {what}" if where and what else (where or what or detail)
        if message.tlsa_unusable:
            return _Failure(ResultType.TLSA_INVALID, "No usable TLSA records", TlsOutcome.NONE)
        if where == "certificate verification failed":
            if not what:  # GnuTLS: the chain was fine, the name did not match
                return _Failure(ResultType.CERTIFICATE_HOST_MISMATCH, code, TlsOutcome.TRUSTED)
            if what.startswith("TLSA record problem"):
                return _Failure(ResultType.TLSA_INVALID, code, TlsOutcome.UNTRUSTED)
            if what.startswith(("certificate not supplied", "no certificate received")):
                return _Failure(ResultType.VALIDATION_FAILURE, code, TlsOutcome.ANONYMOUS)
            if what.startswith("certificate revoked"):
                return _Failure(ResultType.CERTIFICATE_NOT_TRUSTED, code, TlsOutcome.UNTRUSTED)
            return _Failure(ResultType.VALIDATION_FAILURE, code, TlsOutcome.UNTRUSTED)
        error = message.verify_errors.get(addr) if addr else None
        if error is not None:
            return _Failure(classify_certificate_error(error), error, TlsOutcome.UNTRUSTED)
        return _Failure(ResultType.VALIDATION_FAILURE, code, TlsOutcome.NONE)

    def _dane_line(self, msgid: str, msg: str, match: re.Match[str], out: list[Draft]) -> None:
        message = self._message(msgid, out)
        if msg.startswith("DANE attempt failed; "):
            failed = _DANE_FAILED.match(msg)
            if failed is not None:
                failure = self._tls_failure(failed["detail"], message, failed["addr"])
                if failure.result_type is ResultType.CERTIFICATE_HOST_MISMATCH:
                    failure.result_type = ResultType.VALIDATION_FAILURE  # DANE decides, not the name
                self._host_failure(message, failed["host"], failed["addr"], failure, self._time(match), out)
        elif msg.startswith("DANE error: No usable TLSA records"):
            message.tlsa_unusable = True
        else:
            not_dnssec = _NOT_DNSSEC.match(msg)
            if not_dnssec is not None:
                message.dane_host = not_dnssec["host"]

    def _host_line(self, msgid: str, msg: str, match: re.Match[str], out: list[Draft]) -> None:
        """``H=host [ip]: REASON``: one host failed (``transports/smtp.c``: ``write_logs``)."""
        line = _HOST_LINE.match(msg)
        if line is None:
            return  # e.g. "H=host [ip] TLS error on connection (…)": an I/O error of an established session
        message = self._message(msgid, out)
        failure = self._failure(line["reason"], message, line["addr"])
        if failure is not None:
            self._host_failure(message, line["host"], line["addr"], failure, self._time(match), out)

    def _host_failure(self, message: _Message, host: str, addr: str, failure: _Failure, time: datetime | None,
                      out: list[Draft]) -> None:
        """A failed session known from a per-host line: it waits for the message's next recipient line."""
        key = ("ex", message.id, mx_host(host), mx_ip(addr))
        if self._same_session(key, failed=True, time=time, message=message) is not None:
            return
        draft = self._failed_draft(message, failure, host, addr, time)
        if len(message.waiting) >= MAX_PER_MESSAGE:
            message.waiting.pop(next(iter(message.waiting)))
            self._stats.dropped += 1
        message.waiting[key] = draft

    def _failed_draft(self, message: _Message, failure: _Failure, host: str | None, addr: str | None,
                      time: datetime | None) -> Draft:
        draft = Draft(MTA, queue_id=message.id, time=time, message_id=message.message_id,
                      mx_host=mx_host(failure.host or host), mx_ip=mx_ip(addr), tls=failure.tls)
        draft.fail(failure.result_type, failure.code)
        return draft

    # -------------------------------------------------------------------------------------------- deliveries

    def _same_session(self, key: Hashable, *, failed: bool, plaintext: bool = False, time: datetime | None,
                      message: _Message) -> Draft | None:
        """The draft a line of the given outcome belongs to, if one under *key* is open, waiting or recently
        closed and tells a compatible outcome (both failures, both successes, or a plaintext delivery right
        after the failed TLS session: Exim's retry in clear)."""
        draft = message.waiting.get(key)
        if draft is None:
            draft = self.sessions.get(key)
        if draft is None:
            draft = self.sessions.recent(key)
        if draft is None:
            return None
        if time is not None and draft.time is not None and abs((time - draft.time).total_seconds()) > \
                SAME_SESSION_SECONDS:
            return None
        if draft.failed == failed or (draft.failed and plaintext):
            return draft
        return None

    def _delivery(self, msgid: str, msg: str, match: re.Match[str], out: list[Draft]) -> None:
        found = _DELIVERY.match(msg)
        if found is None:
            return
        rcpt = found["rcpt"]
        domain = recipient_domain(rcpt)
        if domain is None:
            return  # a file, a pipe, a local part without domain
        message = self._message(msgid, out)
        rest = msg[found.end():]
        at = rest.find(" T=")
        if at < 0:
            at = rest.find(" R=")
        tail = rest[at:] if at > 0 else rest
        host = _HOST.search(tail)
        flag = found["flag"]
        time = self._time(match)
        own: Hashable | None = None
        if flag in ("=>", "->") or (flag == "**" and host is not None and " X=" in tail):
            if host is not None and not host["cont"]:
                own = self._success(message, host, tail, domain, time, out)
        else:
            failure = self._failure(self._reason(flag, tail, host), message, host["addr"] if host else None)
            if failure is not None:
                own = self._failed(message, host, failure, domain, time, out)
        self._feed_others(message, domain, own, out)

    @staticmethod
    def _reason(flag: str, tail: str, host: re.Match[str] | None) -> str:
        """The Exim-written reason of a ``==`` or ``**`` line (after ``defer (N)``, the host and ``: ``)."""
        start = 0
        if flag == "==":
            defer = _DEFER.search(tail)
            if defer is None:
                return ""
            start = defer.end()
            if host is not None and host.start() >= start:
                start = host.end()
            reason = tail[start:]
            if reason.startswith(": "):
                reason = reason[2:]
            if int(defer["errno"]) > 0:  # ": strerror" comes first
                reason = reason.partition(": ")[2]
            return reason
        if host is not None:
            start = host.end()
        else:
            transport = _TRANSPORT.search(tail) or _ROUTER.search(tail)
            start = transport.end() if transport is not None else 0
        reason = tail[start:]
        return reason[2:] if reason.startswith(": ") else ""

    def _success(self, message: _Message, host: re.Match[str], tail: str, domain: str, time: datetime | None,
                 out: list[Draft]) -> Hashable:
        """A recipient delivered (or refused) over a session whose TLS, if any, worked."""
        name, addr = mx_host(host["host"]), mx_ip(host["addr"])
        key = ("ex", message.id, name, addr)
        plaintext = " X=" not in tail
        draft = self._same_session(key, failed=False, plaintext=plaintext, time=time, message=message)
        if draft is not None:
            self._take(message, key, draft, domain, out)
            return key
        draft = Draft(MTA, queue_id=message.id, time=time, message_id=message.message_id, mx_host=name, mx_ip=addr)
        if not plaintext:
            at = tail.find(" CV=")
            verdict = tail[at + 4:at + 8].split(" ", 1)[0] if at >= 0 else None
            draft.tls = TlsOutcome.VERIFIED if verdict in ("yes", "dane") else TlsOutcome.UNTRUSTED
            draft.dane = verdict == "dane"
        draft.add_domain(domain)
        self._open(message, key, draft, out)
        return key

    def _failed(self, message: _Message, host: re.Match[str] | None, failure: _Failure, domain: str,
                time: datetime | None, out: list[Draft]) -> Hashable:
        """A recipient deferred or refused because of a TLS failure."""
        if host is not None:
            key: Hashable = ("ex", message.id, mx_host(host["host"]), mx_ip(host["addr"]))
        else:
            key = next((k for k, d in message.waiting.items() if d.failure_reason_code == failure.code), None) \
                or ("ex", message.id, None, failure.code)
        draft = self._same_session(key, failed=True, time=time, message=message)
        if draft is not None:
            self._take(message, key, draft, domain, out)
            return key
        draft = self._failed_draft(message, failure, host["host"] if host else None,
                                   host["addr"] if host else None, time)
        draft.add_domain(domain)
        self._open(message, key, draft, out)
        return key

    def _take(self, message: _Message, key: Hashable, draft: Draft, domain: str, out: list[Draft]) -> None:
        """One more recipient for an existing session (a waiting one is opened now that its domain is known)."""
        if message.waiting.pop(key, None) is not None:
            draft.add_domain(domain)
            self._open(message, key, draft, out)
        elif self.sessions.get(key) is draft:
            draft.add_domain(domain)
        # else: closed already, the recipient line came late; the session was counted

    def _open(self, message: _Message, key: Hashable, draft: Draft, out: list[Draft]) -> None:
        out.extend(self.sessions.open(key, draft))
        if key not in message.keys:
            if len(message.keys) >= MAX_PER_MESSAGE:
                message.keys.pop(0)
            message.keys.append(key)

    def _feed_others(self, message: _Message, domain: str, own: Hashable | None, out: list[Draft]) -> None:
        """Sessions that failed earlier at other hosts carried this recipient too: the waiting ones adopt its
        domain, the ones that did already count it when it is theirs."""
        if not message.waiting and not message.collecting:
            return
        alive = []
        for key in message.collecting:
            if key != own:
                draft = self.sessions.get(key)
                if draft is None:
                    continue
                draft.add_domain(domain)
            alive.append(key)
        for key, draft in list(message.waiting.items()):
            if key == own:
                continue
            del message.waiting[key]
            draft.only_domain = domain
            draft.add_domain(domain)
            self._open(message, key, draft, out)
            alive.append(key)
        message.collecting = alive

