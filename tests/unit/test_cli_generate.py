"""``mxsec generate``: outputs, exit codes, one-line errors, and the examples in docs/generate.md."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mxsec.cli import main
from mxsec.testing.pki import TestCA, key_to_pem, new_key
from mxsec.sts.policy import parse_policy
from mxsec.sts.record import parse_record as parse_sts_record
from mxsec.tlsrpt.record import parse_record as parse_tlsrpt_record

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
LEAF = str(EXAMPLES / "mx1.example.net.pem")
FULLCHAIN = str(EXAMPLES / "mx1.example.net-fullchain.pem")


def run(*args: str, stdin: bytes | None = None):
    return CliRunner().invoke(main, ["generate", *args], input=stdin)


def ok(*args: str, stdin: bytes | None = None):
    result = run(*args, stdin=stdin)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def fails(*args: str, stdin: bytes | None = None) -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr, no traceback; returns that line."""
    result = run(*args, stdin=stdin)
    assert result.exit_code == 2, (result.output, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mxsec: ")
    assert "Traceback" not in result.stderr
    return lines[0]


# --- sts-policy ----------------------------------------------------------------------------------------------


def test_sts_c_8_cli_policy_is_crlf_on_stdout() -> None:
    result = ok(
        "sts-policy", "--mode", "enforce", "--mx", "mail.example.com", "--mx", "*.example.net", "--max-age", "604800"
    )
    assert result.stdout_bytes == (
        b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n"
    )
    assert result.stderr == ""
    assert parse_policy(result.stdout_bytes).mx == ("mail.example.com", "*.example.net")


def test_sts_c_8_cli_policy_lf() -> None:
    result = ok("sts-policy", "--mode", "testing", "--mx", "mail.example.com", "--max-age", "86400", "--lf")
    assert result.stdout_bytes == b"version: STSv1\nmode: testing\nmx: mail.example.com\nmax_age: 86400\n"


def test_sts_c_3_cli_short_max_age_warns_on_stderr_only() -> None:
    result = ok("sts-policy", "--mode", "enforce", "--mx", "mail.example.com", "--max-age", "3600")
    assert result.stdout_bytes == b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 3600\r\n"
    assert result.stderr.startswith("mxsec: warning: max_age 3600 is under one day")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--mx", "mail.example.com", "--max-age", "1"], "missing option '--mode'"),
        (["--mode", "enforce", "--mx", "mail.example.com"], "missing option '--max-age'"),
        (["--mode", "strict", "--mx", "mail.example.com", "--max-age", "1"], "mode must be enforce, testing or none"),
        (["--mode", "enforce", "--max-age", "86400"], "needs at least one mx pattern"),
        (["--mode", "enforce", "--mx", "mail.example.com", "--max-age", "31557601"], "from 0 to 31557600"),
        (["--mode", "enforce", "--mx", "mail.example.com", "--max-age", "1w"], "whole number of seconds"),
        (["--mode", "enforce", "--mx", "a.*.example.com", "--max-age", "1"], "whole left-most label"),
        (["--mode", "enforce", "--mx", "a.example.com,b.example.com", "--max-age", "1"], "its own --mx"),
        (["--mode", "enforce", "--mx", "mail.example.com", "--max-age", "1", "--bogus"], "no such option"),
        (["--mode"], "requires an argument"),
    ],
)
def test_sts_c_2_cli_policy_errors_are_one_line(args: list[str], needle: str) -> None:
    assert needle in fails("sts-policy", *args).lower()


# --- sts-txt ----------------------------------------------------------------------------------------------------


def test_sts_a_5_cli_txt_default_id() -> None:
    result = ok("sts-txt")
    assert re.fullmatch(r"v=STSv1; id=\d{8}T\d{6}Z\n", result.stdout)
    parse_sts_record(result.stdout.strip())


def test_sts_a_1_cli_txt_with_id_and_name() -> None:
    assert ok("sts-txt", "--id", "abc123").stdout == "v=STSv1; id=abc123\n"
    assert ok("sts-txt", "--id", "abc123", "--name", "Example.COM").stdout == (
        '_mta-sts.example.com. IN TXT "v=STSv1; id=abc123"\n'
    )


