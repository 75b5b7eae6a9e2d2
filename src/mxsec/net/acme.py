"""ACME (RFC 8555) for serve-policy: an account, and one certificate order per host, over the ``acme`` library.

The ``acme`` library is synchronous (``requests``); serve-policy calls :meth:`AcmeAccount.order` in a worker
thread, one order at a time. Challenges are answered through a :class:`ChallengeBoard` the server reads:
TLS-ALPN-01 (RFC 8737) on the HTTPS port itself, HTTP-01 when serve-policy also listens for plain HTTP. The
library has no TLS-ALPN-01 challenge class any more; :class:`TLSALPN01` below is the small piece it lacks.

Every failure is an :class:`AcmeError` with a one-line message (and the server's Retry-After when it sent one).
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mxsec.extras import require

__all__ = ["AcmeAccount", "AcmeError", "AcmeSettings", "AccountFiles", "ChallengeBoard", "CHALLENGE_TYPES"]

log = logging.getLogger("mxsec.serve_policy.acme")

require("acme", "acme", "serve-policy --acme-directory")
require("josepy", "acme", "serve-policy --acme-directory")

import josepy as jose  # noqa: E402
import requests  # noqa: E402
from acme import challenges, client, crypto_util, errors, messages  # noqa: E402

#: in order of preference when both are possible
CHALLENGE_TYPES = ("tls-alpn-01", "http-01")


class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The answer to a TLS-ALPN-01 challenge: an empty object (the proof is the certificate served)."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737 TLS-ALPN-01."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: jose.JWK, **kwargs: Any) -> str:
        return self.key_authorization(account_key)


class AcmeError(Exception):
    """An order or registration failed; ``str()`` is one line."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.retry_after = retry_after


class ChallengeBoard(Protocol):
    """Where the server shows the answers while the ACME server validates."""

    def add_http01(self, token: str, key_authorization: str) -> None: ...
    def remove_http01(self, token: str) -> None: ...
    def publish_tls_alpn01(self, host: str, key_authorization: str) -> None: ...
    def remove_tls_alpn01(self, host: str) -> None: ...


