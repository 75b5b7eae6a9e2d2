"""What every ``mxsec`` command shares: one-line failures, the error guard, the network options, config loading.

Kept apart from :mod:`mxsec.cli` so command modules (``cli_check``, ``cli_dane``, ...) can import it in any order.
"""

from __future__ import annotations

import functools
import sys

import click

from mxsec.errors import MxsecError


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"mxsec: {message}", err=True)
    sys.exit(code)


def _guarded(fn):
    """Turn our own errors (and stray OS errors) into one line on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MxsecError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper


def network_options(fn):
    """Options shared by every command that touches the network (docs/configuration.md, "Command-line flags")."""
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="TOML file (default /etc/mxsec/mxsec.toml if present); a postfix-mta-sts-resolver "
                          "YAML file is accepted too."),
        click.option("--nameserver", "nameservers", multiple=True, metavar="IP[:PORT]",
                     help="Validating resolver to query instead of /etc/resolv.conf (repeatable)."),
        click.option("--ca-file", type=click.Path(dir_okay=False),
                     help="PEM trust roots replacing the system store (policy fetch, SMTP checks)."),
        click.option("--timeout", type=click.FloatRange(min=0.1), help="Per-operation time limit, seconds."),
        click.option("--allow-address", "allow_addresses", multiple=True, metavar="CIDR",
                     help="Let policy hosts/MXes in this range be contacted although loopback/private "
                          "(repeatable)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _load(config_path, **overrides):
    from mxsec.config import apply_overrides, load_config

    config = load_config(config_path)
    clean = {k: v for k, v in overrides.items() if v not in (None, (), [])}
    for key in ("nameservers", "allow_addresses", "listen"):
        if key in clean:
            clean[key] = list(clean[key])
    return apply_overrides(config, **clean), clean