@pytest.mark.parametrize(("args", "needle"), [
    (["--id", "a+b="], "only letters and digits"),
    (["--id", "x" * 33], "33 characters"),
    (["--id", ""], "1 to 32"),
    (["--id", "abc", "--name", "192.0.2.1"], "--name"),
])
def test_ec_14_cli_bad_id(args: list[str], needle: str) -> None:
    assert needle in fails("sts-txt", *args)


# --- tlsa --------------------------------------------------------------------------------------------------------


def test_dane_h_12_cli_tlsa_default() -> None:
    result = ok("tlsa", "--cert", LEAF, "--host", "mx1.example.net")
    assert re.fullmatch(r"_25\._tcp\.mx1\.example\.net\. IN TLSA 3 1 1 [0-9A-F]{64}\n", result.stdout)
    assert result.stderr == ""


def test_dane_h_12_cli_tlsa_chain_usage_2_and_index() -> None:
    ta = ok("tlsa", "--cert", FULLCHAIN, "--host", "mx1.example.net", "--usage", "2").stdout
    ee = ok("tlsa", "--cert", FULLCHAIN, "--host", "mx1.example.net").stdout
    leaf = ok("tlsa", "--cert", LEAF, "--host", "mx1.example.net").stdout
    assert ee == leaf and ta.split()[-1] != ee.split()[-1]
    assert ok("tlsa", "--cert", FULLCHAIN, "--host", "mx1.example.net", "--usage", "2", "--index", "0").stdout.split()[
        -1
    ] == ee.split()[-1]
    assert ok("tlsa", "--cert", FULLCHAIN, "--host", "MX1.example.net.", "--port", "465").stdout.startswith(
        "_465._tcp.mx1.example.net. IN TLSA 3 1 1 "
    )


def test_dane_h_12_cli_tlsa_stdin() -> None:
    data = Path(LEAF).read_bytes()
    assert ok("tlsa", "--cert", "-", "--host", "mx1.example.net", stdin=data).stdout == (
        ok("tlsa", "--cert", LEAF, "--host", "mx1.example.net").stdout
    )


def test_dane_h_24_cli_tlsa_warning_on_stderr() -> None:
    result = ok("tlsa", "--cert", LEAF, "--host", "mx1.example.net", "--usage", "1")
    assert result.stdout.startswith("_25._tcp.mx1.example.net. IN TLSA 1 1 1 ")
    assert "not used for SMTP" in result.stderr


def test_tlsa_cli_errors_are_one_line(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_pem = key_to_pem(new_key())
    key_file.write_bytes(key_pem)
    broken = tmp_path / "broken.pem"
    broken.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert "No such file or directory" in fails("tlsa", "--cert", str(tmp_path / "missing.pem"), "--host", "mx.example")
    assert "directory" in fails("tlsa", "--cert", str(tmp_path), "--host", "mx.example").lower()
    line = fails("tlsa", "--cert", str(key_file), "--host", "mx.example")
    assert "no PEM certificate (found: PRIVATE KEY)" in line
    assert key_pem.split(b"\n")[1].decode() not in line
    assert "not a valid certificate" in fails("tlsa", "--cert", str(broken), "--host", "mx.example")
    assert "empty" in fails("tlsa", "--cert", "-", "--host", "mx.example", stdin=b"")
    assert "IP address" in fails("tlsa", "--cert", LEAF, "--host", "192.0.2.1")
    assert "--usage" in fails("tlsa", "--cert", LEAF, "--host", "mx.example", "--usage", "4")
    assert "--selector" in fails("tlsa", "--cert", LEAF, "--host", "mx.example", "--selector", "x")
    assert "--mtype" in fails("tlsa", "--cert", LEAF, "--host", "mx.example", "--mtype", "3")
    assert "--port" in fails("tlsa", "--cert", LEAF, "--host", "mx.example", "--port", "0")
    assert "holds 1 certificate " in fails("tlsa", "--cert", LEAF, "--host", "mx.example", "--index", "1")
    assert "--index" in fails("tlsa", "--cert", LEAF, "--host", "mx.example", "--index", "-1")
    assert "missing option '--host'" in fails("tlsa", "--cert", LEAF)


def test_tlsa_cli_picks_the_issuer_of_a_fresh_chain(tmp_path: Path) -> None:
    root = TestCA("cli root")
    sub = root.intermediate("cli sub")
    leaf, _ = sub.issue(["mx.example.org"], fresh_key=True)
    (tmp_path / "full.pem").write_bytes(leaf + sub.cert_pem)
    (tmp_path / "sub.pem").write_bytes(sub.cert_pem)
    from_chain = ok("tlsa", "--cert", str(tmp_path / "full.pem"), "--host", "mx.example.org", "--usage", "2")
    alone = ok("tlsa", "--cert", str(tmp_path / "sub.pem"), "--host", "mx.example.org", "--usage", "2")
    assert from_chain.stdout == alone.stdout and from_chain.stderr == alone.stderr == ""


# --- tlsrpt ------------------------------------------------------------------------------------------------------


def test_rpt_i_3_cli_tlsrpt() -> None:
    result = ok("tlsrpt", "--rua", "mailto:tlsrpt@example.com", "--rua", "https://r.example.net/x")
    assert result.stdout == "v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://r.example.net/x\n"
    usable = parse_tlsrpt_record(result.stdout.strip()).usable_rua
    assert usable == ("mailto:tlsrpt@example.com", "https://r.example.net/x")
    assert ok("tlsrpt", "--rua", "mailto:tlsrpt@example.com,https://r.example.net/x").stdout == result.stdout


def test_rpt_i_1_cli_tlsrpt_zone_line() -> None:
    assert ok("tlsrpt", "--rua", "mailto:t@example.com", "--name", "example.com").stdout == (
        '_smtp._tls.example.com. IN TXT "v=TLSRPTv1; rua=mailto:t@example.com"\n'
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "missing option '--rua'"),
        (["--rua", "postmaster@example.com"], "did you mean 'mailto:postmaster@example.com'?"),
        (["--rua", "http://r.example.net/"], "use https:"),
        (["--rua", "mailto:"], "no address"),
        (["--rua", "mailto:t@example.com", "--name", "-bad-.example"], "--name"),
    ],
)
def test_rpt_i_3_cli_tlsrpt_errors(args: list[str], needle: str) -> None:
    assert needle in fails("tlsrpt", *args)


