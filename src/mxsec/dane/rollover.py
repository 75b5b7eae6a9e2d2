"""Plan a TLSA key/certificate rollover for an MX host ("current + next", RFC 7671 §8.1). Sans-I/O.

:func:`plan_rollover` takes the current and the next certificate (PEM or DER bytes), the MX host and the TLSA
parameters, and returns a :class:`RolloverPlan`: the records, the four steps in order, and warnings. It reads
no files and touches no network; ``mxsec dane rollover`` prints the plan.

The scheme (the one RFC 7671 §8.1 recommends, "current + next"):

1. publish the record of the next certificate **next to** the current one (the RRset then matches both);
2. wait until every authoritative server serves the new RRset, then at least **two TTLs** of the TLSA RRset,
   so that no resolver still caches the old RRset (the one without the new record);
3. switch the MX to the next certificate (check with ``mxsec dane verify``);
4. remove the old record once every MX address presents the next certificate.

With selector 1 (SPKI) a renewal that keeps the key produces the same record: then no DNS change is needed
at all, and the plan says so. ``usage=2`` (DANE-TA) plans an issuing-CA rollover: the two certificates are
then the current and the next CA certificates.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import TypeGuard

from cryptography import x509

from mxsec.dane.tlsa import (
    DANE_EE,
    DANE_TA,
    FULL,
    MATCHING_TYPES,
    SELECTOR_CERT,
    SELECTOR_SPKI,
    TlsaRecord,
    describe,
    tlsa_for_certificate,
    tlsa_owner,
)
from mxsec.errors import ParseError

__all__ = [
    "DEFAULT_TTL",
    "CertificateFacts",
    "RolloverError",
    "RolloverPlan",
    "RolloverStep",
    "duration_text",
    "load_certificate",
    "plan_rollover",
]

#: TLSA TTL assumed when none is given, seconds.
DEFAULT_TTL = 3600
#: Largest certificate input accepted, octets.
MAX_INPUT = 1024 * 1024
#: Largest TTL a DNS record can have (RFC 2181 §8).
MAX_TTL = 2**31 - 1


class RolloverError(ParseError):
    """An input the planner cannot use (not a certificate, bad parameter); the message is one line."""


@dataclass(frozen=True)
class CertificateFacts:
    """One of the two certificates, as the plan shows it."""

    label: str
    source: str | None
    subject: str
    issuer: str
    not_before: _dt.datetime
    not_after: _dt.datetime
    is_ca: bool
    record: TlsaRecord
    rr: str
    certificates_in_input: int = 1

    def as_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "source": self.source,
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "is_ca": self.is_ca,
            "record": self.record.to_text(),
            "rr": self.rr,
            "certificates_in_input": self.certificates_in_input,
        }


@dataclass(frozen=True)
class RolloverStep:
    """One step: ``action`` is ``publish``, ``wait``, ``switch`` or ``remove``; ``records`` the RR lines it adds
    (publish) or deletes (remove)."""

    number: int
    action: str
    title: str
    lines: tuple[str, ...]
    records: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"step": self.number, "action": self.action, "title": self.title, "text": list(self.lines),
                "records": list(self.records)}


@dataclass(frozen=True)
class RolloverPlan:
    host: str
    port: int
    owner: str
    usage: int
    selector: int
    mtype: int
    ttl: int
    wait_seconds: int
    current: CertificateFacts
    next: CertificateFacts
    #: both certificates give the same record: no DNS change is needed
    same_record: bool
    publish: tuple[str, ...]
    remove: tuple[str, ...]
    steps: tuple[RolloverStep, ...]
    warnings: tuple[str, ...]

    @property
    def parameters(self) -> str:
        """``DANE-EE(3) SPKI(1) SHA2-256(1)``."""
        return describe(self.current.record)

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "port": self.port,
            "owner": self.owner,
            "usage": self.usage,
            "selector": self.selector,
            "mtype": self.mtype,
            "parameters": self.parameters,
            "ttl": self.ttl,
            "wait_seconds": self.wait_seconds,
            "same_record": self.same_record,
            "dns_change_needed": not self.same_record,
            "current": self.current.as_dict(),
            "next": self.next.as_dict(),
            "publish_now": list(self.publish),
            "remove_after_switch": list(self.remove),
            "steps": [step.as_dict() for step in self.steps],
            "warnings": list(self.warnings),
        }


def _iso(value: _dt.datetime) -> str:
    return value.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration_text(seconds: int) -> str:
    """``7200`` -> ``"7200 s (2 h)"``; ``90`` -> ``"90 s"``; ``172800`` -> ``"172800 s (2 days)"``."""
    if seconds >= 2 * 86400 and seconds % 3600 == 0:
        days = seconds / 86400
        return f"{seconds} s ({days:g} days)" if days == int(days) else f"{seconds} s ({seconds // 3600} h)"
    if seconds >= 3600:
        hours = seconds / 3600
        return f"{seconds} s ({hours:.3g} h)"
    if seconds >= 120:
        return f"{seconds} s ({seconds / 60:.3g} min)"
    return f"{seconds} s"


def load_certificate(data: bytes, what: str = "certificate") -> tuple[x509.Certificate, int]:
    """``(first certificate, how many the input holds)`` from PEM (first CERTIFICATE block) or DER.

    Raises :class:`RolloverError` with a one-line message naming ``what``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RolloverError(f"{what}: expected bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_INPUT:
        raise RolloverError(f"{what}: larger than {MAX_INPUT} octets, not a certificate")
    if not data.strip():
        raise RolloverError(f"{what}: empty")
    if b"-----BEGIN" in data:
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise RolloverError(f"{what}: no PEM CERTIFICATE block (a key or a request?)")
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise RolloverError(f"{what}: not a valid PEM certificate ({_one_line(exc)})") from None
        if not certs:  # pragma: no cover - cryptography raises instead
            raise RolloverError(f"{what}: no certificate found")
        return certs[0], len(certs)
    try:
        return x509.load_der_x509_certificate(data), 1
    except ValueError:
        raise RolloverError(f"{what}: neither a PEM nor a DER certificate") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:159] + "…"


