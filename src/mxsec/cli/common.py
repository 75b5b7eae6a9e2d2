"""What every ``mxsec`` command shares: one-line failures, the error guard, the network options, config loading.

Kept apart from :mod:`mxsec.cli` so command modules (``cli_check``, ``cli_dane``, ...) can import it in any order.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any, NoReturn, overload

import click

from mxsec.errors import MxsecError


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"mxsec: {message}", err=True)
    sys.exit(code)


@overload
def error_line(exc: MxsecError | OSError) -> str: ...
@overload
def error_line(exc: BaseException) -> str | None: ...
def error_line(exc: BaseException) -> str | None:
    """The one line said for one of our own errors or a stray OS error; ``None`` for anything else."""
    if isinstance(exc, MxsecError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"
    return None


def _guarded(fn):
    """Turn our own errors (and stray OS errors) into one line on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (MxsecError, OSError) as exc:
            _fail(error_line(exc))
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


class LazyCommands(MutableMapping):
    """A click group's ``commands`` whose entries may be given as (module, attribute): the module is imported the
    first time the command is looked up (running, or listing it in ``--help``). ``mxsec reports ingest`` then
    imports the reports modules only, not the lab's DNS machinery or the daemon's. *then* (optional) is called
    once with the command when it is loaded (to register a sub-command on a group, say)."""

    def __init__(self, loaded: MutableMapping[str, Any] | None = None) -> None:
        self._loaded: dict[str, Any] = dict(loaded or {})
        self._lazy: dict[str, tuple[str, str, Callable[[Any], None] | None]] = {}

    def lazy(self, name: str, module: str, attribute: str, then: Callable[[Any], None] | None = None) -> None:
        if name not in self._loaded:
            self._lazy[name] = (module, attribute, then)

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            module, attribute, then = self._lazy[name]
            command = getattr(importlib.import_module(module), attribute)
            del self._lazy[name]
            self._loaded[name] = command
            if then is not None:
                then(command)
        return self._loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._lazy.pop(name, None)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name in self._lazy:
            del self._lazy[name]
        else:
            del self._loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in self._loaded or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter([*self._loaded, *self._lazy])

    def __len__(self) -> int:
        return len(self._loaded) + len(self._lazy)


def lazy_commands(group: Any) -> LazyCommands:
    """*group*'s ``commands`` as a :class:`LazyCommands` (converted in place the first time)."""
    if not isinstance(group.commands, LazyCommands):
        group.commands = LazyCommands(group.commands)
    return group.commands


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line, ``mxsec: generate tlsa: missing option '--cert' (see --help)`` (exit 2,
    no usage block)."""

    def show(self, file: Any = None) -> None:
        click.echo(f"mxsec: {self.format_message()}", err=True)


def one_line_usage(ctx: click.Context, exc: click.UsageError) -> OneLineUsageError:
    """``exc`` as a :class:`OneLineUsageError` that names the command path below ``mxsec``."""
    names: list[str] = []
    context: click.Context | None = ctx
    while context is not None:
        names.append(context.info_name or "")
        context = context.parent
    if len(names) > 1:
        names.pop()  # the root, "mxsec", is said once at the front
    message = exc.format_message().rstrip(".")
    message = message[:1].lower() + message[1:]
    return OneLineUsageError(f"{' '.join(reversed(names))}: {message} (see --help)", ctx)


def refuse_without(ctx: click.Context, params: Iterable[str], needed: str) -> None:
    """A one-line usage error for the first of ``params`` given on the command line (``--x needs NEEDED``):
    options that mean something only with another one."""
    options = {param.name: param.opts[0] for param in ctx.command.params}
    for param in params:
        if ctx.get_parameter_source(param) is click.core.ParameterSource.COMMANDLINE:
            raise one_line_usage(ctx, click.UsageError(f"{options[param]} needs {needed}"))


class OneLineCommand(click.Command):
    """A command whose usage errors are one line (:func:`one_line_usage`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except OneLineUsageError:
            raise
        except click.UsageError as exc:
            raise one_line_usage(ctx, exc) from None


class OneLineGroup(click.Group):
    """A group whose unknown sub-commands, and whose commands' usage errors, are one line."""

    command_class = OneLineCommand

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                            list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except OneLineUsageError:
            raise
        except click.UsageError as exc:
            raise one_line_usage(ctx, exc) from None


def smtp_probe_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--no-smtp``, ``--smtp-port`` (hidden: labs and tests) and ``--smtp-timeout``, for the commands that
    probe MX hosts with STARTTLS (``check``, ``advise``)."""
    for option in reversed((
        click.option("--no-smtp", is_flag=True,
                     help="Skip the STARTTLS probes of the MX hosts (DNS and HTTPS only)."),
        click.option("--smtp-port", default=25, show_default=True, type=click.IntRange(1, 65535), hidden=True,
                     help="SMTP port of the MX hosts (for labs and tests)."),
        click.option("--smtp-timeout", default=15.0, show_default=True, type=click.FloatRange(min=0.1),
                     help="Time limit of each SMTP step, seconds."),
    )):
        fn = option(fn)
    return fn
