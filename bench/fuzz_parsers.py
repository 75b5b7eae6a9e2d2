"""Mutation fuzzing of every parser on the daemon's input path: nothing but the parser's own error may escape.

    .venv/bin/python bench/fuzz_parsers.py [--count 1000000] [--seed 1]

For each parser, ``count`` inputs are made from valid seeds by random byte flips, insertions, deletions,
duplications and splices (plus some purely random inputs), and fed to the parser. Any exception other than
the parser's own error type is printed with the input that caused it, and the exit status is 1. Bounded by
``count``; prints inputs/s per parser.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import dns.message
import dns.rrset

from mxsec.daemon.socketmap import NetstringDecoder, RequestError, parse_request
from mxsec.net import dnswire
from mxsec.names import DomainError, normalize_domain
from mxsec.sts.policy import PolicyError, parse_policy
from mxsec.sts.record import RecordError, parse_record, select_record

POLICY_SEEDS = [
    b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n",
    b"version: STSv1\nmode: testing\nmx: mx1.example.org\nmax_age: 86400\n",
    b"\xef\xbb\xbfversion: STSv1\nmode: none\nmax_age: 1\n",
    b"version: STSv1\nmode: enforce\nmx: xn--bcher-kva.example\nmax_age: 9999999999\nfoo: bar\n",
]
RECORD_SEEDS = [b"v=STSv1; id=20240101T000000;", b"v=STSv1 ; id=abc; ext=value", b"v=STSv1;id=1"]
NETSTRING_SEEDS = [b"19:postfix example.com,", b"27:QUERY xn--bcher-kva.example.,5:x y z,", b"0:,"]
DOMAIN_SEEDS = [b"Example.COM.", b"b\xc3\xbccher.example", b"[192.0.2.1]", b"xn--bcher-kva.example"]
DNS_QUERY_ID = 0x4242
DNS_QUESTIONS = {16: "_mta-sts.example.test.", 15: "example.test.", 1: "mx.example.test.", 28: "mx.example.test.",
                 52: "_25._tcp.mx.example.test."}
DNS_DECODERS = {16: dnswire.decode_txt, 15: dnswire.decode_mx, 1: dnswire.decode_a, 28: dnswire.decode_aaaa,
                52: dnswire.decode_tlsa}


def dns_seeds() -> list[bytes]:
    """Answers (with a CNAME in front of some) to the questions the daemon asks, made by dnspython."""
    values = {16: ['"v=STSv1; " "id=20240101"'], 15: ["10 mx.example.test.", "20 mx2.example.test."],
              1: ["192.0.2.1"], 28: ["2001:db8::1"], 52: ["3 1 1 " + "ab" * 32]}
    out = []
    for rdtype, name in DNS_QUESTIONS.items():
        for cname in (False, True):
            query = dns.message.make_query(name, rdtype, want_dnssec=True)
            query.id = DNS_QUERY_ID
            response = dns.message.make_response(query)
            owner = name
            if cname:
                owner = "target.example.net."
                response.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", owner))
            response.answer.append(dns.rrset.from_text_list(owner, 300, "IN", rdtype, values[rdtype]))
            out.append(bytes([rdtype]) + response.to_wire())  # first byte: which question it answers
    return out


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    if rng.random() < 0.05:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(5)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[pos:pos] = bytes([rng.choice((0, 9, 10, 13, 32, 58, 59, 61, 42, 46, 0xFF, rng.getrandbits(8)))])
        elif op == 2 and data:
            del data[pos:pos + rng.randrange(1, 8)]
        elif op == 3 and data:
            chunk = data[pos:pos + rng.randrange(1, 16)]
            data[pos:pos] = chunk * rng.randrange(1, 4)
        else:
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            data[pos:] = other[cut:]
    return bytes(data)


def run_policy(data: bytes) -> None:
    try:
        parse_policy(data)
    except PolicyError:
        pass


def run_record(data: bytes) -> None:
    text = data.decode("ascii", "replace")
    try:
        parse_record(text)
    except RecordError:
        pass
    select_record([text, text[: len(text) // 2]])  # never raises


def run_netstring(data: bytes) -> None:
    for item in NetstringDecoder().feed(data):
        if isinstance(item, bytes):
            try:
                parse_request(item)
            except RequestError:
                pass


def run_domain(data: bytes) -> None:
    try:
        normalize_domain(data.decode("utf-8", "replace"))
    except DomainError:
        pass


def run_dns(data: bytes) -> None:
    rdtype = {16: 16, 15: 15, 1: 1, 28: 28, 52: 52}.get(data[0] if data else 0, 16)
    wire = data[1:]
    try:
        parsed = dnswire.parse_response(wire, DNS_QUERY_ID, dnswire.query_name(DNS_QUESTIONS[rdtype]), rdtype)
        if parsed is not None:
            for start, length in parsed.records:
                DNS_DECODERS[rdtype](wire, start, length)
            dnswire.name_text(parsed.canonical)
    except dnswire.WireError:
        pass


TARGETS = [
    ("policy file", run_policy, POLICY_SEEDS),
    ("_mta-sts TXT record", run_record, RECORD_SEEDS),
    ("socketmap netstrings", run_netstring, NETSTRING_SEEDS),
    ("domain names", run_domain, DOMAIN_SEEDS),
    ("DNS answers (dnswire)", run_dns, dns_seeds()),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    failures = 0
    for name, fn, seeds in TARGETS:
        rng = random.Random(args.seed)
        started = time.perf_counter()
        for _ in range(args.count):
            data = mutate(rng, seeds)
            try:
                fn(data)
            except Exception as exc:  # the finding this tool exists for
                failures += 1
                print(f"FAIL {name}: {type(exc).__name__}: {exc} on input {data!r}")
                if failures > 20:
                    return 1
        elapsed = time.perf_counter() - started
        print(f"{name:24} {args.count:>9,} inputs  {args.count / elapsed:>9,.0f}/s  escaped errors: "
              f"{failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
