"""Exim 4.96 main log → delivery attempts (mxsec.tlsrpt.exim_log).

Table-driven: each case is a main-log excerpt in the formats of Exim's source (deliver.c ``delivery_log``,
``deferral_log``, ``failure_log``; transports/smtp.c ``write_logs`` and its TLS/DANE messages; tls-gnu.c and
tls-openssl.c) and the attempts it must give. ``REAL_EXIM_LOG`` is an unedited excerpt of the main log of the
real Exim 4.96 (Debian's GnuTLS build) in mxsec's lab, delivering the lab scenarios through ``contrib/exim``.
Then properties: any text or bytes never raise, and the parser's state stays bounded.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxsec.results import ResultType
from mxsec.tlsrpt import exim_log
from mxsec.tlsrpt.attempt import Attempt, TlsOutcome, mx_ip
from mxsec.tlsrpt.exim_log import EximLogParser

RT = ResultType
V, T, U, A, N = (TlsOutcome.VERIFIED, TlsOutcome.TRUSTED, TlsOutcome.UNTRUSTED, TlsOutcome.ANONYMOUS,
                 TlsOutcome.NONE)
M = "1xYpF2-0002hY-0o"
X = "X=TLS1.3:ECDHE_SECP256R1__ECDSA_SECP256R1_SHA256__AES_256_GCM:256"

# Two lines of the log end in a space; it is written as \x20 so the source has no trailing whitespace.
REAL_EXIM_LOG = """\
2026-12-02 18:39:44 1xYpF2-0002hY-0o <= sender@sender.lab.test U=root P=local S=478 id=179623678423.9546.14784945536306434206@sender.lab.test for e0@sts-enforce-ok.test
2026-12-02 18:39:44 exim user lost privilege for using -C option
2026-12-02 18:39:44 1xYpF2-0002hY-0o => e0@sts-enforce-ok.test R=mxsec_sts T=remote_smtp_mxsec_sts H=mx1.sts-enforce-ok.test [203.0.113.10]:25 X=TLS1.3:ECDHE_SECP256R1__ECDSA_SECP256R1_SHA256__AES_256_GCM:256 CV=yes DN="CN=mx1.sts-enforce-ok.test" C="250 2.0.0 Ok: stored 1796236784325294813.cca88fc465c6"
2026-12-02 18:39:44 1xYpF2-0002hY-0o Completed
2026-12-02 18:39:44 1xYpF2-0002hd-1H <= sender@sender.lab.test U=root P=local S=496 id=179623678436.9546.12022029994757762705@sender.lab.test for e1@sts-enforce-bad-cert.test
2026-12-02 18:39:44 exim user lost privilege for using -C option
2026-12-02 18:39:44 1xYpF2-0002hd-1H == e1@sts-enforce-bad-cert.test R=mxsec_sts T=remote_smtp_mxsec_sts defer (-37) H=mx1.sts-enforce-bad-cert.test [203.0.113.12]:25: TLS session: (certificate verification failed)
2026-12-02 18:39:44 1xYpF2-0002hn-23 <= sender@sender.lab.test U=root P=local S=507 id=179623678460.9546.7002077680280565968@sender.lab.test for e3@sts-enforce-expired-cert.test
2026-12-02 18:39:44 1xYpF2-0002hn-23 == e3@sts-enforce-expired-cert.test R=mxsec_sts T=remote_smtp_mxsec_sts defer (-37) H=mx1.sts-enforce-expired-cert.test [203.0.113.16]:25: TLS session: (certificate verification failed): certificate invalid
2026-12-02 18:39:44 1xYpF2-0002i9-2R <= sender@sender.lab.test U=root P=local S=504 id=179623678472.9546.1151896235298378783@sender.lab.test for e4@sts-enforce-no-starttls.test
2026-12-02 18:39:44 1xYpF2-0002i9-2R H=mx1.sts-enforce-no-starttls.test [203.0.113.18]:25: a TLS session is required, but the server did not offer TLS support
2026-12-02 18:39:44 1xYpF2-0002i9-2R == e4@sts-enforce-no-starttls.test R=mxsec_sts T=remote_smtp_mxsec_sts defer (-38) H=mx1.sts-enforce-no-starttls.test [203.0.113.18]:25: a TLS session is required, but the server did not offer TLS support
2026-12-02 18:39:44 1xYpF2-0002iE-2o <= sender@sender.lab.test U=root P=local S=496 id=179623678481.9546.11662839459382405538@sender.lab.test for e5@sts-testing-bad-cert.test
2026-12-02 18:39:44 1xYpF2-0002iE-2o => e5@sts-testing-bad-cert.test R=dnslookup T=remote_smtp H=mx1.sts-testing-bad-cert.test [203.0.113.20]:25 X=TLS1.3:ECDHE_SECP256R1__ECDSA_SECP256R1_SHA256__AES_256_GCM:256 CV=no DN="CN=wrong-name.invalid" C="250 2.0.0 Ok: stored 1796236784957578938.56bff1c76470"
2026-12-02 18:39:44 1xYpF2-0002iE-2o Completed
2026-12-02 18:39:45 1xYpF3-0002j8-37 <= sender@sender.lab.test U=root P=local S=458 id=179623678594.9546.6050867844838212337@sender.lab.test for e13@dane-ok.test
2026-12-02 18:39:46 1xYpF3-0002j8-37 => e13@dane-ok.test R=mxsec_dane T=remote_smtp_mxsec_dane H=mx1.dane-ok.test [203.0.113.35]:25 X=TLS1.3:ECDHE_SECP256R1__ECDSA_SECP256R1_SHA256__AES_256_GCM:256 CV=dane DN="CN=mx1.dane-ok.test" C="250 2.0.0 Ok: stored 1796236786041332473.2be4c5fe5103"
2026-12-02 18:39:46 1xYpF3-0002j8-37 Completed
2026-12-02 18:39:46 1xYpF4-0002jD-0K <= sender@sender.lab.test U=root P=local S=477 id=179623678606.9546.10501816493086679540@sender.lab.test for e14@dane-mismatch.test
2026-12-02 18:39:46 1xYpF4-0002jD-0K DANE attempt failed; TLS connection to mx1.dane-mismatch.test [203.0.113.36]: (certificate verification failed): Verification failed. The certificate differs.\x20
2026-12-02 18:39:46 1xYpF4-0002jD-0K == e14@dane-mismatch.test R=mxsec_dane T=remote_smtp_mxsec_dane defer (-37) H=mx1.dane-mismatch.test [203.0.113.36]:25: TLS session: (certificate verification failed): Verification failed. The certificate differs.\x20
2026-12-02 18:39:46 1xYpF4-0002jy-2Z <= sender@sender.lab.test U=root P=local S=479 id=179623678676.9546.9022364261068315877@sender.lab.test for e20@dane-mandatory.test
2026-12-02 18:39:46 1xYpF4-0002jy-2Z ** e20@dane-mandatory.test R=mxsec_dane T=remote_smtp_mxsec_dane: DANE error: tlsa lookup FAIL
2026-12-02 18:39:46 1xYpF4-0002k3-2j <= <> R=1xYpF4-0002jy-2Z U=Debian-exim P=local S=1757 for sender@sender.lab.test
2026-12-02 18:39:46 1xYpF4-0002k3-2j ** sender@sender.lab.test: Unrouteable address
2026-12-02 18:39:46 1xYpF4-0002k3-2j Frozen (delivery error message)
2026-12-02 18:39:46 1xYpF4-0002jy-2Z Completed
2026-12-02 18:39:46 1xYpF4-0002k5-2w <= sender@sender.lab.test U=root P=local S=486 id=179623678689.9546.2101851130907568988@sender.lab.test for em1@sts-enforce-ok.test em2@sts-enforce-ok.test em3@sts-enforce-ok.test
2026-12-02 18:39:46 1xYpF4-0002k5-2w => em1@sts-enforce-ok.test R=mxsec_sts T=remote_smtp_mxsec_sts H=mx1.sts-enforce-ok.test [203.0.113.10]:25 X=TLS1.3:ECDHE_SECP256R1__ECDSA_SECP256R1_SHA256__AES_256_GCM:256 CV=yes DN="CN=mx1.sts-enforce-ok.test" C="250 2.0.0 Ok: stored 1796236786956660149.9757dfa761af"
2026-12-02 18:39:46 1xYpF4-0002k5-2w -> em2@sts-enforce-ok.test R=mxsec_sts T=remote_smtp_mxsec_sts H=mx1.sts-enforce-ok.test [203.0.113.10]:25 X=TLS1.3:ECDHE_SECP256R1__ECDSA_SECP256R1_SHA256__AES_256_GCM:256 CV=yes DN="CN=mx1.sts-enforce-ok.test" C="250 2.0.0 Ok: stored 1796236786956660149.9757dfa761af"
2026-12-02 18:39:46 1xYpF4-0002k5-2w -> em3@sts-enforce-ok.test R=mxsec_sts T=remote_smtp_mxsec_sts H=mx1.sts-enforce-ok.test [203.0.113.10]:25 X=TLS1.3:ECDHE_SECP256R1__ECDSA_SECP256R1_SHA256__AES_256_GCM:256 CV=yes DN="CN=mx1.sts-enforce-ok.test" C="250 2.0.0 Ok: stored 1796236786956660149.9757dfa761af"
2026-12-02 18:39:46 1xYpF4-0002k5-2w Completed
2026-12-02 18:39:47 1xYpF5-0002kA-02 <= sender@sender.lab.test U=root P=local S=473 id=179623678697.9546.2651181679252014484@sender.lab.test for em1@sts-enforce-bad-cert.test em2@sts-enforce-bad-cert.test
2026-12-02 18:39:47 1xYpF5-0002kA-02 == em1@sts-enforce-bad-cert.test R=mxsec_sts T=remote_smtp_mxsec_sts defer (-37) H=mx1.sts-enforce-bad-cert.test [203.0.113.12]:25: TLS session: (certificate verification failed)
2026-12-02 18:39:47 1xYpF5-0002kA-02 == em2@sts-enforce-bad-cert.test R=mxsec_sts T=remote_smtp_mxsec_sts defer (-37) H=mx1.sts-enforce-bad-cert.test [203.0.113.12]:25: TLS session: (certificate verification failed)
2026-12-02 18:39:47 1xYpF5-0002kF-0G <= sender@sender.lab.test U=root P=local S=454 id=179623678706.9546.5884893803181647758@sender.lab.test for ex1@sts-enforce-ok.test ex2@dane-ok.test
2026-12-02 18:39:47 1xYpF5-0002kF-0G => ex1@sts-enforce-ok.test R=mxsec_sts T=remote_smtp_mxsec_sts H=mx1.sts-enforce-ok.test [203.0.113.10]:25 X=TLS1.3:ECDHE_SECP256R1__ECDSA_SECP256R1_SHA256__AES_256_GCM:256 CV=yes DN="CN=mx1.sts-enforce-ok.test" C="250 2.0.0 Ok: stored 1796236787134533143.743e629e6022"
2026-12-02 18:39:47 1xYpF5-0002kF-0G => ex2@dane-ok.test R=mxsec_dane T=remote_smtp_mxsec_dane H=mx1.dane-ok.test [203.0.113.35]:25 X=TLS1.3:ECDHE_SECP256R1__ECDSA_SECP256R1_SHA256__AES_256_GCM:256 CV=dane DN="CN=mx1.dane-ok.test" C="250 2.0.0 Ok: stored 1796236787149357092.ad38cf3d824c"
2026-12-02 18:39:47 1xYpF5-0002kF-0G Completed
"""


# ------------------------------------------------------------------------------------------------ helpers


def ex(msg: str, msgid: str = M, stamp: str = "2026-12-02 18:00:01") -> str:
    return f"{stamp} {msgid} {msg}"


def arrival(rcpts: str = "a@example.com", msgid: str = M, message_id: str = "abc.1@sender.example") -> str:
    return ex(f"<= sender@sender.example H=client.example.net [198.51.100.7] P=esmtps S=4321 id={message_id} "
              f"T=\"hello\" for {rcpts}", msgid)


def delivered(rcpt: str = "a@example.com", host: str = "mx1.example.com", addr: str = "192.0.2.1", *,
              flag: str = "=>", cv: str | None = "yes", tls: bool = True, cont: bool = False, msgid: str = M,
              stamp: str = "2026-12-02 18:00:01") -> str:
    fields = f" {X}" + (f" CV={cv}" if cv else "") + f' DN="CN={host}"' if tls else ""
    return ex(f"{flag} {rcpt} R=dnslookup T=remote_smtp H={host} [{addr}]:25{'*' if cont else ''}{fields} "
              'C="250 2.0.0 OK id=1xYq"', msgid, stamp)


def deferred(reason: str, rcpt: str = "a@example.com", errno: int = -37, host: str | None = "mx1.example.com",
             addr: str = "192.0.2.1", msgid: str = M, stamp: str = "2026-12-02 18:00:01") -> str:
    where = f" H={host} [{addr}]:25" if host else ""
    return ex(f"== {rcpt} R=dnslookup T=remote_smtp defer ({errno}){where}: {reason}", msgid, stamp)


def host_line(reason: str, host: str = "mx1.example.com", addr: str = "192.0.2.1", msgid: str = M) -> str:
    return ex(f"H={host} [{addr}]:25: {reason}", msgid)


def parse(lines: list[str], **kwargs) -> list[Attempt]:
    parser = EximLogParser(**kwargs)
    out: list[Attempt] = []
    for text in lines:
        out += parser.feed(text)
    out += parser.flush()
    assert parser.stats.errors == 0
    return out


def table(attempts: list[Attempt]) -> list[tuple]:
    rows = [(a.domain, a.recipients, a.mx_host, a.mx_ip, a.tls, a.dane, a.result_type, a.failure_reason_code)
            for a in attempts]
    return sorted(rows, key=repr)


def ok(domain: str = "example.com", recipients: int = 1, host: str = "mx1.example.com", addr: str = "192.0.2.1",
       trust: TlsOutcome = V, dane: bool = False) -> tuple:
    return (domain, recipients, host, addr, trust, dane, None, None)


def fail(result: ResultType, code: str, trust: TlsOutcome = U, domain: str = "example.com", recipients: int = 1,
         host: str | None = "mx1.example.com", addr: str | None = "192.0.2.1") -> tuple:
    return (domain, recipients, host, addr, trust, False, result, code)


NO_TLS = "a TLS session is required, but the server did not offer TLS support"
CERT_FAILED = "TLS session: (certificate verification failed)"
OPENSSL_FAILED = "TLS session: (SSL_connect): error:0A000086:SSL routines::certificate verify failed"

# ------------------------------------------------------------------------------------------------ the table

CASES: list[tuple[str, list[str], list[tuple]]] = [
    ("verified delivery (CV=yes)", [arrival(), delivered(), ex("Completed")], [ok()]),
    ("DANE delivery (CV=dane)", [arrival(), delivered(cv="dane"), ex("Completed")], [ok(dane=True)]),
    ("unverified TLS (CV=no, and CV= not logged)", [
        arrival(), delivered(cv="no"), delivered("b@example.org", "mx9.example.org", "192.0.2.9", cv=None),
    ], [ok(trust=U), ok("example.org", host="mx9.example.org", addr="192.0.2.9", trust=U)]),
    ("plaintext delivery", [arrival(), delivered(tls=False)], [ok(trust=N)]),
    ("one session, three recipients (=> then ->)", [
        arrival("a@example.com b@example.com c@example.com"),
        delivered("a@example.com"),
        ex("<= x@y S=1 id=other@x", "1xYpF9-0002zz-0o"),
        delivered("b@example.com", flag="->"),
        delivered("c@example.com", flag="->"), ex("Completed"),
    ], [ok(recipients=3)]),
    ("one connection, two domains (multi_domain): one attempt per domain", [
        delivered("a@example.com"), delivered("b@example.net", flag="->"),
    ], [ok(), ok("example.net")]),
    ("GnuTLS: name mismatch (the chain was trusted)", [deferred(CERT_FAILED)],
     [fail(RT.CERTIFICATE_HOST_MISMATCH, "certificate verification failed", T)]),
    ("GnuTLS: certificate invalid (expired or untrusted: GnuTLS does not say)", [
        deferred(CERT_FAILED + ": certificate invalid")],
     [fail(RT.VALIDATION_FAILURE, "certificate verification failed: certificate invalid")]),
    ("GnuTLS: certificate revoked", [deferred(CERT_FAILED + ": certificate revoked")],
     [fail(RT.CERTIFICATE_NOT_TRUSTED, "certificate verification failed: certificate revoked")]),
    ("GnuTLS: no certificate", [deferred(CERT_FAILED + ": certificate not supplied")],
     [fail(RT.VALIDATION_FAILURE, "certificate verification failed: certificate not supplied", A)]),
    ("GnuTLS: TLSA record problem", [deferred(CERT_FAILED + ": TLSA record problem: none usable")],
     [fail(RT.TLSA_INVALID, "certificate verification failed: TLSA record problem: none usable")]),
    ("handshake failure", [deferred("TLS session: (gnutls_handshake): A TLS fatal alert has been received: "
                                    "Handshake failed")],
     [fail(RT.VALIDATION_FAILURE, "gnutls_handshake: A TLS fatal alert has been received: Handshake failed", N)]),
    ("bad first read from TLS conn", [deferred("bad first read from TLS conn")],
     [fail(RT.VALIDATION_FAILURE, "bad first read from TLS conn", N)]),
    ("OpenSSL: expired (the verify error line says which)", [
        ex("[192.0.2.1] SSL verify error: depth=0 error=certificate has expired cert=/CN=mx1.example.com"),
        deferred(OPENSSL_FAILED)],
     [fail(RT.CERTIFICATE_EXPIRED, "certificate has expired")]),
    ("OpenSSL: name mismatch", [
        ex('[192.0.2.1] SSL verify error: certificate name mismatch: DN="/CN=other.example" H="mx1.example.com"'),
        deferred(OPENSSL_FAILED)],
     [fail(RT.CERTIFICATE_HOST_MISMATCH, "certificate name mismatch")]),
    ("OpenSSL: self-signed", [
        ex("[192.0.2.1] SSL verify error: depth=0 error=self-signed certificate cert=/CN=mx1.example.com"),
        deferred(OPENSSL_FAILED)],
     [fail(RT.CERTIFICATE_NOT_TRUSTED, "self-signed certificate")]),
    ("OpenSSL: no usable TLSA records", [
        ex("DANE error: No usable TLSA records"), deferred("TLS session: (SSL_connect): error:0A000086:SSL routines"
                                                           "::certificate verify failed")],
     [fail(RT.TLSA_INVALID, "No usable TLSA records", N)]),
    ("OpenSSL: verify error at opportunistic level, delivered with CV=no", [
        ex("[192.0.2.1] SSL verify error: depth=0 error=certificate has expired cert=/CN=mx1.example.com"),
        delivered(cv="no")], [ok(trust=U)]),
    ("no STARTTLS: the per-host line and the recipients' == lines are one session", [
        arrival("a@example.com b@example.com"),
        host_line(NO_TLS),
        deferred(NO_TLS, errno=-38), deferred(NO_TLS, "b@example.com", errno=-38),
    ], [fail(RT.STARTTLS_NOT_SUPPORTED, NO_TLS, N, recipients=2)]),
    ("STARTTLS refused", [deferred("a TLS session is required, but an attempt to start TLS failed", errno=-38)],
     [fail(RT.STARTTLS_NOT_SUPPORTED, "a TLS session is required, but an attempt to start TLS failed", N)]),
    ("DANE mismatch: the DANE line and the == line are one session", [
        ex("DANE attempt failed; TLS connection to mx1.example.com [192.0.2.1]: (certificate verification "
           "failed): Verification failed. The certificate differs. "),
        deferred("TLS session: (certificate verification failed): Verification failed. The certificate differs. "),
    ], [fail(RT.VALIDATION_FAILURE, "certificate verification failed: Verification failed. The certificate "
             "differs.")]),
    ("DANE mismatch at the first MX, DANE success at the second", [
        arrival("a@example.com b@example.com"),
        ex("DANE attempt failed; TLS connection to mx1.example.com [192.0.2.1]: (certificate verification "
           "failed): Verification failed. The certificate differs. "),
        delivered("a@example.com", "mx2.example.com", "192.0.2.2", cv="dane"),
        delivered("b@example.com", "mx2.example.com", "192.0.2.2", cv="dane", flag="->"),
        ex("Completed"),
    ], [fail(RT.VALIDATION_FAILURE, "certificate verification failed: Verification failed. The certificate "
             "differs.", recipients=2),
        ok(recipients=2, host="mx2.example.com", addr="192.0.2.2", dane=True)]),
    ("no STARTTLS at the first MX, delivered by the second", [
        host_line(NO_TLS), delivered(host="mx2.example.com", addr="192.0.2.2"),
    ], [fail(RT.STARTTLS_NOT_SUPPORTED, NO_TLS, N), ok(host="mx2.example.com", addr="192.0.2.2")]),
    ("TLSA lookup SERVFAIL: the per-host line names the host, the == line does not", [
        host_line("DANE error: tlsa lookup DEFER"),
        deferred("DANE error: tlsa lookup DEFER", errno=-36, host=None),
    ], [fail(RT.DNSSEC_INVALID, "DANE error: tlsa lookup DEFER", N)]),
    ("hosts_require_dane without TLSA (the lab's dane-mandatory)", [
        ex("DANE error: TLSA lookup for mx1.example.com not DNSSEC"),
        ex("** a@example.com R=mxsec_dane T=remote_smtp_mxsec_dane: DANE error: tlsa lookup FAIL"),
    ], [fail(RT.DANE_REQUIRED, "DANE error: tlsa lookup FAIL", N, addr=None)]),
    ("hosts_require_dane and an MX lookup without DNSSEC", [
        deferred("DANE error: mx1.example.com lookup not DNSSEC", errno=-36, host=None),
    ], [fail(RT.DANE_REQUIRED, "DANE error: lookup not DNSSEC", N, addr=None)]),
    ("TLS failure, then the retry in clear (tls_tempfail_tryclear): one attempt", [
        ex("TLS session: (gnutls_handshake): A TLS fatal alert has been received.: delivering unencrypted to "
           "H=mx1.example.com [192.0.2.1] (not in hosts_require_tls)"),
        delivered(tls=False),
    ], [fail(RT.VALIDATION_FAILURE, "gnutls_handshake: A TLS fatal alert has been received.", N)]),
    ("recipient refused after TLS (**) and another delivered: one session", [
        ex(f"** b@example.com R=dnslookup T=remote_smtp H=mx1.example.com [192.0.2.1]:25 {X} CV=yes "
           'DN="CN=mx1.example.com": SMTP error from remote mail server after RCPT TO:<b@example.com>: 550 5.1.1 '
           "no such user"),
        delivered("a@example.com"),
    ], [ok(recipients=2)]),
    ("continued connection (H=… [ip]*): no new session", [delivered(cont=True)], []),
    ("connection refused: no attempt", [
        ex("H=mx1.example.com [192.0.2.1] Connection refused"),
        ex("== a@example.com R=dnslookup T=remote_smtp defer (111): Connection refused"),
    ], []),
    ("greylisted: the deferral does not say whether TLS was up: no attempt", [
        deferred("SMTP error from remote mail server after RCPT TO:<a@example.com>: 450 4.7.1 Greylisted",
                 errno=-44)], []),
    ("a server's text cannot pose as Exim's", [
        host_line("SMTP error from remote mail server after MAIL FROM:<s@x> SIZE=12: 550 " + NO_TLS),
        deferred("SMTP error from remote mail server after MAIL FROM:<s@x>: 550 TLS session: (certificate "
                 "verification failed)", errno=-45),
        delivered(host="mx2.example.com", addr="192.0.2.2", cv="no").replace(
            'DN="CN=mx2.example.com"', 'DN="CN=x DANE attempt failed; H=evil [203.0.113.66]:25 CV=yes"'),
    ], [ok(host="mx2.example.com", addr="192.0.2.2", trust=U)]),
    ("TLS I/O error in an established session: no attempt of its own", [
        ex("H=mx1.example.com [192.0.2.1] TLS error on connection (recv): The TLS connection was non-properly "
           "terminated."),
    ], []),
    ("local deliveries are not SMTP", [
        ex("=> /var/mail/root <root@sender.example> R=local_user T=mail_spool"),
        ex("=> root <root@sender.example> R=local_user T=mail_spool"),
        ex("=> |/usr/bin/procmail <x@sender.example> R=procmail T=procmail_pipe"),
    ], []),
    ("syslog lines", [
        f"Dec  2 18:00:01 sender exim[4242]: {M} => a@example.com R=dnslookup T=remote_smtp H=mx1.example.com "
        f"[192.0.2.1]:25 {X} CV=yes",
        "2026-12-02T18:00:02+01:00 sender exim4[4242]: 1xYpF2-0002hY-0p => b@example.org R=dnslookup "
        "T=remote_smtp H=mx9.example.org [192.0.2.9] X=TLS1.2:ECDHE_RSA_AES_256_GCM_SHA384:256 CV=no",
    ], [ok(), ok("example.org", host="mx9.example.org", addr="192.0.2.9", trust=U)]),
    ("log_selector +pid, +millisec, log_timezone", [
        f"2026-12-02 18:00:01.123 +0100 [4242] {M} => a@example.com R=dnslookup T=remote_smtp H=mx1.example.com "
        f"[192.0.2.1]:25 {X} CV=yes",
    ], [ok()]),
    ("IPv6 host and the DNSSEC flag", [
        ex(f"=> a@example.com R=dnslookup T=remote_smtp H=mx1.example.com DS [2001:DB8::1]:25 {X} CV=dane"),
    ], [ok(addr="2001:db8::1", dane=True)]),
]


@pytest.mark.parametrize(("name", "lines", "expected"), CASES, ids=[c[0] for c in CASES])
def test_log_excerpt_gives_attempts(name: str, lines: list[str], expected: list[tuple]) -> None:
    assert table(parse(lines)) == sorted(expected, key=repr)


# ------------------------------------------------------------------------------------------------ a real log

REAL_EXPECTED = [
    # (message id, domain, recipients, mx host, tls, dane, result type, failure reason)
    ("1xYpF2-0002hY-0o", "sts-enforce-ok.test", 1, "mx1.sts-enforce-ok.test", V, False, None, None),
    ("1xYpF2-0002hd-1H", "sts-enforce-bad-cert.test", 1, "mx1.sts-enforce-bad-cert.test", T, False,
     RT.CERTIFICATE_HOST_MISMATCH, "certificate verification failed"),
    ("1xYpF2-0002hn-23", "sts-enforce-expired-cert.test", 1, "mx1.sts-enforce-expired-cert.test", U, False,
     RT.VALIDATION_FAILURE, "certificate verification failed: certificate invalid"),
    ("1xYpF2-0002i9-2R", "sts-enforce-no-starttls.test", 1, "mx1.sts-enforce-no-starttls.test", N, False,
     RT.STARTTLS_NOT_SUPPORTED, NO_TLS),
    ("1xYpF2-0002iE-2o", "sts-testing-bad-cert.test", 1, "mx1.sts-testing-bad-cert.test", U, False, None, None),
    ("1xYpF3-0002j8-37", "dane-ok.test", 1, "mx1.dane-ok.test", V, True, None, None),
    ("1xYpF4-0002jD-0K", "dane-mismatch.test", 1, "mx1.dane-mismatch.test", U, False, RT.VALIDATION_FAILURE,
     "certificate verification failed: Verification failed. The certificate differs."),
    ("1xYpF4-0002jy-2Z", "dane-mandatory.test", 1, None, N, False, RT.DANE_REQUIRED,
     "DANE error: tlsa lookup FAIL"),
    ("1xYpF4-0002k5-2w", "sts-enforce-ok.test", 3, "mx1.sts-enforce-ok.test", V, False, None, None),
    ("1xYpF5-0002kA-02", "sts-enforce-bad-cert.test", 2, "mx1.sts-enforce-bad-cert.test", T, False,
     RT.CERTIFICATE_HOST_MISMATCH, "certificate verification failed"),
    ("1xYpF5-0002kF-0G", "sts-enforce-ok.test", 1, "mx1.sts-enforce-ok.test", V, False, None, None),
    ("1xYpF5-0002kF-0G", "dane-ok.test", 1, "mx1.dane-ok.test", V, True, None, None),
]


def test_real_exim_496_log_from_the_lab() -> None:
    """The lab's real Exim 4.96 (GnuTLS): the no-STARTTLS host is logged twice (per-host line and == line) and
    counted once, as is the DANE failure; the three-recipient message is one session; the bounce to the
    sender (unrouteable) and Exim's privilege notices are no sessions."""
    attempts = parse(REAL_EXIM_LOG.splitlines())
    got = [(a.queue_id, a.domain, a.recipients, a.mx_host, a.tls, a.dane, a.result_type, a.failure_reason_code)
           for a in attempts]
    assert sorted(got, key=repr) == sorted(REAL_EXPECTED, key=repr)
    first = next(a for a in attempts if a.queue_id == "1xYpF2-0002hY-0o")
    assert first.time == datetime(2026, 12, 2, 18, 39, 44, tzinfo=UTC)
    assert first.message_id == "179623678423.9546.14784945536306434206@sender.lab.test"
    assert first.mx_ip == "203.0.113.10" and first.mta == "exim"


