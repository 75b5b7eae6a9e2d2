"""What the daemon served, as recorded for the log followers, and how a logged attempt becomes a session."""

from __future__ import annotations

from datetime import UTC, datetime

from mxsec.dane.destination import DaneDecision, HostState
from mxsec.sts.policy import parse_policy
from mxsec.results import ResultType
from mxsec.tlsrpt.attempt import Attempt, TlsOutcome
from mxsec.tlsrpt.served import ServedPolicy, served_from_verdict, session_for_attempt
from mxsec.tlsrpt.session import Failure, Policy, PolicyType
from mxsec.verdict import Verdict

POLICY = parse_policy("version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.backup.example.com\nmax_age: 86400\n")
TLSA = ("3 1 1 " + "AB" * 32,)


def attempt(host: str = "mx1.example.com", result: ResultType | None = None, tls: TlsOutcome = TlsOutcome.VERIFIED,
            reason: str | None = None) -> Attempt:
    return Attempt(datetime(2026, 12, 1, 12, tzinfo=UTC), "postfix", "ABC123", "example.com", 1, host, "192.0.2.25",
                   tls, False, result, reason, None)


def test_sts_enforce_verdict_is_recorded_with_lines_and_patterns_and_round_trips():
    served = served_from_verdict(Verdict("example.com", policy=POLICY, source="fetched"))
    assert served.sts == Policy(PolicyType.STS, "example.com", POLICY.lines, ("mx1.example.com", "*.backup.example.com"))
    assert served.sts_mode == "enforce" and served.sts_failure is None
    assert ServedPolicy.from_json(served.to_json()) == served
    assert served.fingerprint() == ServedPolicy.from_json(served.to_json()).fingerprint()


def test_rpt_i_43_ec_38_dane_hosts_become_tlsa_policies_of_their_base_domain():
    decision = DaneDecision("dane-only", "all MX hosts have usable TLSA", hosts=(
        HostState("mx1.example.com", "usable", base="mx1.example.com", tlsa=TLSA),
        HostState("alias.example.com", "usable", base="real.example.net", tlsa=TLSA),
        HostState("mx3.example.com", "no-tlsa")), secure_mx=True)
    served = served_from_verdict(Verdict("example.com", dane=decision))
    assert served.dane_level == "dane-only"
    assert served.tlsa == {"mx1.example.com": Policy(PolicyType.TLSA, "mx1.example.com", TLSA),
                           "alias.example.com": Policy(PolicyType.TLSA, "real.example.net", TLSA)}
    session = session_for_attempt(attempt("alias.example.com"), served, record="v=TLSRPTv1; rua=mailto:r@example.com")
    (outcome,) = session.outcomes
    assert outcome.policy.domain == "real.example.net" and not outcome.failed
    assert session.domain == "example.com"  # the report still goes to the recipient domain


def test_dane_wins_over_sts_for_hosts_with_tlsa_and_sts_applies_to_the_others():
    served = ServedPolicy("example.com", sts=Policy(PolicyType.STS, "example.com", POLICY.lines, POLICY.mx),
                          sts_mode="enforce", tlsa={"mx1.example.com": Policy(PolicyType.TLSA, "mx1.example.com", TLSA)})
    assert session_for_attempt(attempt("mx1.example.com"), served).outcomes[0].policy.type is PolicyType.TLSA
    assert session_for_attempt(attempt("mx2.backup.example.com"), served).outcomes[0].policy.type is PolicyType.STS


def test_a_logged_tls_failure_becomes_a_failed_session_with_its_detail():
    served = served_from_verdict(Verdict("example.com", policy=POLICY, source="cache"))
    session = session_for_attempt(attempt(result=ResultType.CERTIFICATE_EXPIRED, tls=TlsOutcome.UNTRUSTED,
                                          reason="certificate has expired"), served, sending_ip="198.51.100.7")
    (outcome,) = session.outcomes
    assert outcome.failed
    assert outcome.failures == (Failure("certificate-expired", "198.51.100.7", "mx1.example.com", None,
                                        "192.0.2.25", None, "certificate has expired"),)


def test_ec_36_no_policy_found_and_clear_text_is_starttls_not_supported():
    plain = session_for_attempt(attempt(tls=TlsOutcome.NONE), None)
    (outcome,) = plain.outcomes
    assert outcome.policy == Policy(PolicyType.NO_POLICY_FOUND, "example.com")
    assert outcome.failed and outcome.failures[0].result_type == "starttls-not-supported"
    good = session_for_attempt(attempt(), ServedPolicy("example.com"))
    assert good.outcomes[0].policy.type is PolicyType.NO_POLICY_FOUND and not good.outcomes[0].failed


