"""The lab's network: three network namespaces in a row, addresses from the documentation ranges.

::

      mxsec-sender (netns)           mxsec-attk (netns, router)           mxsec-inet (netns, "the internet")
    ┌──────────────────────┐    ┌──────────────────────────────┐    ┌───────────────────────────────────────────┐
    │ veth-attk            │────│ veth-sender   192.0.2.1/24   │    │ lo: 198.51.100.1/32  root  a.root-servers │
    │ 192.0.2.10/24        │    │ veth-inet 198.51.100.254/30  │────│     198.51.100.2/32  test. a.nic.test     │
    │ routes: 198.51.100/24│    │ ip_forward = 1               │    │     198.51.100.3/32  domains ns1.nic.test │
    │         203.0.113/24 │    │ routes 198.51.100/24,        │    │     198.51.100.53/32 Unbound (resolver)   │
    │   via 192.0.2.1      │    │   203.0.113/24 via .253      │    │     203.0.113.10+   MX and mta-sts hosts  │
    │ (no default route)   │    │ nftables table "mxsec_attk"  │    │ veth-attk 198.51.100.253/30               │
    └──────────────────────┘    │ (empty: forwards as is)      │    │ route 192.0.2.0/24 via 198.51.100.254     │
                                └──────────────────────────────┘    └───────────────────────────────────────────┘

The attacker namespace is an on-path router: by default it forwards every packet unchanged; the attacks of
:mod:`mxsec.lab.attacker` add nftables rules and small servers there. Nothing is created in the host's
namespace: each veth pair is created directly between two lab namespaces, and no namespace has a default
route, so no packet can leave the lab. Names derive from a prefix (``Topology("mxsec-t42")`` →
``mxsec-t42-inet``/``mxsec-t42-sender``/``mxsec-t42-attk``), so several labs can coexist.

API: :func:`create`, :func:`destroy` (idempotent, also after a crash), :func:`exists`, :func:`status`,
:func:`add_address`, :func:`run_in` / :func:`check_in` (commands inside a namespace), :func:`spawn`
(a recorded daemon inside a namespace), :func:`netns_socket` (a socket living in a namespace, for in-process
clients such as dnspython).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mxsec.lab import state as lab_state

__all__ = [
    "LabError",
    "Topology",
    "add_address",
    "add_addresses",
    "check_in",
    "create",
    "destroy",
    "exists",
    "netns_socket",
    "run_in",
    "spawn",
    "status",
]

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


class LabError(RuntimeError):
    """Something in the lab could not be set up; the message says what."""


@dataclass(frozen=True)
class Topology:
    """Names and the address plan of one lab. All values are plain strings (dotted quads)."""

    prefix: str = "mxsec"
    # sender side of the veth pair (TEST-NET-1)
    sender_net: str = "192.0.2.0/24"
    sender_ip: str = "192.0.2.10"
    gateway_ip: str = "192.0.2.1"
    # DNS servers (TEST-NET-2), /32s on the internet namespace's lo
    dns_net: str = "198.51.100.0/24"
    root_ip: str = "198.51.100.1"  # a.root-servers.test
    tld_ip: str = "198.51.100.2"  # a.nic.test, serves test.
    domains_ip: str = "198.51.100.3"  # ns1.nic.test, serves every domain zone
    resolver_ip: str = "198.51.100.53"  # Unbound
    # MX and policy hosts (TEST-NET-3), /32s on the internet namespace's lo
    host_net: str = "203.0.113.0/24"
    first_host: int = 10  # 203.0.113.10 is the first host address handed out by host_addresses()
    # the link between the attacker's router namespace and the internet namespace (a /30 of TEST-NET-2)
    transit_net: str = "198.51.100.252/30"
    attk_transit_ip: str = "198.51.100.254"  # the attacker router, inet side
    inet_transit_ip: str = "198.51.100.253"  # the internet namespace, attacker side

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"lab prefix {self.prefix!r}: use 1-40 of [a-z0-9-], starting with a letter")

    @property
    def inet_ns(self) -> str:
        return f"{self.prefix}-inet"

    @property
    def sender_ns(self) -> str:
        return f"{self.prefix}-sender"

    @property
    def attk_ns(self) -> str:
        """The on-path router between the sender and the internet (the attacker's place)."""
        return f"{self.prefix}-attk"

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.inet_ns, self.sender_ns, self.attk_ns)

    # interface names are per namespace, so they need no prefix
    inet_veth: str = "veth-attk"  # lives in the internet namespace, peer: attk_inet_veth
    sender_veth: str = "veth-attk"  # lives in the sender namespace, peer: attk_sender_veth
    attk_sender_veth: str = "veth-sender"  # lives in the attacker namespace (the sender's gateway 192.0.2.1)
    attk_inet_veth: str = "veth-inet"  # lives in the attacker namespace (198.51.100.254)

    @property
    def state_dir(self) -> Path:
        return lab_state.state_dir(self.prefix)

    @property
    def dns_ips(self) -> tuple[str, ...]:
        return (self.root_ip, self.tld_ip, self.domains_ip, self.resolver_ip)

    @property
    def sender_routes(self) -> tuple[str, ...]:
        return (self.dns_net, self.host_net)

    def host_addresses(self, names: Iterable[str]) -> dict[str, str]:
        """One address in ``host_net`` per distinct name, in order of first appearance (deterministic)."""
        net = ipaddress.ip_network(self.host_net)
        out: dict[str, str] = {}
        for name in names:
            key = name.lower().rstrip(".")
            if key in out:
                continue
            index = self.first_host + len(out)
            if index >= net.num_addresses - 1:
                raise LabError(f"too many lab hosts for {self.host_net}")
            out[key] = str(net.network_address + index)
        return out


