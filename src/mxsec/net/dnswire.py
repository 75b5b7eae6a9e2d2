"""DNS messages on the wire, for the few questions mxsec asks: sans-I/O, no sockets.

:class:`~mxsec.net.dns.DnsClient` sends thousands of queries when a daemon starts cold, and building and
parsing full :class:`dns.message.Message` objects was most of its CPU. This module does only what those
queries need:

* :func:`query_name` turns a host name into wire form (plain LDH names directly, anything else through
  dnspython, which also reports bad names);
* :func:`encode_query` builds a query from a fixed 12-octet header, the name, the type and one EDNS0 OPT record
  (payload 1232, DO set; RD and AD in the header, so a validating resolver reports its verdict);
* :func:`parse_response` checks that a datagram answers that query (ID, QR, opcode, the question) and walks the
  answer section: it follows the CNAME chain from the query name (bounded) and returns where the final RRset's
  records are, with their smallest TTL, the AD and TC bits and the RCODE;
* ``decode_*`` turn one record's RDATA into what the client hands out (TXT strings joined, ``(preference,
  host)``, address text, TLSA tuples); :func:`decode_rdata` makes a dnspython rdata for any other type.

Names are compared case-insensitively as wire labels; compression pointers must point backwards (no loops).
Anything malformed raises :class:`WireError` (a one-line reason). The property tests compare every result with
dnspython's own parser on generated messages.
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass

import dns.exception
import dns.ipv6
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

__all__ = [
    "MAX_CHAIN",
    "ParsedResponse",
    "WireError",
    "decode_a",
    "decode_aaaa",
    "decode_mx",
    "decode_rdata",
    "decode_tlsa",
    "decode_txt",
    "encode_query",
    "name_text",
    "parse_response",
    "query_name",
    "response_id",
]

CLASS_IN = 1
TYPE_CNAME = 5
TYPE_OPT = 41
MAX_CHAIN = 16  # CNAMEs followed inside one response before it counts as a loop
_FLAG_QR = 0x8000
_FLAG_TC = 0x0200
_FLAG_AD = 0x0020
_QUERY_FLAGS = 0x0100 | _FLAG_AD  # RD, AD
# OPT: root owner, type 41, class = UDP payload 1232, TTL = ext-rcode 0, version 0, flags DO; no options
_OPT = b"\x00" + struct.pack("!HHIH", TYPE_OPT, 1232, 0x00008000, 0)
_LDH = re.compile(r"[A-Za-z0-9_*-]{1,63}(?:\.[A-Za-z0-9_*-]{1,63})*\.?\Z")
_PLAIN_LABEL = re.compile(rb"[A-Za-z0-9_*-]+\Z")


class WireError(ValueError):
    """A response that is not a well-formed DNS message (one-line reason)."""


def query_name(name: str) -> bytes:
    """``name`` in wire form (uncompressed, ending with the root label); ValueError for a bad name."""
    if len(name) <= 254 and _LDH.match(name):
        out = bytearray()
        for label in name.rstrip(".").split("."):
            out.append(len(label))
            out += label.encode("ascii")
        out.append(0)
        if len(out) > 255:
            raise ValueError("name too long")
        return bytes(out)
    try:
        wire = dns.name.from_text(name).to_wire()  # escapes, IDNA, and its own checks of lengths
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        raise ValueError(" ".join(str(exc).split()) or type(exc).__name__) from None
    assert wire is not None  # to_wire() without a file returns the bytes
    return wire


def encode_query(qid: int, qname: bytes, rdtype: int) -> bytes:
    """One query: ``qname`` as from :func:`query_name`, class IN, EDNS0 with DO, RD and AD set."""
    return struct.pack("!HHHHHH", qid, _QUERY_FLAGS, 1, 0, 0, 1) + qname + struct.pack("!HH", rdtype, CLASS_IN) + _OPT


def response_id(wire: bytes) -> int | None:
    return (wire[0] << 8 | wire[1]) if len(wire) >= 12 else None


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    """What :func:`parse_response` found.

    ``records``: ``(rdata offset, rdata length)`` of every distinct record of the final RRset (owner = the end
    of the CNAME chain, the query type, class IN), in answer order; ``ttl`` their smallest TTL (None without
    records); ``canonical``: the chain's end in wire form (the query name without CNAMEs).
    """

    rcode: int
    ad: bool
    tc: bool
    canonical: bytes
    records: tuple[tuple[int, int], ...]
    ttl: int | None


def _read_name(wire: bytes, offset: int) -> tuple[bytes, int]:
    """Name at ``offset`` as lower-case wire labels (pointers expanded) and the offset after it in place."""
    out = bytearray()
    end = -1
    pos = offset
    size = len(wire)
    lowest = offset  # a pointer must point before every place already read: no loops
    while True:
        if pos >= size:
            raise WireError("name runs past the end of the message")
        length = wire[pos]
        if length == 0:
            out.append(0)
            if end < 0:
                end = pos + 1
            break
        if length & 0xC0 == 0xC0:
            if pos + 1 >= size:
                raise WireError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | wire[pos + 1]
            if end < 0:
                end = pos + 2
            if target >= lowest:
                raise WireError("compression pointer does not point backwards")
            lowest = target
            pos = target
            continue
        if length & 0xC0:
            raise WireError("unknown label type")
        stop = pos + 1 + length
        if stop > size:
            raise WireError("label runs past the end of the message")
        out.append(length)
        out += wire[pos + 1 : stop].lower()
        if len(out) > 255:
            raise WireError("name longer than 255 octets")
        pos = stop
    return bytes(out), end


def name_text(name: bytes) -> str:
    """Wire-form name -> text without the final dot (``""`` for the root), escaped as dnspython does."""
    labels = []
    pos = 0
    while name[pos]:
        length = name[pos]
        labels.append(name[pos + 1 : pos + 1 + length])
        pos += 1 + length
    if all(_PLAIN_LABEL.match(label) for label in labels):
        return b".".join(labels).decode("ascii")
    return dns.name.Name([*labels, b""]).to_text(omit_final_dot=True)


def parse_response(wire: bytes, qid: int, qname: bytes, rdtype: int) -> ParsedResponse | None:
    """Parse a response to the query (``qid``, ``qname`` in wire form, ``rdtype``).

    Returns None when the datagram is not an answer to that query (another ID, not a response, another
    question): the caller keeps waiting. Raises :class:`WireError` for a malformed answer to it.
    """
    if len(wire) < 12:
        return None
    rid, flags, qdcount, ancount = struct.unpack_from("!HHHH", wire, 0)
    if rid != qid or not flags & _FLAG_QR or (flags >> 11) & 0xF != 0:
        return None
    rcode = flags & 0xF
    pos = 12
    if qdcount == 0:
        if rcode == 0:
            return None  # NOERROR must repeat the question
        return ParsedResponse(rcode, bool(flags & _FLAG_AD), bool(flags & _FLAG_TC), qname.lower(), (), None)
    if qdcount != 1:
        return None
    try:
        got, pos = _read_name(wire, pos)
    except WireError:
        return None
    if pos + 4 > len(wire):
        return None
    qtype, qclass = struct.unpack_from("!HH", wire, pos)
    want = qname.lower()
    if got != want or qtype != rdtype or qclass != CLASS_IN:
        return None
    pos += 4
    if flags & _FLAG_TC:
        return ParsedResponse(rcode, bool(flags & _FLAG_AD), True, want, (), None)
    answers: list[tuple[bytes, int, int, int, int]] = []
    size = len(wire)
    for _ in range(ancount):
        owner, pos = _read_name(wire, pos)
        if pos + 10 > size:
            raise WireError("record header runs past the end of the message")
        rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", wire, pos)
        pos += 10
        if pos + rdlen > size:
            raise WireError("record data runs past the end of the message")
        if rclass == CLASS_IN:
            answers.append((owner, rtype, 0 if ttl & 0x80000000 else ttl, pos, rdlen))  # RFC 2181 §8
        pos += rdlen
    current = want
    seen = {current}
    for _ in range(MAX_CHAIN + 1):
        records: list[tuple[int, int]] = []
        ttl_min: int | None = None
        data_seen: set[bytes] = set()
        cname_at: tuple[int, int] | None = None
        for owner, rtype, ttl, start, rdlen in answers:
            if owner != current:
                continue
            if rtype == rdtype:
                data = wire[start : start + rdlen]
                if data in data_seen:
                    ttl_min = min(ttl_min, ttl) if ttl_min is not None else ttl
                    continue
                data_seen.add(data)
                records.append((start, rdlen))
                ttl_min = min(ttl_min, ttl) if ttl_min is not None else ttl
            elif rtype == TYPE_CNAME and cname_at is None:
                cname_at = (start, rdlen)
        if records or cname_at is None or rdtype == TYPE_CNAME:
            return ParsedResponse(rcode, bool(flags & _FLAG_AD), False, current, tuple(records), ttl_min)
        target, stop = _read_name(wire, cname_at[0])
        if stop != cname_at[0] + cname_at[1]:
            raise WireError("CNAME data is not one name")
        if target in seen:
            raise WireError("CNAME loop")
        seen.add(target)
        current = target
    raise WireError(f"CNAME chain longer than {MAX_CHAIN}")


# ---------------------------------------------------------------------------------------------- RDATA


def decode_txt(wire: bytes, start: int, length: int) -> bytes:
    """A TXT record's character-strings joined with nothing in between (RFC 8461 §3.1)."""
    out = bytearray()
    pos, stop = start, start + length
    while pos < stop:
        count = wire[pos]
        pos += 1
        if pos + count > stop:
            raise WireError("TXT string runs past its record")
        out += wire[pos : pos + count]
        pos += count
    return bytes(out)


