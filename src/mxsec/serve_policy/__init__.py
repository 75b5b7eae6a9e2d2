"""``mxsec serve-policy``: a small built-in HTTPS host for MTA-STS policies (RFC 8461 §3.3).

* :mod:`.files`: the policy files and certificates, loaded and checked (no sockets);
* :mod:`.server`: the HTTPS server, its reload and its entry point :func:`run`.

Decisions are explained in docs/generate.md ("Serving the policy without a web server").
"""

from mxsec.serve_policy.files import (
    LoadedCertificate,
    LoadedPolicy,
    certificate_covers,
    certificate_problems,
    load_certificate,
    load_policy,
    policy_host,
    policy_warnings,
    server_tls_context,
)
from mxsec.serve_policy.server import (
    CACHE_CONTROL,
    CONTENT_TYPE,
    POLICY_PATH,
    PolicyServer,
    ServeSettings,
    prepare,
    run,
)

__all__ = [
    "CACHE_CONTROL",
    "CONTENT_TYPE",
    "POLICY_PATH",
    "LoadedCertificate",
    "LoadedPolicy",
    "PolicyServer",
    "ServeSettings",
    "certificate_covers",
    "certificate_problems",
    "load_certificate",
    "load_policy",
    "policy_host",
    "policy_warnings",
    "prepare",
    "run",
    "server_tls_context",
]
