"""In-process policy store (``memory://``): nothing survives a restart."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Iterable

from .base import CacheEntry, StoreError


class MemoryStore:
    """A dictionary behind a lock. Entries are copied in and out, so callers may modify what they hold."""

    #: In-process: the daemon may call it from the event loop.
    remote = False

    def __init__(self) -> None:
        self._entries: dict[str, CacheEntry] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory store is closed")

    def load_all(self) -> list[CacheEntry]:
        with self._lock:
            self._check_open()
            return [replace(entry) for entry in self._entries.values()]

    def get(self, domain: str) -> CacheEntry | None:
        with self._lock:
            self._check_open()
            entry = self._entries.get(domain)
            return None if entry is None else replace(entry)

    def put(self, entry: CacheEntry) -> None:
        with self._lock:
            self._check_open()
            self._entries[entry.domain] = replace(entry)

    def put_many(self, entries: Iterable[CacheEntry]) -> None:
        copies = [replace(entry) for entry in entries]
        with self._lock:
            self._check_open()
            for entry in copies:
                self._entries[entry.domain] = entry

    def delete(self, domain: str) -> None:
        with self._lock:
            self._check_open()
            self._entries.pop(domain, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "MemoryStore()"
