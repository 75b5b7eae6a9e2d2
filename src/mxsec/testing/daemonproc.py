"""Run a real `mxsec daemon` process and talk raw netstrings to it.

Used by the end-to-end tests, the demo and the lab: :class:`DaemonProcess` starts the daemon as a child
process (optionally inside a network namespace via ``prefix``), waits for its "ready" log line, and offers
signals, ``kill -9`` and log reading; :class:`Client` is a blocking socketmap client that speaks netstrings.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mxsec.daemon.socketmap import NetstringDecoder, encode

MXSEC = str(Path(sys.executable).with_name("mxsec"))


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Client:
    """A blocking socketmap client (one connection)."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *, path: str | None = None,
                 timeout: float = 10.0) -> None:
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.decoder = NetstringDecoder(max_payload=1 << 20)
        self.pending: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def replies(self, n: int) -> list[str]:
        while len(self.pending) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed after {len(self.pending)} of {n} replies")
            for item in self.decoder.feed(data):
                if not isinstance(item, bytes):
                    raise ConnectionError(f"the daemon's replies break the netstring framing: {item.reason}")
                self.pending.append(item)
        out, self.pending = self.pending[:n], self.pending[n:]
        return [p.decode() for p in out]

    def ask(self, domain: str, map_name: str = "postfix") -> str:
        self.send_raw(encode(f"{map_name} {domain}".encode()))
        return self.replies(1)[0]

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


class DaemonProcess:
    """`mxsec daemon` as a child process with its JSON log captured to a file.

    ``nameserver`` (``"IP:PORT"``) and ``ca_file`` point it at a fake world or the lab; ``allow`` lists the
    address ranges its SSRF guard lets through; ``prefix`` runs it inside a network namespace
    (``["ip", "netns", "exec", NS]``). ``host``/``port`` are where :meth:`client` connects.
    """

    def __init__(self, state_dir: Path, *, nameserver: str | None = None, ca_file: str | Path | None = None,
                 cache: str | None = None, extra: list[str] | None = None, listen: list[str] | None = None,
                 config: Path | None = None, allow: tuple[str, ...] = ("127.0.0.0/8",), timeout: float = 3.0,
                 host: str = "127.0.0.1", port: int | None = None, prefix: list[str] | None = None) -> None:
        self.tmp = Path(state_dir)
        self.host = host
        self.port = port if port is not None else free_port()
        self.listen = listen or [f"{host}:{self.port}"]
        self.cache = cache or f"sqlite:///{self.tmp / 'cache.sqlite3'}"
        self.args = [*(prefix or []), MXSEC, "daemon", "--cache", self.cache, "--timeout", f"{timeout:g}",
                     "--log-format", "json"]
        if nameserver:
            self.args += ["--nameserver", nameserver]
        if ca_file:
            self.args += ["--ca-file", str(ca_file)]
        for cidr in allow:
            self.args += ["--allow-address", cidr]
        for addr in self.listen:
            self.args += ["--listen", addr]
        if config is not None:
            self.args += ["--config", str(config)]
        self.args += extra or []
        self.log_path = self.tmp / f"daemon-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def drop_option(self, name: str) -> None:
        """Remove ``name VALUE`` from the command line (e.g. when a config file should decide it)."""
        while name in self.args:
            i = self.args.index(name)
            del self.args[i:i + 2]

    def start(self, wait: float = 20.0) -> "DaemonProcess":
        self.log = open(self.log_path, "ab")
        offset = self.log.tell()  # a restart appends to the same log: only this run's lines count
        # its own state directory, so that default files (a cache's local copy, databases) stay in the test's
        env = {**os.environ, "STATE_DIRECTORY": str(self.tmp)}
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log, start_new_session=True, env=env)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log_text()[offset:][-2000:]}")
            if '"msg": "ready"' in self.log_text()[offset:]:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"daemon not ready: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_records(self) -> list[dict]:
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def client(self) -> Client:
        return Client(self.host, self.port)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)
        self.log.close()

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise
        finally:
            self.log.close()
