"""TLSRPT log parsers: lines per second of the Postfix and Exim mail-log parsers on an ordinary log.

    .venv/bin/python bench/tlsrpt_logs.py [--lines 200000] [--seed 1] [--rounds 3]

Generates ``--lines`` lines of a realistic log per MTA in memory (no files, no network) and feeds them, one
``feed()`` call per line, to :class:`mxsec.tlsrpt.postfix_log.PostfixLogParser` and
:class:`mxsec.tlsrpt.exim_log.EximLogParser`, then ``flush()``. Prints lines/s (best of ``--rounds``), the
attempts found and the parser's state size at the end.

The Postfix log mixes what a busy relay writes: inbound ``smtpd`` connections (connect, ``NOQUEUE`` rejects,
disconnect), ``pickup``/``cleanup``/``qmgr`` lines of each message, and outbound ``smtp`` deliveries of 1–3
recipients over TLS (mostly ``Verified``/``Untrusted`` and delivered; some certificate failures, some hosts
without STARTTLS, some refused connections, several ``smtp`` processes interleaved). The Exim log has the
arrival, delivery (``=>``/``->``), deferral (``==``, per-host ``H=`` lines) and ``Completed`` lines of each
message, and inbound connection lines without a message id (connections, rejected recipients). The target is
at least 100,000 lines/s per parser on a small machine.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from mxsec.tlsrpt.exim_log import EximLogParser  # noqa: E402
from mxsec.tlsrpt.postfix_log import PostfixLogParser  # noqa: E402

CIPHER = ("TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature "
          "RSA-PSS (2048 bits) server-digest SHA256")
EXIM_X = "X=TLS1.3:ECDHE_SECP256R1__RSA_PSS_RSAE_SHA256__AES_256_GCM:256"
ALPHABET = "0123456789ABCDEF"
EXIM_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _stamp(second: int) -> str:
    minute, sec = divmod(second % 86400, 60)
    hour, minute = divmod(minute, 60)
    return f"Dec  2 {hour:02d}:{minute:02d}:{sec:02d}"


def _exim_stamp(second: int) -> str:
    minute, sec = divmod(second % 86400, 60)
    hour, minute = divmod(minute, 60)
    return f"2026-12-02 {hour:02d}:{minute:02d}:{sec:02d}"


def postfix_lines(count: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    domains = [f"d{n}.example" for n in range(500)]
    out: list[str] = []
    pending: list[list[str]] = []  # per smtp process: lines still to write (interleaved)
    busy: dict[int, list[str]] = {}  # smtp pid -> its pending lines (a process handles one request at a time)
    second = 0
    n = 0
    while len(out) < count:
        n += 1
        if n % 40 == 0:
            second += 1
        stamp = _stamp(second)
        roll = rnd.random()
        if roll < 0.25:  # inbound smtpd noise
            pid = rnd.randint(1000, 1200)
            client = f"client{rnd.randint(1, 9999)}.example.net[198.51.100.{rnd.randint(1, 254)}]"
            out.append(f"{stamp} mx postfix/smtpd[{pid}]: connect from {client}")
            if rnd.random() < 0.3:
                out.append(f"{stamp} mx postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {client}: 554 5.7.1 "
                           f"Service unavailable; from=<a@b.example> to=<c@d.example> proto=ESMTP helo=<x>")
            out.append(f"{stamp} mx postfix/smtpd[{pid}]: disconnect from {client} ehlo=1 mail=1 rcpt=1 quit=1 "
                       "commands=4")
            continue
        if pending and (roll < 0.6 or len(pending) > 20):
            lines = pending[rnd.randrange(len(pending))]
            out.append(lines.pop(0).replace("STAMP", stamp))
            if not lines:
                pending.remove(lines)
                busy.pop(next(pid for pid, value in busy.items() if value is lines))
            continue
        qid = "".join(rnd.choice(ALPHABET) for _ in range(10))
        domain = rnd.choice(domains)
        nrcpt = rnd.choice((1, 1, 1, 2, 3))
        out.append(f"{stamp} mx postfix/pickup[900]: {qid}: uid=1000 from=<user@sender.example>")
        out.append(f"{stamp} mx postfix/cleanup[901]: {qid}: message-id=<{qid}.{n}@sender.example>")
        out.append(f"{stamp} mx postfix/qmgr[902]: {qid}: from=<user@sender.example>, size={rnd.randint(900, 90000)}, "
                   f"nrcpt={nrcpt} (queue active)")
        pid = rnd.randint(2000, 2100)
        while pid in busy:
            pid += 1
        host = f"mx{rnd.randint(1, 3)}.{domain}"
        addr = f"192.0.2.{rnd.randint(1, 254)}"
        kind = rnd.random()
        prefix = f"STAMP mx postfix/smtp[{pid}]: "
        lines = []
        if kind < 0.04:
            lines.append(prefix + f"connect to {host}[{addr}]:25: Connection refused")
            lines.append(prefix + f"{qid}: to=<u@{domain}>, relay=none, delay=1, delays=0/0/1/0, dsn=4.4.1, "
                                  f"status=deferred (connect to {host}[{addr}]:25: Connection refused)")
        elif kind < 0.08:
            lines.append(prefix + f"server certificate verification failed for {host}[{addr}]:25: "
                                  "num=62:hostname mismatch")
            lines.append(prefix + f"Untrusted TLS connection established to {host}[{addr}]:25: {CIPHER}")
            for r in range(nrcpt):
                lines.append(prefix + f"{qid}: to=<u{r}@{domain}>, relay={host}[{addr}]:25, delay=0.2, "
                                      "delays=0/0/0.2/0, dsn=4.7.5, status=deferred (Server certificate not verified)")
        elif kind < 0.11:
            for r in range(nrcpt):
                lines.append(prefix + f"{qid}: to=<u{r}@{domain}>, relay={host}[{addr}]:25, delay=0.1, "
                                      f"delays=0/0/0.1/0, dsn=4.7.4, status=deferred (TLS is required, but was not "
                                      f"offered by host {host}[{addr}])")
        else:
            trust = rnd.choice(("Verified", "Verified", "Untrusted", "Trusted"))
            lines.append(prefix + f"{trust} TLS connection established to {host}[{addr}]:25: {CIPHER}")
            for r in range(nrcpt):
                lines.append(prefix + f"{qid}: to=<u{r}@{domain}>, relay={host}[{addr}]:25, delay=0.5, "
                                      f"delays=0.01/0/0.2/0.3, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X{n})")
            lines.append(f"STAMP mx postfix/qmgr[902]: {qid}: removed")
        pending.append(lines)
        busy[pid] = lines
    return out[:count]


def exim_lines(count: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    domains = [f"d{n}.example" for n in range(500)]
    out: list[str] = []
    second = 0
    n = 0
    while len(out) < count:
        n += 1
        if n % 15 == 0:
            second += 1
        stamp = _exim_stamp(second)
        if rnd.random() < 0.3:  # inbound SMTP noise without a message id
            client = f"client{rnd.randint(1, 9999)}.example.net [198.51.100.{rnd.randint(1, 254)}]"
            out.append(f"{stamp} SMTP connection from {client}:{rnd.randint(1024, 65535)} "
                       "(TCP/IP connection count = 3)")
            if rnd.random() < 0.5:
                out.append(f"{stamp} H={client} F=<spam@bad.example> rejected RCPT <x@sender.example>: relay not "
                           "permitted")
            out.append(f"{stamp} SMTP connection from {client} closed by QUIT")
            continue
        msgid = "".join(rnd.choice(EXIM_ALPHABET) for _ in range(6)) + "-" + \
            "".join(rnd.choice(EXIM_ALPHABET) for _ in range(6)) + "-" + \
            "".join(rnd.choice(EXIM_ALPHABET) for _ in range(2))
        domain = rnd.choice(domains)
        nrcpt = rnd.choice((1, 1, 1, 2, 3))
        rcpts = [f"u{r}@{domain}" for r in range(nrcpt)]
        host = f"mx{rnd.randint(1, 3)}.{domain}"
        addr = f"192.0.2.{rnd.randint(1, 254)}"
        p = f"{stamp} {msgid} "
        size = rnd.randint(900, 90000)
        out.append(p + f"<= user@sender.example H=client.example.net [198.51.100.7] P=esmtps S={size} "
                       f"id={msgid}.{n}@sender.example T=\"report {n}\" for {' '.join(rcpts)}")
        kind = rnd.random()
        if kind < 0.05:
            out.append(p + f"H={host} [{addr}]:25: a TLS session is required, but the server did not offer TLS support")
            for rcpt in rcpts:
                out.append(p + f"== {rcpt} R=dnslookup T=remote_smtp defer (-38) H={host} [{addr}]:25: a TLS session "
                               "is required, but the server did not offer TLS support")
            continue
        if kind < 0.1:
            for rcpt in rcpts:
                out.append(p + f"== {rcpt} R=dnslookup T=remote_smtp defer (-37) H={host} [{addr}]:25: TLS session: "
                               "(certificate verification failed): certificate invalid")
            continue
        cv = rnd.choice(("yes", "yes", "no", "dane"))
        for i, rcpt in enumerate(rcpts):
            flag = "=>" if i == 0 else "->"
            out.append(p + f"{flag} {rcpt} R=dnslookup T=remote_smtp H={host} [{addr}]:25 {EXIM_X} CV={cv} "
                           f"DN=\"CN={host}\" C=\"250 2.0.0 Ok: queued as X{n}\"")
        out.append(p + "Completed")
    return out[:count]


def measure(name: str, parser_class: type, lines: list[str], rounds: int) -> None:
    best = None
    attempts = 0
    size = 0
    for _ in range(rounds):
        parser = parser_class(year=2026)
        feed = parser.feed
        started = time.perf_counter()
        found = 0
        for line in lines:
            found += len(feed(line))
        found += len(parser.flush())
        elapsed = time.perf_counter() - started
        if best is None or elapsed < best:
            best = elapsed
        attempts, size = found, parser.state_size
        stats = parser.stats
    assert best is not None
    print(f"{name:8s} {len(lines):>8,d} lines  {len(lines) / best:>10,.0f} lines/s  "
          f"{attempts:>7,d} attempts  state {size:,d}  dropped {stats.dropped}  errors {stats.errors}")


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--lines", type=int, default=200_000)
    args.add_argument("--seed", type=int, default=1)
    args.add_argument("--rounds", type=int, default=3)
    opts = args.parse_args()
    started = time.perf_counter()
    postfix = postfix_lines(opts.lines, opts.seed)
    exim = exim_lines(opts.lines, opts.seed)
    print(f"generated {len(postfix):,d} + {len(exim):,d} lines in {time.perf_counter() - started:.1f} s")
    measure("postfix", PostfixLogParser, postfix, opts.rounds)
    measure("exim", EximLogParser, exim, opts.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
