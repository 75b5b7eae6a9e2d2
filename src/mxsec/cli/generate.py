"""``mxsec generate``: records, policies and policy-host configuration (docs/generate.md).

::

    mxsec generate sts-policy --mode MODE --mx PATTERN... --max-age SECONDS [--lf]
    mxsec generate sts-txt [--id ID] [--name DOMAIN]
    mxsec generate tlsa --cert PEMFILE --host MXHOST [--usage 3 --selector 1 --mtype 1] [--port 25] [--index N]
    mxsec generate tlsrpt --rua URI... [--name DOMAIN]
    mxsec generate dkim --selector SEL --domain DOMAIN (--out FILE [--algorithm rsa|ed25519] [--bits N] | --key FILE)
                        [--service tlsrpt]
    mxsec generate nginx  --domain DOMAIN --policy-file PATH [--cert PATH --key PATH]
    mxsec generate apache --domain DOMAIN --policy-file PATH [--cert PATH --key PATH]

stdout holds only the generated text; advice goes to stderr as ``mxsec: warning: ...``. Every error, usage
errors included, is one line on stderr with exit status 2.
"""

from __future__ import annotations

import os
import sys
import time

import click

from mxsec.cli.common import OneLineGroup, _guarded

__all__ = ["generate"]



def _warn(warnings) -> None:
    for warning in warnings:
        click.echo(f"mxsec: warning: {warning}", err=True)


@click.group(cls=OneLineGroup)
def generate() -> None:
    """Generate MTA-STS, TLSA, TLSRPT and DKIM records and policies, and policy-host web server configuration.

    Output goes to stdout and always parses with mxsec's own parsers; advice goes to stderr.
    """


@generate.command("sts-policy")
@click.option("--mode", required=True, metavar="MODE", help="enforce, testing or none.")
@click.option("--mx", "mx", multiple=True, metavar="PATTERN",
              help="MX host name, or *.domain for any one label under it (repeat for each pattern).")
@click.option("--max-age", required=True, metavar="SECONDS",
              help="Policy lifetime in senders' caches, 0 to 31557600 (one week = 604800).")
@click.option("--lf", is_flag=True, help="End lines with LF instead of CRLF.")
@_guarded
def sts_policy(mode, mx, max_age, lf):
    """The MTA-STS policy file (serve it as https://mta-sts.DOMAIN/.well-known/mta-sts.txt)."""
    from mxsec.generate import sts_policy as make

    result = make(mode, mx, max_age, newline="\n" if lf else "\r\n")
    _warn(result.warnings)
    click.echo(result.text, nl=False)


@generate.command("sts-txt")
@click.option("--id", "policy_id", metavar="ID",
              help="Policy id, 1-32 letters and digits (default: the UTC time, e.g. 20261124T101500Z).")
@click.option("--name", metavar="DOMAIN", help='Print the zone-file line _mta-sts.DOMAIN. IN TXT "...".')
@_guarded
def sts_txt(policy_id, name):
    """The _mta-sts TXT record: v=STSv1; id=... (change the id whenever the policy changes)."""
    from mxsec.generate import sts_txt as make

    click.echo(make(policy_id, now=time.time(), name=name))


@generate.command("tlsa")
@click.option("--cert", "cert_path", required=True, metavar="PEMFILE",
              help="The MX's certificate, or its chain leaf first (PEM; DER accepted; - for stdin).")
@click.option("--host", required=True, metavar="MXHOST", help="The MX host name (the TLSA base domain).")
@click.option("--usage", type=click.IntRange(0, 3), default=3, show_default=True,
              help="3 DANE-EE (the server's key), 2 DANE-TA (the issuing CA).")
@click.option("--selector", type=click.IntRange(0, 1), default=1, show_default=True,
              help="1 the public key (SPKI), 0 the whole certificate.")
@click.option("--mtype", type=click.IntRange(0, 2), default=1, show_default=True,
              help="1 SHA2-256, 2 SHA2-512, 0 the full data.")
@click.option("--port", type=click.IntRange(1, 65535), default=25, show_default=True, help="TCP port.")
@click.option("--index", type=click.IntRange(min=0), metavar="N",
              help="Which certificate of the file (0 = first). Default: first for usage 3, last for usage 2.")
@_guarded
def tlsa(cert_path, host, usage, selector, mtype, port, index):
    """The TLSA record for an MX: _25._tcp.MXHOST. IN TLSA 3 1 1 <hex>."""
    from mxsec.generate import MAX_CERT_FILE_BYTES
    from mxsec.generate import tlsa as make

    if cert_path == "-":
        data, source = sys.stdin.buffer.read(MAX_CERT_FILE_BYTES + 1), "stdin"
    else:
        with open(cert_path, "rb") as handle:
            data = handle.read(MAX_CERT_FILE_BYTES + 1)
        source = cert_path
    result = make(data, host, usage=usage, selector=selector, mtype=mtype, port=port, index=index, source=source)
    _warn(result.warnings)
    click.echo(result.line)


@generate.command("tlsrpt")
@click.option("--rua", multiple=True, required=True, metavar="URI",
              help="Where reports go: mailto:ADDRESS or https://URL (repeat, or separate with commas).")
