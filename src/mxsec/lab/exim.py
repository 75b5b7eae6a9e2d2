"""A private Exim for the lab: Debian's own Exim, configured the Debian way plus ``contrib/exim/``, asking the
lab's ``mxsec daemon`` for MTA-STS/DANE policy and delivering to the lab's MX hosts.

Which Exim
    Debian's ``exim4-daemon-light`` cannot be installed next to Postfix: both provide, and conflict on,
    ``mail-transport-agent``. ``scripts/install-system-deps.sh`` therefore unpacks the three Debian packages
    (``exim4-daemon-light``, ``exim4-base``, ``exim4-config``) with ``dpkg -x`` into a private root,
    ``/opt/mxsec/exim4`` (``$MXSEC_EXIM_ROOT``), and installs only the shared libraries the binary needs. No
    maintainer script runs, nothing is registered with dpkg, no service is started: the binary, Debian's
    configuration files and ``update-exim4.conf`` are used as they come.

How it runs
    Each instance is a directory (``mxsec lab``: ``<state dir>/exim``) with a copy of Debian's ``/etc/exim4``
    (``etc/``), the configuration ``update-exim4.conf`` generates from it (``exim4.conf``, split scheme,
    configtype ``internet``), a spool (``spool/``) and logs (``log/mainlog``, ``log/paniclog``). There is no
    Exim daemon: every message is handed to ``exim4 -C exim4.conf -odf`` (deliver in the foreground), which
    returns once the delivery attempt is over.

    Every Exim command runs as ``ip netns exec <sender ns> unshare -m …``: DNS and SMTP stay in the lab, and
    in a mount namespace of its own ``/etc/passwd`` and ``/etc/group`` are replaced (bind mounts) by copies
    that add the user ``Debian-exim`` — the binary refuses to start without it and the host is not changed.
    The wrapper script ``<dir>/exim4`` does exactly that, so by hand::

        /run/mxsec-lab/mxsec/exim/exim4 -bt someone@dane-ok.test        # which router, which transport
        /run/mxsec-lab/mxsec/exim/exim4 -bP transport remote_smtp_mxsec_sts
        less /run/mxsec-lab/mxsec/exim/log/mainlog

What differs from a Debian host (all in the instance's copy of ``/etc/exim4``)
    * ``conf.d/main/000_localmacros``: the lab's settings — spool, log path, host name, the daemon's socket
      (``MXSEC_SOCKET``), the lab CA (``MXSEC_TLS_VERIFY_CERTIFICATES``), ``+received_recipients`` in the log.
    * ``conf.d/main/000_mxsec``, ``conf.d/router/190_mxsec``, ``conf.d/transport/30_mxsec``: the files of
      ``contrib/exim/``, unchanged — the lab tests what users install.
    * ``exim_path`` (``01_exim4-config_listmacrosdefs``) names the private binary, so Exim can re-execute
      itself; ``rewrite/31_exim4-config_rewriting`` is left out (it reads ``/etc/email-addresses``, a file of
      the host installation); ``update-exim4.conf`` reads the mail name from the instance's ``mailname``
      instead of ``/etc/mailname`` (a copy of the script with that one path changed).

Exim writes "exim user lost privilege for using -C option" to both logs on every delivery: the re-executed
delivery process runs with the private configuration, which is not in the (absent) ``trusted_configs`` file.
Remote SMTP deliveries run as the Exim user anyway, so nothing is lost; :meth:`Exim.panic_lines` leaves that
line out.
"""

from __future__ import annotations

import grp
import os
from importlib import resources
import pwd
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Self

from mxsec.fsutil import make_dirs

__all__ = [
    "DEFAULT_ROOT",
    "Exim",
    "EximError",
    "EximOutcome",
    "EximSpec",
    "contrib_dir",
    "exim_root",
    "outcome_from_log",
    "unavailable",
]

DEFAULT_ROOT = Path("/opt/mxsec/exim4")
ROOT_ENV = "MXSEC_EXIM_ROOT"
CONTRIB_ENV = "MXSEC_EXIM_CONTRIB"
EXIM_USER = "Debian-exim"
#: the files of contrib/exim/ and where Debian's split configuration wants them
CONTRIB_FILES = {
    "mxsec-macros.conf": "main/000_mxsec",
    "mxsec-routers.conf": "router/190_mxsec",
    "mxsec-transports.conf": "transport/30_mxsec",
}
#: logged on every delivery of a -C configuration that is not in trusted_configs (see the module docstring)
LOST_PRIVILEGE = "exim user lost privilege for using -C option"
_UPDATE_SCRIPT = "usr/sbin/update-exim4.conf"
_BINARY = "usr/sbin/exim4"
_MAILNAME = "/etc/mailname"


