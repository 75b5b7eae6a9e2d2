"""``mxsec tlsrpt report`` and ``send``: counted sessions → reports → every ``rua`` of the report domain.

One pass (:meth:`Sender.run_once`) does three things, each safe to repeat and to interrupt:

1. **build** the report of every finished UTC day and report domain that has counted sessions and no report
   yet (a day missed while the sender was down is built on the next pass; ``--day`` rebuilds one day, with
   the same report-ids);
2. **plan** the deliveries of reports that have none: the domain's *current* ``_smtp._tls`` record is looked
   up (RFC 8460 §3; the full grammar of :mod:`mxsec.tlsrpt.record`) and each usable ``rua`` becomes a
   destination, due at the end of the day plus the domain's random delay; unsupported schemes are recorded as
   ``skipped`` with the reason. A DNS failure leaves the report unplanned for the next pass;
3. **deliver** every destination that is due: ``mailto:`` as the RFC 8460 §5.3 message, DKIM-signed,
   submitted to the relay; ``https:`` as a POST. A failure schedules the next attempt with exponential
   backoff (:mod:`mxsec.tlsrpt.schedule`) until 24 hours after the first attempt; one failing destination
   never holds up another.

With ``dry_run`` the messages and POST bodies are written to a folder and nothing is marked delivered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import unquote

from ..errors import ConfigError
from ..fsutil import make_dirs
from ..net.dns import DnsClient
from ..net.guard import AddressGuard
from ..net.report_post import post_report
from ..net.submit import SmtpRelay, submit
from ..storage.senderdb import DeliveryRow, ReportRow, SenderDB
from ..tlsrpt.build import BuiltReport, build_report, day_range, submitter_of
from ..tlsrpt.dkim_sign import SigningKey, sign_message
from ..tlsrpt.outgoing import compose_message
from ..tlsrpt.record import check_uri, select_record, tlsrpt_owner
from ..tlsrpt.schedule import RetryPolicy, due_time, next_attempt

__all__ = ["DeliveryLine", "DkimSettings", "SendSettings", "Sender", "utc_today"]

log = logging.getLogger("mxsec.tlsrpt.send")

#: Destination recorded when a report has nowhere to go (no record, no usable rua).
NOWHERE = "(none)"


def utc_today(now: float) -> date:
    return datetime.fromtimestamp(now, UTC).date()


@dataclass(frozen=True)
class DkimSettings:
    key: SigningKey
    selector: str
    domain: str


@dataclass(frozen=True)
class SendSettings:
    organization_name: str
    contact_info: str
    from_addr: str | None = None
    relay: SmtpRelay = field(default_factory=SmtpRelay)
    dkim: DkimSettings | None = None
    max_delay: float = 0.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ca_file: str | None = None
    https_timeout: float = 60.0
    https_verify: bool = True
    dry_run_dir: Path | None = None

    @property
    def submitter(self) -> str:
        return submitter_of(self.contact_info)

    @property
    def sender_address(self) -> str:
        if self.from_addr:
            return self.from_addr
        text = self.contact_info.strip()
        return text[7:] if text.lower().startswith("mailto:") else text


@dataclass(frozen=True)
class DeliveryLine:
    """What happened to one destination in this pass (``state`` after the pass)."""

    day: date
    domain: str
    destination: str
    state: str
    detail: str
    attempts: int = 0
    report_id: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"day": self.day.isoformat(), "domain": self.domain, "destination": self.destination,
                "state": self.state, "detail": self.detail, "attempts": self.attempts, "report_id": self.report_id}


def _mailto_address(uri: str) -> str:
    """The address of a ``mailto:`` URI, percent-decoded (RPT-I-4), without ``?`` header fields."""
    return unquote(uri.partition(":")[2].partition("?")[0])


class Sender:
    def __init__(self, db: SenderDB, dns: DnsClient, guard: AddressGuard, settings: SendSettings, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.dns = dns
        self.guard = guard
        self.settings = settings
        self.clock = clock

    # ---------------------------------------------------------------------------------------- building

    def _build_day(self, day: date, domains: Sequence[str] | None = None) -> list[ReportRow]:
        """Build and store the reports of *day* (of *domains*, or every report domain of the day)."""
        counted = self.db.day_policies(day, domains)
        built: list[BuiltReport] = [
            build_report(day, domain, policies, organization_name=self.settings.organization_name,
                         contact_info=self.settings.contact_info)
            for domain, policies in counted.items()
        ]
        self.db.save_reports(((b.day, b.domain, b.report_id, b.filename, b.gzip_bytes, b.successful, b.failed)
                              for b in built), now=self.clock())
        names = {b.domain for b in built}
        return [r for r in self.db.reports(day) if r.domain in names]

    def build_finished(self, day: date | None = None) -> list[ReportRow]:
        """Build the reports of *day* (again), or of every finished day that has none yet."""
        today = utc_today(self.clock())
        if day is not None:
            if day >= today:
                raise ConfigError(f"{day.isoformat()} is not over yet (UTC); its report is built after midnight")
            return self._build_day(day)
        pending: dict[date, list[str]] = {}
        for d, domain in self.db.unreported(today):
            pending.setdefault(d, []).append(domain)
        return [row for d, domains in pending.items() for row in self._build_day(d, domains)]

    # ---------------------------------------------------------------------------------------- planning

    async def plan(self, reports: Sequence[ReportRow]) -> list[DeliveryLine]:
        lines = []
        for report in reports:
            if self.db.deliveries(report=report):
                continue
            lines.extend(await self._plan_one(report))
        return lines

    async def _plan_one(self, report: ReportRow) -> list[DeliveryLine]:
        now = self.clock()
        due = due_time(report.day, report.domain, self.settings.max_delay)
        answer = await self.dns.txt(tlsrpt_owner(report.domain))
        if answer.status == "error":
            detail = f"cannot look up {tlsrpt_owner(report.domain)}: {answer.error} (tried again next pass)"
            log.warning(detail, extra={"domain": report.domain})
            return [DeliveryLine(report.day, report.domain, NOWHERE, "unplanned", detail, 0, report.report_id)]
        selection = select_record(answer.records if answer.ok else ())
        if selection.record is None:
            why = {"no-record": "no _smtp._tls record any more",
                   "several-records": "several TLSRPT records (RFC 8460 §3: none applies)"}
            detail = why.get(selection.problem or "", f"TLSRPT record {selection.problem}")
            self.db.add_delivery(report, NOWHERE, state="skipped", next_attempt=now, error=detail)
            return [DeliveryLine(report.day, report.domain, NOWHERE, "skipped", detail, 0, report.report_id)]
        lines = []
        for uri in selection.record.rua:
            code, message, _ = check_uri(uri)
            if code is None:
                self.db.add_delivery(report, uri, state="pending", next_attempt=due)
                when = datetime.fromtimestamp(due, UTC).strftime("%Y-%m-%d %H:%M UTC")
                lines.append(DeliveryLine(report.day, report.domain, uri, "pending", f"due {when}", 0,
                                          report.report_id))
            else:
                self.db.add_delivery(report, uri, state="skipped", next_attempt=now, error=message)
                log.warning("rua skipped: %s", message, extra={"domain": report.domain})
                lines.append(DeliveryLine(report.day, report.domain, uri, "skipped", message, 0, report.report_id))
        if not selection.record.rua:
            self.db.add_delivery(report, NOWHERE, state="skipped", next_attempt=now, error="no rua")
        return lines

    # -------------------------------------------------------------------------------------- delivering

    def _message(self, report: ReportRow, gz: bytes, address: str) -> tuple[bytes, str]:
        settings = self.settings
        begin, end = day_range(report.day)
        message_id = f"<{secrets.token_hex(12)}@{settings.submitter}>"
        message = compose_message(
            report_gz=gz, filename=report.filename, report_domain=report.domain, submitter=settings.submitter,
            report_id=report.report_id, from_addr=settings.sender_address, to_addrs=[address],
            date=datetime.fromtimestamp(self.clock(), UTC), message_id=message_id,
            organization_name=settings.organization_name, begin=begin, end=end,
        )
        if settings.dkim is not None:
            message = sign_message(message, key=settings.dkim.key, selector=settings.dkim.selector,
                                   domain=settings.dkim.domain, now=int(self.clock()))
        return message, message_id

    async def _attempt(self, delivery: DeliveryRow, *, gz: bytes | None = None) -> tuple[bool, bool, str]:
        """``(delivered, permanent failure, detail)``."""
        report = delivery.report
        if gz is None:
            gz = self.db.report_gz(report.pk)
        scheme = delivery.destination.partition(":")[0].lower()
        dry = self.settings.dry_run_dir
        if scheme == "mailto":
            address = _mailto_address(delivery.destination)
            message, message_id = self._message(report, gz, address)
            if dry is not None:
                path = dry / f"{report.filename.removesuffix('.json.gz')}!{_safe(address)}.eml"
                path.write_bytes(message)
                return True, False, f"written to {path}"
            outcome = await asyncio.to_thread(submit, self.settings.relay, self.settings.sender_address,
                                              [address], message)
            if outcome.ok:
                # the session that carries this message is not to be counted (RFC 8460 §3, RPT-I-13)
                self.db.remember_message(message_id, now=self.clock())
            return outcome.ok, outcome.permanent, f"{outcome.detail} (relay {self.settings.relay.host})"
        if scheme == "https":
            if dry is not None:
                path = dry / report.filename
                path.write_bytes(gz)
                (dry / (report.filename + ".url")).write_text(delivery.destination + "\n")
                return True, False, f"written to {path}"
            post = await post_report(delivery.destination, gz, dns=self.dns, guard=self.guard,
                                     ca_file=self.settings.ca_file, timeout=self.settings.https_timeout,
                                     verify=self.settings.https_verify)
            return post.ok, False, post.detail
        return False, True, f"unsupported scheme {scheme!r}"

    async def deliver_due(self) -> list[DeliveryLine]:
        now = self.clock()
        due = self.db.deliveries(states=("pending",), due_before=now)
        if self.settings.dry_run_dir is not None:
            make_dirs(self.settings.dry_run_dir)
        results = await asyncio.gather(*(self._deliver(d) for d in due))
        return list(results)

    async def _deliver(self, delivery: DeliveryRow) -> DeliveryLine:
        report = delivery.report
        try:
            ok, permanent, detail = await self._attempt(delivery)
        except Exception as exc:  # noqa: BLE001 - a bad report or key must not stop the other destinations
            ok, permanent, detail = False, False, f"{type(exc).__name__}: {exc}"
        now = self.clock()
        if self.settings.dry_run_dir is not None:
            return DeliveryLine(report.day, report.domain, delivery.destination, "dry-run", detail,
                                delivery.attempts, report.report_id)
        attempts = delivery.attempts + 1
        first = delivery.first_attempt_ts if delivery.first_attempt_ts is not None else now
        if ok:
            state, when = "delivered", now
        elif permanent:
            state, when = "failed", now
        else:
            retry = next_attempt(first, attempts, now, self.settings.retry)
            state, when = ("failed", now) if retry is None else ("pending", retry)
        self.db.record_attempt(delivery, state=state, at=now, next_attempt=when, error=None if ok else detail)
        if state == "pending":
            detail = f"{detail}; next attempt {datetime.fromtimestamp(when, UTC):%Y-%m-%d %H:%M:%S} UTC"
        log.log(logging.INFO if ok else logging.WARNING, "report %s to %s: %s", report.report_id,
                delivery.destination, detail, extra={"domain": report.domain, "state": state})
        return DeliveryLine(report.day, report.domain, delivery.destination, state, detail, attempts,
                            report.report_id)

    async def send_unfinished(self, day: date) -> list[DeliveryLine]:
        """Build the reports of *day* so far and try each destination once, now, keeping no state: a trial of
        the whole path before the day is over (the day's real reports are still built after midnight, with
        other report-ids). Reports are not stored and nothing is retried."""
        now = self.clock()
        lines = []
        for domain in self.db.domains(day):
            built = build_report(day, domain, self.db.totals(day, domain),
                                 organization_name=self.settings.organization_name,
                                 contact_info=self.settings.contact_info, interim=int(now))
            row = ReportRow(0, day, built.domain, built.report_id, built.filename, built.successful, built.failed,
                            int(now))
            answer = await self.dns.txt(tlsrpt_owner(built.domain))
            selection = select_record(answer.records if answer.ok else ())
            if selection.record is None:
                why = answer.error if answer.status == "error" else (selection.problem or "no record")
                lines.append(DeliveryLine(day, built.domain, NOWHERE, "skipped", f"no usable TLSRPT record: {why}",
                                          0, built.report_id))
                continue
            for uri in selection.record.rua:
                code, message, _ = check_uri(uri)
                if code is not None:
                    lines.append(DeliveryLine(day, built.domain, uri, "skipped", message, 0, built.report_id))
                    continue
                delivery = DeliveryRow(0, row, uri, "pending", 0, None, None, int(now), None)
                try:
                    ok, _permanent, detail = await self._attempt(delivery, gz=built.gzip_bytes)
                except Exception as exc:  # noqa: BLE001 - one destination must not stop the others
                    ok, detail = False, f"{type(exc).__name__}: {exc}"
                lines.append(DeliveryLine(day, built.domain, uri, "delivered" if ok else "failed", detail, 1,
                                          built.report_id))
        return lines

    async def run_once(self, day: date | None = None) -> list[DeliveryLine]:
        reports = self.build_finished(day)
        if day is None:
            # the ones just built, and those built earlier whose record lookup failed
            reports = self.db.unplanned_reports()
        lines = [line for line in await self.plan(reports) if line.state in ("skipped", "unplanned")]
        lines.extend(await self.deliver_due())
        return lines


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "@.-_+" else "_" for ch in text)[:100]


def day_of(text: str, now: float | None = None) -> date:
    """``YYYY-MM-DD``, ``today`` or ``yesterday`` (UTC)."""
    today = utc_today(time.time() if now is None else now)
    if text == "today":
        return today
    if text == "yesterday":
        return date.fromordinal(today.toordinal() - 1)
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--day: expected YYYY-MM-DD, got {text[:40]!r}") from None


def read_key(path: str) -> SigningKey:
    from ..tlsrpt.dkim_sign import load_signing_key

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--dkim-key {path}: {exc.strerror}") from None
    try:
        return load_signing_key(data, source=path)
    except ValueError as exc:  # the message names the file already
        raise ConfigError(f"--dkim-key: {exc}") from None


def password_from_env() -> str | None:
    return os.environ.get("MXSEC_SMTP_PASSWORD")
