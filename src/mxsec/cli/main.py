"""The ``mxsec`` command tree. Parses options, calls a front-end, prints.

Exit status (docs/configuration.md, "Exit status"): 0 success; 1 the command ran and found problems; 2 usage
error or unreadable input, with a one-line message on stderr and no traceback.
"""

from __future__ import annotations

import json
import time

import click

from mxsec import __version__
from mxsec.cli.common import _fail, _guarded, _load, network_options
from mxsec.errors import MxsecError


def _use_uvloop() -> None:
    import asyncio

    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mxsec")
def main() -> None:
    """mxsec: MTA-STS, DANE and TLSRPT for both ends of SMTP."""


@main.command()
@click.option("--listen", multiple=True, metavar="ADDR",
              help="HOST:PORT, [IPv6]:PORT or unix:/path (repeatable; default 127.0.0.1:8461).")
@click.option("--cache", "cache", metavar="URL",
              help="sqlite:///path (default), memory://, redis://..., postgresql://...")
@click.option("--metrics-listen", metavar="HOST:PORT", help="Serve Prometheus metrics on /metrics here.")
@click.option("--log-format", type=click.Choice(["json", "text"]), help="Log format (default json).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log level.")
@click.option("--record-policies", is_flag=True, default=None,
              help="Record what is answered per domain in the TLSRPT database (tlsrpt.db), for `mxsec tlsrpt "
                   "follow-log` (config tlsrpt.record_policies).")
@network_options
@_guarded
def daemon(listen, cache, metrics_listen, log_format, log_level, record_policies, config_path, nameservers, ca_file,
           timeout, allow_addresses):
    """Serve TLS policy to Postfix and Exim over socketmap (map names: postfix, QUERY, tlsrpt, QUERYwithTLSRPT,
    exim)."""
    from mxsec.daemon.app import run_daemon
    from mxsec.logs import setup_logging

    config, overrides = _load(
        config_path, listen=listen, cache=cache, nameservers=nameservers, ca_file=ca_file, timeout=timeout,
        allow_addresses=allow_addresses, metrics_listen=metrics_listen, log_format=log_format,
        log_level=log_level,
    )
    if record_policies:
        from dataclasses import replace

        config = replace(config, tlsrpt=replace(config.tlsrpt, record_policies=True))
    setup_logging(config.log.level, config.log.format)
    _use_uvloop()
    import asyncio

    asyncio.run(run_daemon(config, config_path, overrides))


@main.command()
@click.argument("domain")
@click.option("--map", "map_name", default="postfix", show_default=True,
              help="Map name, i.e. reply dialect: postfix, QUERY, tlsrpt, QUERYwithTLSRPT, exim or a configured "
                   "zone.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--cache", "cache", metavar="URL", help="Cache to read and update (default: the daemon's).")
@click.option("--no-cache", is_flag=True, help="Resolve from scratch with an empty in-memory cache.")
@network_options
@_guarded
def query(domain, map_name, as_json, cache, no_cache, config_path, nameservers, ca_file, timeout,
          allow_addresses):
    """Print the reply the daemon would give for DOMAIN, then why."""
    from mxsec.daemon.app import build_service, make_zones
    from mxsec.daemon.replies import format_reply, not_applicable_reply
    from mxsec.daemon.server import NotApplicable, policy_domain_from_key
    from mxsec.errors import ParseError
    from mxsec.storage import MemoryStore, PolicyStore, open_store

    config, _ = _load(config_path, cache=cache, nameservers=nameservers, ca_file=ca_file, timeout=timeout,
                      allow_addresses=allow_addresses)
    zone = make_zones(config).get(map_name)
    if zone is None:
        _fail(f"unknown map name {map_name!r}")
    try:
        policy_domain = policy_domain_from_key(domain)
    except NotApplicable as exc:
        policy_domain = None
        reason = str(exc)
    except ParseError as exc:
        _fail(f"{domain!r} is not a domain name: {exc}")
    except Exception as exc:  # RequestError for malformed brackets
        _fail(f"{domain!r} is not a domain name: {exc}")

    if policy_domain is None:
        reply, verdict = not_applicable_reply(zone), None
    else:
        store: PolicyStore = MemoryStore()
        if not no_cache:
            try:
                store = open_store(config.cache.url)
            except MxsecError:
                if cache:
                    raise
                store = MemoryStore()  # the daemon's cache is not readable by this user: resolve afresh

        async def run():
            service = build_service(config, store=store)
            service.load()
            try:
                return await service.lookup(policy_domain)
            finally:
                await service.fetcher.aclose()
                store.close()

        import asyncio

        verdict = asyncio.run(run())
        reply = format_reply(verdict, zone)

    if as_json:
        click.echo(json.dumps(_query_json(domain, policy_domain, reply, verdict), sort_keys=False))
        return
    click.echo(reply)
    if verdict is None:
        click.echo(f"  why: {reason}; no MTA-STS policy applies")
        return
    for note in verdict.notes:
        click.echo(f"  why: {note}")
    if verdict.failure:
        click.echo(f"  last problem (RFC 8460 result type): {verdict.failure}")


