"""A quick retry of a plaintext delivery by the same smtp process is a new session, not a late recipient line.

Seen in the lab's closed TLSRPT loop (``postqueue -f`` right after a deferral): the same ``smtp[PID]``
retried ``sts-enforce-no-starttls.test`` 1.2 s later; the MX recorded two connections but the parser took the
second status line for a straggler of the first session. qmgr's ``(queue active)`` line between them marks
the new attempt.
"""

from __future__ import annotations

from mxsec.results import ResultType
from mxsec.tlsrpt.postfix_log import PostfixLogParser

DEFER = ("Dec 02 19:22:{s} sender postfix/smtp[32542]: A8BC816E2C2: to=<x@nostarttls.test>, "
         "relay=mx1.nostarttls.test[203.0.113.18]:25, delay=0.13, delays=0/0/0.12/0, dsn=4.7.4, status=deferred "
         "(TLS is required, but was not offered by host mx1.nostarttls.test[203.0.113.18])")
ACTIVE = ("Dec 02 19:22:{s} sender postfix/qmgr[32525]: A8BC816E2C2: from=<sender@sender.lab.test>, size=475, "
          "nrcpt=1 (queue active)")
CLEANUP = "Dec 02 19:22:28 sender postfix/cleanup[32530]: A8BC816E2C2: message-id=<m1@sender.lab.test>"


def _parse(lines: list[str]) -> list:
    parser = PostfixLogParser(year=2026)
    out = []
    for line in lines:
        out += parser.feed(line.encode())
    return out + parser.flush()


def test_retry_after_queue_active_is_a_new_session() -> None:
    got = _parse([CLEANUP, ACTIVE.format(s="28"), DEFER.format(s="28"), ACTIVE.format(s="29"),
                  DEFER.format(s="29")])
    assert [a.result_type for a in got] == [ResultType.STARTTLS_NOT_SUPPORTED] * 2
    assert {a.message_id for a in got} == {"m1@sender.lab.test"}


def test_repeated_status_line_without_new_attempt_is_still_one_session() -> None:
    got = _parse([CLEANUP, ACTIVE.format(s="28"), DEFER.format(s="28"), DEFER.format(s="29")])
    assert len(got) == 1
