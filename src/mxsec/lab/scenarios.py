"""Lab scenarios: one entry per domain in a small TOML file (``scenarios.toml`` next to this module).

Each ``[[scenario]]`` gives the domain's DNSSEC state, its MX hosts and their certificates, its MTA-STS record
and policy (or none), how its policy host behaves, whether TLSA records are published, and what must happen
to one message sent to it. The format is documented at the top of ``scenarios.toml`` and in docs/lab.md.

    scenarios = load_scenarios()                       # validated, list[Scenario]
    addresses = host_addresses(scenarios, topo)        # {"mx1.dane-ok.test": "203.0.113.10", ...}
    zones = zone_specs(scenarios, addresses, tlsa)     # list[dns.ZoneSpec] for LabDns.start()

``tlsa`` maps each MX host of a scenario with ``tlsa`` set to its TLSA rdata texts (``"3 1 1 <hex>"``):
the caller computes them from the certificates it made (``tlsa_rdatas(kind, current, other)`` picks what
``match``/``mismatch``/``rollover`` publish; :func:`mxsec.lab.dns.tlsa_311` computes one from a PEM).
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mxsec.lab.dns import TLD, ZoneSpec
from mxsec.lab.topology import Topology

__all__ = [
    "CERT_KINDS",
    "DNSSEC_STATES",
    "Expectation",
    "MxHost",
    "PolicyHost",
    "Scenario",
    "ScenarioError",
    "StsSpec",
    "host_addresses",
    "load_scenarios",
    "parse_scenarios",
    "placeholder_tlsa",
    "tlsa_rdatas",
    "zone_specs",
]

CERT_KINDS = ("valid", "expired", "wrong-name", "untrusted", "no-starttls")
POLICY_CERT_KINDS = ("valid", "expired", "wrong-name", "untrusted", "acme")
DNSSEC_STATES = ("signed", "unsigned", "bogus")
STS_MODES = ("enforce", "testing", "none")
POLICY_BEHAVIOURS = ("ok", "redirect", "404")
TLSA_KINDS = ("match", "mismatch", "rollover")
RESULTS = ("delivered", "deferred")
TLS_LEVELS = ("verified", "dane", "any")
MAX_AGE_LIMIT = 31557600

_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HOST_RE = re.compile(r"^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z0-9-]+$")
_ID_RE = re.compile(r"^[A-Za-z0-9]{1,32}$")


class ScenarioError(ValueError):
    """The scenario file is wrong; the message names the file, the scenario and the field."""


@dataclass(frozen=True)
class MxHost:
    host: str  # full name, inside the scenario's domain
    cert: str = "valid"  # one of CERT_KINDS
    preference: int = 10
    cert_name: str | None = None  # the name in the certificate when it is not the host's (valid/expired/untrusted)

    @property
    def starttls(self) -> bool:
        return self.cert != "no-starttls"

    @property
    def tlsa_owner(self) -> str:
        return f"_25._tcp.{self.host}"


@dataclass(frozen=True)
class StsSpec:
    id: str
    mode: str = "enforce"
    mx: tuple[str, ...] = ()
    max_age: int = 86400
    next_id: str | None = None  # the id published by a run-time change (scenario sts-id-change)

    def txt(self, id: str | None = None) -> str:
        """The ``_mta-sts`` TXT record's text (one string)."""
        return f"v=STSv1; id={id or self.id}"

    def policy_text(self) -> str:
        """The policy file body, CRLF line ends (RFC 8461 §3.2)."""
        lines = ["version: STSv1", f"mode: {self.mode}", *(f"mx: {p}" for p in self.mx), f"max_age: {self.max_age}"]
        return "\r\n".join(lines) + "\r\n"


@dataclass(frozen=True)
class PolicyHost:
    behaviour: str = "ok"  # ok: 200 text/plain with the policy; redirect: 301 elsewhere; 404: not found
    cert: str = "valid"  # one of POLICY_CERT_KINDS, for mta-sts.<domain>


