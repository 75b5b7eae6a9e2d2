"""A sans-I/O reader of the TLS ClientHello: the server name (SNI) and the ALPN protocols a client offers.

``serve-policy`` peeks at the first bytes of a new connection and hands them to :func:`read_client_hello`,
which answers with the parsed hello, with ``None`` while the bytes are a valid beginning of one (peek again
once more have arrived), or raises :class:`ClientHelloError` for anything else. It opens no socket and imports
no ``ssl``: bytes in, values out.

What is read (RFC 8446 §4.1.2 and §5.1, RFC 6066 §3, RFC 7301 §3.1):

- TLS records of type 22 (handshake) with record version 0x0301 to 0x0304 and a length of 1 to 16384 + 256
  bytes. The ClientHello may be split over several such records; a record of any other type before it is
  complete is an error, and whatever follows the complete hello (more records, early data) is ignored.
- One handshake message of type 1 whose length is at most :data:`MAX_CLIENT_HELLO`, judged from its 4-byte
  header alone. Inside it every length is checked against what is left; the extensions block, when present,
  must end exactly where the message ends, and no extension type may appear twice.
- SNI: exactly one name of type host_name, made of letters, digits, ``-`` and ``_`` in dot-separated labels of
  1 to 63 characters; it is returned lower-cased without a trailing dot.
- ALPN: a non-empty list of non-empty protocol names, returned in the client's order. Protocol names are
  opaque bytes (RFC 7301), so they are decoded as latin-1: every byte maps to one character, and an ASCII name
  such as ``acme-tls/1`` reads as itself.
"""

import re
from dataclasses import dataclass

#: the largest ClientHello handshake message accepted, in bytes (its 4-byte header not counted)
MAX_CLIENT_HELLO = 16384
_MAX_RECORD = 16384 + 256
_HANDSHAKE, _CLIENT_HELLO = 22, 1
_EXT_SERVER_NAME, _EXT_ALPN = 0, 16
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")


class ClientHelloError(ValueError):
    """The bytes are not the beginning of a TLS ClientHello this reader accepts (the message is one line)."""


@dataclass(frozen=True)
class ClientHello:
    server_name: str | None  # SNI host_name, lower-cased, trailing dot removed; None when absent
    alpn: tuple[str, ...]  # ALPN protocol names (latin-1 decoded), in the client's order; () when absent
    legacy_version: int  # ClientHello.legacy_version, e.g. 0x0303


class _Reader:
    """Bounded reads from one byte string; every short read is a ClientHelloError naming the field."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, what: str) -> bytes:
        if size > self.left():
            raise ClientHelloError(f"truncated ClientHello: {what} needs {size} bytes, {self.left()} left")
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def number(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, length_size: int, what: str, minimum: int = 0, maximum: int | None = None) -> "_Reader":
        body = self.take(self.number(length_size, f"{what} length"), what)
        if len(body) < minimum or (maximum is not None and len(body) > maximum):
            raise ClientHelloError(f"bad ClientHello: {what} is {len(body)} bytes long")
        return _Reader(body)


def read_client_hello(data: bytes) -> ClientHello | None:
    """None: `data` is a valid beginning but the ClientHello is not complete yet (peek again later)."""
    message = _handshake_message(data)
    return None if message is None else _parse_hello(message)


def _handshake_message(data: bytes) -> bytes | None:
    """The ClientHello handshake body reassembled from the records at the start of `data`, or None if short."""
    if data and data[0] & 0x80:
        raise ClientHelloError("SSLv2-compatible ClientHello is not supported")
    fragments = bytearray()
    pos = 0
    while True:
        header = data[pos:pos + 5]
        if header and header[0] != _HANDSHAKE:
            raise ClientHelloError(f"not a TLS handshake record (record type {header[0]})")
        if len(header) >= 2 and header[1] != 3:
            raise ClientHelloError(f"not a TLS record (version major byte {header[1]})")
        if len(header) >= 3 and not 1 <= header[2] <= 4:
            raise ClientHelloError(f"unknown TLS record version 0x03{header[2]:02x}")
        if len(header) < 5:
            return None
        length = int.from_bytes(header[3:5], "big")
        if not 1 <= length <= _MAX_RECORD:
            raise ClientHelloError(f"bad TLS record length {length}")
        fragments += data[pos + 5:pos + 5 + length]  # a record still arriving gives what it has so far
        if len(fragments) >= 1 and fragments[0] != _CLIENT_HELLO:
            raise ClientHelloError(f"not a ClientHello (handshake type {fragments[0]})")
        if len(fragments) >= 4:
            size = int.from_bytes(fragments[1:4], "big")
            if size > MAX_CLIENT_HELLO:
                raise ClientHelloError(f"ClientHello too large ({size} bytes, at most {MAX_CLIENT_HELLO})")
            if len(fragments) >= 4 + size:
                return bytes(fragments[4:4 + size])
        if pos + 5 + length >= len(data):
            return None
        pos += 5 + length


def _parse_hello(message: bytes) -> ClientHello:
    body = _Reader(message)
    version = body.number(2, "legacy_version")
    if version >> 8 != 3:
        raise ClientHelloError(f"bad ClientHello legacy_version 0x{version:04x}")
    body.take(32, "random")
    body.vector(1, "legacy_session_id", maximum=32)
    suites = body.vector(2, "cipher_suites", minimum=2)
    if suites.left() % 2:
        raise ClientHelloError("bad ClientHello: cipher_suites has an odd length")
    body.vector(1, "legacy_compression_methods", minimum=1)
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    if body.left():
        extensions = body.vector(2, "extensions")
        if body.left():
            raise ClientHelloError(f"bad ClientHello: {body.left()} bytes after the extensions")
        seen: set[int] = set()
        while extensions.left():
            kind = extensions.number(2, "extension type")
            content = extensions.vector(2, f"extension {kind}")
            if kind in seen:
                raise ClientHelloError(f"bad ClientHello: extension {kind} appears twice")
            seen.add(kind)
            if kind == _EXT_SERVER_NAME:
                server_name = _server_name(content)
            elif kind == _EXT_ALPN:
                alpn = _alpn(content)
    return ClientHello(server_name=server_name, alpn=alpn, legacy_version=version)


def _server_name(content: _Reader) -> str:
    names = content.vector(2, "server_name_list", minimum=1)
    _expect_end(content, "server_name")
    host: str | None = None
    while names.left():
        name_type = names.number(1, "server name type")
        if name_type != 0:
            raise ClientHelloError(f"bad ClientHello: unknown server name type {name_type}")
        raw = names.vector(2, "host_name", minimum=1).data
        if host is not None:
            raise ClientHelloError("bad ClientHello: more than one host_name in server_name")
        host = _host_name(raw)
    assert host is not None  # the list is non-empty and every entry is a host_name
    return host


def _host_name(raw: bytes) -> str:
    text = raw.decode("latin-1").lower()
    name = text[:-1] if text.endswith(".") else text
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ClientHelloError(f"bad ClientHello: server name {text[:80]!r} is not a DNS host name")
    return name


def _alpn(content: _Reader) -> tuple[str, ...]:
    names = content.vector(2, "protocol_name_list", minimum=2)
    _expect_end(content, "application_layer_protocol_negotiation")
    found = []
    while names.left():
        found.append(names.vector(1, "protocol name", minimum=1).data.decode("latin-1"))
    return tuple(found)


def _expect_end(reader: _Reader, what: str) -> None:
    if reader.left():
        raise ClientHelloError(f"bad ClientHello: {reader.left()} stray bytes in the {what} extension")