class AccountFiles(Protocol):
    def read_account_key(self) -> bytes | None: ...
    def write_account_key(self, pem: bytes) -> None: ...
    def read_account(self) -> dict[str, Any] | None: ...
    def write_account(self, data: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class AcmeSettings:
    directory_url: str
    email: str | None = None
    ca_bundle: str | None = None  # PEM file that verifies the ACME server's HTTPS (default: the system's)
    timeout: float = 30.0  # each HTTP request
    order_timeout: float = 180.0  # validation and issuance of one order
    eab_kid: str | None = None  # External Account Binding (RFC 8555 §7.3.4): the key id the CA gave
    eab_hmac_key: str | None = None  # and its MAC key, base64url


def _new_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _problem(exc: BaseException) -> AcmeError:
    """One line for anything the acme library or requests raised."""
    if isinstance(exc, AcmeError):
        return exc
    if isinstance(exc, errors.ValidationError):
        parts = []
        for authzr in exc.failed_authzrs:
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    detail = challb.error.detail or challb.error.typ
                    parts.append(f"{authzr.body.identifier.value}: {challb.chall.typ} failed: {detail}")
        return AcmeError("validation failed: " + ("; ".join(parts) or "no detail from the ACME server"))
    if isinstance(exc, errors.TimeoutError):
        return AcmeError("the ACME server did not finish the order in time")
    if isinstance(exc, messages.Error):
        code = exc.code or exc.typ
        return AcmeError(f"ACME server refused: {code}: {exc.detail or exc.title or ''}")
    if isinstance(exc, requests.exceptions.SSLError):
        return AcmeError(f"cannot verify the ACME server's certificate (give --acme-ca-bundle?): {exc}")
    if isinstance(exc, requests.exceptions.RequestException):
        return AcmeError(f"cannot reach the ACME server: {type(exc).__name__}: {exc}")
    if isinstance(exc, errors.Error):
        return AcmeError(f"ACME error: {exc}")
    return AcmeError(f"{type(exc).__name__}: {exc}")


class AcmeAccount:
    """The account at one ACME server; registers on first use and remembers the account URL in ``files``."""

    def __init__(self, settings: AcmeSettings, files: AccountFiles) -> None:
        self.settings = settings
        self.files = files
        self._client: client.ClientV2 | None = None
        self._jwk: jose.JWKEC | None = None

    def _connect(self, *, fresh_account: bool = False) -> client.ClientV2:
        if self._client is not None and not fresh_account:
            return self._client
        key_pem = self.files.read_account_key()
        if key_pem is None:
            key_pem = _new_key_pem()
            self.files.write_account_key(key_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise AcmeError("the ACME account key is not an EC key")
        self._jwk = jose.JWKEC(key=key)
        verify: Any = self.settings.ca_bundle or True
        net = client.ClientNetwork(self._jwk, alg=jose.ES256, verify_ssl=verify, user_agent="mxsec",
                                   timeout=int(self.settings.timeout))
        directory = client.ClientV2.get_directory(self.settings.directory_url, net)
        acme = client.ClientV2(directory, net)
        known = None if fresh_account else self.files.read_account()
        if known and known.get("directory") == self.settings.directory_url and known.get("uri"):
            net.account = messages.RegistrationResource(uri=known["uri"], body=messages.Registration())
        else:
            binding = None
            if self.settings.eab_kid and self.settings.eab_hmac_key:
                try:
                    binding = messages.ExternalAccountBinding.from_data(
                        self._jwk.public_key(), self.settings.eab_kid, self.settings.eab_hmac_key, directory)
                except (ValueError, TypeError) as exc:
                    raise AcmeError(f"the external account binding's MAC key is not base64url: {exc}") from None
            regr = acme.new_account(messages.NewRegistration.from_data(
                email=self.settings.email, terms_of_service_agreed=True, external_account_binding=binding))
            self.files.write_account({"directory": self.settings.directory_url, "uri": regr.uri,
                                      "contact": list(regr.body.contact or ())})
            log.info("ACME account registered", extra={"directory": self.settings.directory_url, "account": regr.uri})
        self._client = acme
        return acme

    def order(self, host: str, board: ChallengeBoard, challenge_types: Sequence[str]) -> tuple[bytes, bytes]:
        """Obtain a certificate for ``host``: ``(key PEM, chain PEM leaf first)``; raises :class:`AcmeError`."""
        try:
            try:
                return self._order(self._connect(), host, board, challenge_types)
            except messages.Error as exc:
                # only an account the server forgot (a test server restarted) is registered anew, once; any other
                # refusal ("unauthorized" for a name the CA will not issue for, too) must not make new accounts
                if exc.code != "accountDoesNotExist" or self._client is None:
                    raise
                log.warning("ACME account unknown to the server; registering again", extra={"error": str(exc)})
                return self._order(self._connect(fresh_account=True), host, board, challenge_types)
        except Exception as exc:
            if isinstance(exc, requests.exceptions.RequestException):
                self._client = None  # connect afresh next time
            raise _problem(exc) from None

    def _order(self, acme: client.ClientV2, host: str, board: ChallengeBoard,
               challenge_types: Sequence[str]) -> tuple[bytes, bytes]:
        assert self._jwk is not None
        key_pem = _new_key_pem()
        csr = crypto_util.make_csr(key_pem, [host])
        orderr = acme.new_order(csr)
        shown: list[tuple[str, str]] = []
        try:
            for authzr in orderr.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue
                offered = {challb.chall.typ: challb for challb in authzr.body.challenges}
                kind = next((t for t in challenge_types if t in offered), None)
                if kind is None:
                    raise AcmeError(f"{host}: the ACME server offers {', '.join(sorted(offered)) or 'no challenge'}; "
                                    f"this server can answer {', '.join(challenge_types)}")
                challb = offered[kind]
                key_authorization = challb.chall.key_authorization(self._jwk)
                if kind == "http-01":
                    token = challb.chall.encode("token")
                    board.add_http01(token, key_authorization)
                    shown.append((kind, token))
                else:
                    board.publish_tls_alpn01(host, key_authorization)
                    shown.append((kind, host))
                acme.answer_challenge(challb, challb.chall.response(self._jwk))
            deadline = _dt.datetime.now() + _dt.timedelta(seconds=self.settings.order_timeout)
            finished = acme.poll_and_finalize(orderr, deadline)
        finally:
            for kind, name in shown:
                if kind == "http-01":
                    board.remove_http01(name)
                else:
                    board.remove_tls_alpn01(name)
        return key_pem, finished.fullchain_pem.encode()
