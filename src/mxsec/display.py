"""Text from the network, made safe to show: DNS answers, HTTP and SMTP replies, report contents and server
messages are never written raw to a terminal or a page."""

from __future__ import annotations

import re

__all__ = ["safe_text"]

#: C0 and C1 control characters, DEL, and the Unicode format characters that reorder or hide text
#: (bidirectional overrides and isolates, zero-width characters): never written raw to a terminal or a page
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def safe_text(text: object) -> str:
    """``text`` with every control or invisible formatting character written as an escape (``\\x1b``,
    ``\\u202e``), so content from the network cannot drive the terminal or hide in a report. JSON output needs
    no such care (``json.dumps`` escapes control characters itself)."""
    return _UNSAFE.sub(_escape, str(text))


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
