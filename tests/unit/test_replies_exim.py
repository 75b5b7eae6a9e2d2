"""Verdict → ``exim`` dialect reply (docs/exim.md): one line of ``key=value`` tokens for Exim's routers.

The ``mxre`` value goes into an Exim host list (``ignore_target_hosts = <; !$r_sts_mxre ; …``), where an
invalid regex makes Exim panic and a ``;`` would split the item: the tests hold the regex to the safety rule
and to the same matching semantics as :func:`mxsec.sts.match.mx_matches` (``*.`` = exactly one label).
"""

from __future__ import annotations

import re
import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxsec.daemon.replies import (
    EXIM_MATCH_NOTHING,
    Zone,
    exim_mx_regex,
    exim_pattern_regex,
    exim_regex_safe,
    format_reply,
    not_applicable_reply,
    reply_kind,
)
from mxsec.dane.destination import DaneDecision, HostState
from mxsec.names import DomainError, normalize_domain
from mxsec.sts.match import mx_matches
from mxsec.sts.policy import parse_policy
from mxsec.verdict import Verdict

EXIM = Zone(dialect="exim")
ENFORCE = ("version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: mail.example.com\n"
           "max_age: 604800\n")


def verdict(body: str, domain: str = "example.com", policy_id: str | None = "20240101") -> Verdict:
    return Verdict(domain, policy=parse_policy(body), policy_id=policy_id, source="cache")


def tokens(reply: str) -> dict[str, str]:
    """Split the reply the way Exim's ``${extract{key}{…}}`` reads it (quoted values may hold spaces)."""
    out = {}
    for tok in shlex.split(reply):
        key, sep, value = tok.partition("=")
        assert sep, f"token {tok!r} is not key=value"
        out[key] = value
    return out


def host_matches(regex: str, host: str) -> bool:
    """What Exim does with a ``^`` item of a host list: a caseless regex match against the host name."""
    return re.search(regex, host, re.IGNORECASE) is not None


# -- replies ----------------------------------------------------------------------------------------------------


def test_enforce_reply_is_one_line_of_tokens():
    reply = format_reply(verdict(ENFORCE), EXIM)
    assert reply == r"mode=enforce mxre=^(mail\.example\.com|[a-z0-9-]+\.example\.net)$ id=20240101"
    assert "\n" not in reply and tokens(reply)["mode"] == "enforce"


def test_sts_f_2_testing_is_testing_unless_strict():
    body = ENFORCE.replace("enforce", "testing")
    assert format_reply(verdict(body), EXIM) == "mode=testing id=20240101"
    assert tokens(format_reply(verdict(body), Zone(dialect="exim", strict_testing=True)))["mode"] == "enforce"


def test_sts_f_3_none_mode_and_no_policy_are_none():
    assert format_reply(verdict("version: STSv1\nmode: none\nmax_age: 86400\n"), EXIM) == "mode=none"
    assert format_reply(Verdict("example.com"), EXIM) == "mode=none"
    assert not_applicable_reply(EXIM) == "mode=none"
    assert not_applicable_reply(Zone()) == "NOTFOUND "


def test_temp_reason_is_quoted_and_cleaned():
    reply = format_reply(Verdict("example.com", temp_reason='DNSSEC lookup failed: "bogus"\n\\x'), EXIM)
    assert reply == 'mode=temp reason="DNSSEC lookup failed: bogus x"'
    assert tokens(reply) == {"mode": "temp", "reason": "DNSSEC lookup failed: bogus x"}


def test_temp_wins_over_policy():
    v = Verdict("example.com", policy=parse_policy(ENFORCE), policy_id="1", temp_reason="MX lookup failed")
    assert tokens(format_reply(v, EXIM))["mode"] == "temp"


@pytest.mark.parametrize(("level", "expected"), [("dane-only", "mode=dane dane=all"), ("dane", "mode=dane dane=some")])
def test_dane_first(level, expected):
    """RFC 8461 §2: DANE applies → the enforce policy is not sent at all."""
    usable = (HostState("mx.example.com", "usable"),)
    v = Verdict("example.com", policy=parse_policy(ENFORCE), policy_id="1", dane=DaneDecision(level, "x", usable))
    assert format_reply(v, EXIM) == expected


def test_dane_h_41_mandatory_without_usable_tlsa_defers_exim_instead_of_bouncing():
    """DANE required by configuration, no usable TLSA: Postfix's dane-only defers; Exim's hosts_require_dane
    would fail the message for good, so the exim map answers mode=temp."""
    from mxsec.dane.destination import mandatory

    for hosts in ((), (HostState("mx.example.com", "no-tlsa"),)):
        decision = mandatory(DaneDecision("none", "no MX host has DNSSEC-signed TLSA records", hosts))
        v = Verdict("example.com", policy=parse_policy(ENFORCE), policy_id="1", dane=decision)
        assert tokens(format_reply(v, EXIM))["mode"] == "temp"
        assert format_reply(v, Zone()) == "OK dane-only"  # Postfix defers it itself


def test_dane_not_applying_leaves_mta_sts():
    v = Verdict("example.com", policy=parse_policy(ENFORCE), policy_id="1", dane=DaneDecision("none", "x"))
    assert tokens(format_reply(v, EXIM))["mode"] == "enforce"


def test_odd_policy_id_is_left_out():
    assert format_reply(verdict(ENFORCE, policy_id=None), EXIM).endswith("$")
    assert " id=" not in format_reply(verdict(ENFORCE, policy_id="a b"), EXIM)


