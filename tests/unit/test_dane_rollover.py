"""The TLSA rollover planner (mxsec.dane.rollover): records, steps, waits, warnings, bad input. No I/O."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization

from mxsec.dane.rollover import RolloverError, duration_text, load_certificate, plan_rollover
from mxsec.dane.tlsa import tlsa_for_certificate
from mxsec.testing.pki import TestCA, pem_to_der
from mxsec.errors import ParseError

HOST = "mx.example.test"
OWNER = "_25._tcp.mx.example.test."


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("rollover test CA")


@pytest.fixture(scope="module")
def two_keys(ca):
    current, _ = ca.issue([HOST], fresh_key=True)
    nxt, _ = ca.issue([HOST], fresh_key=True)
    return current, nxt


def rr(cert: bytes, usage: int = 3, selector: int = 1, mtype: int = 1, owner: str = OWNER) -> str:
    return f"{owner} IN TLSA {tlsa_for_certificate(cert, usage, selector, mtype).to_text()}"


def test_dane_h_36_new_key_publishes_current_and_next_then_removes_current(two_keys):
    current, nxt = two_keys
    plan = plan_rollover(current, nxt, HOST)
    assert not plan.same_record
    assert plan.publish == (rr(current), rr(nxt))
    assert plan.remove == (rr(current),)
    assert [s.action for s in plan.steps] == ["publish", "wait", "switch", "remove"]
    assert [s.number for s in plan.steps] == [1, 2, 3, 4]
    assert plan.steps[0].records == (rr(current), rr(nxt))
    assert plan.steps[3].records == (rr(current),)
    assert plan.owner == OWNER and plan.host == HOST and plan.port == 25


def test_wait_is_twice_the_ttl_and_mentions_verify(two_keys):
    current, nxt = two_keys
    plan = plan_rollover(current, nxt, HOST, ttl=900)
    assert plan.wait_seconds == 1800
    wait = plan.steps[1]
    text = " ".join(wait.lines)
    assert "1800 s" in wait.title and "900 s" in text
    assert "authoritative" in text
    assert "mxsec dane verify --host mx.example.test" in text
    assert plan_rollover(current, nxt, HOST).wait_seconds == 7200  # default TTL 3600


def test_same_key_with_selector_1_needs_no_dns_change(ca):
    current, _ = ca.issue([HOST])  # both leaves use the CA's shared leaf key
    renewed, _ = ca.issue([HOST, "mx2.example.test"])
    plan = plan_rollover(current, renewed, HOST)
    assert plan.same_record and plan.wait_seconds == 0
    assert plan.publish == (rr(current),) and plan.remove == ()
    assert "No DNS change" in plan.steps[0].title
    assert "same public key" in plan.steps[0].lines[0]
    assert plan.as_dict()["dns_change_needed"] is False


def test_same_key_with_selector_0_is_a_change_and_warns(ca):
    current, _ = ca.issue([HOST])
    renewed, _ = ca.issue([HOST])
    plan = plan_rollover(current, renewed, HOST, selector=0)
    assert not plan.same_record
    assert any("selector 0" in w for w in plan.warnings)


def test_port_and_host_normalisation_in_the_owner(two_keys):
    current, nxt = two_keys
    plan = plan_rollover(current, nxt, "MX.Example.TEST.", port=587)
    assert plan.owner == "_587._tcp.mx.example.test."
    assert all(line.startswith("_587._tcp.mx.example.test. IN TLSA 3 1 1 ") for line in plan.publish)
    assert "--port 587" in " ".join(plan.steps[2].lines)


def test_usage_2_is_a_ca_rollover(ca):
    next_ca = TestCA("next rollover CA")
    plan = plan_rollover(ca.cert_pem, next_ca.cert_pem, HOST, usage=2)
    assert plan.publish == (rr(ca.cert_pem, usage=2), rr(next_ca.cert_pem, usage=2))
    assert plan.parameters == "DANE-TA(2) SPKI(1) SHA2-256(1)"
    assert plan.warnings == ()
    switch = " ".join(plan.steps[2].lines)
    assert "issued by the next CA" in switch and "chain" in switch


def test_usage_2_with_a_leaf_warns(ca, two_keys):
    current, nxt = two_keys
    plan = plan_rollover(current, nxt, HOST, usage=2)
    assert any("not a CA certificate" in w for w in plan.warnings)


def test_usage_3_with_a_ca_certificate_warns(ca):
    plan = plan_rollover(ca.cert_pem, TestCA("x").cert_pem, HOST)
    assert any("use --usage 2" in w for w in plan.warnings)


def test_der_input_and_mtype_2(two_keys):
    current, nxt = two_keys
    plan = plan_rollover(pem_to_der(current), pem_to_der(nxt), HOST, mtype=2)
    assert plan.publish == (rr(current, mtype=2), rr(nxt, mtype=2))
    assert len(plan.current.record.data) == 64


def test_fullchain_input_uses_the_first_certificate_and_says_so(ca, two_keys):
    current, nxt = two_keys
    plan = plan_rollover(current + ca.cert_pem, nxt, HOST)
    assert plan.publish[0] == rr(current)
    assert any("holds 2 certificates" in w for w in plan.warnings)


def test_expired_next_certificate_warns(ca, two_keys):
    current, _ = two_keys
    expired, _ = ca.expired([HOST])
    plan = plan_rollover(current, expired, HOST)
    assert any("expired" in w and "DANE-EE(3) ignores expiry" in w for w in plan.warnings)
    later = plan_rollover(current, two_keys[1], HOST, now=dt.datetime(2000, 1, 1))
    assert any("valid only from" in w for w in later.warnings)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a valid PEM certificate"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "no PEM CERTIFICATE block"),
        (b"\x30\x03\x02\x01\x01", "neither a PEM nor a DER certificate"),
        (b"hello", "neither a PEM nor a DER certificate"),
    ],
)
def test_bad_certificate_input_is_a_rollover_error(two_keys, data, message):
    with pytest.raises(RolloverError) as info:
        plan_rollover(two_keys[0], data, HOST, next_source="next.pem")
    assert message in str(info.value)
    assert "next certificate next.pem" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_key_file_is_not_a_certificate(ca, two_keys):
    key_pem = ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    with pytest.raises(RolloverError, match="no PEM CERTIFICATE block"):
        plan_rollover(key_pem, two_keys[1], HOST)


@pytest.mark.parametrize(
    "kwargs",
    [{"usage": 1}, {"usage": 0}, {"selector": 2}, {"mtype": 3}, {"ttl": -1}, {"port": 0}, {"usage": True}],
)
def test_bad_parameters_are_rollover_errors(two_keys, kwargs):
    with pytest.raises(RolloverError):
        plan_rollover(*two_keys, HOST, **kwargs)


@pytest.mark.parametrize("host", ["192.0.2.1", "bad host", ""])
def test_dane_h_11_bad_host_is_a_parse_error(two_keys, host):
    with pytest.raises(ParseError):
        plan_rollover(*two_keys, host)


def test_as_dict_is_json_ready(two_keys):
    import json

    plan = plan_rollover(*two_keys, HOST, ttl=60)
    data = json.loads(json.dumps(plan.as_dict()))
    assert data["publish_now"] == list(plan.publish)
    assert data["remove_after_switch"] == list(plan.remove)
    assert data["wait_seconds"] == 120
    assert [s["action"] for s in data["steps"]] == ["publish", "wait", "switch", "remove"]
    assert data["current"]["record"].startswith("3 1 1 ")


def test_load_certificate_counts_certificates(ca, two_keys):
    cert, count = load_certificate(two_keys[0] + two_keys[1] + ca.cert_pem)
    assert count == 3 and cert.subject.rfc4514_string() == f"CN={HOST}"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (90, "90 s"), (600, "600 s (10 min)"), (7200, "7200 s (2 h)"), (172800, "172800 s (2 days)")],
)
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text
