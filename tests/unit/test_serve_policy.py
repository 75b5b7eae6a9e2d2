"""mxsec serve-policy without sockets: policy loading and warnings, certificate checks, the request handler,
reload rules, usage errors."""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mxsec.testing.pki import TestCA, new_key, self_signed, write_pem
from mxsec.errors import ConfigError
from mxsec.serve_policy import (
    CACHE_CONTROL,
    CONTENT_TYPE,
    POLICY_PATH,
    ServeSettings,
    certificate_covers,
    certificate_problems,
    load_certificate,
    load_policy,
    policy_host,
    policy_warnings,
    prepare,
    server_tls_context,
)
from mxsec.sts.policy import parse_policy

HOST = "mta-sts.example.test"
ENFORCE = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmx: *.mx.example.test\r\nmax_age: 604800\r\n"
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("serve-policy unit test root")


@pytest.fixture
def files(tmp_path: Path, ca: TestCA) -> dict[str, Path]:
    cert, key = ca.issue([HOST])
    paths = {
        "policy": tmp_path / "mta-sts.txt",
        "cert": write_pem(tmp_path / "cert.pem", cert),
        "key": write_pem(tmp_path / "key.pem", key),
    }
    paths["policy"].write_bytes(ENFORCE)
    os.chmod(paths["key"], 0o600)
    return paths


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


# --------------------------------------------------------------------------- policy file
def test_load_policy_keeps_the_file_bytes(tmp_path: Path) -> None:
    body = b"version: STSv1\nmode: enforce\r\nmx: mx1.example.test\nmax_age: 1209600"  # mixed endings, no last EOL
    path = tmp_path / "p.txt"
    path.write_bytes(body)
    loaded = load_policy(path)
    assert loaded.body == body
    assert loaded.policy.mode == "enforce" and loaded.policy.mx == ("mx1.example.test",)
    assert loaded.warnings == ()
    assert loaded.path == str(path)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"version: STSv1\nmode: Enforce\nmx: mx.example.test\nmax_age: 86400\n", "mode must be enforce"),
        (b"version: STSv1\nmode: enforce\nmax_age: 86400\n", "needs at least one valid mx field"),
        (b"version: STSv2\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n", "version must be STSv1"),
        (b"<html>\n<body>It works!</body>\n</html>\n", "line 1"),
        (b"", "missing version field"),
        (b"\xff\xfe", "not valid UTF-8"),
    ],
)
def test_invalid_policy_is_one_line_with_the_parser_message(tmp_path: Path, body: bytes, reason: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(body)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(f"policy {path} is not a valid MTA-STS policy: ")
    assert reason in message
    assert "\n" not in message


def test_policy_larger_than_the_fetch_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(ENFORCE + b"x-pad: " + b"a" * 70000 + b"\r\n")
    with pytest.raises(ConfigError, match="larger than 65536 bytes"):
        load_policy(path)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_policy(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "p"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(ConfigError, match=rf"^cannot read policy {path}: "):
        load_policy(path)


def test_no_warnings_for_a_strong_policy() -> None:
    assert policy_warnings(parse_policy(ENFORCE)) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 604800\n", ["mode testing"]),
        (b"version: STSv1\nmode: none\nmax_age: 600\n", ["mode none"]),  # a short max_age is fine for none
        (b"version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 3600\n", ["max_age 3600 is under one day"]),
        (b"version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 86399\n",
         ["mode testing", "max_age 86399 is under one day"]),
        (b"version: STSv1\n\nmode: enforce\nmx: mx.example.test\nmax_age: 604800\n",
         ["policy: line 2: empty line ignored"]),
    ],
)
def test_weak_settings_are_warned_about(body: bytes, expected: list[str]) -> None:
    warnings = policy_warnings(parse_policy(body))
    assert len(warnings) == len(expected), warnings
    for warning, start in zip(warnings, expected):
        assert warning.startswith(start), warning


# --------------------------------------------------------------------------- certificate
@pytest.mark.parametrize(
    ("domain", "host"),
    [("example.test", HOST), ("Example.TEST.", HOST), ("bücher.example", "mta-sts.xn--bcher-kva.example")],
)
def test_policy_host(domain: str, host: str) -> None:
    assert policy_host(domain) == host


