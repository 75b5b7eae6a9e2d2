"""The set of policy domains one ``mxsec serve-policy`` process serves ("sites"). Reads files; no sockets.

A site is a policy domain, its policy host ``mta-sts.<domain>`` and the policy served there. The set comes
from exactly one source:

* ``--policy FILE``: one file for every ``--domain`` given, or, without ``--domain``, for whatever host is
  asked (:attr:`SiteSet.any_host`);
* ``--policy-dir DIR``: one file per domain, named ``<domain>.txt``;
* ``--sites FILE``: a TOML template; each policy body is made by :func:`mxsec.generate.sts_policy`.

:func:`load_sites` (at start) raises :class:`~mxsec.errors.ConfigError` with a one-line message for any
problem. :func:`reload_sites` (on SIGHUP) never raises: a source that cannot be read keeps the whole previous
set, and a domain whose new policy is bad keeps its previous policy. See docs/generate.md ("Many domains from
one process").
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mxsec.errors import ConfigError, ParseError, one_line
from mxsec.generate import sts_policy
from mxsec.names import DomainError, normalize_domain
from mxsec.serve_policy.files import LoadedPolicy, load_policy, policy_host, policy_warnings, read_limited
from mxsec.sts.policy import PolicyError, parse_policy

__all__ = ["MAX_SITES", "MAX_SITES_FILE_BYTES", "Site", "SiteSet", "load_sites", "reload_sites"]

#: At most this many domains from one source.
MAX_SITES = 10000
#: The ``--sites`` TOML file is read up to this size.
MAX_SITES_FILE_BYTES = 1 << 20
#: A Host header or SNI name longer than this is never a served host (a DNS name has at most 253 octets).
_MAX_HOST_CHARS = 300
_POLICY_SUFFIX = ".txt"
_PREFIX = "mta-sts."
_TOP_KEYS = ("policy", "domains")
_POLICY_KEYS = ("mode", "max_age")
_DOMAIN_KEYS = ("mx", "mode", "max_age")


@dataclass(frozen=True)
class Site:
    """One policy domain and what its policy host serves."""

    domain: str  # policy domain, A-label, lower case ("*" for SiteSet.any_host)
    host: str  # "mta-sts." + domain ("*" for SiteSet.any_host)
    policy: LoadedPolicy  # body served byte for byte + parsed policy + warnings


@dataclass(frozen=True)
class SiteSet:
    """The sites of one source, by policy host (A-label, lower case)."""

    sites: Mapping[str, Site]  # by host
    source: str  # "policy FILE" / "policy-dir DIR" / "sites FILE", for logs
    any_host: Site | None = None  # single --policy without --domain: served for every Host

    def for_host(self, host: str | None) -> Site | None:
        """The site for a Host header or SNI name: case-insensitive, ``:port`` and a trailing dot ignored,
        U-labels accepted (IDNA); None if not served."""
        if self.any_host is not None:
            return self.any_host
        if not isinstance(host, str) or not host or not self.sites:
            return None
        name = host.strip()
        if not name or len(name) > _MAX_HOST_CHARS or name.startswith("["):
            return None  # nothing, too long, or an IPv6 literal
        head, colon, port = name.rpartition(":")
        if colon:
            if not (port == "" or (port.isascii() and port.isdigit())):
                return None
            name = head
        if ":" in name:
            return None
        if name.endswith("."):
            name = name[:-1]
        site = self.sites.get(name.lower())
        if site is not None or name.isascii():
            return site  # an ASCII name in lower case is already its A-label form
        try:
            return self.sites.get(normalize_domain(name))
        except DomainError:
            return None

    @property
    def domains(self) -> tuple[str, ...]:
        """The policy domains served by name, sorted (empty for :attr:`any_host`)."""
        return tuple(sorted(site.domain for site in self.sites.values()))


# --------------------------------------------------------------------------- collecting a source
@dataclass
class _Collected:
    """What a source yielded: good policies and failures by domain, and problems tied to no domain."""

    source: str
    policies: dict[str, LoadedPolicy] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    any_host: LoadedPolicy | None = None


def _choose(policy_path: str | None, policy_dir: str | None, sites_path: str | None) -> tuple[str, str]:
    given = [(kind, value) for kind, value in
             (("policy", policy_path), ("policy-dir", policy_dir), ("sites", sites_path)) if value is not None]
    if len(given) != 1:
        named = " and ".join(f"--{kind}" for kind, _ in given) if given else "none"
        raise ConfigError(f"give exactly one of --policy, --policy-dir or --sites (given: {named})")
    kind, value = given[0]
    if not value:
        raise ConfigError(f"--{kind}: empty path")
    return kind, os.fspath(value)


def _wanted_domains(domains: Sequence[str]) -> list[str]:
    """The ``--domain`` values as policy domains (A-labels), duplicates dropped, order kept."""
    if isinstance(domains, str):
        domains = (domains,)
    if len(domains) > MAX_SITES:
        raise ConfigError(f"more than {MAX_SITES} --domain values")
    wanted: list[str] = []
    for value in domains:
        domain = policy_host(value)[len(_PREFIX):]
        if domain not in wanted:
            wanted.append(domain)
    return wanted


def _policy_domain(text: str, where: str) -> str:
    """*text* as a policy domain (A-label); ConfigError naming *where* when it is not one."""
    try:
        name = normalize_domain(text)
    except DomainError as exc:
        raise ConfigError(f"{where}: {_show(text)} is not a domain name: {one_line(exc)}") from None
    if name.startswith(_PREFIX):
        raise ConfigError(
            f"{where}: give the policy domain ({name[len(_PREFIX):]}), not the policy host ({name})"
        )
    return name


def _collect(kind: str, path: str, wanted: list[str]) -> _Collected:
    if kind == "policy":
        return _collect_policy(path, wanted)
    if kind == "policy-dir":
        return _collect_dir(path, wanted)
    return _collect_sites(path, wanted)


def _collect_policy(path: str, wanted: list[str]) -> _Collected:
    loaded = load_policy(path)  # one file for everything: its failure is the source's
    found = _Collected(f"policy {path}")
    if wanted:
        found.policies = {domain: loaded for domain in wanted}
    else:
        found.any_host = loaded
    return found


def _collect_dir(directory: str, wanted: list[str]) -> _Collected:
    found = _Collected(f"policy-dir {directory}")
    files: dict[str, list[str]] = {}  # domain -> file names
    count = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or not name.endswith(_POLICY_SUFFIX) or len(name) == len(_POLICY_SUFFIX):
                    continue
                try:
                    if not entry.is_file():
                        continue  # subdirectories, sockets, dangling links
                except OSError:
                    continue
                count += 1
                if count > MAX_SITES:
                    raise ConfigError(f"policy-dir {directory}: more than {MAX_SITES} policy files (*.txt)")
                try:
                    domain = _policy_domain(name[: -len(_POLICY_SUFFIX)], f"policy-dir {directory}: file {name!r}")
                except ConfigError as exc:
                    found.problems.append(str(exc))
                    continue
                files.setdefault(domain, []).append(name)
    except OSError as exc:
        raise ConfigError(f"cannot read policy-dir {directory}: {exc.strerror or exc}") from None
    found.problems.sort()  # the directory's order is the file system's
    if wanted:
        selected = wanted
        for domain in wanted:
            if domain not in files:
                missing = os.path.join(directory, domain + _POLICY_SUFFIX)
                found.failures[domain] = f"policy-dir {directory}: {domain}: no policy file {missing}"
        found.problems = []  # files for domains not asked for are not looked at
    else:
        if not files:
            if found.problems:
                raise ConfigError(found.problems[0])
            raise ConfigError(f"policy-dir {directory}: no policy files (<domain>.txt); nothing to serve")
        selected = sorted(files)
    for domain in selected:
        names = sorted(files.get(domain, ()))
        if not names:
            continue
        if len(names) > 1:
            found.failures[domain] = (
                f"policy-dir {directory}: {domain}: {len(names)} files name this domain "
                f"({', '.join(map(repr, names))}); keep one"
            )
            continue
        try:
            found.policies[domain] = load_policy(os.path.join(directory, names[0]))
        except ConfigError as exc:
            found.failures[domain] = f"policy-dir {directory}: {domain}: {exc}"
    return found


def _read_sites_file(path: str) -> dict[str, Any]:
    data = read_limited(path, "sites", MAX_SITES_FILE_BYTES)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"sites {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sites {path}: TOML syntax error: {one_line(exc)}") from None


def _collect_sites(path: str, wanted: list[str]) -> _Collected:
    found = _Collected(f"sites {path}")
    document = _read_sites_file(path)
    for key in document:
        if key not in _TOP_KEYS:
            raise ConfigError(f"sites {path}: unknown key {_show(key)} (known: [policy], [domains.\"DOMAIN\"])")
    defaults = document.get("policy", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"sites {path}: policy must be a table ([policy])")
    for key in defaults:
        if key not in _POLICY_KEYS:
            raise ConfigError(f"sites {path}: [policy]: unknown key {_show(key)} (known: mode, max_age)")
    table = document.get("domains", {})
    if not isinstance(table, dict):
        raise ConfigError(f"sites {path}: domains must be a table ([domains.\"DOMAIN\"])")
    if not table:
        raise ConfigError(f"sites {path}: no [domains.\"DOMAIN\"] tables; nothing to serve")
    if len(table) > MAX_SITES:
        raise ConfigError(f"sites {path}: more than {MAX_SITES} domains")
    entries: dict[str, tuple[str, Any]] = {}  # domain -> (key as written, its table)
    for key, value in table.items():
        try:
            domain = _policy_domain(key, f"sites {path}: [domains.{_show(key)}]")
        except ConfigError as exc:
            found.problems.append(str(exc))
            continue
        if domain in entries:
            first = entries[domain][0]
            found.failures[domain] = (
                f"sites {path}: {domain}: listed twice ([domains.{_show(first)}] and [domains.{_show(key)}]); keep one"
            )
            continue
        entries[domain] = (key, value)
    if wanted:
        found.problems = []  # entries for domains not asked for are not looked at
        found.failures = {d: message for d, message in found.failures.items() if d in wanted}
        for domain in wanted:
            if domain not in entries and domain not in found.failures:
                found.failures[domain] = f"sites {path}: {domain}: not listed (no [domains.\"{domain}\"])"
        selected = [d for d in wanted if d in entries and d not in found.failures]
    else:
        selected = [d for d in entries if d not in found.failures]
    for domain in selected:
        try:
            found.policies[domain] = _site_policy(path, domain, entries[domain][1], defaults)
        except ConfigError as exc:
            found.failures[domain] = str(exc)
    return found


def _site_policy(path: str, domain: str, entry: object, defaults: Mapping[str, Any]) -> LoadedPolicy:
    where = f"sites {path}: {domain}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table ([domains.\"{domain}\"] with mx = [...])")
    for key, value in entry.items():
        if key not in _DOMAIN_KEYS:
            hint = "; a dotted domain must be quoted: [domains.\"example.com\"]" if isinstance(value, dict) else ""
            raise ConfigError(f"{where}: unknown key {_show(key)} (known: mx, mode, max_age){hint}")
    mode = entry.get("mode", defaults.get("mode"))
    max_age = entry.get("max_age", defaults.get("max_age"))
    if mode is None:
        raise ConfigError(f"{where}: no mode (set mode in [policy] or in [domains.\"{domain}\"])")
    if max_age is None:
        raise ConfigError(f"{where}: no max_age (set max_age in [policy] or in [domains.\"{domain}\"])")
    mx = entry.get("mx")
    if mx is None:
        if mode != "none":
            raise ConfigError(f"{where}: mx is required (a list of MX host patterns) unless mode is \"none\"")
        mx = []
    if not isinstance(mx, list) or not all(isinstance(item, str) for item in mx):
        raise ConfigError(f"{where}: mx must be a list of strings, e.g. mx = [\"mail.{domain}\"]")
    if not mx and mode != "none":
        raise ConfigError(f"{where}: mx is empty; mode {_show(mode)} needs at least one MX host pattern")
    try:
        generated = sts_policy(mode, mx, max_age)
    except ParseError as exc:
        raise ConfigError(f"{where}: {one_line(exc)}") from None
    body = generated.text.encode("utf-8")
    try:
        policy = parse_policy(body)
    except PolicyError as exc:  # pragma: no cover - sts_policy re-parses its own output
        raise ConfigError(f"{where}: the generated policy does not parse: {one_line(exc)}") from None
    warnings = policy_warnings(policy)
    # sts_policy's own advice on mx patterns (U-labels converted, duplicates); max_age advice is already above.
    warnings += [w for w in generated.warnings if not w.startswith("max_age")]
    return LoadedPolicy(f"{path}#{domain}", body, policy, tuple(warnings))


# --------------------------------------------------------------------------- public entry points
def _site(domain: str, policy: LoadedPolicy) -> Site:
    return Site(domain, _PREFIX + domain, policy)


def load_sites(
    *,
    policy_path: str | None = None,
    policy_dir: str | None = None,
    sites_path: str | None = None,
    domains: Sequence[str] = (),
) -> SiteSet:
    """Load the sites of the one source given; raise :class:`ConfigError` (one line) for any problem."""
    kind, path = _choose(policy_path, policy_dir, sites_path)
    wanted = _wanted_domains(domains)
    found = _collect(kind, path, wanted)
    errors = found.problems + [found.failures[d] for d in sorted(found.failures)]
    if errors:
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ConfigError(errors[0] + more)
    if found.any_host is not None:
        return SiteSet(MappingProxyType({}), found.source, Site("*", "*", found.any_host))
    sites = {_PREFIX + domain: _site(domain, policy) for domain, policy in found.policies.items()}
    return SiteSet(MappingProxyType(sites), found.source)


def reload_sites(
    previous: SiteSet,
    *,
    policy_path: str | None = None,
    policy_dir: str | None = None,
    sites_path: str | None = None,
    domains: Sequence[str] = (),
) -> tuple[SiteSet, list[str]]:
    """Re-read the source: ``(new set, error lines)``. Never raises :class:`ConfigError`.

    A source that cannot be used as a whole (unreadable, TOML syntax, empty, too many domains) gives
    ``previous`` unchanged and one error line. A domain whose new policy is bad keeps its previous site (or
    stays out if it had none), with an error line naming it; the other domains are updated, added or removed.
    """
    try:
        kind, path = _choose(policy_path, policy_dir, sites_path)
        wanted = _wanted_domains(domains)
        found = _collect(kind, path, wanted)
    except ConfigError as exc:
        return previous, [f"{exc}; still serving the previous set"]
    if found.any_host is not None:
        return SiteSet(MappingProxyType({}), found.source, Site("*", "*", found.any_host)), []
    errors = list(found.problems)
    sites = {_PREFIX + domain: _site(domain, policy) for domain, policy in found.policies.items()}
    for domain in sorted(found.failures):
        host = _PREFIX + domain
        kept = previous.sites.get(host)
        if kept is not None:
            sites[host] = kept
            errors.append(f"{found.failures[domain]}; still serving the previous policy for {domain}")
        else:
            errors.append(f"{found.failures[domain]}; {domain} is not served")
    if not sites:
        errors.append(f"{found.source}: no domain left to serve; still serving the previous set")
        return previous, errors
    return SiteSet(MappingProxyType(sites), found.source), errors


def _show(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