def test_other_dialects_unchanged():
    assert format_reply(verdict(ENFORCE), Zone()).startswith("OK secure match=")
    assert "mode=" not in format_reply(verdict(ENFORCE), Zone(dialect="tlsrpt"))


def test_reply_kind_of_exim_replies():
    assert reply_kind("mode=enforce mxre=^(a)$ id=1") == "ok"
    assert reply_kind("mode=dane dane=all") == "ok"
    assert reply_kind("mode=testing id=1") == "notfound"
    assert reply_kind("mode=none") == "notfound"
    assert reply_kind('mode=temp reason="x"') == "temp"
    assert reply_kind("NOTFOUND ") == "notfound"


# -- the regex ---------------------------------------------------------------------------------------------------


def test_sts_e_3_wildcard_matches_exactly_one_label():
    regex = exim_mx_regex(["*.example.net"])
    assert regex == r"^([a-z0-9-]+\.example\.net)$"
    assert host_matches(regex, "mx1.example.net")
    assert host_matches(regex, "MX1.Example.NET")  # Exim host lists match regexes caselessly
    assert not host_matches(regex, "a.b.example.net")
    assert not host_matches(regex, "example.net")
    assert not host_matches(regex, ".example.net")
    assert not host_matches(regex, "mx1.example.net.evil.test")
    assert not host_matches(regex, "mx1.example-net")  # the dot is a dot
    assert not host_matches(regex, "mx1xexample.net")


def test_exact_pattern_is_anchored_at_both_ends():
    regex = exim_mx_regex(["mail.example.com"])
    assert host_matches(regex, "mail.example.com")
    assert not host_matches(regex, "xmail.example.com")
    assert not host_matches(regex, "mail.example.com.evil.test")
    assert not host_matches(regex, "a.mail.example.com")


def test_unusable_patterns_are_dropped_and_nothing_left_matches_nothing():
    assert exim_pattern_regex("bad;pattern.example") is None
    assert exim_pattern_regex("a b.example") is None
    assert exim_pattern_regex("*.*.example") is None
    assert exim_pattern_regex("mx.*.example") is None
    assert exim_pattern_regex("mäil.example") is None
    assert exim_pattern_regex("a..example") is None
    assert exim_mx_regex(["x;y", "$(evil)"]) == EXIM_MATCH_NOTHING
    assert not host_matches(EXIM_MATCH_NOTHING, "mail.example.com")
    assert exim_mx_regex(["ok.example", "x;y"]) == r"^(ok\.example)$"


def test_patterns_are_lower_cased_and_deduplicated():
    assert exim_mx_regex(["Mail.Example.COM", "mail.example.com."]) == r"^(mail\.example\.com)$"


@pytest.mark.parametrize("regex", [
    r"^(a\.b)$", EXIM_MATCH_NOTHING, r"^([a-z0-9-]+\.example\.net|mx\.example)$",
])
def test_safe_regexes(regex):
    assert exim_regex_safe(regex)


@pytest.mark.parametrize("regex", [
    r"^(a;b)$",        # splits an Exim list
    r"^(a b)$",        # whitespace
    r"^(a\tb)$",
    "^(a:b)$",         # the default list separator
    r"^(a$b)$",        # a dollar before the end
    r"(a\.b)$",        # not anchored: Exim would not even treat it as a regex
    r"^(a\.b$",        # does not compile
    r"^(a{2})$",       # braces: Exim expansion syntax
    r"^(a\.b)$" + "\n",
    "^(a'b)$", '^(a"b)$', r"^(a\Nb)$",
])
def test_unsafe_regexes_are_refused(regex):
    assert not exim_regex_safe(regex)


def _host_name(name: str) -> bool:
    try:
        return normalize_domain(name) == name
    except DomainError:
        return False


LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8).filter(
    lambda s: not s.startswith("-") and not s.endswith("-"))
#: host names as DNS gives them to Exim (what normalize_domain accepts: no all-numeric last label...)
NAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join).filter(_host_name)


@given(patterns=st.lists(st.one_of(NAME, NAME.map(lambda n: "*." + n)), min_size=1, max_size=4),
       host=st.one_of(NAME, st.lists(LABEL, min_size=1, max_size=6).map(".".join).filter(_host_name)))
def test_regex_agrees_with_mx_matches(patterns, host):
    regex = exim_mx_regex(patterns)
    assert exim_regex_safe(regex)
    assert host_matches(regex, host) == any(mx_matches(p, host) for p in patterns), (regex, host)


@given(patterns=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=5))
def test_any_input_gives_a_safe_regex(patterns):
    regex = exim_mx_regex(patterns)
    assert exim_regex_safe(regex)
    assert ";" not in regex and not any(c.isspace() for c in regex)


@given(patterns=st.lists(st.one_of(NAME, NAME.map(lambda n: "*." + n)), min_size=1, max_size=4),
       host=NAME)
def test_regex_agrees_with_mx_matches_on_derived_hosts(patterns, host):
    """Hosts built from the patterns themselves (so that matches are common), one and two labels deep."""
    for p in patterns:
        base = p.removeprefix("*.")
        for candidate in (base, f"{host}.{base}", f"a.{host}.{base}"):
            assert host_matches(exim_mx_regex(patterns), candidate) == any(mx_matches(q, candidate)
                                                                           for q in patterns)
