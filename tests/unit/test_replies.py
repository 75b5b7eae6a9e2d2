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
