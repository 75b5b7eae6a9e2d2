"""mxsec.net.dnswire against dnspython's own message code, on generated responses."""

from __future__ import annotations

import random
import struct

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxsec.net import dnswire
from mxsec.net.dnswire import WireError

LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
NAMES = st.lists(LABEL, min_size=1, max_size=4).map(lambda labels: ".".join(labels) + ".zone.test.")


@st.composite
def rrset_values(draw, rdtype: str) -> list[str]:
    count = draw(st.integers(1, 4))
    out = []
    for _ in range(count):
        if rdtype == "TXT":
            parts = draw(st.lists(st.text(alphabet="abcdefgh =;0123456789", max_size=20), min_size=1, max_size=3))
            out.append(" ".join(f'"{p}"' for p in parts))
        elif rdtype == "MX":
            out.append(f"{draw(st.integers(0, 65535))} {draw(NAMES)}")
        elif rdtype == "A":
            out.append(".".join(str(draw(st.integers(0, 255))) for _ in range(4)))
        elif rdtype == "AAAA":
            out.append(":".join(f"{draw(st.integers(0, 65535)):x}" for _ in range(8)))
        else:  # TLSA
            mtype = draw(st.integers(0, 2))
            size = {1: 32, 2: 64}.get(mtype) or draw(st.integers(1, 40))  # dnspython insists on digest sizes
            data = draw(st.binary(min_size=size, max_size=size)).hex()
            out.append(f"{draw(st.integers(0, 3))} {draw(st.integers(0, 1))} {mtype} {data}")
    return out


@st.composite
def responses(draw):
    rdtype = draw(st.sampled_from(["TXT", "MX", "A", "AAAA", "TLSA"]))
    qname = draw(NAMES)
    query = dns.message.make_query(qname, rdtype, want_dnssec=True)
    response = dns.message.make_response(query)
    response.set_rcode(draw(st.sampled_from([dns.rcode.NOERROR, dns.rcode.NOERROR, dns.rcode.NXDOMAIN])))
    if draw(st.booleans()):
        response.flags |= dns.flags.AD
    owner = qname
    chain = draw(st.lists(NAMES.filter(lambda n: n != qname), max_size=3, unique=True))
    for target in chain:  # a CNAME chain first (a well-formed one: no name twice)
        response.answer.append(dns.rrset.from_text(owner, draw(st.integers(0, 86400)), "IN", "CNAME", target))
        owner = target
    if draw(st.booleans()):
        ttl = draw(st.integers(0, 2**31 - 1))
        response.answer.append(dns.rrset.from_text_list(owner, ttl, "IN", rdtype, draw(rrset_values(rdtype))))
    if draw(st.booleans()):  # an unrelated RRset that must be ignored
        response.answer.append(dns.rrset.from_text(draw(NAMES), 60, "IN", "A", "192.0.2.1"))
    return query, response, rdtype


def _dnspython_view(query, wire: bytes, rdtype: str):
    message = dns.message.from_wire(wire)
    if message.rcode() == dns.rcode.NXDOMAIN:  # the resolver says NXDOMAIN whatever the answer section holds
        return message.rcode(), bool(message.flags & dns.flags.AD)
    try:
        chain = message.resolve_chaining()
    except dns.message.ChainTooLong:
        return "error"
    rrset = chain.answer
    canonical = chain.canonical_name.to_text(omit_final_dot=True)
    records = []
    if rrset is not None:
        for rd in rrset:
            if rdtype == "TXT":
                records.append(b"".join(rd.strings))
            elif rdtype == "MX":
                records.append((rd.preference, rd.exchange.to_text(omit_final_dot=True).lower()))
            elif rdtype in ("A", "AAAA"):
                records.append(rd.to_text())
            else:
                records.append((rd.usage, rd.selector, rd.mtype, bytes(rd.cert)))
    return (message.rcode(), bool(message.flags & dns.flags.AD), canonical.lower(), records,
            int(rrset.ttl) if rrset is not None else None)


DECODERS = {"TXT": dnswire.decode_txt, "MX": dnswire.decode_mx, "A": dnswire.decode_a,
            "AAAA": dnswire.decode_aaaa, "TLSA": dnswire.decode_tlsa}


@settings(max_examples=300, deadline=None)
@given(responses())
def test_parse_response_agrees_with_dnspython(case) -> None:
    query, response, rdtype = case
    wire = response.to_wire()
    code = int(dns.rdatatype.from_text(rdtype))
    try:
        parsed = dnswire.parse_response(wire, query.id, query.question[0].name.to_wire(), code)
    except WireError:  # a CNAME loop: dnspython gives up too
        assert _dnspython_view(query, wire, rdtype) == "error"
        return
    assert parsed is not None
    if parsed.rcode == dns.rcode.NXDOMAIN:
        assert (parsed.rcode, parsed.ad) == _dnspython_view(query, wire, rdtype)
        return
    decode = DECODERS[rdtype]
    ours = (parsed.rcode, parsed.ad, dnswire.name_text(parsed.canonical),
            [decode(wire, start, length) for start, length in parsed.records], parsed.ttl)
    assert ours == _dnspython_view(query, wire, rdtype)


