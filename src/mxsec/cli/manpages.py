"""Man pages written from the click command tree itself, so they say what ``--help`` says.

``python -m mxsec.cli.manpages OUTDIR`` (or ``make man``) writes ``mxsec.1`` (the command groups with one line
each, exit status, files, environment) and one page per top-level command or group, ``mxsec-daemon.1``,
``mxsec-reports.1`` ..., where a group has a section per sub-command. Every option appears with the help text and
default ``--help`` shows (click's own help records). The pages carry no date unless ``SOURCE_DATE_EPOCH`` is set,
so two runs write the same bytes.
"""

from __future__ import annotations

import inspect
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import click

from mxsec import __version__

SECTION = "1"
MANUAL = "mxsec manual"

#: Exit statuses shared by every command (docs/configuration.md, "Exit status").
EXIT_STATUS = (
    ("0", "Success."),
    ("1", "The command ran and found problems (mxsec check found an error, mxsec reports ingest rejected an "
          "input, a lab row differed from its expectation, ...)."),
    ("2", "Usage error or unreadable input (a bad flag, a configuration mistake, an unreadable file): one line on "
          "standard error, no traceback."),
    ("3", "mxsec reports ingest, fetch-imap and summary --fail-on-conflicts only: a report is stored in "
          "conflicting copies and nothing was rejected."),
)

#: Variables read by the code rather than declared on an option (options' own ``envvar`` are added to these).
ENVIRONMENT = (
    ("STATE_DIRECTORY", "Set by systemd (StateDirectory=mxsec): the state directory (caches, counters) instead of "
                        "/var/lib/mxsec."),
    ("XDG_STATE_HOME", "For users other than root: the state directory is $XDG_STATE_HOME/mxsec "
                       "(default ~/.local/state/mxsec)."),
    ("XDG_DATA_HOME", "For users other than root: received reports are kept in $XDG_DATA_HOME/mxsec "
                      "(default ~/.local/share/mxsec)."),
    ("MXSEC_IMAP_PASSWORD", "The IMAP password of mxsec reports fetch-imap when --password-file is not given."),
    ("MXSEC_SMTP_PASSWORD", "The relay's AUTH password of mxsec tlsrpt send --smtp-user."),
    ("MXSEC_LAB_PREFIX", "Default --prefix of the mxsec lab commands (namespace and interface names)."),
    ("MXSEC_LAB_DIR", "Where mxsec lab keeps its state (default /run/mxsec-lab)."),
)


# --- roff escaping -------------------------------------------------------------------------------------------

_SPECIAL = {"\\": "\\e", "-": "\\-", "'": "\\(aq", "`": "\\(ga", '"': "\\(dq"}


def escape(text: str) -> str:
    """*text* as roff text: backslashes, hyphens, quotes and non-ASCII characters as escapes, and a line never
    starting with a control character (``.`` or ``'``) or a space."""
    out = []
    for ch in text:
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ord(ch) > 126 or (ord(ch) < 32 and ch != "\n"):
            out.append(f"\\[u{ord(ch):04X}]" if ord(ch) >= 32 else " ")
        else:
            out.append(ch)
    lines = "".join(out).split("\n")
    return "\n".join("\\&" + line if line.startswith((".", " ")) else line for line in lines)


def _filled(text: str) -> str:
    """A paragraph to fill: its lines joined into one (roff breaks it again), escaped."""
    return escape(" ".join(line.strip() for line in text.splitlines() if line.strip()))


def _option_synopsis(opts: str) -> str:
    """Click's ``-q, --quiet`` / ``--db URL`` / ``--dkim / --no-dkim``: flags bold, metavars italic."""
    words = []
    for word in re.split(r"( |, )", opts):
        if word in (" ", ", ", "/", ""):
            words.append(escape(word))
        elif word.startswith("-"):
            words.append(f"\\fB{escape(word)}\\fR")
        else:
            words.append(f"\\fI{escape(word)}\\fR")
    return "".join(words)


def help_paragraphs(text: str | None) -> str:
    """Click help text (docstring) as roff: ``\\f`` ends it, paragraphs become ``.PP``, a paragraph that starts
    with click's ``\\b`` line keeps its lines (``.nf``)."""
    text = inspect.cleandoc(text or "").split("\f")[0]
    blocks = []
    for paragraph in re.split(r"\n\s*\n", text):
        if not paragraph.strip():
            continue
        lines = paragraph.splitlines()
        if lines[0].strip() == "\b":
            body = "\n".join(escape(line.rstrip()) or "\\&" for line in lines[1:])
            blocks.append(f".PP\n.nf\n{body}\n.fi")
        else:
            blocks.append(f".PP\n{_filled(paragraph)}")
    return "\n".join(blocks)


