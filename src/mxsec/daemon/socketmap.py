"""Postfix socketmap framing (netstrings), sans-I/O.

A socketmap request is one netstring ``LEN ":" NAME " " KEY ","``; the reply is one netstring too, e.g.
``OK <data>``, ``NOTFOUND ``, ``TEMP <reason>``, ``PERM <reason>`` (Postfix ``socketmap_table(5)``).
Requests may be pipelined: several netstrings in one read, or one split over many reads.

The decoder never raises on the data itself: framing errors are returned as values so the server can answer
``PERM`` and drop only that client.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Largest request payload accepted (a map name, a space and a domain of at most 253 octets fit easily;
#: Postfix keys for bracketed next hops such as ``[relay.example]:587`` too).
MAX_REQUEST = 2048

_MAX_LEN_DIGITS = 10


class NetstringError(Exception):
    """Framing is broken: the stream cannot be resynchronised."""


@dataclass(frozen=True, slots=True)
class Framing:
    """What went wrong with the framing, for the one ``PERM`` reply sent before closing."""

    reason: str


class NetstringDecoder:
    """Incremental netstring decoder.

    ``feed(data)`` returns the complete payloads found so far, in order; if the framing breaks, the last item
    is a :class:`Framing` value and every later call returns nothing (the connection is to be closed).
    """

    __slots__ = ("_buf", "_max", "_broken")

    def __init__(self, max_payload: int = MAX_REQUEST) -> None:
        self._buf = b""
        self._max = max_payload
        self._broken = False

    @property
    def broken(self) -> bool:
        return self._broken

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a netstring."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | Framing]:
        if self._broken:
            return []
        buf = self._buf + data if self._buf else data
        out: list[bytes | Framing] = []
        pos = 0
        n = len(buf)
        limit = self._max
        while pos < n:
            colon = buf.find(b":", pos, pos + _MAX_LEN_DIGITS + 1)
            if colon < 0:
                if n - pos > _MAX_LEN_DIGITS:
                    return self._fail(out, "netstring length prefix missing or too long")
                break
            digits = buf[pos:colon]
            if not digits.isdigit():  # bytes.isdigit() is ASCII-only
                return self._fail(out, "netstring length is not a decimal number")
            length = int(digits)
            if length > limit:
                return self._fail(out, f"request of {length} bytes exceeds the limit of {limit}")
            end = colon + 1 + length
            if end >= n:
                break
            if buf[end] != 0x2C:  # ","
                return self._fail(out, "netstring not terminated by ','")
            out.append(buf[colon + 1:end])
            pos = end + 1
        self._buf = buf[pos:] if pos < n else b""
        return out

    def _fail(self, out: list[bytes | Framing], reason: str) -> list[bytes | Framing]:
        self._broken = True
        self._buf = b""
        out.append(Framing(reason))
        return out


def encode(payload: bytes) -> bytes:
    """One netstring."""
    return b"%d:%s," % (len(payload), payload)


@dataclass(frozen=True, slots=True)
class Request:
    map_name: str
    key: str


class RequestError(Exception):
    """A well-framed request whose content is unusable (answered with ``PERM``, connection kept)."""


def parse_request(payload: bytes) -> Request:
    """Split ``NAME KEY``. The key is returned as text; its meaning is the caller's business."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("request is not UTF-8") from None
    name, sep, key = text.partition(" ")
    if not sep or not name or not key:
        raise RequestError("request must be 'NAME KEY'")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in name):
        raise RequestError("map name contains control characters or spaces")
    key = key.strip()
    if not key or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key) or " " in key:
        raise RequestError("key must be one domain name")
    return Request(name, key)