@pytest.mark.parametrize(
    ("domain", "reason"),
    [("mta-sts.example.test", "not the policy host"), ("192.0.2.1", "IP address"), ("", "empty")],
)
def test_policy_host_refuses(domain: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        policy_host(domain)


@pytest.mark.parametrize(
    ("names", "covered"),
    [
        (["mta-sts.example.test"], True),
        (["MTA-STS.Example.Test."], True),
        (["www.example.test", "*.example.test"], True),
        (["*.test"], False),  # a wildcard stands for one label only
        (["mta*.example.test"], False),  # partial wildcards are not used by TLS clients here
        (["*.mta-sts.example.test"], False),
        (["example.test", "mta-sts.example.org"], False),
        ([], False),
    ],
)
def test_certificate_covers(names: list[str], covered: bool) -> None:
    assert certificate_covers(names, HOST) is covered


def test_good_certificate_has_no_problems(ca: TestCA) -> None:
    cert, _ = ca.issue([HOST, "www.example.test"])
    assert certificate_problems(_cert(cert), ["example.test"]) == ([], [])


def test_certificate_for_another_name_is_an_error(ca: TestCA) -> None:
    cert, _ = ca.issue(["mta-sts.other.test", "www.example.test"])
    errors, _ = certificate_problems(_cert(cert), ["example.test"])
    assert errors == [
        "certificate does not cover mta-sts.example.test (its DNS names: mta-sts.other.test, www.example.test)"
    ]


def test_every_domain_is_checked(ca: TestCA) -> None:
    cert, _ = ca.issue([HOST, "mta-sts.example.org"])
    assert certificate_problems(_cert(cert), ["example.test", "example.org"])[0] == []
    errors, _ = certificate_problems(_cert(cert), ["example.test", "example.net"])
    assert len(errors) == 1 and "mta-sts.example.net" in errors[0]


def test_common_name_only_certificate_does_not_cover(ca: TestCA) -> None:
    cert, _ = ca.issue([], common_name=HOST)
    errors, _ = certificate_problems(_cert(cert), ["example.test"])
    assert len(errors) == 1
    assert "no DNS names (subjectAltName)" in errors[0] and "CN" in errors[0]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("expired", "certificate expired on "), ("not_yet_valid", "certificate is not valid before ")],
)
def test_certificate_outside_its_validity_is_an_error(ca: TestCA, kind: str, reason: str) -> None:
    cert, _ = getattr(ca, kind)([HOST])
    errors, _ = certificate_problems(_cert(cert), ["example.test"])
    assert len(errors) == 1 and errors[0].startswith(reason)
    errors, _ = certificate_problems(_cert(cert))  # checked without --domain too
    assert len(errors) == 1 and errors[0].startswith(reason)


def test_certificate_expiring_soon_is_a_warning(ca: TestCA) -> None:
    cert, _ = ca.issue([HOST], not_after=NOW + dt.timedelta(days=5, hours=1))
    errors, warnings = certificate_problems(_cert(cert), ["example.test"])
    assert errors == []
    assert len(warnings) == 1 and warnings[0].startswith("certificate expires in 5 days, on ")


def test_client_only_certificate_is_an_error(ca: TestCA) -> None:
    cert, _ = ca.issue([HOST], server=False, client=True)
    errors, _ = certificate_problems(_cert(cert), ["example.test"])
    assert errors == ["certificate's extended key usage does not include TLS server authentication (serverAuth)"]


def test_without_domain_a_certificate_naming_no_policy_host_is_a_warning(ca: TestCA) -> None:
    cert, _ = ca.issue(["www.example.test"])
    errors, warnings = certificate_problems(_cert(cert))
    assert errors == []
    assert len(warnings) == 1 and "names no mta-sts.* host" in warnings[0] and "--domain" in warnings[0]
    cert, _ = ca.issue([HOST])
    assert certificate_problems(_cert(cert)) == ([], [])


def test_self_signed_certificate_is_a_warning() -> None:
    cert, _ = self_signed([HOST])
    errors, warnings = certificate_problems(_cert(cert), ["example.test"])
    assert errors == [] and warnings == ["certificate is self-signed: senders will not trust it"]


def test_load_certificate(files: dict[str, Path]) -> None:
    loaded = load_certificate(files["cert"], files["key"], ["example.test"])
    assert loaded.dns_names == (HOST,)
    assert loaded.warnings == ()
    assert loaded.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert loaded.serial == _cert(files["cert"].read_bytes()).serial_number


def test_load_certificate_chain_uses_the_leaf(tmp_path: Path, ca: TestCA) -> None:
    sub = ca.intermediate("serve-policy issuing CA")
    cert, key = sub.issue([HOST])
    chain = write_pem(tmp_path / "fullchain.pem", cert, sub.cert_pem)
    keyfile = write_pem(tmp_path / "key.pem", key)
    os.chmod(keyfile, 0o600)
    loaded = load_certificate(chain, keyfile, ["example.test"])
    assert loaded.serial == _cert(cert).serial_number
    with pytest.raises(ConfigError, match="does not cover mta-sts.example.org"):
        load_certificate(chain, keyfile, ["example.org"])