# ------------------------------------------------------------------------------------------------ behaviour


def test_completed_emits_the_message_sessions_without_flush() -> None:
    parser = EximLogParser()
    assert parser.feed(arrival()) == []
    assert parser.feed(delivered()) == []
    assert parser.feed(delivered("b@example.com", flag="->")) == []
    out = parser.feed(ex("Completed"))
    assert [(a.domain, a.recipients, a.message_id) for a in out] == [("example.com", 2, "abc.1@sender.example")]
    assert parser.flush() == []


def test_message_id_created_by_exim_and_missing() -> None:
    lines = [ex("<= s@x.example U=root P=local S=478 id*=E1abc@host.example for a@example.com"), delivered(),
             ex("<= s@x.example U=root P=local S=478 for a@example.com", "1xYpF2-0002hY-0p"),
             delivered(msgid="1xYpF2-0002hY-0p")]
    assert [a.message_id for a in parse(lines)] == ["E1abc@host.example", None]


def test_a_retry_minutes_later_is_another_session() -> None:
    lines = [deferred(CERT_FAILED), deferred(CERT_FAILED, stamp="2026-12-02 18:30:01"),
             deferred(CERT_FAILED, stamp="2026-12-02 18:30:01", rcpt="b@example.com")]
    assert [a.recipients for a in parse(lines)] == [1, 2]


