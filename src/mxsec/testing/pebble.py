"""Pebble, Let's Encrypt's ACME test server (Debian package ``pebble``), started by the tests themselves.

``running_pebble(http_port=..., tls_port=..., dns_server="HOST:PORT")`` starts ``pebble`` on 127.0.0.1 (ACME
and management interface on free ports) from a config file it writes into a temporary work directory, with
its own HTTPS certificate (for 127.0.0.1 and localhost, from a throw-away :class:`~mxsec.testing.pki.TestCA`
whose root is :attr:`PebbleServer.ca_bundle`), and waits until the directory URL answers. Environment:
``PEBBLE_VA_NOSLEEP=1`` (no random sleeps before validating), ``PEBBLE_WFE_NONCEREJECT`` (``nonce_reject``,
default 0: no spurious ``badNonce``), ``PEBBLE_AUTHZREUSE=0`` (every order gets fresh authorizations), plus
``env``. ``validity_seconds`` sets the config key ``certificateValidityPeriod``. Tests point ``dns_server`` at
a FakeWorld (``world.dns_address``) holding the challenged names' addresses. The tests are in
``tests/integration/test_pebble.py``.

What Pebble 2.4.0 (Debian 2.4.0+ds1) does, found by experiment with acme 5.9 / josepy against this harness:

* Validity: by default 157766400 s (Pebble logs "Using certificate validity period of 157766400 seconds"):
  ``notBefore`` is the issuance time and ``notAfter`` = ``notBefore`` + 157766400 s - 1 s (seen: 1825 days
  23:59:59, about five years). ``certificateValidityPeriod`` in the config changes it (3600 gave 59:59).
* ``notBefore`` / ``notAfter`` in the newOrder request (RFC 8555 §7.4) are honoured: the order echoes them and
  the leaf carries exactly those times (7 days asked, 7 days issued), also beyond ``certificateValidityPeriod``
  (not capped). acme 5.9's ``messages.NewOrder`` has no such fields; a subclass with
  ``not_after = fields.rfc3339("notAfter", omitempty=True)`` posted with ``client._post(directory["newOrder"],
  body)`` sends them.
* Challenges offered per dns authorization: ``http-01``, ``dns-01`` and ``tls-alpn-01`` (in random order).
  acme 5.9 parses tls-alpn-01 as an unrecognized challenge; answering it needs a non-empty-looking response
  object (an empty josepy object is falsy and would be sent as a POST-as-GET).
* Validation: every challenge is checked 3 times ("Starting 3 validations"), here all from 127.0.0.1. Each
  attempt asks the DNS server for A and AAAA of the name (3 A + 3 AAAA per challenge; no CAA query).
  http-01: ``GET http://NAME:httpPort/.well-known/acme-challenge/TOKEN`` to the resolved address (seen with
  A = 127.0.0.2 and the responder only there), ``Host: NAME:httpPort``. tls-alpn-01: TLS to the resolved
  address on ``tlsPort`` with SNI = NAME and ALPN ``acme-tls/1``. With an AAAA record present the validator
  dials the IPv6 address and does not fall back to A (A 127.0.0.1 + AAAA ::1, responder on 127.0.0.1 only:
  "dial tcp [::1]:PORT: connect: connection refused", the challenge fails). A wrong key authorization fails
  the challenge with ``urn:ietf:params:acme:error:unauthorized``.
* Chain: the certificate URL gives leaf + one intermediate (2 certificates, no root); the leaf keeps the CSR's
  key (ECDSA here), the intermediate and root are RSA, SHA-256. Management ``/roots/0`` is the root and
  ``/intermediates/0`` the intermediate; both are new at every start (:meth:`PebbleServer.roots_pem`).
* Speed: with ``PEBBLE_VA_NOSLEEP=1`` an order is valid and finalized about 2 s after the challenge is
  answered (acme's poll interval); Pebble starts in about 0.4 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mxsec.testing.pki import TestCA, write_pem
from mxsec.testing.servers import HOST, START_TIMEOUT, _tail, free_port, stop_process

__all__ = ["PebbleServer", "environment", "pebble_binary", "running_pebble", "write_config"]

#: Pebble's defaults for the ports its validator connects to (http-01, tls-alpn-01)
DEFAULT_HTTP_PORT = 5002
DEFAULT_TLS_PORT = 5001


def pebble_binary() -> str | None:
    """The ``pebble`` executable on ``PATH`` (Debian installs ``/usr/bin/pebble``), or ``None``."""
    return shutil.which("pebble")


def write_config(
    path: Path,
    *,
    listen: str,
    management: str,
    cert: Path,
    key: Path,
    http_port: int,
    tls_port: int,
    validity_seconds: int | None = None,
    eab_keys: Mapping[str, str] | None = None,
) -> None:
    """Pebble's JSON config: where it listens, its own HTTPS certificate, the ports its validator dials;
    ``eab_keys`` (key id → base64url MAC key): new accounts need an External Account Binding."""
    config: dict[str, dict[str, object]] = {
        "pebble": {
            "listenAddress": listen,
            "managementListenAddress": management,
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    if validity_seconds is not None:
        config["pebble"]["certificateValidityPeriod"] = validity_seconds
    if eab_keys:
        config["pebble"]["externalAccountBindingRequired"] = True
        config["pebble"]["externalAccountMACKeys"] = dict(eab_keys)
    path.write_text(json.dumps(config, indent=2) + "\n")


def environment(nonce_reject: int = 0, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment for Pebble: no random validation sleeps, ``nonce_reject`` % spurious badNonce,
    fresh authorizations for every order, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
    env.update({
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": str(nonce_reject),
        "PEBBLE_AUTHZREUSE": "0",
    })
    env.update(extra or {})
    return env


class PebbleServer:
    """One ``pebble`` process on 127.0.0.1 with its own config, TLS certificate and log in a work directory.

    ``http_port`` / ``tls_port``: where Pebble's validator connects for http-01 / tls-alpn-01 (on the address
    the challenged name resolves to). ``dns_server``: ``"HOST:PORT"`` of the DNS server the validator asks
    (``-dnsserver``); ``None`` leaves Pebble on the system resolver. ``nonce_reject``: the percentage of good
    nonces Pebble rejects as bad (``PEBBLE_WFE_NONCEREJECT``; 0 = never). ``env``: more ``PEBBLE_*`` settings.
    """

    def __init__(
        self,
        *,
        http_port: int = DEFAULT_HTTP_PORT,
        tls_port: int = DEFAULT_TLS_PORT,
        dns_server: str | None = None,
        nonce_reject: int = 0,
        validity_seconds: int | None = None,
        env: Mapping[str, str] | None = None,
        eab_keys: Mapping[str, str] | None = None,
    ) -> None:
        binary = pebble_binary()
        if binary is None:
            raise RuntimeError("pebble is not installed (Debian package: pebble)")
        self.binary = binary
        self.http_port = http_port
        self.tls_port = tls_port
        self.dns_server = dns_server
        self.nonce_reject = nonce_reject
        self.validity_seconds = validity_seconds
        self.eab_keys = dict(eab_keys or {})
        self.extra_env = dict(env or {})
        self.dir = Path(tempfile.mkdtemp(prefix="mxsec-pebble-"))
        self.log_path = self.dir / "pebble.log"
        self.config_path = self.dir / "pebble-config.json"
        # Pebble's own HTTPS (ACME and management): a throw-away CA, a certificate for 127.0.0.1 and localhost
        self._tls_ca = TestCA("mxsec pebble https CA")
        cert_pem, key_pem = self._tls_ca.issue([HOST, "localhost"], fresh_key=True)
        self.cert_path = write_pem(self.dir / "cert.pem", cert_pem)
        self.key_path = write_pem(self.dir / "key.pem", key_pem)
        #: PEM that verifies Pebble's own HTTPS (not the certificates Pebble issues: see :meth:`roots_pem`)
        self.ca_bundle: Path = self._tls_ca.write(self.dir / "https-ca.pem")
        self.port = 0
        self.management_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def directory_url(self) -> str:
        return f"https://{HOST}:{self.port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://{HOST}:{self.management_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def _get(self, url: str, timeout: float = 5.0) -> bytes:
        with urllib.request.urlopen(url, timeout=timeout, context=self._ssl_context()) as response:  # noqa: S310
            return bytes(response.read())

    def _write_config(self) -> None:
        write_config(self.config_path, listen=f"{HOST}:{self.port}", management=f"{HOST}:{self.management_port}",
                     cert=self.cert_path, key=self.key_path, http_port=self.http_port, tls_port=self.tls_port,
                     validity_seconds=self.validity_seconds, eab_keys=self.eab_keys)

    def _environment(self) -> dict[str, str]:
        return environment(self.nonce_reject, self.extra_env)

    def start(self) -> PebbleServer:
        if self.running:
            return self
        for _attempt in range(3):  # a free port may be taken between choosing and binding it
            self.port, self.management_port = free_port(), free_port()
            while self.management_port == self.port:
                self.management_port = free_port()
            self._write_config()
            command = [self.binary, "-config", str(self.config_path), "-strict=false"]
            if self.dns_server:
                command += ["-dnsserver", self.dns_server]
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    command, cwd=self.dir, env=self._environment(),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._answers():
                    return self
                time.sleep(0.05)
            stop_process(self.proc, signal.SIGKILL)
            self.proc = None
        raise RuntimeError(f"pebble did not start; log:\n{_tail(self.log_path)}")

    def _answers(self) -> bool:
        try:
            directory = json.loads(self._get(self.directory_url, timeout=1.0))
            self._get(f"{self.management_url}/roots/0", timeout=1.0)
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return isinstance(directory, dict) and "newOrder" in directory

    def roots_pem(self) -> bytes:
        """The root (``/roots/0``) and intermediate (``/intermediates/0``) of this run's issuing CA, PEM.

        Pebble makes a new CA at every start; certificates it issues verify against these.
        """
        root = self._get(f"{self.management_url}/roots/0")
        intermediate = self._get(f"{self.management_url}/intermediates/0")
        return root.rstrip(b"\n") + b"\n" + intermediate.rstrip(b"\n") + b"\n"

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_pebble(**options: Any) -> Iterator[PebbleServer]:
    """A started :class:`PebbleServer` (``options`` are its keyword arguments), stopped and its work directory
    removed afterwards."""
    server = PebbleServer(**options)
    try:
        yield server.start()
    finally:
        server.cleanup()
