"""Verdict → socketmap reply text, per dialect (pure).

``postfix`` dialect (Postfix 2.10–3.9, drop-in for postfix-mta-sts-resolver):

* MTA-STS ``enforce`` → ``OK secure match=H1:H2 servername=hostname`` where H1, H2… are the destination's MX
  host names (from the MX RRset the daemon looked up for DANE) that match a policy pattern (RFC 8461 §4.1:
  ``*.example.net`` is exactly one label), in MX preference order. Older Postfix checks only that the
  certificate matches one ``match=`` name, so listing the policy's patterns would let an MX whose *name* is
  not allowed pass with a certificate for another allowed host; exact names close that (``strict_mx_names``,
  the default). When no MX host matches, the list is :data:`NO_MX_MATCHES`, a name no certificate can hold,
  so every MX fails verification and the message is deferred. When the MX hosts are not known (DANE lookups
  off, or ``strict_mx_names = false``) the patterns are listed as before: ``*.example.net`` is written
  ``.example.net`` (Postfix's "any subdomain" form), in the policy file's order, duplicates once.
* no policy, ``testing`` (unless the zone has ``strict_testing``), ``none`` → ``NOTFOUND `` (trailing space).
* a verdict with ``temp_reason`` → ``TEMP <reason>``.

``tlsrpt`` dialect (Postfix ≥ 3.10): the ``enforce`` reply carries the TLSRPT policy attributes as well
(``policy_type=sts policy_domain=D mx_host_pattern=P… { policy_string = LINE }…``), which also switch on
Postfix ≥ 3.10.5's own MX-name check against the patterns. The other replies are those of ``postfix``:
answering ``may policy_type=…`` for domains without an enforced policy would override the global
``smtp_tls_security_level`` (``dane`` for instance) and is therefore never done. Reference:
docs/daemon.md ("Replies") and Postfix's TLSRPT_README (the policy-map attributes for MTA-STS).

``exim`` dialect (Exim's ``${readsocket}``, docs/exim.md): one line of ``key=value`` tokens, read by the
routers of ``contrib/exim/`` with ``${extract}``:

* DANE applies → ``mode=dane dane=all`` (every MX host has usable TLSA: the router requires DANE) or
  ``mode=dane dane=some`` (Exim's own per-host DANE, ``hosts_try_dane``); DANE required by configuration
  where no MX host has usable TLSA → ``mode=temp`` (Exim would bounce, Postfix defers);
* MTA-STS ``enforce`` → ``mode=enforce mxre=REGEX id=ID``, REGEX an anchored regular expression for the MX
  host names the policy allows (``*.example.net`` = exactly one label), written only with characters that
  are safe inside an Exim host list (see :func:`exim_mx_regex`); Exim matches host-list regexes caselessly;
* ``testing`` → ``mode=testing id=ID``; ``none``, no policy, address literals → ``mode=none``;
* a verdict with ``temp_reason`` → ``mode=temp reason="…"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mxsec.names import DomainError, normalize_domain
from mxsec.sts.match import mx_matches
from mxsec.verdict import Verdict

NOTFOUND = "NOTFOUND "
#: the ``match=`` list when no MX host name matches the policy: a name under ``.invalid`` (RFC 2606), which no
#: certification authority can issue a certificate for, so every MX host fails verification (deferred)
NO_MX_MATCHES = "no-mx-host-matches-the-policy.invalid"
#: the ``exim`` dialect's answer where no policy applies
EXIM_NONE = "mode=none"


@dataclass(frozen=True, slots=True)
class Zone:
    """Per-map-name settings (the peer calls them zones)."""

    dialect: str = "postfix"  # "postfix", "tlsrpt" or "exim"
    strict_testing: bool = False  # answer testing-mode policies like enforce (peer compatibility)
    require_sni: bool = True  # add servername=hostname
    #: ``match=`` lists the MX host names that match the policy rather than its patterns (Postfix ≤ 3.10.4)
    strict_mx_names: bool = True


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
    if zone.dialect == "exim":
        return format_exim(verdict, zone)
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
    parts = ["OK secure match=" + ":".join(match_names(verdict, patterns, zone))]
    if zone.require_sni:
        parts.append("servername=hostname")
    if zone.dialect == "tlsrpt":
        parts.append("policy_type=sts")
        parts.append("policy_domain=" + verdict.domain)
        parts.extend("mx_host_pattern=" + p for p in patterns)
        parts.extend("{ policy_string = %s }" % _braced(line) for line in policy.lines)
    return " ".join(parts)


def allowed_mx_hosts(mx_hosts, patterns) -> list[str]:
    """The MX host names (in the order given) that match at least one policy pattern (RFC 8461 §4.1)."""
    return [host for host in mx_hosts if any(mx_matches(p, host) for p in patterns)]


def match_names(verdict: Verdict, patterns: list[str], zone: Zone) -> list[str]:
    """The names of an ``OK secure match=`` reply: exact allowed MX host names when they are known and the zone
    is strict, else the policy's patterns in Postfix's notation."""
    mx_hosts = getattr(verdict.dane, "mx_hosts", None)
    if zone.strict_mx_names and mx_hosts is not None:
        return allowed_mx_hosts(mx_hosts, patterns) or [NO_MX_MATCHES]
    return _unique(postfix_pattern(p) for p in patterns)


def not_applicable_reply(zone: Zone) -> str:
    """The answer for keys MTA-STS never applies to (address literals, parent-domain lookups)."""
    return EXIM_NONE if zone.dialect == "exim" else NOTFOUND


# -- exim dialect ----------------------------------------------------------------------------------------------

#: one LDH label (A-label) of a pattern, already lower-cased
_EXIM_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
#: what ``*`` becomes: exactly one label, never a dot
_EXIM_ONE_LABEL = "[a-z0-9-]+"
#: a regex that never matches (a policy without one usable pattern: every MX is refused)
EXIM_MATCH_NOTHING = "^(?!)"
#: every character an ``mxre`` value may contain: no list separators (``;``, ``:``), no whitespace, no
#: ``$`` other than the final anchor, nothing Exim's string expansion treats specially
EXIM_SAFE_REGEX = re.compile(r"\^[a-z0-9\\.()|\[\]+?!-]*\$?")


def exim_pattern_regex(pattern: str) -> str | None:
    """One policy ``mx`` pattern as a regex fragment (no anchors), or ``None`` when it cannot match a host
    name: ``mail.example.com`` → ``mail\\.example\\.com``, ``*.example.net`` → ``[a-z0-9-]+\\.example\\.net``."""
    if not isinstance(pattern, str) or not pattern.isascii():
        return None
    pattern = pattern.lower()
    wildcard = pattern.startswith("*.")
    try:  # the same names mx_matches accepts (no IP addresses, no all-numeric last label...)
        base = normalize_domain(pattern[2:] if wildcard else pattern)
    except DomainError:
        return None
    labels = base.split(".")
    if not all(_EXIM_LABEL.fullmatch(label) for label in labels):
        return None
    body = "\\.".join(labels)
    return _EXIM_ONE_LABEL + "\\." + body if wildcard else body


def exim_mx_regex(patterns) -> str:
    """The anchored regex for an MTA-STS policy's ``mx`` patterns, for an Exim host list (which matches it
    caselessly): ``^(mail\\.example\\.com|[a-z0-9-]+\\.example\\.net)$``. Unusable patterns are left out; with none left
    the regex matches nothing. The result always passes :func:`exim_regex_safe` (checked here: an invalid
    regex in a host list makes Exim panic and leave the message queued)."""
    parts = _unique(p for p in (exim_pattern_regex(x) for x in patterns) if p is not None)
    regex = "^(" + "|".join(parts) + ")$" if parts else EXIM_MATCH_NOTHING
    if not exim_regex_safe(regex):  # cannot happen with the fragments above; never send an unchecked regex
        return EXIM_MATCH_NOTHING
    return regex


def exim_regex_safe(regex: str) -> bool:
    """True when ``regex`` compiles, is anchored at the start (Exim host lists treat only items starting with
    ``^`` as regexes) and uses only characters that survive an Exim host list and string expansion."""
    if not EXIM_SAFE_REGEX.fullmatch(regex) or "$" in regex[:-1]:
        return False
    if "\\" in regex.replace("\\.", ""):  # the only escape used is "\." (no \N, \t, \d... for Exim to read)
        return False
    try:
        re.compile(regex)
    except re.error:
        return False
    return True


def _exim_quote(text: str) -> str:
    """A value for ``${extract}``: double-quoted, without quotes, backslashes or control characters."""
    clean = "".join(c if c.isprintable() and c not in '"\\' else " " for c in text)
    return '"' + " ".join(clean.split())[:200] + '"'


def format_exim(verdict: Verdict, zone: Zone) -> str:
    if verdict.temp_reason is not None:
        return "mode=temp reason=" + _exim_quote(verdict.temp_reason)
    dane = verdict.dane
    if dane is not None and dane.applies:
        if dane.level == "dane-only" and not any(h.state == "usable" for h in dane.hosts):
            # DANE required by configuration (dane.mandatory) where no MX host has usable TLSA records: Exim's
            # hosts_require_dane would fail the message for good ("tlsa lookup FAIL", a bounce); Postfix's
            # dane-only defers it. Defer here too: the records may yet be published.
            return "mode=temp reason=" + _exim_quote("DANE required but no MX host has usable TLSA records")
        return "mode=dane dane=" + ("all" if dane.level == "dane-only" else "some")
    policy = verdict.policy
    if policy is None or verdict.mode == "none":
        return EXIM_NONE
    policy_id = verdict.policy_id if verdict.policy_id and verdict.policy_id.isalnum() else None
    tail = f" id={policy_id}" if policy_id else ""
    if enforces(verdict, zone):
        return "mode=enforce mxre=" + exim_mx_regex(policy.mx) + tail
    return "mode=testing" + tail


def reply_kind(reply: str) -> str:
    """``ok``, ``notfound``, ``temp`` or ``perm``: the first word, lower-cased (metrics label); ``exim``
    dialect replies are counted by their mode."""
    if reply.startswith("mode="):
        mode = reply[5:].split(" ", 1)[0]
        return {"enforce": "ok", "dane": "ok", "temp": "temp"}.get(mode, "notfound")
    return reply.split(" ", 1)[0].lower()
