"""``mxsec daemon --record-policies``: a real daemon records what it answered per domain in the TLSRPT
database, once per change, for the log followers (``mxsec tlsrpt follow-log``) to join sessions with."""

from __future__ import annotations

import time

import pytest

from mxsec.testing.fakeworld import FakeWorld, PolicySpec, WorldThread, policy_text
from mxsec.storage.senderdb import SenderDB
from mxsec.tlsrpt.served import ServedPolicy
from mxsec.tlsrpt.session import PolicyType

from .daemonproc import Daemon

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    fw = FakeWorld(dns=("127.0.83.1", 0), https=("127.0.83.2", 443), state_dir=tmp_path_factory.mktemp("world"))
    fw.add_domain("enforce.test", txt=["v=STSv1; id=1"],
                  policy=PolicySpec(body=policy_text(["mx.enforce.test", "*.backup.enforce.test"])))
    fw.add_domain("broken.test", txt=["v=STSv1; id=1"], policy=PolicySpec(status=500))
    fw.add_domain("plain.test")
    thread = WorldThread(fw)
    thread.start()
    yield fw
    thread.stop()


def _served(db_url: str, domain: str, deadline: float = 10.0) -> ServedPolicy:
    end = time.monotonic() + deadline
    while True:
        with SenderDB(db_url) as db:
            text = db.served_at(domain, time.time())
        if text is not None:
            return ServedPolicy.from_json(text)
        assert time.monotonic() < end, f"nothing recorded for {domain}"
        time.sleep(0.1)


def test_answers_are_recorded_once_per_change(world, tmp_path):
    db_url = f"sqlite:///{tmp_path}/tlsrpt.sqlite3"
    config = tmp_path / "mxsec.toml"
    config.write_text(f'[tlsrpt]\ndb = "{db_url}"\n')
    daemon = Daemon(tmp_path, world=world, config=config, extra=["--record-policies"]).start()
    try:
        client = daemon.client()
        assert client.ask("enforce.test").startswith("OK secure")
        assert client.ask("broken.test") == "NOTFOUND "
        assert client.ask("plain.test") == "NOTFOUND "
        for _ in range(3):  # the same answers again: nothing new to record
            client.ask("enforce.test", "tlsrpt")
        enforce = _served(db_url, "enforce.test")
        assert enforce.sts is not None and enforce.sts.type is PolicyType.STS
        assert enforce.sts_mode == "enforce"
        assert enforce.sts.mx_hosts == ("mx.enforce.test", "*.backup.enforce.test")
        assert "mode: enforce" in enforce.sts.strings
        broken = _served(db_url, "broken.test")
        assert broken.sts is None and broken.sts_failure == "sts-policy-fetch-error"
        plain = _served(db_url, "plain.test")
        assert plain.sts is None and plain.sts_failure is None and plain.tlsa == {}
    finally:
        daemon.stop()
    with SenderDB(db_url) as db:
        rows = db._query("SELECT domain, count(*) FROM tlsrpt_out_served GROUP BY domain")
    assert dict(rows) == {"enforce.test": 1, "broken.test": 1, "plain.test": 1}