@dataclass(frozen=True)
class Expectation:
    result: str  # delivered | deferred
    tls: str | None = None  # delivered: verified | dane | any
    reason: str | None = None  # deferred: a substring of the sender's log line
    reply: str | None = None  # optional: the daemon's reply must start with this (e.g. "OK dane-only")
    tlsrpt: str | None = None  # with tlsrpt: each session in RFC 8460 terms, "success" or a result type
    tlsrpt_exim: str | None = None  # the same as Exim's log can tell it (when it can tell less)
    tlsrpt_xfail: str | None = None  # a known gap of the reporting: the loop's row is xfail with this reason

    @property
    def delivered(self) -> bool:
        return self.result == "delivered"


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    domain: str
    dnssec: str
    mx: tuple[MxHost, ...]
    sts: StsSpec | None
    policy_host: PolicyHost | None  # None when there is no MTA-STS record
    tlsa: str | None
    tlsrpt: str | None
    records: tuple[str, ...]
    expect: Expectation
    extra: Mapping[str, Any] = field(default_factory=dict)  # unknown keys under [scenario.extra], passed on
    expect_fail_until: str | None = None  # an issue that will make this scenario pass; until then: xfail

    @property
    def signed(self) -> bool:
        return self.dnssec != "unsigned"

    @property
    def bogus(self) -> bool:
        return self.dnssec == "bogus"

    @property
    def policy_host_name(self) -> str:
        return f"mta-sts.{self.domain}"

    def hosts(self) -> list[str]:
        """Names that need an address: every MX host, then the policy host if there is an STS record."""
        names = [m.host for m in self.mx]
        if self.sts is not None:
            names.append(self.policy_host_name)
        return names

    def zone_spec(self, addresses: Mapping[str, str], tlsa: Mapping[str, Sequence[str]] | None = None) -> ZoneSpec:
        """The domain's zone: MX, A for MX and policy hosts, ``_mta-sts`` TXT, ``_smtp._tls`` TXT, TLSA, extra
        records. Names are written absolute."""
        d = self.domain
        lines: list[str] = []
        for m in self.mx:
            lines.append(f"{d}. MX {m.preference} {m.host}.")
        for host in self.hosts():
            if host not in addresses:
                raise ScenarioError(f"scenario {self.name}: no address for {host}")
            lines.append(f"{host}. A {addresses[host]}")
        if self.sts is not None:
            lines.append(f'_mta-sts.{d}. TXT "{self.sts.txt()}"')
        if self.tlsrpt is not None:
            lines.append(f'_smtp._tls.{d}. TXT "v=TLSRPTv1; rua={self.tlsrpt}"')
        if self.tlsa is not None:
            for m in self.mx:
                rdatas = list((tlsa or {}).get(m.host, ()))
                if not rdatas:
                    raise ScenarioError(f"scenario {self.name}: tlsa = {self.tlsa!r} but no TLSA data for {m.host}")
                lines += [f"{m.tlsa_owner}. TLSA {r}" for r in rdatas]
        lines += list(self.records)
        return ZoneSpec(name=d, records=tuple(lines), signed=self.signed, bogus=self.bogus)


# ------------------------------------------------------------------------------------------------ loading


def load_scenarios(path: str | os.PathLike[str] | None = None) -> list[Scenario]:
    """Read and validate the scenario file (default: the packaged ``scenarios.toml``)."""
    if path is None:
        text = resources.files("mxsec.lab").joinpath("scenarios.toml").read_text(encoding="utf-8")
        where = "scenarios.toml"
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{p}: {exc.strerror or exc}") from exc
        where = str(p)
    return parse_scenarios(text, where)


