"""Netstring framing and request parsing (Postfix socketmap_table(5))."""

from hypothesis import given, settings
from hypothesis import strategies as st

from mxsec.daemon.socketmap import (
    MAX_REQUEST,
    Framing,
    NetstringDecoder,
    RequestError,
    encode,
    parse_request,
)


def test_single_request():
    assert NetstringDecoder().feed(b"19:postfix example.com,") == [b"postfix example.com"]


def test_pipelined_requests_in_one_read():
    data = encode(b"postfix a.example") + encode(b"postfix b.example") + encode(b"QUERY c.example")
    assert NetstringDecoder().feed(data) == [b"postfix a.example", b"postfix b.example", b"QUERY c.example"]


def test_request_split_across_reads_byte_by_byte():
    data = encode(b"postfix example.com") + encode(b"postfix example.net")
    dec = NetstringDecoder()
    got = []
    for i in range(len(data)):
        got += dec.feed(data[i:i + 1])
    assert got == [b"postfix example.com", b"postfix example.net"]
    assert dec.buffered == 0


def test_empty_netstring_is_a_payload():
    assert NetstringDecoder().feed(b"0:,") == [b""]


def test_garbage_gives_framing_error_and_stops():
    dec = NetstringDecoder()
    out = dec.feed(b"hello world, this is not a netstring")
    assert len(out) == 1 and isinstance(out[0], Framing)
    assert dec.broken
    assert dec.feed(b"3:abc,") == []


def test_requests_before_garbage_are_kept():
    out = NetstringDecoder().feed(encode(b"postfix a.example") + b"x:zz,")
    assert out[0] == b"postfix a.example"
    assert isinstance(out[1], Framing)


def test_missing_comma_is_framing_error():
    out = NetstringDecoder().feed(b"3:abcX")
    assert isinstance(out[0], Framing) and "','" in out[0].reason


def test_oversized_request_rejected_before_reading_it():
    out = NetstringDecoder().feed(b"%d:" % (MAX_REQUEST + 1))
    assert isinstance(out[0], Framing) and "exceeds" in out[0].reason


def test_length_prefix_too_long_without_colon():
    out = NetstringDecoder().feed(b"12345678901234")
    assert isinstance(out[0], Framing)


def test_partial_length_prefix_waits():
    dec = NetstringDecoder()
    assert dec.feed(b"1") == []
    assert dec.feed(b"9:postfix example.com,") == [b"postfix example.com"]


def test_encode():
    assert encode(b"NOTFOUND ") == b"9:NOTFOUND ,"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=20), st.integers(min_value=1, max_value=17))
def test_any_payloads_roundtrip_in_any_chunking(payloads, chunk):
    data = b"".join(encode(p) for p in payloads)
    dec = NetstringDecoder()
    got = []
    for i in range(0, len(data), chunk):
        got += dec.feed(data[i:i + chunk])
    assert got == payloads


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data):
    for item in NetstringDecoder().feed(data):
        assert isinstance(item, (bytes, Framing))


def test_parse_request():
    req = parse_request(b"postfix Example.COM.")
    assert (req.map_name, req.key) == ("postfix", "Example.COM.")


def test_parse_request_rejects_missing_key():
    for bad in (b"postfix", b"postfix ", b" example.com", b"\xff\xfe x", b"postfix two words"):
        try:
            parse_request(bad)
        except RequestError:
            continue
        raise AssertionError(f"accepted {bad!r}")


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=100))
def test_parse_request_raises_only_its_own_error(data):
    try:
        parse_request(data)
    except RequestError:
        pass
