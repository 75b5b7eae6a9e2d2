"""Verdict → Postfix reply text (the `postfix` and `tlsrpt` dialects of docs/daemon.md)."""

from mxsec.daemon.replies import NOTFOUND, Zone, format_reply, postfix_pattern, reply_kind
from mxsec.sts.policy import parse_policy
from mxsec.verdict import Verdict

ENFORCE = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: mail.example.com\nmax_age: 604800\n"


def verdict(body, domain="example.com"):
    return Verdict(domain, policy=parse_policy(body), policy_id="1", source="cache")


def test_enforce_postfix_dialect():
    assert format_reply(verdict(ENFORCE), Zone()) == "OK secure match=mail.example.com:.example.net servername=hostname"


def test_wildcard_written_as_leading_dot():
    assert postfix_pattern("*.example.net") == ".example.net"
    assert postfix_pattern("mail.example.net") == "mail.example.net"


def test_require_sni_off():
    assert format_reply(verdict(ENFORCE), Zone(require_sni=False)) == "OK secure match=mail.example.com:.example.net"


def test_sts_f_2_testing_is_notfound_unless_strict():
    body = ENFORCE.replace("enforce", "testing")
    assert format_reply(verdict(body), Zone()) == NOTFOUND
    assert format_reply(verdict(body), Zone(strict_testing=True)).startswith("OK secure match=")


def test_sts_f_3_none_mode_is_notfound():
    assert format_reply(verdict("version: STSv1\nmode: none\nmax_age: 86400\n"), Zone()) == "NOTFOUND "


def test_no_policy_is_notfound_with_trailing_space():
    assert format_reply(Verdict("example.com"), Zone()) == "NOTFOUND "


def test_temp_reason():
    assert format_reply(Verdict("example.com", temp_reason="DNSSEC lookup failed"), Zone()) == "TEMP DNSSEC lookup failed"


def test_tlsrpt_dialect_carries_policy_attributes():
    reply = format_reply(verdict(ENFORCE), Zone(dialect="tlsrpt"))
    assert reply.startswith("OK secure match=mail.example.com:.example.net servername=hostname policy_type=sts ")
    assert "policy_domain=example.com" in reply
    assert "mx_host_pattern=mail.example.com mx_host_pattern=*.example.net" in reply
    assert "{ policy_string = version: STSv1 } { policy_string = mode: enforce }" in reply
    assert "{ policy_string = mx: *.example.net }" in reply
    assert reply.endswith("{ policy_string = max_age: 604800 }")


def test_postfix_dialect_never_carries_tlsrpt_attributes():
    reply = format_reply(verdict(ENFORCE), Zone(dialect="postfix"))
    assert "policy_type" not in reply and "policy_string" not in reply


def test_reply_kind():
    assert [reply_kind(r) for r in ("OK secure", "NOTFOUND ", "TEMP x", "PERM y")] == ["ok", "notfound", "temp", "perm"]


def test_sts_e_8_sni_is_the_mx_hostname():
    # servername=hostname makes Postfix send the MX host name as SNI (RFC 8461 §7.1)
    assert format_reply(verdict(ENFORCE), Zone()).endswith(" servername=hostname")


# -- strict MX names (Postfix <= 3.10.4 checks only the certificate against match=; RFC 8461 §4.1) ---------


def dane_none(mx_hosts):
    from mxsec.dane.destination import DaneDecision

    return DaneDecision("none", "MX records are not DNSSEC-signed", mx_hosts=mx_hosts)


def strict_verdict(mx_hosts, body=ENFORCE):
    from dataclasses import replace

    return replace(verdict(body), dane=dane_none(mx_hosts))


def test_sts_e_1_ec_22_strict_match_lists_allowed_mx_names_only():
    v = strict_verdict(("mail.example.com", "rogue.attacker.test", "mx2.example.net"))
    assert format_reply(v, Zone()) == "OK secure match=mail.example.com:mx2.example.net servername=hostname"


def test_sts_e_3_strict_wildcard_is_exactly_one_label():
    v = strict_verdict(("a.b.example.net", "example.net", "mx.example.net"))
    assert format_reply(v, Zone()) == "OK secure match=mx.example.net servername=hostname"


def test_sts_e_1_strict_no_allowed_mx_defers_every_host():
    from mxsec.daemon.replies import NO_MX_MATCHES

    v = strict_verdict(("rogue.attacker.test",))
    reply = format_reply(v, Zone())
    assert reply == f"OK secure match={NO_MX_MATCHES} servername=hostname"
    assert NO_MX_MATCHES.endswith(".invalid")


def test_sts_e_4_strict_names_compared_caselessly():
    v = strict_verdict(("mail.example.com",), ENFORCE.replace("mx: mail.example.com", "mx: MAIL.Example.COM"))
    assert format_reply(v, Zone()).startswith("OK secure match=mail.example.com ")


def test_strict_off_or_mx_unknown_lists_patterns():
    v = strict_verdict(("rogue.attacker.test",))
    legacy = "OK secure match=mail.example.com:.example.net servername=hostname"
    assert format_reply(v, Zone(strict_mx_names=False)) == legacy
    assert format_reply(strict_verdict(None), Zone()) == legacy  # MX lookup gave no answer


def test_strict_tlsrpt_dialect_keeps_patterns_as_attributes():
    v = strict_verdict(("mx2.example.net",))
    reply = format_reply(v, Zone(dialect="tlsrpt"))
    assert reply.startswith("OK secure match=mx2.example.net servername=hostname policy_type=sts ")
    assert "mx_host_pattern=mail.example.com mx_host_pattern=*.example.net" in reply


def test_strict_names_never_apply_when_dane_applies():
    from dataclasses import replace

    from mxsec.dane.destination import DaneDecision

    v = replace(verdict(ENFORCE), dane=DaneDecision("dane-only", "all usable", mx_hosts=("rogue.attacker.test",)))
    assert format_reply(v, Zone()) == "OK dane-only"
