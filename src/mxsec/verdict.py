"""The verdict for one destination domain, as facts (pure; no I/O).

A verdict says which policy applies to mail for a domain and where it came from. Front-ends turn it into a
Postfix reply (``daemon/replies.py``), JSON (``mxsec query --json``) or a checker finding. With a DANE
decision attached, DANE > MTA-STS > none (RFC 8461 §2, STS-G-1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mxsec.sts.policy import StsPolicy
from mxsec.results import ResultType

if TYPE_CHECKING:
    from mxsec.dane.destination import DaneDecision

#: where a verdict's policy came from: ``fetched`` (resolved just now), ``cache`` (served from the cache),
#: ``none`` (no policy)
VerdictSource = Literal["fetched", "cache", "none"]


@dataclass(frozen=True, slots=True)
class Verdict:
    domain: str
    #: the MTA-STS policy that applies (any mode), or ``None`` when the domain has none we can use
    policy: StsPolicy | None = None
    #: TXT id the policy was fetched under
    policy_id: str | None = None
    source: VerdictSource = "none"
    #: when the cached policy stops being usable (unix time), if any
    expires_at: float | None = None
    #: RFC 8460 result type of the last problem met while resolving (fetch error, invalid policy...)
    failure: ResultType | None = None
    #: human-readable lines explaining the verdict, most important first
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: a temporary failure that must not be turned into a downgrade (``TEMP`` reply)
    temp_reason: str | None = None
    #: the DANE decision (:class:`mxsec.dane.destination.DaneDecision`), when DANE was looked up
    dane: DaneDecision | None = None

    @property
    def mode(self) -> str | None:
        return self.policy.mode if self.policy is not None else None