def test_policy_fetch_failure_is_reported_under_an_sts_policy():
    served = served_from_verdict(Verdict("example.com", failure=ResultType.STS_POLICY_FETCH_ERROR))
    assert served.sts is None and served.sts_failure == "sts-policy-fetch-error"
    (outcome,) = session_for_attempt(attempt(), served).outcomes
    assert outcome.policy == Policy(PolicyType.STS, "example.com")
    assert outcome.failed and [f.result_type for f in outcome.failures] == ["sts-policy-fetch-error"]


def test_testing_mode_is_recorded_and_none_mode_is_not_a_policy():
    testing = parse_policy("version: STSv1\nmode: testing\nmx: mx1.example.com\nmax_age: 86400\n")
    none = parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n")
    assert served_from_verdict(Verdict("example.com", policy=testing)).sts_mode == "testing"
    assert served_from_verdict(Verdict("example.com", policy=none)).sts is None


def test_rpt_i_39_failure_reason_code_is_kept_for_trust_and_validation_failures():
    served = served_from_verdict(Verdict("example.com", policy=POLICY))
    for result, reason in ((ResultType.CERTIFICATE_NOT_TRUSTED, "self-signed certificate"),
                           (ResultType.VALIDATION_FAILURE, "num=65:no matching DANE TLSA records")):
        (outcome,) = session_for_attempt(attempt(result=result, tls=TlsOutcome.UNTRUSTED, reason=reason),
                                         served).outcomes
        assert [(f.result_type, f.failure_reason_code) for f in outcome.failures] == [(str(result), reason)]


def test_postfix_310_no_policy_sessions_carry_the_daemons_fetch_failure():
    from datetime import date

    from mxsec.tlsrpt.served import with_fetch_failures
    from mxsec.tlsrpt.session import PolicyOutcome, Session, Tally

    day = date(2026, 12, 1)
    tally = Tally()
    none_policy = Policy(PolicyType.NO_POLICY_FOUND, "broken.example")
    for _ in range(3):
        tally.add(Session("broken.example", (PolicyOutcome(none_policy, False),)), day)
    tally.add(Session("broken.example", (PolicyOutcome(none_policy, True, (Failure("starttls-not-supported"),)),)), day)
    tally.add(Session("fine.example", (PolicyOutcome(Policy(PolicyType.NO_POLICY_FOUND, "fine.example"), False),)), day)
    served = {"broken.example": ServedPolicy("broken.example", sts_failure="sts-webpki-invalid"),
              "fine.example": ServedPolicy("fine.example")}
    out = with_fetch_failures(tally, served.get)
    counts = {(k.domain, k.policy.type.value): c for k, c in out.items()}
    broken = counts[("broken.example", "sts")]
    assert (broken.successful, broken.failed) == (0, 4)
    assert broken.failures == {Failure("starttls-not-supported"): 1, Failure("sts-webpki-invalid"): 4}
    assert (counts[("fine.example", "no-policy-found")].successful, len(counts)) == (1, 2)
    assert out.sessions == tally.sessions == 5


TESTING = parse_policy("version: STSv1\nmode: testing\nmx: mx1.example.com\nmax_age: 86400\n")


def test_sts_f_6_testing_mode_failures_are_judged_from_the_log_and_the_certificate():
    """RFC 8461 §5: testing-mode domains get their failures reported although the mail is delivered."""
    served = served_from_verdict(Verdict("example.com", policy=TESTING))

    def judge(a: Attempt, judged=None) -> list[tuple[str, str | None]]:
        (outcome,) = session_for_attempt(a, served, judged=judged).outcomes
        return [(f.result_type, f.failure_reason_code) for f in outcome.failures]

    assert judge(attempt("mx9.example.com")) == [
        ("validation-failure", "MX host mx9.example.com matches no mx pattern of the policy")]
    assert judge(attempt(tls=TlsOutcome.NONE)) == [("starttls-not-supported", "delivered without TLS")]
    assert judge(attempt(tls=TlsOutcome.ANONYMOUS)) == [("certificate-not-trusted", "anonymous TLS connection")]
    assert judge(attempt(tls=TlsOutcome.UNTRUSTED)) == [("certificate-not-trusted", "untrusted TLS connection")]
    assert judge(attempt(tls=TlsOutcome.VERIFIED)) == []
    assert judge(attempt(tls=TlsOutcome.TRUSTED)) == []  # the log cannot tell, nothing judged: not a failure
    mismatch = ("certificate-host-mismatch", "the certificate does not name mx1.example.com")
    assert judge(attempt(tls=TlsOutcome.TRUSTED), mismatch) == [mismatch]
    assert judge(attempt(tls=TlsOutcome.UNTRUSTED), mismatch) == [mismatch]  # the look says more than the log
    assert judge(attempt(tls=TlsOutcome.TRUSTED), (None, None)) == []
    # enforce: the MTA enforced and logged; nothing is judged on top
    enforce = served_from_verdict(Verdict("example.com", policy=POLICY))
    assert session_for_attempt(attempt(tls=TlsOutcome.TRUSTED), enforce, judged=mismatch).outcomes[0].failures == ()
