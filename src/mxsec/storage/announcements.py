"""Announcements between the daemons of a fleet ("``owner`` stored a new policy for ``domain``"), as the shared
stores carry them: Redis pub/sub and PostgreSQL ``NOTIFY`` (docs/fleet.md).

One message format and one listener thread serve both stores: :func:`message` and :func:`deliver` write and read
``"<owner> <domain>"``; :func:`listen_in_thread` runs a store's listening session in a daemon thread, starts it
again :data:`LISTEN_RETRY` seconds after the server went away, and returns the function that stops it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["LISTEN_POLL", "LISTEN_RETRY", "deliver", "listen_in_thread", "message"]

#: seconds a listening session waits for a message before it looks whether it should stop
LISTEN_POLL = 1.0
#: seconds between a failed session and the next one
LISTEN_RETRY = 2.0


def message(owner: str, domain: str) -> str:
    return f"{owner} {domain}"


def deliver(payload: str, on_change: Callable[[str, str], None]) -> None:
    """Hand a received message to ``on_change(domain, owner)``; a message without a domain is dropped."""
    owner, _, domain = payload.partition(" ")
    if domain:
        on_change(domain, owner)


def listen_in_thread(name: str, session: Callable[[threading.Event], None],
                     errors: tuple[type[BaseException], ...], *, connect_timeout: float = 0.0) -> Callable[[], None]:
    """Run ``session(stop)`` in a daemon thread until ``stop`` is set; a session that raises one of ``errors``
    (the server is away) is started again after :data:`LISTEN_RETRY` seconds. Returns the function that stops
    the thread (and waits for it, as long as one poll, one retry and one connection take)."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                session(stop)
            except errors:
                stop.wait(LISTEN_RETRY)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(LISTEN_POLL + LISTEN_RETRY + connect_timeout + 2)

    return close