def test_query_is_what_dnspython_would_send() -> None:
    wire = dnswire.encode_query(0x1234, dnswire.query_name("_mta-sts.Example.TEST"), dns.rdatatype.TXT)
    message = dns.message.from_wire(wire)
    assert message.id == 0x1234
    assert message.flags & dns.flags.RD and message.flags & dns.flags.AD
    assert message.ednsflags & dns.flags.DO and message.payload == 1232 and message.edns == 0
    assert message.question[0].name == dns.name.from_text("_mta-sts.example.test")
    assert message.question[0].rdtype == dns.rdatatype.TXT


@pytest.mark.parametrize("name", ["a" * 64 + ".test", "a..b", "x." * 130])
def test_bad_names_are_value_errors(name: str) -> None:
    with pytest.raises(ValueError):
        dnswire.query_name(name)


def test_escaped_and_unicode_names_go_through_dnspython() -> None:
    assert dnswire.query_name("a\\.b.test") == dns.name.from_text("a\\.b.test").to_wire()
    assert dnswire.query_name("bücher.test") == dns.name.from_text("bücher.test").to_wire()


def _response(qname="q.test.", rdtype="A", values=("192.0.2.1",)):
    query = dns.message.make_query(qname, rdtype)
    response = dns.message.make_response(query)
    if values:
        response.answer.append(dns.rrset.from_text_list(qname, 60, "IN", rdtype, list(values)))
    return query, response


def test_answers_to_other_questions_are_not_ours() -> None:
    """A forged or stray datagram (other ID, other name, other type, not a response) is ignored, not taken."""
    query, response = _response()
    wire = response.to_wire()
    qname = dns.name.from_text("q.test").to_wire()
    assert dnswire.parse_response(wire, query.id ^ 1, qname, 1) is None
    assert dnswire.parse_response(wire, query.id, dns.name.from_text("other.test").to_wire(), 1) is None
    assert dnswire.parse_response(wire, query.id, qname, 28) is None
    assert dnswire.parse_response(query.to_wire(), query.id, qname, 1) is None  # QR not set
    assert dnswire.parse_response(wire, query.id, dns.name.from_text("Q.TEST").to_wire(), 1) is not None


def test_cname_loop_and_long_chain_are_errors() -> None:
    query = dns.message.make_query("a.test", "TXT")
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("a.test.", 60, "IN", "CNAME", "b.test."))
    response.answer.append(dns.rrset.from_text("b.test.", 60, "IN", "CNAME", "a.test."))
    with pytest.raises(WireError, match="loop"):
        dnswire.parse_response(response.to_wire(), query.id, dns.name.from_text("a.test").to_wire(), 16)
    response = dns.message.make_response(query)
    names = ["a.test."] + [f"c{i}.test." for i in range(dnswire.MAX_CHAIN + 2)]
    for owner, target in zip(names, names[1:]):
        response.answer.append(dns.rrset.from_text(owner, 60, "IN", "CNAME", target))
    with pytest.raises(WireError, match="chain"):
        dnswire.parse_response(response.to_wire(), query.id, dns.name.from_text("a.test").to_wire(), 16)


def test_forward_compression_pointer_is_refused() -> None:
    query, response = _response(values=())
    wire = bytearray(response.to_wire())
    struct.pack_into("!H", wire, 6, 1)  # one answer record...
    wire += b"\xc0\xff" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x01\x02\x03\x04"  # ...owner pointing forward
    with pytest.raises(WireError):
        dnswire.parse_response(bytes(wire), query.id, dns.name.from_text("q.test").to_wire(), 1)


def test_mutated_responses_never_raise_anything_but_wire_error() -> None:
    rng = random.Random(8461)
    seeds = []
    for rdtype, values in (("TXT", ['"v=STSv1; id=1"']), ("MX", ["10 mx.q.test."]), ("A", ["192.0.2.1"]),
                           ("TLSA", ["3 1 1 " + "ab" * 32])):
        query, response = _response(rdtype=rdtype, values=values)
        seeds.append((query.id, int(dns.rdatatype.from_text(rdtype)), response.to_wire()))
    qname = dns.name.from_text("q.test").to_wire()
    for _ in range(20000):
        qid, code, wire = rng.choice(seeds)
        data = bytearray(wire)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.6:
                data[pos] = rng.randrange(256)
            elif choice < 0.8:
                del data[pos]
            else:
                data.insert(pos, rng.randrange(256))
        try:
            parsed = dnswire.parse_response(bytes(data), qid, qname, code)
            if parsed is not None:
                for start, length in parsed.records:
                    DECODERS[dns.rdatatype.to_text(code)](bytes(data), start, length)
        except WireError:
            pass