def parse_scenarios(text: str, where: str = "<scenarios>") -> list[Scenario]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where}: not valid TOML: {exc}") from exc
    _keys(data, {"scenario"}, where)
    entries = data.get("scenario")
    if not isinstance(entries, list) or not entries:
        raise ScenarioError(f"{where}: no [[scenario]] entries")
    out: list[Scenario] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries, 1):
        ctx = f"{where}: scenario #{i}"
        if not isinstance(entry, dict):
            raise ScenarioError(f"{ctx}: not a table")
        if isinstance(entry.get("name"), str):
            ctx = f"{where}: scenario {entry['name']!r}"
        sc = _scenario(entry, ctx)
        for key in (sc.name, sc.domain):
            if key in seen:
                raise ScenarioError(f"{ctx}: duplicate name or domain {key!r}")
            seen.add(key)
        out.append(sc)
    return out


def _scenario(e: dict[str, Any], ctx: str) -> Scenario:
    _keys(e, {"name", "about", "domain", "dnssec", "mx", "sts", "policy_host", "tlsa", "tlsrpt", "records",
              "expect", "extra", "expect_fail_until"}, ctx)
    name = _str(e, "name", ctx, required=True)
    if not _NAME_RE.match(name):
        raise ScenarioError(f"{ctx}: name: use lower-case letters, digits and '-' (a DNS label)")
    about = _str(e, "about", ctx, required=True)
    domain = _str(e, "domain", ctx, default=f"{name}.{TLD}").lower().rstrip(".")
    labels = domain.split(".")
    if len(labels) != 2 or labels[1] != TLD or not _NAME_RE.match(labels[0]) or labels[0] == "nic":
        raise ScenarioError(f"{ctx}: domain {domain!r}: one label under .{TLD} (not nic.{TLD})")
    dnssec = _choice(e, "dnssec", DNSSEC_STATES, ctx, default="signed")

    mx_list = e.get("mx", [])
    if not isinstance(mx_list, list):
        raise ScenarioError(f"{ctx}: mx: a list of {{ host = ..., cert = ... }}")
    mx: list[MxHost] = []
    for j, m in enumerate(mx_list, 1):
        mctx = f"{ctx}: mx #{j}"
        if not isinstance(m, dict):
            raise ScenarioError(f"{mctx}: a table like {{ host = \"mx1.{domain}\", cert = \"valid\" }}")
        _keys(m, {"host", "cert", "preference", "cert_name"}, mctx)
        host = _host(_str(m, "host", mctx, required=True), domain, mctx)
        pref = _int(m, "preference", mctx, default=10, low=0, high=65535)
        kind = _choice(m, "cert", CERT_KINDS, mctx, default="valid")
        cert_name = _str(m, "cert_name", mctx)
        if cert_name is not None:
            cert_name = cert_name.strip().lower().rstrip(".")
            if kind not in ("valid", "expired", "untrusted") or not re.fullmatch(r"[a-z0-9*][a-z0-9.-]*", cert_name):
                raise ScenarioError(f"{mctx}: cert_name: a host name, only with cert valid, expired or untrusted")
        mx.append(MxHost(host=host, cert=kind, preference=pref, cert_name=cert_name))
    if len({m.host for m in mx}) != len(mx):
        raise ScenarioError(f"{ctx}: mx: a host is listed twice")

    sts = None
    if "sts" in e:
        s = e["sts"]
        sctx = f"{ctx}: sts"
        if not isinstance(s, dict):
            raise ScenarioError(f"{sctx}: a table {{ id, mode, mx, max_age }}")
        _keys(s, {"id", "mode", "mx", "max_age", "next_id"}, sctx)
        sid = _str(s, "id", sctx, required=True)
        next_id = _str(s, "next_id", sctx, default=None)
        for key, value in (("id", sid), ("next_id", next_id)):
            if value is not None and not _ID_RE.match(value):
                raise ScenarioError(f"{sctx}: {key}: 1-32 letters and digits (RFC 8461 §3.1)")
        patterns = s.get("mx", [])
        if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
            raise ScenarioError(f"{sctx}: mx: a list of patterns like \"mx1.{domain}\" or \"*.{domain}\"")
        for p in patterns:
            bare = p.removeprefix("*.")
            if not _HOST_RE.match(bare.lower()):
                raise ScenarioError(f"{sctx}: mx: {p!r} is not a host name or *.name pattern")
        mode = _choice(s, "mode", STS_MODES, sctx, default="enforce")
        if mode != "none" and not patterns:
            raise ScenarioError(f"{sctx}: mx: mode {mode} needs at least one pattern")
        sts = StsSpec(
            id=sid,
            mode=mode,
            mx=tuple(p.lower() for p in patterns),
            max_age=_int(s, "max_age", sctx, default=86400, low=0, high=MAX_AGE_LIMIT),
            next_id=next_id,
        )

    policy_host = None
    if "policy_host" in e:
        if sts is None:
            raise ScenarioError(f"{ctx}: policy_host without sts (no policy to serve)")
        ph = e["policy_host"]
        pctx = f"{ctx}: policy_host"
        if not isinstance(ph, dict):
            raise ScenarioError(f"{pctx}: a table {{ behaviour, cert }}")
        _keys(ph, {"behaviour", "cert"}, pctx)
        policy_host = PolicyHost(
            behaviour=_choice(ph, "behaviour", POLICY_BEHAVIOURS, pctx, default="ok"),
            cert=_choice(ph, "cert", POLICY_CERT_KINDS, pctx, default="valid"),
        )
    elif sts is not None:
        policy_host = PolicyHost()

    tlsa = _choice(e, "tlsa", TLSA_KINDS, ctx, default=None)
    if tlsa is not None and not mx:
        raise ScenarioError(f"{ctx}: tlsa without mx hosts")
    tlsrpt = _str(e, "tlsrpt", ctx, default=None)
    if tlsrpt is not None and not re.match(r"^(mailto:|https://)\S+$", tlsrpt):
        raise ScenarioError(f"{ctx}: tlsrpt: a rua URI (mailto:... or https://...)")
    records = e.get("records", [])
    if not isinstance(records, list) or not all(isinstance(r, str) and r.strip() and "\n" not in r for r in records):
        raise ScenarioError(f"{ctx}: records: a list of zone-file lines (one record each)")

    x = e.get("expect")
    xctx = f"{ctx}: expect"
    if not isinstance(x, dict):
        raise ScenarioError(f"{xctx}: required, like {{ result = \"delivered\", tls = \"verified\" }}")
    _keys(x, {"result", "tls", "reason", "reply", "tlsrpt", "tlsrpt_exim", "tlsrpt_xfail"}, xctx)
    reply = _str(x, "reply", xctx, default=None)
    loop = {key: _str(x, key, xctx, default=None) for key in ("tlsrpt", "tlsrpt_exim", "tlsrpt_xfail")}
    for key in ("tlsrpt", "tlsrpt_exim"):
        value = loop[key]
        if value is None:
            continue
        from mxsec.tlsrpt.report import RESULT_TYPES

        if value != "success" and value not in RESULT_TYPES:
            raise ScenarioError(f"{xctx}: {key}: \"success\" or an RFC 8460 result type "
                                f"({', '.join(sorted(RESULT_TYPES))})")
    if any(loop.values()) and tlsrpt is None:
        raise ScenarioError(f"{xctx}: tlsrpt: only with a tlsrpt record")
    result = _choice(x, "result", RESULTS, xctx, default=None)
    if result is None:
        raise ScenarioError(f"{xctx}: result: required (one of {', '.join(RESULTS)})")
    if result == "delivered":
        tls = _choice(x, "tls", TLS_LEVELS, xctx, default=None)
        if tls is None:
            raise ScenarioError(f"{xctx}: tls: required for delivered (one of {', '.join(TLS_LEVELS)})")
        if "reason" in x:
            raise ScenarioError(f"{xctx}: reason: only for deferred")
        expect = Expectation(result=result, tls=tls, reply=reply, **loop)
    else:
        reason = _str(x, "reason", xctx, required=True)
        if "tls" in x:
            raise ScenarioError(f"{xctx}: tls: only for delivered")
        expect = Expectation(result=result, reason=reason, reply=reply, **loop)

    extra = e.get("extra", {})
    if not isinstance(extra, dict):
        raise ScenarioError(f"{ctx}: extra: a table")
    expect_fail_until = _str(e, "expect_fail_until", ctx, default=None)

    return Scenario(
        name=name,
        about=about,
        domain=domain,
        dnssec=dnssec,
        mx=tuple(mx),
        sts=sts,
        policy_host=policy_host,
        tlsa=tlsa,
        tlsrpt=tlsrpt,
        records=tuple(records),
        expect=expect,
        extra=dict(extra),
        expect_fail_until=expect_fail_until,
    )


