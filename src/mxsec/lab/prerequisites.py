"""Can the lab run on this machine? Root, the Debian tools it drives, and the ``lab`` extra."""

from __future__ import annotations

import os
import shutil

#: the programs the lab starts or drives (Debian: iproute2, knot, knot-dnsutils, unbound, postfix)
TOOLS = ("ip", "knotd", "knotc", "keymgr", "unbound", "unbound-control", "unbound-checkconf", "postfix", "pebble")


def prerequisites() -> str | None:
    """``None`` when the lab can run here, else what is missing."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, port 25/443 inside them, a private Postfix)"
    missing = [t for t in TOOLS if shutil.which(t) is None and not os.path.exists(f"/usr/sbin/{t}")]
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        missing.append("aiosmtpd (pip install 'mxsec[lab]')")
    if missing:
        return "missing: " + ", ".join(missing) + " (Debian: apt-get install knot knot-dnsutils unbound postfix)"
    return None
