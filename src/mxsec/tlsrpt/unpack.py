"""Unpacking the bytes of a TLSRPT report: gzip (RFC 8460 §5.2) or, as some senders do, a zip archive holding one
report. Sans-I/O.

Bounded against hostile input (RFC 8460 §7, RPT-I-45, EC-40): gzip is inflated as a stream with a cap on its
output and on its members, so a bomb is never inflated fully; a zip archive's central directory is sized from
its end record before :mod:`zipfile` reads any of it, and the one report in it is capped by size and by
inflation ratio. Every refusal is a :class:`~mxsec.tlsrpt.report.ReportError`; every tolerance (several gzip
members, trailing bytes, a zip archive at all) a warning.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from typing import Any

from mxsec.tlsrpt.report import DEFAULT_LIMITS, MiB, ReportError, Warnings

__all__ = ["GZIP_MAGIC", "MAX_ZIP_DIRECTORY", "MAX_ZIP_RATIO", "ZIP_MAGIC", "gunzip", "unzip"]

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"


#: Compressed bytes handed to the inflater at a time. Whatever it does not use of them (``unused_data`` at the
#: end of a member, ``unconsumed_tail``) is copied by :mod:`zlib`, so feeding the whole rest of the input
#: would copy it once per member: quadratic in the number of members. A bounded window keeps it linear.
_INFLATE_WINDOW = 16 * 1024
#: Largest central directory of a zip archive read (one report needs one entry of well under 1 KiB).
MAX_ZIP_DIRECTORY = 64 * 1024
#: Largest inflation ratio of a zip entry (declared or actual) once its output passes 1 MiB; deflate
#: itself tops out near 1032:1, report JSON compresses ten to a few hundred times.
MAX_ZIP_RATIO = 500
_ZIP_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"


def gunzip(data: bytes, limit: int, warnings: Warnings,
            max_members: int = DEFAULT_LIMITS.max_archive_members) -> bytes:
    """Decompress every gzip member of *data*, stopping as soon as the output passes *limit* bytes or the
    member count passes *max_members*. Linear in the input: the compressed bytes are fed through a
    :class:`memoryview` window (see :data:`_INFLATE_WINDOW`), never as a copy of the rest of the input."""
    if len(data) <= _INFLATE_WINDOW and max_members >= 1:
        # The usual report: one small member, nothing after it. One call, at most limit + 1 bytes out; anything
        # else (more members, trailing bytes, an error, too much output) is left to the loop below.
        inflater = zlib.decompressobj(wbits=31)
        try:
            whole = inflater.decompress(data, limit + 1)
        except zlib.error:
            pass
        else:
            if inflater.eof and not inflater.unused_data and len(whole) <= limit:
                return whole
    view = memoryview(data)
    size = len(view)
    out = bytearray()
    position = 0
    members = 0
    while True:
        if members >= max_members:
            raise ReportError(
                "too-many-members", f"gzip data has more than {max_members} members; a report has one"
            )
        inflater = zlib.decompressobj(wbits=31)
        try:
            while not inflater.eof:
                if position >= size:
                    raise ReportError("bad-gzip", "gzip data is truncated")
                end = min(position + _INFLATE_WINDOW, size)
                pending: Any = view[position:end]
                position = end
                while True:
                    chunk = inflater.decompress(pending, limit + 1 - len(out))
                    out += chunk
                    if len(out) > limit:
                        raise ReportError(
                            "decompressed-too-large",
                            f"gzip data inflates to more than the limit of {limit} bytes",
                        )
                    pending = inflater.unconsumed_tail
                    if inflater.eof or not pending:
                        break
        except zlib.error as exc:
            raise ReportError("bad-gzip", f"gzip data is corrupt ({exc})") from None
        position -= len(inflater.unused_data)  # at most one window, given back to the next member
        members += 1
        if view[position:position + 2] == GZIP_MAGIC:
            continue
        if members > 1:
            warnings.add("gzip-members", f"gzip data has {members} members; their contents were concatenated")
        if position < size:
            warnings.add("gzip-trailing-data", f"{size - position} bytes after the gzip data ignored")
        return bytes(out)


def _zip_directory(data: bytes) -> tuple[int, int]:
    """(entries, bytes) of a zip archive's central directory, from its end record (and the zip64 one)."""
    tail_start = max(0, len(data) - (22 + 65535))
    at = data.rfind(_ZIP_EOCD, tail_start)
    if at < 0 or len(data) - at < 22:
        raise ReportError("bad-zip", "zip archive has no end of central directory record")
    entries, directory_size = struct.unpack_from("<HI", data, at + 10)
    locator = at - 20
    if locator >= 0 and data[locator:locator + 4] == _ZIP64_LOCATOR:
        (record,) = struct.unpack_from("<Q", data, locator + 8)
        if record + 56 > len(data) or data[record:record + 4] != b"PK\x06\x06":
            raise ReportError("bad-zip", "zip archive has a broken zip64 end record")
        entries, directory_size = struct.unpack_from("<QQ", data, record + 32)
    return entries, directory_size