# --- the command tree ------------------------------------------------------------------------------------------

def root_context(root: click.Command, name: str = "mxsec") -> click.Context:
    return click.Context(root, info_name=name, **root.context_settings)


def sub_commands(ctx: click.Context) -> Iterator[tuple[click.Command, click.Context]]:
    """The visible sub-commands of the group in *ctx*, sorted by name, each with its own context."""
    group = ctx.command
    if not isinstance(group, click.Group):
        return
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        yield command, click.Context(command, info_name=name, parent=ctx, **command.context_settings)


def help_records(ctx: click.Context) -> list[tuple[str, str]]:
    """The (flags, help) rows ``--help`` prints for the command in *ctx* (default, env var, required included)."""
    rows = []
    for param in ctx.command.get_params(ctx):
        if not isinstance(param, click.Option):
            continue
        if "--help" in param.opts and param.is_eager and not param.expose_value:
            # click keeps a command's help option once made, with the names of the context it was first made
            # in (``mxsec lab`` run on its own has no ``-h``): the row is written from this context instead
            if ctx.help_option_names:
                rows.append((", ".join(ctx.help_option_names), "Show this message and exit."))
            continue
        record = param.get_help_record(ctx)
        if record is not None:
            rows.append(record)
    return rows


def short_help(command: click.Command) -> str:
    return command.get_short_help_str(limit=10_000).rstrip(".")


def page_name(ctx: click.Context) -> str:
    return ctx.command_path.replace(" ", "-")


# --- page parts ----------------------------------------------------------------------------------------------

def _date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch:
        return ""
    try:
        return time.strftime("%Y-%m-%d", time.gmtime(int(epoch)))
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds") from exc


def _header(name: str, summary: str) -> str:
    title = name.upper().replace('"', "")
    return "\n".join([
        '.\\" Written by mxsec.cli.manpages from the command line\'s own help; do not edit.',
        f'.TH {escape(title)} {SECTION} "{_date()}" "mxsec {escape(__version__)}" "{MANUAL}"',
        ".nh",
        ".ad l",
        ".SH NAME",
        f"{escape(name)} \\- {_filled(summary)}",
    ])


def _synopsis(ctx: click.Context) -> str:
    pieces = ctx.command.collect_usage_pieces(ctx)
    return f".B {escape(ctx.command_path)}\n{escape(' '.join(pieces))}"


def _options(ctx: click.Context) -> str:
    rows = []
    for flags, text in help_records(ctx):
        rows.append(f".TP\n{_option_synopsis(flags)}\n{_filled(text) if text.strip() else ''}".rstrip())
    return "\n".join(rows)


def _tagged(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f".TP\n{tag}\n{_filled(text)}" for tag, text in rows)


def _command_section(ctx: click.Context) -> Iterator[str]:
    """A ``.SS`` section for a sub-command (and, for a nested group, one for each of its own)."""
    command = ctx.command
    yield f".SS {escape(ctx.command_path)}"
    yield f".PP\n{_synopsis(ctx)}"
    yield help_paragraphs(command.help)
    options = _options(ctx)
    if options:
        yield options
    for _, sub in sub_commands(ctx):
        yield from _command_section(sub)


