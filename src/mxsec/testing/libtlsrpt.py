"""libtlsrpt's datagrams, written byte for byte as the C library (0.5) writes them: for the collector's tests and
benchmark, and for trying ``mxsec tlsrpt collect`` by hand.

String members are ``"key": "value"`` (a space after the colon), numbers and arrays without it; quote,
backslash and bytes below 0x20 are escaped, bytes from 0x80 up copied as they are (so a caller may pass bytes
that are not UTF-8, as libtlsrpt would). Empty arrays and absent strings are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Detail", "Pol", "encode"]


def _string(value: str | bytes) -> bytes:
    """A JSON string the way libtlsrpt writes it: quote, backslash and bytes below 0x20 escaped, bytes from
    0x80 up copied as they are (so a caller may pass bytes that are not UTF-8)."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    out = bytearray(b'"')
    for byte in raw:
        if byte == 0x22:
            out += b'\\"'
        elif byte == 0x5C:
            out += b"\\\\"
        elif byte < 0x20:
            out += b"\\u%04x" % byte
        else:
            out.append(byte)
    out += b'"'
    return bytes(out)


def _member(key: str, value: str | bytes) -> bytes:
    return b'"' + key.encode() + b'": ' + _string(value)


def _array(key: str, values: Sequence[str | bytes]) -> bytes:
    return b'"' + key.encode() + b'":[' + b",".join(_string(v) for v in values) + b"]"


@dataclass
class Detail:
    """One ``failure-details`` entry: ``c`` and the optional texts (``None``: left out)."""

    c: int
    s: str | bytes | None = None
    n: str | bytes | None = None
    h: str | bytes | None = None
    r: str | bytes | None = None
    a: str | bytes | None = None
    f: str | bytes | None = None

    def encode(self) -> bytes:
        parts = [b'"c":%d' % self.c]
        for key in ("s", "n", "h", "r", "a", "f"):
            value = getattr(self, key)
            if value is not None:
                parts.append(_member(key, value))
        return b"{" + b",".join(parts) + b"}"


@dataclass
class Pol:
    """One entry of ``policies``: what ``tlsrpt_init_policy`` … ``tlsrpt_finish_policy`` produce."""

    type: int
    domain: str | None
    strings: Sequence[str] = ()
    mx: Sequence[str] = ()
    details: Sequence[Detail] = ()
    failed: bool = False

    def encode(self) -> bytes:
        out = b'{"policy-type":%d' % self.type
        if self.domain is not None:
            out += b"," + _member("policy-domain", self.domain)
        if self.strings:
            out += b"," + _array("policy-string", self.strings)
        if self.mx:
            out += b"," + _array("mx-host", self.mx)
        if self.details:
            out += b',"failure-details":[' + b",".join(d.encode() for d in self.details) + b"]"
        return out + b',"t":%d,"f":%d}' % (len(self.details), 1 if self.failed else 0)


def encode(domain: str, record: str, policies: Sequence[Pol], dpv: str = "1") -> bytes:
    """A whole datagram, byte for byte as libtlsrpt 0.5 sends it."""
    return (b"{" + _member("dpv", dpv) + b"," + _member("d", domain) + b"," + _member("pr", record)
            + b',"policies":[' + b",".join(p.encode() for p in policies) + b"]}")