# --- dkim --------------------------------------------------------------------------------------------------------

DKIM_OWNER = "tlsrpt2026._domainkey.reporter.example."
RFC8463_KEY = str(EXAMPLES / "dkim-rfc8463.pem")
RFC8463_P = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def _txt_value(line: str) -> str:
    """The record of a zone-file TXT line: its quoted strings joined without spaces, as resolvers do."""
    assert line.startswith(DKIM_OWNER + " IN TXT ") or " IN TXT " in line
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', line))


def _dkim(*args: str, stdin: bytes | None = None):
    return ok("dkim", "--selector", "tlsrpt2026", "--domain", "reporter.example", *args, stdin=stdin)


def _dkim_fails(*args: str, stdin: bytes | None = None) -> str:
    return fails("dkim", "--selector", "tlsrpt2026", "--domain", "reporter.example", *args, stdin=stdin)


def test_rpt_i_16_cli_dkim_new_rsa_key(tmp_path: Path) -> None:
    from mxsec.reports.dkim import verify
    from mxsec.tlsrpt.dkim_sign import key_record, load_signing_key, sign_message

    out = tmp_path / "dkim.pem"
    result = _dkim("--out", str(out))
    assert result.stderr == ""
    line = result.stdout.rstrip("\n")
    assert "\n" not in line and line.startswith(DKIM_OWNER + ' IN TXT "v=DKIM1; k=rsa; s=tlsrpt; p=')
    assert all(len(chunk) <= 255 for chunk in re.findall(r'"([^"]*)"', line)) and line.count('"') == 4
    assert "PRIVATE" not in result.stdout
    assert out.stat().st_mode & 0o777 == 0o600
    pem = out.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = load_signing_key(pem)
    assert (key.key_type, key.bits) == ("rsa", 2048)
    record = _txt_value(line)
    assert record == key_record(key)
    # the printed record verifies what the written key signs (RPT-I-14)
    message = b"From: r@reporter.example\r\nTo: t@example.com\r\nSubject: x\r\n\r\nbody\r\n"
    signed = sign_message(message, key=key, selector="tlsrpt2026", domain="reporter.example", now=1)
    assert verify(signed, lambda name, timeout=5: record.encode()) == ("pass", ("reporter.example",))


