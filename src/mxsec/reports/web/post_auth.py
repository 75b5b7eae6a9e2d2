"""Who may ``POST /tlsrpt``: bearer tokens and TLS client certificates (``[reports]`` in the configuration).

Without any of them the endpoint is open, as RFC 8460 §5.4 expects of an ``https:`` rua, and every copy it
stores is recorded with ``auth = "none"``: it is still stored, but an authenticated copy of the same report
(DKIM-signed mail, a token, a client certificate) is the one the figures count (:mod:`mxsec.storage.reportdb`).

* Tokens: ``Authorization: Bearer TOKEN`` (RFC 6750). The configuration holds tokens or their SHA-256 digests;
  only digests are kept in memory, and the presented token's digest is compared with every configured one by
  :func:`hmac.compare_digest` (constant time, no early exit). A wrong token is a 401 even when authentication
  is optional: a client that sends one is misconfigured and should hear about it. A copy stored with a token
  records ``auth = "token"`` and ``auth_name = "sha256:"`` followed by 12 hex digits of the token's digest.
* Client certificates: with ``post_client_ca`` the TLS server asks for a client certificate (optional, so
  browsers reach the dashboard without one) and verifies it against that CA file during the handshake; a
  connection whose certificate does not verify fails the handshake. uvicorn does not put the peer
  certificate into the ASGI scope, so :func:`tls_client_protocol` wraps its HTTP protocol class: once the
  handshake is done it reads the verified certificate from the connection and adds its subject to the scope
  of every request on that connection (``scope["mxsec.tls_client"]``). A copy stored so records
  ``auth = "mtls"`` and the subject as ``auth_name``.
* ``post_require_auth``: a POST without a valid token or certificate is answered 401.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mxsec.errors import ConfigError

#: Scope key under which :func:`tls_client_protocol` puts the verified client certificate's subject.
SCOPE_KEY = "mxsec.tls_client"
#: Shortest token accepted in the configuration.
MIN_TOKEN_LENGTH = 16
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")  # visible ASCII, as an HTTP header carries it
_HASH = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")


class Unauthorized(Exception):
    """A POST that must be refused with 401; ``error`` is the RFC 6750 error code."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class PostAuth:
    """Accepted token digests (SHA-256), the client CA file, and whether authentication is required."""

    token_digests: tuple[bytes, ...] = ()
    client_ca: str | None = None
    require: bool = False

    @classmethod
    def build(cls, *, tokens: list[str] | tuple[str, ...] = (), token_hashes: list[str] | tuple[str, ...] = (),
              client_ca: str | None = None, require: bool = False) -> "PostAuth":
        """From configuration values; ConfigError (naming the key, never the token) when one is unusable."""
        digests: list[bytes] = []
        for index, token in enumerate(tokens):
            if not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token):
                raise ConfigError(f"reports.post_tokens[{index}]: a token is visible ASCII without spaces")
            if len(token) < MIN_TOKEN_LENGTH:
                raise ConfigError(f"reports.post_tokens[{index}]: shorter than {MIN_TOKEN_LENGTH} characters; "
                                  "use a random token, e.g. from: openssl rand -hex 32")
            digests.append(hashlib.sha256(token.encode("ascii")).digest())
        for index, text in enumerate(token_hashes):
            match = _HASH.fullmatch(text.strip()) if isinstance(text, str) else None
            if match is None:
                raise ConfigError(f"reports.post_token_hashes[{index}]: expected the SHA-256 of a token as 64 hex "
                                  "digits (optionally prefixed sha256:), e.g. from: printf %s TOKEN | sha256sum")
            digests.append(bytes.fromhex(match.group(1)))
        if client_ca is not None:
            if not client_ca:
                raise ConfigError("reports.post_client_ca: empty path")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_verify_locations(cafile=client_ca)
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
                raise ConfigError(f"reports.post_client_ca {client_ca}: {reason}") from None
        if require and not digests and client_ca is None:
            raise ConfigError("reports.post_require_auth needs post_tokens, post_token_hashes or post_client_ca")
        return cls(tuple(digests), client_ca, bool(require))

    @property
    def configured(self) -> bool:
        return bool(self.token_digests) or self.client_ca is not None

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.Config``: ask for client certificates when a CA is configured."""
        if self.client_ca is None:
            return {}
        from uvicorn.config import HTTP_PROTOCOLS
        from uvicorn.importer import import_from_string

        return {
            "ssl_ca_certs": self.client_ca,
            "ssl_cert_reqs": ssl.CERT_OPTIONAL,
            "http": tls_client_protocol(import_from_string(HTTP_PROTOCOLS["auto"])),
        }

    def authenticate(self, scope: Mapping[str, Any], authorization: str | None) -> tuple[str, str | None]:
        """``(auth, auth_name)`` of one request: ``token``, ``mtls`` or ``none``; :class:`Unauthorized` for a
        wrong token, or for no credential at all when authentication is required."""
        if self.token_digests and authorization is not None:
            scheme, _, credential = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                digest = hashlib.sha256(credential.strip().encode("utf-8", "surrogateescape")).digest()
                matched = False
                for accepted in self.token_digests:  # every one compared: no early exit
                    matched |= hmac.compare_digest(digest, accepted)
                if not matched:
                    raise Unauthorized("the bearer token is not accepted", "invalid_token")
                return "token", "sha256:" + digest.hex()[:12]
        subject = scope.get(SCOPE_KEY) if self.client_ca is not None else None
        if subject:
            return "mtls", str(subject)
        if self.require:
            raise Unauthorized("POST /tlsrpt needs authentication: a bearer token"
                               + (" or a client certificate" if self.client_ca else ""))
        return "none", None


def _subject(cert: dict[str, Any]) -> str:
    """``CN=…,O=…`` from ``ssl.SSLSocket.getpeercert()``'s subject (RFC 4514 order: most specific first)."""
    parts = []
    for rdn in reversed(cert.get("subject", ())):
        for name, value in rdn:
            short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
                     "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST"}.get(name, name)
            parts.append(f"{short}={value}")
    return ",".join(parts) or "(empty subject)"


def tls_client_protocol(base: type[Any]) -> type:
    """A subclass of uvicorn's HTTP protocol class *base* that adds the verified client certificate's subject
    to the scope of each request on the connection (see the module docstring)."""

    class TlsClientProtocol(base):
        app: Callable[[dict[str, Any], Any, Any], Awaitable[None]]  # the ASGI app (set by uvicorn's base class)

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            # With CERT_OPTIONAL a certificate that is presented is verified in the handshake (or the handshake
            # fails), so a non-empty getpeercert() is a verified one.
            cert = ssl_object.getpeercert() if ssl_object is not None else None
            if not cert:
                return
            subject = _subject(cert)
            app = self.app

            async def with_client(scope: dict[str, Any], receive: Any, send: Any) -> None:
                await app({**scope, SCOPE_KEY: subject}, receive, send)

            self.app = with_client

    TlsClientProtocol.__name__ = TlsClientProtocol.__qualname__ = f"TlsClient{base.__name__}"
    return TlsClientProtocol
