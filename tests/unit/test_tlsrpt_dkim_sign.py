"""mxsec.tlsrpt.dkim_sign: DKIM keys, key records and signatures for outgoing TLS reports (RFC 8460 §3;
RPT-I-14, RPT-I-15, RPT-I-16, RPT-I-20).

Every signature is checked by a verifier that did not make it: mxsec's receiving side
(:func:`mxsec.reports.dkim.verify`) for both algorithms, dkimpy's own ``verify`` for RSA (and for Ed25519 when
PyNaCl happens to be installed), and the Ed25519 path against the published example of RFC 8463 Appendix A.
Keys are served by an in-memory ``dnsfunc``; nothing touches the network.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.util import parse_tag_value

from mxsec.reports.dkim import verify as mxsec_verify
from mxsec.tlsrpt import dkim_sign as ds
from mxsec.tlsrpt.dkim_sign import (
    DkimError,
    SigningKey,
    generate_key,
    key_owner,
    key_record,
    load_signing_key,
    sign_message,
)
from mxsec.tlsrpt.outgoing import compose_message
from tests import tlsrpt_corpus as tc

SELECTOR = "tlsrpt2026"
DOMAIN = "reporter.example"
NOW = 1708233151
OWNER = f"{SELECTOR}._domainkey.{DOMAIN}"

# A throw-away 512-bit RSA key (cryptography no longer makes keys that small): only for the refusal test.
RSA_512 = b"""-----BEGIN PRIVATE KEY-----
MIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEAz54bvh7T/ijeozgn
8klaLpiv+DDymrJLsX/vfXEPY59UzMTTC0VL1uWqMDpFErw81SlGwNI1okdXwBqF
Ik9ULwIDAQABAkBn1FNdfj9YoQnOqLvZgHOYUAXY4mnBkZ8nMqsLmeovUE3V8voU
68hpkFKWtlY6V9YWf+6tp/4EebIAYmAVbAepAiEA6S3ikFOrYT6PVfurh6B4SyXj
2YZyRq2+xV2e8/4oRT0CIQDj78w13IIrOhwDFuyCcCHursNp+2AJmiQW7RM76TgN
2wIgWRlRYzi1Wbkf6Aj8aBynGn/l6m53KA6nwJ6faDgLhzkCIQDV7IU4N9BjSZJo
w+cNNLhkDtmQakBkQqqEadSXcfcN6QIgSVTT1bjjFfDqJFhLMSgtL+owwl7O+RpS
fs4b7B+pZ7Y=
-----END PRIVATE KEY-----
"""

# RFC 8463 Appendix A: the Ed25519 key (A.2, its seed and public key) and the signed example message (A.3).
RFC8463_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC8463_PUBLIC = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
RFC8463_MESSAGE = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n"
    b"\r\n"
)
RFC8463_BH = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
RFC8463_B = "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw=="


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return load_signing_key(generate_key("rsa", 2048))


@pytest.fixture(scope="module")
def ed_key() -> SigningKey:
    return load_signing_key(generate_key("ed25519"))


@pytest.fixture(params=["rsa", "ed25519"])
def key(request, rsa_key, ed_key) -> SigningKey:
    return rsa_key if request.param == "rsa" else ed_key


class Zone:
    """An in-memory ``dnsfunc``: owner name -> TXT value; records the names asked."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = {name.lower(): value for name, value in records.items()}
        self.asked: list[str] = []

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        text = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
        self.asked.append(text)
        value = self.records.get(text)
        return value.encode() if value is not None else None