def test_linger_closes_a_session_and_late_lines_are_absorbed() -> None:
    parser = EximLogParser(linger=2)
    parser.feed(delivered())
    out = parser.feed(ex("<= x@y S=1 id=q@x", "1xYpF9-0002zz-0o")) + parser.feed(ex("Completed", "1xYpF9-0002zz-0o"))
    out += parser.feed(ex("Completed", "1xYpF9-0002zz-0p"))
    assert [a.recipients for a in out] == [1]
    assert parser.feed(delivered("b@example.com", flag="->")) == []
    assert parser.flush() == []


def test_feeding_the_same_lines_again_counts_them_again_later() -> None:
    """Resume safety is the caller's job. Within a few minutes, lines of the same message, host and outcome are
    taken for one session (Exim logs each failure twice); a log fed again later counts again."""
    first = [deferred(CERT_FAILED)]
    again = [deferred(CERT_FAILED, stamp="2026-12-03 18:00:01")]
    assert len(parse(first + first)) == 1
    assert len(parse(first + again)) == 2


def test_time_zone_of_the_log() -> None:
    from datetime import timedelta, timezone

    attempts = parse([delivered()], tz=timezone(timedelta(hours=-5)))
    assert attempts[0].time == datetime(2026, 12, 2, 23, 0, 1, tzinfo=UTC)


