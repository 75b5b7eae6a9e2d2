"""The parts of mxsec.reports.imap that need no server: names, UID sets, FETCH responses, settings checks.

The IMAP exchanges themselves are tested against a real Dovecot in tests/integration/test_reports_imap.py.
"""

from __future__ import annotations

import pytest

from mxsec.errors import ConfigError
from mxsec.reports.imap import (
    FETCH_BYTES,
    FETCH_MESSAGES,
    Account,
    Plan,
    _fetch_responses,
    _groups,
    check_account,
    check_plan,
    is_loopback,
    mailbox_name,
    uid_sets,
)


@pytest.mark.parametrize("name,wire", [
    ("INBOX", '"INBOX"'),
    ("Reports/Processed", '"Reports/Processed"'),
    ("A & B", '"A &- B"'),
    ("台北", '"&U,BTFw-"'),  # the example of RFC 3501 §5.1.3
    ("Traités", '"Trait&AOk-s"'),
    ('say "hi"\\', '"say \\"hi\\"\\\\"'),
])
def test_mailbox_names_are_modified_utf7_quoted(name, wire):
    assert mailbox_name(name) == wire


def test_uid_sets_are_ranges_in_bounded_chunks():
    assert list(uid_sets([7, 1, 2, 3, 5, 8, 3])) == ["1:3,5,7:8"]
    assert list(uid_sets(range(1, 8), 3)) == ["1:3", "4:6", "7"]
    assert list(uid_sets([])) == []


def test_fetch_responses_find_uid_before_or_after_the_literal():
    data = [
        (b"1 (UID 10 BODY[]<0> {5}", b"hello"), b")",
        (b"2 (BODY[]<0> {3}", b"abc"), b" UID 11)",
        b"3 (UID 12 FLAGS (\\Seen))",  # an unsolicited flag update
        b"4 (UID 13 RFC822.SIZE 99)",
    ]
    assert list(_fetch_responses(data)) == [
        (b"1 (UID 10 BODY[]<0> {5})", b"hello"),
        (b"2 (BODY[]<0> {3} UID 11)", b"abc"),
        (b"3 (UID 12 FLAGS (\\Seen))", None),
        (b"4 (UID 13 RFC822.SIZE 99)", None),
    ]


def test_groups_bound_messages_and_bytes_and_skip_oversized_weight():
    uids = list(range(1, 2 * FETCH_MESSAGES + 2))
    assert [len(g) for g in _groups(uids, {u: 1 for u in uids}, 10)] == [FETCH_MESSAGES, FETCH_MESSAGES, 1]
    half = FETCH_BYTES // 2 + 1
    assert list(_groups([1, 2, 3], {1: half, 2: half, 3: 10 * FETCH_BYTES}, FETCH_BYTES)) == [[1], [2, 3]]


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST.", True), ("192.0.2.1", False), ("imap.example.com", False), ("localhost.example", False),
])
def test_loopback_detection(host, loopback):
    assert is_loopback(host) is loopback


def account(**kw) -> Account:
    return Account(**{"host": "imap.example.com", "user": "u", "password": "p", **kw})


@pytest.mark.parametrize("kw,words", [
    ({"security": "none"}, "loopback"),
    ({"security": "ssl"}, "--security"),
    ({"host": "two words"}, "--host"),
    ({"user": ""}, "--user"),
    ({"password": "a\nb"}, "password"),
    ({"mailbox": "in\rbox"}, "--mailbox"),
])
def test_unusable_accounts_are_refused_before_connecting(kw, words):
    with pytest.raises(ConfigError, match=words):
        check_account(account(**kw))


def test_plain_imap_on_loopback_is_allowed_and_ports_default_by_security():
    check_account(account(host="127.0.0.1", security="none"))
    assert account().address == "imap.example.com:993"
    assert account(security="starttls").address == "imap.example.com:143"
    assert account(host="::1", port=1143).address == "[::1]:1143"
    assert "sekrit-value" not in repr(account(password="sekrit-value"))  # the password is not shown


@pytest.mark.parametrize("plan,words", [
    (Plan(move_to="INBOX"), "--move-to"),
    (Plan(move_rejected="INBOX"), "--move-rejected"),
    (Plan(move_to=""), "--move-to"),
    (Plan(limit=0), "--limit"),
])
def test_unusable_plans_are_refused(plan, words):
    with pytest.raises(ConfigError, match=words):
        check_plan(plan, "INBOX")
