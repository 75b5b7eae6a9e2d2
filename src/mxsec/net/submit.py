"""SMTP submission of a report message to a relay (RFC 8460 §5.3 reports are mailed).

Blocking (``smtplib``); the sender calls it from a worker thread. The relay is usually the local MTA, which
then delivers the message; the message carries ``TLS-Required: No`` so that the MTA delivers it even when
the recipient's TLS fails (RFC 8460 §3, RFC 8689). ``starttls``: ``none``, ``opportunistic`` (when offered,
certificate not checked) or ``require`` (certificate checked against the system store or ``ca_file``).
A 5xx answer to the whole transaction or to every recipient is permanent; anything else is worth a retry.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SmtpRelay", "SubmitOutcome", "submit"]


@dataclass(frozen=True)
class SmtpRelay:
    host: str = "127.0.0.1"
    port: int = 25
    starttls: str = "opportunistic"
    username: str | None = None
    password: str | None = None
    timeout: float = 60.0
    ca_file: str | None = None
    helo: str | None = None


@dataclass(frozen=True)
class SubmitOutcome:
    ok: bool
    permanent: bool
    detail: str


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())[:300]


def submit(relay: SmtpRelay, from_addr: str, to_addrs: Sequence[str], message: bytes) -> SubmitOutcome:
    """Submit *message*; never raises for network or SMTP problems."""
    try:
        with smtplib.SMTP(relay.host, relay.port, local_hostname=relay.helo, timeout=relay.timeout) as smtp:
            smtp.ehlo()
            if relay.starttls != "none" and smtp.has_extn("starttls"):
                if relay.starttls == "require":
                    context = ssl.create_default_context(cafile=relay.ca_file)
                else:
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                smtp.starttls(context=context)
                smtp.ehlo()
            elif relay.starttls == "require":
                return SubmitOutcome(False, False, f"relay {relay.host} does not offer STARTTLS")
            if relay.username:
                smtp.login(relay.username, relay.password or "")
            refused = smtp.sendmail(from_addr, list(to_addrs), message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg) in exc.recipients.items())
        return SubmitOutcome(False, all(500 <= c < 600 for c in codes), detail)
    except smtplib.SMTPResponseException as exc:
        return SubmitOutcome(False, 500 <= exc.smtp_code < 600, f"{exc.smtp_code} {_text(exc.smtp_error)}")
    except (smtplib.SMTPException, OSError, socket.timeout, ssl.SSLError) as exc:
        return SubmitOutcome(False, False, _text(f"{type(exc).__name__}: {exc}"))
    if refused:
        detail = "; ".join(f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg) in refused.items())
        return SubmitOutcome(True, False, f"accepted for some recipients only: {detail}")
    return SubmitOutcome(True, False, "accepted")
