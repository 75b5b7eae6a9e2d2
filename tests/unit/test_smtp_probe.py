"""The pure parts of the STARTTLS probe (mxsec.net.smtp): reply parsing and limits, EHLO keywords, chain
extraction from a TLS session object, and the PKIX check. No sockets here (see tests/integration/test_dane_tools.py).
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from mxsec.testing.pki import TestCA, pem_to_der, self_signed, write_pem
from mxsec.net.smtp import (
    MAX_LINE,
    MAX_LINES,
    Reply,
    ReplyError,
    ReplyParser,
    SmtpProbe,
    check_pkix,
    default_ehlo_name,
    ehlo_keywords,
    load_trust_store,
    parse_reply,
    peer_chain,
)

HOST = "mx.example.test"


# ------------------------------------------------------------------------------------------- replies


def test_single_line_reply():
    assert parse_reply([b"220 mx.example.test ESMTP ready\r\n"]) == Reply(220, ("mx.example.test ESMTP ready",))


def test_multi_line_reply_ends_at_the_line_without_dash():
    parser = ReplyParser()
    assert parser.feed(b"250-mx.example.test\r\n") is None
    assert parser.feed(b"250-SIZE 1000\r\n") is None
    reply = parser.feed(b"250 STARTTLS\r\n")
    assert reply == Reply(250, ("mx.example.test", "SIZE 1000", "STARTTLS"))
    # the parser is ready for the next reply
    assert parser.feed(b"221 bye\n") == Reply(221, ("bye",))


def test_bare_code_line_ends_the_reply():
    assert parse_reply([b"250-first\r\n", b"250\r\n"]) == Reply(250, ("first", ""))
    assert str(Reply(250, ("first", ""))) == "250 first"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([b"hello\r\n"], "not an SMTP reply line"),
        ([b"25\r\n"], "not an SMTP reply line"),
        ([b"250x\r\n"], "not an SMTP reply line"),
        ([b"650 no\r\n"], "not an SMTP reply line"),
        ([b"250-a\r\n", b"220 b\r\n"], "reply code changed"),
        ([b"250-a\r\n"], "not terminated"),
        ([b"250 a\r\n", b"250 b\r\n"], "after the end"),
    ],
)
def test_malformed_replies(lines, message):
    with pytest.raises(ReplyError, match=message):
        parse_reply(lines)


def test_line_length_limit():
    parse_reply([b"250 " + b"x" * (MAX_LINE - 6) + b"\r\n"])
    with pytest.raises(ReplyError, match="longer than"):
        parse_reply([b"250 " + b"x" * MAX_LINE + b"\r\n"])


def test_line_count_limit():
    ok = [b"250-x\r\n"] * (MAX_LINES - 1) + [b"250 end\r\n"]
    assert len(parse_reply(ok).lines) == MAX_LINES
    too_many = [b"250-x\r\n"] * MAX_LINES + [b"250 end\r\n"]
    with pytest.raises(ReplyError, match="lines"):
        parse_reply(too_many)


def test_non_utf8_text_does_not_crash():
    assert parse_reply([b"220 caf\xe9\r\n"]).code == 220


def test_ehlo_keywords_skip_the_greeting_line_and_upper_case():
    reply = parse_reply([b"250-mx.example.test Hello STARTTLS\r\n", b"250-size 100\r\n", b"250-8BITMIME\r\n",
                         b"250 starttls\r\n"])
    assert ehlo_keywords(reply) == ("SIZE", "8BITMIME", "STARTTLS")
    assert ehlo_keywords(parse_reply([b"250 mx.example.test STARTTLS\r\n"])) == ()  # greeting text is no keyword


def test_default_ehlo_name_is_a_domain(monkeypatch):
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "Host.Example.NET")
    assert default_ehlo_name() == "host.example.net"
    monkeypatch.setattr(socket, "gethostname", lambda: "localhost")
    assert default_ehlo_name() == "mxsec.invalid"
    monkeypatch.setattr(socket, "gethostname", lambda: "bad name.example")
    assert default_ehlo_name() == "mxsec.invalid"


def test_probe_result_ok_and_as_dict():
    probe = SmtpProbe("192.0.2.1", 25, HOST, "client.example")
    assert probe.ok and probe.leaf is None
    probe.fail("starttls", "STARTTLS not offered")
    data = probe.as_dict()
    assert data["ok"] is False and data["stage"] == "starttls" and data["chain_length"] == 0


# ------------------------------------------------------------------------------------------- the chain


class _Cert:
    """Stands in for ``_ssl.Certificate``: only ``public_bytes(encoding)``."""

    def __init__(self, der: bytes) -> None:
        self.der = der
        self.encodings: list[int] = []

    def public_bytes(self, encoding: int) -> bytes:
        import _ssl

        self.encodings.append(encoding)
        assert encoding == _ssl.ENCODING_DER
        return self.der


class _Inner:
    def __init__(self, items) -> None:
        self.items = items

    def get_unverified_chain(self):
        if isinstance(self.items, Exception):
            raise self.items
        return self.items


class _Session:
    def __init__(self, leaf: bytes | None, inner=None, public=None) -> None:
        self.leaf = leaf
        if inner is not None:
            self._sslobj = inner
        if public is not None:
            self.get_unverified_chain = lambda: public

    def getpeercert(self, binary_form: bool = False):
        assert binary_form
        return self.leaf


def test_peer_chain_from_the_private_api_in_presented_order():
    items = [_Cert(b"leaf"), _Cert(b"issuer"), _Cert(b"root")]
    chain, source = peer_chain(_Session(b"leaf", inner=_Inner(items)))
    assert chain == (b"leaf", b"issuer", b"root") and source == "unverified-chain"
    assert items[0].encodings  # went through public_bytes(ENCODING_DER)


def test_peer_chain_prefers_the_public_api_of_python_3_13():
    chain, source = peer_chain(_Session(b"leaf", inner=_Inner(RuntimeError("unused")), public=[b"leaf", b"ca"]))
    assert chain == (b"leaf", b"ca") and source == "unverified-chain"


def test_peer_chain_falls_back_to_the_leaf():
    assert peer_chain(_Session(b"leaf")) == ((b"leaf",), "leaf-only")
    assert peer_chain(_Session(b"leaf", inner=_Inner(RuntimeError("boom")))) == ((b"leaf",), "leaf-only")
    assert peer_chain(_Session(b"leaf", inner=_Inner(None))) == ((b"leaf",), "leaf-only")
    assert peer_chain(_Session(None)) == ((), None)


def test_peer_chain_puts_the_leaf_first_if_the_library_did_not():
    chain, _ = peer_chain(_Session(b"leaf", inner=_Inner([_Cert(b"ca"), _Cert(b"leaf")])))
    assert chain == (b"leaf", b"ca")


def test_peer_chain_works_on_this_python():
    """The private method this module relies on exists here (3.10+); if it ever goes, the fallback is used."""
    import ssl
    import sys

    if sys.version_info >= (3, 13):
        assert hasattr(ssl.SSLObject, "get_unverified_chain")
    else:
        import _ssl

        assert hasattr(_ssl._SSLSocket, "get_unverified_chain") and hasattr(_ssl, "ENCODING_DER")


# ------------------------------------------------------------------------------------------- PKIX


@pytest.fixture(scope="module")
def pki():
    root = TestCA("pkix test root")
    sub = root.intermediate("pkix test issuing CA")
    return root, sub


def test_pkix_trusted_chain_with_matching_name(pki):
    root, sub = pki
    leaf, _ = sub.issue([HOST])
    result = check_pkix([pem_to_der(leaf), sub.cert_der], [HOST], [root.cert])
    assert result.ok and result.trusted and result.name_matches and not result.expired
    assert result.result_type is None


def test_pkix_missing_intermediate_is_not_trusted(pki):
    root, sub = pki
    leaf, _ = sub.issue([HOST])
    result = check_pkix([pem_to_der(leaf)], [HOST], [root.cert])
    assert not result.ok and not result.trusted
    assert result.result_type == "certificate-not-trusted"


def test_pkix_wrong_name_is_host_mismatch(pki):
    root, sub = pki
    leaf, _ = sub.issue(["other.example.test"])
    result = check_pkix([pem_to_der(leaf), sub.cert_der], [HOST], [root.cert])
    assert result.trusted and result.name_matches is False
    assert result.result_type == "certificate-host-mismatch"


def test_pkix_wildcard_matches_one_label(pki):
    root, sub = pki
    leaf, _ = sub.issue(["*.example.test"])
    assert check_pkix([pem_to_der(leaf), sub.cert_der], [HOST], [root.cert]).ok
    deeper = check_pkix([pem_to_der(leaf), sub.cert_der], ["a.mx.example.test"], [root.cert])
    assert deeper.result_type == "certificate-host-mismatch"


def test_pkix_expired_but_otherwise_good_is_certificate_expired(pki):
    root, sub = pki
    leaf, _ = sub.expired([HOST])
    result = check_pkix([pem_to_der(leaf), sub.cert_der], [HOST], [root.cert])
    assert result.trusted and result.expired
    assert result.result_type == "certificate-expired"
    assert "expired" in result.reason


def test_pkix_time_is_a_parameter(pki):
    root, sub = pki
    leaf, _ = sub.issue([HOST])
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    assert check_pkix([pem_to_der(leaf), sub.cert_der], [HOST], [root.cert], now=future).result_type == \
        "certificate-expired"


def test_pkix_untrusted_root_and_self_signed(pki):
    root, _ = pki
    other = TestCA("somebody else")
    leaf, _ = other.issue([HOST])
    assert check_pkix([pem_to_der(leaf)], [HOST], [root.cert]).result_type == "certificate-not-trusted"
    own, _ = self_signed([HOST])
    assert check_pkix([pem_to_der(own)], [HOST], [root.cert]).result_type == "certificate-not-trusted"


@pytest.mark.parametrize("chain", [[], [b"garbage"], [b"\x30\x00"]])
def test_pkix_never_raises_for_bad_chains(pki, chain):
    root, _ = pki
    result = check_pkix(chain, [HOST], [root.cert])
    assert not result.ok and result.result_type == "certificate-not-trusted"


def test_pkix_empty_store_and_ip_names(pki):
    root, sub = pki
    leaf, _ = sub.issue([HOST])
    assert check_pkix([pem_to_der(leaf)], [HOST], []).reason == "the trust store is empty"
    result = check_pkix([pem_to_der(leaf), sub.cert_der], ["192.0.2.1"], [root.cert])
    assert not result.ok and result.name_matches is False


def test_load_trust_store_from_a_file(tmp_path, pki):
    root, sub = pki
    path = write_pem(tmp_path / "roots.pem", root.cert_pem, sub.cert_pem)
    roots, label = load_trust_store(str(path))
    assert [c.subject for c in roots] == [root.cert.subject, sub.cert.subject] and label == f"CA file {path}"
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(ValueError, match="no PEM certificate"):
        load_trust_store(str(empty))
    with pytest.raises(OSError):
        load_trust_store(str(tmp_path / "missing.pem"))
    assert all(isinstance(c, x509.Certificate) for c in roots)


def test_dane_h_39_probe_context_floor_is_tls_1_2_without_verification():
    import ssl

    from mxsec.net.smtp import client_context

    ctx = client_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE and ctx.check_hostname is False
    assert client_context(ssl.TLSVersion.TLSv1_3).minimum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize("name", ["client.example.net", "x", "[192.0.2.1]", "[IPv6:2001:db8::1]", "a-b.c"])
def test_valid_ehlo_names(name):
    from mxsec.net.smtp import valid_ehlo_name

    assert valid_ehlo_name(name)


@pytest.mark.parametrize("name", ["", "a b", "evil\r\nMAIL FROM:<x>", "-x", "x" * 256, "a\x00"])
def test_ehlo_names_that_could_inject_commands_are_refused(name):
    import asyncio

    from mxsec.net.smtp import probe_starttls, valid_ehlo_name

    assert not valid_ehlo_name(name)
    with pytest.raises(ValueError, match="EHLO"):
        asyncio.run(probe_starttls("192.0.2.1", 25, ehlo_name=name, timeout=1))
