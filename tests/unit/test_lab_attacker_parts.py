"""Pure parts of the lab's attacker (mxsec.lab.attacker): the STARTTLS stripper's reply rewriting and the
attack target syntax. The attacks themselves run in tests/lab/test_lab_attacker.py."""

from __future__ import annotations

import pytest

from mxsec.lab.attacker import Target, strip_reply
from mxsec.lab.topology import LabError


def test_strip_reply_removes_starttls_from_the_middle() -> None:
    lines = [b"250-mx.example.test\r\n", b"250-STARTTLS\r\n", b"250-8BITMIME\r\n", b"250 HELP\r\n"]
    out, removed = strip_reply(lines)
    assert removed
    assert out == [b"250-mx.example.test\r\n", b"250-8BITMIME\r\n", b"250 HELP\r\n"]


def test_strip_reply_fixes_the_last_line_when_starttls_was_last() -> None:
    out, removed = strip_reply([b"250-mx.example.test\r\n", b"250-PIPELINING\r\n", b"250 starttls\r\n"])
    assert removed
    assert out == [b"250-mx.example.test\r\n", b"250 PIPELINING\r\n"]  # a complete reply again


def test_strip_reply_leaves_other_replies_alone() -> None:
    lines = [b"220 mx.example.test ESMTP\r\n"]
    assert strip_reply(lines) == (lines, False)
    lines = [b"250-mx.example.test\r\n", b"250 STARTTLSX\r\n"]  # not the keyword
    assert strip_reply(lines) == (lines, False)


@pytest.mark.parametrize(("text", "want"), [
    ("203.0.113.10", Target("203.0.113.10")),
    ("203.0.113.10:443", Target("203.0.113.10", 443)),
    ("203.0.113.10=MX1.Example.TEST.", Target("203.0.113.10", None, "mx1.example.test")),
    ("198.51.100.53:53=x.test", Target("198.51.100.53", 53, "x.test")),
])
def test_target_syntax(text: str, want: Target) -> None:
    assert Target.parse(text) == want


@pytest.mark.parametrize("text", ["mx1.example.test", "203.0.113.10:0", "203.0.113.10:99999", "203.0.113:25",
                                  "203.0.113.10:x"])
def test_bad_targets_are_one_line_errors(text: str) -> None:
    with pytest.raises(LabError, match="bad attack target"):
        Target.parse(text)