def _keys(d: Mapping[str, Any], allowed: set[str], ctx: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ScenarioError(f"{ctx}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _str(d: Mapping[str, Any], key: str, ctx: str, *, required: bool = False, default: Any = None) -> Any:
    if key not in d:
        if required:
            raise ScenarioError(f"{ctx}: {key}: required")
        return default
    value = d[key]
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(f"{ctx}: {key}: a non-empty string")
    return value


def _int(d: Mapping[str, Any], key: str, ctx: str, *, default: int, low: int, high: int) -> int:
    value = d.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ScenarioError(f"{ctx}: {key}: an integer from {low} to {high}")
    return value


def _choice(d: Mapping[str, Any], key: str, choices: Sequence[str], ctx: str, *, default: Any) -> Any:
    if key not in d:
        return default
    value = d[key]
    if value not in choices:
        raise ScenarioError(f"{ctx}: {key}: {value!r} is not one of {', '.join(choices)}")
    return value


def _host(host: str, domain: str, ctx: str) -> str:
    h = host.lower().rstrip(".")
    if not _HOST_RE.match(h) or not h.endswith("." + domain):
        raise ScenarioError(f"{ctx}: host {host!r}: a full name inside {domain} (like mx1.{domain})")
    return h


# ------------------------------------------------------------------------------------------------ building


def host_addresses(scenarios: Iterable[Scenario], topo: Topology) -> dict[str, str]:
    """A deterministic address (in ``topo.host_net``) for every MX and policy host, in file order."""
    return topo.host_addresses(h for sc in scenarios for h in sc.hosts())


def zone_specs(
    scenarios: Iterable[Scenario],
    addresses: Mapping[str, str],
    tlsa: Mapping[str, Sequence[str]] | None = None,
) -> list[ZoneSpec]:
    """One :class:`~mxsec.lab.dns.ZoneSpec` per scenario (see :meth:`Scenario.zone_spec`)."""
    return [sc.zone_spec(addresses, tlsa) for sc in scenarios]


def tlsa_rdatas(kind: str, current: str, other: str) -> list[str]:
    """What to publish for an MX host: ``current`` is the TLSA rdata of the certificate the MX presents,
    ``other`` one of a different key (e.g. the next key of a rollover). match → [current]; mismatch →
    [other]; rollover → [current, other] (two records, one matches)."""
    if kind == "match":
        return [current]
    if kind == "mismatch":
        return [other]
    if kind == "rollover":
        return [current, other]
    raise ScenarioError(f"tlsa kind {kind!r} is not one of {', '.join(TLSA_KINDS)}")


def placeholder_tlsa(scenarios: Iterable[Scenario]) -> dict[str, list[str]]:
    """Syntactically valid TLSA data (``3 1 1`` + a digest derived from the host name) for every MX host of
    scenarios with ``tlsa`` set: for DNS-only tests, where no certificates exist."""
    out: dict[str, list[str]] = {}
    for sc in scenarios:
        if sc.tlsa is None:
            continue
        for m in sc.mx:
            cur = "3 1 1 " + hashlib.sha256(f"current {m.host}".encode()).hexdigest()
            nxt = "3 1 1 " + hashlib.sha256(f"next {m.host}".encode()).hexdigest()
            out[m.host] = tlsa_rdatas(sc.tlsa, cur, nxt)
    return out