def report_message(**overrides) -> bytes:
    args = dict(
        report_gz=tc.as_gzip(tc.report(contact=f"tlsrpt-noreply@{DOMAIN}")),
        filename=f"{DOMAIN}!example.com!{tc.DAY_START_TS}!{tc.DAY_END_TS}!001.json.gz",
        report_domain="example.com",
        submitter=DOMAIN,
        report_id="2024-02-17T00:00:00Z_example.com",
        from_addr=f"noreply-smtp-tls-reporting@{DOMAIN}",
        to_addrs=["tlsrpt@example.com"],
        date=datetime(2024, 2, 18, 5, 12, 31, tzinfo=UTC),
        organization_name="Reporter Example",
        begin=datetime(2024, 2, 17, tzinfo=UTC),
        end=datetime(2024, 2, 17, 23, 59, 59, tzinfo=UTC),
    )
    args.update(overrides)
    return compose_message(**args)


def signed(key: SigningKey, message: bytes | None = None, **kwargs) -> bytes:
    return sign_message(report_message() if message is None else message, key=key, selector=SELECTOR,
                        domain=DOMAIN, now=NOW, **kwargs)


def signature_tags(message: bytes) -> dict[bytes, bytes]:
    header = re.match(rb"DKIM-Signature:(.*?)\r?\n(?=\S)", message, re.DOTALL).group(1)
    return parse_tag_value(header)


def signed_names(message: bytes) -> list[str]:
    return [n.strip().decode() for n in signature_tags(message)[b"h"].split(b":")]


def zone_for(key: SigningKey, service: str | None = "tlsrpt") -> Zone:
    return Zone({OWNER: key_record(key, service=service)})


def have_nacl() -> bool:
    try:
        import nacl.signing  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ RPT-I-14


def test_rpt_i_14_rsa_signature_verifies_with_mxsec_and_dkimpy(rsa_key):
    message = signed(rsa_key)
    zone = zone_for(rsa_key)
    assert mxsec_verify(message, zone) == ("pass", (DOMAIN,))
    assert zone.asked == [OWNER]
    assert dkim.verify(message, dnsfunc=zone, tlsrpt=True) is True
    assert dkim.verify(message, dnsfunc=zone, tlsrpt="strict") is True


def test_rpt_i_14_ed25519_signature_verifies_with_mxsec(ed_key):
    message = signed(ed_key)
    zone = zone_for(ed_key)
    assert mxsec_verify(message, zone) == ("pass", (DOMAIN,))
    assert signature_tags(message)[b"a"] == b"ed25519-sha256"
    if have_nacl():  # dkimpy verifies Ed25519 only through PyNaCl, which mxsec does not depend on
        assert dkim.verify(message, dnsfunc=zone, tlsrpt=True) is True


def test_rpt_i_14_ed25519_reproduces_the_rfc_8463_example():
    """RFC 8463 A.3, signed with the key of A.2 by our Ed25519 path: the same ``bh=`` and ``b=`` byte for byte
    (Ed25519 signatures are deterministic), so the hook signs exactly what RFC 8463 §3 specifies."""
    seed = base64.b64decode(RFC8463_SEED)
    pem = ed25519.Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    key = load_signing_key(pem)
    assert key.public_key == RFC8463_PUBLIC
    assert key_record(key, service=None) == f"v=DKIM1; k=ed25519; p={RFC8463_PUBLIC}"  # the record of A.2
    names = [b"from", b"to", b"subject", b"date", b"message-id", b"from", b"subject", b"date"]
    header = ds._signature_field(RFC8463_MESSAGE, key, b"brisbane", b"football.example.com", 1528637909, names,
                                 identity=b"@football.example.com")
    tags = signature_tags(header + RFC8463_MESSAGE)
    assert tags[b"bh"].decode() == RFC8463_BH
    assert re.sub(rb"\s+", b"", tags[b"b"]).decode() == RFC8463_B
    assert (tags[b"d"], tags[b"s"], tags[b"t"], tags[b"c"]) == (
        b"football.example.com", b"brisbane", b"1528637909", b"relaxed/relaxed")
    zone = Zone({"brisbane._domainkey.football.example.com": f"v=DKIM1; k=ed25519; p={RFC8463_PUBLIC}"})
    assert mxsec_verify(header + RFC8463_MESSAGE, zone) == ("pass", ("football.example.com",))