# ------------------------------------------------------------------------------------------------ properties

FRAGMENTS = [
    "<= s@x.example U=root P=local S=12 id={i} for u@{d}",
    "=> u@{d} R=dnslookup T=remote_smtp H={h} [{a}]:25 " + X + " CV={cv} DN=\"CN={h}\"",
    "-> u@{d} R=dnslookup T=remote_smtp H={h} [{a}]:25* " + X + " CV={cv}",
    "== u@{d} R=dnslookup T=remote_smtp defer (-37) H={h} [{a}]:25: TLS session: (certificate verification "
    "failed){tail}",
    "== u@{d} R=dnslookup T=remote_smtp defer (-38) H={h} [{a}]:25: " + NO_TLS,
    "== u@{d} R=dnslookup T=remote_smtp defer (-36): DANE error: tlsa lookup DEFER",
    "** u@{d} R=dnslookup T=remote_smtp: DANE error: tlsa lookup FAIL",
    "** u@{d} R=dnslookup T=remote_smtp H={h} [{a}]:25 " + X + " CV={cv}: SMTP error 550",
    "H={h} [{a}]:25: " + NO_TLS,
    "H={h} [{a}]: DANE error: tlsa lookup DEFER",
    "DANE attempt failed; TLS connection to {h} [{a}]: (certificate verification failed){tail}",
    "DANE error: TLSA lookup for {h} not DNSSEC",
    "DANE error: No usable TLSA records",
    "[{a}] SSL verify error: depth=0 error=certificate has expired cert=/CN={h}",
    "TLS session: (x): y: delivering unencrypted to H={h} [{a}] (not in hosts_require_tls)",
    "Completed",
]


