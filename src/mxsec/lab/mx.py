"""Lab MX servers: SMTP with (or without) STARTTLS that accept every message and store it with session facts.

Each :class:`MxSpec` is one MX host: a name (``mx1.lab.test``), an IP address, a port (25) and the kind of
certificate it presents after STARTTLS:

=============== ===========================================================================================
``valid``       issued by the lab CA for the MX name
``expired``     issued by the lab CA for the MX name, validity ended yesterday
``wrong-name``  issued by the lab CA for ``wrong-name.invalid`` (matches no lab name or ``.lab.test`` suffix)
``untrusted``   for the MX name, but issued by another (throw-away) CA that nobody trusts
``self-signed`` a self-signed leaf for the MX name (DANE-EE ``3 1 1`` still works with it)
``no-starttls`` STARTTLS is not offered at all
=============== ===========================================================================================

All lab-CA leaves share the CA's one leaf key (:class:`mxsec.testing.pki.TestCA`), so their ``3 1 1`` TLSA
data are the same; :func:`spki_sha256` computes it from a certificate.

:class:`MxFarm` serves many MX addresses from one asyncio loop (one listening server per address), either in
the caller's loop (:meth:`MxFarm.astart`) or in a background thread (:meth:`MxFarm.start`). Every accepted
message becomes one JSON file, written Maildir-style (``tmp/`` then renamed into ``new/``) under
``MAIL_DIR/<mx name>/``; every SMTP connection adds one line to ``MAIL_DIR/<mx name>/sessions.jsonl`` when it
ends (also connections that never sent mail — e.g. a client that rejected the certificate). Both can be read
by another process with :func:`read_received` / :func:`read_sessions`. Each MX's certificate chain is written
to ``MAIL_DIR/<mx name>/cert.pem`` (for TLSA records).

Command line, as the lab runner starts it inside the internet namespace::

    ip netns exec NS python -m mxsec.lab.mx --spec mx.json --mail-dir DIR --ca-dir DIR [--ready-file F]

``mx.json`` is a list (or ``{"mx": [...]}``) of ``{"name": ..., "address": ..., "cert_kind": ..., "port": 25}``.
``--ca-dir`` holds the lab CA as ``ca.crt`` + ``ca.key`` (PEM; created there if missing, see :func:`load_ca`
/ :func:`save_ca`). The ready file (default ``MAIL_DIR/ready``) is written, as JSON with the pid and the
addresses, once every server listens, and removed on exit. SIGTERM / SIGINT stop the process cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mxsec.fsutil import make_dirs
from mxsec.testing.pki import TestCA, key_to_pem, new_key, self_signed, write_pem

__all__ = [
    "CERT_KINDS",
    "MxFarm",
    "MxFarmProcess",
    "MxSpec",
    "Received",
    "SessionRecord",
    "load_ca",
    "load_specs",
    "main",
    "read_received",
    "read_sessions",
    "save_ca",
    "spki_sha256",
]

_log = logging.getLogger("mxsec.lab.mx")

CERT_KINDS = ("valid", "expired", "wrong-name", "untrusted", "self-signed", "no-starttls")
WRONG_NAME = "wrong-name.invalid"


@dataclass(frozen=True)
class MxSpec:
    """One lab MX: ``name`` (host name, also the SMTP banner name), ``address`` (IPv4/IPv6), ``cert_kind``."""

    name: str
    address: str
    cert_kind: str = "valid"
    port: int = 25
    cert_name: str | None = None  # the name in the certificate, when it is not ``name`` (valid/expired/untrusted)

    def __post_init__(self) -> None:
        if self.cert_kind not in CERT_KINDS:
            raise ValueError(f"unknown cert_kind {self.cert_kind!r}; one of {', '.join(CERT_KINDS)}")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"bad MX name {self.name!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MxSpec:
        return cls(
            name=str(data["name"]),
            address=str(data["address"]),
            cert_kind=str(data.get("cert_kind", "valid")),
            port=int(data.get("port", 25)),
            cert_name=str(data["cert_name"]) if data.get("cert_name") else None,
        )


@dataclass(frozen=True)
class Received:
    """One stored message and the facts of the session that delivered it."""

    mx: str
    path: str
    received_at: str
    peer: str | None
    peer_port: int | None
    local: str | None
    helo: str | None
    mail_from: str
    rcpt_tos: tuple[str, ...]
    tls: bool
    tls_version: str | None
    cipher: str | None
    sni: str | None
    data: str

    @property
    def headers(self) -> dict[str, str]:
        """The message's header fields (first occurrence wins; keys lower-case)."""
        from email.parser import HeaderParser

        msg = HeaderParser().parsestr(self.data, headersonly=True)
        result: dict[str, str] = {}
        for key, value in msg.items():
            result.setdefault(key.lower(), str(value))
        return result


