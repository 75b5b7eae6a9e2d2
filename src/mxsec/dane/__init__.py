"""mxsec.dane: DANE for SMTP (RFC 7672, RFC 7671, RFC 6698). Sans-I/O core: TLSA records and chain checks."""

from mxsec.dane.tlsa import (
    TlsaError,
    TlsaRecord,
    from_rdata,
    parse_tlsa,
    partition,
    select_usable,
    tlsa_for_certificate,
    tlsa_owner,
    usable,
)
from mxsec.dane.verify import DaneResult, verify_chain

__all__ = [
    "DaneResult",
    "TlsaError",
    "TlsaRecord",
    "from_rdata",
    "parse_tlsa",
    "partition",
    "select_usable",
    "tlsa_for_certificate",
    "tlsa_owner",
    "usable",
    "verify_chain",
]