def test_rpt_i_14_the_docs_example_key_is_the_rfc_8463_key():
    from pathlib import Path

    pem = (Path(__file__).resolve().parents[2] / "docs" / "examples" / "dkim-rfc8463.pem").read_bytes()
    assert load_signing_key(pem).public_key == RFC8463_PUBLIC


def test_rpt_i_14_signature_tags(key):
    message = signed(key)
    tags = signature_tags(message)
    assert tags[b"v"] == b"1"
    assert tags[b"a"] == key.algorithm.encode()
    assert tags[b"c"] == b"relaxed/relaxed"
    assert (tags[b"d"], tags[b"s"], tags[b"t"]) == (DOMAIN.encode(), SELECTOR.encode(), str(NOW).encode())
    assert message.endswith(report_message())
    assert message.startswith(b"DKIM-Signature: ")
    assert max(len(line) for line in message.split(b"\r\n")) <= 998
    assert b"\n" not in message.replace(b"\r\n", b"")


def test_rpt_i_14_idn_domain_and_case_are_normalised(rsa_key):
    message = sign_message(report_message(), key=rsa_key, selector="TLSRPT2026", domain="Reporter.Example.",
                           now=NOW)
    tags = signature_tags(message)
    assert (tags[b"d"], tags[b"s"]) == (DOMAIN.encode(), SELECTOR.encode())
    idn = sign_message(report_message(), key=rsa_key, selector="s", domain="bücher.example", now=NOW)
    assert signature_tags(idn)[b"d"] == b"xn--bcher-kva.example"


def test_rpt_i_14_current_time_without_now(rsa_key):
    import time

    before = int(time.time())
    message = sign_message(report_message(), key=rsa_key, selector=SELECTOR, domain=DOMAIN)
    assert before <= int(signature_tags(message)[b"t"]) <= int(time.time())


def test_rpt_i_14_both_algorithms_on_one_message(rsa_key, ed_key):
    twice = sign_message(signed(rsa_key), key=ed_key, selector="ed", domain=DOMAIN, now=NOW)
    zone = Zone({OWNER: key_record(rsa_key), f"ed._domainkey.{DOMAIN}": key_record(ed_key)})
    assert mxsec_verify(twice, zone) == ("pass", (DOMAIN,))
    checker = dkim.DKIM(twice, tlsrpt=True)
    assert checker.verify(idx=1, dnsfunc=zone) is True  # the RSA signature, below the Ed25519 one


def test_rpt_i_14_lf_only_message(key):
    message = report_message().replace(b"\r\n", b"\n")
    out = signed(key, message)
    assert b"\r" not in out
    assert mxsec_verify(out, zone_for(key)) == ("pass", (DOMAIN,))


# ------------------------------------------------------------------------------------------- tampering


def test_rpt_i_14_tampered_body_fails(key):
    message = signed(key)
    zone = zone_for(key)
    body_start = message.index(b"\r\n\r\n")
    tampered = message[:body_start] + message[body_start:].replace(b"Reporter Example", b"Reporter Exampel", 1)
    assert tampered != message
    assert mxsec_verify(tampered, zone) == ("fail", ())
    if key.key_type == "rsa" or have_nacl():
        assert dkim.verify(tampered, dnsfunc=zone, tlsrpt=True) is False


def test_rpt_i_20_tampered_report_domain_header_fails(key):
    message = signed(key)
    zone = zone_for(key)
    tampered = message.replace(b"\r\nTLS-Report-Domain: example.com\r\n", b"\r\nTLS-Report-Domain: example.net\r\n")
    assert tampered != message
    assert mxsec_verify(tampered, zone) == ("fail", ())
    if key.key_type == "rsa" or have_nacl():
        assert dkim.verify(tampered, dnsfunc=zone, tlsrpt=True) is False


@pytest.mark.parametrize("added", [b"TLS-Report-Domain: victim.example", b"TLS-Report-Submitter: evil.example",
                                   b"From: mallory@evil.example", b"Subject: other", b"TLS-Required: Yes"])
