"""Domain names: normalisation to lower-case A-labels, and IP-literal detection.

Sans-I/O. Everything that reaches the rest of mxsec as a host or domain name passes through
:func:`normalize_domain` (recipient domains, MX host names) or :func:`normalize_dns_name` (DNS owner
names such as ``_mta-sts.example.com``, where ``_`` is allowed).

Rules (see docs/decisions.md, "Domain names"):

* Result: lower-case, A-labels only, no trailing root dot.
* ASCII labels are checked as LDH host-name labels (letters, digits, hyphen; no leading or trailing
  hyphen; 1-63 octets). They are not sent through IDNA, so reserved-LDH labels such as ``ab--cd`` stay
  valid host names (RFC 1123). A label beginning ``xn--`` must be well-formed Punycode (see
  ``_check_alabel``); it is not held to every IDNA 2008 rule.
* Labels with non-ASCII characters are U-labels: the whole name is mapped with UTS-46 (non-transitional)
  and each label converted with IDNA 2008 (the ``idna`` package). Without that package, Python's own IDNA
  2003 codec is the fallback.
* The name is at most 253 octets; its last label is not all digits (RFC 3696 §2: a TLD is never
  numeric), which also rejects IPv4-looking names such as ``1.2.3.4`` or ``999.1.1.1``.
* IP literals (IPv4, IPv6, ``[1.2.3.4]``, ``[IPv6:...]``) are never domain names.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

from mxsec.errors import ParseError

try:  # the idna package (a dependency); fall back to the stdlib codec without it
    import idna as _idna
except ImportError:  # pragma: no cover - exercised only in stripped-down installs
    _idna = None  # type: ignore[assignment]  # the module is absent; every use checks for None first

__all__ = ["DomainError", "is_ip_literal", "normalize_dns_name", "normalize_domain"]

MAX_NAME_OCTETS = 253
MAX_LABEL_OCTETS = 63
# Any input longer than this is refused before any IDNA work, so hostile input stays cheap.
_MAX_INPUT_CHARS = 1024

_LDH_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_FAST_NAME = re.compile(rf"(?:{_LDH_LABEL}\.)*{_LDH_LABEL}")
_LDH_LABEL_RE = re.compile(_LDH_LABEL)
# DNS owner names: underscore allowed anywhere in a label (e.g. _mta-sts, _25, _tcp).
_DNS_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


class DomainError(ParseError):
    """The text is not a usable domain name."""


def is_ip_literal(text: str) -> bool:
    """True when *text* is an IPv4 or IPv6 address, bare or in brackets (``[1.2.3.4]``, ``[IPv6:::1]``).

    Never raises; anything that is not a string is not an IP literal.
    """
    if not isinstance(text, str) or not text or len(text) > 100:
        return False
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
        if candidate[:5].lower() == "ipv6:":
            candidate = candidate[5:]
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def normalize_domain(text: str) -> str:
    """Return *text* as a lower-case A-label host name without the trailing root dot.

    Accepts A-labels and U-labels. Raises :class:`DomainError` for an empty name, an IP literal, a label over
    63 octets, a name over 253 octets, or characters not allowed in a host name (``_`` included).
    """
    return _normalize(text, dns=False)


def normalize_dns_name(text: str) -> str:
    """Like :func:`normalize_domain`, but ``_`` is allowed in labels (DNS owner names such as
    ``_mta-sts.example.com`` or ``_25._tcp.mx.example.net``)."""
    return _normalize(text, dns=True)


def _normalize(text: str, *, dns: bool) -> str:
    if not isinstance(text, str):
        raise DomainError(f"domain name must be text, not {type(text).__name__}")
    if len(text) > _MAX_INPUT_CHARS:
        raise DomainError("domain name too long")
    name = text[:-1] if text.endswith(".") else text

    # Fast path: the common case is an ASCII LDH name (usually already lower-case).
    if not dns and len(name) <= MAX_NAME_OCTETS and name.isascii():
        lowered = name.lower()
        if _FAST_NAME.fullmatch(lowered) and "xn--" not in lowered and not _numeric_tld(lowered):
            return lowered

    if not name:
        raise DomainError("empty domain name")
    if is_ip_literal(text) or is_ip_literal(name):
        raise DomainError(f"{_show(text)} is an IP address, not a domain name")

    if name.isascii():
        labels = name.lower().split(".")
        for label in labels:
            _check_ascii_label(label, dns=dns, name=text)
    else:
        labels = _ulabels_to_alabels(text, dns=dns)

    result = ".".join(labels)
    if len(result) > MAX_NAME_OCTETS:
        raise DomainError(f"domain name longer than {MAX_NAME_OCTETS} octets")
    if _numeric_tld(result):
        raise DomainError(f"{_show(text)} ends in an all-numeric label (an address, not a domain name)")
    return result


def _numeric_tld(name: str) -> bool:
    last = name.rpartition(".")[2]
    return last.isascii() and last.isdigit()


def _check_ascii_label(label: str, *, dns: bool, name: str) -> None:
    if not label:
        raise DomainError(f"empty label in {_show(name)}")
    if len(label) > MAX_LABEL_OCTETS:
        raise DomainError(f"label longer than {MAX_LABEL_OCTETS} octets in {_show(name)}")
    pattern = _DNS_LABEL_RE if dns else _LDH_LABEL_RE
    if not pattern.fullmatch(label):
        if label.startswith("-") or label.endswith("-"):
            raise DomainError(f"label {_show(label)} starts or ends with a hyphen")
        raise DomainError(f"label {_show(label)} has characters not allowed in a host name")
    if label.startswith("xn--"):
        _check_alabel(label)


def _check_alabel(label: str) -> None:
    """An ``xn--`` label must be well-formed Punycode: it decodes to a non-ASCII label without control,
    format, surrogate or separator characters, and re-encodes to itself.

    This is deliberately weaker than full IDNA 2008 validation: names registered under IDNA 2003 (emoji
    domains, for instance) exist in the DNS and must still be comparable and resolvable.
    """
    try:
        decoded = label[4:].encode("ascii").decode("punycode")
        ok = (
            not decoded.isascii()
            and decoded.encode("punycode").decode("ascii").lower() == label[4:]
            and not any(unicodedata.category(ch)[0] in "CZ" or ch == "." for ch in decoded)
        )
    except Exception:  # noqa: BLE001 - the codec raises several types on garbage
        ok = False
    if not ok:
        raise DomainError(f"label {_show(label)} is not a valid A-label")


def _ulabels_to_alabels(text: str, *, dns: bool) -> list[str]:
    """Map a name containing U-labels to A-labels (UTS-46 mapping, IDNA 2008 per label)."""
    try:
        if _idna is not None:
            mapped = _idna.uts46_remap(text, std3_rules=False, transitional=False)
        else:  # pragma: no cover
            mapped = text.lower().replace("\u3002", ".").replace("\uff0e", ".").replace("\uff61", ".")
    except Exception as exc:  # noqa: BLE001 - idna raises IDNAError subclasses and UnicodeError
        raise DomainError(f"{_show(text)} is not a valid domain name: {exc}") from None
    if mapped.endswith("."):
        mapped = mapped[:-1]
    if not mapped:
        raise DomainError("empty domain name")
    result: list[str] = []
    for label in mapped.split("."):
        if label.isascii():
            _check_ascii_label(label, dns=dns, name=text)
            result.append(label)
            continue
        try:
            if _idna is not None:
                alabel = _idna.alabel(label).decode("ascii")
            else:  # pragma: no cover
                alabel = label.encode("idna").decode("ascii")
        except Exception as exc:  # noqa: BLE001
            raise DomainError(f"label {_show(label)} is not a valid IDNA label: {exc}") from None
        _check_ascii_label(alabel, dns=False, name=text)
        result.append(alabel)
    return result


def _show(text: str) -> str:
    """A short, printable rendering of untrusted text for error messages."""
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."
