"""A real Dovecot IMAP server started by the tests themselves (test helper).

Debian packages: ``dovecot-core`` and ``dovecot-imapd`` (``scripts/install-system-deps.sh``). The system
service of those packages is not used and need not run: every server here has its own ``dovecot.conf`` in a
temporary directory (no ``/etc/dovecot`` include), its own ``base_dir``, ``state_dir``, log file, password file
and Maildir storage there, and listens on 127.0.0.1 only, on two ports the kernel picked:

* ``port``: IMAP with STARTTLS (plain IMAP before it, which Dovecot accepts from loopback),
* ``tls_port``: IMAP over implicit TLS.

The certificate is issued by a throw-away ``trustme`` CA for ``127.0.0.1`` and ``localhost``;
``ca_file`` is that CA's PEM file (give it to ``--ca-file``).

As root (CI), Dovecot's own unprivileged users from the Debian package (``dovecot``, ``dovenull``) run its
internal and login processes and the mail is stored as ``nobody``; as another user everything runs as that
user (Dovecot's rootless mode: no chroot). The config is written for Dovecot 2.3 (Debian 12).

Reuse: ``running_dovecot(users={"name": "password"})`` (context manager) or ``DovecotServer(...).start()`` and
``cleanup()``; :meth:`DovecotServer.client` gives a logged-in ``imaplib`` client for delivering messages
(:meth:`append`) and looking at flags and folders (:meth:`flags`, :meth:`uids`, :meth:`folders`).
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from mxsec.testing.servers import stop_process

HOST = "127.0.0.1"
START_TIMEOUT = 30.0

#: What Dovecot advertises after login when MOVE (and UIDPLUS) must look unsupported (``imap_capability``).
CAPABILITY_WITHOUT_MOVE = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE CHILDREN UNSELECT UIDPLUS"
CAPABILITY_WITHOUT_MOVE_OR_UIDPLUS = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE CHILDREN UNSELECT"


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _greeting(port: int, tls_context: ssl.SSLContext | None = None) -> bytes:
    try:
        with socket.create_connection((HOST, port), timeout=1) as raw:
            if tls_context is None:
                return raw.recv(256)
            with tls_context.wrap_socket(raw, server_hostname=HOST) as wrapped:
                return wrapped.recv(256)
    except (OSError, ssl.SSLError):
        return b""


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class DovecotServer:
    """Dovecot serving IMAP for the users in *users* (name -> password; no ``:`` in either).

    *capability* replaces what Dovecot advertises after login (``imap_capability``), e.g.
    :data:`CAPABILITY_WITHOUT_MOVE` to make a client fall back to COPY + EXPUNGE.
    """

    def __init__(self, users: Mapping[str, str], *, capability: str | None = None) -> None:
        binary = dovecot_binary()
        if binary is None:
            raise RuntimeError("dovecot is not installed (Debian packages: dovecot-core dovecot-imapd)")
        if not os.path.exists("/usr/lib/dovecot/imap"):
            raise RuntimeError("dovecot's imap service is not installed (Debian package: dovecot-imapd)")
        for name, password in users.items():
            if ":" in name or ":" in password or "\n" in name + password or not name or not password:
                raise ValueError(f"unusable test user {name!r}")
        self.binary = binary
        self.users = dict(users)
        self.capability = capability
        self.dir = Path(tempfile.mkdtemp(prefix="mxsec-dovecot-"))
        os.chmod(self.dir, 0o755)  # Dovecot's unprivileged processes look things up in here
        self.conf = self.dir / "dovecot.conf"
        self.log = self.dir / "dovecot.log"
        self.mail = self.dir / "mail"
        self.port = 0
        self.tls_port = 0
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0
        self._write_certificate()
        self._write_users()

    # ------------------------------------------------------------------------------------------- setup

    def _write_certificate(self) -> None:
        import trustme

        self.ca = trustme.CA()
        cert = self.ca.issue_cert(HOST, "localhost")
        self.ca_file = self.dir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file = self.dir / "cert.pem"
        self.key_file = self.dir / "key.pem"
        cert.private_key_pem.write_to_path(str(self.key_file))
        with open(self.cert_file, "wb") as out:
            out.writelines(blob.bytes() for blob in cert.cert_chain_pems)
        os.chmod(self.key_file, 0o600)  # read by Dovecot's config process, which runs as the starting user

    def _write_users(self) -> None:
        self.passwd = self.dir / "passwd"
        lines = [f"{name}:{{PLAIN}}{password}::::::\n" for name, password in self.users.items()]
        self.passwd.write_text("".join(lines), encoding="utf-8")
        self.mail.mkdir()
        if os.geteuid() == 0:
            internal, login, mail = pwd.getpwnam("dovecot"), pwd.getpwnam("dovenull"), pwd.getpwnam("nobody")
            self._internal_user, self._login_user = internal.pw_name, login.pw_name
            self._mail_uid, self._mail_gid = mail.pw_uid, mail.pw_gid
            os.chown(self.mail, mail.pw_uid, mail.pw_gid)
            os.chmod(self.passwd, 0o644)  # the auth process runs as "dovecot"
        else:
            me = pwd.getpwuid(os.geteuid())
            self._internal_user = self._login_user = me.pw_name
            self._mail_uid, self._mail_gid = me.pw_uid, me.pw_gid

    def _write_conf(self) -> None:
        d = self.dir
        capability = f"imap_capability = {self.capability}\n" if self.capability else ""
        self.conf.write_text(f"""\