@st.composite
def log_lines(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(FRAGMENTS)).format(
        h=draw(st.sampled_from(["mx1.example.com", "MX2.example.com.", "a:b", "x\x00y", "ü.example"])),
        a=draw(st.sampled_from(["192.0.2.1", "2001:db8::1", "999.9.9.9", "::"])),
        d=draw(st.sampled_from(["example.com", "bücher.example", "-bad-", "x" * 300])),
        i=draw(st.sampled_from(["m@x", "<m@x>", "", "\x1b"])),
        cv=draw(st.sampled_from(["yes", "no", "dane", ""])),
        tail=draw(st.sampled_from(["", ": certificate invalid", ": TLSA record problem: x", ": \x07"])),
    )
    if draw(st.booleans()):
        text = text[:draw(st.integers(0, len(text)))] + draw(st.text(max_size=20))
    msgid = draw(st.sampled_from([M, "1xYpF2-0002hY-0p", "1xYpF2-00000000000-ABCD", "bad-id"]))
    second = draw(st.integers(0, 59))
    return f"2026-12-02 18:{draw(st.integers(0, 59)):02d}:{second:02d} {msgid} {text}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300), log_lines()), max_size=60))
def test_any_input_never_raises_and_attempts_are_well_formed(items: list) -> None:
    parser = EximLogParser(linger=5)
    attempts = []
    for item in items:
        attempts += parser.feed(item)
    attempts += parser.flush()
    assert parser.stats.errors == 0
    for a in attempts:
        assert a.recipients >= 1 and a.domain and a.domain == a.domain.lower()
        assert a.mx_ip is None or mx_ip(a.mx_ip) == a.mx_ip
        assert a.failure_reason_code is None or (len(a.failure_reason_code) <= 200
                                                  and not any(ord(c) < 32 for c in a.failure_reason_code))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(log_lines(), min_size=50, max_size=300))
