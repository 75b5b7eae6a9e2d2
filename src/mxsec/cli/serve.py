"""``mxsec serve-policy``: the built-in HTTPS host for an MTA-STS policy (docs/generate.md).

::

    mxsec serve-policy --policy FILE --cert PEM --key PEM [--listen HOST:PORT]... [--domain DOMAIN]...

Every error, usage errors included, is one line on stderr with exit status 2; the server's own output is the
structured log on stderr.
"""

from __future__ import annotations

import asyncio
import signal

import click

from mxsec.cli.common import OneLineCommand, _guarded

__all__ = ["serve_policy"]


@click.command("serve-policy", cls=OneLineCommand)
@click.option("--policy", "policy_path", required=True, metavar="FILE",
              help="The policy file, served byte for byte as /.well-known/mta-sts.txt (checked at start).")
@click.option("--cert", "cert_path", required=True, metavar="PEM",
              help="Certificate chain for mta-sts.DOMAIN, leaf first (e.g. Let's Encrypt fullchain.pem).")
@click.option("--key", "key_path", required=True, metavar="PEM", help="Its private key (unencrypted PEM).")
@click.option("--listen", multiple=True, metavar="HOST:PORT",
              help="Address to listen on, HOST:PORT or [IPv6]:PORT (repeatable; default 0.0.0.0:443 and [::]:443).")
@click.option("--domain", "domains", multiple=True, metavar="DOMAIN",
              help="Policy domain: refuse to start unless the certificate covers mta-sts.DOMAIN (repeatable).")
@click.option("--connection-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              metavar="SECONDS", help="Close any connection this long after its TLS handshake.")
@click.option("--max-connections", type=click.IntRange(min=1), default=512, show_default=True,
              metavar="N", help="Connections served at once; beyond that, new ones are closed.")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True,
              help="Log format.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="Log level (info logs one line per request).")
@_guarded
def serve_policy(policy_path, cert_path, key_path, listen, domains, connection_timeout, max_connections, log_format,
                 log_level):
    """Serve an MTA-STS policy over HTTPS without a web server.

    Answers GET/HEAD /.well-known/mta-sts.txt with the policy (200, text/plain); other paths 404, other
    methods 405. TLS 1.2 and 1.3 only. SIGHUP reloads the policy and the certificate (an invalid new one is
    logged and the old one kept); SIGTERM stops.
    """
    # A reload (SIGHUP) that comes while we load must not kill us; the event loop installs the real handler.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from mxsec.logs import setup_logging
    from mxsec.serve_policy import ServeSettings, run

    settings = ServeSettings(
        policy_path=policy_path,
        cert_path=cert_path,
        key_path=key_path,
        listen=tuple(listen),
        domains=tuple(domains),
        connection_timeout=connection_timeout,
        max_connections=max_connections,
    )
    setup_logging(log_level, log_format)
    status = asyncio.run(run(settings))
    if status:
        raise SystemExit(status)