class EximError(RuntimeError):
    """An Exim command failed or Exim cannot be set up; the message carries its output."""


def exim_root() -> Path:
    """Where Debian's Exim packages are unpacked (``$MXSEC_EXIM_ROOT``, default ``/opt/mxsec/exim4``)."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def contrib_dir() -> Path | None:
    """The Exim files mxsec ships (``mxsec/exim/`` in the installed package, which ``contrib/exim/`` of a
    checkout points to), or ``$MXSEC_EXIM_CONTRIB``, if it holds the three files."""
    env = os.environ.get(CONTRIB_ENV)
    candidates = [Path(env)] if env else [Path(str(resources.files("mxsec") / "exim"))]
    for d in candidates:
        if all((d / name).is_file() for name in CONTRIB_FILES):
            return d
    return None


def unavailable(root: Path | None = None) -> str | None:
    """Why the lab cannot run Exim here (``None`` when it can)."""
    root = root or exim_root()
    if os.geteuid() != 0:
        return "the lab's Exim needs root"
    binary = root / _BINARY
    if not os.access(binary, os.X_OK):
        return f"no Exim at {binary}: run scripts/install-system-deps.sh (or set ${ROOT_ENV})"
    for rel in (_UPDATE_SCRIPT, "etc/exim4/conf.d/main"):
        if not (root / rel).exists():
            return f"incomplete Exim tree {root}: {rel} missing (rerun scripts/install-system-deps.sh)"
    for tool in ("ip", "unshare", "mount", "ldd"):
        if shutil.which(tool) is None:
            return f"the lab's Exim needs {tool}"
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ldd {binary}: {exc}"
    missing = [line.split()[0] for line in out.splitlines() if "not found" in line]
    if missing:
        return f"{binary} needs missing libraries {', '.join(missing)}: run scripts/install-system-deps.sh"
    if contrib_dir() is None:
        return f"contrib/exim not found (set ${CONTRIB_ENV})"
    return None


# --------------------------------------------------------------------------------------------- the log


_LOG_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (?:\[\d+\] )?"
    r"(?:(?P<id>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) )?(?P<msg>.*)$"
)
_STATUS = re.compile(r"^(?P<flag>=>|->|\*>|==|\*\*) (?P<rcpt>\S+)(?: <(?P<orig>[^>]*)>)?(?P<rest>.*)$")
_FIELD = {
    "router": re.compile(r" R=(\S+)"),
    "transport": re.compile(r" T=(\S+)"),
    "host": re.compile(r" H=(\S+)"),
    "address": re.compile(r" H=\S+ \[([^\]]+)\]"),
    "tls": re.compile(r" X=(\S+)"),
    "cv": re.compile(r" CV=(\S+)"),
    "dn": re.compile(r' DN="([^"]*)"'),
}
#: the first line of each message in ``exim4 -bp``: age, size, id, sender
_QUEUE_LINE = re.compile(r"^\s*\d+[smhdw]\s+\S+\s+([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})\s", re.M)
_STATUS_NAMES = {"=>": "delivered", "->": "delivered", "*>": "delivered", "==": "deferred", "**": "failed"}


@dataclass(frozen=True)
class EximOutcome:
    """The latest known fate of one recipient, from Exim's main log.

    ``status``: ``delivered`` (``=>``), ``deferred`` (``==``), ``failed`` (``**``, bounced) or ``pending``
    (no status line yet; ``unknown`` when not even the arrival is logged). ``cv`` is Exim's certificate
    verdict on a delivery: ``yes`` (PKIX, name checked), ``dane``, ``no``. ``reason`` is the text after the
    first ``": "`` of a deferral or failure. ``notes`` are the message's other log lines (e.g. ``DANE attempt
    failed; …``, ``a TLS session is required…``).
    """

    status: str
    rcpt: str
    message_id: str | None = None
    router: str | None = None
    transport: str | None = None
    host: str | None = None
    address: str | None = None
    tls: str | None = None
    cv: str | None = None
    dn: str | None = None
    reason: str | None = None
    line: str | None = None
    notes: tuple[str, ...] = ()


def outcome_from_log(text: str, rcpt: str) -> EximOutcome:
    """:class:`EximOutcome` of recipient ``rcpt`` (case-insensitive) in main-log ``text``."""
    wanted = rcpt.lower()
    parsed = [m for m in (_LOG_LINE.match(line) for line in text.splitlines()) if m]
    chosen = None
    message_id = None
    for m in parsed:
        status = _STATUS.match(m["msg"])
        if status and status["rcpt"].lower() == wanted:
            chosen = (m, status)
            message_id = m["id"]
        elif message_id is None and m["msg"].startswith("<= ") and m["id"]:
            fors = m["msg"].rsplit(" for ", 1)
            if len(fors) == 2 and wanted in (a.lower() for a in fors[1].split()):
                message_id = m["id"]
    notes = tuple(m["msg"] for m in parsed if message_id and m["id"] == message_id
                  and not _STATUS.match(m["msg"]) and not m["msg"].startswith("<= ") and m["msg"] != "Completed")
    if chosen is None:
        return EximOutcome("pending" if message_id else "unknown", rcpt, message_id, notes=notes)
    m, status = chosen
    rest = status["rest"]
    fields = {name: (found.group(1) if (found := rx.search(rest)) else None) for name, rx in _FIELD.items()}
    flag = status["flag"]
    reason = rest.split(": ", 1)[1] if flag in ("==", "**") and ": " in rest else None
    return EximOutcome(_STATUS_NAMES[flag], status["rcpt"], m["id"], reason=reason, line=m.group(0), notes=notes,
                       **fields)


# --------------------------------------------------------------------------------------------- the instance


@dataclass(frozen=True)
class EximSpec:
    """One private Exim instance.

    ``directory`` holds everything of the instance; ``netns`` is the network namespace every Exim command
    runs in (the lab's sender namespace); ``socket`` is ``MXSEC_SOCKET`` (where ``mxsec daemon`` listens, as
    seen from that namespace); ``ca_file`` the trust anchor for MTA-STS (``MXSEC_TLS_VERIFY_CERTIFICATES``;
    ``None``: the system store); ``macros`` more lines for ``000_localmacros`` (``NAME = value``).
    """

    directory: Path
    netns: str
    socket: str = "inet:127.0.0.1:8461"
    ca_file: Path | None = None
    hostname: str = "sender.lab.test"
    root: Path = field(default_factory=exim_root)
    contrib: Path | None = None
    macros: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", Path(self.directory).absolute())
        object.__setattr__(self, "root", Path(self.root).absolute())
        if self.ca_file is not None:
            object.__setattr__(self, "ca_file", Path(self.ca_file).absolute())


class Exim:
    """Set up, drive and read one private Exim (see the module docstring)."""

    def __init__(self, spec: EximSpec) -> None:
        self.spec = spec
        d = spec.directory
        self.etc = d / "etc"
        self.config = d / "exim4.conf"
        self.spool = d / "spool"
        self.log_dir = d / "log"
        self.wrapper = d / "exim4"
        self.binary = spec.root / _BINARY

    # -- paths ---------------------------------------------------------------------------------------------
    @property
    def mainlog(self) -> Path:
        return self.log_dir / "mainlog"

    @property
    def paniclog(self) -> Path:
        return self.log_dir / "paniclog"

    # -- setup ---------------------------------------------------------------------------------------------
    def setup(self) -> Self:
        """Write the instance (a fresh copy of Debian's configuration + contrib/exim + the lab's macros),
        generate ``exim4.conf`` with Debian's ``update-exim4.conf`` and check it with ``exim4 -bV``."""
        reason = unavailable(self.spec.root)
        if reason:
            raise EximError(reason)
        contrib = self.spec.contrib or contrib_dir()
        assert contrib is not None  # unavailable() checked it
        d = self.spec.directory
        make_dirs(d, 0o755)
        if self.etc.exists():
            shutil.rmtree(self.etc)
        shutil.copytree(self.spec.root / "etc" / "exim4", self.etc, symlinks=True)
        confd = self.etc / "conf.d"
        for name, target in CONTRIB_FILES.items():
            shutil.copyfile(contrib / name, confd / target)
        (confd / "rewrite" / "31_exim4-config_rewriting").unlink(missing_ok=True)
        if self.binary != Path("/usr/sbin/exim4"):
            self._set_exim_path(confd / "main" / "01_exim4-config_listmacrosdefs")
        uid, gid = self._exim_ids()
        (confd / "main" / "000_localmacros").write_text(self._local_macros(), encoding="utf-8")
        (self.etc / "update-exim4.conf.conf").write_text(self._debconf(), encoding="utf-8")
        (d / "mailname").write_text(self.spec.hostname + "\n", encoding="utf-8")
        self._write_identity(uid, gid)
        self._write_update_script()
        self._write_wrapper()
        for sub in (self.spool, self.log_dir):
            make_dirs(sub, 0o755)
            os.chown(sub, uid, gid)
            sub.chmod(0o750)
        for parent in [d, *d.parents]:  # the Exim user must reach the spool, the logs and the CA file
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                raise EximError(f"{parent} is not searchable by others: the Exim user cannot reach {d}")
        self.config.unlink(missing_ok=True)
        self._overlay_run(["/bin/sh", str(d / "update-exim4.conf"), "-d", str(self.etc), "-o", str(self.config)],
                          what="update-exim4.conf")
        version = self.run(["-bV"], timeout=30)
        if version.returncode != 0 or "Exim version" not in version.stdout:
            raise EximError(f"exim4 -bV failed:\n{version.stdout}{version.stderr}")
        return self

    def _set_exim_path(self, path: Path) -> None:
        text = path.read_text(encoding="utf-8")
        new, count = re.subn(r"(?m)^exim_path = /usr/sbin/exim4$", f"exim_path = {self.binary}", text)
        if count != 1:
            raise EximError(f"{path}: expected one 'exim_path = /usr/sbin/exim4' line, found {count}")
        path.write_text(new, encoding="utf-8")

    def _local_macros(self) -> str:
        s = self.spec
        lines = [
            "# mxsec lab: settings of this private instance (written by mxsec.lab.exim)",
            f"MAIN_HARDCODE_PRIMARY_HOSTNAME = {s.hostname}",
            f"SPOOLDIR = {self.spool}",
            f"log_file_path = {self.log_dir}/%slog",
            ("MAIN_LOG_SELECTOR = +smtp_protocol_error +smtp_syntax_error +tls_certificate_verified +tls_peerdn "
             "+received_recipients +outgoing_port"),
            f"MXSEC_SOCKET = {s.socket}",
        ]
        if s.ca_file is not None:
            lines.append(f"MXSEC_TLS_VERIFY_CERTIFICATES = {s.ca_file}")
        lines += [f"{k} = {v}" for k, v in s.macros.items()]
        return "\n".join(lines) + "\n"

    def _debconf(self) -> str:
        return "\n".join([
            "# what debconf would have written (mxsec lab)",
            "dc_eximconfig_configtype='internet'",
            f"dc_other_hostnames='{self.spec.hostname}'",
            "dc_local_interfaces='127.0.0.1'",
            "dc_readhost=''",
            "dc_relay_domains=''",
            "dc_minimaldns='false'",
            "dc_relay_nets=''",
            "dc_smarthost=''",
            "CFILEMODE='644'",
            "dc_use_split_config='true'",
            "dc_hide_mailname=''",
            "dc_mailname_in_oh='true'",
            "dc_localdelivery='mail_spool'",
        ]) + "\n"

    @staticmethod
    def _exim_ids() -> tuple[int, int]:
        """The host's Debian-exim uid/gid, else a system id free in both /etc/passwd and /etc/group."""
        try:
            pw = pwd.getpwnam(EXIM_USER)
            return pw.pw_uid, pw.pw_gid
        except KeyError:
            pass
        used_uids = {p.pw_uid for p in pwd.getpwall()}
        used_gids = {g.gr_gid for g in grp.getgrall()}
        for candidate in range(989, 99, -1):
            if candidate not in used_uids and candidate not in used_gids:
                return candidate, candidate
        raise EximError("no free system uid/gid for the Exim user")

    def _write_identity(self, uid: int, gid: int) -> None:
        d = self.spec.directory
        passwd = Path("/etc/passwd").read_text(encoding="utf-8")
        group = Path("/etc/group").read_text(encoding="utf-8")
        if not re.search(rf"(?m)^{re.escape(EXIM_USER)}:", passwd):
            entry = f"{EXIM_USER}:x:{uid}:{gid}:mxsec lab Exim:{self.spool}:/usr/sbin/nologin"
            passwd = passwd.rstrip("\n") + "\n" + entry + "\n"
        if not re.search(rf"(?m)^{re.escape(EXIM_USER)}:", group):
            group = group.rstrip("\n") + f"\n{EXIM_USER}:x:{gid}:\n"
        (d / "passwd").write_text(passwd, encoding="utf-8")
        (d / "group").write_text(group, encoding="utf-8")
        (d / "passwd").chmod(0o644)
        (d / "group").chmod(0o644)

    def _write_update_script(self) -> None:
        text = (self.spec.root / _UPDATE_SCRIPT).read_text(encoding="utf-8")
        mailname = str(self.spec.directory / "mailname")
        if f"< {_MAILNAME} " not in text:
            raise EximError(f"{self.spec.root / _UPDATE_SCRIPT}: does not read {_MAILNAME} as expected")
        (self.spec.directory / "update-exim4.conf").write_text(text.replace(_MAILNAME, mailname), encoding="utf-8")

    def _overlay_prefix(self) -> list[str]:
        d = self.spec.directory
        return ["ip", "netns", "exec", self.spec.netns, "unshare", "--mount", "--", "/bin/sh", "-c",
                'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && shift 2 && exec "$@"',
                "mxsec-exim", str(d / "passwd"), str(d / "group")]

    def _write_wrapper(self) -> None:
        argv = [*self._overlay_prefix(), str(self.binary), "-C", str(self.config)]
        script = (
            "#!/bin/sh\n"
            "# The lab's Exim (mxsec.lab.exim): Debian's exim4 with this instance's configuration, inside the lab's\n"
            "# sender namespace, with private copies of /etc/passwd and /etc/group that add the user Debian-exim.\n"
            f"exec {shlex.join(argv)} \"$@\"\n"
        )
        self.wrapper.write_text(script, encoding="utf-8")
        self.wrapper.chmod(0o755)

    def _overlay_run(self, argv: Sequence[str], *, what: str, timeout: float = 60) -> str:
        proc = self._spawn([*self._overlay_prefix(), *argv], timeout=timeout)
        if proc.returncode != 0:
            raise EximError(f"{what} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    @staticmethod
    def _spawn(argv: Sequence[str], *, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``argv`` in its own process group; on timeout the whole group is killed (Exim forks)."""
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate(timeout=10)
            raise EximError(f"{shlex.join(argv[-6:])} did not finish within {timeout:g} s") from None
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)

    # -- commands ------------------------------------------------------------------------------------------
    def run(self, args: Sequence[str], *, input: str | None = None, macros: Mapping[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """``exim4 -C exim4.conf [-DNAME=value…] ARGS`` in the lab (output as text, never raises on status)."""
        defines = [f"-D{k}={v}" for k, v in (macros or {}).items()]
        return self._spawn([str(self.wrapper), *defines, *args], input=input, timeout=timeout)

    def version(self) -> str:
        return self.run(["-bV"]).stdout.splitlines()[0]

    def route(self, address: str, *, macros: Mapping[str, str] | None = None, timeout: float = 60) -> str:
        """``exim4 -bt ADDRESS``: which router and transport, or why the address cannot be routed now."""
        proc = self.run(["-bt", address], macros=macros, timeout=timeout)
        return proc.stdout + proc.stderr

    def send(self, sender: str, rcpt: str, subject: str = "mxsec lab", body: str = "hello\n", *,
             macros: Mapping[str, str] | None = None, timeout: float = 60) -> EximOutcome:
        """Submit one message and deliver it in the foreground (``-odf``); returns the recipient's outcome.
        ``macros`` override configuration macros for this message only (``-D``, e.g. ``MXSEC_SOCKET``)."""
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = rcpt
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=self.spec.hostname)
        msg.set_content(body)
        proc = self.run(["-odf", "-oi", "-f", sender, "--", rcpt], input=msg.as_string(), macros=macros,
                        timeout=timeout)
        if proc.returncode != 0:
            raise EximError(f"exim4 -odf exited {proc.returncode}:\n{proc.stdout}{proc.stderr}\n{self.log_tail()}")
        return self.outcome(rcpt)

    def outcome(self, rcpt: str) -> EximOutcome:
        return outcome_from_log(self.log_text(), rcpt)

    def clear_retry(self) -> None:
        """Forget retry data (a host or domain that failed is otherwise skipped until its retry time)."""
        db = self.spool / "db"
        for path in db.glob("retry*") if db.is_dir() else ():
            path.unlink(missing_ok=True)

    def queue_ids(self) -> list[str]:
        """Ids of the queued messages, from ``exim4 -bp`` (``-bpi`` is newer than Debian's Exim 4.96)."""
        proc = self.run(["-bp"], timeout=30)
        return [m.group(1) for m in _QUEUE_LINE.finditer(proc.stdout)]

    def delete_queue(self) -> None:
        ids = self.queue_ids()
        if ids:
            self.run(["-Mrm", *ids], timeout=30)

    # -- logs ----------------------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.mainlog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def panic_lines(self) -> list[str]:
        """Panic-log lines, without the expected "lost privilege" notice (see the module docstring)."""
        try:
            text = self.paniclog.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.strip() and LOST_PRIVILEGE not in line]