def test_rpt_i_20_an_added_copy_of_a_signed_header_fails(key, added):
    """Over-signing: each signed name is listed once more than the message has it, so a second copy added
    on the way (which a receiver reading the first one would believe) breaks the signature."""
    message = signed(key)
    end_of_signature = re.match(rb"DKIM-Signature:.*?\r\n(?=\S)", message, re.DOTALL).end()
    tampered = message[:end_of_signature] + added + b"\r\n" + message[end_of_signature:]
    assert mxsec_verify(tampered, zone_for(key)) == ("fail", ())


def test_rpt_i_14_an_unsigned_header_may_be_added(key):
    message = signed(key)
    relayed = b"Received: from a by b; Sun, 18 Feb 2024 05:12:32 +0000\r\n" + message.replace(
        b"\r\nMIME-Version: 1.0\r\n", b"\r\nX-Spam-Score: 0\r\nMIME-Version: 1.0\r\n", 1)
    assert relayed.count(b"X-Spam-Score") == 1
    assert mxsec_verify(relayed, zone_for(key)) == ("pass", (DOMAIN,))


def test_rpt_i_14_relaxed_canonicalisation_survives_refolding(key):
    message = signed(key)
    refolded = message.replace(b"\r\nTLS-Report-Submitter: reporter.example\r\n",
                               b"\r\nTLS-Report-Submitter:\r\n\treporter.example  \r\n")
    assert mxsec_verify(refolded, zone_for(key)) == ("pass", (DOMAIN,))


def test_rpt_i_14_wrong_key_fails(rsa_key, ed_key):
    other = load_signing_key(generate_key("ed25519"))
    assert mxsec_verify(signed(ed_key), zone_for(other)) == ("fail", ())
    assert mxsec_verify(signed(rsa_key), zone_for(ed_key)) == ("fail", ())


# ------------------------------------------------------------------------------------------ RPT-I-15, 20


def test_rpt_i_15_no_body_length_tag(key):
    tags = signature_tags(signed(key))
    assert b"l" not in tags
    assert not re.search(rb"(^|;)\s*l\s*=", re.match(rb"DKIM-Signature:(.*?)\r\n(?=\S)", signed(key), re.DOTALL)
                         .group(1))


def test_rpt_i_15_appended_text_is_not_covered_by_a_length_limit(key):
    message = signed(key)
    assert mxsec_verify(message + b"-- \r\nappended by a list\r\n", zone_for(key)) == ("fail", ())


def test_rpt_i_20_report_headers_are_signed(key):
    names = signed_names(signed(key))
    for name in ("from", "to", "subject", "date", "message-id", "mime-version", "content-type",
                 "tls-report-domain", "tls-report-submitter", "tls-required"):
        assert names.count(name) == 2, name  # signed, and once more (over-signing)
    assert "dkim-signature" not in names


def test_rpt_i_20_optional_headers_are_signed_when_present(rsa_key):
    message = b"Reply-To: tlsrpt-admin@reporter.example\r\n" + report_message()
    names = signed_names(signed(rsa_key, message))
    assert names.count("reply-to") == 2
    assert "cc" not in names


# ------------------------------------------------------------------------------------------ RPT-I-16


def test_rpt_i_16_key_record_has_s_tlsrpt(key):
    record = key_record(key)
    assert record == f"v=DKIM1; k={key.key_type}; s=tlsrpt; p={key.public_key}"
    assert key.record() == record
    tags = parse_tag_value(record.encode())
    assert tags[b"s"] == b"tlsrpt"


