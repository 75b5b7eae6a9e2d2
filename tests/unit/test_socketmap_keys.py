"""Socketmap key → policy domain (RFC 8461 §3.4)."""

import pytest

from mxsec.daemon.server import NotApplicable, policy_domain_from_key
from mxsec.daemon.socketmap import RequestError
from mxsec.names import DomainError


def test_plain_domain_normalised():
    assert policy_domain_from_key("Example.COM.") == "example.com"


def test_idn_key_becomes_a_label():
    assert policy_domain_from_key("bücher.example") == "xn--bcher-kva.example"


def test_sts_a_14_smart_host_is_the_policy_domain():
    assert policy_domain_from_key("[relay.example.net]") == "relay.example.net"
    assert policy_domain_from_key("[relay.example.net]:587") == "relay.example.net"


@pytest.mark.parametrize("key", ["[192.0.2.1]", "192.0.2.1", "[IPv6:2001:db8::1]", "[192.0.2.1]:25"])
def test_sts_a_16_address_literals_have_no_policy(key):
    with pytest.raises(NotApplicable):
        policy_domain_from_key(key)


def test_sts_a_15_parent_domain_keys_not_looked_up():
    with pytest.raises(NotApplicable):
        policy_domain_from_key(".example.com")


@pytest.mark.parametrize("key", ["[relay.example", "[relay]x", "exa mple.com", "-bad-.example", "a" * 300])
def test_garbage_keys_rejected(key):
    with pytest.raises((DomainError, RequestError)):
        policy_domain_from_key(key)
