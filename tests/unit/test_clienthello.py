"""The sans-I/O ClientHello reader of serve-policy (src/mxsec/serve_policy/clienthello.py).

Real hellos come from Python's own ssl module, written into a memory BIO; malformed ones are built here by hand.
"""

import ast
import ssl
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxsec.serve_policy import clienthello
from mxsec.serve_policy.clienthello import MAX_CLIENT_HELLO, ClientHello, ClientHelloError, read_client_hello


def real_hello(server_hostname: str, alpn: list[str] | None = None, tls12_only: bool = False) -> bytes:
    ctx = ssl.create_default_context()
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    if tls12_only:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    out = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


def records(data: bytes) -> list[tuple[int, bytes]]:
    """Split a byte string that is a sequence of whole TLS records into (type, fragment) pairs."""
    found, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 3:pos + 5], "big")
        found.append((data[pos], data[pos + 5:pos + 5 + length]))
        pos += 5 + length
    assert pos == len(data)
    return found


def handshake_message(hello: bytes) -> bytes:
    return b"".join(fragment for _, fragment in records(hello))


def record(fragment: bytes, content_type: int = 22, version: bytes = b"\x03\x01") -> bytes:
    return bytes([content_type]) + version + len(fragment).to_bytes(2, "big") + fragment


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def vec8(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def vec16(b: bytes) -> bytes:
    return u16(len(b)) + b


def extension(kind: int, content: bytes) -> bytes:
    return u16(kind) + vec16(content)


def sni(*names: bytes) -> bytes:
    return extension(0, vec16(b"".join(b"\x00" + vec16(n) for n in names)))


def alpn_ext(*names: bytes) -> bytes:
    return extension(16, vec16(b"".join(vec8(n) for n in names)))


def hand_hello(extensions: bytes | None, *, suites: bytes = b"\x13\x01", version: int = 0x0303,
               handshake_type: int = 1) -> bytes:
    """A ClientHello built field by field; `extensions` is the raw content of the extensions block (or absent)."""
    body = u16(version) + bytes(32) + vec8(bytes(32)) + vec16(suites) + vec8(b"\x00")
    if extensions is not None:
        body += vec16(extensions)
    return record(bytes([handshake_type]) + len(body).to_bytes(3, "big") + body)


# -- real hellos from Python's ssl ------------------------------------------------------------------------------

ACME = real_hello("MTA-STS.Example.COM", ["acme-tls/1"])


@pytest.mark.parametrize(("hostname", "alpn", "tls12_only", "want_name", "want_alpn"), [
    ("MTA-STS.Example.COM", ["acme-tls/1"], False, "mta-sts.example.com", ("acme-tls/1",)),
    ("mta-sts.example.org", ["h2", "http/1.1"], False, "mta-sts.example.org", ("h2", "http/1.1")),
    ("mta-sts.example.net", None, False, "mta-sts.example.net", ()),
    ("192.0.2.7", ["acme-tls/1"], False, None, ("acme-tls/1",)),  # Python sends no SNI for an IP address
    ("2001:db8::7", None, False, None, ()),
    ("mta-sts.example.com", ["acme-tls/1"], True, "mta-sts.example.com", ("acme-tls/1",)),
])
def test_real_hellos_from_python_ssl(hostname, alpn, tls12_only, want_name, want_alpn):
    hello = read_client_hello(real_hello(hostname, alpn, tls12_only))
    assert hello == ClientHello(server_name=want_name, alpn=want_alpn, legacy_version=0x0303)


def test_every_strict_prefix_of_a_real_hello_is_incomplete():
    for end in range(len(ACME)):
        assert read_client_hello(ACME[:end]) is None, end
    assert read_client_hello(ACME) is not None


@pytest.mark.parametrize("chunk", [1, 7, 100, 256])
def test_a_hello_split_over_several_records_reads_the_same(chunk):
    message = handshake_message(ACME)
    split = b"".join(record(message[i:i + chunk], version=b"\x03\x03") for i in range(0, len(message), chunk))
    assert len(records(split)) > 1
    assert read_client_hello(split) == read_client_hello(ACME)
    for end in range(0, len(split), 37):  # and prefixes of the split form are still incomplete
        assert read_client_hello(split[:end]) is None


def test_bytes_after_the_hello_are_ignored():
    expected = read_client_hello(ACME)
    assert read_client_hello(ACME + record(b"early data", content_type=23)) == expected
    assert read_client_hello(ACME + b"\xff" * 50) == expected
    # the rest of the record holding the hello's last byte is not read either
    message = handshake_message(ACME)
    assert read_client_hello(record(message + b"\x02\x00\x00\x00")) == expected


def test_hand_built_hello_without_extensions():
    assert read_client_hello(hand_hello(None)) == ClientHello(None, (), 0x0303)
    assert read_client_hello(hand_hello(b"")) == ClientHello(None, (), 0x0303)


def test_host_name_trailing_dot_and_case():
    hello = read_client_hello(hand_hello(sni(b"Mta-Sts.Example.COM.") + alpn_ext(b"acme-tls/1")))
    assert hello == ClientHello("mta-sts.example.com", ("acme-tls/1",), 0x0303)


def test_alpn_names_are_opaque_bytes_read_as_latin1():
    hello = read_client_hello(hand_hello(alpn_ext(b"\xfa\xfa", b"h2")))
    assert hello is not None and hello.alpn == ("\xfa\xfa", "h2")


# -- malformed input --------------------------------------------------------------------------------------------

def error_of(data: bytes) -> str:
    with pytest.raises(ClientHelloError) as caught:
        read_client_hello(data)
    message = str(caught.value)
    assert message and "\n" not in message
    return message


def test_wrong_record_type():
    assert "record type 23" in error_of(record(handshake_message(ACME), content_type=23))
    assert "record type 21" in error_of(b"\x15")  # an alert: known from the first byte
    first, rest = handshake_message(ACME)[:50], handshake_message(ACME)[50:]
    assert "record type 20" in error_of(record(first) + record(rest, content_type=20))


def test_bad_record_version_and_length():
    assert "version" in error_of(b"\x16\x02")
    assert "version" in error_of(b"\x16\x03\x05")
    assert "version" in error_of(b"\x16\x03\x00")
    assert "length 0" in error_of(b"\x16\x03\x01\x00\x00")
    assert "length" in error_of(b"\x16\x03\x01" + u16(16384 + 257))


def test_sslv2_hello():
    assert "SSLv2" in error_of(b"\x80\x2e\x01\x00\x02")
    assert "SSLv2" in error_of(b"\x80")


def test_handshake_type_other_than_client_hello():
    assert "handshake type 2" in error_of(hand_hello(None, handshake_type=2))
    assert "handshake type 2" in error_of(record(b"\x02"))  # known from the first handshake byte


def test_oversized_hello_is_refused_from_its_header():
    header = b"\x01" + (MAX_CLIENT_HELLO + 1).to_bytes(3, "big")
    assert "too large" in error_of(b"\x16\x03\x01\x40\x00" + header)  # nine bytes, far from complete
    at_limit = b"\x01" + MAX_CLIENT_HELLO.to_bytes(3, "big")
    assert read_client_hello(b"\x16\x03\x01\x40\x00" + at_limit) is None


def test_oversized_hello_header_split_across_records():
    header = b"\x01" + (MAX_CLIENT_HELLO + 1).to_bytes(3, "big")
    assert "too large" in error_of(record(header[:2]) + record(header[2:]))


def test_truncated_fields_inside_a_complete_message():
    message = handshake_message(ACME)
    body = message[4:]
    for cut in (1, 2, 20, 40, len(body) - 1):  # a complete handshake message whose fields run past its end
        short = body[:len(body) - cut] if cut < len(body) else b""
        assert "ClientHello" in error_of(record(b"\x01" + len(short).to_bytes(3, "big") + short))


def test_truncated_extension_lengths():
    assert "truncated" in error_of(hand_hello(b"\x00"))  # one byte of an extension type
    assert "truncated" in error_of(hand_hello(b"\x00\x10\x00"))  # half an extension length
    assert "truncated" in error_of(hand_hello(b"\x00\x10\x00\x09abc"))  # extension longer than the block
    assert "truncated" in error_of(hand_hello(extension(16, b"\x00\x05\x02h2")))  # ALPN list past its end
    assert "truncated" in error_of(hand_hello(extension(0, b"\x00\x05\x00\x00\x09ab")))  # host_name past its end


def test_extensions_block_length_must_match_the_message():
    good = hand_hello(alpn_ext(b"h2"))
    message = good[5:]
    longer = message[4:] + b"\x00"
    assert "after the extensions" in error_of(record(b"\x01" + len(longer).to_bytes(3, "big") + longer))
    one_byte = hand_hello(None)[5 + 4:] + b"\x00"  # one byte where a two-byte length should be
    assert "truncated" in error_of(record(b"\x01" + len(one_byte).to_bytes(3, "big") + one_byte))


def test_duplicate_extension():
    assert "appears twice" in error_of(hand_hello(alpn_ext(b"h2") + alpn_ext(b"http/1.1")))
    assert "appears twice" in error_of(hand_hello(extension(65281, b"\x00") + extension(65281, b"\x00")))


def test_bad_fixed_fields():
    assert "legacy_version" in error_of(hand_hello(None, version=0x0203))
    assert "odd length" in error_of(hand_hello(None, suites=b"\x13\x01\x13"))
    assert "cipher_suites" in error_of(hand_hello(None, suites=b""))
    body = u16(0x0303) + bytes(32) + vec8(bytes(33)) + vec16(b"\x13\x01") + vec8(b"\x00")
    assert "legacy_session_id" in error_of(record(b"\x01" + len(body).to_bytes(3, "big") + body))
    body = u16(0x0303) + bytes(32) + vec8(b"") + vec16(b"\x13\x01") + vec8(b"")
    assert "compression" in error_of(record(b"\x01" + len(body).to_bytes(3, "big") + body))


@pytest.mark.parametrize("name", [b"bad name.example", b"caf\xe9.example", b"a..b", b".", b"", b"x" * 64 + b".com",
                                  b"a\x00b.example", b"example.com\n", b"ex/ample.com", ("a." * 127).encode() + b"bc"])
def test_host_name_that_is_not_a_dns_name(name):
    error_of(hand_hello(sni(name)))


def test_host_name_limits_accepted():
    long_name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    assert read_client_hello(hand_hello(sni(long_name.encode()))) == ClientHello(long_name, (), 0x0303)
    assert read_client_hello(hand_hello(sni(b"_mta-sts.example"))).server_name == "_mta-sts.example"


def test_server_name_extension_shapes():
    assert "more than one host_name" in error_of(hand_hello(sni(b"a.example", b"b.example")))
    assert "name type 1" in error_of(hand_hello(extension(0, vec16(b"\x01" + vec16(b"a.example")))))
    assert "server_name_list" in error_of(hand_hello(extension(0, vec16(b""))))
    assert "truncated" in error_of(hand_hello(extension(0, b"")))
    assert "stray bytes" in error_of(hand_hello(extension(0, vec16(b"\x00" + vec16(b"a.example")) + b"\x00")))


def test_alpn_extension_shapes():
    assert "protocol name" in error_of(hand_hello(alpn_ext(b"h2", b"")))
    assert "protocol_name_list" in error_of(hand_hello(extension(16, vec16(b""))))
    assert "stray bytes" in error_of(hand_hello(extension(16, vec16(vec8(b"h2")) + b"\x00")))


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"EHLO x\r\n", b"\x00" * 10, b"\x16\x16"])
def test_garbage(garbage):
    error_of(garbage)


