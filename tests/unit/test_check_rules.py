"""mxsec.check.rules: DomainFacts built by hand from the adapters' answer types -> findings.

No I/O: DNS answers are :mod:`mxsec.dnsanswers` values, the policy fetch a :class:`~mxsec.sts.fetch.FetchOutcome`,
records and policies come from the real parsers, STARTTLS probes are :class:`~mxsec.net.smtp.SmtpProbe` values
whose chains are generated here (:mod:`mxsec.testing.pki`) and whose PKIX verdicts come from the real
:func:`~mxsec.net.smtp.check_pkix`; TLSA records from :func:`~mxsec.dane.tlsa.tlsa_for_certificate`.
Each test asserts the codes with their severities and RFC 8460 result types, and what must *not* appear.
"""

from __future__ import annotations

import datetime as dt
import functools
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxsec.check.findings import CATALOGUE, Finding
from mxsec.check.facts import DomainFacts, mx_hosts
from mxsec.check.rules import EXPIRY_WARNING_DAYS, SHORT_MAX_AGE, judge
from mxsec.dane.destination import HostFacts, base_candidates
from mxsec.dane.tlsa import tlsa_for_certificate
from mxsec.testing.pki import TestCA, pem_to_der
from mxsec.dnsanswers import AddressAnswer, RRAnswer, TxtAnswer
from mxsec.sts.fetch import FetchOutcome
from mxsec.net.smtp import PkixResult, SmtpProbe, check_pkix
from mxsec.sts.policy import PolicyError, parse_policy
from mxsec.sts.record import select_record
from mxsec.sts.fetch import FetchProblem, result_type_for
from mxsec.tlsrpt.record import select_record as select_tlsrpt

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
DOMAIN = "example.com"
MX1 = "mx1.example.net"
MX2 = "mx2.example.net"
IP1 = "192.0.2.25"
IP2 = "192.0.2.26"
STORE = "the CA file roots.pem"
RUA = "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"


def policy_body(*mx: str, mode: str = "enforce", max_age: int = 1209600) -> str:
    return "".join(["version: STSv1\r\n", f"mode: {mode}\r\n", *(f"mx: {m}\r\n" for m in mx),
                    f"max_age: {max_age}\r\n"])


# ----------------------------------------------------------------------------------------- building facts


def mx_answer(*hosts: str, secure: bool = False, status: str = "ok", error: str | None = None) -> RRAnswer:
    records = tuple((10 * (i + 1), h) for i, h in enumerate(hosts))
    return RRAnswer(status, records if status == "ok" else (), secure, 300 if status == "ok" else None, error)


def addresses(*ips: str, secure: bool = False, canonical: str | None = None, status: str = "ok",
              error: str | None = None) -> AddressAnswer:
    return AddressAnswer(status, tuple(ips), error, secure, canonical)


def tlsa_answer(*records, secure: bool = True, status: str = "ok", error: str | None = None) -> RRAnswer:
    rows = tuple((r.usage, r.selector, r.mtype, r.data) for r in records)
    return RRAnswer(status, rows, secure, 300 if status == "ok" else None, error)


def host(name: str, *ips: str, secure: bool = False, tlsa: RRAnswer | None = None,
         canonical: str | None = None, address_answer: AddressAnswer | None = None) -> HostFacts:
    """Like :func:`mxsec.dane.gather.host_facts`: TLSA only at a secure host's first base-domain candidate."""
    answer = address_answer or addresses(*ips, secure=secure, canonical=canonical or name)
    candidates = base_candidates(name, answer)
    looked_up = tlsa if candidates else None
    base = None
    if looked_up is not None and (looked_up.status == "error" or (looked_up.ok and looked_up.secure)):
        base = candidates[0]
    return HostFacts(name, answer, looked_up, candidates, base)


def facts(*, mx: RRAnswer | None = None, hosts: list[HostFacts] | None = None,
          sts: tuple[str, ...] | None = ("v=STSv1; id=20240101",), sts_status: str = "ok",
          body: str | bytes | None = None, fetch: FetchOutcome | None = None,
          tlsrpt: tuple[str, ...] | None = (RUA,), tlsrpt_status: str = "ok",
          probes: list[SmtpProbe] | None = None, rua_mx: dict | None = None,
          refused: dict | None = None, policy_host: AddressAnswer | None = None,
          sts_cname: str | None = None, unused_tlsa: dict | None = None) -> DomainFacts:
    """A domain as gather() would record it. Defaults: one MX (mx1.example.net, unsigned), a valid MTA-STS
    record and enforce policy covering it, a valid TLSRPT record, no SMTP probes."""
    f = DomainFacts(DOMAIN)
    f.mx = mx if mx is not None else mx_answer(MX1)
    if hosts is None:
        hosts = [host(h, IP1) for h in mx_hosts(f, 10)] if f.mx.status in ("ok", "nodata") else []
    f.hosts = {h.host: h for h in hosts}
    f.sts_txt = TxtAnswer(sts_status, tuple(sts or ()), "SERVFAIL" if sts_status == "error" else None)
    f.sts_cname = sts_cname
    if f.sts_txt.ok:
        f.sts_record = select_record(list(f.sts_txt.records))
    if f.sts_record is None or f.sts_record.record is None:
        f.policy_host = policy_host or addresses(status="nxdomain")
    else:
        if fetch is None:
            data = body if body is not None else policy_body(MX1)
            raw = data.encode() if isinstance(data, str) else data
            fetch = FetchOutcome(raw, None, "HTTP 200", 200, "text/plain", "192.0.2.80")
        f.fetch = fetch
        if fetch.body is not None:
            try:
                f.policy = parse_policy(fetch.body)
            except PolicyError as exc:
                f.policy_error = str(exc)
    f.tlsrpt_txt = TxtAnswer(tlsrpt_status, tuple(tlsrpt or ()), "timeout" if tlsrpt_status == "error" else None)
    if f.tlsrpt_txt.ok:
        f.tlsrpt = select_tlsrpt(list(f.tlsrpt_txt.records))
    f.rua_mx = rua_mx if rua_mx is not None else {"example.com": mx_answer("mail.example.com")}
    f.refused = refused or {}
    f.unused_tlsa = unused_tlsa or {}
    if probes is not None:
        f.smtp_checked = True
        for probe in probes:
            f.probes[(probe.server_name, probe.address)] = probe
    return f


