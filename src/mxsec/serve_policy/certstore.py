"""Where serve-policy keeps the certificates it obtains by ACME, and the ACME account.

Layout of the ACME state directory (created ``0700``; every file ``0600``)::

    account.json            the account: ACME directory URL, account URL, contact
    account-key.pem         the account key (EC P-256)
    certs/mta-sts.example.com.pem   private key + certificate chain (leaf first), one file per host
    certs/mta-sts.example.com.json  the ACME directory it came from

Key and chain live in one file, replaced by ``rename``: a crash never leaves a new key beside an old
certificate. A new certificate is written only after it loaded into a TLS context (it is served at once);
until then the previous file stays in place and keeps being served.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mxsec.errors import ConfigError
from mxsec.fsutil import make_dirs
from mxsec.serve_policy.files import LoadedCertificate, load_certificate, server_tls_context

__all__ = ["CertStore", "context_from_pem"]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (never readable by others, not even briefly)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _policy_domains(host: str) -> list[str]:
    """The policy domain whose ``mta-sts.`` host ``host`` is, for the certificate check ([] for another name)."""
    return [host[len("mta-sts.") :]] if host.startswith("mta-sts.") else []


def context_from_pem(
    cert_pem: bytes, key_pem: bytes, scratch: str | os.PathLike[str], *, alpn: list[str] | None = None
) -> ssl.SSLContext:
    """A server TLS context from PEM bytes (OpenSSL loads only from files: a private scratch file, then gone)."""
    ctx = server_tls_context()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    fd, tmp = tempfile.mkstemp(prefix=".tls.", suffix=".pem", dir=os.fspath(scratch))
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem + b"\n" + cert_pem)
        ctx.load_cert_chain(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return ctx


@dataclass
class CertStore:
    """The ACME state directory (see the module docstring)."""

    directory: Path

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    def prepare(self) -> None:
        """Create the directories (0700); refuse a state directory others can read or write."""
        try:
            make_dirs(self.directory, PRIVATE_DIR_MODE)
            make_dirs(self.directory / "certs", PRIVATE_DIR_MODE)
            mode = self.directory.stat().st_mode
        except OSError as exc:
            reason = exc.strerror or exc
            raise ConfigError(f"cannot create the ACME state directory {self.directory}: {reason}") from None
        if mode & 0o077:
            raise ConfigError(
                f"ACME state directory {self.directory} is open to other users (mode {mode & 0o777:o}); "
                "chmod 700 it: it holds private keys"
            )

    # ----------------------------------------------------------------- account
    @property
    def account_key_path(self) -> Path:
        return self.directory / "account-key.pem"

    def read_account_key(self) -> bytes | None:
        try:
            return self.account_key_path.read_bytes()
        except FileNotFoundError:
            return None

    def write_account_key(self, pem: bytes) -> None:
        _write_private(self.account_key_path, pem)

    def read_account(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.directory / "account.json").read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"ACME account file {self.directory / 'account.json'} is unreadable: {exc}") from None
        return data if isinstance(data, dict) else None

    def write_account(self, data: dict[str, Any]) -> None:
        _write_private(self.directory / "account.json", json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")

    # ----------------------------------------------------------------- certificates
    def cert_path(self, host: str) -> Path:
        if "/" in host or host.startswith("."):
            raise ValueError(f"not a host name: {host!r}")
        return self.directory / "certs" / f"{host}.pem"

    def load(self, host: str, *, now: _dt.datetime | None = None) -> LoadedCertificate | None:
        """The stored certificate of ``host`` when it is usable now (covers the host, not expired), else None."""
        path = self.cert_path(host)
        if not path.exists():
            return None
        try:
            return load_certificate(path, path, _policy_domains(host), now=now)
        except ConfigError:
            return None

    def issuer_directory(self, host: str) -> str | None:
        """The ACME directory URL the stored certificate of ``host`` came from (None: not recorded)."""
        try:
            data = json.loads(self.cert_path(host).with_suffix(".json").read_text())
        except (OSError, ValueError):
            return None
        value = data.get("directory") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    def save(self, host: str, key_pem: bytes, chain_pem: bytes, *, directory: str | None = None) -> LoadedCertificate:
        """Check that key and chain load and cover ``host``, then replace the stored file; return it loaded.
        ``directory``: the ACME directory it came from, recorded beside it (``certs/<host>.json``).

        Raises :class:`ConfigError` when the new certificate is unusable; the stored one is then untouched.
        """
        path = self.cert_path(host)
        candidate = path.with_name(f".{path.name}.new")
        _write_private(candidate, key_pem.rstrip(b"\n") + b"\n" + chain_pem)
        try:
            loaded = load_certificate(candidate, candidate, _policy_domains(host))
        except ConfigError:
            with contextlib.suppress(OSError):
                candidate.unlink()
            raise
        os.replace(candidate, path)
        if directory is not None:
            _write_private(path.with_suffix(".json"), json.dumps({"directory": directory}).encode() + b"\n")
        return dataclasses.replace(loaded, cert_path=str(path), key_path=str(path))

    def hosts(self) -> list[str]:
        """Hosts with a stored certificate file."""
        try:
            return sorted(p.name[: -len(".pem")] for p in (self.directory / "certs").glob("*.pem"))
        except OSError:
            return []
