"""What ``mxsec check`` can find: one catalogue of stable codes. Sans-I/O.

Every finding the checker emits comes from :data:`CATALOGUE`, so a code always has the same severity, RFC 8460
result type (what a sending MTA would report for this problem, ``None`` when a sender reports nothing), the
requirement ID from ``docs/reference/requirements.md`` and a fix. ``docs/check.md`` lists the same codes; a unit
test keeps both in step. Codes never change meaning; new ones may be added.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATALOGUE", "Finding", "Spec", "finding"]

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True, slots=True)
class Spec:
    severity: str
    result_type: str | None
    requirement: str | None
    title: str
    fix: str


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: str
    message: str
    result_type: str | None
    requirement: str | None
    fix: str
    #: what the finding is about, when narrower than the domain: an MX host, ``host [address]``, a URI
    subject: str | None = None

    def to_json(self) -> dict:
        out = {"code": self.code, "severity": self.severity, "message": self.message,
               "result_type": self.result_type, "requirement": self.requirement, "fix": self.fix}
        if self.subject is not None:
            out["subject"] = self.subject
        return out


def finding(code: str, message: str, subject: str | None = None, *, severity: str | None = None) -> Finding:
    """A finding of catalogue entry ``code`` (``severity`` may be lowered/raised for context, e.g. mode)."""
    spec = CATALOGUE[code]
    return Finding(code, severity or spec.severity, message, spec.result_type, spec.requirement, spec.fix, subject)


_FETCH = "sts-policy-fetch-error"
_WEBPKI = "sts-webpki-invalid"
_POLICY = "sts-policy-invalid"

CATALOGUE: dict[str, Spec] = {
    # --- MX ------------------------------------------------------------------------------------------------
    "mx-lookup-failed": Spec(ERROR, None, "DANE-H-6", "the MX lookup failed (SERVFAIL, timeout, bogus DNSSEC)",
                             "Fix the zone's name servers or DNSSEC; senders defer mail while this lasts."),
    "mx-domain-missing": Spec(ERROR, None, None, "the domain does not exist (NXDOMAIN)",
                              "Check the spelling, or publish the domain."),
    "mx-implicit": Spec(WARNING, None, None, "no MX records: mail goes to the domain's own A/AAAA (RFC 5321 §5.1)",
                        "Publish an explicit MX record, or a null MX (\"0 .\") if the domain takes no mail."),
    "mx-null": Spec(INFO, None, None, "null MX: the domain accepts no mail (RFC 7505)",
                    "Nothing to do if the domain should receive no mail; MTA-STS and DANE do not apply."),
    "mx-null-mixed": Spec(ERROR, None, None, "a null MX next to other MX records",
                          "A null MX must be the only MX record (RFC 7505 §3); remove it or the others."),
    "mx-ip-literal": Spec(ERROR, None, "DANE-H-11", "an MX record holds an IP address instead of a host name",
                          "MX targets must be host names with A/AAAA records (RFC 5321 §5.1)."),
    "mx-invalid-name": Spec(ERROR, None, None, "an MX target is not a valid host name",
                            "Point the MX at a valid host name."),
    "mx-cname": Spec(WARNING, None, "STS-E-2", "an MX target is a CNAME",
                     "RFC 5321 §5.1 wants MX targets with A/AAAA directly; MTA-STS matches and checks the "
                     "certificate against the MX name, DANE may use the CNAME target's TLSA records."),
    "mx-duplicate": Spec(WARNING, None, None, "the same MX host appears more than once",
                         "Remove the duplicate MX record."),
    "mx-no-address": Spec(ERROR, None, None, "an MX host has no A/AAAA records",
                          "Publish A and/or AAAA records for the MX host."),
    "mx-address-failed": Spec(ERROR, None, "DANE-H-4", "the address lookup of an MX host failed",
                              "Fix the MX host zone's name servers or DNSSEC."),
    "mx-private-address": Spec(ERROR, None, None, "an MX host resolves to a private, loopback or reserved address",
                               "Publish the MX host's public address."),
    "mx-placeholder": Spec(ERROR, None, None, "an MX target is a provider's verification placeholder",
                           "Replace the placeholder (e.g. *.msv1.invalid) with the provider's real MX host."),
    # --- DNSSEC --------------------------------------------------------------------------------------------
    "dnssec-unsigned": Spec(INFO, None, "DANE-H-6", "the domain's MX records are not DNSSEC-signed: DANE cannot apply",
                            "Sign the zone (and publish the DS) to make DANE possible."),
    "dnssec-mx-host-unsigned": Spec(INFO, None, "DANE-H-9", "an MX host's address records are not DNSSEC-signed",
                                    "Sign the MX host's zone to let senders use its TLSA records."),
    # --- the checker itself ----------------------------------------------------------------------------------
    "check-limited": Spec(INFO, None, None, "only part of the MX hosts or addresses were examined (the checker's "
                                            "bounds)",
                          "Nothing to do: the first MX hosts in preference order and the first addresses of each "
                          "were checked."),
    "check-failed": Spec(ERROR, None, None, "the checker could not finish this domain (an internal error)",
                         "Run the check again; if it persists, report the message as an mxsec bug. The other "
                         "domains were checked."),
    # --- MTA-STS TXT -------------------------------------------------------------------------------------
    "sts-txt-missing": Spec(WARNING, None, "STS-A-1", "no MTA-STS TXT record: senders apply no MTA-STS policy",
                            "Publish _mta-sts.DOMAIN TXT \"v=STSv1; id=...\" (mxsec generate sts-txt) and a policy."),
    "sts-txt-lookup-failed": Spec(ERROR, None, "STS-A-9", "the _mta-sts TXT lookup failed",
                                  "Fix the name servers; senders treat the domain as having no policy meanwhile."),
    "sts-txt-multiple": Spec(ERROR, None, "STS-A-9", "more than one v=STSv1 TXT record: senders see no policy",
                             "Keep exactly one v=STSv1 record at _mta-sts."),
    "sts-txt-invalid": Spec(ERROR, None, "STS-A-5", "the v=STSv1 TXT record does not parse: senders see no policy",
                            "Write it as v=STSv1; id=ID with ID 1-32 letters and digits (mxsec generate sts-txt)."),
    "sts-txt-unrelated": Spec(WARNING, None, "STS-A-8", "other TXT records at _mta-sts (ignored by senders)",
                              "Remove TXT records that are not MTA-STS records from _mta-sts (a wildcard TXT?)."),
    "sts-txt-cname": Spec(INFO, None, "STS-A-12", "the _mta-sts record is delegated by CNAME",
                          "Nothing to do: senders follow it. Keep the policy host's certificate in step."),
    "sts-txt-warning": Spec(WARNING, None, "STS-A-13", "the MTA-STS TXT record parses with a remark",
                            "Clean the record up as the message says (mxsec generate sts-txt writes a canonical one)."),
    "sts-no-policy-host": Spec(WARNING, None, "STS-B-1", "a policy host exists but no _mta-sts TXT record",
                               "Publish the TXT record, or senders never fetch the policy."),
    # --- MTA-STS policy fetch (RFC 8461 §3.3) ---------------------------------------------------------------
    "sts-policy-host-dns": Spec(ERROR, _FETCH, "STS-B-1", "mta-sts.DOMAIN does not resolve",
                                "Publish A/AAAA records for mta-sts.DOMAIN."),
    "sts-policy-connect": Spec(ERROR, _FETCH, "STS-B-1", "no HTTPS connection to the policy host",
                               "Make mta-sts.DOMAIN answer HTTPS on port 443."),
    "sts-policy-timeout": Spec(ERROR, _FETCH, "STS-B-12", "the policy fetch timed out",
                               "Make the policy host answer promptly."),
    "sts-policy-tls": Spec(ERROR, _FETCH, "STS-B-16", "TLS with the policy host failed (TLS 1.2 or later needed)",
                           "Offer TLS 1.2 or 1.3 on the policy host."),
    "sts-policy-certificate": Spec(ERROR, _WEBPKI, "STS-B-4",
                                   "the policy host's certificate is not valid for mta-sts.DOMAIN",
                                   "Install a certificate from a public CA, unexpired, with mta-sts.DOMAIN in its "
                                   "subjectAltName (a wildcard for DOMAIN works)."),
    "sts-policy-certificate-expiring": Spec(WARNING, None, "STS-B-4", "the policy host's certificate expires soon",
                                            "Renew it (mxsec serve-policy --acme-directory renews by itself); "
                                            "once it has expired, senders cannot fetch the policy."),
    "sts-policy-status": Spec(ERROR, _FETCH, "STS-B-8", "the policy URL does not answer 200",
                              "Serve the policy at https://mta-sts.DOMAIN/.well-known/mta-sts.txt with status 200."),
    "sts-policy-redirect": Spec(ERROR, _FETCH, "STS-B-9", "the policy URL redirects (senders never follow)",
                                "Serve the file directly at that URL; no redirect (mxsec generate nginx|apache)."),
    "sts-policy-media-type": Spec(ERROR, _POLICY, "STS-B-2", "the policy is not served as text/plain",
                                  "Serve the file with Content-Type: text/plain."),
    "sts-policy-too-large": Spec(ERROR, _FETCH, "STS-B-12", "the policy file is larger than 64 KiB",
                                 "A policy is a few lines; serve only the policy file."),
    "sts-policy-invalid": Spec(ERROR, _POLICY, "STS-C-1", "the policy file does not parse",
                               "Fix the policy (mxsec generate sts-policy writes a valid one)."),
    "sts-policy-address-refused": Spec(ERROR, _FETCH, None,
                                       "the policy host resolves to a private, loopback or reserved address",
                                       "Publish the policy host's public address."),
    "sts-policy-warning": Spec(WARNING, None, "STS-C-11", "the policy parses with a remark",
                               "Clean the policy up as the message says (mxsec generate sts-policy writes a "
                               "canonical one)."),
    # --- MTA-STS policy content -----------------------------------------------------------------------------
    "sts-mode-enforce": Spec(INFO, None, "STS-F-1", "MTA-STS policy in enforce mode", "Nothing to do."),
    "sts-mode-testing": Spec(INFO, None, "STS-F-2", "MTA-STS policy in testing mode: failures are only reported",
                             "Once TLSRPT reports are clean, switch to mode: enforce."),
    "sts-mode-none": Spec(WARNING, None, "STS-F-3", "MTA-STS policy in mode none: no protection",
                          "Switch to testing, then enforce (mode none is meant for withdrawing a policy)."),
    "sts-max-age-short": Spec(WARNING, None, "STS-D-11", "max_age is short: little protection against downgrade",
                              "Use a max_age of at least one week (604800) once the policy is stable; 1 year max."),
    "sts-mx-not-covered": Spec(ERROR, "validation-failure", "STS-E-1", "an MX host matches no mx pattern of the policy",
                               "Add the MX host (or a one-label wildcard for it) to the policy, change the id."),
    "sts-pattern-unused": Spec(WARNING, None, "STS-E-3", "a policy mx pattern matches no current MX host",
                               "Remove stale patterns (and change the id), or check the MX records."),
    "sts-pattern-broad": Spec(WARNING, None, "STS-E-3", "a policy mx wildcard covers a whole provider zone",
                              "Prefer exact MX names; a wildcard trusts every host of that zone."),
    # --- SMTP per MX address ---------------------------------------------------------------------------------
    "smtp-unreachable": Spec(ERROR, None, "STS-F-7", "no SMTP connection to an MX address",
                             "Check that the MX answers on port 25 from the internet (firewall, service)."),
    "smtp-starttls-missing": Spec(ERROR, "starttls-not-supported", "STS-E-1", "the MX does not offer STARTTLS",
                                  "Enable STARTTLS on the MX (Postfix: smtpd_tls_security_level = may)."),
    "smtp-tls-failed": Spec(ERROR, "validation-failure", "STS-B-16", "the TLS handshake with the MX failed",
                            "Offer TLS 1.2 or later with a certificate and common cipher suites."),
    "smtp-tls-old": Spec(WARNING, None, "DANE-H-39", "the MX negotiated a TLS version older than 1.2",
                         "Enable TLS 1.2 and 1.3 on the MX."),
    "smtp-tls-ok": Spec(INFO, None, None, "STARTTLS works", "Nothing to do."),
    "smtp-certificate-expired": Spec(ERROR, "certificate-expired", "STS-E-5", "the MX certificate has expired",
                                     "Renew the MX certificate (and update TLSA records first if they pin it)."),
    "smtp-certificate-expiring": Spec(WARNING, None, "STS-E-5", "the MX certificate expires soon",
                                      "Renew the MX certificate before it expires."),
    "smtp-certificate-host-mismatch": Spec(ERROR, "certificate-host-mismatch", "STS-E-6",
                                           "the MX certificate is not valid for the MX host name",
                                           "Include the MX host name in the certificate's subjectAltName."),
    "smtp-certificate-untrusted": Spec(ERROR, "certificate-not-trusted", "STS-E-5",
                                       "the MX certificate does not chain to a trusted root",
                                       "Use a certificate from a public CA and send the intermediate certificates."),
    "smtp-certificate-inconsistent": Spec(WARNING, None, None,
                                          "addresses of one MX host present different certificates",
                                          "Install the same certificate (key) on every address of the MX host."),
    # --- DANE -----------------------------------------------------------------------------------------------
    "dane-tlsa-lookup-failed": Spec(ERROR, "dnssec-invalid", "DANE-H-4",
                                    "the TLSA lookup of a signed MX host failed: senders defer mail",
                                    "Fix the name servers of the MX host's zone: TLSA queries must be answered "
                                    "(records or a signed denial), never SERVFAIL or time out."),
    "dane-tlsa-insecure": Spec(WARNING, None, "DANE-H-3", "TLSA records exist but are not DNSSEC-signed: ignored",
                               "Sign the MX host's zone, or remove the TLSA records."),
    "dane-tlsa-missing": Spec(INFO, None, "DANE-H-5", "a signed MX host publishes no TLSA records: no DANE",
                              "Publish TLSA records for the MX host (mxsec generate tlsa) to protect it with DANE."),
    "dane-tlsa-unusable": Spec(ERROR, "tlsa-invalid", "DANE-H-18", "no TLSA record of an MX host is usable",
                               "Publish 3 1 1 records (mxsec generate tlsa) — PKIX usages 0/1, unknown types and "
                               "wrong digest lengths do not count."),
    "dane-tlsa-record-unusable": Spec(WARNING, None, "DANE-H-20", "a TLSA record is unusable and ignored",
                                      "Remove or fix the record."),
    "dane-partial": Spec(WARNING, None, "DANE-H-17", "only some MX hosts have TLSA records",
                         "Publish TLSA records for every MX host."),
    "dane-ok": Spec(INFO, None, "DANE-H-23", "the MX certificate matches its TLSA records", "Nothing to do."),
    "dane-mismatch": Spec(ERROR, "validation-failure", "DANE-H-22",
                          "the MX certificate does not match its TLSA records: senders defer mail",
                          "Publish TLSA records for the certificate in use (mxsec generate tlsa); during a key "
                          "change publish the new record first (mxsec dane rollover)."),
    "dane-no-rollover": Spec(INFO, None, "DANE-H-23", "one TLSA record per MX host: no next key published",
                             "Publish the next key's 3 1 1 record (or a 2 1 1 for the issuer) ahead of "
                             "certificate changes (mxsec dane rollover)."),
    "dane-cert-full": Spec(WARNING, None, "DANE-H-36", "a TLSA record pins the whole certificate (selector 0)",
                           "Prefer 3 1 1 (the public key): it survives certificate renewals with the same key."),
    "dane-mx-insecure": Spec(WARNING, None, "DANE-H-6",
                             "an MX host has signed TLSA records, but the domain's MX records are not signed: "
                             "senders do not use DANE for this domain",
                             "Sign the domain's zone (and publish its DS record) so that senders can trust the MX "
                             "records and use the MX hosts' TLSA records."),
    "dane-sts-webpki": Spec(WARNING, None, "STS-G-1",
                            "DANE protects this MX but its certificate would fail MTA-STS (web PKI) checks",
                            "Senders without DANE apply the enforce policy and defer: use a publicly trusted "
                            "certificate valid for the MX name."),
    # --- TLSRPT ---------------------------------------------------------------------------------------------
    "tlsrpt-missing": Spec(WARNING, None, "RPT-I-1", "no TLSRPT record: you get no reports of TLS failures",
                           "Publish _smtp._tls.DOMAIN TXT \"v=TLSRPTv1; rua=mailto:...\" (mxsec generate tlsrpt)."),
    "tlsrpt-lookup-failed": Spec(ERROR, None, "RPT-I-1", "the _smtp._tls TXT lookup failed",
                                 "Fix the name servers."),
    "tlsrpt-multiple": Spec(ERROR, None, "RPT-I-6", "more than one v=TLSRPTv1 record: senders send no reports",
                            "Keep exactly one v=TLSRPTv1 record."),
    "tlsrpt-invalid": Spec(ERROR, None, "RPT-I-2", "the TLSRPT record does not parse: senders send no reports",
                           "Write it as v=TLSRPTv1; rua=mailto:ADDRESS (mxsec generate tlsrpt)."),
    "tlsrpt-rua-no-mailto": Spec(ERROR, None, "RPT-I-3", "a rua address lacks the mailto: prefix",
                                 "Write rua=mailto:reports@example.com."),
    "tlsrpt-rua-scheme": Spec(WARNING, None, "RPT-I-11", "a rua URI uses a scheme senders do not support",
                              "Use mailto: or https: URIs."),
    "tlsrpt-rua-no-mx": Spec(WARNING, None, "RPT-I-12", "the domain of a mailto: rua has no mail exchanger",
                             "Reports to that address cannot be delivered: fix the address or its domain's MX."),
    "tlsrpt-warning": Spec(WARNING, None, "RPT-I-8", "the TLSRPT record parses with a remark",
                           "Fix the record as the message says (mxsec generate tlsrpt writes a canonical one)."),
    "tlsrpt-ok": Spec(INFO, None, "RPT-I-1", "a valid TLSRPT record: senders send reports to its rua addresses",
                      "Nothing to do."),
    "tlsrpt-no-policy": Spec(INFO, None, "RPT-I-1", "a TLSRPT record but neither MTA-STS nor DANE",
                             "Reports will only say no-policy-found: add MTA-STS or DANE."),
}