@dataclass(frozen=True)
class SessionRecord:
    """One SMTP connection to an MX, recorded when it ended."""

    mx: str
    started_at: str
    ended_at: str
    peer: str | None
    helo: str | None
    starttls: bool
    tls: bool
    tls_version: str | None
    cipher: str | None
    sni: str | None
    messages: int
    tls_error: str | None = None
    #: the name of the connection's first HELO/EHLO (``helo`` is the last one, and is reset by STARTTLS: a
    #: client that drops the connection after the handshake has none)
    first_helo: str | None = None


# --------------------------------------------------------------------------------------------- CA helpers


def save_ca(ca: TestCA, directory: str | os.PathLike[str]) -> Path:
    """Write ``ca.crt`` and ``ca.key`` (mode 0600) of ``ca`` into ``directory``; returns the certificate path."""
    target = Path(directory)
    make_dirs(target, 0o755)
    write_pem(target / "ca.key", ca.key_pem)
    os.chmod(target / "ca.key", 0o600)
    return write_pem(target / "ca.crt", ca.cert_pem)


def load_ca(directory: str | os.PathLike[str], *, create: bool = True) -> TestCA:
    """Load the lab CA from ``directory`` (``ca.crt`` + ``ca.key``), creating and saving one if missing.

    The loaded object behaves as a :class:`TestCA` (``issue``, ``expired``, ``cert_pem``…); its shared leaf key
    is fresh for this process.
    """
    source = Path(directory)
    cert_path, key_path = source / "ca.crt", source / "ca.key"
    if not (cert_path.exists() and key_path.exists()):
        if not create:
            raise FileNotFoundError(f"no ca.crt/ca.key in {source}")
        ca = TestCA("mxsec lab root CA")
        save_ca(ca, source)
        return ca
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    ca = TestCA.__new__(TestCA)
    attrs = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    ca.common_name = str(attrs[0].value) if attrs else ""
    ca.key = key  # type: ignore[assignment]  # the lab CA key is one TestCA made (EC), whatever PEM says
    ca.cert = cert
    ca.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    ca.key_pem = key_to_pem(key)  # type: ignore[arg-type]  # as above
    ca._aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())  # type: ignore[arg-type]  # as above
    ca.leaf_key = new_key()
    ca.leaf_key_pem = key_to_pem(ca.leaf_key)
    return ca