def _name(name: x509.Name) -> str:
    try:
        text = name.rfc4514_string()
    except Exception:  # noqa: BLE001 - odd attribute types
        text = ""
    return text or "(empty name)"


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except Exception:  # noqa: BLE001 - absent or malformed
        return False


def _facts(cert: x509.Certificate, count: int, label: str, source: str | None, owner: str, usage: int,
           selector: int, mtype: int) -> CertificateFacts:
    record = tlsa_for_certificate(cert, usage=usage, selector=selector, mtype=mtype)
    return CertificateFacts(
        label=label,
        source=source,
        subject=_name(cert.subject),
        issuer=_name(cert.issuer),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        is_ca=_is_ca(cert),
        record=record,
        rr=f"{owner} IN TLSA {record.to_text()}",
        certificates_in_input=count,
    )


def _check_parameters(usage: object, selector: object, mtype: object, ttl: object, port: object) -> None:
    def integer(value: object) -> TypeGuard[int]:
        return isinstance(value, int) and not isinstance(value, bool)

    if not integer(usage) or usage not in (DANE_TA, DANE_EE):
        raise RolloverError(f"usage {usage!r}: only 2 (DANE-TA, a CA rollover) and 3 (DANE-EE, a server "
                            "certificate rollover) are used for SMTP")
    if not integer(selector) or selector not in (SELECTOR_CERT, SELECTOR_SPKI):
        raise RolloverError(f"selector {selector!r}: 0 (full certificate) or 1 (public key)")
    if not integer(mtype) or (mtype != FULL and mtype not in MATCHING_TYPES):
        raise RolloverError(f"matching type {mtype!r}: 0 (full), 1 (SHA2-256) or 2 (SHA2-512)")
    if not integer(ttl) or not 0 <= ttl <= MAX_TTL:
        raise RolloverError(f"TTL {ttl!r}: a number of seconds from 0 to {MAX_TTL}")
    if not integer(port) or not 0 < port < 65536:
        raise RolloverError(f"port {port!r}: a number from 1 to 65535")