def test_rpt_i_16_cli_dkim_new_ed25519_key_and_sizes(tmp_path: Path) -> None:
    result = _dkim("--algorithm", "ed25519", "--out", str(tmp_path / "ed.pem"))
    assert re.fullmatch(re.escape(DKIM_OWNER) + r' IN TXT "v=DKIM1; k=ed25519; s=tlsrpt; p=[A-Za-z0-9+/]{43}="\n',
                        result.stdout)
    big = _dkim("--bits", "3072", "--out", str(tmp_path / "big.pem"), "--service", "*")
    assert '"v=DKIM1; k=rsa; s=*; p=' in big.stdout and big.stdout.count('" "') == 2  # ~590 octets: 3 strings
    small = _dkim("--bits", "1024", "--out", str(tmp_path / "small.pem"))
    assert small.stderr == "mxsec: warning: the new key is a 1024-bit RSA key; RFC 8301 recommends at least 2048 bits\n"
    assert small.stdout.startswith(DKIM_OWNER)


def test_rpt_i_16_cli_dkim_existing_key(tmp_path: Path) -> None:
    result = ok("dkim", "--selector", "brisbane", "--domain", "football.example.com", "--key", RFC8463_KEY)
    assert result.stdout == (
        f'brisbane._domainkey.football.example.com. IN TXT "v=DKIM1; k=ed25519; s=tlsrpt; p={RFC8463_P}"\n'
    )
    stdin = ok("dkim", "--selector", "brisbane", "--domain", "football.example.com", "--key", "-",
               stdin=Path(RFC8463_KEY).read_bytes())
    assert stdin.stdout == result.stdout
    for service, shown in (("*", "s=*; "), ("email:tlsrpt", "s=email:tlsrpt; "), ("", "")):
        line = _dkim("--key", RFC8463_KEY, "--service", service, "--algorithm", "ed25519").stdout
        assert line == f'{DKIM_OWNER} IN TXT "v=DKIM1; k=ed25519; {shown}p={RFC8463_P}"\n'
    assert list(tmp_path.iterdir()) == []


def test_rpt_i_16_cli_dkim_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "dkim.pem"
    out.write_bytes(b"keep me")
    assert "exists; not overwriting it" in _dkim_fails("--out", str(out))
    assert out.read_bytes() == b"keep me"
    link = tmp_path / "link.pem"
    link.symlink_to(tmp_path / "elsewhere.pem")
    assert "exists; not overwriting it" in _dkim_fails("--out", str(link))
    assert not (tmp_path / "elsewhere.pem").exists()


def test_cli_dkim_errors_are_one_line(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_file = tmp_path / "ec.pem"
    ec_file.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    out = str(tmp_path / "new.pem")
    assert "give --out FILE for the new private key (it is never printed)" in _dkim_fails()
    assert "give --out FILE" in _dkim_fails("--out", "-")
    assert "No such file or directory" in _dkim_fails("--key", str(tmp_path / "missing.pem"))
    assert "directory" in _dkim_fails("--key", str(tmp_path)).lower()
    assert "holds no PEM private key (found: CERTIFICATE)" in _dkim_fails("--key", LEAF)
    assert "holds a key of type EC; DKIM signs with RSA or Ed25519" in _dkim_fails("--key", str(ec_file))
    assert "is encrypted" in _dkim_fails("--key", str(encrypted))
    assert "holds no PEM private key" in _dkim_fails("--key", "-", stdin=b"not a key")
    assert "holds a key of type ed25519, not rsa" in _dkim_fails("--key", RFC8463_KEY, "--algorithm", "rsa")
    assert "--bits is for RSA keys" in _dkim_fails("--key", RFC8463_KEY, "--bits", "2048")
    assert "--bits is for RSA keys" in _dkim_fails("--algorithm", "ed25519", "--bits", "2048", "--out", out)
    assert "--out is for a new key" in _dkim_fails("--key", RFC8463_KEY, "--out", out)
    assert "names neither tlsrpt, email nor *" in _dkim_fails("--service", "smtp", "--out", out)
    assert "each service type is" in _dkim_fails("--service", "tls rpt", "--key", RFC8463_KEY)
    assert "--bits" in _dkim_fails("--bits", "512", "--out", out)
    assert "--algorithm" in _dkim_fails("--algorithm", "ecdsa", "--out", out)
    assert "selector 'bad sel'" in fails("dkim", "--selector", "bad sel", "--domain", "reporter.example",
                                         "--out", out)
    assert "IP address" in fails("dkim", "--selector", "s", "--domain", "192.0.2.1", "--out", out)
    assert "missing option '--selector'" in fails("dkim", "--domain", "reporter.example", "--out", out)
    assert "missing option '--domain'" in fails("dkim", "--selector", "s", "--out", out)
    assert not Path(out).exists()  # no failure leaves a key behind


# --- nginx / apache ------------------------------------------------------------------------------------------------


def test_sts_b_1_cli_nginx_and_apache() -> None:
    nginx = ok("nginx", "--domain", "example.org", "--policy-file", "/srv/p.txt", "--cert", "/c.pem", "--key", "/k.pem")
    assert "server_name mta-sts.example.org;" in nginx.stdout and "alias /srv/p.txt;" in nginx.stdout
    assert "ssl_certificate     /c.pem;" in nginx.stdout and "ssl_certificate_key /k.pem;" in nginx.stdout
    apache = ok("apache", "--domain", "example.org", "--policy-file", "/srv/p.txt")
    assert "ServerName mta-sts.example.org" in apache.stdout and "ForceType text/plain" in apache.stdout
    assert nginx.stderr == apache.stderr == ""


def test_sts_b_1_cli_policy_host_errors() -> None:
    for command in ("nginx", "apache"):
        assert "absolute path" in fails(command, "--domain", "example.org", "--policy-file", "p.txt")
        assert "cannot be written safely" in fails(command, "--domain", "example.org", "--policy-file", "/a b")
        assert "--domain" in fails(command, "--domain", "192.0.2.1", "--policy-file", "/p.txt")
        assert "missing option '--policy-file'" in fails(command, "--domain", "example.org")


# --- the group ------------------------------------------------------------------------------------------------------


def test_cli_generate_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["generate", "--help"])
    assert result.exit_code == 0
    for command in ("sts-policy", "sts-txt", "tlsa", "tlsrpt", "dkim", "nginx", "apache"):
        assert command in result.output
        assert CliRunner().invoke(main, ["generate", command, "--help"]).exit_code == 0


