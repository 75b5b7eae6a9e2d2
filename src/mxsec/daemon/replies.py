"""Verdict → socketmap reply text, per dialect (pure).

``postfix`` dialect (Postfix 2.10–3.9, drop-in for postfix-mta-sts-resolver):

* MTA-STS ``enforce`` → ``OK secure match=P1:P2 servername=hostname``; a pattern ``*.example.net`` is written
  ``.example.net`` (Postfix's "any subdomain" form). Patterns keep the policy file's order, duplicates once.
* no policy, ``testing`` (unless the zone has ``strict_testing``), ``none`` → ``NOTFOUND `` (trailing space).
* a verdict with ``temp_reason`` → ``TEMP <reason>``.

``tlsrpt`` dialect (Postfix ≥ 3.10): the ``enforce`` reply carries the TLSRPT policy attributes as well
(``policy_type=sts policy_domain=D mx_host_pattern=P… { policy_string = LINE }…``), which also switch on
Postfix ≥ 3.10.5's own MX-name check against the patterns. The other replies are those of ``postfix``:
answering ``may policy_type=…`` for domains without an enforced policy would override the global
``smtp_tls_security_level`` (``dane`` for instance) and is therefore never done. Reference: postfix.md §1–§3.
"""

from __future__ import annotations

from dataclasses import dataclass

from mxsec.verdict import Verdict

NOTFOUND = "NOTFOUND "


@dataclass(frozen=True, slots=True)
class Zone:
    """Per-map-name settings (the peer calls them zones)."""

    dialect: str = "postfix"  # "postfix" or "tlsrpt"
    strict_testing: bool = False  # answer testing-mode policies like enforce (peer compatibility)
    require_sni: bool = True  # add servername=hostname


def postfix_pattern(pattern: str) -> str:
    """``*.example.net`` → ``.example.net``; other patterns unchanged."""
    return pattern[1:] if pattern.startswith("*.") else pattern


def _unique(items) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _braced(value: str) -> str:
    # Postfix parses "{ name = value }"; a "}" inside would end the group early. Policy lines come from our
    # own parser (no CTLs), so only braces need neutralising.
    return value.replace("{", "(").replace("}", ")")


def enforces(verdict: Verdict, zone: Zone) -> bool:
    mode = verdict.mode
    return mode == "enforce" or (mode == "testing" and zone.strict_testing)


def format_reply(verdict: Verdict, zone: Zone) -> str:
    if verdict.temp_reason is not None:
        return "TEMP " + verdict.temp_reason
    dane = verdict.dane
    if dane is not None and dane.applies:
        # DANE > MTA-STS (RFC 8461 §2): no TLSRPT attributes, Postfix reports the TLSA policy itself.
        return "OK " + dane.level
    policy = verdict.policy
    if policy is None or not enforces(verdict, zone):
        # DANE switched off for this destination by the operator (DANE-H-42): still no cleartext
        return "OK encrypt" if dane is not None and dane.level == "off" else NOTFOUND
    patterns = _unique(p.lower() for p in policy.mx)
    parts = ["OK secure match=" + ":".join(_unique(postfix_pattern(p) for p in patterns))]
    if zone.require_sni:
        parts.append("servername=hostname")
    if zone.dialect == "tlsrpt":
        parts.append("policy_type=sts")
        parts.append("policy_domain=" + verdict.domain)
        parts.extend("mx_host_pattern=" + p for p in patterns)
        parts.extend("{ policy_string = %s }" % _braced(line) for line in policy.lines)
    return " ".join(parts)


def reply_kind(reply: str) -> str:
    """``ok``, ``notfound``, ``temp`` or ``perm``: the first word, lower-cased (metrics label)."""
    return reply.split(" ", 1)[0].lower()
