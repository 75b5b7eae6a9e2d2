"""What one policy fetch gave (RFC 8461 §3.3): the body, or the problem that stopped it. Pure data, no I/O.

The HTTPS adapter (:mod:`mxsec.net.https`) returns a :class:`FetchOutcome`; the daemon's service and the
checker's rules read it; tests build it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from mxsec.sts.results import FetchProblem

__all__ = ["FetchOutcome"]


@dataclass(frozen=True)
class FetchOutcome:
    """``body`` when the fetch succeeded (``problem`` ``None``); else ``problem`` and ``detail`` say why.
    ``status``, ``content_type`` and ``address`` are the HTTP status, the media type and the address the
    answer came from, when known."""

    body: bytes | None
    problem: FetchProblem | None
    detail: str
    status: int | None = None
    content_type: str | None = None
    address: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.body is not None
