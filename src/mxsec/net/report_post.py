"""HTTPS delivery of a TLSRPT report (RFC 8460 §5.4): one POST of ``application/tlsrpt+gzip``.

The ``rua`` URL comes from DNS that the report domain's owner controls, so its host is resolved through our
:class:`~mxsec.net.dns.DnsClient` and its addresses pass the SSRF guard (``--allow-address`` opens ranges),
exactly as for MTA-STS policy hosts. No redirects are followed. Only a 2xx status is a delivery (RPT-I-25);
anything else, including a connection or TLS error, is a failure the caller may retry. Certificates are
verified (RFC 8460 §7 allows a reporter to skip that, RPT-I-23; ``verify=False`` does so).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from .dns import DnsClient
from .guard import AddressGuard
from .https import _GuardedResolver, build_ssl_context

__all__ = ["PostOutcome", "post_report"]

_MAX_ANSWER = 4096


@dataclass(frozen=True)
class PostOutcome:
    ok: bool
    status: int | None
    detail: str


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


async def post_report(url: str, body: bytes, *, dns: DnsClient, guard: AddressGuard, ca_file: str | None = None,
                      timeout: float = 60.0, verify: bool = True, user_agent: str = "mxsec-tlsrpt") -> PostOutcome:
    """POST *body* (a gzip report) to *url*; never raises for network or HTTP problems."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        return PostOutcome(False, None, f"not an https URL: {url[:200]}")
    if verify:
        context = build_ssl_context(ca_file)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    connector = aiohttp.TCPConnector(resolver=_GuardedResolver(dns, guard, "report host"), use_dns_cache=False,
                                     ssl=context, force_close=True)
    try:
        async with aiohttp.ClientSession(connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.post(url, data=body, allow_redirects=False, headers={
                    "Content-Type": "application/tlsrpt+gzip", "User-Agent": user_agent}) as response:
                answer = await response.content.read(_MAX_ANSWER)
                status = response.status
                if 200 <= status < 300:
                    return PostOutcome(True, status, f"HTTP {status}")
                text = answer.decode("utf-8", "replace")
                return PostOutcome(False, status, _one_line(f"HTTP {status} {response.reason or ''} {text}"))
    except asyncio.TimeoutError:
        return PostOutcome(False, None, f"no answer within {timeout:g} s")
    except aiohttp.ClientConnectorCertificateError as exc:
        return PostOutcome(False, None, _one_line(f"certificate not accepted: {exc.certificate_error}"))
    except aiohttp.ClientConnectorError as exc:
        cause = exc.os_error if getattr(exc, "os_error", None) is not None else exc
        return PostOutcome(False, None, _one_line(f"cannot connect: {cause}"))
    except (aiohttp.ClientError, OSError, ssl.SSLError, ValueError) as exc:
        return PostOutcome(False, None, _one_line(f"{type(exc).__name__}: {exc}"))