def command_page(ctx: click.Context) -> str:
    """The page of one top-level command or group."""
    command = ctx.command
    parts = [_header(page_name(ctx), short_help(command)), ".SH SYNOPSIS"]
    subs = list(sub_commands(ctx))
    if subs:
        parts.append("\n.br\n".join(_synopsis(sub) for _, sub in subs))
    else:
        parts.append(_synopsis(ctx))
    parts += [".SH DESCRIPTION", help_paragraphs(command.help)]
    options = _options(ctx)
    if options:
        parts += [".SH OPTIONS", options]
    if subs:
        parts.append(".SH COMMANDS")
        for _, sub in subs:
            parts.extend(_command_section(sub))
    parts += [
        ".SH EXIT STATUS",
        ".PP",
        escape("0 on success, 1 when the command ran and found problems, 2 on a usage error or unreadable "
               "input; mxsec(1) has the details."),
        ".SH SEE ALSO",
        ".BR mxsec (1)",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def _environment(root: click.Context) -> list[tuple[str, str]]:
    """:data:`ENVIRONMENT` and every option's ``envvar``, with the commands that read it."""
    found: dict[tuple[str, str], list[str]] = {}

    def walk(ctx: click.Context) -> None:
        for param in ctx.command.params:
            if isinstance(param, click.Option) and isinstance(param.envvar, str) and not param.hidden:
                found.setdefault((param.envvar, param.opts[-1]), []).append(ctx.command_path)
        for _, sub in sub_commands(ctx):
            walk(sub)

    walk(root)
    rows = dict(ENVIRONMENT)
    for (name, flag), commands in found.items():
        rows.setdefault(name, f"The value of {flag} when it is not given, for {', '.join(commands)}.")
    return sorted(rows.items())


def main_page(ctx: click.Context) -> str:
    """``mxsec.1``: what mxsec is, its command groups one line each, exit status, files, environment."""
    from mxsec.config.paths import SYSTEM_CONFIG_PATH

    subs = list(sub_commands(ctx))
    summary = (ctx.command.help or "").split("\n")[0]
    summary = summary.split(":", 1)[1].strip() if summary.startswith(f"{ctx.info_name}:") else summary
    summary = summary.rstrip(".")
    parts = [
        _header(page_name(ctx), summary),
        ".SH SYNOPSIS",
        _synopsis(ctx),
        ".SH DESCRIPTION",
        help_paragraphs(ctx.command.help),
        ".PP",
        escape("Each command below has its own page, mxsec-COMMAND(1), with all its options; "
               "mxsec COMMAND --help prints the same."),
        ".SH OPTIONS",
        _options(ctx),
        ".SH COMMANDS",
        _tagged([(f"\\fB{escape(sub.command_path)}\\fR", f"{short_help(sub.command)}. See {page_name(sub)}(1).")
                 for _, sub in subs]),
        ".SH EXIT STATUS",
        _tagged([(f"\\fB{code}\\fR", text) for code, text in EXIT_STATUS]),
        ".SH FILES",
        _tagged([
            (f"\\fI{escape(SYSTEM_CONFIG_PATH)}\\fR",
             "The configuration read when no --config is given, if present (TOML; a postfix-mta-sts-resolver "
             "YAML file is accepted by --config too)."),
            ("\\fI/var/lib/mxsec\\fR",
             "State (policy cache, TLSRPT counters) and received reports when run as root; other users get "
             "~/.local/state/mxsec and ~/.local/share/mxsec."),
        ]),
        ".SH ENVIRONMENT",
        _tagged([(f"\\fB{escape(name)}\\fR", text) for name, text in _environment(ctx)]),
        ".SH SEE ALSO",
        ",\n".join(f".BR {escape(page_name(sub))} ({SECTION})" for _, sub in subs),
        ".PP",
        escape("The Markdown documentation shipped with mxsec (docs/), in particular configuration.md."),
    ]
    return "\n".join(part for part in parts if part) + "\n"


def pages(root: click.Command | None = None, name: str = "mxsec") -> dict[str, str]:
    """Every page as {file name: roff text}: ``mxsec.1`` and one per top-level command or group."""
    if root is None:
        from mxsec.cli.main import main

        root = main
    ctx = root_context(root, name)
    out = {f"{page_name(ctx)}.{SECTION}": main_page(ctx)}
    for _, sub in sub_commands(ctx):
        out[f"{page_name(sub)}.{SECTION}"] = command_page(sub)
    return out


def write_pages(outdir: str | os.PathLike[str], root: click.Command | None = None) -> list[Path]:
    directory = Path(outdir)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in pages(root).items():
        path = directory / filename
        path.write_text(text, encoding="ascii")
        written.append(path)
    return written


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("outdir", type=click.Path(file_okay=False))
def cli(outdir: str) -> None:
    """Write the man pages of mxsec (mxsec.1, mxsec-COMMAND.1) into OUTDIR."""
    from mxsec.cli.common import _fail, error_line

    try:
        for path in write_pages(outdir):
            click.echo(str(path))
    except OSError as exc:
        _fail(error_line(exc))
    except ValueError as exc:
        _fail(str(exc))


if __name__ == "__main__":
    cli(prog_name="python -m mxsec.cli.manpages")