def spki_sha256(cert_pem: bytes) -> str:
    """Hex SHA-256 of the certificate's SubjectPublicKeyInfo: the data of a ``3 1 1`` (or ``2 1 1``) TLSA record."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def _certificate_for(spec: MxSpec, ca: TestCA, untrusted: TestCA) -> tuple[bytes, bytes] | None:
    kind = spec.cert_kind
    name = spec.cert_name or spec.name
    if kind == "no-starttls":
        return None
    if kind == "valid":
        return ca.issue([name])
    if kind == "expired":
        return ca.expired([name])
    if kind == "wrong-name":
        return ca.issue([WRONG_NAME])
    if kind == "untrusted":
        return untrusted.issue([name])
    if kind == "self-signed":
        return self_signed([name])
    raise ValueError(kind)  # pragma: no cover - MxSpec validates


# --------------------------------------------------------------------------------------------- storage


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _write_atomic(directory: Path, name: str, payload: bytes) -> Path:
    tmp_dir, new_dir = directory / "tmp", directory / "new"
    make_dirs(tmp_dir, 0o755)
    make_dirs(new_dir, 0o755)
    tmp = tmp_dir / name
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    final = new_dir / name
    os.replace(tmp, final)
    return final


def read_received(mail_dir: str | os.PathLike[str], mx_name: str) -> list[Received]:
    """Messages stored for ``mx_name`` under ``mail_dir``, oldest first (works from any process)."""
    new_dir = Path(mail_dir) / mx_name / "new"
    if not new_dir.is_dir():
        return []
    result = []
    for path in sorted(new_dir.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        data["rcpt_tos"] = tuple(data["rcpt_tos"])
        data["path"] = str(path)
        result.append(Received(**data))
    return result


def read_sessions(mail_dir: str | os.PathLike[str], mx_name: str) -> list[SessionRecord]:
    """Finished SMTP connections to ``mx_name``, in the order they ended."""
    path = Path(mail_dir) / mx_name / "sessions.jsonl"
    if not path.exists():
        return []
    result = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        data = json.loads(line)
        result.append(SessionRecord(**data))
    return result


# --------------------------------------------------------------------------------------------- SMTP


def _tls_facts(ssl_extra: dict[str, Any] | None) -> tuple[bool, str | None, str | None, str | None]:
    if not ssl_extra:
        return False, None, None, None
    obj = ssl_extra.get("ssl_object")
    version = obj.version() if obj is not None else None
    cipher_info = obj.cipher() if obj is not None else ssl_extra.get("cipher")
    cipher = cipher_info[0] if cipher_info else None
    sni = getattr(obj, "mxsec_sni", None) if obj is not None else None
    return True, version, cipher, sni


def _make_server_classes() -> tuple[type, type]:
    """Import aiosmtpd lazily (it is an optional dependency: ``pip install mxsec[lab]``)."""
    from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

    class Handler:
        def __init__(self, spec: MxSpec, directory: Path) -> None:
            self.spec = spec
            self.directory = directory

        async def handle_exception(self, error: Exception) -> str:
            # TLS handshake failures are expected in the lab (clients rejecting bad certificates): the
            # session record keeps them; anything else is logged with its traceback.
            if not isinstance(error, TLSSetupException):
                _log.warning("%s: SMTP session exception", self.spec.name, exc_info=error)
            return f"500 Error: ({type(error).__name__}) {error}"

        async def handle_DATA(self, server: LabSMTP, session: Session, envelope: Envelope) -> str:
            tls, version, cipher, sni = _tls_facts(session.ssl)
            peer = session.peer if isinstance(session.peer, tuple) else None
            local = server.transport.get_extra_info("sockname") if server.transport else None
            content = envelope.original_content or envelope.content or b""
            if isinstance(content, str):
                content = content.encode("utf-8", "surrogateescape")
            record = {
                "mx": self.spec.name,
                "received_at": _now_iso(),
                "peer": peer[0] if peer else None,
                "peer_port": peer[1] if peer else None,
                "local": local[0] if local else None,
                "helo": session.host_name,
                "mail_from": envelope.mail_from or "",
                "rcpt_tos": list(envelope.rcpt_tos),
                "tls": tls,
                "tls_version": version,
                "cipher": cipher,
                "sni": sni,
                "data": content.decode("utf-8", "replace"),
            }
            name = f"{time.time_ns()}.{uuid.uuid4().hex[:12]}.json"
            await asyncio.to_thread(
                _write_atomic, self.directory, name, json.dumps(record, indent=1).encode("utf-8")
            )
            server._mx_state["messages"] += 1
            return "250 2.0.0 Ok: stored " + name.rsplit(".", 1)[0]

    class LabSMTP(SMTP):
        """aiosmtpd's SMTP with a per-connection record written when the connection ends."""

        def __init__(self, handler: Handler, **kwargs: Any) -> None:
            super().__init__(handler, **kwargs)
            self._mx_state: dict[str, Any] = {"started_at": _now_iso(), "messages": 0}

        async def smtp_HELO(self, hostname: str) -> None:
            self._mx_state.setdefault("first_helo", hostname or None)
            await super().smtp_HELO(hostname)

        async def smtp_EHLO(self, hostname: str) -> None:
            self._mx_state.setdefault("first_helo", hostname or None)
            await super().smtp_EHLO(hostname)

        async def smtp_STARTTLS(self, arg: str) -> None:
            self._mx_state["starttls"] = True
            try:
                await super().smtp_STARTTLS(arg)
            except Exception as exc:
                cause = exc.__cause__ or exc
                self._mx_state["tls_error"] = f"{type(cause).__name__}: {cause}"
                sslobj = getattr(self._tls_protocol, "_sslobj", None)
                self._mx_state["sni"] = getattr(sslobj, "mxsec_sni", None)
                raise

        def _mx_finish(self) -> None:
            state = self._mx_state
            if state.get("done"):
                return
            state["done"] = True
            session = self.session
            tls, version, cipher, sni = _tls_facts(session.ssl if session else None)
            peer = session.peer if session is not None and isinstance(session.peer, tuple) else None
            handler: Handler = self.event_handler
            record = {
                "mx": handler.spec.name,
                "started_at": state["started_at"],
                "ended_at": _now_iso(),
                "peer": peer[0] if peer else None,
                "helo": session.host_name if session else None,
                "starttls": bool(state.get("starttls")),
                "tls": tls,
                "tls_version": version,
                "cipher": cipher,
                "sni": sni if tls else state.get("sni"),
                "messages": state["messages"],
                "tls_error": state.get("tls_error"),
                "first_helo": state.get("first_helo"),
            }
            make_dirs(handler.directory, 0o755)
            line = (json.dumps(record) + "\n").encode("utf-8")
            fd = os.open(handler.directory / "sessions.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

        def connection_lost(self, error: Exception | None) -> None:
            try:
                self._mx_finish()
            except Exception:  # noqa: BLE001 - never break the server on bookkeeping
                _log.exception("%s: cannot record the session", self.event_handler.spec.name)
            super().connection_lost(error)

    return Handler, LabSMTP


def _sni_callback(ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
    # Called during the handshake with the SSLObject aiosmtpd later exposes as session.ssl["ssl_object"].
    ssl_object.mxsec_sni = server_name


def _server_context(cert_pem: bytes, key_pem: bytes, directory: Path) -> ssl.SSLContext:
    cert_file = write_pem(directory / "cert.pem", cert_pem)
    key_file = write_pem(directory / "key.pem", key_pem)
    os.chmod(key_file, 0o600)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_file), str(key_file))
    context.sni_callback = _sni_callback
    return context


