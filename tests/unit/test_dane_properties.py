"""Property tests for the sans-I/O DANE core.

* Robustness: ``parse_tlsa`` raises only ``TlsaError``; ``usable``/``select_usable``/``verify_chain`` never raise,
  whatever the records, chain bytes (random, truncated or bit-flipped real certificates) and names.
* Round trips: ``to_text`` output parses back to the same record, also when re-split and lower-cased.
* Invariants: the result's flags agree with each other; digest agility keeps a subset.
"""

from __future__ import annotations

import datetime as dt
import functools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxsec.dane.tlsa import (
    TlsaError,
    TlsaRecord,
    parse_tlsa,
    partition,
    select_usable,
    tlsa_for_certificate,
    usable,
)
from mxsec.dane.verify import MAX_CHAIN, verify_chain
from mxsec.testing.pki import TestCA, pem_to_der

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAME = "mx.example.test"
UINT8 = st.integers(min_value=0, max_value=255)


@functools.lru_cache(maxsize=1)
def _world() -> tuple[bytes, bytes, bytes]:
    root = TestCA("dane property root")
    sub = root.intermediate("dane property CA")
    leaf = pem_to_der(sub.issue([NAME], fresh_key=True)[0])
    return leaf, sub.cert_der, root.cert_der


def _mutate(der: bytes, data: st.DataObject) -> bytes:
    how = data.draw(st.sampled_from(["flip", "truncate", "extend", "same"]))
    if how == "same" or not der:
        return der
    if how == "truncate":
        return der[: data.draw(st.integers(0, len(der) - 1))]
    if how == "extend":
        return der + data.draw(st.binary(min_size=1, max_size=8))
    pos = data.draw(st.integers(0, len(der) - 1))
    return der[:pos] + bytes([der[pos] ^ data.draw(st.integers(1, 255))]) + der[pos + 1 :]


TLSA_PIECES = st.sampled_from(
    ["3", "2", "1", "0", "255", "256", " ", "\t", "\n", "(", ")", ";", "AB", "ab", "0g", "F", "-1", "é", "\u0663", "00" * 32]
)
TEXT = st.one_of(st.text(max_size=80), st.lists(TLSA_PIECES, max_size=14).map("".join))
RAW_RECORD = st.builds(
    TlsaRecord,
    st.one_of(st.sampled_from([0, 1, 2, 3]), UINT8),
    st.one_of(st.sampled_from([0, 1]), UINT8),
    st.one_of(st.sampled_from([0, 1, 2]), UINT8),
    st.one_of(st.binary(max_size=80), st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64)),
)


@st.composite
def records(draw: st.DrawFn) -> list[TlsaRecord]:
    leaf, sub, root = _world()
    real = [
        tlsa_for_certificate(cert, usage, selector, mtype)
        for cert, usage in ((leaf, 3), (sub, 2), (root, 2))
        for selector in (0, 1)
        for mtype in (0, 1, 2)
    ]
    return draw(st.lists(st.one_of(RAW_RECORD, st.sampled_from(real)), max_size=6))


@st.composite
def chains(draw: st.DrawFn) -> list[bytes]:
    leaf, sub, root = _world()
    data = draw(st.data())
    element = st.one_of(
        st.binary(max_size=200),
        st.sampled_from([leaf, sub, root]).map(lambda der: _mutate(der, data)),
        st.sampled_from([leaf, sub, root]),
    )
    return draw(st.lists(element, max_size=MAX_CHAIN + 2))


NAMES = st.lists(st.one_of(st.just(NAME), st.text(max_size=20), st.just("*.example.test")), max_size=3)
NOW = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)
)


@FAST
@given(TEXT)
def test_parse_tlsa_raises_only_tlsa_error(text: str) -> None:
    try:
        record = parse_tlsa(text)
    except TlsaError:
        return
    assert parse_tlsa(record.to_text()) == record


@FAST
@given(st.builds(TlsaRecord, UINT8, UINT8, UINT8, st.binary(min_size=1, max_size=100)), st.data())
def test_to_text_parse_round_trip(record: TlsaRecord, data: st.DataObject) -> None:
    text = record.to_text()
    assert parse_tlsa(text) == record
    usage, selector, mtype, hexdata = text.split(" ")
    cut = data.draw(st.integers(0, len(hexdata)))
    split = f"{usage}\t{selector} {mtype} ( {hexdata[:cut].lower()} ; comment\n  {hexdata[cut:]} )"
    assert parse_tlsa(split) == record


@FAST
@given(st.lists(RAW_RECORD, max_size=8), st.sampled_from([(2, 1), (1, 2), (1,), (2,), ()]))
def test_select_usable_never_raises_and_keeps_a_usable_subset(items: list[TlsaRecord], order: tuple[int, ...]) -> None:
    kept, dropped = partition(items, order=order)
    assert kept == select_usable(items, order=order)
    assert all(usable(r, order=order) is None and r in items for r in kept)
    assert {r for r in items} == set(kept) | {r for r, _ in dropped}


@FAST
@given(records(), chains(), NAMES, NOW)
def test_verify_chain_never_raises(recs: list[TlsaRecord], chain: list[bytes], names: list[str], now: dt.datetime) -> None:
    result = verify_chain(recs, chain, names=names, now=now)
    assert isinstance(result.reason, str) and result.reason
    if result.authenticated:
        assert result.ok and result.matched is not None and result.result_type is None
        assert usable(result.matched) is None
    if not result.ok:
        assert result.result_type in ("validation-failure", "certificate-expired", "certificate-host-mismatch")
        assert result.tls_required and result.matched is None
    if not recs:
        assert result.ok and not result.tls_required
    if not select_usable(recs):
        assert result.ok and not result.authenticated


@FAST
@given(
    st.lists(st.one_of(RAW_RECORD, st.text(max_size=5), st.none(), st.integers()), max_size=4),
    st.lists(st.one_of(st.binary(max_size=50), st.text(max_size=5), st.none(), st.integers()), max_size=4),
)
def test_verify_chain_odd_types_never_raise(recs: list[object], chain: list[object]) -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    result = verify_chain(recs, chain, names=[NAME], now=now)  # type: ignore[arg-type]
    assert not result.authenticated