def test_rpt_i_16_a_tlsrpt_only_key_does_not_sign_ordinary_mail(rsa_key):
    """RFC 6376 §3.6.1 as dkimpy applies it: with ``s=tlsrpt`` the signature holds for a report, and not for
    a message that is not one."""
    message = signed(rsa_key)
    zone = zone_for(rsa_key)
    assert dkim.verify(message, dnsfunc=zone, tlsrpt=True) is True
    assert dkim.verify(message, dnsfunc=zone, tlsrpt=False) is False
    everywhere = zone_for(rsa_key, service="*")
    assert dkim.verify(message, dnsfunc=everywhere, tlsrpt=False) is True


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("tlsrpt", "s=tlsrpt"),
        ("*", "s=*"),
        ("email:tlsrpt", "s=email:tlsrpt"),
        (" Email : TLSRPT : email ", "s=email:tlsrpt"),
        ("email", "s=email"),
        (None, None),
        ("", None),
    ],
)
def test_rpt_i_16_service_types(service, expected, key):
    record = key_record(key, service=service)
    tags = parse_tag_value(record.encode())
    if expected is None:
        assert b"s" not in tags
    else:
        assert f"s={tags[b's'].decode()}" == expected
    assert mxsec_verify(signed(key), Zone({OWNER: record})) == ("pass", (DOMAIN,))


@pytest.mark.parametrize("service", ["smtp", "email:", "tls rpt", "e-", "*;p=AAAA", "tlsrpt\r\nx"])
def test_rpt_i_16_bad_service_is_refused(service, rsa_key):
    with pytest.raises(DkimError) as info:
        key_record(rsa_key, service=service)
    assert info.value.code == "bad-service" and isinstance(info.value, ValueError)


def test_rpt_i_16_rsa_record_is_the_spki(rsa_key):
    spki = rsa_key.private.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    assert base64.b64decode(rsa_key.public_key) == spki
    assert (rsa_key.key_type, rsa_key.algorithm, rsa_key.bits) == ("rsa", "rsa-sha256", 2048)


# ------------------------------------------------------------------------------------------------ keys


def _pem(key, fmt=serialization.PrivateFormat.PKCS8, encryption=None) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption or serialization.NoEncryption())


def test_load_rsa_pkcs1_and_pkcs8_and_ed25519():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs1 = load_signing_key(_pem(private, serialization.PrivateFormat.TraditionalOpenSSL))
    pkcs8 = load_signing_key(_pem(private))
    assert pkcs1 == pkcs8 and pkcs1.warnings == ()
    assert _pem(private, serialization.PrivateFormat.TraditionalOpenSSL).startswith(b"-----BEGIN RSA PRIVATE KEY")
    ed = load_signing_key(_pem(ed25519.Ed25519PrivateKey.generate()))
    assert (ed.key_type, ed.algorithm, ed.bits, len(base64.b64decode(ed.public_key))) == (
        "ed25519", "ed25519-sha256", 256, 32)
    assert load_signing_key(_pem(private).decode()) == pkcs8  # text is accepted too


def test_load_key_with_other_pem_blocks_around_it():
    certificate = _certificate_pem()
    assert certificate.startswith(b"-----BEGIN CERTIFICATE")
    key = load_signing_key(b"# comment\n" + certificate + generate_key("ed25519"))
    assert key.key_type == "ed25519"


def _certificate_pem() -> bytes:
    from pathlib import Path

    return (Path(__file__).resolve().parents[2] / "docs" / "examples" / "mx1.example.net.pem").read_bytes()


def test_rsa_key_sizes():
    with pytest.raises(DkimError, match="512-bit RSA key; DKIM needs at least 1024 bits") as info:
        load_signing_key(RSA_512, source="old.pem")
    assert info.value.code == "weak-key"
    small = load_signing_key(generate_key("rsa", 1024))
    assert small.bits == 1024
    assert small.warnings == ("key is a 1024-bit RSA key; RFC 8301 recommends at least 2048 bits",)
    assert mxsec_verify(signed(small), zone_for(small)) == ("pass", (DOMAIN,))