def test_cli_generate_unknown_command_is_one_line() -> None:
    assert "no such command 'bogus'" in fails("bogus")


def test_cli_generate_console_script_end_to_end() -> None:
    script = Path(sys.executable).with_name("mxsec")
    if not script.exists():
        pytest.skip("the mxsec console script is not installed next to this Python")
    run_ok = subprocess.run(
        [str(script), "generate", "sts-policy", "--mode", "testing", "--mx", "mx.example.com", "--max-age", "86400"],
        check=False, capture_output=True, timeout=60,
    )
    assert (run_ok.returncode, run_ok.stderr) == (0, b"")
    assert run_ok.stdout == b"version: STSv1\r\nmode: testing\r\nmx: mx.example.com\r\nmax_age: 86400\r\n"
    run_bad = subprocess.run(
        [str(script), "generate", "tlsa", "--cert", "/nonexistent/x.pem", "--host", "mx.example.com"],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert run_bad.returncode == 2 and run_bad.stdout == ""
    assert run_bad.stderr == "mxsec: /nonexistent/x.pem: No such file or directory\n"


# --- docs/generate.md: every console example runs exactly as shown ----------------------------------------------


def _doc_examples() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "generate.md").read_text(encoding="utf-8")
    examples: list[tuple[str, str]] = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.DOTALL):
        command, output = None, []
        for line in block.splitlines():
            if line.startswith("$ "):
                if command is not None:
                    examples.append((command, "".join(o + "\n" for o in output)))
                command, output = line[2:], []
            else:
                output.append(line)
        if command is not None:
            examples.append((command, "".join(o + "\n" for o in output)))
    return examples


DOC_EXAMPLES = _doc_examples()


def test_docs_have_examples_for_every_command() -> None:
    shown = {shlex.split(command)[2] for command, _ in DOC_EXAMPLES}
    assert shown == {"sts-policy", "sts-txt", "tlsa", "tlsrpt", "dkim", "nginx", "apache"}


@pytest.mark.parametrize(("command", "expected"), DOC_EXAMPLES, ids=[c for c, _ in DOC_EXAMPLES])
def test_docs_example_runs_as_shown(command: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)
    assert argv[:2] == ["mxsec", "generate"]
    result = CliRunner().invoke(main, argv[1:])
    assert result.output == expected
    lines = expected.splitlines()
    failed = any(line.startswith("mxsec: ") and not line.startswith("mxsec: warning: ") for line in lines)
    assert result.exit_code == (2 if failed else 0)
