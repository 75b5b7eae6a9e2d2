"""mxsec.generate: the sans-I/O generators behind ``mxsec generate`` (RFC 8461 §3.1/§3.2, RFC 8460 §3, TLSA)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mxsec.dane.tlsa import parse_tlsa
from mxsec.testing.pki import TestCA, key_to_pem, new_key, pem_to_der, self_signed
from mxsec.errors import ParseError
from mxsec.generate import (
    ENFORCE_MIN_MAX_AGE,
    GenerateError,
    apache_config,
    default_policy_id,
    load_certificates,
    nginx_config,
    sts_policy,
    sts_txt,
    tlsa,
    tlsrpt,
    txt_rdata,
    zone_txt_line,
)
from mxsec.sts.policy import MAX_AGE_LIMIT, parse_policy
from mxsec.sts.record import parse_record as parse_sts_record
from mxsec.tlsrpt.record import TlsrptRecordError
from mxsec.tlsrpt.record import parse_record as parse_tlsrpt_record

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"


# --- sts-policy ------------------------------------------------------------------------------------------------


def test_sts_c_8_policy_lines_end_in_crlf_by_default() -> None:
    result = sts_policy("enforce", ["mail.example.com", "*.example.net"], 604800)
    assert result.text == (
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n"
    )
    assert result.warnings == ()


def test_sts_c_8_policy_with_lf_on_request() -> None:
    result = sts_policy("testing", ["mail.example.com"], 86400, newline="\n")
    assert result.text == "version: STSv1\nmode: testing\nmx: mail.example.com\nmax_age: 86400\n"
    assert "\r" not in result.text
    with pytest.raises(GenerateError):
        sts_policy("testing", ["mail.example.com"], 86400, newline="\r")


def test_sts_c_8_generated_policy_parses_back() -> None:
    for newline in ("\r\n", "\n"):
        result = sts_policy("enforce", ["MX1.Example.COM.", "*.example.net"], "31557600", newline=newline)
        policy = parse_policy(result.text)
        assert (policy.mode, policy.mx, policy.max_age) == ("enforce", ("mx1.example.com", "*.example.net"), 31557600)
        assert policy.warnings == ()


@pytest.mark.parametrize("mode", ["Enforce", "strict", "report", "", "ENFORCE"])
def test_sts_c_2_mode_is_validated(mode: str) -> None:
    with pytest.raises(GenerateError) as info:
        sts_policy(mode, ["mail.example.com"], 86400)
    assert info.value.code == "bad-mode"


def test_sts_c_2_mode_case_hint() -> None:
    with pytest.raises(GenerateError, match="lower-case"):
        sts_policy("Enforce", ["mail.example.com"], 86400)


@pytest.mark.parametrize(
    "max_age", [-1, MAX_AGE_LIMIT + 1, "31557601", "1w", "", "1.5", "-5", "99999999999", True, None]
)
def test_sts_c_3_max_age_range(max_age) -> None:
    with pytest.raises(GenerateError) as info:
        sts_policy("testing", ["mail.example.com"], max_age)
    assert info.value.code == "bad-max-age"


def test_sts_c_3_max_age_bounds_are_accepted() -> None:
    assert "max_age: 0\r\n" in sts_policy("testing", ["mail.example.com"], "0").text
    assert f"max_age: {MAX_AGE_LIMIT}\r\n" in sts_policy("testing", ["mail.example.com"], MAX_AGE_LIMIT).text


def test_sts_c_3_short_max_age_warns_for_enforce_only() -> None:
    warned = sts_policy("enforce", ["mail.example.com"], ENFORCE_MIN_MAX_AGE - 1)
    assert len(warned.warnings) == 1
    assert "604800" in warned.warnings[0] and "one week" in warned.warnings[0]
    assert "max_age: 86399\r\n" in warned.text  # a warning, not a change
    assert sts_policy("enforce", ["mail.example.com"], ENFORCE_MIN_MAX_AGE).warnings == ()
    assert sts_policy("testing", ["mail.example.com"], 60).warnings == ()
    assert sts_policy("none", [], 0).warnings == ()


def test_sts_c_4_mx_needed_except_for_mode_none() -> None:
    for mode in ("enforce", "testing"):
        with pytest.raises(GenerateError) as info:
            sts_policy(mode, [], 86400)
        assert info.value.code == "no-mx"
    assert sts_policy("none", [], 86400).text == "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n"


@pytest.mark.parametrize("pattern", ["a.example.com,b.example.com", "a.example.com b.example.com", "a.example.com;"])
def test_sts_c_5_one_pattern_per_mx(pattern: str) -> None:
    with pytest.raises(GenerateError, match="its own --mx"):
        sts_policy("enforce", [pattern], 86400)


@pytest.mark.parametrize(
    "pattern",
    ["*mail.example.com", "mail.*.example.com", "*", "*.", "**.example.com", "*.*.example.com", "mail*.example.com"],
)
def test_sts_c_7_wildcard_only_as_whole_leftmost_label(pattern: str) -> None:
    with pytest.raises(GenerateError) as info:
        sts_policy("enforce", [pattern], 86400)
    assert info.value.code == "bad-mx"


@pytest.mark.parametrize(
    "pattern",
    ["", " ", "mail..example.com", "-mail.example.com", "mail_1.example.com", "localhost", "*.com", "a" * 64 + ".com"],
)
def test_sts_c_7_patterns_are_host_names(pattern: str) -> None:
    with pytest.raises(GenerateError) as info:
        sts_policy("enforce", [pattern], 86400)
    assert info.value.code == "bad-mx"


@pytest.mark.parametrize("pattern", ["192.0.2.25", "[192.0.2.25]", "2001:db8::25", "*.192.0.2.1"])
def test_ec_20_ip_address_is_not_an_mx_pattern(pattern: str) -> None:
    with pytest.raises(GenerateError) as info:
        sts_policy("enforce", [pattern], 86400)
    assert info.value.code == "bad-mx"


def test_ec_16_trailing_dot_and_case_normalised() -> None:
    result = sts_policy("enforce", ["Mail.Example.COM."], 86400)
    assert "mx: mail.example.com\r\n" in result.text


def test_ec_18_u_label_written_as_a_label_with_a_warning() -> None:
    result = sts_policy("enforce", ["mx.bücher.example", "*.bücher.example"], 86400)
    assert "mx: mx.xn--bcher-kva.example\r\n" in result.text
    assert "mx: *.xn--bcher-kva.example\r\n" in result.text
    assert result.text.isascii()
    assert len(result.warnings) == 2 and "A-label" in result.warnings[0]


def test_sts_policy_duplicate_patterns_written_once() -> None:
    result = sts_policy("enforce", ["mail.example.com", "MAIL.example.com.", "mail.example.com"], 86400)
    assert result.text.count("mx: ") == 1
    assert len(result.warnings) == 2


# --- sts-txt ----------------------------------------------------------------------------------------------------


def test_sts_a_5_default_id_is_a_utc_timestamp() -> None:
    now = dt.datetime(2026, 11, 24, 10, 15, 0, tzinfo=dt.UTC)
    assert default_policy_id(now) == "20261124T101500Z"
    assert default_policy_id(now.timestamp()) == "20261124T101500Z"
    assert default_policy_id(now.astimezone(dt.timezone(dt.timedelta(hours=5)))) == "20261124T101500Z"
    assert default_policy_id(now.replace(tzinfo=None)) == "20261124T101500Z"
    assert sts_txt(now=now) == "v=STSv1; id=20261124T101500Z"


def test_sts_a_5_default_id_is_valid_for_any_time() -> None:
    for ts in (0, 1, 10**9, 4102444799, 253402300799):
        record = sts_txt(now=ts)
        assert re.fullmatch(r"v=STSv1; id=\d{8}T\d{6}Z", record)
        assert parse_sts_record(record).id == record.split("=", 2)[2]


def test_sts_a_4_explicit_id() -> None:
    assert sts_txt("abc123XYZ") == "v=STSv1; id=abc123XYZ"
    assert sts_txt("a" * 32, now=0) == "v=STSv1; id=" + "a" * 32


@pytest.mark.parametrize("bad", ["", "a" * 33, "abc+def", "YWJj=", "2024-01-01", "a.b", "a b", "é", "id\n"])
def test_ec_14_invalid_ids_refused(bad: str) -> None:
    with pytest.raises(GenerateError) as info:
        sts_txt(bad)
    assert info.value.code == "bad-id"
    assert "\n" not in str(info.value)


def test_ec_14_id_error_names_the_problem() -> None:
    with pytest.raises(GenerateError, match="33 characters"):
        sts_txt("a" * 33)
    with pytest.raises(GenerateError, match=r"'\+'.*'='"):
        sts_txt("ab+c=")


def test_sts_a_4_id_or_time_required() -> None:
    with pytest.raises(GenerateError):
        sts_txt()


def test_sts_a_1_zone_line_at_mta_sts() -> None:
    assert sts_txt("20240101", name="Example.COM.") == '_mta-sts.example.com. IN TXT "v=STSv1; id=20240101"'
    assert sts_txt("1", name="bücher.example").startswith("_mta-sts.xn--bcher-kva.example. IN TXT ")
    with pytest.raises(GenerateError) as info:
        sts_txt("1", name="192.0.2.1")
    assert info.value.code == "bad-name"


# --- tlsa -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain() -> dict:
    root = TestCA("gen root")
    sub = root.intermediate("gen issuing CA")
    leaf_pem, key_pem = sub.issue(["mx1.example.net"], fresh_key=True)
    return {"root": root, "sub": sub, "leaf": leaf_pem, "key": key_pem}


def _spki_sha256(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest().upper()


def test_tlsa_default_is_3_1_1_for_the_leaf(chain: dict) -> None:
    result = tlsa(chain["leaf"], "mx1.example.net")
    assert result.line == f"_25._tcp.mx1.example.net. IN TLSA 3 1 1 {_spki_sha256(chain['leaf'])}"
    assert (result.index, result.count, result.warnings) == (0, 1, ())
    assert parse_tlsa(result.line.split(" IN TLSA ")[1]) == result.record


def test_tlsa_chain_usage_3_takes_the_first_usage_2_the_last(chain: dict) -> None:
    pem = chain["leaf"] + chain["sub"].cert_pem
    ee = tlsa(pem, "mx1.example.net")
    ta = tlsa(pem, "mx1.example.net", usage=2)
    assert ee.record.to_text() == f"3 1 1 {_spki_sha256(chain['leaf'])}"
    assert ta.record.to_text() == f"2 1 1 {_spki_sha256(chain['sub'].cert_pem)}"
    assert (ta.index, ta.count, ta.warnings) == (1, 2, ())
    assert ta.subject == "CN=gen issuing CA"


def test_tlsa_index_overrides_the_choice(chain: dict) -> None:
    pem = chain["leaf"] + chain["sub"].cert_pem + chain["root"].cert_pem
    assert tlsa(pem, "mx1.example.net", usage=2).record.to_text().endswith(_spki_sha256(chain["root"].cert_pem))
    picked = tlsa(pem, "mx1.example.net", usage=2, index=1)
    assert picked.record.to_text() == f"2 1 1 {_spki_sha256(chain['sub'].cert_pem)}"
    with pytest.raises(GenerateError, match="holds 3 certificates") as info:
        tlsa(pem, "mx1.example.net", index=3)
    assert info.value.code == "bad-index"


def test_tlsa_usage_2_on_a_lone_leaf_warns(chain: dict) -> None:
    result = tlsa(chain["leaf"], "mx1.example.net", usage=2)
    assert result.record.usage == 2
    assert len(result.warnings) == 1 and "not a CA certificate" in result.warnings[0]


def test_tlsa_usage_3_on_a_ca_warns(chain: dict) -> None:
    result = tlsa(chain["sub"].cert_pem, "mx1.example.net")
    assert any("is a CA certificate" in w for w in result.warnings)


def test_dane_h_24_pkix_usages_warn_for_smtp(chain: dict) -> None:
    for usage in (0, 1):
        assert any("not used for SMTP" in w for w in tlsa(chain["leaf"], "mx1.example.net", usage=usage).warnings)
    assert not any("not used for SMTP" in w for w in tlsa(chain["leaf"], "www.example.net", usage=1, port=443).warnings)


def test_dane_h_34_selectors_and_matching_types(chain: dict) -> None:
    der = pem_to_der(chain["leaf"])
    full_cert = tlsa(chain["leaf"], "mx1.example.net", selector=0, mtype=0)
    assert full_cert.record.data == der
    assert len(full_cert.warnings) == 2  # 3 0 x changes at renewal; matching type 0 is large
    assert tlsa(chain["leaf"], "mx1.example.net", selector=0).record.data == hashlib.sha256(der).digest()
    sha512 = tlsa(chain["leaf"], "mx1.example.net", mtype=2).record
    spki = x509.load_pem_x509_certificate(chain["leaf"]).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert sha512.data == hashlib.sha512(spki).digest()


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [({"usage": 4}, "bad-parameter"), ({"selector": 2}, "bad-parameter"), ({"mtype": 3}, "bad-parameter"),
     ({"usage": -1}, "bad-parameter"), ({"usage": True}, "bad-parameter"), ({"port": 0}, "bad-port"),
     ({"port": 70000}, "bad-port")],
)
def test_tlsa_parameters_validated(chain: dict, kwargs: dict, code: str) -> None:
    with pytest.raises(GenerateError) as info:
        tlsa(chain["leaf"], "mx1.example.net", **kwargs)
    assert info.value.code == code


def test_dane_h_12_owner_name_and_port(chain: dict) -> None:
    assert tlsa(chain["leaf"], "MX1.Example.NET.", port=465).line.startswith("_465._tcp.mx1.example.net. IN TLSA ")
    for bad in ("192.0.2.1", "", "mx_1.example.net", "a..b"):
        with pytest.raises(GenerateError) as info:
            tlsa(chain["leaf"], bad)
        assert info.value.code == "bad-host"


def test_tlsa_certificate_file_forms(chain: dict) -> None:
    expected = _spki_sha256(chain["leaf"])
    assert tlsa(pem_to_der(chain["leaf"]), "mx1.example.net").record.to_text().endswith(expected)  # DER
    combined = chain["key"] + chain["leaf"]  # key first, as in some combined PEM files
    assert tlsa(combined, "mx1.example.net").record.to_text().endswith(expected)
    assert tlsa(chain["leaf"].decode(), "mx1.example.net").record.to_text().endswith(expected)  # text


def test_tlsa_bad_certificate_files() -> None:
    key_pem = key_to_pem(new_key())
    cases = [
        (b"", "no-certificate"),
        (b"   \n", "no-certificate"),
        (b"hello world", "no-certificate"),
        (key_pem, "no-certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "bad-certificate"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n", "bad-certificate"),
    ]
    for data, code in cases:
        with pytest.raises(GenerateError) as info:
            load_certificates(data, source="f.pem")
        assert info.value.code == code, data
        assert "\n" not in str(info.value)
    with pytest.raises(GenerateError, match="PRIVATE KEY") as info:
        load_certificates(key_pem)
    assert key_pem.split(b"\n")[1].decode() not in str(info.value)  # never echo key material


def test_tlsa_example_files_in_the_docs() -> None:
    leaf = (EXAMPLES / "mx1.example.net.pem").read_bytes()
    full = (EXAMPLES / "mx1.example.net-fullchain.pem").read_bytes()
    assert len(load_certificates(leaf)) == 1 and len(load_certificates(full)) == 2
    assert tlsa(full, "mx1.example.net", usage=2).warnings == ()
    assert tlsa(full, "mx1.example.net").record == tlsa(leaf, "mx1.example.net").record


def test_tlsa_self_signed_leaf() -> None:
    pem, _key = self_signed(["mx.example.org"])
    assert tlsa(pem, "mx.example.org").record.to_text().endswith(_spki_sha256(pem))


# --- tlsrpt ------------------------------------------------------------------------------------------------------


def test_rpt_i_3_tlsrpt_record() -> None:
    result = tlsrpt(["mailto:tlsrpt@example.com"])
    assert result.text == "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"
    assert result.warnings == ()


def test_rpt_i_3_tlsrpt_several_uris_repeat_or_comma() -> None:
    expected = "v=TLSRPTv1; rua=mailto:a@example.com,https://r.example.net/tlsrpt"
    assert tlsrpt(["mailto:a@example.com", "https://r.example.net/tlsrpt"]).text == expected
    assert tlsrpt(["mailto:a@example.com, https://r.example.net/tlsrpt"]).text == expected
    assert tlsrpt("mailto:a@example.com,https://r.example.net/tlsrpt").text == expected


def test_rpt_i_3_bare_address_suggests_mailto() -> None:
    with pytest.raises(TlsrptRecordError, match=r"did you mean 'mailto:postmaster@example.com'\?") as info:
        tlsrpt(["postmaster@example.com"])
    assert info.value.code == "rua-missing-mailto"


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("http://r.example.net/", "rua-unsupported-scheme"),
        ("ftp://r.example.net/", "rua-unsupported-scheme"),
        ("mailto:nobody", "rua-bad-mailto"),
        ("mailto:a@example.com!10m", "rua-unencoded-char"),
        ("https://r.example.net/a;b", "rua-unencoded-char"),
        ("https://", "rua-bad-https"),
        ("example.com", "rua-invalid-uri"),
        ("mailto:a@example.com,,mailto:b@example.com", "rua-empty-uri"),
        ("mailto:a@example.com,", "rua-empty-uri"),
    ],
)
def test_rpt_i_11_only_usable_uris_are_generated(uri: str, code: str) -> None:
    with pytest.raises(TlsrptRecordError) as info:
        tlsrpt([uri])
    assert info.value.code == code


def test_rpt_i_3_tlsrpt_needs_a_uri() -> None:
    with pytest.raises(TlsrptRecordError) as info:
        tlsrpt([])
    assert info.value.code == "rua-missing"


def test_rpt_i_3_scheme_lower_cased_and_duplicates_dropped() -> None:
    result = tlsrpt(["MAILTO:a@example.com", "mailto:a@example.com", "HTTPS://r.example.net/"])
    assert result.text == "v=TLSRPTv1; rua=mailto:a@example.com,https://r.example.net/"
    assert len(result.warnings) == 1 and "twice" in result.warnings[0]


def test_rpt_i_3_u_label_mail_domain_written_as_a_label() -> None:
    result = tlsrpt(["mailto:tlsrpt@bücher.example"])
    assert result.text == "v=TLSRPTv1; rua=mailto:tlsrpt@xn--bcher-kva.example"
    assert len(result.warnings) == 1


def test_rpt_i_1_tlsrpt_zone_line() -> None:
    line = tlsrpt(["mailto:tlsrpt@example.com"], name="Example.com").text
    assert line == '_smtp._tls.example.com. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"'
    with pytest.raises(GenerateError) as info:
        tlsrpt(["mailto:tlsrpt@example.com"], name="not a domain")
    assert info.value.code == "bad-name"


def test_rpt_i_7_long_record_split_into_255_octet_strings() -> None:
    uris = [f"https://reports-{i}.example.net/" + "p" * 60 for i in range(8)]
    result = tlsrpt(uris, name="example.com")
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', result.text)
    assert len(strings) > 1
    assert all(len(s) <= 255 for s in strings)
    joined = "".join(strings)  # what a resolver hands back, joined without spaces (RPT-I-7)
    assert parse_tlsrpt_record(joined).rua == tuple(uris)


def test_rpt_i_7_txt_rdata_escapes_and_splits() -> None:
    assert txt_rdata('a"b\\c') == '"a\\"b\\\\c"'
    assert txt_rdata("") == '""'
    assert txt_rdata("x" * 256) == '"' + "x" * 255 + '" "x"'
    assert zone_txt_line("_mta-sts.example.com.", "v=STSv1; id=1") == '_mta-sts.example.com. IN TXT "v=STSv1; id=1"'


# --- policy host: nginx and Apache ------------------------------------------------------------------------------


def test_sts_b_1_nginx_serves_only_the_policy() -> None:
    conf = nginx_config("Example.COM", "/srv/mta-sts/policy.txt")
    assert "server_name mta-sts.example.com;" in conf
    assert "listen 443 ssl;" in conf
    assert re.search(r"location = /\.well-known/mta-sts\.txt \{\s+alias /srv/mta-sts/policy\.txt;", conf)
    assert "types { }" in conf and "default_type text/plain;" in conf  # STS-B-2: text/plain whatever the name
    assert re.search(r"location / \{\s+return 404;\s+\}", conf)
    assert "ssl_certificate     /etc/letsencrypt/live/mta-sts.example.com/fullchain.pem;" in conf
    assert "ssl_certificate_key /etc/letsencrypt/live/mta-sts.example.com/privkey.pem;" in conf
    assert "ssl_protocols       TLSv1.2 TLSv1.3;" in conf  # STS-B-16
    assert conf.count("{") == conf.count("}")


def test_sts_b_9_nginx_and_apache_never_redirect() -> None:
    for conf in (nginx_config("example.com", "/srv/p.txt"), apache_config("example.com", "/srv/p.txt")):
        body = "\n".join(line for line in conf.splitlines() if not line.lstrip().startswith("#"))
        assert not re.search(r"\b(return 30\d|rewrite|Redirect|RewriteRule)\b", body)


def test_sts_b_1_apache_serves_only_the_policy() -> None:
    conf = apache_config(
        "example.com", "/srv/mta-sts/policy.txt", cert_file="/etc/ssl/c.pem", key_file="/etc/ssl/k.pem"
    )
    assert "<VirtualHost *:443>" in conf and conf.rstrip().endswith("</VirtualHost>")
    assert "ServerName mta-sts.example.com" in conf
    assert 'Alias "/.well-known/mta-sts.txt" "/srv/mta-sts/policy.txt"' in conf
    assert re.search(r'<Location "/">\s+Require all denied\s+</Location>', conf)
    assert re.search(r'<Location "/\.well-known/mta-sts\.txt">\s+Require all granted\s+ForceType text/plain', conf)
    assert '<Directory "/srv/mta-sts">' in conf and "AllowOverride None" in conf
    assert 'SSLCertificateFile    "/etc/ssl/c.pem"' in conf and 'SSLCertificateKeyFile "/etc/ssl/k.pem"' in conf
    assert "SSLEngine on" in conf and "+TLSv1.2 +TLSv1.3" in conf


def test_sts_b_1_policy_host_uses_the_a_label() -> None:
    assert "server_name mta-sts.xn--bcher-kva.example;" in nginx_config("bücher.example", "/srv/p.txt")
    assert "ServerName mta-sts.xn--bcher-kva.example" in apache_config("bücher.example", "/srv/p.txt")


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"domain": "192.0.2.1"}, "bad-name"),
        ({"domain": ""}, "bad-name"),
        ({"policy_file": "relative/p.txt"}, "bad-path"),
        ({"policy_file": "/srv/my policy.txt"}, "bad-path"),
        ({"policy_file": "/srv/p.txt; include /etc/passwd"}, "bad-path"),
        ({"policy_file": "/srv/p}.txt"}, "bad-path"),
        ({"policy_file": '/srv/"p.txt'}, "bad-path"),
        ({"policy_file": "/srv/p\n.txt"}, "bad-path"),
        ({"policy_file": "/srv/"}, "bad-path"),
        ({"policy_file": ""}, "bad-path"),
        ({"cert_file": "/etc/$x.pem"}, "bad-path"),
        ({"key_file": "key.pem"}, "bad-path"),
    ],
)
def test_sts_b_1_policy_host_inputs_validated(kwargs: dict, code: str) -> None:
    args = {"domain": "example.com", "policy_file": "/srv/p.txt"} | kwargs
    for make in (nginx_config, apache_config):
        with pytest.raises(GenerateError) as info:
            make(args["domain"], args["policy_file"], cert_file=args.get("cert_file"), key_file=args.get("key_file"))
        assert info.value.code == code
        assert isinstance(info.value, ParseError)


NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed on this machine")
def test_sts_b_1_nginx_accepts_the_snippet(tmp_path: Path) -> None:
    cert_pem, key_pem = self_signed(["mta-sts.example.com"])
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    (tmp_path / "policy.txt").write_text(sts_policy("testing", ["mail.example.com"], 86400).text)
    snippet = nginx_config(
        "example.com", str(tmp_path / "policy.txt"), cert_file=str(tmp_path / "cert.pem"),
        key_file=str(tmp_path / "key.pem"),
    )
    (tmp_path / "mta-sts.conf").write_text(snippet)
    temp_paths = "\n".join(
        f"    {name}_temp_path {tmp_path}/{name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\nhttp {{\n    access_log off;\n"
        f"{temp_paths}\n    include {tmp_path}/mta-sts.conf;\n}}\n"
    )
    run = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "syntax is ok" in run.stderr


def test_tlsa_oversized_certificate_files_refused(chain: dict) -> None:
    from mxsec.generate import MAX_CERT_FILE_BYTES

    with pytest.raises(GenerateError) as info:
        load_certificates(chain["leaf"] + b"\n" * MAX_CERT_FILE_BYTES)
    assert info.value.code == "too-large"
    with pytest.raises(GenerateError) as info:
        load_certificates(b"-----BEGIN X-----\n" * 201)
    assert info.value.code == "too-large"
    assert len(load_certificates(chain["leaf"] * 20)) == 20