def test_state_stays_bounded(lines: list[str]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exim_log, "MAX_MESSAGES", 3)
        patch.setattr(exim_log, "MAX_PER_MESSAGE", 2)
        parser = EximLogParser(linger=8)
        for n, text in enumerate(lines):
            parser.feed(text.replace(M, f"1xYpF2-{n:06d}-0o"))
            assert len(parser._messages) <= 3
            assert all(len(m.waiting) <= 2 and len(m.keys) <= 2 for m in parser._messages.values())
            assert len(parser.sessions) <= 2 * 8 + 2
        assert parser.stats.errors == 0


def test_huge_and_hostile_lines() -> None:
    parser = EximLogParser()
    for text in (ex("=> a@example.com R=x T=y H=" + "h" * 100_000 + " [192.0.2.1]"), ex("== " + "x" * 50_000),
                 ex("\x00\x1b[2J\udcff" * 1000), ex("<= " + "<" * 40_000 + " S=1 id=" + "i" * 40_000)):
        parser.feed(text)
    parser.flush()
    assert parser.stats.errors == 0


def test_throughput_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """A rough figure only (bench/tlsrpt_logs.py is the real benchmark); no assertion on speed."""
    base = REAL_EXIM_LOG.splitlines()
    lines = []
    for n in range(150):
        lines += [text.replace("-0002", f"-{n:04d}") for text in base]
    parser = EximLogParser()
    started = time.perf_counter()
    for text in lines:
        parser.feed(text)
    parser.flush()
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[exim log parser: {len(lines) / elapsed:,.0f} lines/s over {len(lines):,} lines]")