def test_empty_input_is_an_incomplete_beginning():
    assert read_client_hello(b"") is None


# -- properties -------------------------------------------------------------------------------------------------

def read_or_error(data: bytes) -> None:
    try:
        result = read_client_hello(data)
    except ClientHelloError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert result is None or isinstance(result, ClientHello)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_but_the_error(data):
    read_or_error(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_behind_a_handshake_record_header(data):
    read_or_error(b"\x16\x03\x01" + u16(len(data)) + data)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(ACME) - 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, len(ACME) - 1), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, len(ACME)), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, len(ACME) - 1), st.just(0)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_real_hellos_never_raise_anything_but_the_error(mutations):
    data = bytearray(ACME)
    for kind, where, value in mutations:
        where = min(where, len(data))
        if kind == "flip" and where < len(data):
            data[where] ^= value
        elif kind == "truncate":
            del data[where:]
        elif kind == "insert":
            data[where:where] = bytes([value])
        elif kind == "delete" and where < len(data):
            del data[where]
    read_or_error(bytes(data))


# -- imports ----------------------------------------------------------------------------------------------------

def test_the_module_imports_only_pure_standard_library_modules():
    """The reader is sans-I/O: read statically, since importing mxsec.serve_policy loads the server."""
    tree = ast.parse(Path(clienthello.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: nothing of mxsec"
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"re", "dataclasses", "__future__"}, imported
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
