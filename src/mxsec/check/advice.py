"""Is ``mode: enforce`` safe for a domain now? The rollout advisor behind ``mxsec advise``. Pure, no I/O.

Two kinds of facts come in: the live check of the domain (:class:`~mxsec.check.facts.DomainFacts` and the
findings :func:`mxsec.check.rules.judge` made of them), and what the received TLSRPT reports said over a window
of days (:class:`ReportFigures`, filled from the report database by :mod:`mxsec.check.advice_gather`). One
:class:`Advice` value comes out: the verdict, every blocker with its figures, the next policy file and TXT
record, and a ``max_age`` ramp. docs/publishing.md describes the rules and the JSON form.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mxsec.check.facts import DomainFacts, mx_hosts
from mxsec.check.findings import Finding
from mxsec.sts.match import matching_pattern
from mxsec.sts.policy import MAX_AGE_LIMIT, format_policy
from mxsec.sts.record import format_record

__all__ = ["Advice", "Blocker", "MxFailure", "RampStep", "ReportFigures", "advise", "DAY", "WEEK"]

DAY = 86400
WEEK = 7 * DAY
#: the ramp: (max_age, days after the first step when to publish it)
RAMP = ((DAY, 0), (WEEK, 7), (MAX_AGE_LIMIT, 21))
#: findings that break delivery once the mode is enforce, whatever severity the check gave them in testing
ENFORCE_BREAKERS = frozenset({
    "sts-mx-not-covered", "smtp-certificate-expired", "smtp-certificate-host-mismatch",
    "smtp-certificate-untrusted", "smtp-starttls-missing", "smtp-tls-failed", "smtp-unreachable",
    "dane-sts-webpki",
})
#: RFC 8460 result types of MTA-STS policy problems: any session with one blocks
STS_RESULT_TYPES = frozenset({"sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"})
NO_HOST = "(no MX named)"


@dataclass(frozen=True)
class SessionCounts:
    successful: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.successful + self.failed

    @property
    def rate(self) -> float | None:
        return self.successful / self.total if self.total else None


@dataclass(frozen=True)
class MxFailure:
    """Failed sessions of one result type at one MX host, from one reporter, over the window."""

    host: str
    result_type: str
    organization: str
    sessions: int
    first: _dt.date
    last: _dt.date


@dataclass(frozen=True)
class DayPolicy:
    """A policy one or more reporters applied on a day (``policy_string`` as in the report)."""

    day: _dt.date
    policy_type: str
    policy_string: tuple[str, ...]
    counts: SessionCounts


@dataclass(frozen=True)
class ReportFigures:
    """What the reports for the domain's ``sts`` policies said between ``since`` and ``until`` (UTC days,
    inclusive)."""

    since: _dt.date
    until: _dt.date
    by_organization: Mapping[str, SessionCounts] = field(default_factory=dict)
    failures: Sequence[MxFailure] = ()
    days: Sequence[DayPolicy] = ()
    reports: int = 0

    @property
    def counts(self) -> SessionCounts:
        return SessionCounts(sum(c.successful for c in self.by_organization.values()),
                             sum(c.failed for c in self.by_organization.values()))


@dataclass(frozen=True)
class Blocker:
    code: str
    subject: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "subject": self.subject, "message": self.message}


@dataclass(frozen=True)
class RampStep:
    max_age: int
    on: _dt.date
    id: str
    policy: str
    when: str

    def to_json(self) -> dict[str, Any]:
        return {"max_age": self.max_age, "on": self.on.isoformat(), "id": self.id, "policy": self.policy,
                "when": self.when}


@dataclass(frozen=True)
class Advice:
    domain: str
    verdict: str  # "enforce" (safe now), "wait" (blockers), "already-enforce"
    blockers: tuple[Blocker, ...]
    notes: tuple[str, ...]
    live: dict[str, Any]
    figures: dict[str, Any]
    ramp: tuple[RampStep, ...]
    txt: str | None
    min_success: float
    min_days: int

    @property
    def safe(self) -> bool:
        return not self.blockers

    def to_json(self) -> dict[str, Any]:
        first = self.ramp[0] if self.ramp else None
        return {
            "domain": self.domain, "verdict": self.verdict, "safe": self.safe,
            "thresholds": {"min_success": self.min_success, "min_days": self.min_days},
            "live": self.live, "reports": self.figures,
            "blockers": [b.to_json() for b in self.blockers], "notes": list(self.notes),
            "next": None if first is None else {"policy": first.policy, "txt": self.txt, "id": first.id,
                                                "max_age": first.max_age},
            "ramp": [step.to_json() for step in self.ramp],
        }


def pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.2f} %"


def _threshold(value: float) -> str:
    return f"{value * 100:g} %"


def advise(facts: DomainFacts, findings: Iterable[Finding], reports: ReportFigures, *, now: _dt.datetime,
           id_for: Callable[[_dt.datetime], str], min_success: float = 0.99, min_days: int = 7) -> Advice:
    """Judge whether ``facts.domain`` can move to ``mode: enforce`` now. ``id_for`` makes a policy id from a
    time (the generator's scheme); ``now`` dates the ramp."""
    findings = list(findings)
    blockers: list[Blocker] = []
    notes: list[str] = []
    policy = facts.policy
    record = facts.sts_record.record if facts.sts_record is not None else None
    hosts = mx_hosts(facts, 10)

    # --- the live check --------------------------------------------------------------------------------------
    if policy is None:
        blockers.append(Blocker("no-policy", facts.domain, f"{facts.domain}: no MTA-STS policy is published "
                                                           f"and served; publish one in mode testing first"))
    elif policy.mode == "none":
        blockers.append(Blocker("mode-none", facts.domain, f"{facts.domain}: the policy is in mode none; publish "
                                                           f"mode testing and collect reports first"))
    seen: set[tuple[str, str]] = set()
    for f in findings:
        if f.severity != "error" and f.code not in ENFORCE_BREAKERS:
            continue
        if (f.code, f.message) in seen:
            continue
        seen.add((f.code, f.message))
        blockers.append(Blocker(f"check:{f.code}", f.subject or facts.domain, f.message))
    if not facts.smtp_checked:
        notes.append("the MX hosts' certificates were not probed (--no-smtp): the verdict on them rests on the "
                     "reports alone")
    blocked_subjects = {b.subject for b in blockers}
    host_rows = []
    for host in hosts:
        covered = matching_pattern(policy.mx, host) if policy is not None else None
        probes = [p for (h, _), p in facts.probes.items() if h == host]
        if not facts.smtp_checked:
            cert = "not-checked"
        elif not probes:
            cert = "not-probed"
        elif all(p.ok and p.pkix is not None and p.pkix.ok for p in probes):
            cert = "valid"
        else:
            cert = "invalid"
        if facts.smtp_checked and not probes:
            blockers.append(Blocker("mx-not-probed", host, f"{host}: no address of this MX host was probed, so "
                                                           f"its certificate is unconfirmed"))
        for (h, address), p in facts.probes.items():
            subject = f"{h} [{address}]"
            if h == host and p.ok and (p.pkix is None or not p.pkix.ok) and subject not in blocked_subjects:
                reason = p.pkix.reason if p.pkix is not None else "not checked against the web PKI"
                blockers.append(Blocker("mx-webpki-invalid", subject, f"{subject}: MTA-STS senders would refuse "
                                                                      f"this certificate: {reason}"))
        host_rows.append({"host": host, "covered_by": covered, "certificate": cert})

    # --- the reports -----------------------------------------------------------------------------------------
    total = reports.counts
    window_days = (reports.until - reports.since).days + 1
    observed = sorted({d.day for d in reports.days})
    testing = sorted({d.day for d in reports.days if _mode_of(d.policy_string) == "testing"})
    enforce_days = sorted({d.day for d in reports.days if _mode_of(d.policy_string) == "enforce"})
    if total.total == 0:
        blockers.append(Blocker("no-reports", facts.domain,
                                f"{facts.domain}: no TLSRPT report for its MTA-STS policy from {reports.since} to "
                                f"{reports.until}; publish a TLSRPT record and ingest the reports"))
    elif len(observed) < min_days:
        blockers.append(Blocker("too-few-days", facts.domain,
                                f"{facts.domain}: reports cover {len(observed)} day(s) of the last {window_days}; "
                                f"wait for at least {min_days}"))
    for org, counts in sorted(reports.by_organization.items()):
        if counts.rate is not None and counts.rate < min_success:
            blockers.append(Blocker("reporter-below-threshold", org,
                                    f"{org}: {pct(counts.rate)} of {counts.total:,} sessions succeeded "
                                    f"({counts.failed:,} failed), below {_threshold(min_success)}"))
    per_host: dict[str, dict[str, int]] = {}
    for fail in reports.failures:
        per_host.setdefault(fail.host or NO_HOST, {}).setdefault(fail.result_type, 0)
        per_host[fail.host or NO_HOST][fail.result_type] += fail.sessions
    mx_rows: dict[str, dict[str, Any]] = {}
    for host in dict.fromkeys([*hosts, *per_host]):
        failed = sum(per_host.get(host, {}).values())
        rate = (total.total - failed) / total.total if total.total else None
        mx_rows[host] = {"failed_sessions": failed, "success_rate": rate,
                         "by_result_type": dict(per_host.get(host, {}))}
    low_hosts = {h for h, row in mx_rows.items() if row["success_rate"] is not None
                 and row["success_rate"] < min_success}
    for host in sorted(low_hosts):
        row = mx_rows[host]
        blockers.append(Blocker("mx-below-threshold", host,
                                f"{host}: {pct(row['success_rate'])} of the domain's {total.total:,} sessions did "
                                f"not fail there ({row['failed_sessions']:,} failed), below "
                                f"{_threshold(min_success)}"))
    for fail in reports.failures:
        host = fail.host or NO_HOST
        if host in low_hosts or fail.result_type in STS_RESULT_TYPES:
            when = f"since {fail.first}" if fail.last >= reports.until else f"from {fail.first} to {fail.last}"
            blockers.append(Blocker(f"failures:{fail.result_type}", host,
                                    f"{host}: {fail.result_type} in {fail.sessions:,} sessions from "
                                    f"{fail.organization} {when}"))
    for host in sorted(low_hosts):
        last_seen = max((f.last for f in reports.failures if (f.host or NO_HOST) == host), default=None)
        if last_seen is not None and last_seen < reports.until:
            clear = last_seen + _dt.timedelta(days=window_days + 1)
            notes.append(f"{host}: no failure reported after {last_seen}; a {window_days}-day window is clear of "
                         f"them from {clear} on, if none come back")
    if policy is not None and testing == [] and observed:
        notes.append("no report in the window names a policy in mode testing: reporters applied "
                     + ", ".join(sorted({_mode_of(d.policy_string) or "unknown" for d in reports.days})))

    # --- the verdict and the next steps -----------------------------------------------------------------------
    already = policy is not None and policy.mode == "enforce"
    verdict = "wait" if blockers else ("already-enforce" if already else "enforce")
    ramp: list[RampStep] = []
    txt = None
    if policy is not None and policy.mx:
        for max_age, after in RAMP:
            moment = now + _dt.timedelta(days=after)
            when = ("now" if after == 0 else
                    f"after {after} days in enforce with clean reports (max_age {_prev(max_age)} s meanwhile)")
            ramp.append(RampStep(max_age, moment.date(), id_for(moment), format_policy("enforce", policy.mx, max_age),
                                 when))
        txt = format_record(ramp[0].id)
        if record is not None and record.id == ramp[0].id:
            notes.append(f"the new id equals the published one ({record.id}); make another before publishing")
    live = {
        "mode": None if policy is None else policy.mode,
        "id": None if record is None else record.id,
        "max_age": None if policy is None else policy.max_age,
        "mx_patterns": [] if policy is None else list(policy.mx),
        "mx_hosts": host_rows,
        "smtp_checked": facts.smtp_checked,
    }
    figures = {
        "since": reports.since.isoformat(), "until": reports.until.isoformat(), "reports": reports.reports,
        "successful_sessions": total.successful, "failed_sessions": total.failed, "success_rate": total.rate,
        "days_observed": len(observed), "days_testing": len(testing), "days_enforce": len(enforce_days),
        "first_day_testing": testing[0].isoformat() if testing else None,
        "by_reporter": {org: {"successful_sessions": c.successful, "failed_sessions": c.failed,
                              "success_rate": c.rate} for org, c in sorted(reports.by_organization.items())},
        "by_mx": mx_rows,
    }
    return Advice(facts.domain, verdict, tuple(blockers), tuple(notes), live, figures, tuple(ramp), txt,
                  min_success, min_days)


def _prev(max_age: int) -> int:
    previous = [m for m, _ in RAMP if m < max_age]
    return previous[-1] if previous else max_age


def _mode_of(policy_string: Sequence[str]) -> str | None:
    """The ``mode`` field of a report's policy-string (``None`` when absent)."""
    for line in policy_string:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "mode":
            return value.strip().lower()
    return None
