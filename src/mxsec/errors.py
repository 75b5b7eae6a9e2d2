"""Error types shared by every layer."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (whitespace runs folded), or its type's name when it says nothing."""
    return " ".join(str(exc).split()) or type(exc).__name__


class MxsecError(Exception):
    """Base of every error mxsec raises on purpose (as opposed to a bug)."""


class ParseError(MxsecError, ValueError):
    """A parser rejected its input.

    Every parser in the sans-I/O core raises a subclass of this and nothing else, whatever the input.
    ``result_type`` is the RFC 8460 result type a sending MTA would report for this problem, when one applies.
    """

    result_type: str | None = None

    def __init__(self, message: str, *, result_type: str | None = None) -> None:
        super().__init__(message)
        if result_type is not None:
            self.result_type = result_type


class ConfigError(MxsecError):
    """A configuration file or option is unusable; the message is one line for the user."""
