"""``mxsec serve-policy``: the built-in HTTPS host for an MTA-STS policy (docs/generate.md).

::

    mxsec serve-policy --policy FILE --cert PEM --key PEM [--listen HOST:PORT]... [--domain DOMAIN]...
    mxsec serve-policy (--policy FILE --domain D... | --policy-dir DIR | --sites FILE)
                       --acme-directory URL [--acme-email ADDR] [--acme-http-listen HOST:PORT]...

Every error, usage errors included, is one line on stderr with exit status 2; the server's own output is the
structured log on stderr.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import signal

import click

from mxsec.cli.common import OneLineCommand, _guarded, one_line_usage, refuse_without

__all__ = ["serve_policy"]


def _read_secret(path: str) -> str:
    from mxsec.errors import ConfigError

    try:
        with open(path, encoding="ascii") as handle:
            value = handle.read(4097).strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"cannot read --acme-eab-hmac-key-file {path}: {reason}") from None
    if not value or len(value) > 4096 or any(c.isspace() for c in value):
        raise ConfigError(f"--acme-eab-hmac-key-file {path} must hold one base64url MAC key")
    return value


def _days(value: float | None) -> _dt.timedelta | None:
    return None if value is None else _dt.timedelta(days=value)


@click.command("serve-policy", cls=OneLineCommand)
@click.option("--policy", "policy_path", metavar="FILE",
              help="One policy file, served byte for byte as /.well-known/mta-sts.txt for every --domain.")
@click.option("--policy-dir", metavar="DIR",
              help="Many domains: one policy file per domain, DIR/<domain>.txt.")
@click.option("--sites", "sites_path", metavar="FILE",
              help="Many domains: a TOML template (mode, max_age) with each domain's MX list.")
@click.option("--cert", "cert_path", metavar="PEM",
              help="Certificate chain for mta-sts.DOMAIN, leaf first (e.g. Let's Encrypt fullchain.pem).")
@click.option("--key", "key_path", metavar="PEM", help="Its private key (unencrypted PEM).")
@click.option("--acme-directory", metavar="URL",
              help="Obtain and renew a certificate for every mta-sts.DOMAIN from this ACME server instead of "
                   "--cert/--key (e.g. https://acme-v02.api.letsencrypt.org/directory).")
@click.option("--acme-email", metavar="ADDR", help="Contact address of the ACME account (expiry notices).")
@click.option("--acme-state", metavar="DIR",
              help="Where the ACME account, keys and certificates are kept (default: STATE_DIR/acme, mode 0700).")
@click.option("--acme-ca-bundle", metavar="PEM",
              help="CA certificates that verify the ACME server's own HTTPS (default: the system's).")
@click.option("--acme-http-listen", "http_listen", multiple=True, metavar="HOST:PORT",
              help="Also listen for plain HTTP here (port 80) to answer ACME HTTP-01 challenges (repeatable).")
@click.option("--acme-challenge", "challenges", multiple=True, type=click.Choice(["tls-alpn-01", "http-01"]),
              help="Challenge types to use, in order of preference (default: tls-alpn-01 on the HTTPS port, "
                   "then http-01 when --acme-http-listen is given).")
@click.option("--acme-renew-before", type=click.FloatRange(min=0.0), default=None, metavar="DAYS",
              help="Renew this many days before expiry (default: when a third of the lifetime remains).")
@click.option("--acme-retry", type=click.FloatRange(min=1.0), default=60.0, show_default=True, metavar="SECONDS",
              help="First wait after a failed order; it doubles after each failure, up to 6 hours.")
@click.option("--acme-eab-kid", metavar="KID",
              help="External Account Binding key id, for CAs that require one (ZeroSSL, Google, many private CAs).")
@click.option("--acme-eab-hmac-key-file", metavar="FILE",
              help="File holding the External Account Binding's MAC key (base64url), read at start.")
@click.option("--listen", multiple=True, metavar="HOST:PORT",
              help="Address to listen on, HOST:PORT or [IPv6]:PORT (repeatable; default 0.0.0.0:443 and [::]:443).")
@click.option("--domain", "domains", multiple=True, metavar="DOMAIN",
              help="Policy domain: serve mta-sts.DOMAIN (repeatable); with --cert, refuse to start unless the "
                   "certificate covers it.")
@click.option("--connection-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              metavar="SECONDS", help="Close any connection this long after its TLS handshake.")
@click.option("--metrics-listen", metavar="HOST:PORT",
              help="Serve Prometheus metrics on http://HOST:PORT/metrics (no authentication: bind it to loopback).")
@click.option("--reuse-port", is_flag=True,
              help="Set SO_REUSEPORT on the listeners: a new serve-policy can start before the old one stops, and "
                   "another server on the wildcard address may share the port (same user only).")
@click.option("--handshake-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              metavar="SECONDS", help="Close a connection whose TLS handshake has not finished this long after accept.")
@click.option("--max-connections", type=click.IntRange(min=1), default=512, show_default=True,
              metavar="N", help="Connections served at once; beyond that, new ones are closed.")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True,
              help="Log format.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="Log level (info logs one line per request).")
@_guarded
def serve_policy(policy_path, policy_dir, sites_path, cert_path, key_path, acme_directory, acme_email, acme_state,
                 acme_ca_bundle, http_listen, challenges, acme_renew_before, acme_retry, acme_eab_kid,
                 acme_eab_hmac_key_file, listen, domains,
                 connection_timeout, handshake_timeout, metrics_listen, reuse_port, max_connections, log_format,
                 log_level):
    """Serve MTA-STS policies over HTTPS without a web server.

    Answers GET/HEAD /.well-known/mta-sts.txt with the policy of the host asked for (200, text/plain); other
    paths 404, other methods 405. TLS 1.2 and 1.3 only. One policy (--policy), one file per domain
    (--policy-dir) or a template with per-domain MX lists (--sites). Certificates from files (--cert/--key) or
    obtained and renewed by ACME (--acme-directory). SIGHUP reloads policies and certificates (an invalid new
    one is logged and the old one kept); SIGTERM stops.
    """
    # A reload (SIGHUP) that comes while we load must not kill us; the event loop installs the real handler.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from mxsec.logs import setup_logging
    from mxsec.serve_policy import ServeSettings, run
    from mxsec.serve_policy.acme import AcmeOptions

    ctx = click.get_current_context()
    if not (policy_path or policy_dir or sites_path):
        raise one_line_usage(ctx, click.UsageError("missing option '--policy', '--policy-dir' or '--sites'"))
    if bool(cert_path) != bool(key_path):
        raise one_line_usage(ctx, click.UsageError(f"missing option '{'--key' if cert_path else '--cert'}'"))
    if bool(acme_eab_kid) != bool(acme_eab_hmac_key_file):
        raise one_line_usage(ctx, click.UsageError("--acme-eab-kid and --acme-eab-hmac-key-file go together"))
    acme = None
    if acme_directory:
        from mxsec.config.paths import default_state_dir

        eab_key = _read_secret(acme_eab_hmac_key_file) if acme_eab_hmac_key_file else None

        acme = AcmeOptions(
            directory_url=acme_directory,
            state_dir=acme_state or os.path.join(default_state_dir(), "acme"),
            email=acme_email,
            ca_bundle=acme_ca_bundle,
            challenges=tuple(challenges) or ("tls-alpn-01", "http-01"),
            renew_before=_days(acme_renew_before),
            retry_first=acme_retry,
            eab_kid=acme_eab_kid,
            eab_hmac_key=eab_key,
        )
    else:
        refuse_without(ctx, ("acme_email", "acme_state", "acme_ca_bundle", "http_listen", "challenges",
                             "acme_eab_kid", "acme_renew_before"), "--acme-directory")
    settings = ServeSettings(
        policy_path=policy_path,
        cert_path=cert_path,
        key_path=key_path,
        listen=tuple(listen),
        domains=tuple(domains),
        connection_timeout=connection_timeout,
        handshake_timeout=handshake_timeout,
        reuse_port=reuse_port,
        metrics_listen=metrics_listen,
        max_connections=max_connections,
        policy_dir=policy_dir,
        sites_path=sites_path,
        acme=acme,
        http_listen=tuple(http_listen),
    )
    setup_logging(log_level, log_format)
    status = asyncio.run(run(settings))
    if status:
        raise SystemExit(status)
