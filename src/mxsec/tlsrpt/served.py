"""What the policy daemon told the MTA about a domain, and how a logged session becomes a TLSRPT session.
Sans-I/O.

Postfix before 3.10 and Exim say in their logs what happened in a session, but not under which policy: that
is what the policy daemon answered. When asked to (``mxsec daemon --record-policies``), the daemon keeps a
:class:`ServedPolicy` per domain each time its answer changes, in the TLSRPT sender's database; the log
follower joins every logged attempt with the policy served for its domain at the time
(:func:`session_for_attempt`):

- a DANE policy for the MX host the session went to (TLSA records, DNSSEC-signed) → a ``tlsa`` policy whose
  domain is the TLSA base domain and whose strings are the records (RFC 8460 §4.5, RPT-I-43);
- else an MTA-STS policy in ``enforce`` or ``testing`` mode → an ``sts`` policy with the policy lines and the
  ``mx`` patterns;
- else, when the daemon could not obtain a policy that exists (fetch error, invalid policy, certificate of the
  policy host), an ``sts`` policy without strings carrying that failure (RFC 8461 §6 asks for the report);
- else ``no-policy-found`` for the recipient domain.

The session fails when the MTA logged a TLS failure; a session in clear without a policy that required TLS
is reported as ``starttls-not-supported`` (the receiving domain learns that its MX does not offer TLS).

MTA-STS ``testing`` mode (RFC 8461 §5) asks for failures to be reported although the mail is delivered. The
daemon answers such domains with no policy, so the MTA does opportunistic TLS and logs no failure; what its
log says is still judged against the policy (:func:`testing_result`): an MX host that matches no ``mx``
pattern is a ``validation-failure`` (as the checker reports it), a session in clear ``starttls-not-supported``,
an untrusted chain or no certificate ``certificate-not-trusted``. A chain the MTA found trusted but whose names
it did not check needs a look at the certificate itself: the caller may pass that verdict as *judged* (the log
follower probes the MX once an hour).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mxsec.sts.match import matching_pattern
from mxsec.results import ResultType
from mxsec.tlsrpt.attempt import Attempt, TlsOutcome
from mxsec.tlsrpt.session import Failure, Policy, PolicyCount, PolicyOutcome, PolicyType, Session, Tally, TallyKey

__all__ = ["NEEDS_A_LOOK", "ServedPolicy", "served_from_verdict", "session_for_attempt", "testing_result",
           "with_fetch_failures"]


@dataclass(frozen=True)
class ServedPolicy:
    """The policies the daemon's answer for ``domain`` stood for.

    ``sts`` is the MTA-STS policy (its mode in ``sts_mode``) when one applied; ``sts_failure`` the RFC 8460
    result type of the last problem resolving it when none could be used; ``tlsa`` maps MX host names to their
    ``tlsa`` policy (DANE); ``dane_level`` is the daemon's DANE level (``dane-only``, ``dane``, ``none``...)."""

    domain: str
    sts: Policy | None = None
    sts_mode: str | None = None
    sts_failure: str | None = None
    tlsa: Mapping[str, Policy] = field(default_factory=dict)
    dane_level: str = "none"

    def to_json(self) -> str:
        def policy(p: Policy | None) -> dict[str, Any] | None:
            if p is None:
                return None
            return {"type": p.type.value, "domain": p.domain, "strings": list(p.strings), "mx": list(p.mx_hosts)}

        return json.dumps({
            "domain": self.domain, "sts": policy(self.sts), "sts_mode": self.sts_mode,
            "sts_failure": self.sts_failure, "tlsa": {h: policy(p) for h, p in sorted(self.tlsa.items())},
            "dane_level": self.dane_level,
        }, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> ServedPolicy:
        doc = json.loads(text)

        def policy(d: dict[str, Any] | None) -> Policy | None:
            if d is None:
                return None
            return Policy(PolicyType(d["type"]), d["domain"], tuple(d["strings"]), tuple(d["mx"]))

        return cls(doc["domain"], policy(doc.get("sts")), doc.get("sts_mode"), doc.get("sts_failure"),
                   {h: p for h, d in doc.get("tlsa", {}).items() if (p := policy(d)) is not None},
                   doc.get("dane_level", "none"))

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:32]


def served_from_verdict(verdict: Any) -> ServedPolicy:
    """The :class:`ServedPolicy` of a daemon verdict (:class:`mxsec.verdict.Verdict`)."""
    domain = verdict.domain
    sts = None
    mode = None
    policy = verdict.policy
    if policy is not None and policy.mode in ("enforce", "testing"):
        sts = Policy(PolicyType.STS, domain, tuple(policy.lines), tuple(policy.mx))
        mode = policy.mode
    failure = verdict.failure.value if sts is None and verdict.failure is not None else None
    tlsa: dict[str, Policy] = {}
    level = "none"
    decision = verdict.dane
    if decision is not None:
        level = getattr(decision, "level", "none")
        if getattr(decision, "applies", False):
            for host in getattr(decision, "hosts", ()):
                if host.state in ("usable", "unusable") and host.tlsa:
                    name = host.host.rstrip(".").lower()
                    tlsa[name] = Policy(PolicyType.TLSA, (host.base or name).rstrip(".").lower(), tuple(host.tlsa))
    return ServedPolicy(domain, sts, mode, failure, tlsa, level)


