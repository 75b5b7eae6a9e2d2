"""A private Postfix instance for the lab: a sender-only MTA that asks ``mxsec daemon`` for its TLS policy.

:class:`Postfix` generates a configuration directory (``main.cf``, ``master.cf``) with its own queue, data and
log directories, registers it in the default ``/etc/postfix/main.cf`` (``alternate_config_directories``, the
only change made outside the instance's directory), starts ``master`` — optionally inside a network namespace
(``netns_cmd``, e.g. ``["ip", "netns", "exec", "sender"]``) — injects mail with ``sendmail -C``, waits for the
queue and reads what happened from the instance's own log file. The system Postfix is never started or used,
and any number of instances (different directories) run side by side: nothing is shared but the binaries.

Why ``smtp_tls_security_level = dane`` is the global level
    DANE (RFC 7672) can only be applied by the global level or a per-destination ``dane``/``dane-only``
    policy, together with ``smtp_dns_support_level = dnssec``: ``may`` never looks at TLSA records. At level
    ``dane`` Postfix looks up TLSA records for DNSSEC-signed MX hosts and enforces them; for destinations
    without DNSSEC or without TLSA records it falls back to opportunistic TLS (``may``), so ``dane`` is a safe
    superset of ``may``. The policy map (``mxsec daemon``) overrides it per destination, e.g. ``secure
    match=…`` for an MTA-STS domain in mode ``enforce``; ``NOTFOUND`` keeps ``dane``. This is the
    configuration mxsec recommends for real senders, so the lab tests exactly that.

Other choices
    * No SMTP server: every ``inet`` service is commented out of ``master.cf``; mail is injected with
      ``sendmail -C DIR`` (``postdrop``/``pickup``), so instances need no address or port of their own.
    * No syslog needed: ``maillog_file`` is ``DIR/log/maillog`` (written by ``postlogd``) and
      ``maillog_file_prefixes`` allows that path. ``postfix start`` runs under a pseudo-terminal so that
      start-up errors (printed only to a terminal when there is no syslog) end up in the raised exception.
    * ``chroot = n`` for every service: a chrooted ``smtp`` would see no ``/etc/resolv.conf``.
    * Short timers (``queue_run_delay``, backoff, queue lifetime, ``smtp_connect_timeout``) for tests.
    * Bounces and notices for the instance's own domain (``myhostname``) are discarded (transport map), so a
      failed delivery never causes a second delivery attempt to somewhere else.
    * DNS: ``ip netns exec NS`` bind-mounts ``/etc/netns/NS/resolv.conf``; it must name the lab resolver and
      say ``options trust-ad`` or glibc drops the AD bit and DANE silently never applies.

The directory must be reachable by the ``postfix`` user (every parent at least ``o+x``): daemons run with
``chroot = n`` as ``postfix`` and ``chdir`` into the queue directory.
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import json
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Self

from mxsec.fsutil import make_dirs

__all__ = [
    "LogLine",
    "Outcome",
    "Postfix",
    "PostfixError",
    "PostfixSpec",
    "main_cf_settings",
    "outcome_from_log",
    "parse_log",
    "register_config_dir",
    "unregister_config_dir",
]

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTQUEUE = "/usr/sbin/postqueue"
POSTSUPER = "/usr/sbin/postsuper"
SENDMAIL = "/usr/sbin/sendmail"
DEFAULT_MAIN_CF = Path("/etc/postfix/main.cf")
MASTER_CF_SOURCES = (Path("/usr/share/postfix/master.cf.dist"), Path("/etc/postfix/master.cf"))
_LOCK_FILE = Path("/run/lock/mxsec-lab-postfix.lock")


class PostfixError(RuntimeError):
    """A Postfix command failed; the message carries its output."""


@dataclass(frozen=True)
class PostfixSpec:
    """What one private instance looks like.

    ``directory`` is the instance's own directory: ``etc/`` (the Postfix configuration directory, ``-c``),
    ``queue/``, ``data/`` and ``log/maillog``. The queue must not live inside the configuration directory:
    ``postfix check`` would then walk into it and warn about every queue directory's owner.
    ``policy_map`` is ``"HOST:PORT"`` (becomes ``socketmap:inet:HOST:PORT:<policy_map_name>``), a full Postfix
    table (``"socketmap:unix:/path:postfix"``), or ``None`` for no policy map. ``ca_file`` is the trust
    anchor for ``secure``/``verify`` (``smtp_tls_CAfile``). ``netns_cmd`` prefixes ``postfix start`` (e.g.
    ``["ip", "netns", "exec", "sender"]``); ``None`` runs in the caller's namespaces. ``extra_main_cf``
    overrides or adds ``main.cf`` parameters (e.g. ``{"relayhost": "[127.0.90.1]:25"}``).
    """

    directory: Path
    policy_map: str | None = None
    ca_file: Path | None = None
    netns_cmd: Sequence[str] | None = None
    myhostname: str = "sender.lab.test"
    policy_map_name: str = "postfix"
    inet_interfaces: str = "loopback-only"
    extra_main_cf: Mapping[str, str] = field(default_factory=dict)
    #: ``"127.0.0.1:25"``: also run an smtpd there (relaying for ``mynetworks`` = 127.0.0.0/8 only), e.g. as
    #: the relay of ``mxsec tlsrpt send``; ``None`` (default): no inet service at all
    smtpd_listen: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", Path(self.directory).absolute())
        if self.ca_file is not None:
            object.__setattr__(self, "ca_file", Path(self.ca_file).absolute())


def _policy_table(spec: PostfixSpec) -> str | None:
    value = spec.policy_map
    if not value:
        return None
    if re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):\d+", value):
        return f"socketmap:inet:{value}:{spec.policy_map_name}"
    return value


def main_cf_settings(spec: PostfixSpec) -> dict[str, str]:
    """The ``main.cf`` parameters of an instance (before ``extra_main_cf`` is applied on top)."""
    base = spec.directory
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(base / "queue"),
        "data_directory": str(base / "data"),
        "maillog_file": str(base / "log" / "maillog"),
        "maillog_file_prefixes": str(base / "log"),
        "myhostname": spec.myhostname,
        "myorigin": "$myhostname",
        "mydestination": "",
        "relayhost": "",
        "inet_interfaces": spec.inet_interfaces,
        "inet_protocols": "ipv4",
        "smtp_address_preference": "ipv4",
        "disable_dns_lookups": "no",
        "smtp_host_lookup": "dns",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "biff": "no",
        "append_dot_mydomain": "no",
        "readme_directory": "no",
        "transport_maps": f"inline:{{{spec.myhostname}=discard:}}",
        # TLS and DNS: see the module docstring.
        "smtp_tls_security_level": "dane",
        "smtp_dns_support_level": "dnssec",
        "smtp_tls_loglevel": "1",
        "smtp_tls_session_cache_database": "",
        # Timers for tests.
        "smtp_connect_timeout": "5s",
        "smtp_helo_timeout": "15s",
        "smtp_starttls_timeout": "15s",
        "queue_run_delay": "5s",
        "minimal_backoff_time": "5s",
        "maximal_backoff_time": "15s",
        "maximal_queue_lifetime": "10m",
        "bounce_queue_lifetime": "10m",
        "delay_warning_time": "0",
        "daemon_timeout": "300s",
    }
    if spec.ca_file is not None:
        settings["smtp_tls_CAfile"] = str(spec.ca_file)
    table = _policy_table(spec)
    if table is not None:
        settings["smtp_tls_policy_maps"] = table
    if spec.smtpd_listen:
        settings["mynetworks"] = "127.0.0.0/8"
    settings.update({key: str(value) for key, value in spec.extra_main_cf.items()})
    return settings


# --------------------------------------------------------------------------------------------- registration


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    make_dirs(_LOCK_FILE.parent, 0o755)
    with open(_LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alternate_dirs() -> list[str]:
    out = subprocess.run(
        [POSTCONF, "-c", str(DEFAULT_MAIN_CF.parent), "-h", "alternate_config_directories"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    return [item for item in re.split(r"[\s,]+", out.strip()) if item]


def _set_alternate_dirs(dirs: list[str]) -> None:
    if dirs:
        args = ["-e", f"alternate_config_directories = {' '.join(dirs)}"]
    else:  # leave the default main.cf as it was before the first registration
        args = ["-X", "alternate_config_directories"]
    subprocess.run(
        [POSTCONF, "-c", str(DEFAULT_MAIN_CF.parent), *args],
        capture_output=True, text=True, timeout=30, check=True,
    )


def register_config_dir(config_dir: str | os.PathLike[str]) -> None:
    """Add ``config_dir`` to ``alternate_config_directories`` of the default main.cf (idempotent, locked).

    Creates a minimal ``/etc/postfix/main.cf`` when there is none. Only that one parameter is touched.
    """
    path = str(Path(config_dir).absolute())
    with _locked():
        if not DEFAULT_MAIN_CF.exists():
            make_dirs(DEFAULT_MAIN_CF.parent, 0o755)
            DEFAULT_MAIN_CF.write_text("# minimal main.cf written by mxsec.lab.postfix\ncompatibility_level = 3.6\n")
        dirs = _alternate_dirs()
        if path not in dirs:
            _set_alternate_dirs([*dirs, path])


def unregister_config_dir(config_dir: str | os.PathLike[str]) -> None:
    """Remove ``config_dir`` from ``alternate_config_directories`` (no-op if absent)."""
    path = str(Path(config_dir).absolute())
    with _locked():
        if not DEFAULT_MAIN_CF.exists():
            return
        dirs = _alternate_dirs()
        if path in dirs:
            _set_alternate_dirs([item for item in dirs if item != path])


# --------------------------------------------------------------------------------------------- log parsing

_LINE = re.compile(r"^(?P<stamp>.*?)\s(?P<host>\S+)\s(?P<prog>[\w./-]+)\[(?P<pid>\d+)\]:\s(?P<msg>.*)$")
_STATUS = re.compile(
    r"^(?P<qid>[0-9A-Za-z]+): to=<(?P<rcpt>[^>]*)>,(?: orig_to=<[^>]*>,)? relay=(?P<relay>[^,]+),"
    r".*?dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+) \((?P<reason>.*)\)$"
)
_EXPIRED = re.compile(r"^(?P<qid>[0-9A-Za-z]+): from=<[^>]*>, status=expired, (?P<reason>.*)$")
_TLS_ESTABLISHED = re.compile(
    r"^(?P<trust>Anonymous|Verified|Trusted|Untrusted) TLS connection (?:established|reused) to "
)


@dataclass(frozen=True)
class LogLine:
    index: int
    prog: str
    pid: int
    msg: str
    text: str


def parse_log(text: str) -> list[LogLine]:
    """Postfix ``maillog_file`` lines as :class:`LogLine` (lines that do not parse are skipped)."""
    result = []
    for number, raw in enumerate(text.splitlines()):
        match = _LINE.match(raw)
        if match:
            result.append(LogLine(number, match["prog"], int(match["pid"]), match["msg"], raw))
    return result


@dataclass(frozen=True)
class Outcome:
    """The latest known fate of one recipient / queue file.

    ``status`` is ``sent``, ``deferred``, ``bounced`` (also queue lifetime expired) or ``pending`` (queued, no
    final line yet). ``tls_line`` is the ``… TLS connection established to …`` line of the SMTP client process
    that wrote the status line (from the same delivery attempt), ``tls_trust`` its first word;
    ``notes`` are that attempt's other lines (certificate verification failures, per-MX deferrals…).
    """

    status: str
    queue_id: str | None = None
    rcpt: str | None = None
    relay: str | None = None
    dsn: str | None = None
    reason: str | None = None
    tls_line: str | None = None
    tls_trust: str | None = None
    notes: tuple[str, ...] = ()
    status_line: str | None = None


def _attempt_lines(lines: list[LogLine], status_pos: int) -> tuple[str | None, list[str]]:
    """Lines of the delivery attempt that ended at ``lines[status_pos]`` (same process, since its previous
    status line)."""
    status = lines[status_pos]
    queue_id = status.msg.split(":", 1)[0]
    tls_line: str | None = None
    notes: list[str] = []
    same_batch = True  # the status lines of the other recipients of the same attempt come right before
    for pos in range(status_pos - 1, -1, -1):
        line = lines[pos]
        if line.pid != status.pid or line.prog != status.prog:
            continue
        match = _STATUS.match(line.msg)
        if match:
            if same_batch and match["qid"] == queue_id:
                continue
            break
        same_batch = False
        if _TLS_ESTABLISHED.match(line.msg):
            if tls_line is None:
                tls_line = line.msg
            continue
        notes.append(line.msg)
    notes.reverse()
    return tls_line, notes


def outcome_from_log(text: str, key: str) -> Outcome:
    """:class:`Outcome` for ``key`` (a recipient address when it contains ``@``, else a queue id)."""
    lines = parse_log(text)
    by_rcpt = "@" in key
    wanted = key.lower()
    chosen: int | None = None
    queue_id: str | None = None if by_rcpt else key
    for pos, line in enumerate(lines):
        match = _STATUS.match(line.msg)
        if match and ((by_rcpt and match["rcpt"].lower() == wanted) or (not by_rcpt and match["qid"] == key)):
            chosen = pos
            queue_id = match["qid"]
    if chosen is not None:
        line = lines[chosen]
        match = _STATUS.match(line.msg)
        assert match is not None
        tls_line, notes = _attempt_lines(lines, chosen)
        status = match["status"]
        reason = match["reason"]
        for later in lines[chosen + 1:]:
            expired = _EXPIRED.match(later.msg)
            if expired and expired["qid"] == match["qid"] and status == "deferred":
                status, reason = "bounced", "expired, " + expired["reason"]
        trust = _TLS_ESTABLISHED.match(tls_line) if tls_line else None
        return Outcome(
            status=status,
            queue_id=match["qid"],
            rcpt=match["rcpt"],
            relay=match["relay"],
            dsn=match["dsn"],
            reason=reason,
            tls_line=tls_line,
            tls_trust=trust["trust"] if trust else None,
            notes=tuple(notes),
            status_line=line.text,
        )
    # No final line yet: collect what is known about the queue file.
    notes = []
    if queue_id is not None:
        notes = [line.msg for line in lines if line.msg.startswith(queue_id + ": ")]
    return Outcome(status="pending", queue_id=queue_id, rcpt=key if by_rcpt else None, notes=tuple(notes))


# --------------------------------------------------------------------------------------------- the instance


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as gone.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True


def _processes_with_config(config_dir: Path) -> list[int]:
    """PIDs whose environment says ``MAIL_CONFIG=<config_dir>`` (Postfix passes it to every daemon)."""
    needle = f"MAIL_CONFIG={config_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


class Postfix:
    """One private Postfix instance (see the module docstring)."""

    def __init__(self, spec: PostfixSpec) -> None:
        self.spec = spec
        self.directory = spec.directory
        self.config_dir = spec.directory / "etc"
        self.settings = main_cf_settings(spec)
        self.queue_dir = Path(self.settings["queue_directory"])
        self.data_dir = Path(self.settings["data_directory"])
        self.log_file = Path(self.settings["maillog_file"])

    # ---- helpers
    def _run(self, args: Sequence[str], *, timeout: float = 60, check: bool = True,
             input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, MAIL_CONFIG=str(self.config_dir))
        proc = subprocess.run(list(args), input=input, capture_output=True, timeout=timeout, env=env, check=False)
        if check and proc.returncode != 0:
            raise PostfixError(
                f"{' '.join(args)} exited {proc.returncode}: "
                f"{(proc.stdout + proc.stderr).decode(errors='replace').strip()}"
            )
        return proc

    def _run_tty(self, args: Sequence[str], *, timeout: float = 60) -> tuple[int, str]:
        """Run with stdout/stderr on a pseudo-terminal: without syslog, Postfix prints fatal start-up errors
        only to a terminal."""
        master_fd, slave_fd = os.openpty()
        try:
            env = dict(os.environ, MAIL_CONFIG=str(self.config_dir))
            proc = subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=slave_fd, stderr=slave_fd, env=env)
            os.close(slave_fd)
            slave_fd = -1
            chunks: list[bytes] = []
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    proc.kill()
                    proc.wait(5)
                    raise PostfixError(f"{' '.join(args)} timed out")
                ready, _, _ = select.select([master_fd], [], [], min(remaining, 0.2))
                if ready:
                    try:
                        data = os.read(master_fd, 65536)
                    except OSError:  # EIO: every writer closed the terminal
                        data = b""
                    if data:
                        chunks.append(data)
                        continue
                    if proc.poll() is not None:
                        break
                elif proc.poll() is not None:
                    # Exited; a daemon it started may still hold the terminal: stop reading now.
                    break
            code = proc.wait(timeout=5)
            return code, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
        finally:
            if slave_fd >= 0:
                os.close(slave_fd)
            os.close(master_fd)

    def postconf(self, *args: str) -> str:
        return self._run([POSTCONF, "-c", str(self.config_dir), *args]).stdout.decode()

    # ---- life cycle
    def setup(self) -> Self:
        """Write main.cf/master.cf, create the queue, register the directory. Safe to call again."""
        base = self.config_dir
        for path in (self.directory, base, self.log_file.parent):
            make_dirs(path, 0o755)
            os.chmod(path, 0o755)
        self._check_reachable(self.directory)
        lines = ["# generated by mxsec.lab.postfix", *(f"{key} = {value}" for key, value in self.settings.items())]
        (base / "main.cf").write_text("\n".join(lines) + "\n")
        master = self._master_cf()
        if self.spec.smtpd_listen:
            master += (f"# mxsec lab: the submission relay on {self.spec.smtpd_listen} (loopback of its namespace)\n"
                       f"{self.spec.smtpd_listen} inet n - n - - smtpd\n")
        (base / "master.cf").write_text(master)
        register_config_dir(base)
        self.postconf("-F", "*/*/chroot = n")
        make_dirs(self.queue_dir, 0o755)
        make_dirs(self.data_dir, 0o755)
        user = pwd.getpwnam(self.settings.get("mail_owner", "postfix"))
        os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        os.chmod(self.data_dir, 0o700)
        self._run([POSTFIX, "-c", str(base), "post-install", "create-missing"], timeout=120)
        code, out = self._run_tty([POSTFIX, "-c", str(base), "check"], timeout=120)
        if code != 0:
            raise PostfixError(f"postfix check failed for {base}:\n{out}")
        return self

    @staticmethod
    def _check_reachable(path: Path) -> None:
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                raise PostfixError(
                    f"{parent} is not searchable by other users (mode {oct(mode & 0o777)}); the postfix user "
                    f"must reach {path}: use a directory such as /tmp/mxsec-lab-… with 0755 parents"
                )

    @staticmethod
    def _master_cf() -> str:
        source = next((path for path in MASTER_CF_SOURCES if path.exists()), None)
        if source is None:
            raise PostfixError("no master.cf template found")
        out: list[str] = ["# generated by mxsec.lab.postfix from " + str(source) + ": no inet services"]
        disabled = False
        for line in source.read_text().splitlines():
            if line.startswith("#") or not line.strip():
                out.append(line)
                continue
            if not line[0].isspace():  # a service entry; indented lines continue it
                fields = line.split()
                disabled = len(fields) > 1 and fields[1] in ("inet", "pass")
            out.append("#" + line if disabled else line)
        return "\n".join(out) + "\n"

    @property
    def master_pid_file(self) -> Path:
        return self.queue_dir / "pid" / "master.pid"

    def master_pid(self) -> int | None:
        try:
            pid = int(self.master_pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def running(self) -> bool:
        return self.master_pid() is not None

    def start(self, timeout: float = 60) -> Self:
        if self.running():
            return self
        if not (self.config_dir / "main.cf").exists():
            self.setup()
        cmd = [*(self.spec.netns_cmd or ()), POSTFIX, "-c", str(self.config_dir), "start"]
        code, out = self._run_tty(cmd, timeout=timeout)
        deadline = time.monotonic() + 10
        while code == 0 and not self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if code != 0 or not self.running():
            raise PostfixError(f"postfix start failed ({code}) for {self.config_dir}:\n{out}\n{self.log_tail()}")
        return self

    def stop(self, timeout: float = 20) -> None:
        """Stop the instance; idempotent. Leftover processes of this instance (master by PID file, daemons by
        ``MAIL_CONFIG``) are killed."""
        if not self.directory.exists():
            return
        if self.running():
            with contextlib.suppress(Exception):
                self._run_tty([POSTFIX, "-c", str(self.config_dir), "stop"], timeout=timeout)
            deadline = time.monotonic() + timeout
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.1)
        pid = self.master_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(50):  # bounded: about 5 s
            leftovers = _processes_with_config(self.config_dir)
            if not leftovers:
                break
            for leftover in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leftover, signal.SIGTERM if _ < 20 else signal.SIGKILL)
            time.sleep(0.1)

    def teardown(self, *, remove: bool = False) -> None:
        """:meth:`stop`, unregister the directory from the default main.cf and optionally delete it."""
        self.stop()
        unregister_config_dir(self.config_dir)
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)

    def reload(self) -> None:
        self._run_tty([POSTFIX, "-c", str(self.config_dir), "reload"])

    def __enter__(self) -> Self:
        return self.setup().start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- mail
    def send(self, sender: str, rcpt: str | Sequence[str], subject: str = "mxsec lab", body: str = "hello\n",
             *, headers: Mapping[str, str] | None = None, timeout: float = 15) -> str | None:
        """Inject a message with ``sendmail -C``; returns its queue id (from the cleanup log line carrying the
        message's unique Message-ID), or ``None`` if it did not show up within ``timeout``."""
        rcpts = [rcpt] if isinstance(rcpt, str) else list(rcpt)
        msg = EmailMessage()
        message_id = f"<{uuid.uuid4().hex}@{self.spec.myhostname}>"
        msg["From"] = sender
        msg["To"] = ", ".join(rcpts)
        msg["Subject"] = subject
        msg["Date"] = email.utils.formatdate(localtime=False)
        msg["Message-ID"] = message_id
        for key, value in (headers or {}).items():
            msg[key] = value
        msg.set_content(body)
        self._run([SENDMAIL, "-C", str(self.config_dir), "-f", sender, "-i", "--", *rcpts],
                  input=msg.as_bytes(), timeout=60)
        needle = f": message-id={message_id}"
        deadline = time.monotonic() + timeout
        while True:
            for line in parse_log(self.log_text()):
                if line.msg.endswith(needle):
                    return line.msg.split(":", 1)[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def flush(self) -> None:
        """Attempt delivery of all queued mail now (``postqueue -f``)."""
        self._run([POSTQUEUE, "-c", str(self.config_dir), "-f"])

    def queue(self) -> list[dict]:
        """``postqueue -j``: one dict per queued message (``queue_name``, ``queue_id``, ``recipients``…)."""
        out = self._run([POSTQUEUE, "-c", str(self.config_dir), "-j"], check=False)
        if out.returncode != 0:
            raise PostfixError(out.stderr.decode(errors="replace").strip())
        return [json.loads(line) for line in out.stdout.decode().splitlines() if line.strip()]

    def wait_idle(self, timeout: float = 30) -> bool:
        """Wait until the queue is empty or holds only deferred (or held) mail; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if all(item.get("queue_name") in ("deferred", "hold") for item in self.queue()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def wait_outcome(self, key: str, timeout: float = 30,
                     until: Callable[[Outcome], bool] | None = None) -> Outcome:
        """Poll :meth:`outcome` until it is not ``pending`` (or ``until`` says so); the last value on timeout."""
        done = until or (lambda result: result.status != "pending")
        deadline = time.monotonic() + timeout
        while True:
            result = self.outcome(key)
            if done(result) or time.monotonic() >= deadline:
                return result
            time.sleep(0.2)

    def hold_queue(self) -> None:
        """Put every queued message on hold (``postsuper -h ALL``): no further delivery attempts; a message in
        the active queue finishes its current attempt first (then shows up as ``hold``)."""
        self._run([POSTSUPER, "-c", str(self.config_dir), "-h", "ALL"], check=False)

    def delete_queue(self) -> None:
        """Delete every queued message (``postsuper -d ALL``)."""
        self._run([POSTSUPER, "-c", str(self.config_dir), "-d", "ALL"], check=False)

    # ---- results
    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def outcome(self, key: str) -> Outcome:
        """Latest :class:`Outcome` for a recipient address (contains ``@``) or a queue id."""
        return outcome_from_log(self.log_text(), key)
