"""Rate-limited log lines for events a client can cause at will (bad netstrings, evictions, timeouts, budget
overruns): at most ``per_window`` lines per kind of event and window; the rest are counted and summed up in one
``"suppressed similar messages"`` line when the window is over, so an attacker cannot fill the disk."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    __slots__ = ("logger", "per_window", "window", "clock", "_windows", "suppressed_total")

    def __init__(self, logger: logging.Logger, *, per_window: int = 10, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.per_window = per_window
        self.window = window
        self.clock = clock
        #: event kind → [window start, lines written, lines suppressed, level, message, alert]
        self._windows: dict[str, list] = {}
        #: every line ever suppressed (a metric)
        self.suppressed_total = 0

    def log(self, level: int, kind: str, msg: str, **extra) -> bool:
        """Log ``msg`` unless ``kind`` already used its lines in this window; ``True`` if it was written."""
        now = self.clock()
        state = self._windows.get(kind)
        if state is None or now - state[0] >= self.window:
            if state is not None:
                self._summary(kind, state)
            state = self._windows[kind] = [now, 0, 0, level, msg, bool(extra.get("alert"))]
        if state[1] < self.per_window:
            state[1] += 1
            self.logger.log(level, msg, extra=extra or None)
            return True
        state[2] += 1
        self.suppressed_total += 1
        return False

    def flush(self) -> None:
        """Write the summaries of windows that are over (called periodically)."""
        now = self.clock()
        for kind, state in list(self._windows.items()):
            if now - state[0] >= self.window:
                self._summary(kind, state)
                del self._windows[kind]

    def _summary(self, kind: str, state: list) -> None:
        if state[2]:
            extra = {"event": kind, "suppressed": state[2], "sample": state[4], "window": self.window}
            if state[5]:
                extra["alert"] = True
            self.logger.log(state[3], "suppressed similar messages", extra=extra)