# Written by tests/integration/dovecot.py for one test server; nothing here refers to /etc/dovecot.
protocols = imap
listen = {HOST}
base_dir = {d}/run
state_dir = {d}/state
instance_name = mxsec-test-{os.getpid()}-{self.port}
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
debug_log_path = {d}/dovecot.log
default_internal_user = {self._internal_user}
default_internal_group = {_group_name(self._internal_user)}
default_login_user = {self._login_user}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{d}/mail/%u/Maildir
mail_uid = {self._mail_uid}
mail_gid = {self._mail_gid}
auth_mechanisms = plain login
auth_failure_delay = 0
disable_plaintext_auth = yes
ssl = yes
ssl_cert = <{self.cert_file}
ssl_key = <{self.key_file}
ssl_min_protocol = TLSv1.2
{capability}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd}
}}
userdb {{
  driver = static
  args = uid={self._mail_uid} gid={self._mail_gid} home={d}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self.tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
""", encoding="utf-8")

    # ---------------------------------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def start(self) -> DovecotServer:
        if self.running:
            return self
        began = time.monotonic()
        for _attempt in range(3):  # a free port may be taken between choosing and binding it
            self.port, self.tls_port = _free_port(), _free_port()
            if self.port == self.tls_port:
                continue
            self._write_conf()
            with open(self.dir / "dovecot.stdout", "ab") as out:
                self.proc = subprocess.Popen(
                    [self.binary, "-F", "-c", str(self.conf)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )
            if self._wait_ready():
                self.start_seconds = time.monotonic() - began
                return self
            self.stop(signal.SIGKILL)
        raise RuntimeError(
            f"dovecot did not start; log:\n{_tail(self.log)}\n{_tail(self.dir / 'dovecot.stdout')}"
        )

    def _wait_ready(self) -> bool:
        context = self.tls_context()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.running:
            if _greeting(self.port).startswith(b"* OK") and _greeting(self.tls_port, context).startswith(b"* OK"):
                return True
            time.sleep(0.05)
        return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc, sig, group=True)  # the master and the children it started (own session)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------------------------------ clients

    def client(self, user: str) -> imaplib.IMAP4_SSL:
        """A logged-in client over implicit TLS (close it with ``logout()``)."""
        conn = imaplib.IMAP4_SSL(HOST, self.tls_port, ssl_context=self.tls_context(), timeout=10)
        password = self.users[user]
        if (user + password).isascii():
            conn.login(user, password)
        else:
            secret = f"\0{user}\0{password}".encode()
            conn.authenticate("PLAIN", lambda _challenge: secret)
        return conn

    @contextlib.contextmanager
    def session(self, user: str) -> Iterator[imaplib.IMAP4_SSL]:
        conn = self.client(user)
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def append(self, user: str, messages: list[bytes], mailbox: str = "INBOX", flags: str = "") -> None:
        """Deliver *messages* into *mailbox* (created if missing) with IMAP APPEND."""
        with self.session(user) as conn:
            if mailbox != "INBOX":
                conn.create(_quote(mailbox))
            for message in messages:
                typ, data = conn.append(_quote(mailbox), f"({flags})" if flags else None, None, message)
                assert typ == "OK", (typ, data)

    def uids(self, user: str, mailbox: str = "INBOX", criteria: str = "ALL") -> list[int]:
        with self.session(user) as conn:
            typ, data = conn.select(_quote(mailbox), readonly=True)
            if typ != "OK":
                return []
            typ, data = conn.uid("SEARCH", criteria)
            assert typ == "OK", (typ, data)
            return [int(n) for n in (data[0] or b"").split()]

    def flags(self, user: str, mailbox: str = "INBOX") -> dict[int, set[str]]:
        """UID -> flags (without ``\\Recent``) of every message in *mailbox* (``{}`` if it does not exist)."""
        with self.session(user) as conn:
            typ, _data = conn.select(_quote(mailbox), readonly=True)
            if typ != "OK":
                return {}
            typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
            assert typ == "OK", (typ, data)
            result: dict[int, set[str]] = {}
            for line in data:
                if not isinstance(line, bytes):
                    continue
                uid = re.search(rb"UID (\d+)", line)
                flags = re.search(rb"FLAGS \(([^)]*)\)", line)
                if uid and flags:
                    result[int(uid.group(1))] = set(flags.group(1).decode().split()) - {"\\Recent"}
            return result

    def folders(self, user: str) -> set[str]:
        with self.session(user) as conn:
            typ, data = conn.list()
            assert typ == "OK", (typ, data)
            names = set()
            for line in data:
                match = re.match(rb'\([^)]*\) (?:"[^"]*"|NIL) "?(.*?)"?$', line or b"")
                if match:
                    names.add(match.group(1).decode())
            return names

    def expunge_all(self, user: str, mailbox: str = "INBOX") -> None:
        with self.session(user) as conn:
            typ, _data = conn.select(_quote(mailbox))
            if typ != "OK":
                return
            conn.uid("STORE", "1:*", "+FLAGS.SILENT", r"(\Deleted)")
            conn.expunge()


def _group_name(user: str) -> str:
    import grp

    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def running_dovecot(users: Mapping[str, str], **kwargs) -> Iterator[DovecotServer]:
    server = DovecotServer(users, **kwargs)
    try:
        yield server.start()
    finally:
        server.cleanup()