class MxFarm:
    """Many lab MX servers in one asyncio loop.

    ``ca`` is the lab CA (the trust anchor the sender uses); certificates of kind ``untrusted`` come from
    ``untrusted_ca`` (a fresh CA by default).
    """

    def __init__(
        self,
        specs: Iterable[MxSpec],
        ca: TestCA,
        mail_dir: str | os.PathLike[str],
        *,
        untrusted_ca: TestCA | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.specs = list(specs)
        names = [spec.name for spec in self.specs]
        if len(set(names)) != len(names):
            raise ValueError("MX names must be unique")
        self.ca = ca
        self.untrusted_ca = untrusted_ca or TestCA("mxsec lab untrusted CA")
        self.mail_dir = Path(mail_dir)
        self.timeout = timeout
        self._servers: list[asyncio.AbstractServer] = []
        self._certs: dict[str, bytes] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- facts
    def cert_pem(self, mx_name: str) -> bytes | None:
        """The certificate ``mx_name`` presents (``None`` for ``no-starttls``); available after start."""
        return self._certs.get(mx_name)

    def received(self, mx_name: str) -> list[Received]:
        return read_received(self.mail_dir, mx_name)

    def sessions(self, mx_name: str) -> list[SessionRecord]:
        return read_sessions(self.mail_dir, mx_name)

    def clear(self) -> None:
        """Forget stored messages and session records (certificates stay)."""
        for spec in self.specs:
            directory = self.mail_dir / spec.name
            for sub in ("new", "tmp"):
                for path in (directory / sub).glob("*") if (directory / sub).is_dir() else ():
                    path.unlink(missing_ok=True)
            (directory / "sessions.jsonl").unlink(missing_ok=True)

    # ---- async life cycle (in the caller's loop)
    async def astart(self) -> None:
        handler_cls, smtp_cls = _make_server_classes()
        loop = asyncio.get_running_loop()
        try:
            for spec in self.specs:
                directory = self.mail_dir / spec.name
                for sub in ("new", "tmp"):
                    make_dirs((directory / sub), 0o755)
                pair = _certificate_for(spec, self.ca, self.untrusted_ca)
                context = None
                if pair is not None:
                    context = _server_context(pair[0], pair[1], directory)
                    self._certs[spec.name] = pair[0]
                handler = handler_cls(spec, directory)

                def factory(
                    handler: Any = handler, context: ssl.SSLContext | None = context, spec: MxSpec = spec
                ) -> Any:
                    return smtp_cls(
                        handler,
                        hostname=spec.name,
                        ident="mxsec lab MX",
                        tls_context=context,
                        require_starttls=False,
                        timeout=self.timeout,
                        enable_SMTPUTF8=True,
                        loop=loop,
                    )

                server = await loop.create_server(factory, host=spec.address, port=spec.port, reuse_address=True)
                self._servers.append(server)
        except BaseException:
            await self.astop()
            raise

    async def astop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    # ---- sync life cycle (own loop in a daemon thread)
    def start(self, timeout: float = 10.0) -> Self:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.astart())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.astop())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name="mxsec-mx-farm", daemon=True)
        thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("MX farm did not start")
        if failure:
            thread.join(5)
            raise failure[0]
        self._thread, self._loop = thread, loop
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        self._thread = self._loop = None
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------- process