def by_code(findings: list[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.code, []).append(f)
    return out


def run(f: DomainFacts) -> dict[str, list[Finding]]:
    return by_code(judge(f, now=NOW))


def one(found: dict[str, list[Finding]], code: str, severity: str | None = None,
        result_type: str | None | type(...) = ...) -> Finding:
    assert code in found, f"{code} missing; got {sorted(found)}"
    f = found[code][0]
    assert f.severity == (severity or CATALOGUE[code].severity), (code, f.severity)
    if result_type is not ...:
        assert f.result_type == result_type, (code, f.result_type)
    assert f.requirement == CATALOGUE[code].requirement
    return f


# ----------------------------------------------------------------------------------------- certificates


@functools.lru_cache(maxsize=1)
def pki() -> SimpleNamespace:
    ca = TestCA("check rules test root")
    stranger = TestCA("check rules untrusted root")

    def der(pem_and_key) -> bytes:
        return pem_to_der(pem_and_key[0])

    return SimpleNamespace(
        ca=ca,
        good=der(ca.issue([MX1, MX2], fresh_key=True)),
        good_other_key=der(ca.issue([MX1, MX2], fresh_key=True)),
        expired=der(ca.expired([MX1])),
        wrong_name=der(ca.issue(["mail.example.org"], fresh_key=True)),
        untrusted=der(stranger.issue([MX1], fresh_key=True)),
        expiring=der(ca.issue([MX1], not_after=NOW + 3 * DAY)),
    )


def pkix(chain: bytes, name: str = MX1) -> PkixResult:
    return check_pkix([chain], [name], [pki().ca.cert], now=NOW, store_label=STORE)


def ok_probe(chain: bytes, *, name: str = MX1, address: str = IP1, tls: str = "TLSv1.3") -> SmtpProbe:
    return SmtpProbe(address, 25, name, "checker.example", banner=("mx ESMTP",),
                     ehlo_keywords=("STARTTLS",), starttls_offered=True, tls_version=tls,
                     cipher="TLS_AES_256_GCM_SHA384", chain=(chain,), chain_source="unverified-chain",
                     pkix=pkix(chain, name))


def failed_probe(stage: str, error: str, *, offered: bool | None = None, name: str = MX1,
                 address: str = IP1) -> SmtpProbe:
    return SmtpProbe(address, 25, name, "checker.example", stage=stage, error=error, starttls_offered=offered)


def dane_host(name: str, *records, secure_tlsa: bool = True, ip: str = IP1) -> HostFacts:
    return host(name, ip, secure=True, tlsa=tlsa_answer(*records, secure=secure_tlsa))


def r311(der: bytes):
    return tlsa_for_certificate(der, 3, 1, 1)


# ========================================================================================= MX


def test_null_mx_alone_is_info_and_nothing_else_about_mx() -> None:
    found = run(facts(mx=mx_answer(""), hosts=[], sts=None, tlsrpt=None))
    one(found, "mx-null", "info", None)
    assert not {"mx-null-mixed", "mx-implicit", "dnssec-unsigned", "sts-mx-not-covered"} & set(found)


def test_null_mx_mixed_with_other_mx_is_an_error() -> None:
    found = run(facts(mx=mx_answer("", MX1)))
    f = one(found, "mx-null-mixed", "error", None)
    assert "1 other MX" in f.message
    assert "mx-null" not in found
    assert "sts-mx-not-covered" not in found  # the null MX is not an MX host to cover


def test_dane_h_11_ip_literal_mx_is_an_error_and_never_a_dane_candidate() -> None:
    found = run(facts(mx=mx_answer("192.0.2.1"), hosts=[HostFacts("192.0.2.1", None, None, ())],
                      body=policy_body("192.0.2.1", "mx1.example.net")))
    one(found, "mx-ip-literal", "error", None)
    assert not {"dane-tlsa-missing", "dane-partial", "mx-invalid-name"} & set(found)


def test_duplicate_mx_host_is_a_warning() -> None:
    f = facts(mx=RRAnswer("ok", ((10, MX1), (20, MX1)), False, 300))
    found = run(f)
    assert one(found, "mx-duplicate", "warning").subject == MX1
    assert len(found["mx-duplicate"]) == 1


def test_invalid_placeholder_mx_is_an_error() -> None:
    placeholder = "example-com.msv1.invalid"
    found = run(facts(mx=mx_answer(placeholder), hosts=[host(placeholder, address_answer=addresses(
        status="nxdomain"))]))
    assert one(found, "mx-placeholder", "error").subject == placeholder
    one(found, "mx-no-address", "error")


def test_implicit_mx_when_the_domain_has_no_mx_records() -> None:
    f = facts(mx=RRAnswer("nodata", (), False), hosts=[host(DOMAIN, IP1)], body=policy_body(MX1))
    found = run(f)
    one(found, "mx-implicit", "warning", None)
    # the domain itself is the host: not matched against the policy's mx patterns
    assert "sts-mx-not-covered" not in found and "sts-pattern-unused" not in found


def test_dane_h_6_mx_lookup_failure_is_an_error_not_an_absence() -> None:
    found = run(facts(mx=mx_answer(status="error", error="SERVFAIL from 127.0.0.1"), hosts=[]))
    f = one(found, "mx-lookup-failed", "error", None)
    assert "SERVFAIL" in f.message
    assert not {"mx-implicit", "mx-domain-missing", "dnssec-unsigned"} & set(found)


def test_mx_nxdomain_is_a_missing_domain() -> None:
    found = run(facts(mx=mx_answer(status="nxdomain"), hosts=[]))
    one(found, "mx-domain-missing", "error")
    assert "mx-lookup-failed" not in found


def test_sts_e_2_cname_mx_is_noted_and_matched_by_its_own_name() -> None:
    found = run(facts(hosts=[host(MX1, IP1, canonical="mail.provider.example")]))
    assert "mail.provider.example" in one(found, "mx-cname", "warning").message
    assert "sts-mx-not-covered" not in found  # the policy names mx1.example.net, the MX record's name


def test_mx_address_problems() -> None:
    f = facts(mx=mx_answer(MX1, MX2),
              hosts=[host(MX1, address_answer=addresses(status="error", error="timeout")),
                     host(MX2, address_answer=addresses(status="nodata"))],
              body=policy_body(MX1, MX2))
    found = run(f)
    assert one(found, "mx-address-failed", "error").subject == MX1
    assert one(found, "mx-no-address", "error").subject == MX2


def test_private_mx_address_is_an_error() -> None:
    found = run(facts(hosts=[host(MX1, "10.1.2.3")], refused={(MX1, "10.1.2.3"): "private address"}))
    f = one(found, "mx-private-address", "error")
    assert "10.1.2.3" in f.message and "private" in f.message


def test_dnssec_status_of_mx_and_hosts() -> None:
    found = run(facts())
    one(found, "dnssec-unsigned", "info")
    found = run(facts(mx=mx_answer(MX1, secure=True), hosts=[host(MX1, IP1, secure=False)]))
    assert "dnssec-unsigned" not in found
    assert one(found, "dnssec-mx-host-unsigned", "info").subject == MX1


def test_more_mx_hosts_than_the_bound_is_said() -> None:
    names = [f"mx{i}.example.net" for i in range(12)]
    f = facts(mx=mx_answer(*names), body=policy_body("*.example.net"))
    found = by_code(judge(f, max_hosts=10, now=NOW))
    assert "12 MX hosts" in one(found, "check-limited", "info").message


# ========================================================================================= MTA-STS TXT


def test_sts_txt_missing_is_a_warning() -> None:
    found = run(facts(sts=None, sts_status="nxdomain"))
    one(found, "sts-txt-missing", "warning", None)
    assert not any(code.startswith(("sts-policy", "sts-mode")) for code in found)


def test_sts_b_1_policy_host_without_txt_record() -> None:
    found = run(facts(sts=None, sts_status="nodata", policy_host=addresses("192.0.2.80")))
    one(found, "sts-no-policy-host", "warning")
    assert "sts-txt-missing" not in found


def test_sts_a_9_several_sts_records_mean_no_policy() -> None:
    found = run(facts(sts=("v=STSv1; id=1", "v=STSv1; id=2")))
    one(found, "sts-txt-multiple", "error", None)
    assert not {"sts-mode-enforce", "sts-txt-unrelated", "sts-policy-invalid"} & set(found)


def test_sts_a_5_invalid_record_is_an_error() -> None:
    found = run(facts(sts=("v=STSv1; id=not-alnum!",)))
    f = one(found, "sts-txt-invalid", "error", None)
    assert "id" in f.message
    assert "sts-mode-enforce" not in found


def test_sts_a_8_unrelated_txt_records_are_only_a_warning() -> None:
    found = run(facts(sts=("v=STSv1; id=1", "v=spf1 -all", "v=STSv10; id=2")))
    f = one(found, "sts-txt-unrelated", "warning", None)
    assert "v=spf1" in f.message and "v=STSv10" in f.message
    one(found, "sts-mode-enforce", "info")  # the one real record still counts


def test_sts_a_8_only_unrelated_txt_records_is_no_record() -> None:
    found = run(facts(sts=("v=spf1 -all",)))
    one(found, "sts-txt-unrelated", "warning")
    one(found, "sts-txt-missing", "warning")


def test_sts_a_9_txt_lookup_failure_is_an_error() -> None:
    found = run(facts(sts=None, sts_status="error"))
    one(found, "sts-txt-lookup-failed", "error", None)
    assert "sts-txt-missing" not in found


def test_sts_a_13_record_with_a_remark() -> None:
    found = run(facts(sts=("v=STSv1; id=1; id=2",)))
    assert "duplicate" in one(found, "sts-txt-warning", "warning").message


def test_sts_a_12_cname_delegation_is_noted() -> None:
    found = run(facts(sts_cname="_mta-sts.provider.example"))
    f = one(found, "sts-txt-cname", "info")
    assert "_mta-sts.provider.example" in f.message and f"mta-sts.{DOMAIN}" in f.message


# ========================================================================================= policy fetch

FETCH_CODES = {
    "dns-error": "sts-policy-host-dns",
    "connect-error": "sts-policy-connect",
    "timeout": "sts-policy-timeout",
    "tls-error": "sts-policy-tls",
    "certificate-invalid": "sts-policy-certificate",
    "http-status": "sts-policy-status",
    "redirect": "sts-policy-redirect",
    "media-type": "sts-policy-media-type",
    "too-large": "sts-policy-too-large",
    "policy-invalid": "sts-policy-invalid",
    "address-refused": "sts-policy-address-refused",
}


def test_every_fetch_problem_is_mapped() -> None:
    assert set(FETCH_CODES) == {p.value for p in FetchProblem}


@pytest.mark.parametrize("problem", sorted(FETCH_CODES))
def test_fetch_problem_has_its_code_and_the_senders_result_type(problem: str) -> None:
    outcome = FetchOutcome(None, FetchProblem(problem), f"detail of {problem}", None, None, None)
    found = run(facts(fetch=outcome))
    code = FETCH_CODES[problem]
    f = one(found, code, "error", result_type_for(FetchProblem(problem)).value)
    assert f"detail of {problem}" in f.message
    assert not {"sts-mode-enforce", "sts-mx-not-covered"} & set(found)  # no policy: nothing more to judge


def test_sts_b_9_redirect_is_a_fetch_error() -> None:
    outcome = FetchOutcome(None, FetchProblem.REDIRECT, "HTTP 301 to https://elsewhere.example/")
    one(run(facts(fetch=outcome)), "sts-policy-redirect", "error", "sts-policy-fetch-error")


def test_sts_b_4_policy_host_certificate_is_webpki_invalid() -> None:
    outcome = FetchOutcome(None, FetchProblem.CERTIFICATE_INVALID, "certificate has expired")
    one(run(facts(fetch=outcome)), "sts-policy-certificate", "error", "sts-webpki-invalid")


def test_sts_b_2_wrong_media_type_is_policy_invalid() -> None:
    outcome = FetchOutcome(None, FetchProblem.MEDIA_TYPE, "Content-Type text/html")
    one(run(facts(fetch=outcome)), "sts-policy-media-type", "error", "sts-policy-invalid")


# ========================================================================================= policy content


def test_sts_c_1_policy_that_does_not_parse() -> None:
    found = run(facts(body="version: STSv2\r\nmode: enforce\r\nmx: mx1.example.net\r\nmax_age: 86400\r\n"))
    f = one(found, "sts-policy-invalid", "error", "sts-policy-invalid")
    assert "STSv1" in f.message
    assert "sts-mode-enforce" not in found


def test_sts_c_11_policy_with_a_remark() -> None:
    found = run(facts(body=policy_body(MX1) + "\r\n"))
    one(found, "sts-policy-warning", "warning")
    one(found, "sts-mode-enforce", "info")


def test_enforce_mx_not_covered_is_an_error() -> None:
    f = facts(mx=mx_answer(MX1, "backup.example.org"), body=policy_body(MX1))
    found = run(f)
    miss = one(found, "sts-mx-not-covered", "error", "validation-failure")
    assert miss.subject == "backup.example.org"
    assert len(found["sts-mx-not-covered"]) == 1


def test_sts_f_2_testing_mode_makes_mx_not_covered_a_warning() -> None:
    f = facts(mx=mx_answer(MX1, "backup.example.org"), body=policy_body(MX1, mode="testing"))
    found = run(f)
    one(found, "sts-mode-testing", "info")
    one(found, "sts-mx-not-covered", "warning", "validation-failure")


def test_sts_f_3_mode_none_checks_no_coverage() -> None:
    found = run(facts(mx=mx_answer("other.example.org"), body=policy_body(mode="none", max_age=60)))
    one(found, "sts-mode-none", "warning")
    assert not {"sts-mx-not-covered", "sts-pattern-unused", "sts-max-age-short"} & set(found)


def test_sts_e_3_wildcard_matches_exactly_one_label() -> None:
    f = facts(mx=mx_answer(MX1, "a.b.example.net"), body=policy_body("*.example.net"))
    found = run(f)
    misses = found["sts-mx-not-covered"]
    assert [m.subject for m in misses] == ["a.b.example.net"]  # mx1.example.net is covered, a.b is not
    assert "sts-pattern-unused" not in found


def test_sts_e_3_wildcard_does_not_cover_its_own_base_name() -> None:
    found = run(facts(mx=mx_answer("example.net"), body=policy_body("*.example.net")))
    assert one(found, "sts-mx-not-covered", "error").subject == "example.net"
    one(found, "sts-pattern-unused", "warning")


def test_unused_pattern_is_a_warning() -> None:
    found = run(facts(body=policy_body(MX1, "old-mx.example.net")))
    f = one(found, "sts-pattern-unused", "warning", None)
    assert f.subject == "old-mx.example.net"
    assert len(found["sts-pattern-unused"]) == 1


def test_broad_provider_wildcard_is_a_warning() -> None:
    host_name = "example-com.mail.protection.outlook.com"
    found = run(facts(mx=mx_answer(host_name), body=policy_body("*.mail.protection.outlook.com")))
    assert one(found, "sts-pattern-broad", "warning").subject == "*.mail.protection.outlook.com"
    assert "sts-mx-not-covered" not in found


def test_sts_d_11_short_max_age_is_a_warning() -> None:
    found = run(facts(body=policy_body(MX1, max_age=SHORT_MAX_AGE - 1)))
    one(found, "sts-max-age-short", "warning", None)
    assert "sts-max-age-short" not in run(facts(body=policy_body(MX1, max_age=SHORT_MAX_AGE)))


def test_good_enforce_policy_has_no_problems() -> None:
    found = run(facts())
    one(found, "sts-mode-enforce", "info")
    assert not [f for fs in found.values() for f in fs if f.severity != "info"], sorted(found)


# ========================================================================================= STARTTLS and PKIX


def test_starttls_not_offered() -> None:
    probe = failed_probe("starttls", "STARTTLS not offered in the EHLO reply", offered=False)
    found = run(facts(probes=[probe]))
    f = one(found, "smtp-starttls-missing", "error", "starttls-not-supported")
    assert f.subject == f"{MX1} [{IP1}]"
    assert "smtp-tls-ok" not in found


def test_starttls_offered_then_refused_is_starttls_missing() -> None:
    probe = failed_probe("starttls", "STARTTLS refused: 454 4.7.0 TLS not available", offered=True)
    f = one(run(facts(probes=[probe])), "smtp-starttls-missing", "error", "starttls-not-supported")
    assert "454" in f.message


def test_sts_b_16_handshake_failure_is_its_own_finding() -> None:
    probe = failed_probe("handshake", "TLS handshake failed: tlsv1 alert protocol version", offered=True)
    found = run(facts(probes=[probe]))
    f = one(found, "smtp-tls-failed", "error", "validation-failure")
    assert "older than 1.2" in f.message  # the hint for an MX stuck on old protocol versions
    assert "smtp-starttls-missing" not in found  # CD#138: never "not supported" for a handshake failure
    plain = one(run(facts(probes=[failed_probe("handshake", "TLS handshake failed: bad record mac",
                                               offered=True)])), "smtp-tls-failed")
    assert "older than 1.2" not in plain.message


def test_connection_failure_is_unreachable_without_result_type() -> None:
    probe = failed_probe("connect", f"{IP1}:25: connection refused")
    f = one(run(facts(probes=[probe])), "smtp-unreachable", "error", None)
    assert "connection refused" in f.message


def test_dane_h_39_tls_older_than_1_2_is_flagged() -> None:
    found = run(facts(probes=[ok_probe(pki().good, tls="TLSv1")]))
    one(found, "smtp-tls-old", "warning")
    one(found, "smtp-tls-ok", "info")
    assert "smtp-tls-old" not in run(facts(probes=[ok_probe(pki().good, tls="TLSv1.2")]))


def test_good_certificate_gives_only_tls_ok() -> None:
    found = run(facts(probes=[ok_probe(pki().good)]))
    one(found, "smtp-tls-ok", "info")
    assert not {c for c in found if c.startswith("smtp-certificate")}


@pytest.mark.parametrize(("cert", "code", "result_type"), [
    ("expired", "smtp-certificate-expired", "certificate-expired"),
    ("wrong_name", "smtp-certificate-host-mismatch", "certificate-host-mismatch"),
    ("untrusted", "smtp-certificate-untrusted", "certificate-not-trusted"),
])
@pytest.mark.parametrize("mode", ["enforce", "testing", None])
def test_pkix_failures_are_errors_only_under_enforce(cert: str, code: str, result_type: str,
                                                     mode: str | None) -> None:
    probe = ok_probe(getattr(pki(), cert))
    if mode is None:
        f = facts(sts=None, sts_status="nxdomain", probes=[probe])
    else:
        f = facts(body=policy_body(MX1, mode=mode), probes=[probe])
    found = run(f)
    finding = one(found, code, "error" if mode == "enforce" else "warning", result_type)
    assert finding.subject == f"{MX1} [{IP1}]"
    others = {"smtp-certificate-expired", "smtp-certificate-host-mismatch", "smtp-certificate-untrusted"} - {code}
    assert not others & set(found)


def test_untrusted_message_names_the_issuer_and_the_trust_store() -> None:
    f = one(run(facts(probes=[ok_probe(pki().untrusted)])), "smtp-certificate-untrusted")
    assert f"does not chain to a root in {STORE}" in f.message
    assert "issued by CN=check rules untrusted root" in f.message and "the the" not in f.message


def test_certificate_expiring_soon_is_a_warning() -> None:
    found = run(facts(probes=[ok_probe(pki().expiring)]))
    f = one(found, "smtp-certificate-expiring", "warning")
    assert "expires in 2 day" in f.message or "expires in 3 day" in f.message
    assert "smtp-certificate-expired" not in found
    assert "smtp-certificate-expiring" not in run(facts(probes=[ok_probe(pki().good)]))  # 30 days left
    assert EXPIRY_WARNING_DAYS > 3


def test_different_certificates_on_the_addresses_of_one_mx() -> None:
    f = facts(hosts=[host(MX1, IP1, IP2)],
              probes=[ok_probe(pki().good, address=IP1), ok_probe(pki().good_other_key, address=IP2)])
    found = run(f)
    assert one(found, "smtp-certificate-inconsistent", "warning").subject == MX1
    same = facts(hosts=[host(MX1, IP1, IP2)],
                 probes=[ok_probe(pki().good, address=IP1), ok_probe(pki().good, address=IP2)])
    assert "smtp-certificate-inconsistent" not in run(same)


def test_addresses_left_unprobed_by_the_bound_are_said() -> None:
    f = facts(hosts=[host(MX1, IP1, IP2)], probes=[ok_probe(pki().good, address=IP1)])
    assert "1 of its 2 addresses" in one(run(f), "check-limited", "info").message


# ========================================================================================= DANE


def dane_facts(*records, cert: bytes | None = None, mode: str = "enforce", secure_mx: bool = True,
               secure_tlsa: bool = True) -> DomainFacts:
    chain = cert if cert is not None else pki().good
    return facts(mx=mx_answer(MX1, secure=secure_mx), hosts=[dane_host(MX1, *records, secure_tlsa=secure_tlsa)],
                 body=policy_body(MX1, mode=mode), probes=[ok_probe(chain)])


def test_dane_h_23_matching_dane_ee_record_is_ok() -> None:
    found = run(dane_facts(r311(pki().good)))
    f = one(found, "dane-ok", "info")
    assert f.subject == f"{MX1} [{IP1}]"
    one(found, "dane-no-rollover", "info")
    assert not {"dane-mismatch", "dane-tlsa-missing", "dane-partial", "dnssec-unsigned"} & set(found)


def test_dane_h_23_two_keys_published_is_rollover_ready() -> None:
    found = run(dane_facts(r311(pki().good), r311(pki().good_other_key)))
    one(found, "dane-ok")
    assert "dane-no-rollover" not in found


def test_dane_h_22_mismatch_is_an_error() -> None:
    found = run(dane_facts(r311(pki().good_other_key)))
    one(found, "dane-mismatch", "error", "validation-failure")
    assert "dane-ok" not in found


def test_sts_g_1_dane_ok_with_webpki_failure_under_enforce() -> None:
    # DANE-EE ignores names and expiry; MTA-STS senders without DANE would still refuse this certificate
    found = run(dane_facts(r311(pki().untrusted), cert=pki().untrusted))
    one(found, "dane-ok", "info")
    one(found, "dane-sts-webpki", "warning")
    assert not {"smtp-certificate-untrusted", "smtp-certificate-expired",
                "smtp-certificate-host-mismatch"} & set(found)


def test_sts_g_1_dane_ok_with_webpki_failure_under_testing_is_quiet() -> None:
    found = run(dane_facts(r311(pki().wrong_name), cert=pki().wrong_name, mode="testing"))
    one(found, "dane-ok")
    assert not {"dane-sts-webpki", "smtp-certificate-host-mismatch"} & set(found)


def test_dane_mismatch_does_not_hide_webpki_failures() -> None:
    found = run(dane_facts(r311(pki().good), cert=pki().expired))
    one(found, "dane-mismatch", "error")
    one(found, "smtp-certificate-expired", "error", "certificate-expired")


def test_dane_h_18_only_unusable_tlsa_records() -> None:
    pkix_ee = tlsa_for_certificate(pki().good, 1, 1, 1)  # PKIX-EE(1): not used for SMTP
    found = run(dane_facts(pkix_ee))
    one(found, "dane-tlsa-unusable", "error", "tlsa-invalid")
    one(found, "dane-tlsa-record-unusable", "warning")
    assert not {"dane-ok", "dane-mismatch", "dane-no-rollover"} & set(found)


def test_dane_h_20_unusable_record_next_to_a_usable_one() -> None:
    found = run(dane_facts(r311(pki().good), tlsa_for_certificate(pki().good, 0, 1, 1)))
    one(found, "dane-ok")
    assert "PKIX-TA" in one(found, "dane-tlsa-record-unusable", "warning").message
    assert "dane-tlsa-unusable" not in found


def test_dane_h_36_digest_agility_is_not_an_unusable_record() -> None:
    found = run(dane_facts(r311(pki().good), tlsa_for_certificate(pki().good, 3, 1, 2)))
    one(found, "dane-ok")
    assert "dane-tlsa-record-unusable" not in found


def test_dane_h_36_full_certificate_pin_is_discouraged() -> None:
    found = run(dane_facts(tlsa_for_certificate(pki().good, 3, 0, 1)))
    one(found, "dane-cert-full", "warning")
    one(found, "dane-ok")


def test_dane_h_17_partial_tlsa_coverage() -> None:
    f = facts(mx=mx_answer(MX1, MX2, secure=True),
              hosts=[dane_host(MX1, r311(pki().good)),
                     host(MX2, IP2, secure=True, tlsa=RRAnswer("nodata", (), True))],
              body=policy_body(MX1, MX2))
    found = run(f)
    f = one(found, "dane-partial", "warning")
    assert MX1 in f.message and MX2 in f.message
    assert one(found, "dane-tlsa-missing", "info").subject == MX2


def test_dane_h_5_signed_host_without_tlsa() -> None:
    f = facts(mx=mx_answer(MX1, secure=True), hosts=[host(MX1, IP1, secure=True, tlsa=RRAnswer("nxdomain", (),
                                                                                                 True))])
    found = run(f)
    one(found, "dane-tlsa-missing", "info")
    assert "dane-partial" not in found and "dane-tlsa-lookup-failed" not in found


def test_dane_h_3_insecure_tlsa_records_are_ignored() -> None:
    found = run(dane_facts(r311(pki().good_other_key), secure_tlsa=False))
    one(found, "dane-tlsa-insecure", "warning")
    assert not {"dane-ok", "dane-mismatch", "dane-tlsa-missing"} & set(found)  # not used at all


def test_dane_h_9_tlsa_under_unsigned_addresses_is_ignored() -> None:
    answer = tlsa_answer(r311(pki().good), secure=False)
    f = facts(mx=mx_answer(MX1, secure=True), hosts=[host(MX1, IP1, secure=False)], unused_tlsa={MX1: answer})
    found = run(f)
    assert "senders ignore" in one(found, "dane-tlsa-insecure", "warning").message
    one(found, "dnssec-mx-host-unsigned", "info")


def test_dane_h_4_tlsa_lookup_failure_in_a_signed_zone() -> None:
    failing = RRAnswer("error", (), False, None, "SERVFAIL")
    f = facts(mx=mx_answer(MX1, secure=True), hosts=[host(MX1, IP1, secure=True, tlsa=failing)])
    found = run(f)
    f = one(found, "dane-tlsa-lookup-failed", "error", "dnssec-invalid")
    assert "SERVFAIL" in f.message
    assert "dane-tlsa-missing" not in found


def test_dane_h_6_unsigned_mx_means_the_hosts_tlsa_records_are_not_used() -> None:
    found = run(dane_facts(r311(pki().good_other_key), secure_mx=False))
    one(found, "dane-mx-insecure", "warning")
    one(found, "dnssec-unsigned", "info")
    assert not {"dane-ok", "dane-mismatch", "dane-no-rollover", "dane-partial"} & set(found)


# ========================================================================================= TLSRPT


def test_rpt_i_1_missing_record_is_a_warning() -> None:
    found = run(facts(tlsrpt=None, tlsrpt_status="nxdomain"))
    one(found, "tlsrpt-missing", "warning", None)
    assert "tlsrpt-ok" not in found


def test_rpt_i_1_lookup_failure() -> None:
    one(run(facts(tlsrpt=None, tlsrpt_status="error")), "tlsrpt-lookup-failed", "error")


def test_rpt_i_1_valid_record() -> None:
    found = run(facts())
    assert "mailto:tlsrpt@example.com" in one(found, "tlsrpt-ok", "info").message
    assert not {c for c in found if c.startswith("tlsrpt-") and c != "tlsrpt-ok"}


def test_rpt_i_6_several_records_mean_no_reports() -> None:
    found = run(facts(tlsrpt=(RUA, "v=TLSRPTv1; rua=mailto:other@example.com")))
    one(found, "tlsrpt-multiple", "error", None)
    assert "tlsrpt-ok" not in found


def test_rpt_i_2_invalid_record() -> None:
    found = run(facts(tlsrpt=("v=TLSRPTv1; ruf=mailto:a@example.com",)))
    one(found, "tlsrpt-invalid", "error", None)


def test_rpt_i_2_near_miss_is_invalid_not_missing() -> None:
    found = run(facts(tlsrpt=("v=tlsrptv1; rua=mailto:tlsrpt@example.com",)))
    one(found, "tlsrpt-invalid", "error")
    assert "tlsrpt-missing" not in found


def test_rpt_i_3_missing_mailto_prefix() -> None:
    found = run(facts(tlsrpt=("v=TLSRPTv1; rua=tlsrpt@example.com",)))
    one(found, "tlsrpt-rua-no-mailto", "error", None)
    # next to a good URI the record parses, but the bad entry is still an error
    found = run(facts(tlsrpt=("v=TLSRPTv1; rua=mailto:a@example.com,tlsrpt@example.com",)))
    one(found, "tlsrpt-rua-no-mailto", "error")
    one(found, "tlsrpt-ok", "info")


def test_rpt_i_11_unsupported_scheme() -> None:
    found = run(facts(tlsrpt=("v=TLSRPTv1; rua=mailto:a@example.com,ftp://reports.example.com/in",)))
    assert "ftp" in one(found, "tlsrpt-rua-scheme", "warning").message
    one(found, "tlsrpt-ok")


def test_rpt_i_11_no_usable_address_is_an_error() -> None:
    found = run(facts(tlsrpt=("v=TLSRPTv1; rua=ftp://reports.example.com/in",)))
    one(found, "tlsrpt-rua-scheme", "warning")
    assert any(f.severity == "error" for f in found.get("tlsrpt-warning", []))
    assert "tlsrpt-ok" not in found


def test_rua_domain_without_mail_exchanger() -> None:
    found = run(facts(rua_mx={"example.com": mx_answer(status="nxdomain")}))
    assert one(found, "tlsrpt-rua-no-mx", "warning").subject == "example.com"
    found = run(facts(rua_mx={"example.com": mx_answer("")}))  # null MX
    one(found, "tlsrpt-rua-no-mx", "warning")
    assert "tlsrpt-rua-no-mx" not in run(facts())


def test_tlsrpt_without_sts_or_dane() -> None:
    found = run(facts(sts=None, sts_status="nxdomain"))
    one(found, "tlsrpt-no-policy", "info")
    assert "tlsrpt-no-policy" not in run(facts())  # MTA-STS present
    # a failing fetch is still an MTA-STS deployment: reports would carry sts-policy-fetch-error
    failing = FetchOutcome(None, FetchProblem.HTTP_STATUS, "HTTP 404")
    assert "tlsrpt-no-policy" not in run(facts(fetch=failing))
    dane_only = facts(sts=None, sts_status="nxdomain", mx=mx_answer(MX1, secure=True),
                      hosts=[dane_host(MX1, r311(pki().good))])
    assert "tlsrpt-no-policy" not in run(dane_only)


# ========================================================================================= robustness

# mostly well-formed building blocks (so every area gets exercised), some arbitrary text
_TXT = st.one_of(st.sampled_from(["v=STSv1; id=1", "v=STSv1; id=2", "v=STSv1;", "v=STSv1; id=!", "v=spf1 -all",
                                  "v=STSv10; id=1", "<script>\x1b[2J", ""]), st.just("v=STSv1; id=1"),
                 st.text(max_size=40))
_RPT = st.one_of(st.sampled_from([RUA, "v=TLSRPTv1; rua=x@y", "v=TLSRPTv1; rua=ftp://a/",
                                  "v=tlsrptv1; rua=mailto:a@b.c", "v=TLSRPTv1;"]), st.just(RUA),
                 st.text(max_size=40))
_HOSTS = st.sampled_from([MX1, MX2, "", "192.0.2.1", "x.msv1.invalid", "a.b.example.net", "-bad-.example",
                          DOMAIN])
_STATUS = st.sampled_from(["ok", "ok", "ok", "nodata", "nxdomain", "error"])
_BODY = st.sampled_from([policy_body(MX1), policy_body("*.example.net", mode="testing", max_age=60),
                         policy_body(mode="none", max_age=0), "version: STSv1\n", "\xff\xfe", b"\x00\x01"]) \
    | st.binary(max_size=60)


@st.composite
def _facts(draw) -> DomainFacts:
    w = pki()
    mx_names = draw(st.lists(_HOSTS, max_size=4))
    secure = draw(st.booleans())
    mx = RRAnswer(draw(_STATUS), tuple((i, h) for i, h in enumerate(mx_names)), secure)
    certs = [w.good, w.expired, w.wrong_name, w.untrusted, w.expiring, b"\x30\x03junk"]
    hosts = []
    for name in dict.fromkeys(h for h in mx_names if h):
        tlsa = None
        if draw(st.booleans()):
            records = draw(st.lists(st.sampled_from([(3, 1, 1, r311(w.good).data), (1, 1, 1, b"\x00" * 32),
                                                     (3, 0, 0, b"junk"), (2, 1, 1, r311(w.good).data),
                                                     (9, 9, 9, b"")]), max_size=3))
            tlsa = RRAnswer(draw(_STATUS), tuple(records), secure or draw(st.booleans()), None,
                            draw(st.none() | st.text(max_size=10)))
        answer = AddressAnswer(draw(_STATUS), tuple(draw(st.lists(st.sampled_from([IP1, IP2, "::1"]),
                                                                  min_size=1, max_size=2, unique=True))),
                               None, secure or draw(st.booleans()), draw(st.none() | _HOSTS))
        hosts.append(HostFacts(name, answer, tlsa, draw(st.sampled_from([None, (name,), ()])),
                               draw(st.none() | st.just(name))))
    f = facts(mx=mx, hosts=hosts, sts=tuple(draw(st.lists(_TXT, max_size=3))), sts_status=draw(_STATUS),
              body=draw(_BODY), tlsrpt=tuple(draw(st.lists(_RPT, max_size=3))), tlsrpt_status=draw(_STATUS),
              sts_cname=draw(st.none() | st.just("_mta-sts.provider.example")))
    if draw(st.booleans()) and f.fetch is not None:
        f.fetch = FetchOutcome(None, draw(st.sampled_from(list(FetchProblem))), draw(st.text(max_size=20)))
        f.policy = None
    for h in hosts:
        for address in getattr(h.addresses, "addresses", ()):
            if draw(st.booleans()):
                cert = draw(st.sampled_from(certs))
                probe = draw(st.sampled_from([
                    SmtpProbe(address, 25, h.host, "c.example", tls_version=draw(st.sampled_from(
                        ["TLSv1.3", "TLSv1", None])), chain=(cert,), pkix=check_pkix(
                        [cert], [h.host], [w.ca.cert], now=NOW)),
                    SmtpProbe(address, 25, h.host, "c.example", stage="connect", error=draw(st.text(max_size=20))),
                    SmtpProbe(address, 25, h.host, "c.example", stage="starttls", error="x", starttls_offered=False),
                    SmtpProbe(address, 25, h.host, "c.example", stage="handshake", error=None),
                    SmtpProbe(address, 25, h.host, "c.example", chain=(), pkix=None),
                ]))
                f.probes[(h.host, address)] = probe
                f.smtp_checked = True
    return f


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_facts())
def test_judge_never_raises_and_uses_only_catalogue_codes(f: DomainFacts) -> None:
    findings = judge(f, now=NOW)
    for item in findings:
        spec = CATALOGUE[item.code]
        assert item.severity in ("error", "warning", "info")
        assert item.requirement == spec.requirement and item.fix == spec.fix
        assert isinstance(item.message, str) and item.message