def plan_rollover(
    current: bytes,
    next_cert: bytes,
    host: str,
    *,
    port: int = 25,
    usage: int = DANE_EE,
    selector: int = SELECTOR_SPKI,
    mtype: int = 1,
    ttl: int = DEFAULT_TTL,
    now: _dt.datetime | None = None,
    current_source: str | None = None,
    next_source: str | None = None,
) -> RolloverPlan:
    """The rollover plan for ``host`` from the ``current`` to the ``next_cert`` certificate (PEM or DER bytes).

    ``current_source``/``next_source`` name the inputs (the CLI passes the file names). ``now`` (for
    the validity warnings) defaults to the current time. Raises :class:`RolloverError` (or the ``ParseError``
    of :func:`~mxsec.dane.tlsa.tlsa_owner` for a bad host name).
    """
    _check_parameters(usage, selector, mtype, ttl, port)
    owner = tlsa_owner(host, port)
    host_name = owner.split("._tcp.", 1)[1].rstrip(".")
    if now is None:
        now = _dt.datetime.now(_dt.UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=_dt.UTC)
    cur_what = "current certificate" + (f" {current_source}" if current_source else "")
    nxt_what = "next certificate" + (f" {next_source}" if next_source else "")
    cur_cert, cur_count = load_certificate(current, cur_what)
    nxt_cert, nxt_count = load_certificate(next_cert, nxt_what)
    cur = _facts(cur_cert, cur_count, "current", current_source, owner, usage, selector, mtype)
    nxt = _facts(nxt_cert, nxt_count, "next", next_source, owner, usage, selector, mtype)
    same = cur.record == nxt.record
    wait = 2 * ttl
    warnings = _warnings(cur, nxt, cur_cert, nxt_cert, usage, selector, now)
    steps = _steps_same(cur, nxt, host_name, port, usage, selector) if same else \
        _steps_change(cur, nxt, host_name, port, usage, ttl, wait)
    return RolloverPlan(
        host=host_name,
        port=port,
        owner=owner,
        usage=usage,
        selector=selector,
        mtype=mtype,
        ttl=ttl,
        wait_seconds=0 if same else wait,
        current=cur,
        next=nxt,
        same_record=same,
        publish=(cur.rr,) if same else (cur.rr, nxt.rr),
        remove=() if same else (cur.rr,),
        steps=steps,
        warnings=warnings,
    )


def _warnings(cur: CertificateFacts, nxt: CertificateFacts, cur_cert: x509.Certificate,
              nxt_cert: x509.Certificate, usage: int, selector: int, now: _dt.datetime) -> tuple[str, ...]:
    notes: list[str] = []
    if cur_cert == nxt_cert:
        notes.append("the current and the next input hold the same certificate")
    for facts in (cur, nxt):
        if facts.certificates_in_input > 1:
            notes.append(f"the {facts.label} input holds {facts.certificates_in_input} certificates; the first one "
                         f"({facts.subject}) is used")
        if usage == DANE_TA and not facts.is_ca:
            notes.append(f"the {facts.label} certificate ({facts.subject}) is not a CA certificate; "
                         "with --usage 2 give the issuing CA certificates "
                         "(for the server's own certificate use --usage 3)")
        if usage == DANE_EE and facts.is_ca:
            notes.append(f"the {facts.label} certificate ({facts.subject}) is a CA certificate; for a CA rollover "
                         "use --usage 2")
    if nxt.not_after < now:
        notes.append(f"the next certificate expired on {_iso(nxt.not_after)}"
                     + ("; DANE-EE(3) ignores expiry, but MTA-STS and other PKIX-checking senders do not"
                        if usage == DANE_EE else "; certificates it issued will not be trusted by PKIX checks"))
    elif nxt.not_before > now:
        notes.append(f"the next certificate is valid only from {_iso(nxt.not_before)} on")
    if usage == DANE_EE and selector == SELECTOR_CERT:
        notes.append("selector 0 (full certificate) changes the record at every renewal, even with the same key; "
                     "selector 1 (public key) needs no DNS change when a renewal keeps the key")
    return tuple(notes)


