"""A local fake internet for tests, the demo and benchmarks.

:class:`FakeWorld` runs, inside one asyncio loop,

* a DNS server (UDP and TCP on one address) that answers like a recursive resolver in front of an
  authoritative zone: RA+AA set, CNAME chains inside its own data followed and returned in full in the answer
  section, NXDOMAIN vs NODATA told apart, multi-string TXT records, truncation (TC) over UDP for big answers,
  AD set for names marked secure when the query asks for DNSSEC (DO or AD), and per-name failure switches
  (``servfail``, ``refused``, ``drop`` = never answer, so the client times out);
* ONE HTTPS server answering for every ``mta-sts.<domain>``: an SNI callback picks a per-host certificate
  (``valid``, ``expired``, ``not-yet-valid``, ``wrong-name``, ``untrusted`` = issued by a second CA,
  ``self-signed``, ``cn-only`` = right name in the subject CN but no SAN); a minimal HTTP/1.1 responder
  (GET only, ``Connection: close``) serves ``/.well-known/mta-sts.txt`` as the domain's :class:`PolicySpec`
  says (status, content type, body, Location, delay, oversize body, with or without Content-Length).

For every domain with a policy, the DNS server answers ``A mta-sts.<domain>`` (``AAAA`` if the HTTPS server
is on IPv6) with the HTTPS server's address, unless the spec's ``host_address`` says otherwise
(``None`` -> the name does not exist, EC-10; an address or a list -> those addresses).

Python use (every setter may be called at any time, also from another thread while the world runs)::

    world = FakeWorld(dns=("127.0.80.1", 0), https=("127.0.80.2", 443))
    world.add_domain("example.test", txt=["v=STSv1; id=1"],
                     policy=PolicySpec(body=policy_text(["mx.example.test"])), mx=["mx.example.test"])
    await world.start()             # world.dns_address / world.https_address hold the bound (ip, port)
    world.set_txt("example.test", ["v=STSv1; id=2", "other"])  # two TXT records
    world.set_txt("example.test", [["v=STSv1; ", "id=2"]])     # one record of two strings -> "v=STSv1; id=2"
    world.set_policy("example.test", PolicySpec(status=404))
    world.set_record("_mta-sts.customer.test", "CNAME", ["_mta-sts.provider.test."])
    world.set_failure("_mta-sts.broken.test", "servfail")     # or "drop", "refused", None to clear
    world.set_secure("example.test")                           # AD bit for answers about this name
    world.stats.queries("_mta-sts.example.test", "TXT"); world.stats.https_requests["mta-sts.example.test"]
    world.reset_stats()
    await world.stop()

``set_txt(domain, records)`` takes a list of records; a record is a ``str`` (one character-string, split at
255 octets when longer) or a list of ``str`` (several character-strings). ``None`` removes the TXT record.
``set_record(name, rdtype, values)`` takes rdata in zone-file text (``"10 mx.example.test."``, names
relative to the root); TXT values follow the ``set_txt`` convention. ``None`` or ``[]`` removes the RRset.

``world.ca_pem`` (bytes) and ``world.ca_file`` (a path in the state directory) are the trust root to pass as
``--ca-file``. :class:`WorldThread` runs a world in a background thread with its own loop, for synchronous
code and for tests whose event loops come and go.

Command line (the benchmark runs it as a subprocess)::

    python -m mxsec.testing.fakeworld --dns 127.0.0.53:53 --https 127.0.0.80:443 --state-dir DIR \\
        [--spec FILE.json] [--generate N] [--control 127.0.0.1:PORT]

It writes ``DIR/ca.pem`` and, once listening, ``DIR/ready.json``
(``{"dns": "ip:port", "https": "ip:port", "control": "ip:port" | null, "domains": [...]}``), then runs until
SIGTERM or SIGINT. ``--generate N`` adds ``d{i}.bench.test`` for i in 0..N-1, each with TXT
``v=STSv1; id=1``, MX ``10 mx{i}.bench.test.`` and an enforce policy (``mx: mx{i}.bench.test``,
``mx: *.mx.bench.test``, ``max_age: 86400``). ``--control`` serves plain HTTP JSON on loopback:
``GET /stats``, ``POST /reset``, ``POST /spec`` (body: a spec document, merged into the world).

Spec file (JSON)::

    {
      "domains": {
        "example.test": {
          "txt": ["v=STSv1; id=1"],            # records (see set_txt); null or absent = no TXT record
          "mx": ["mx1.example.test"],          # optional MX hosts, preferences 10, 20, ...
          "secure": false,                     # optional: AD bit for the domain's names
          "policy": {                          # absent or null = no policy host
            "body": "version: STSv1\\r\\n...",  # or {"mode": "enforce", "mx": [...], "max_age": 86400}
            "status": 200, "content_type": "text/plain", "cert": "valid", "delay": 0,
            "location": null, "oversize": false, "content_length": true,
            "headers": {},                     # extra response headers
            "policy_host_address": "auto"      # "auto" | null (NXDOMAIN) | "ip" | ["ip", ...]
          }
        }
      },
      "records": [["name", "TXT", ["..."]], ["alias.test", "CNAME", ["target.test."]]],
      "failures": [["name", "servfail", "TXT"]],      # mode servfail|refused|drop|null; rdtype optional
      "secure": ["name", ...]
    }
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as _dt
import ipaddress
import json
import os
import shutil
import signal
import ssl
import struct
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
from dns.name import Name
from dns.rrset import RRset

from mxsec.fsutil import make_dirs
from mxsec.testing.pki import TestCA, self_signed, write_pem

__all__ = [
    "CERT_KINDS",
    "FakeWorld",
    "PolicySpec",
    "RequestRecord",
    "WorldStats",
    "WorldThread",
    "policy_text",
    "main",
]

AUTO = "auto"
CERT_KINDS = ("valid", "expired", "not-yet-valid", "wrong-name", "untrusted", "self-signed", "cn-only", "wildcard",
              "wildcard-too-broad")
FAILURE_MODES = ("servfail", "refused", "drop")
POLICY_PATH = "/.well-known/mta-sts.txt"
OVERSIZE_BYTES = 96 * 1024
_MAX_CHAIN = 16
_IN = dns.rdataclass.IN
_REASONS = {
    200: "OK",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    410: "Gone",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def policy_text(
    mx: Sequence[str] = (), *, mode: str = "enforce", max_age: int = 86400, newline: str = "\r\n"
) -> str:
    """A well-formed policy body."""
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {host}" for host in mx]
    lines.append(f"max_age: {max_age}")
    return newline.join(lines) + newline


@dataclass
class PolicySpec:
    """How the policy host of one domain behaves. ``body`` may be ``str`` (UTF-8 encoded) or ``bytes``."""

    body: bytes | str = b""
    status: int = 200
    content_type: str | None = "text/plain"
    cert: str = "valid"
    delay: float = 0.0
    location: str | None = None
    oversize: bool = False
    content_length: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    host_address: str | list[str] | None = AUTO

    def __post_init__(self) -> None:
        if self.cert not in CERT_KINDS:
            raise ValueError(f"unknown certificate kind {self.cert!r} (one of {', '.join(CERT_KINDS)})")

    def body_bytes(self) -> bytes:
        body = self.body.encode("utf-8") if isinstance(self.body, str) else bytes(self.body)
        if self.oversize and len(body) <= OVERSIZE_BYTES:
            filler = b"# padding to make the policy larger than 64 KiB\n"
            body += filler * ((OVERSIZE_BYTES - len(body)) // len(filler) + 1)
        return body

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PolicySpec:
        known = {"body", "status", "content_type", "cert", "delay", "location", "oversize", "content_length",
                 "headers", "host_address", "policy_host_address"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown policy keys: {', '.join(sorted(unknown))}")
        body = data.get("body", "")
        if isinstance(body, Mapping):
            body = policy_text(
                list(body.get("mx", [])), mode=body.get("mode", "enforce"), max_age=int(body.get("max_age", 86400))
            )
        address: Any = AUTO
        for key in ("policy_host_address", "host_address"):
            if key in data:
                address = data[key]
        return cls(
            body=body,
            status=int(data.get("status", 200)),
            content_type=data.get("content_type", "text/plain"),
            cert=data.get("cert", "valid"),
            delay=float(data.get("delay", 0) or 0),
            location=data.get("location"),
            oversize=bool(data.get("oversize", False)),
            content_length=bool(data.get("content_length", True)),
            headers=dict(data.get("headers") or {}),
            host_address=address,
        )


@dataclass(frozen=True)
class RequestRecord:
    """One HTTPS request as the fake policy server saw it (``headers`` with lower-case names)."""

    sni: str | None
    host: str
    method: str
    path: str
    headers: Mapping[str, str]


class WorldStats:
    """Counters: DNS queries per (name, rdtype), HTTPS requests per Host, TLS SNI names seen.

    ``requests`` keeps the last 10,000 HTTPS requests as :class:`RequestRecord`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.dns_queries: collections.Counter[tuple[str, str]] = collections.Counter()
        self.https_requests: collections.Counter[str] = collections.Counter()
        self.tls_sni: collections.Counter[str] = collections.Counter()
        self.dns_tcp_queries = 0
        self.requests: collections.deque[RequestRecord] = collections.deque(maxlen=10_000)

    def queries(self, name: str, rdtype: str) -> int:
        with self._lock:
            return self.dns_queries[(_key(name), rdtype.upper())]

    def requests_for(self, host: str) -> int:
        with self._lock:
            return self.https_requests[_key(host)]

    def sni_seen(self, host: str) -> int:
        with self._lock:
            return self.tls_sni[_key(host)]

    def _count_query(self, name: str, rdtype: str) -> None:
        with self._lock:
            self.dns_queries[(name, rdtype)] += 1

    def _count_sni(self, name: str) -> None:
        with self._lock:
            self.tls_sni[name] += 1

    def _count_request(self, record: RequestRecord) -> None:
        with self._lock:
            self.https_requests[record.host] += 1
            self.requests.append(record)

    def requests_to(self, host: str) -> list[RequestRecord]:
        """The recorded requests whose Host was ``host``, oldest first."""
        host = _key(host)
        with self._lock:
            return [r for r in self.requests if r.host == host]

    def reset(self) -> None:
        with self._lock:
            self.dns_queries.clear()
            self.https_requests.clear()
            self.tls_sni.clear()
            self.dns_tcp_queries = 0
            self.requests.clear()

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "dns_queries": {f"{name} {rdtype}": n for (name, rdtype), n in self.dns_queries.items()},
                "dns_total": sum(self.dns_queries.values()),
                "dns_tcp_queries": self.dns_tcp_queries,
                "https_requests": dict(self.https_requests),
                "https_total": sum(self.https_requests.values()),
                "tls_sni": dict(self.tls_sni),
            }