def test_sts_e_11_each_mx_mismatch_has_its_tlsrpt_result_type() -> None:
    """RFC 8461 App. B: MX name not in the policy, no STARTTLS, certificate not valid — each is reported with
    the RFC 8460 result type a sending MTA would use."""
    p = pki()
    body = policy_body(MX1)
    cases = [
        (facts(mx=mx_answer(MX1, "backup.example.org"), body=body), "sts-mx-not-covered", "validation-failure"),
        (facts(probes=[failed_probe("starttls", "not offered", offered=False)], body=body),
         "smtp-starttls-missing", "starttls-not-supported"),
        (facts(probes=[ok_probe(p.wrong_name)], body=body), "smtp-certificate-host-mismatch",
         "certificate-host-mismatch"),
        (facts(probes=[ok_probe(p.expired)], body=body), "smtp-certificate-expired", "certificate-expired"),
        (facts(probes=[ok_probe(p.untrusted)], body=body), "smtp-certificate-untrusted", "certificate-not-trusted"),
    ]
    for f, code, result_type in cases:
        one(run(f), code, "error", result_type)



def test_policy_host_certificate_expiring_soon_is_a_warning() -> None:  # STS-B-4
    """The fetch records when the policy host's certificate expires; under 14 days left is a warning, since
    senders cannot fetch the policy once it has expired."""
    soon = FetchOutcome(policy_body(MX1).encode(), None, "HTTP 200", 200, "text/plain", "192.0.2.80",
                        NOW.timestamp() + 5 * 86400 + 60)
    f = one(run(facts(fetch=soon)), "sts-policy-certificate-expiring", "warning")
    assert f"mta-sts.{DOMAIN}: the certificate expires in 5 day(s)" in f.message
    later = FetchOutcome(policy_body(MX1).encode(), None, "HTTP 200", 200, "text/plain", "192.0.2.80",
                         NOW.timestamp() + 60 * 86400)
    assert "sts-policy-certificate-expiring" not in run(facts(fetch=later))
    assert "sts-policy-certificate-expiring" not in run(facts())  # not known: no finding