# --------------------------------------------------------------------------------------------- commands


def _ip(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], input=input, capture_output=True, text=True, timeout=20, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def run_in(ns: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` inside network namespace ``ns`` (``ip netns exec``: execs, so the PID is the command's;
    /etc/netns/NS/* is bind-mounted over /etc, e.g. resolv.conf)."""
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **popen_kwargs)


def check_in(ns: str, argv: Sequence[str], timeout: float = 20, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``ns`` to completion; raises :class:`LabError` with its stderr when it fails."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if proc.returncode != 0:
        raise LabError(f"[{ns}] {' '.join(argv)}: {(proc.stderr or proc.stdout).strip() or proc.returncode}")
    return proc


# Popen objects of daemons started by this process: kept so they are reaped (no zombies, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[Any]] = {}


def spawn(
    topo: Topology,
    ns: str,
    name: str,
    argv: Sequence[str],
    log: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[Any]:
    """Start a long-running daemon (foreground mode) inside ``ns``, output appended to ``log``; recorded in
    the state file so ``down`` stops it from any process. It runs in its own session, so it outlives the
    caller (``mxsec lab up`` exits while the lab keeps running)."""
    with open(log, "ab") as out:
        proc = run_in(
            ns,
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )
    _CHILDREN[proc.pid] = proc
    lab_state.add_process(topo.prefix, name, proc.pid, ["ip", "netns", "exec", ns, *argv], netns=ns)
    return proc


# --------------------------------------------------------------------------------------------- life cycle


def exists(topo: Topology) -> bool:
    """True when any of the lab's namespaces exists."""
    return any((NETNS_DIR / ns).exists() for ns in topo.namespaces)


def create(topo: Topology) -> None:
    """Create the three namespaces, both veth pairs, addresses and routes (forwarding on in the attacker's
    router). Raises :class:`LabError` if the lab already exists (run :func:`destroy` first). On failure half way,
    everything created so far is removed."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces)")
    if shutil.which("ip") is None:
        raise LabError("iproute2 'ip' not found")
    if exists(topo):
        raise LabError(f"lab {topo.prefix!r} exists already (namespaces {', '.join(topo.namespaces)}): run down")
    if topo.state_dir.exists():  # remains of a crashed lab (no namespaces, maybe stray daemons): clear them
        destroy(topo)
    try:
        with lab_state.update(topo.prefix) as st:
            st.namespaces = {ns: 0 for ns in topo.namespaces}  # recorded before creation: down must see them
        for ns in topo.namespaces:
            _ip("netns", "add", ns)
        with lab_state.update(topo.prefix) as st:
            st.namespaces = {ns: _ns_inode(ns) for ns in topo.namespaces}
            st.paths = sorted(set(st.paths) | {str(ETC_NETNS / ns) for ns in topo.namespaces})
        # the attacker's router first: both veth pairs are created from there into the other namespaces
        attk = [
            "link set lo up",
            f"link add {topo.attk_sender_veth} type veth peer name {topo.sender_veth} netns {topo.sender_ns}",
            f"link add {topo.attk_inet_veth} type veth peer name {topo.inet_veth} netns {topo.inet_ns}",
            f"addr add {topo.gateway_ip}/{_plen(topo.sender_net)} dev {topo.attk_sender_veth}",
            f"addr add {topo.attk_transit_ip}/{_plen(topo.transit_net)} dev {topo.attk_inet_veth}",
            f"link set {topo.attk_sender_veth} up",
            f"link set {topo.attk_inet_veth} up",
            *(f"route add {net} via {topo.inet_transit_ip}" for net in topo.sender_routes),
        ]
        _ip("-n", topo.attk_ns, "-batch", "-", input="\n".join(attk) + "\n")
        check_in(topo.attk_ns, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        inet = [
            "link set lo up",
            f"addr add {topo.inet_transit_ip}/{_plen(topo.transit_net)} dev {topo.inet_veth}",
            f"link set {topo.inet_veth} up",
            *(f"addr add {ip}/32 dev lo" for ip in topo.dns_ips),
            f"route add {topo.sender_net} via {topo.attk_transit_ip}",
        ]
        _ip("-n", topo.inet_ns, "-batch", "-", input="\n".join(inet) + "\n")
        sender = [
            "link set lo up",
            f"addr add {topo.sender_ip}/{_plen(topo.sender_net)} dev {topo.sender_veth}",
            f"link set {topo.sender_veth} up",
            *(f"route add {net} via {topo.gateway_ip}" for net in topo.sender_routes),
        ]
        _ip("-n", topo.sender_ns, "-batch", "-", input="\n".join(sender) + "\n")
        with lab_state.update(topo.prefix) as st:
            st.addresses = sorted(set(st.addresses) | set(topo.dns_ips))
    except BaseException:
        destroy(topo)
        raise


def add_address(topo: Topology, ip: str) -> None:
    """Put ``ip``/32 on the internet namespace's ``lo`` (idempotent) and record it."""
    ipaddress.IPv4Address(ip)
    proc = _ip("-n", topo.inet_ns, "addr", "add", f"{ip}/32", "dev", "lo", check=False)
    if proc.returncode != 0 and "File exists" not in proc.stderr:
        raise LabError(f"adding {ip} in {topo.inet_ns}: {proc.stderr.strip()}")
    lab_state.add_address(topo.prefix, ip)


def add_addresses(topo: Topology, ips: Iterable[str]) -> None:
    """Several :func:`add_address` in one ``ip -batch`` call (fast for dozens of hosts)."""
    ips = [str(ipaddress.IPv4Address(ip)) for ip in ips]
    if not ips:
        return
    present = _ip("-n", topo.inet_ns, "-o", "-4", "addr", "show", "dev", "lo").stdout
    new = [ip for ip in ips if f" {ip}/32 " not in present]
    if new:
        _ip("-n", topo.inet_ns, "-batch", "-", input="".join(f"addr add {ip}/32 dev lo\n" for ip in new))
    with lab_state.update(topo.prefix) as st:
        st.addresses = sorted(set(st.addresses) | set(ips))


def destroy(topo: Topology, timeout: float = 5.0) -> list[str]:
    """Remove the lab completely; idempotent; works from any process and after a crash.

    Kills every process that lives in one of the lab's namespaces (found through /proc/PID/ns/net, also for
    namespaces recorded in the state file whose mount is already gone), every process whose command line
    mentions the lab's state directory (stray knotd/unbound started with our configs) and every recorded PID
    that still matches; then deletes the namespaces, /etc/netns/NAME and the state directory.
    Returns a list of human-readable actions (for ``mxsec lab down -v``)."""
    done: list[str] = []
    st = lab_state.load(topo.prefix)
    inodes: set[int] = set()
    for ns in topo.namespaces:
        with contextlib.suppress(OSError):
            inodes.add(_ns_inode(ns))
    if st:
        inodes.update(i for i in st.namespaces.values() if i)
    marker = str(topo.state_dir).rstrip("/") + "/"
    recorded = {p.pid: _command_of(p.argv) for p in st.processes} if st else {}
    victims = _find_processes(inodes, marker, recorded)
    if victims:
        done.append(f"stopping {len(victims)} process(es): {' '.join(map(str, sorted(victims)))}")
        _kill_all(victims, timeout)
    for ns in topo.namespaces:
        if (NETNS_DIR / ns).exists():
            proc = _ip("netns", "del", ns, check=False)
            if proc.returncode != 0:  # e.g. the mount is busy: retry once after a short pause (bounded)
                time.sleep(0.2)
                _ip("netns", "del", ns, check=False)
            done.append(f"deleted namespace {ns}")
        etc = ETC_NETNS / ns
        if etc.exists():
            shutil.rmtree(etc, ignore_errors=True)
            done.append(f"removed {etc}")
    if topo.state_dir.exists():
        lab_state.remove_all(topo.prefix)
        done.append(f"removed {topo.state_dir}")
    for pid in list(_CHILDREN):
        if not _alive(pid):
            _CHILDREN.pop(pid, None)
    return done


def status(topo: Topology) -> dict[str, Any]:
    """JSON-able summary: namespaces present, recorded processes (alive or not), addresses."""
    st = lab_state.load(topo.prefix)
    return {
        "prefix": topo.prefix,
        "up": exists(topo),
        "state_dir": str(topo.state_dir),
        "namespaces": {ns: (NETNS_DIR / ns).exists() for ns in topo.namespaces},
        "processes": [
            {"name": p.name, "pid": p.pid, "alive": _alive(p.pid), "netns": p.netns}
            for p in (st.processes if st else [])
        ],
        "addresses": list(st.addresses) if st else [],
        "resolver": topo.resolver_ip,
        "extra": dict(st.extra) if st else {},
    }


# --------------------------------------------------------------------------------------------- helpers


def _plen(net: str) -> int:
    return ipaddress.ip_network(net).prefixlen


def _ns_inode(ns: str) -> int:
    return os.stat(NETNS_DIR / ns).st_ino


def _command_of(argv: Sequence[str]) -> str:
    argv = list(argv)
    if argv[:3] == ["ip", "netns", "exec"]:
        argv = argv[4:]
    return "\0".join(argv)


def _find_processes(inodes: set[int], marker: str, recorded: Mapping[int, str]) -> set[int]:
    me = os.getpid()
    wanted = {f"net:[{i}]" for i in inodes}
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == me or pid == 1:
            continue
        try:
            if wanted and os.readlink(f"/proc/{pid}/ns/net") in wanted:
                found.add(pid)
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.add(pid)
        elif pid in recorded and recorded[pid] and cmdline.startswith(recorded[pid]):
            found.add(pid)  # a recorded PID, still running the recorded command (not a reused PID)
    return found


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0] != b"Z"
    except (OSError, IndexError):
        return False


def _reap() -> None:
    # only our own Popen objects: waitpid(-1) would steal exit statuses from other code's Popen objects
    # (other zombies count as dead in _alive, so they need no reaping here)
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)


def _kill_all(pids: set[int], timeout: float) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap()
            pids = {p for p in pids if _alive(p)}
            if not pids:
                return
            time.sleep(0.02)


# --------------------------------------------------------------------------------------------- sockets

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def netns_socket(ns: str, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket created inside network namespace ``ns`` (from a short-lived helper thread that joins the
    namespace; a socket keeps its namespace for life). Lets in-process clients (dnspython's ``sock=``,
    ``asyncio`` transports) talk from inside the lab without ``ip netns exec``. Needs root."""
    result: list[Any] = []

    def worker() -> None:
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.socket(family, type))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result.append(exc)

    t = threading.Thread(target=worker, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join(10)
    if not result:
        raise LabError(f"could not create a socket in {ns}")
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]