def _query_json(key: str, domain: str | None, reply: str, verdict) -> dict:
    mta_sts = None
    if verdict is not None and verdict.policy is not None:
        p = verdict.policy
        mta_sts = {
            "policy_id": verdict.policy_id,
            "mode": p.mode,
            "max_age": p.max_age,
            "mx": list(p.mx),
            "policy_string": list(p.lines),
            "expires_at": _iso(verdict.expires_at),
            "warnings": list(p.warnings),
        }
    dane = None
    if verdict is not None and verdict.dane is not None:
        d = verdict.dane
        dane = {
            "level": d.level,
            "reason": d.reason,
            "secure_mx": d.secure_mx,
            "hosts": [{"host": h.host, "state": h.state, "detail": h.detail, "base": h.base}
                      for h in d.hosts],
        }
    return {
        "domain": domain if domain is not None else key,
        "reply": reply,
        "mta_sts": mta_sts,
        "dane": dane,
        "source": verdict.source if verdict is not None else "none",
        "failure": verdict.failure.value if verdict is not None and verdict.failure is not None else None,
        "notes": list(verdict.notes) if verdict is not None else [],
    }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@main.command("migrate-config")
@click.argument("yaml_file", type=click.File("r"))
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the TOML here instead of stdout.")
@_guarded
def migrate_config(yaml_file, output):
    """Translate a postfix-mta-sts-resolver YAML config (mta-sts-daemon.yml) into mxsec TOML."""
    from mxsec.config import migrate_config as migrate

    text = migrate(yaml_file.read())
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        click.echo(text, nl=False)


#: the command groups defined in other modules, registered here in one place (no import side effects):
#: (name, module, attribute) of each click command, imported only when the command is looked up (see
#: cli_common.LazyCommands: one command's run does not pay for the imports of all the others);
#: ``reports fetch-imap`` joins the ``reports`` group the same way
COMMANDS = (
    ("lab", "mxsec.cli.lab", "lab"),
    ("dane", "mxsec.cli.dane", "dane"),
    ("generate", "mxsec.cli.generate", "generate"),
    ("check", "mxsec.cli.check", "check"),
    ("advise", "mxsec.cli.advise", "advise"),
    ("serve-policy", "mxsec.cli.serve", "serve_policy"),
    ("reports", "mxsec.cli.reports", "reports"),
    ("tlsrpt", "mxsec.cli.tlsrpt", "tlsrpt"),
)


def _register() -> None:
    from mxsec.cli.common import lazy_commands

    def with_fetch_imap(reports) -> None:
        lazy_commands(reports).lazy("fetch-imap", "mxsec.cli.reports_imap", "fetch_imap")

    commands = lazy_commands(main)
    for name, module, attribute in COMMANDS:
        commands.lazy(name, module, attribute, with_fetch_imap if name == "reports" else None)


_register()