def decode_mx(wire: bytes, start: int, length: int) -> tuple[int, str]:
    """``(preference, host)``: host in lower case without the final dot, ``""`` for a null MX (RFC 7505)."""
    if length < 3:
        raise WireError("MX record too short")
    exchange, stop = _read_name(wire, start + 2)
    if stop != start + length:
        raise WireError("MX record has trailing data")
    return (wire[start] << 8 | wire[start + 1]), name_text(exchange)


def decode_a(wire: bytes, start: int, length: int) -> str:
    if length != 4:
        raise WireError("A record is not 4 octets")
    return socket.inet_ntop(socket.AF_INET, wire[start : start + 4])


def decode_aaaa(wire: bytes, start: int, length: int) -> str:
    if length != 16:
        raise WireError("AAAA record is not 16 octets")
    return dns.ipv6.inet_ntoa(wire[start : start + 16])


def decode_tlsa(wire: bytes, start: int, length: int) -> tuple[int, int, int, bytes]:
    """``(usage, selector, matching type, data)``."""
    if length < 3:
        raise WireError("TLSA record too short")
    return wire[start], wire[start + 1], wire[start + 2], bytes(wire[start + 3 : start + length])


def decode_rdata(wire: bytes, start: int, length: int, rdtype: int) -> dns.rdata.Rdata:
    """Any type, as a dnspython rdata object (compressed names inside resolved against the whole message)."""
    try:
        return dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RdataType.make(rdtype), wire, start, length)
    except (dns.exception.DNSException, ValueError, IndexError) as exc:
        raise WireError(" ".join(str(exc).split()) or "bad record data") from None