def load_specs(path: str | os.PathLike[str]) -> list[MxSpec]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data["mx"]
    return [MxSpec.from_dict(item) for item in data]


class MxFarmProcess:
    """Run ``python -m mxsec.lab.mx`` as a child process (optionally under ``netns_cmd``, e.g.
    ``["ip", "netns", "exec", "internet"]``) and wait for its ready file."""

    def __init__(
        self,
        specs: Sequence[MxSpec],
        mail_dir: str | os.PathLike[str],
        ca_dir: str | os.PathLike[str],
        *,
        netns_cmd: Sequence[str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.specs = list(specs)
        self.mail_dir = Path(mail_dir)
        self.ca_dir = Path(ca_dir)
        self.netns_cmd = list(netns_cmd or [])
        self.python = python
        self.ready_file = self.mail_dir / "ready"
        self.proc: subprocess.Popen[bytes] | None = None
        self._logfile: Any = None

    def start(self, timeout: float = 20.0) -> Self:
        make_dirs(self.mail_dir, 0o755)
        self.ready_file.unlink(missing_ok=True)
        spec_file = self.mail_dir / "mx-spec.json"
        spec_file.write_text(json.dumps([asdict(spec) for spec in self.specs], indent=1), encoding="utf-8")
        self._logfile = open(self.mail_dir / "mx-farm.log", "ab")  # noqa: SIM115 - closed in stop()
        cmd = [*self.netns_cmd, self.python, "-m", "mxsec.lab.mx", "--spec", str(spec_file),
               "--mail-dir", str(self.mail_dir), "--ca-dir", str(self.ca_dir), "--ready-file", str(self.ready_file)]
        self.proc = subprocess.Popen(cmd, stdout=self._logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        log = (self.mail_dir / "mx-farm.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"MX farm process did not become ready:\n{log}")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._logfile is not None:
            self._logfile.close()
            self._logfile = None

    def received(self, mx_name: str) -> list[Received]:
        return read_received(self.mail_dir, mx_name)

    def sessions(self, mx_name: str) -> list[SessionRecord]:
        return read_sessions(self.mail_dir, mx_name)

    def cert_pem(self, mx_name: str) -> bytes | None:
        path = self.mail_dir / mx_name / "cert.pem"
        return path.read_bytes() if path.exists() else None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve(specs: list[MxSpec], mail_dir: Path, ca_dir: Path, ready_file: Path) -> None:
    farm = MxFarm(specs, load_ca(ca_dir), mail_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await farm.astart()
    try:
        make_dirs(ready_file.parent, 0o755)
        payload = {"pid": os.getpid(), "mx": [asdict(spec) for spec in specs]}
        with tempfile.NamedTemporaryFile("w", dir=ready_file.parent, delete=False, suffix=".tmp") as handle:
            json.dump(payload, handle)
        os.replace(handle.name, ready_file)
        print(f"mxsec lab MX farm ready: {len(specs)} servers", flush=True)
        await stop.wait()
    finally:
        ready_file.unlink(missing_ok=True)
        await farm.astop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mxsec.lab.mx", description="lab MX servers")
    parser.add_argument("--spec", required=True, help="JSON list of {name, address, cert_kind, port}")
    parser.add_argument("--mail-dir", required=True)
    parser.add_argument("--ca-dir", required=True, help="directory with ca.crt + ca.key (created if missing)")
    parser.add_argument("--ready-file", help="written once listening (default MAIL_DIR/ready)")
    args = parser.parse_args(argv)
    mail_dir = Path(args.mail_dir)
    ready = Path(args.ready_file) if args.ready_file else mail_dir / "ready"
    try:
        asyncio.run(_serve(load_specs(args.spec), mail_dir, Path(args.ca_dir), ready))
    except OSError as exc:
        print(f"mxsec lab MX farm: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