def _brief(record: TlsaRecord) -> str:
    text = record.to_text()
    params, _, data = text.rpartition(" ")
    return text if len(data) <= 16 else f"{params} {data[:16]}…"


def _verify_command(host: str, port: int) -> str:
    return f"mxsec dane verify --host {host}" + ("" if port == 25 else f" --port {port}")


def _steps_change(cur: CertificateFacts, nxt: CertificateFacts, host: str, port: int, usage: int, ttl: int,
                  wait: int) -> tuple[RolloverStep, ...]:
    verify = _verify_command(host, port)
    what = "CA certificate" if usage == DANE_TA else "certificate"
    publish = RolloverStep(
        1, "publish", f"Publish the record of the next {what} next to the current one",
        (
            f"Add the record of the next {what} to the TLSA RRset and keep the current one. Do not change the "
            "server yet.",
            "The zone must stay DNSSEC-signed: senders ignore TLSA records that do not validate.",
        ),
        (cur.rr, nxt.rr),
    )
    waiting = RolloverStep(
        2, "wait", f"Wait at least {duration_text(wait)} after the new record is everywhere",
        (
            f"First make sure every authoritative name server of the zone serves both records (ask each one, "
            f"e.g. `dig +dnssec +norec TLSA {cur.rr.split()[0]} @NS`).",
            f"Then wait at least twice the TLSA TTL ({ttl} s), i.e. {duration_text(wait)}, so that no resolver "
            "still caches the old RRset without the new record.",
            f"Check: `{verify}` must still pass (the current record matches) and list both records.",
        ),
    )
    if usage == DANE_TA:
        switch_lines = (
            f"Install a server certificate issued by the next CA ({nxt.subject}) on every MX that uses this "
            "TLSA RRset, with a chain that includes the next CA certificate (a digest 2 x 1 / 2 x 2 record "
            "only matches a CA certificate the server sends), and reload the MTA.",
            f"Check: `{verify}` must report that the next record ({_brief(nxt.record)}) matched.",
        )
    else:
        switch_lines = (
            "Install the next certificate and its key on every MX that uses this TLSA RRset and reload the MTA.",
            f"Check: `{verify}` must report on every address that the next record ({_brief(nxt.record)}) "
            "matched the leaf.",
        )
    switch = RolloverStep(3, "switch", f"Switch the MX to the next {what}", switch_lines)
    remove = RolloverStep(
        4, "remove", "Remove the old record",
        (
            f"Once `{verify}` passes with the next record on every address (and you will not roll back), "
            "delete the current (old) record below. No extra wait is needed: resolvers that still cache the old "
            "RRset also have the new record. (To roll back later, publish it again first and repeat the wait.)",
        ),
        (cur.rr,),
    )
    return publish, waiting, switch, remove


def _steps_same(cur: CertificateFacts, nxt: CertificateFacts, host: str, port: int, usage: int,
                selector: int) -> tuple[RolloverStep, ...]:
    verify = _verify_command(host, port)
    why = ("both certificates have the same public key" if selector == SELECTOR_SPKI
           else "both inputs are the same certificate")
    what = "CA certificate" if usage == DANE_TA else "certificate"
    return (
        RolloverStep(
            1, "publish", "No DNS change is needed",
            (
                f"{why[0].upper()}{why[1:]}, so the published record already matches the next {what}. "
                "Make sure it is published:",
            ),
            (cur.rr,),
        ),
        RolloverStep(2, "wait", "Nothing to wait for", ("The TLSA RRset does not change.",)),
        RolloverStep(
            3, "switch", f"Switch the MX to the next {what} whenever you like",
            (f"Install it, reload the MTA, then check with `{verify}`.",),
        ),
        RolloverStep(4, "remove", "Nothing to remove", ("The record stays as it is.",)),
    )

