"""The lab's DNS: a DNSSEC-signed hierarchy served by Knot DNS, validated by Unbound, all inside the lab.

::

    .              knotd "root"     198.51.100.1   a.root-servers.test   signed (the lab's trust anchor)
    test.          knotd "tld"      198.51.100.2   a.nic.test            signed, one delegation (+DS) per domain
    <domain>.test  knotd "domains"  198.51.100.3   ns1.nic.test          signed / unsigned / bogus per ZoneSpec
    resolver       unbound          198.51.100.53  validating, trust anchor = the root's DS

Knot signs automatically from unsigned zone files (one ECDSA P-256 CSK per zone, made by Knot when it first
loads the zone; no CDS/CDNSKEY). A *bogus* zone is signed normally, but its parent
publishes a DS with the right key tag and algorithm and a zeroed digest → Unbound answers SERVFAIL (EDE 9).
An *unsigned* zone has no DS in ``test.`` (provably insecure delegation) → answers without AD.

Build order (all in one call of :meth:`LabDns.start`, about half a second), bottom-up: domain zone files →
knotd "domains" → wait until every zone is served signed → DS from each zone's published DNSKEY → ``test.``
with the DS records → knotd "tld" → its DS → ``.`` → knotd "root" → its DS = Unbound's trust anchor →
Unbound → /etc/netns/<ns>/resolv.conf → wait until ``test. SOA`` comes back with AD through Unbound.

Records are zone-file lines (``"mx1 A 203.0.113.10"``, ``'_mta-sts TXT "v=STSv1; id=1"'``,
``"_25._tcp.mx1 TLSA 3 1 1 ab12…"``): owners relative to the zone, ``@`` for the apex, or absolute with a
trailing dot; an optional TTL after the owner. SOA and NS of a domain zone are added here.

Run-time changes: :meth:`LabDns.update_zone` (replace a zone's records) and :meth:`LabDns.set_rrset` (replace
one RRset) edit the zone file, ``knotc zone-reload`` (Knot re-signs), then ``unbound-control flush_zone``.
Everything lives under ``<state_dir>/dns/``; a ``LabDns(topo)`` made in another process finds it again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.zone

from mxsec.fsutil import make_dirs
from mxsec.lab import state as lab_state
from mxsec.lab import topology
from mxsec.lab.topology import LabError, Topology

__all__ = [
    "DOMAINS_NS",
    "ROOT_NS",
    "TLD",
    "TLD_NS",
    "LabDns",
    "ZoneSpec",
    "start_dns",
    "tlsa_311",
]

TLD = "test"
ROOT_NS = "a.root-servers.test."
TLD_NS = "a.nic.test."
DOMAINS_NS = "ns1.nic.test."
HOSTMASTER = "hostmaster.nic.test."
DEFAULT_TTL = 300
NEGATIVE_TTL = 60
ALGORITHM = "ecdsap256sha256"
_PROC_PREFIX = "dns:"


@dataclass(frozen=True)
class ZoneSpec:
    """One domain zone directly under ``test.`` (e.g. ``sts-enforce-ok.test``)."""

    name: str
    records: tuple[str, ...] = ()
    signed: bool = True
    bogus: bool = False  # signed, but the DS in test. has a zeroed digest

    def __post_init__(self) -> None:
        name = self.name.lower().rstrip(".")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "records", tuple(self.records))
        labels = name.split(".")
        if len(labels) != 2 or labels[1] != TLD or not labels[0]:
            raise ValueError(f"zone {self.name!r}: lab domain zones are one label under {TLD}. (like x.{TLD})")
        if self.bogus and not self.signed:
            raise ValueError(f"zone {self.name!r}: bogus needs signed")
        if labels[0] == "nic":
            raise ValueError(f"zone {self.name!r}: nic.{TLD} holds the lab's name servers")

    @property
    def fqdn(self) -> str:
        return self.name + "."


@dataclass
class _Server:
    key: str  # root | tld | domains
    ip: str
    directory: Path

    @property
    def conf(self) -> Path:
        return self.directory / "knot.conf"

    @property
    def zones_dir(self) -> Path:
        return self.directory / "zones"

    def zone_file(self, zone: str) -> Path:
        return self.zones_dir / (("root" if zone == "." else zone.rstrip(".")) + ".zone")


class LabDns:
    """Start, change, query and stop the lab's DNS for one :class:`Topology` (state under its state dir)."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.dir = topo.state_dir / "dns"
        self.servers = {
            "root": _Server("root", topo.root_ip, self.dir / "root"),
            "tld": _Server("tld", topo.tld_ip, self.dir / "tld"),
            "domains": _Server("domains", topo.domains_ip, self.dir / "domains"),
        }
        self.unbound_dir = self.dir / "unbound"

    # ------------------------------------------------------------------------------------------ public

    @property
    def resolver_ip(self) -> str:
        return self.topo.resolver_ip

    @property
    def unbound_conf(self) -> Path:
        return self.unbound_dir / "unbound.conf"

    @property
    def trust_anchor(self) -> str:
        """The root's DS (``. DS tag 13 2 hex``), as configured in Unbound."""
        return str(self._saved().get("trust_anchor", ""))

    @property
    def zones(self) -> dict[str, ZoneSpec]:
        """The domain zones currently served (as last started/updated), by name."""
        out = {}
        for z in self._saved().get("zones", []):
            spec = ZoneSpec(name=z["name"], records=tuple(z["records"]), signed=z["signed"], bogus=z["bogus"])
            out[spec.name] = spec
        return out

    def start(self, zones: Sequence[ZoneSpec], timeout: float = 15.0) -> None:
        """Build and start the whole DNS; returns when Unbound validates ``test.``. The topology must exist.
        On failure, the DNS processes started so far are stopped and the error re-raised."""
        if not topology.exists(self.topo):
            raise LabError(f"lab {self.topo.prefix!r} has no namespaces: create the topology first")
        specs = list(zones)
        names = [z.name for z in specs]
        if len(set(names)) != len(names):
            raise ValueError("duplicate zone names: " + ", ".join(sorted({n for n in names if names.count(n) > 1})))
        texts = {z.name: self._zone_text(z) for z in specs}  # validates before anything starts
        if self.running():
            raise LabError(f"the DNS of lab {self.topo.prefix!r} is running already: stop it first")
        shutil.rmtree(self.dir, ignore_errors=True)  # fresh keys, journals and caches every time
        deadline = time.monotonic() + timeout
        try:
            self._write_knot_confs(specs)
            for z in specs:
                _write(self.servers["domains"].zone_file(z.fqdn), texts[z.name])
            # bottom-up: each level's DS comes from the DNSKEYs its child server just published
            self._spawn_knotd("domains")
            self._wait_authoritative([(self.topo.domains_ip, z.fqdn, z.signed) for z in specs], deadline)
            ds = self._fetch_ds(self.topo.domains_ip, [z.fqdn for z in specs if z.signed], deadline)
            _write(self.servers["tld"].zone_file(f"{TLD}."), self._tld_text(specs, ds))
            self._spawn_knotd("tld")
            self._wait_authoritative([(self.topo.tld_ip, f"{TLD}.", True)], deadline)
            ds.update(self._fetch_ds(self.topo.tld_ip, [f"{TLD}."], deadline))
            _write(self.servers["root"].zone_file("."), self._root_text(ds))
            self._spawn_knotd("root")
            self._wait_authoritative([(self.topo.root_ip, ".", True)], deadline)
            ds.update(self._fetch_ds(self.topo.root_ip, ["."], deadline))
            self._save(specs, ds["."])
            self._write_unbound(ds["."])
            topology.spawn(
                self.topo,
                self.topo.inet_ns,
                f"{_PROC_PREFIX}unbound",
                ["unbound", "-d", "-c", str(self.unbound_conf)],
                self.unbound_dir / "unbound.stderr",
            )
            self._write_resolv_conf()
            self._wait_resolver(deadline)
        except BaseException:
            self.stop()
            raise

    def running(self) -> bool:
        """True when any recorded knotd/Unbound of this lab is alive."""
        st = lab_state.load(self.topo.prefix)
        return any(topology._alive(p.pid) for p in (st.processes if st else []) if p.name.startswith(_PROC_PREFIX))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop knotd and Unbound of this lab (idempotent). :func:`topology.destroy` does this too."""
        st = lab_state.load(self.topo.prefix)
        pids = {p.pid for p in (st.processes if st else []) if p.name.startswith(_PROC_PREFIX)}
        pids = {p for p in pids if topology._alive(p)}
        if pids:
            topology._kill_all(pids, timeout)
        if st:
            with lab_state.update(self.topo.prefix) as st2:
                st2.processes = [p for p in st2.processes if not p.name.startswith(_PROC_PREFIX)]

    def update_zone(self, domain: str, records: Iterable[str]) -> None:
        """Replace every record of domain zone ``domain`` (SOA/NS are kept) and make it visible through Unbound
        at once (Knot re-signs on reload; Unbound's cache for the zone is flushed)."""
        zones = self.zones
        name = domain.lower().rstrip(".")
        if name not in zones:
            raise LabError(f"zone {domain!r} is not served by lab {self.topo.prefix!r}")
        old = zones[name]
        new = ZoneSpec(name=name, records=tuple(records), signed=old.signed, bogus=old.bogus)
        text = self._zone_text(new)
        zones[name] = new
        _write(self.servers["domains"].zone_file(new.fqdn), text)
        self._save(list(zones.values()), self.trust_anchor)
        srv = self.servers["domains"]
        _run(["knotc", "-c", str(srv.conf), "-b", "-t", "10", "zone-reload", new.fqdn])
        self.flush(name)

    def set_rrset(self, domain: str, owner: str, rtype: str, values: Sequence[str], ttl: int | None = None) -> None:
        """Replace one RRset (``owner`` relative to the zone, ``@`` for the apex) with ``values`` (rdata texts;
        empty = delete it), keeping every other record. E.g.
        ``set_rrset("sts-id-change.test", "_mta-sts", "TXT", ['"v=STSv1; id=2"'])``."""
        spec = self.zones.get(domain.lower().rstrip("."))
        if spec is None:
            raise LabError(f"zone {domain!r} is not served by lab {self.topo.prefix!r}")
        target = _owner_key(owner, spec.fqdn)
        rtype = rtype.upper()
        kept = [line for line in spec.records if not _line_is(line, target, rtype, spec.fqdn)]
        ttl_text = f" {ttl}" if ttl is not None else ""
        self.update_zone(spec.name, [*kept, *(f"{owner}{ttl_text} {rtype} {v}" for v in values)])

    def flush(self, name: str) -> None:
        """Drop ``name`` and everything below it from Unbound's caches (also bogus/negative entries)."""
        conf = str(self.unbound_conf)
        _run(["unbound-control", "-c", conf, "flush_zone", name.rstrip(".") + "."])
        _run(["unbound-control", "-c", conf, "flush_bogus"])

    def query(
        self,
        qname: str,
        rdtype: str = "A",
        *,
        ns: str | None = None,
        server: str | None = None,
        dnssec: bool = True,
        cd: bool = False,
        timeout: float = 2.0,
    ) -> dns.message.Message:
        """One query from inside namespace ``ns`` (default: the sender's) to ``server`` (default: Unbound),
        with the AD bit set (and DO when ``dnssec``); retries over TCP when truncated."""
        return lab_query(
            ns or self.topo.sender_ns, server or self.topo.resolver_ip, qname, rdtype,
            dnssec=dnssec, cd=cd, timeout=timeout,
        )

    # ------------------------------------------------------------------------------------------ zones

    def _zone_text(self, z: ZoneSpec) -> str:
        head = [
            f"$ORIGIN {z.fqdn}",
            f"$TTL {DEFAULT_TTL}",
            f"@ SOA {DOMAINS_NS} {HOSTMASTER} 1 3600 600 86400 {NEGATIVE_TTL}",
            f"@ NS {DOMAINS_NS}",
        ]
        for line in z.records:
            if "\n" in line or "\r" in line or not line.strip():
                raise ValueError(f"zone {z.name}: record {line!r}: one non-empty line per record")
            if line[0].isspace():
                raise ValueError(f"zone {z.name}: record {line!r}: start with the owner name (@ for the apex)")
            if line.split()[0].startswith("$"):
                raise ValueError(f"zone {z.name}: record {line!r}: no $ directives")
        text = "\n".join([*head, *z.records]) + "\n"
        try:
            zone = dns.zone.from_text(text, origin=z.fqdn, relativize=False, check_origin=True)
        except (dns.exception.DNSException, ValueError) as exc:
            raise ValueError(f"zone {z.name}: {exc}") from exc
        for node_name, node in zone.nodes.items():
            if not node_name.is_subdomain(dns.name.from_text(z.fqdn)):
                raise ValueError(f"zone {z.name}: {node_name} is outside the zone")
            for rds in node.rdatasets:
                if rds.rdtype in (dns.rdatatype.SOA, dns.rdatatype.DS) and node_name != zone.origin:
                    raise ValueError(f"zone {z.name}: {dns.rdatatype.to_text(rds.rdtype)} at {node_name}")
        assert zone.origin is not None  # from_text() with an origin keeps it
        soa = zone.get_rdataset(zone.origin, "SOA")
        if soa is None or len(soa) != 1:
            raise ValueError(f"zone {z.name}: do not give a SOA record")
        return text

    def _tld_text(self, specs: Sequence[ZoneSpec], ds_of: Mapping[str, str]) -> str:
        lines = [
            f"$ORIGIN {TLD}.",
            f"$TTL {DEFAULT_TTL}",
            f"@ SOA {TLD_NS} {HOSTMASTER} 1 3600 600 86400 {NEGATIVE_TTL}",
            f"@ NS {TLD_NS}",
            f"{TLD_NS} A {self.topo.tld_ip}",
            f"{DOMAINS_NS} A {self.topo.domains_ip}",
            f"{ROOT_NS} A {self.topo.root_ip}",
        ]
        for z in specs:
            lines.append(f"{z.fqdn} NS {DOMAINS_NS}")
            if z.signed:
                ds = ds_of[z.fqdn]
                if z.bogus:
                    tag, alg, dtype, digest = ds.split()
                    ds = f"{tag} {alg} {dtype} {'0' * len(digest)}"
                lines.append(f"{z.fqdn} DS {ds}")
        return "\n".join(lines) + "\n"

    def _root_text(self, ds_of: Mapping[str, str]) -> str:
        return "\n".join(
            [
                "$ORIGIN .",
                "$TTL 3600",
                f"@ SOA {ROOT_NS} {HOSTMASTER} 1 3600 600 86400 {NEGATIVE_TTL}",
                f"@ NS {ROOT_NS}",
                f"{TLD}. NS {TLD_NS}",
                f"{TLD}. DS {ds_of[f'{TLD}.']}",
                f"{TLD_NS} A {self.topo.tld_ip}",
                f"{ROOT_NS} A {self.topo.root_ip}",
            ]
        ) + "\n"

    # ------------------------------------------------------------------------------------------ knot

    def _write_knot_confs(self, specs: Sequence[ZoneSpec]) -> None:
        zones_for = {
            "root": [(".", True)],
            "tld": [(f"{TLD}.", True)],
            "domains": [(z.fqdn, z.signed) for z in specs],
        }
        for key, srv in self.servers.items():
            for sub in ("zones", "db", "run"):
                make_dirs((srv.directory / sub), 0o755)
            lines = [
                "server:",
                f"    rundir: {srv.directory / 'run'}",
                f"    listen: {srv.ip}@53",
                "    udp-workers: 1",
                "    tcp-workers: 1",
                "    background-workers: 1",
                "database:",
                f"    storage: {srv.directory / 'db'}",
                "control:",
                f"    listen: {srv.directory / 'run' / 'knot.sock'}",
                "log:",
                "  - target: stderr",
                "    any: info",
                "policy:",
                "  - id: lab",
                f"    algorithm: {ALGORITHM}",
                "    single-type-signing: on",
                "    nsec3: off",
                "    cds-cdnskey-publish: none",
                "template:",
                "  - id: default",
                f"    storage: {srv.zones_dir}",
                "    dnssec-signing: on",
                "    dnssec-policy: lab",
                "    zonefile-sync: -1",
                "    zonefile-load: difference-no-serial",
                "    journal-content: all",
                "    serial-policy: unixtime",
                "zone:",
            ]
            for zone, signed in zones_for[key]:
                lines += [f'  - domain: "{zone}"', f"    file: {srv.zone_file(zone)}"]
                if not signed:
                    lines.append("    dnssec-signing: off")
            _write(srv.conf, "\n".join(lines) + "\n")

    def _spawn_knotd(self, key: str) -> None:
        srv = self.servers[key]
        topology.spawn(
            self.topo,
            self.topo.inet_ns,
            f"{_PROC_PREFIX}knotd-{key}",
            ["knotd", "-c", str(srv.conf)],
            srv.directory / "knotd.log",
        )

    def _fetch_ds(self, ip: str, zones: Sequence[str], deadline: float) -> dict[str, str]:
        """The SHA-256 DS (``tag alg 2 hex``) of each zone's SEP key, from the DNSKEY set its server publishes
        (Knot made the keys when it loaded the zone)."""
        out: dict[str, str] = {}
        sock = topology.netns_socket(self.topo.inet_ns)
        sock.setblocking(False)
        try:
            for zone in zones:
                while True:
                    q = dns.message.make_query(zone, "DNSKEY", want_dnssec=False)
                    q.flags &= ~dns.flags.RD
                    try:
                        # ignore_errors: skip a late answer to an earlier query that timed out (else every
                        # later query on this shared socket reads its predecessor's answer, for good)
                        r = dns.query.udp(q, ip, timeout=0.2, sock=sock, ignore_unexpected=True,
                                          ignore_errors=True)
                        keys = [
                            rd for rrset in r.answer if rrset.rdtype == dns.rdatatype.DNSKEY
                            for rd in rrset if rd.flags & 0x0001  # SEP: the KSK/CSK
                        ]
                    except (dns.exception.DNSException, OSError):
                        keys = []
                    if keys:
                        ds = dns.dnssec.make_ds(zone, keys[0], "SHA256")
                        out[zone] = ds.to_text()
                        break
                    if time.monotonic() > deadline:
                        raise LabError(f"no DNSKEY for {zone} from {ip} (logs under {self.dir})")
                    time.sleep(0.02)
        finally:
            sock.close()
        return out

    def _wait_authoritative(self, wanted: Sequence[tuple[str, str, bool]], deadline: float) -> None:
        pending = list(wanted)
        sock = topology.netns_socket(self.topo.inet_ns)
        sock.setblocking(False)  # dnspython waits (with its timeout) only on non-blocking sockets
        try:
            while pending:
                still = []
                for ip, zone, signed in pending:
                    try:
                        q = dns.message.make_query(zone, "SOA", want_dnssec=True)
                        q.flags &= ~dns.flags.RD
                        r = dns.query.udp(q, ip, timeout=0.1, sock=sock, ignore_unexpected=True,
                                          ignore_errors=True)  # late answers of timed-out queries: skip
                        ok = r.rcode() == dns.rcode.NOERROR and bool(r.flags & dns.flags.AA) and len(r.answer) >= 1
                        if ok and signed:
                            ok = any(rrs.rdtype == dns.rdatatype.RRSIG for rrs in r.answer)
                    except (dns.exception.DNSException, OSError):
                        ok = False
                    if not ok:
                        still.append((ip, zone, signed))
                pending = still
                if pending:
                    if time.monotonic() > deadline:
                        raise LabError(
                            "knotd did not serve in time: "
                            + ", ".join(f"{z}@{ip}" for ip, z, _ in pending[:5])
                            + f" (logs under {self.dir})"
                        )
                    time.sleep(0.02)
        finally:
            sock.close()

    # ------------------------------------------------------------------------------------------ unbound

    def _write_unbound(self, root_ds: str) -> None:
        d = self.unbound_dir
        make_dirs(d, 0o755)
        _write(d / "root.hints", f". 3600000 NS {ROOT_NS}\n{ROOT_NS} 3600000 A {self.topo.root_ip}\n")
        t = self.topo
        allow = ["127.0.0.0/8", t.sender_net, t.dns_net, t.host_net]
        lines = [
            "server:",
            f"    interface: {t.resolver_ip}",
            "    port: 53",
            "    do-ip4: yes",
            "    do-ip6: no",
            "    do-udp: yes",
            "    do-tcp: yes",
            "    num-threads: 1",
            "    so-reuseport: no",
            # a busy resolver's receive buffer: a cold daemon's or checker's burst must not be dropped (the
            # kernel's default of about 200 KiB overflows at a few hundred queries in flight)
            "    so-rcvbuf: 8m",
            "    access-control: 0.0.0.0/0 refuse",
            *(f"    access-control: {net} allow" for net in allow),
            '    username: ""',
            '    chroot: ""',
            f'    directory: "{d}"',
            f'    pidfile: "{d / "unbound.pid"}"',
            f'    logfile: "{d / "unbound.log"}"',
            "    use-syslog: no",
            "    log-time-ascii: yes",
            "    verbosity: 1",
            '    module-config: "validator iterator"',
            f'    root-hints: "{d / "root.hints"}"',
            f'    trust-anchor: ". DS {root_ds}"',
            '    local-zone: "test." nodefault',
            "    val-log-level: 2",
            "    ede: yes",
            "    val-bogus-ttl: 5",
            "    cache-max-negative-ttl: 10",
            "    aggressive-nsec: no",
            "    prefetch: no",
            "    harden-dnssec-stripped: yes",
            "remote-control:",
            "    control-enable: yes",
            f'    control-interface: "{d / "control.sock"}"',
            "    control-use-cert: no",
        ]
        _write(self.unbound_conf, "\n".join(lines) + "\n")
        _run(["unbound-checkconf", str(self.unbound_conf)])

    def _write_resolv_conf(self) -> None:
        text = f"# mxsec lab {self.topo.prefix}: Unbound in {self.topo.inet_ns}\n"
        text += f"nameserver {self.topo.resolver_ip}\noptions trust-ad edns0\n"
        for ns in self.topo.namespaces:
            _write(topology.ETC_NETNS / ns / "resolv.conf", text)

    def _wait_resolver(self, deadline: float) -> None:
        last = "no answer"
        while True:
            try:
                r = lab_query(self.topo.sender_ns, self.topo.resolver_ip, f"{TLD}.", "SOA", timeout=0.2)
                if r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AD:
                    return
                last = f"{dns.rcode.to_text(r.rcode())} flags={dns.flags.to_text(r.flags)}"
            except (dns.exception.DNSException, OSError) as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise LabError(f"Unbound did not validate {TLD}. in time ({last}); see {self.unbound_dir}/unbound.log")
            time.sleep(0.02)

    # ------------------------------------------------------------------------------------------ state

    def _save(self, specs: Sequence[ZoneSpec], trust_anchor: str) -> None:
        with lab_state.update(self.topo.prefix) as st:
            st.extra["dns"] = {
                "trust_anchor": f". DS {trust_anchor}" if not trust_anchor.startswith(".") else trust_anchor,
                "resolver": self.topo.resolver_ip,
                "unbound_conf": str(self.unbound_conf),
                "knot_confs": {k: str(s.conf) for k, s in self.servers.items()},
                "zones": [asdict(z) for z in specs],
            }

    def _saved(self) -> dict:
        st = lab_state.load(self.topo.prefix)
        return dict(st.extra.get("dns", {})) if st else {}


def start_dns(topo: Topology, zones: Sequence[ZoneSpec], timeout: float = 15.0) -> LabDns:
    """Shortcut: ``LabDns(topo)`` then :meth:`LabDns.start`."""
    lab = LabDns(topo)
    lab.start(zones, timeout=timeout)
    return lab


def lab_query(
    ns: str,
    server: str,
    qname: str,
    rdtype: str = "A",
    *,
    dnssec: bool = True,
    cd: bool = False,
    timeout: float = 2.0,
) -> dns.message.Message:
    """A query sent from inside namespace ``ns`` (UDP, then TCP when truncated). AD is set in the query so the
    resolver reports validation; CD when ``cd``."""
    q = dns.message.make_query(qname, rdtype, want_dnssec=dnssec, use_edns=0, payload=1232)
    q.flags |= dns.flags.AD
    if cd:
        q.flags |= dns.flags.CD
    sock = topology.netns_socket(ns)
    sock.setblocking(False)  # dnspython waits (with its timeout) only on non-blocking sockets
    try:
        r = dns.query.udp(q, server, timeout=timeout, sock=sock, ignore_unexpected=True)
    finally:
        sock.close()
    if r.flags & dns.flags.TC:
        tcp = topology.netns_socket(ns, type=socket.SOCK_STREAM)
        try:
            tcp.settimeout(timeout)
            tcp.connect((server, 53))
            tcp.setblocking(False)
            r = dns.query.tcp(q, server, timeout=timeout, sock=tcp)
        finally:
            tcp.close()
    return r


def tlsa_311(cert_pem: bytes | str) -> str:
    """TLSA rdata ``3 1 1 <sha256(SubjectPublicKeyInfo)>`` (DANE-EE, SPKI, SHA-256) for a PEM certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    cert = x509.load_pem_x509_certificate(data)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "3 1 1 " + hashlib.sha256(spki).hexdigest()


# ---------------------------------------------------------------------------------------------- helpers


def _write(path: Path, text: str) -> None:
    make_dirs(path.parent, 0o755)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _run(argv: Sequence[str], timeout: float = 20) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {(proc.stderr or proc.stdout).strip() or proc.returncode}")
    return proc.stdout


def _owner_key(owner: str, origin: str) -> dns.name.Name:
    o = dns.name.from_text(origin)
    return o if owner == "@" else dns.name.from_text(owner, origin=o)


def _line_is(line: str, owner: dns.name.Name, rtype: str, origin: str) -> bool:
    parts = line.split()
    if len(parts) < 2:
        return False
    if _owner_key(parts[0], origin) != owner:
        return False
    rest = [p.upper() for p in parts[1:4]]
    for p in rest:  # skip TTL and class
        if p.isdigit() or p == "IN":
            continue
        return p == rtype
    return False