@click.option("--name", metavar="DOMAIN", help='Print the zone-file line _smtp._tls.DOMAIN. IN TXT "...".')
@_guarded
def tlsrpt(rua, name):
    """The _smtp._tls TXT record: v=TLSRPTv1; rua=..."""
    from mxsec.generate import tlsrpt as make

    result = make(rua, name=name)
    _warn(result.warnings)
    click.echo(result.text)


@generate.command("dkim")
@click.option("--selector", required=True, metavar="SEL",
              help="The DKIM selector: the record goes at SEL._domainkey.DOMAIN.")
@click.option("--domain", required=True, metavar="DOMAIN",
              help="The signing domain (d=), the reports' submitter domain.")
@click.option("--algorithm", type=click.Choice(["rsa", "ed25519"]), metavar="rsa|ed25519",
              help="Type of the new key (default rsa; ed25519 is RFC 8463, not yet verified everywhere).")
@click.option("--bits", type=click.IntRange(1024, 4096), metavar="BITS",
              help="Size of a new RSA key, 1024 to 4096 (default 2048).")
@click.option("--key", "key_path", metavar="FILE",
              help="An existing private key (PEM): print its record and write nothing (- for stdin).")
@click.option("--out", "out_path", metavar="FILE",
              help="Where the new private key goes (PEM, mode 0600; an existing file is never overwritten).")
@click.option("--service", default="tlsrpt", show_default=True, metavar="LIST",
              help="The record's s= service types: tlsrpt (reports only), '*' or email:tlsrpt (any mail), "
                   "'' to leave s= out.")
@_guarded
def dkim(selector, domain, algorithm, bits, key_path, out_path, service):
    """A DKIM key for signing TLS reports, and its _domainkey TXT record (RFC 8460 §3)."""
    from mxsec.generate import GenerateError, zone_txt_line
    from mxsec.tlsrpt.dkim_sign import (
        DEFAULT_RSA_BITS,
        MAX_KEY_FILE_BYTES,
        generate_key,
        key_owner,
        key_record,
        load_signing_key,
        normalize_service,
    )

    owner = key_owner(selector, domain)
    normalize_service(service)  # a bad --service fails before a key is made
    if key_path is not None:
        if out_path is not None:
            raise GenerateError("--out is for a new key; with --key nothing is written", code="bad-parameter")
        if key_path == "-":
            data, source = sys.stdin.buffer.read(MAX_KEY_FILE_BYTES + 1), "stdin"
        else:
            with open(key_path, "rb") as handle:
                data = handle.read(MAX_KEY_FILE_BYTES + 1)
            source = key_path
        key = load_signing_key(data, source=source)
        if algorithm is not None and algorithm != key.key_type:
            raise GenerateError(f"{source} holds a key of type {key.key_type}, not {algorithm}", code="bad-parameter")
        if bits is not None and key.key_type != "rsa":
            raise GenerateError(f"--bits is for RSA keys; {source} holds an Ed25519 key", code="bad-parameter")
        if bits is not None and bits != key.bits:
            raise GenerateError(f"{source} holds a {key.bits}-bit RSA key, not {bits}", code="bad-parameter")
        record = key_record(key, service=service)
    else:
        if out_path is None or out_path == "-":
            raise GenerateError(
                "give --out FILE for the new private key (it is never printed), or --key FILE for an existing one",
                code="no-out",
            )
        kind = algorithm or "rsa"
        if kind == "ed25519" and bits is not None:
            raise GenerateError("--bits is for RSA keys; an Ed25519 key has no size to choose", code="bad-parameter")
        if os.path.lexists(out_path):
            raise GenerateError(f"--out {out_path} exists; not overwriting it", code="out-exists")
        pem = generate_key(kind, bits or DEFAULT_RSA_BITS)
        key = load_signing_key(pem, source="the new key")
        record = key_record(key, service=service)
        _write_private(out_path, pem)
    _warn(key.warnings)
    click.echo(zone_txt_line(owner, record))


def _write_private(path: str, pem: bytes) -> None:
    """Create *path* with mode 0600 (never an existing file, nor through a symlink) and write the key."""
    from mxsec.generate import GenerateError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise GenerateError(f"--out {path} exists; not overwriting it", code="out-exists") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask
            handle.write(pem)
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def _host_options(fn):
    options = [
        click.option("--domain", required=True, metavar="DOMAIN", help="The policy domain (serves mta-sts.DOMAIN)."),
        click.option("--policy-file", required=True, metavar="PATH",
                     help="Absolute path of the policy file on the web server."),
        click.option("--cert", "cert_file", metavar="PATH",
                     help="Certificate chain (default /etc/letsencrypt/live/mta-sts.DOMAIN/fullchain.pem)."),
        click.option("--key", "key_file", metavar="PATH",
                     help="Private key (default /etc/letsencrypt/live/mta-sts.DOMAIN/privkey.pem)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@generate.command("nginx")
@_host_options
@_guarded
def nginx(domain, policy_file, cert_file, key_file):
    """An nginx server block for mta-sts.DOMAIN serving only the policy."""
    from mxsec.generate import nginx_config

    click.echo(nginx_config(domain, policy_file, cert_file=cert_file, key_file=key_file), nl=False)


@generate.command("apache")
@_host_options
@_guarded
def apache(domain, policy_file, cert_file, key_file):
    """An Apache VirtualHost for mta-sts.DOMAIN serving only the policy."""
    from mxsec.generate import apache_config

    click.echo(apache_config(domain, policy_file, cert_file=cert_file, key_file=key_file), nl=False)
