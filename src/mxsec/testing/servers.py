"""Real Redis and PostgreSQL servers started by the tests and benchmarks themselves (the test world).

Debian packages: ``redis-server`` and ``postgresql``. Nothing else is needed: the servers run from temporary
directories, listen on 127.0.0.1 (free port chosen by the kernel) and a unix socket in that directory, keep
nothing on disk that matters, and are stopped by whoever started them. The system services of those packages
are not used (and need not run).

Reuse:

* ``running_redis()`` / ``running_postgres()``: context managers for a private server, for tests that stop and
  start it (:meth:`stop` / :meth:`start` keep the port, the data directory and, for PostgreSQL, the data).
* The tests' session fixtures ``redis_server`` / ``postgres_server`` (one shared server each) are in
  ``tests/integration/servers.py``.
* ``PostgresServer(durable=True)`` keeps PostgreSQL's default durability (fsync, synchronous commit) for
  benchmarks; tests run without it, for speed.

PostgreSQL refuses to run as root: as root, ``initdb`` and ``postgres`` run as the ``postgres`` user (created
by the Debian package) and the temporary directory is handed over to that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen | None, sig: int, *, group: bool = False) -> None:
    """Send ``sig`` and wait; after :data:`STOP_TIMEOUT` seconds, kill it (with ``group``, the whole process
    group: a server started in its own session with the children it forked)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(STOP_TIMEOUT)


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------------------


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


class RedisServer:
    """``redis-server`` without persistence on 127.0.0.1:``port`` and ``socket_path``."""

    def __init__(self) -> None:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package: redis-server)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="mxsec-redis-"))
        self.socket_path = str(self.dir / "redis.sock")
        self.log = self.dir / "redis.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"redis+unix://{self.socket_path}?db=0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "RedisServer":
        if self.running:
            return self
        began = time.monotonic()
        for _attempt in range(3):  # the free port may be taken between choosing and binding it
            if not self.port:
                self.port = free_port()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        self.binary, "--port", str(self.port), "--bind", HOST,
                        "--unixsocket", self.socket_path, "--unixsocketperm", "700",
                        "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                        "--daemonize", "no", "--protected-mode", "no", "--logfile", "",
                        "--databases", "16",
                    ],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._ping():
                    self.start_seconds = time.monotonic() - began
                    return self
                time.sleep(0.02)
            stop_process(self.proc, signal.SIGKILL)
            self.proc = None
            if self.start_seconds:  # a restart keeps its port: do not move it
                break
            self.port = 0
        raise RuntimeError(f"redis-server did not start; log:\n{_tail(self.log)}")

    def _ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM)
        self.proc = None

    def flush(self) -> None:
        """Remove every key of every database."""
        with socket.create_connection((HOST, self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.cleanup()


# ---------------------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------------------


def postgres_bindir() -> str | None:
    """The newest ``/usr/lib/postgresql/N/bin`` holding ``initdb`` and ``postgres``."""
    dirs = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(os.path.join(d, "initdb"))]
    dirs.sort(key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    return dirs[-1] if dirs else None


class PostgresServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1:``port`` with a database ``dbname`` (trust auth)."""

    def __init__(self, dbname: str = "mxsec_test", *, durable: bool = False) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package: postgresql)")
        self.bindir = bindir
        self.dbname = dbname
        #: PostgreSQL's own durability (fsync, synchronous commit, full pages); off by default, for speed
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="mxsec-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.initdb_seconds = 0.0
        self.start_seconds = 0.0
        self._run_as: dict = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            self._home = pw.pw_dir
        else:
            self._home = os.path.expanduser("~")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{self.dbname}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _env(self) -> dict[str, str]:
        return {"PATH": f"{self.bindir}:/usr/bin:/bin", "HOME": self._home, "LC_ALL": "C.UTF-8", "TZ": "UTC"}

    def _initdb(self) -> None:
        began = time.monotonic()
        proc = subprocess.run(
            [
                os.path.join(self.bindir, "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-instructions", *(() if self.durable else ("--no-sync",)),
            ],
            cwd=self.dir, env=self._env(), capture_output=True, timeout=120, **self._run_as,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed: {proc.stderr.decode(errors='replace')[-2000:]}")
        self.initdb_seconds = time.monotonic() - began

    def start(self) -> "PostgresServer":
        if self.running:
            return self
        began = time.monotonic()
        first = not self.data.exists()
        if first:
            self._initdb()
            began = time.monotonic()
        for _attempt in range(3):  # the free port may be taken between choosing and binding it
            if not self.port:
                self.port = free_port()
            with open(self.log, "ab") as log:
                if self._run_as:
                    os.chown(self.log, self._run_as["user"], self._run_as["group"])
                self.proc = subprocess.Popen(
                    [
                        os.path.join(self.bindir, "postgres"), "-D", str(self.data), "-k", str(self.dir),
                        "-h", HOST, "-p", str(self.port),
                        *(() if self.durable else ("-c", "fsync=off", "-c", "synchronous_commit=off",
                                                   "-c", "full_page_writes=off", "-c", "shared_buffers=16MB")),
                        "-c", "max_connections=40", "-c", "logging_collector=off",
                    ],
                    cwd=self.dir, env=self._env(), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, **self._run_as,
                )
            if self._wait_ready():
                self.start_seconds = time.monotonic() - began
                if first:
                    self._create_database()
                return self
            stop_process(self.proc, signal.SIGKILL)
            self.proc = None
            if not first:  # a restart keeps its port
                break
            self.port = 0
        raise RuntimeError(f"postgres did not start; log:\n{_tail(self.log)}")

    def _wait_ready(self) -> bool:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if _port_open(self.port):
                try:
                    psycopg.connect(host=HOST, port=self.port, user="postgres", dbname="postgres",
                                    connect_timeout=2).close()
                    return True
                except psycopg.OperationalError:
                    pass  # "the database system is starting up"
            time.sleep(0.05)
        return False

    def admin(self, dbname: str = "postgres"):
        """An autocommit connection as the superuser (close it when done)."""
        import psycopg

        return psycopg.connect(host=HOST, port=self.port, user="postgres", dbname=dbname,
                               connect_timeout=2, autocommit=True)

    def _create_database(self) -> None:
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')

    def create_database(self, name: str) -> str:
        """Create another database; return its URL."""
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@{HOST}:{self.port}/{name}"

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown (pg_ctl stop -m fast): clients are disconnected at once.
        stop_process(self.proc, signal.SIGINT)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_postgres(dbname: str = "mxsec_test", *, durable: bool = False) -> Iterator[PostgresServer]:
    server = PostgresServer(dbname, durable=durable)
    try:
        yield server.start()
    finally:
        server.cleanup()