@pytest.mark.parametrize(
    ("data", "code", "needle"),
    [
        (b"", "bad-key", "is empty"),
        (b"hello", "bad-key", "holds no PEM private key"),
        (None, "bad-key", "expected PEM bytes"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "bad-key", "(found: PUBLIC KEY)"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "bad-key", "cannot be read"),
        (b"x" * (70 * 1024), "bad-key", "larger than"),
    ],
)
def test_bad_key_input_is_refused(data, code, needle):
    with pytest.raises(DkimError, match=re.escape(needle)) as info:
        load_signing_key(data)
    assert info.value.code == code


def test_wrong_key_types_and_encrypted_keys_are_refused():
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(DkimError, match="key of type EC") as info:
        load_signing_key(_pem(ec_key))
    assert info.value.code == "key-type"
    with pytest.raises(DkimError, match="key of type EC"):
        load_signing_key(_pem(ec_key, serialization.PrivateFormat.TraditionalOpenSSL))
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        encrypted = _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024), fmt,
                         serialization.BestAvailableEncryption(b"secret"))
        with pytest.raises(DkimError, match="encrypted") as info:
            load_signing_key(encrypted)
        assert info.value.code == "encrypted-key"
    with pytest.raises(DkimError, match="holds no PEM private key"):
        load_signing_key(_certificate_pem())
    with pytest.raises(DkimError, match="2 private keys"):
        load_signing_key(generate_key("ed25519") + generate_key("ed25519"))


def test_signing_key_repr_shows_no_private_key(rsa_key):
    pem = rsa_key.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    secret_line = pem.splitlines()[5].decode()
    assert secret_line not in repr(rsa_key) and "private" not in repr(rsa_key)


def test_generate_key():
    pem = generate_key()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, unencrypted
    key = load_signing_key(pem)
    assert (key.key_type, key.bits) == ("rsa", 2048)
    assert load_signing_key(generate_key("rsa", 3072)).bits == 3072
    ed = generate_key("ed25519")
    assert ed.startswith(b"-----BEGIN PRIVATE KEY-----\n") and load_signing_key(ed).key_type == "ed25519"
    assert generate_key("ed25519") != ed
    for algorithm, bits in (("dsa", 2048), ("rsa", 512), ("rsa", 8192), ("rsa", True), ("rsa", "2048")):
        with pytest.raises(DkimError) as info:
            generate_key(algorithm, bits)
        assert info.value.code == "bad-parameter"


# ------------------------------------------------------------------------------------------ parameters


def test_key_owner():
    assert key_owner("TLSRPT2026", "Reporter.Example.") == OWNER
    assert key_owner("a.b_c", "bücher.example") == "a.b_c._domainkey.xn--bcher-kva.example"
    for selector in ("", "a b", "-a", "a..b", "ä", "a\r\nb", None):
        with pytest.raises(DkimError) as info:
            key_owner(selector, DOMAIN)
        assert info.value.code == "bad-selector"
    for domain in ("", "192.0.2.1", "a b.example", None):
        with pytest.raises(DkimError) as info:
            key_owner("s", domain)
        assert info.value.code == "bad-domain"


def test_sign_message_refusals(rsa_key):
    message = report_message()
    with pytest.raises(DkimError, match="no From"):
        sign_message(b"Subject: x\r\n\r\nbody\r\n", key=rsa_key, selector="s", domain=DOMAIN, now=NOW)
    with pytest.raises(DkimError) as info:
        sign_message(message.decode(), key=rsa_key, selector="s", domain=DOMAIN, now=NOW)
    assert info.value.code == "bad-message"
    with pytest.raises(DkimError, match="SigningKey"):
        sign_message(message, key=generate_key("ed25519"), selector="s", domain=DOMAIN, now=NOW)
    for now in (-1, 1.5, True, "1"):
        with pytest.raises(DkimError, match="Unix seconds"):
            sign_message(message, key=rsa_key, selector="s", domain=DOMAIN, now=now)
    with pytest.raises(DkimError) as info:
        sign_message(message, key=rsa_key, selector="s", domain="192.0.2.1", now=NOW)
    assert info.value.code == "bad-domain"