def unzip(data: bytes, limit: int, warnings: Warnings,
           max_members: int = DEFAULT_LIMITS.max_archive_members) -> bytes:
    """The one report inside a zip archive (a ``.json`` or ``.json.gz`` member, or the only member).

    The central directory's entry count and size are read from its end record first and capped (a directory
    of 100,000 entries is refused before :mod:`zipfile` reads any of it); the chosen entry's declared sizes
    and its actual output are capped by *limit* and :data:`MAX_ZIP_RATIO`. :mod:`zipfile` raises a wide range
    of exceptions on hostile archives; all of them become ``bad-zip``.
    """
    entries, directory_size = _zip_directory(data)
    if entries > max_members:
        raise ReportError("too-many-members", f"zip archive has {entries} entries, more than {max_members}")
    if directory_size > MAX_ZIP_DIRECTORY:
        raise ReportError(
            "bad-zip", f"zip central directory is {directory_size} bytes, more than {MAX_ZIP_DIRECTORY}"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if len(infos) > max_members:
                raise ReportError(
                    "too-many-members", f"zip archive has {len(infos)} entries, more than {max_members}"
                )
            members = [info for info in infos if not info.is_dir()]
            reports = [m for m in members if m.filename.lower().endswith((".json", ".json.gz", ".gz"))]
            chosen = reports if reports else members
            if len(chosen) != 1:
                raise ReportError("bad-zip", f"zip archive holds {len(chosen)} candidate reports; expected one")
            info = chosen[0]
            if info.file_size > limit:
                raise ReportError(
                    "decompressed-too-large",
                    f"zip member declares {info.file_size} bytes, more than the limit of {limit}",
                )
            if info.compress_size > len(data):
                raise ReportError("bad-zip", "zip member is larger than the archive")
            _check_ratio(info.file_size, info.compress_size)
            with archive.open(info) as stream:
                content = stream.read(limit + 1)
    except ReportError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile's failure modes are many (see the docstring)
        raise ReportError("bad-zip", f"zip archive cannot be read ({type(exc).__name__})") from None
    warnings.add("zip-archive", f"report came in a zip archive (member {info.filename!r})")
    if len(content) > limit:
        raise ReportError("decompressed-too-large", f"zip member inflates to more than the limit of {limit} bytes")
    _check_ratio(len(content), info.compress_size)
    if content[:2] == GZIP_MAGIC:
        return gunzip(content, limit, warnings, max_members)
    return content


def _check_ratio(inflated: int, compressed: int) -> None:
    if inflated > MiB and inflated > MAX_ZIP_RATIO * max(compressed, 1):
        raise ReportError(
            "decompressed-too-large",
            f"zip member inflates {inflated} bytes from {compressed}, more than {MAX_ZIP_RATIO} times",
        )