def _key(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _dname(name: str | dns.name.Name) -> dns.name.Name:
    if isinstance(name, dns.name.Name):
        return name.canonicalize()
    return dns.name.from_text(_key(name) or ".").canonicalize()


def _parse_hostport(value: str | tuple[str, int], default_port: int) -> tuple[str, int]:
    if isinstance(value, tuple):
        host, port = value
        return str(ipaddress.ip_address(host)), int(port)
    text = value.strip()
    if text.startswith("["):
        end = text.index("]")
        host, rest = text[1:end], text[end + 1 :]
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    else:
        host, port = text, default_port
    return str(ipaddress.ip_address(host)), port


def _fmt_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _txt_strings(record: str | bytes | Sequence[str | bytes]) -> list[bytes]:
    parts = [record] if isinstance(record, (str, bytes)) else list(record)
    strings: list[bytes] = []
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else bytes(part)
        if isinstance(record, (str, bytes)) and len(data) > 255:
            strings += [data[i : i + 255] for i in range(0, len(data), 255)]
        else:
            if len(data) > 255:
                raise ValueError("a TXT character-string is at most 255 octets")
            strings.append(data)
    return strings or [b""]


class FakeWorld:
    """DNS + HTTPS fake internet; see the module docstring."""

    def __init__(
        self,
        *,
        dns: str | tuple[str, int] = ("127.0.0.53", 0),
        https: str | tuple[str, int] = ("127.0.0.80", 443),
        state_dir: str | os.PathLike[str] | None = None,
        ttl: int = 300,
        ca: TestCA | None = None,
        reuse_port: bool = False,
    ) -> None:
        #: SO_REUSEPORT on the HTTPS listener: a server bound to one exact address may share its port
        self.reuse_port = reuse_port
        self._dns_bind = _parse_hostport(dns, 53)
        self._https_bind = _parse_hostport(https, 443)
        self.ttl = ttl
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix="fakeworld-"))
        make_dirs(self.state_dir, 0o755)
        self.ca = ca if ca is not None else TestCA("mxsec fakeworld root CA")
        self.ca_pem: bytes = self.ca.cert_pem
        self.ca_file: Path = self.ca.write(self.state_dir / "ca.pem")
        self._other_ca: TestCA | None = None
        self.stats = WorldStats()
        self._lock = threading.RLock()
        # (the ``dns`` argument hides the dnspython package here: the types are imported by name)
        self._records: dict[Name, dict[int, RRset]] = {}
        self._domains: dict[Name, None] = {}  # insertion-ordered set
        self._policies: dict[str, PolicySpec] = {}
        self._failures: dict[tuple[Name, int | None], str] = {}
        self._secure: set[Name] = set()
        self._contexts: dict[tuple[str, str], ssl.SSLContext] = {}
        self._key_files: dict[str, Path] = {}
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.dns_address: tuple[str, int] = self._dns_bind
        self.https_address: tuple[str, int] = self._https_bind
        self.control_address: tuple[str, int] | None = None
        self._server_ctx: ssl.SSLContext | None = None
        self.running = False

    # ------------------------------------------------------------------ data
    @property
    def domains(self) -> list[str]:
        with self._lock:
            return [name.to_text(omit_final_dot=True) for name in self._domains]

    def policy(self, domain: str) -> PolicySpec | None:
        return self._policies.get("mta-sts." + _key(domain))

    def add_domain(
        self,
        domain: str,
        *,
        txt: Sequence[str | Sequence[str]] | None = None,
        policy: PolicySpec | None = None,
        mx: Sequence[str] | None = None,
        secure: bool = False,
    ) -> None:
        """Register ``domain`` (it then exists: other types at its name give NODATA) with optional parts."""
        name = _dname(domain)
        with self._lock:
            self._domains[name] = None
        if txt is not None:
            self.set_txt(domain, txt)
        if policy is not None:
            self.set_policy(domain, policy)
        if mx:
            self.set_record(domain, "MX", [f"{10 * (i + 1)} {_key(host)}." for i, host in enumerate(mx)])
        if secure:
            for owner in (domain, "_mta-sts." + _key(domain), "mta-sts." + _key(domain)):
                self.set_secure(owner)

    def remove_domain(self, domain: str) -> None:
        base = _key(domain)
        with self._lock:
            self._domains.pop(_dname(base), None)
            for owner in (base, "_mta-sts." + base, "mta-sts." + base):
                self._records.pop(_dname(owner), None)
            self._policies.pop("mta-sts." + base, None)

    def set_txt(self, domain: str, records: Sequence[str | Sequence[str]] | None) -> None:
        """Set (or remove, with ``None``) the TXT record(s) at ``_mta-sts.<domain>``."""
        with self._lock:
            self._domains[_dname(domain)] = None
        self.set_record("_mta-sts." + _key(domain), "TXT", records)

    def set_policy(self, domain: str, spec: PolicySpec | None) -> None:
        """Set (or remove) the policy host of ``domain`` and its address records (see ``host_address``)."""
        host = "mta-sts." + _key(domain)
        with self._lock:
            self._domains[_dname(domain)] = None
            if spec is None:
                self._policies.pop(host, None)
                self.set_record(host, "A", None)
                self.set_record(host, "AAAA", None)
                return
            self._policies[host] = spec
            addresses: list[str]
            if spec.host_address == AUTO:
                addresses = [self.https_address[0]]
            elif spec.host_address is None:
                addresses = []
            elif isinstance(spec.host_address, str):
                addresses = [spec.host_address]
            else:
                addresses = list(spec.host_address)
            v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
            v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
            self.set_record(host, "A", v4 or None)
            self.set_record(host, "AAAA", v6 or None)

    def set_record(self, name: str, rdtype: str | int, values: Sequence[Any] | None) -> None:
        """Replace the RRset ``name``/``rdtype``; ``None`` or empty removes it."""
        owner = _dname(name)
        rtype = dns.rdatatype.RdataType.make(rdtype)
        rrset: dns.rrset.RRset | None = None
        if values:
            rdatas: list[dns.rdata.Rdata] = []
            for value in values:
                if rtype == dns.rdatatype.TXT:
                    rdatas.append(dns.rdtypes.ANY.TXT.TXT(_IN, dns.rdatatype.TXT, _txt_strings(value)))
                else:
                    rdatas.append(
                        dns.rdata.from_text(_IN, rtype, str(value), origin=dns.name.root, relativize=False)
                    )
            rrset = dns.rrset.from_rdata_list(owner, self.ttl, rdatas)
        with self._lock:
            node = self._records.get(owner)
            if rrset is None:
                if node is not None:
                    node = {k: v for k, v in node.items() if k != rtype}
                    if node:
                        self._records[owner] = node
                    else:
                        del self._records[owner]
                return
            new_node = dict(node) if node else {}
            new_node[rtype] = rrset
            self._records[owner] = new_node

    def set_failure(self, name: str, mode: str | None, rdtype: str | int | None = None) -> None:
        """Make queries for ``name`` (all types, or one ``rdtype``) fail: ``servfail``, ``refused``, ``drop``."""
        if mode is not None and mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r} (one of {', '.join(FAILURE_MODES)})")
        key = (_dname(name), None if rdtype is None else int(dns.rdatatype.RdataType.make(rdtype)))
        with self._lock:
            if mode is None:
                self._failures.pop(key, None)
            else:
                self._failures[key] = mode

    def set_secure(self, name: str, secure: bool = True) -> None:
        """Answers about ``name`` carry AD when the query asks for DNSSEC (DO or AD set)."""
        with self._lock:
            if secure:
                self._secure.add(_dname(name))
            else:
                self._secure.discard(_dname(name))

    def reset_stats(self) -> None:
        self.stats.reset()

    def generate(self, count: int, *, suffix: str = "bench.test") -> list[str]:
        """Add ``d{i}.<suffix>`` for i in 0..count-1 (TXT, MX, enforce policy); returns the names."""
        names = []
        for i in range(count):
            domain = f"d{i}.{suffix}"
            self.add_domain(
                domain,
                txt=["v=STSv1; id=1"],
                mx=[f"mx{i}.{suffix}"],
                policy=PolicySpec(body=policy_text([f"mx{i}.{suffix}", f"*.mx.{suffix}"], max_age=86400)),
            )
            names.append(domain)
        return names

    def load_spec(self, spec: Mapping[str, Any]) -> list[str]:
        """Merge a spec document (see the module docstring); returns the domains it names."""
        if not isinstance(spec, Mapping):
            raise ValueError("spec: top level must be an object")
        unknown = set(spec) - {"domains", "records", "failures", "secure"}
        if unknown:
            raise ValueError(f"spec: unknown keys {', '.join(sorted(unknown))}")
        names: list[str] = []
        for domain, entry in (spec.get("domains") or {}).items():
            entry = entry or {}
            bad = set(entry) - {"txt", "policy", "mx", "secure"}
            if bad:
                raise ValueError(f"spec: domain {domain}: unknown keys {', '.join(sorted(bad))}")
            policy = entry.get("policy")
            self.add_domain(
                domain,
                txt=entry.get("txt"),
                policy=PolicySpec.from_json(policy) if policy is not None else None,
                mx=entry.get("mx"),
                secure=bool(entry.get("secure", False)),
            )
            names.append(_key(domain))
        for item in spec.get("records") or []:
            name, rdtype, values = item
            self.set_record(name, rdtype, values)
        for item in spec.get("failures") or []:
            name, mode, *rest = item
            self.set_failure(name, mode, rest[0] if rest else None)
        for name in spec.get("secure") or []:
            self.set_secure(name)
        return names

    # ------------------------------------------------------------------ DNS
    def _failure(self, name: dns.name.Name, rdtype: int) -> str | None:
        failures = self._failures
        if not failures:
            return None
        return failures.get((name, rdtype)) or failures.get((name, None))

    def dns_reply(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """Answer one DNS query in wire format (``None`` = stay silent)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            if len(wire) >= 12:
                header = bytearray(wire[:12])
                header[2] = 0x80 | (header[2] & 0x78)
                header[3] = dns.rcode.FORMERR
                return bytes(header[:4]) + b"\x00" * 8
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA | dns.flags.AA
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            response.set_rcode(dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        qname = question.name.canonicalize()
        qtype = question.rdtype
        self.stats._count_query(qname.to_text(omit_final_dot=True), dns.rdatatype.to_text(qtype))
        failure = self._failure(qname, qtype)
        if failure == "drop":
            return None
        if failure is not None:
            response.set_rcode(dns.rcode.SERVFAIL if failure == "servfail" else dns.rcode.REFUSED)
            return response.to_wire()
        if question.rdclass != _IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        secure = qname in self._secure
        name = qname
        records = self._records
        rcode = dns.rcode.NOERROR
        for _step in range(_MAX_CHAIN + 1):
            node = records.get(name)
            if node is None:
                if name not in self._domains:
                    rcode = dns.rcode.NXDOMAIN
                break
            if qtype == dns.rdatatype.ANY:
                response.answer.extend(node.values())
                break
            rrset = node.get(qtype)
            if rrset is not None:
                response.answer.append(rrset)
                break
            cname = node.get(dns.rdatatype.CNAME)
            if cname is None:
                break  # NODATA
            response.answer.append(cname)
            name = cname[0].target.canonicalize()
            secure = secure and name in self._secure
            failure = self._failure(name, qtype)
            if failure == "drop":
                return None
            if failure is not None:
                response.answer.clear()
                rcode = dns.rcode.SERVFAIL if failure == "servfail" else dns.rcode.REFUSED
                secure = False
                break
        else:  # CNAME chain too long or a loop
            response.answer.clear()
            rcode = dns.rcode.SERVFAIL
            secure = False
        response.set_rcode(rcode)
        wants_dnssec = bool(query.flags & dns.flags.AD) or bool(query.ednsflags & dns.flags.DO)
        if secure and wants_dnssec:
            response.flags |= dns.flags.AD
        if tcp:
            try:
                return response.to_wire(max_size=65535)
            except dns.exception.TooBig:
                response.answer.clear()
                response.set_rcode(dns.rcode.SERVFAIL)
                return response.to_wire(max_size=65535)
        limit = max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()

    async def _dns_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(writer)
        try:
            for _ in range(1000):  # bounded number of queries per connection
                try:
                    header = await asyncio.wait_for(reader.readexactly(2), 10)
                    (length,) = struct.unpack("!H", header)
                    wire = await asyncio.wait_for(reader.readexactly(length), 10)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                with self.stats._lock:
                    self.stats.dns_tcp_queries += 1
                reply = self.dns_reply(wire, tcp=True)
                if reply is None:
                    continue
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            return
        finally:
            await self._close_writer(writer)

    # ------------------------------------------------------------------ TLS
    def _key_file(self, which: str, pem: bytes) -> Path:
        path = self._key_files.get(which)
        if path is None:
            path = write_pem(self.state_dir / "keys" / f"{which}.key", pem)
            self._key_files[which] = path
        return path

    def _other(self) -> TestCA:
        if self._other_ca is None:
            self._other_ca = TestCA("mxsec fakeworld UNTRUSTED root CA")
        return self._other_ca

    def _make_context(self, host: str, kind: str) -> ssl.SSLContext:
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
        day = _dt.timedelta(days=1)
        if kind == "valid":
            cert, key = self.ca.issue([host]), self._key_file("leaf", self.ca.leaf_key_pem)
        elif kind == "expired":
            cert = self.ca.issue([host], not_before=now - 30 * day, not_after=now - day)
            key = self._key_file("leaf", self.ca.leaf_key_pem)
        elif kind == "not-yet-valid":
            cert = self.ca.issue([host], not_before=now + day, not_after=now + 30 * day)
            key = self._key_file("leaf", self.ca.leaf_key_pem)
        elif kind == "wrong-name":
            cert = self.ca.issue(["mta-sts.wrong-name.invalid"])
            key = self._key_file("leaf", self.ca.leaf_key_pem)
        elif kind == "untrusted":
            other = self._other()
            cert, key = other.issue([host]), self._key_file("other-leaf", other.leaf_key_pem)
        elif kind == "self-signed":
            cert = self_signed([host])
            key = self._key_file("self-signed", cert[1])
        elif kind in ("wildcard", "wildcard-too-broad"):
            # "*.example.test" covers mta-sts.example.test (STS-B-6); "*.test" does not (one label only)
            labels = host.split(".")
            cert = self.ca.issue(["*." + ".".join(labels[1:] if kind == "wildcard" else labels[2:])])
            key = self._key_file("leaf", self.ca.leaf_key_pem)
        elif kind == "cn-only":
            cert = self.ca.issue([], common_name=host)
            key = self._key_file("leaf", self.ca.leaf_key_pem)
        else:  # pragma: no cover - PolicySpec validates kinds
            raise ValueError(kind)
        safe = host.replace("/", "_") or "_default"
        cert_path = write_pem(self.state_dir / "certs" / kind / f"{safe}.pem", cert[0])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_path, key)
        return ctx

    def _context_for(self, host: str, kind: str) -> ssl.SSLContext:
        cache_key = ("*", kind) if kind == "wrong-name" else (host, kind)
        ctx = self._contexts.get(cache_key)
        if ctx is None:
            ctx = self._make_context(host, kind)
            self._contexts[cache_key] = ctx
        return ctx

    def _sni_callback(self, ssl_obj: Any, server_name: str | None, _initial: ssl.SSLContext) -> int | None:
        name = _key(server_name or "")
        self.stats._count_sni(name)
        try:
            ssl_obj._mxsec_sni = name or None  # read back by the HTTP handler
        except AttributeError:  # pragma: no cover
            pass
        spec = self._policies.get(name) if name else None
        if spec is None:
            return None  # default certificate (for fakeworld.invalid): the client will reject it
        try:
            ssl_obj.context = self._context_for(name, spec.cert)
        except Exception:  # pragma: no cover - keep serving
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    def _build_server_context(self) -> ssl.SSLContext:
        ctx = self._context_for("fakeworld.invalid", "valid")
        ctx.sni_callback = self._sni_callback
        return ctx

    def prewarm(self, limit: int | None = None) -> int:
        """Build the TLS contexts of (up to ``limit``) policy hosts now instead of at first handshake."""
        done = 0
        for host, spec in list(self._policies.items()):
            if limit is not None and done >= limit:
                break
            self._context_for(host, spec.cert)
            done += 1
        return done

    # ------------------------------------------------------------------ HTTP
    async def _read_request(
        self, reader: asyncio.StreamReader, timeout: float = 10.0
    ) -> tuple[str, str, dict[str, str], bytes] | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError,
                ssl.SSLError, OSError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return None
        method, target, _version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        body = b""
        length = headers.get("content-length", "0")
        if length.isdigit() and 0 < int(length) <= 1_000_000:
            try:
                body = await asyncio.wait_for(reader.readexactly(int(length)), timeout)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, OSError):
                return None
        return method, target, headers, body

    @staticmethod
    def _response_head(status: int, headers: Sequence[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _https_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(writer)
        try:
            request = await self._read_request(reader)
            if request is None:
                return
            method, target, headers, _body = request
            ssl_obj = writer.get_extra_info("ssl_object")
            sni = getattr(ssl_obj, "_mxsec_sni", None)
            host = headers.get("host", "")
            if host.startswith("["):
                host = host[1 : host.find("]")] if "]" in host else host
            elif host.count(":") == 1:
                host = host.split(":")[0]
            host = _key(host)
            path = target.split("?", 1)[0]
            self.stats._count_request(RequestRecord(sni, host, method, target, headers))
            spec = self._policies.get(host)
            extra: list[tuple[str, str]] = []
            content_type: str | None
            if method != "GET":
                status, content_type, body = 405, "text/plain", b"method not allowed\n"
                extra.append(("Allow", "GET"))
            elif spec is None or path != POLICY_PATH:
                status, content_type, body = 404, "text/plain", b"not found\n"
            else:
                if spec.delay > 0:
                    await asyncio.sleep(spec.delay)
                status, content_type, body = spec.status, spec.content_type, spec.body_bytes()
                if status in (204, 304) or 100 <= status < 200:
                    body = b""  # HTTP forbids a body with these statuses (RFC 9110 §6.4.1)
                if spec.location:
                    extra.append(("Location", spec.location))
                extra += list(spec.headers.items())
            head: list[tuple[str, str]] = [("Server", "mxsec-fakeworld")]
            if content_type is not None:
                head.append(("Content-Type", content_type))
            if spec is None or spec.content_length or method != "GET":
                head.append(("Content-Length", str(len(body))))
            head.append(("Connection", "close"))
            head += extra
            writer.write(self._response_head(status, head))
            if method != "HEAD":
                view = memoryview(body)
                for start in range(0, len(body), 16384):
                    writer.write(view[start : start + 16384])
                    await writer.drain()
            await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError, asyncio.TimeoutError, asyncio.CancelledError):
            return
        finally:
            await self._close_writer(writer)

    async def _control_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track(writer)
        try:
            request = await self._read_request(reader)
            if request is None:
                return
            method, target, _headers, body = request
            status, payload = 200, {}
            path = target.split("?", 1)[0]
            if method == "GET" and path == "/stats":
                payload = self.stats.to_json()
            elif method == "POST" and path == "/reset":
                self.reset_stats()
                payload = {"ok": True}
            elif method == "POST" and path == "/spec":
                try:
                    payload = {"ok": True, "domains": self.load_spec(json.loads(body or b"{}"))}
                except (ValueError, TypeError, KeyError) as exc:
                    status, payload = 400, {"ok": False, "error": str(exc).splitlines()[0] if str(exc) else "bad"}
            else:
                status, payload = 404, {"ok": False, "error": "not found"}
            data = json.dumps(payload).encode()
            writer.write(
                self._response_head(
                    status,
                    [("Content-Type", "application/json"), ("Content-Length", str(len(data))), ("Connection", "close")],
                )
                + data
            )
            await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            return
        finally:
            await self._close_writer(writer)

    # ------------------------------------------------------------------ lifecycle
    def _track(self, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _close_writer(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        with contextlib.suppress(Exception):
            writer.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(writer.wait_closed(), 2)

    async def start(self, *, control: str | tuple[str, int] | None = None) -> None:
        """Bind the DNS (UDP+TCP), HTTPS and optional control listeners."""
        loop = asyncio.get_running_loop()
        host, port = self._dns_bind
        last_error: OSError | None = None
        for _attempt in range(20):  # UDP and TCP need the same port; retry a free-port race a few times
            udp_transport, _ = await loop.create_datagram_endpoint(
                lambda: _DnsUdp(self), local_addr=(host, port)
            )
            bound = udp_transport.get_extra_info("sockname")[1]
            try:
                tcp_server = await asyncio.start_server(self._dns_tcp, host, bound, reuse_address=True)
            except OSError as exc:
                udp_transport.close()
                last_error = exc
                if port != 0:
                    raise
                continue
            self._udp_transport = udp_transport
            self._servers.append(tcp_server)
            self.dns_address = (host, bound)
            break
        else:
            raise last_error or OSError("could not bind the DNS server")
        try:
            self._server_ctx = self._build_server_context()
            https_host, https_port = self._https_bind
            server = await asyncio.start_server(
                self._https_conn, https_host, https_port, ssl=self._server_ctx, ssl_handshake_timeout=10,
                reuse_address=True, reuse_port=self.reuse_port, backlog=1024,
            )
            self._servers.append(server)
            self.https_address = (https_host, server.sockets[0].getsockname()[1])
            if control is not None:
                chost, cport = _parse_hostport(control, 0)
                if not ipaddress.ip_address(chost).is_loopback:
                    raise ValueError("the control endpoint must be on a loopback address")
                cserver = await asyncio.start_server(self._control_conn, chost, cport, reuse_address=True)
                self._servers.append(cserver)
                self.control_address = (chost, cserver.sockets[0].getsockname()[1])
        except BaseException:
            await self.stop()
            raise
        self.running = True

    async def stop(self) -> None:
        """Close every listener and connection; remove the state directory if the world created it."""
        self.running = False
        if self._udp_transport is not None:
            self._udp_transport.close()
            self._udp_transport = None
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.close()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        self._servers.clear()

    def cleanup(self) -> None:
        """Remove the state directory if the world created it (call after :meth:`stop`)."""
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def ready_info(self) -> dict[str, Any]:
        return {
            "dns": _fmt_hostport(*self.dns_address),
            "https": _fmt_hostport(*self.https_address),
            "control": _fmt_hostport(*self.control_address) if self.control_address else None,
            "ca_file": str(self.ca_file),
            "domains": self.domains,
        }


class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint gets a DatagramTransport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            reply = self.world.dns_reply(data, tcp=False)
        except Exception as exc:  # pragma: no cover - never let one query kill the server
            print(f"fakeworld: DNS query failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:  # pragma: no cover
        pass


class WorldThread:
    """Run a :class:`FakeWorld` in a background thread with its own event loop.

    ``with WorldThread(FakeWorld(...)) as world: ...`` — the setters of the world are thread-safe, so the test
    thread may change records while the world answers.
    """

    def __init__(self, world: FakeWorld, *, control: str | tuple[str, int] | None = None) -> None:
        self.world = world
        self._control = control
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.world.start(control=self._control))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(self.world.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self, timeout: float = 30.0) -> FakeWorld:
        self._thread = threading.Thread(target=self._run, name="fakeworld", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the fake world did not start in time")
        if self._error is not None:
            raise self._error
        return self.world

    def call(self, func: Any, *args: Any) -> Any:
        """Run ``func(*args)`` (a coroutine function or plain function) in the world's loop; return its result."""
        assert self._loop is not None

        async def runner() -> Any:
            result = func(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(runner(), self._loop).result(30)

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self.world.cleanup()

    def __enter__(self) -> FakeWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------- CLI
def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


async def _serve(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    make_dirs(state_dir, 0o755)
    with contextlib.suppress(FileNotFoundError):
        (state_dir / "ready.json").unlink()
    world = FakeWorld(dns=args.dns, https=args.https, state_dir=state_dir)
    if args.generate:
        world.generate(args.generate)
    if args.spec:
        with open(args.spec, encoding="utf-8") as handle:
            world.load_spec(json.load(handle))
    if args.prewarm:
        world.prewarm()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await world.start(control=args.control)
    try:
        info = world.ready_info()
        _write_json_atomic(state_dir / "ready.json", info)
        print(f"fakeworld ready: dns {info['dns']}, https {info['https']}, {len(info['domains'])} domains",
              flush=True)
        await stop.wait()
    finally:
        await world.stop()
        with contextlib.suppress(FileNotFoundError):
            (state_dir / "ready.json").unlink()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mxsec.testing.fakeworld",
        description="Local fake DNS + MTA-STS policy hosts (loopback only).",
    )
    parser.add_argument("--dns", default="127.0.0.53:53", help="DNS listen address IP:PORT (port 0 = any)")
    parser.add_argument("--https", default="127.0.0.80:443", help="HTTPS listen address IP:PORT")
    parser.add_argument("--state-dir", required=True, help="directory for ca.pem, certificates and ready.json")
    parser.add_argument("--spec", help="JSON spec file (see the module documentation)")
    parser.add_argument("--generate", type=int, default=0, metavar="N", help="add d{i}.bench.test for i < N")
    parser.add_argument("--control", help="loopback IP:PORT for the JSON control endpoint")
    parser.add_argument("--prewarm", action="store_true", help="build every TLS context before listening")
    args = parser.parse_args(argv)
    for option in ("dns", "https", "control"):
        value = getattr(args, option)
        if value is None:
            continue
        try:
            host, _port = _parse_hostport(value, 0)
        except (ValueError, IndexError):
            parser.error(f"--{option}: expected IP:PORT, got {value!r}")
        if not ipaddress.ip_address(host).is_loopback:
            parser.error(f"--{option}: only loopback addresses are allowed")
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        return runner(_serve(args))
    except (OSError, ValueError) as exc:
        print(f"fakeworld: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
