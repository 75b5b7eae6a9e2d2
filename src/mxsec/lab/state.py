"""The lab's state directory and state file, so ``down``/``status`` work from another process and after a crash.

Layout (one directory per lab prefix, on tmpfs so a reboot clears it)::

    /run/mxsec-lab/<prefix>/
        state.json      namespaces (+ their nsfs inodes), processes, addresses, paths, free-form extras
        state.lock      flock(2) taken around every read-modify-write of state.json
        dns/ ...        what mxsec.lab.dns writes (configs, zone files, key databases, logs, sockets)

Every component that starts a process records it with :func:`add_process` (name, PID, argv); every address
added is recorded with :func:`add_address`. :func:`mxsec.lab.topology.destroy` reads the file, but does not
depend on it: it also finds processes by network namespace and by command line (see there).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mxsec.fsutil import make_dirs

__all__ = [
    "BASE_DIR",
    "LabState",
    "ProcessRecord",
    "add_address",
    "add_path",
    "add_process",
    "load",
    "remove_all",
    "state_dir",
    "update",
]

BASE_DIR = Path(os.environ.get("MXSEC_LAB_DIR", "/run/mxsec-lab"))
STATE_FILE = "state.json"
LOCK_FILE = "state.lock"


@dataclass
class ProcessRecord:
    name: str  # e.g. "knotd-root", "unbound", "mx:mx1.example.test"
    pid: int
    argv: list[str]
    netns: str | None = None


@dataclass
class LabState:
    prefix: str
    namespaces: dict[str, int] = field(default_factory=dict)  # name -> nsfs inode (0 if unknown)
    processes: list[ProcessRecord] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # files/dirs outside state_dir to delete on down
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, JSON-able (per component)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabState:
        return cls(
            prefix=str(data["prefix"]),
            namespaces={str(k): int(v) for k, v in dict(data.get("namespaces", {})).items()},
            processes=[ProcessRecord(**p) for p in data.get("processes", [])],
            addresses=[str(a) for a in data.get("addresses", [])],
            paths=[str(p) for p in data.get("paths", [])],
            extra=dict(data.get("extra", {})),
        )


def state_dir(prefix: str) -> Path:
    """The lab's private directory (not created here)."""
    return BASE_DIR / prefix


def load(prefix: str) -> LabState | None:
    """The recorded state, or ``None`` when there is none (or it is unreadable, e.g. after a crash mid-write)."""
    path = state_dir(prefix) / STATE_FILE
    try:
        return LabState.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def update(prefix: str) -> Iterator[LabState]:
    """Read-modify-write of the state file under an exclusive lock; creates the directory and file if needed."""
    directory = state_dir(prefix)
    # 0755, not the 0750 of mxsec's other state directories: the lab's Postfix (user postfix) and Exim
    # (Debian-exim) must reach their directories below this one
    make_dirs(directory, 0o755)
    with open(directory / LOCK_FILE, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = load(prefix) or LabState(prefix=prefix)
            yield state
            tmp = directory / (STATE_FILE + ".tmp")
            tmp.write_text(state.to_json())
            os.replace(tmp, directory / STATE_FILE)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def add_process(prefix: str, name: str, pid: int, argv: list[str], netns: str | None = None) -> None:
    with update(prefix) as st:
        st.processes = [p for p in st.processes if p.pid != pid]
        st.processes.append(ProcessRecord(name=name, pid=pid, argv=list(argv), netns=netns))


def add_address(prefix: str, ip: str) -> None:
    with update(prefix) as st:
        if ip not in st.addresses:
            st.addresses.append(ip)


def add_path(prefix: str, path: str | os.PathLike[str]) -> None:
    """Record a file or directory outside the state directory that ``down`` must delete."""
    with update(prefix) as st:
        p = str(path)
        if p not in st.paths:
            st.paths.append(p)


def remove_all(prefix: str) -> None:
    """Delete the state directory and every recorded outside path (idempotent)."""
    st = load(prefix)
    for p in st.paths if st else []:
        _remove(Path(p))
    _remove(state_dir(prefix))


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