def test_load_certificate_refuses_a_name_it_does_not_cover(files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as info:
        load_certificate(files["cert"], files["key"], ["other.test"])
    assert str(info.value) == (
        f"certificate {files['cert']}: certificate does not cover mta-sts.other.test (its DNS names: {HOST})"
    )


def test_key_of_another_certificate(tmp_path: Path, files: dict[str, Path], ca: TestCA) -> None:
    _, other_key = ca.issue([HOST], fresh_key=True)
    keyfile = write_pem(tmp_path / "other-key.pem", other_key)
    with pytest.raises(ConfigError) as info:
        load_certificate(files["cert"], keyfile)
    assert str(info.value) == f"the key in {keyfile} does not belong to the certificate in {files['cert']}"


def test_encrypted_key_is_refused_without_a_prompt(tmp_path: Path, ca: TestCA) -> None:
    key = new_key()
    cert, _ = ca.issue([HOST], key=key)
    certfile = write_pem(tmp_path / "cert.pem", cert)
    keyfile = write_pem(tmp_path / "key.pem", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(ConfigError, match="encrypted; give an unencrypted key"):
        load_certificate(certfile, keyfile)


@pytest.mark.parametrize("content", [b"", b"not a certificate\n", b"-----BEGIN CERTIFICATE-----\nAAAA\n"])
def test_certificate_file_without_pem(tmp_path: Path, files: dict[str, Path], content: bytes) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match=f"^certificate {bad} holds no PEM certificate$"):
        load_certificate(bad, files["key"])


def test_missing_key_file(tmp_path: Path, files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="^cannot read key .*missing.pem: No such file"):
        load_certificate(files["cert"], tmp_path / "missing.pem")


def test_world_readable_key_is_a_warning(files: dict[str, Path]) -> None:
    os.chmod(files["key"], 0o644)
    loaded = load_certificate(files["cert"], files["key"], ["example.test"])
    assert len(loaded.warnings) == 1 and "readable by every user" in loaded.warnings[0]


def test_tls_context_allows_tls_1_2_and_newer_only() -> None:
    ctx = server_tls_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version in (ssl.TLSVersion.MAXIMUM_SUPPORTED, ssl.TLSVersion.TLSv1_3)


# --------------------------------------------------------------------------- requests
@pytest.fixture
def server(files: dict[str, Path]):
    return prepare(ServeSettings(str(files["policy"]), str(files["cert"]), str(files["key"]),
                                 listen=("127.0.0.1:0",), domains=("example.test",)))


async def test_get_serves_the_policy(server) -> None:
    response = await server.handle(make_mocked_request("GET", POLICY_PATH))
    assert response.status == 200
    assert response.body == ENFORCE
    assert response.headers["Content-Type"] == CONTENT_TYPE == "text/plain; charset=utf-8"
    assert response.headers["Cache-Control"] == CACHE_CONTROL == "no-cache"
    assert response.headers["Server"] == "mxsec"  # no version banner
    assert "Location" not in response.headers


async def test_head_has_the_same_headers(server) -> None:
    response = await server.handle(make_mocked_request("HEAD", POLICY_PATH))
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    assert response.content_length == len(ENFORCE)


@pytest.mark.parametrize(
    "target",
    [POLICY_PATH + "?x=1", "/.well-known/mta-sts%2Etxt", "/%2Ewell-known/mta-sts.txt"],
)
async def test_equivalent_targets_serve_the_policy(server, target: str) -> None:
    """The query is ignored; a percent-encoded unreserved character is the same character (RFC 3986
    §6.2.2.2), so these name the same resource."""
    response = await server.handle(make_mocked_request("GET", target))
    assert response.status == 200 and response.body == ENFORCE


@pytest.mark.parametrize(
    "path",
    ["/", "/.well-known/", "/.well-known/mta-sts.txt/", "/.well-known/MTA-STS.txt", "/.well-known/mta-sts%2Ftxt",
     "//.well-known/mta-sts.txt", "/.well-known/../.well-known/mta-sts.txt.bak", "/index.html", "/mta-sts.txt"],
)
async def test_other_paths_are_404(server, path: str) -> None:
    response = await server.handle(make_mocked_request("GET", path))
    assert response.status == 404
    assert response.body == b"not found\n"
    assert response.headers["Content-Type"] == CONTENT_TYPE
    assert "Location" not in response.headers


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PROPFIND"])
async def test_other_methods_are_405(server, method: str) -> None:
    response = await server.handle(make_mocked_request(method, POLICY_PATH))
    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert response.body == b"method not allowed\n"


async def test_other_method_on_other_path_is_404(server) -> None:
    assert (await server.handle(make_mocked_request("POST", "/upload"))).status == 404


# --------------------------------------------------------------------------- reload
@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    logger = logging.getLogger("mxsec.serve_policy")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield seen
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_reload_replaces_the_policy(server, files: dict[str, Path], records) -> None:
    new = ENFORCE.replace(b"max_age: 604800", b"max_age: 1209600")
    files["policy"].write_bytes(new)
    assert server.reload() == (True, True)
    assert (await server.handle(make_mocked_request("GET", POLICY_PATH))).body == new
    reloaded = [r for r in records if r.getMessage() == "policy reloaded"]
    assert len(reloaded) == 1 and reloaded[0].changed is True


async def test_reload_keeps_the_old_policy_when_the_new_one_is_invalid(server, files: dict[str, Path],
                                                                       records) -> None:
    files["policy"].write_bytes(b"version: STSv1\nmode: enforcing\nmx: mx.example.test\nmax_age: 86400\n")
    assert server.reload() == (False, True)
    assert (await server.handle(make_mocked_request("GET", POLICY_PATH))).body == ENFORCE
    [error] = [r for r in records if r.levelno == logging.ERROR]
    assert error.getMessage() == "reload: policy not replaced; still serving the previous one"
    assert "mode must be enforce, testing or none" in error.error


def test_reload_keeps_the_old_certificate_when_the_new_one_is_bad(server, files: dict[str, Path], ca: TestCA,
                                                                  records) -> None:
    before = server.certificate
    cert, _ = ca.issue(["mta-sts.other.test"])  # same key, wrong name: refused because of --domain
    write_pem(files["cert"], cert)
    assert server.reload() == (True, False)
    assert server.certificate is before
    [error] = [r for r in records if r.levelno == logging.ERROR]
    assert error.getMessage() == "reload: certificate not replaced; still serving the previous one"
    assert "does not cover mta-sts.example.test" in error.error

    cert, _ = ca.issue([HOST])
    write_pem(files["cert"], cert)
    assert server.reload() == (True, True)
    assert server.certificate.serial == _cert(cert).serial_number != before.serial


def test_reload_warns_again_about_weak_settings(server, files: dict[str, Path], records) -> None:
    files["policy"].write_bytes(b"version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 86400\n")
    assert server.reload()[0] is True
    assert any(r.levelno == logging.WARNING and r.getMessage().startswith("mode testing") for r in records)


# --------------------------------------------------------------------------- start-up checks
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"listen": ("unix:/run/x.sock",)}, r"HOST:PORT or \[IPv6\]:PORT only"),
        ({"listen": ("127.0.0.1",)}, "no port"),
        ({"domains": ("mta-sts.example.test",)}, "not the policy host"),
        ({"domains": ("other.test",)}, "does not cover mta-sts.other.test"),
    ],
)
def test_prepare_refuses(files: dict[str, Path], change: dict, reason: str) -> None:
    settings = ServeSettings(str(files["policy"]), str(files["cert"]), str(files["key"]), **change)
    with pytest.raises(ConfigError, match=reason):
        prepare(settings)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "mxsec: serve-policy: missing option '--policy', '--policy-dir' or '--sites' (see --help)"),
        (["--policy", "p", "--cert", "c"], "mxsec: serve-policy: missing option '--key' (see --help)"),
        (["--policy", "p", "--cert", "c", "--key", "k", "--connection-timeout", "0"], None),
        (["--bogus"], "mxsec: serve-policy: no such option '--bogus' (see --help)"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], message: str | None) -> None:
    from mxsec.cli import main

    result = CliRunner().invoke(main, ["serve-policy", *args])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    if message is not None:
        assert lines[0] == message
    else:
        assert lines[0].startswith("mxsec: serve-policy: invalid value for '--connection-timeout'")


def test_metrics_with_one_certificate_name_each_host_and_its_expiry(server) -> None:
    from mxsec.serve_policy.metrics import ServePolicyCollector

    server.responses[200] += 3
    server.refused = 2
    families = {f.name: f for f in ServePolicyCollector(server).collect()}
    assert families["mxsec_serve_policy_hosts"].samples[0].value == 1
    [expiry] = families["mxsec_serve_policy_certificate_not_after_seconds"].samples
    assert expiry.labels == {"host": HOST} and expiry.value == server.certificate.not_after.timestamp()
    assert [(s.labels, s.value) for s in families["mxsec_serve_policy_responses"].samples
            if s.name.endswith("_total")] == [({"status": "200"}, 3)]
    assert families["mxsec_serve_policy_refused_connections"].samples[0].value == 2
    assert "mxsec_serve_policy_acme_orders" not in families  # no ACME, no ACME series