#: What the MTA logs without checking names: a look at the certificate (``judged``) says more.
NEEDS_A_LOOK = (TlsOutcome.TRUSTED, TlsOutcome.UNTRUSTED)


def testing_result(attempt: Attempt, policy: Policy,
                   judged: tuple[str | None, str | None] | None = None) -> tuple[str | None, str | None] | None:
    """For a session delivered under an MTA-STS ``testing`` policy without a logged failure: ``(result type,
    reason)`` of what the policy would have refused, ``(None, None)`` when it would have passed, ``None`` when
    nothing tells (a trusted chain whose names were not checked, and no *judged* verdict of the certificate)."""
    host = attempt.mx_host
    if host is not None and matching_pattern(policy.mx_hosts, host) is None:
        return str(ResultType.VALIDATION_FAILURE), f"MX host {host} matches no mx pattern of the policy"
    tls = attempt.tls
    if tls is TlsOutcome.NONE:
        return str(ResultType.STARTTLS_NOT_SUPPORTED), "delivered without TLS"
    if judged is not None and tls in NEEDS_A_LOOK:
        return judged
    if tls in (TlsOutcome.UNTRUSTED, TlsOutcome.ANONYMOUS):
        return str(ResultType.CERTIFICATE_NOT_TRUSTED), f"{tls.value} TLS connection"
    if tls is TlsOutcome.VERIFIED:
        return None, None
    return None


def session_for_attempt(attempt: Attempt, served: ServedPolicy | None, *, sending_ip: str | None = None,
                        record: str | None = None,
                        judged: tuple[str | None, str | None] | None = None) -> Session:
    """The TLSRPT session of one logged attempt under the policy served for its domain (see the module notes)."""
    domain = attempt.domain
    result: ResultType | str | None = attempt.result_type
    host = attempt.mx_host
    policy: Policy
    if served is not None and host is not None and host in served.tlsa:
        policy = served.tlsa[host]
    elif served is not None and served.sts is not None:
        policy = served.sts
    elif served is not None and served.sts_failure:
        policy = Policy(PolicyType.STS, domain)
    else:
        policy = Policy(PolicyType.NO_POLICY_FOUND, domain)
    failures: list[Failure] = []
    if policy.type is PolicyType.STS and not policy.strings and served is not None and served.sts_failure:
        failures.append(Failure(served.sts_failure, sending_ip, host, None, attempt.mx_ip, None, None))
    reason = attempt.failure_reason_code
    if (result is None and served is not None and policy is served.sts and served.sts_mode == "testing"):
        verdict = testing_result(attempt, policy, judged)
        if verdict is not None and verdict[0] is not None:
            result, reason = verdict
    elif result is None and attempt.tls is TlsOutcome.NONE:
        result = ResultType.STARTTLS_NOT_SUPPORTED
    if result is not None:
        failures.append(Failure(str(result), sending_ip, host, None, attempt.mx_ip, None, reason))
    return Session(domain, (PolicyOutcome(policy, bool(failures), tuple(failures)),), record)


def with_fetch_failures(tally: Tally, lookup: Callable[[str], ServedPolicy | None]) -> Tally:
    """*tally* with the policy daemon's own failures added (RFC 8461 §6): sessions that Postfix 3.10+ counted
    under ``no-policy-found`` for a domain whose published MTA-STS policy the daemon could not obtain (fetch
    error, invalid policy, policy host certificate) are counted as failed under an ``sts`` policy without
    strings, with the daemon's result type as a failure detail. *lookup* gives the served policy of a domain
    (``None``: not recorded). Other keys are kept as they are."""
    result = Tally(max_failure_rows=tally.max_failure_rows)
    result.sessions = tally.sessions
    result.records.update(tally.records)
    for key, count in tally.items():
        served = lookup(key.domain) if key.policy.type is PolicyType.NO_POLICY_FOUND else None
        if served is None or not served.sts_failure or served.sts is not None:
            result.merge_count(key, count)
            continue
        sts = Policy(PolicyType.STS, key.domain)
        detail = Failure(served.sts_failure)
        total = count.successful + count.failed
        moved = PolicyCount(0, total, dict(count.failures))
        moved.failures[detail] = moved.failures.get(detail, 0) + total
        result.merge_count(TallyKey(key.day, key.domain, sts), moved)
    return result
