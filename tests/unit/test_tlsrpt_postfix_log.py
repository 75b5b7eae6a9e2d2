"""Postfix 3.7–3.9 mail log → delivery attempts (mxsec.tlsrpt.postfix_log, mxsec.tlsrpt.attempt).

Table-driven: each case is a log excerpt in the exact formats of Postfix's source (tls_verify.c, tls_client.c,
smtp_proto.c, smtp_connect.c, smtp_trouble.c, smtp_tls_policy.c, log_adhoc.c) and the attempts it must give.
``REAL_POSTFIX_LOG`` is an unedited excerpt of the ``maillog_file`` of the real Postfix 3.7.11 in mxsec's lab
(``mxsec.lab.runner.run`` over the lab scenarios on this project's own lab, plus multi-recipient messages).
Then properties: any text or bytes never raise, and the parser's state stays bounded.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxsec.results import ResultType
from mxsec.tlsrpt import postfix_log
from mxsec.tlsrpt.attempt import (
    MAX_LINE_CHARS,
    Attempt,
    SessionDeduper,
    StampReader,
    TlsOutcome,
    classify_certificate_error,
    clean_reason,
    iter_lines,
    mx_host,
    mx_ip,
)
from mxsec.tlsrpt.postfix_log import PostfixLogParser

RT = ResultType
V, T, U, A, N = (TlsOutcome.VERIFIED, TlsOutcome.TRUSTED, TlsOutcome.UNTRUSTED, TlsOutcome.ANONYMOUS,
                 TlsOutcome.NONE)
CIPHER = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS"

REAL_POSTFIX_LOG = """\
Dec 02 18:39:34 sender postfix/postfix-script[9900]: starting the Postfix mail system
Dec 02 18:39:34 sender postfix/master[9902]: daemon started -- version 3.7.11, configuration /run/mxsec-lab/mxsec-c9546/postfix/etc
Dec 02 18:39:34 sender postfix/postsuper[9906]: Deleted: 0 messages
Dec 02 18:39:34 sender postfix/pickup[9903]: AD22A16E130: uid=0 from=<sender@sender.lab.test>
Dec 02 18:39:34 sender postfix/cleanup[9909]: AD22A16E130: message-id=<a56fb2881fcd4604a773df87349fcb7e@sender.lab.test>
Dec 02 18:39:34 sender postfix/qmgr[9904]: AD22A16E130: from=<sender@sender.lab.test>, size=506, nrcpt=1 (queue active)
Dec 02 18:39:34 sender postfix/smtp[9911]: Verified TLS connection established to mx1.sts-enforce-ok.test[203.0.113.10]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:34 sender postfix/pickup[9903]: C91B916E133: uid=0 from=<sender@sender.lab.test>
Dec 02 18:39:34 sender postfix/cleanup[9909]: C91B916E133: message-id=<56d4828f484e4f2da8880e3b8be2ae6f@sender.lab.test>
Dec 02 18:39:34 sender postfix/qmgr[9904]: C91B916E133: from=<sender@sender.lab.test>, size=483, nrcpt=1 (queue active)
Dec 02 18:39:34 sender postfix/smtp[9911]: AD22A16E130: to=<1eafe2-1@sts-enforce-ok.test>, relay=mx1.sts-enforce-ok.test[203.0.113.10]:25, delay=0.14, delays=0.03/0.04/0.05/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: stored 1796236774821845417.649df8f19179)
Dec 02 18:39:34 sender postfix/qmgr[9904]: AD22A16E130: removed
Dec 02 18:39:34 sender postfix/smtp[9911]: server certificate verification failed for mx1.sts-enforce-bad-cert.test[203.0.113.12]:25: num=62:hostname mismatch
Dec 02 18:39:34 sender postfix/smtp[9911]: Untrusted TLS connection established to mx1.sts-enforce-bad-cert.test[203.0.113.12]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:34 sender postfix/smtp[9911]: C91B916E133: to=<1eafe2-1@sts-enforce-bad-cert.test>, relay=mx1.sts-enforce-bad-cert.test[203.0.113.12]:25, delay=0.05, delays=0.01/0.01/0.03/0, dsn=4.7.5, status=deferred (Server certificate not verified)
Dec 02 18:39:34 sender postfix/pickup[9903]: E5BD916E13A: uid=0 from=<sender@sender.lab.test>
Dec 02 18:39:34 sender postfix/cleanup[9909]: E5BD916E13A: message-id=<42cc0170344c4a99ac101f7dcc660be0@sender.lab.test>
Dec 02 18:39:34 sender postfix/qmgr[9904]: E5BD916E13A: from=<sender@sender.lab.test>, size=507, nrcpt=1 (queue active)
Dec 02 18:39:34 sender postfix/smtp[9916]: server certificate verification failed for mx1.sts-enforce-mx-not-in-policy.test[203.0.113.14]:25: num=62:hostname mismatch
Dec 02 18:39:34 sender postfix/smtp[9916]: Untrusted TLS connection established to mx1.sts-enforce-mx-not-in-policy.test[203.0.113.14]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:34 sender postfix/pickup[9903]: F023B16E13B: uid=0 from=<sender@sender.lab.test>
Dec 02 18:39:34 sender postfix/cleanup[9909]: F023B16E13B: message-id=<147b7eb5e0c341d29c918ed78b0dce08@sender.lab.test>
Dec 02 18:39:34 sender postfix/qmgr[9904]: F023B16E13B: from=<sender@sender.lab.test>, size=480, nrcpt=1 (queue active)
Dec 02 18:39:34 sender postfix/smtp[9916]: E5BD916E13A: to=<1eafe2-1@sts-enforce-mx-not-in-policy.test>, relay=mx1.sts-enforce-mx-not-in-policy.test[203.0.113.14]:25, delay=0.04, delays=0/0/0.04/0, dsn=4.7.5, status=deferred (Server certificate not verified)
Dec 02 18:39:35 sender postfix/pickup[9903]: 0426B16E140: uid=0 from=<sender@sender.lab.test>
Dec 02 18:39:35 sender postfix/cleanup[9909]: 0426B16E140: message-id=<6c713beb07e74b42bf356e27081cec65@sender.lab.test>
Dec 02 18:39:35 sender postfix/qmgr[9904]: 0426B16E140: from=<sender@sender.lab.test>, size=475, nrcpt=1 (queue active)
Dec 02 18:39:35 sender postfix/smtp[9911]: server certificate verification failed for mx1.sts-enforce-expired-cert.test[203.0.113.16]:25: certificate has expired
Dec 02 18:39:35 sender postfix/smtp[9911]: Untrusted TLS connection established to mx1.sts-enforce-expired-cert.test[203.0.113.16]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:35 sender postfix/smtp[9911]: F023B16E13B: to=<1eafe2-1@sts-enforce-expired-cert.test>, relay=mx1.sts-enforce-expired-cert.test[203.0.113.16]:25, delay=0.06, delays=0/0/0.05/0, dsn=4.7.5, status=deferred (Server certificate not verified)
Dec 02 18:39:35 sender postfix/pickup[9903]: 0EA7916E145: uid=0 from=<sender@sender.lab.test>
Dec 02 18:39:35 sender postfix/cleanup[9909]: 0EA7916E145: message-id=<156d7ce6092f49a5b4c44f83468acb8c@sender.lab.test>
Dec 02 18:39:35 sender postfix/qmgr[9904]: 0EA7916E145: from=<sender@sender.lab.test>, size=498, nrcpt=1 (queue active)
Dec 02 18:39:35 sender postfix/smtp[9916]: 0426B16E140: to=<1eafe2-1@sts-enforce-no-starttls.test>, relay=mx1.sts-enforce-no-starttls.test[203.0.113.18]:25, delay=0.06, delays=0.01/0/0.05/0, dsn=4.7.4, status=deferred (TLS is required, but was not offered by host mx1.sts-enforce-no-starttls.test[203.0.113.18])
Dec 02 18:39:35 sender postfix/smtp[9911]: Trusted TLS connection established to mx1.sts-testing-bad-cert.test[203.0.113.20]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:35 sender postfix/smtp[9911]: 0EA7916E145: to=<1eafe2-1@sts-testing-bad-cert.test>, relay=mx1.sts-testing-bad-cert.test[203.0.113.20]:25, delay=0.04, delays=0/0/0.04/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: stored 1796236775098194084.03cf249bcc23)
Dec 02 18:39:35 sender postfix/qmgr[9904]: 0EA7916E145: removed
Dec 02 18:39:35 sender postfix/cleanup[9909]: 5C17816E159: message-id=<7e0161ad4aef44e291ff0108a70f33fe@sender.lab.test>
Dec 02 18:39:35 sender postfix/qmgr[9904]: 5C17816E159: from=<sender@sender.lab.test>, size=510, nrcpt=1 (queue active)
Dec 02 18:39:35 sender postfix/pickup[9903]: 63E4116E15A: uid=0 from=<sender@sender.lab.test>
Dec 02 18:39:35 sender postfix/cleanup[9909]: 63E4116E15A: message-id=<a9fa64e5e3604a24bde316217add2806@sender.lab.test>
Dec 02 18:39:35 sender postfix/qmgr[9904]: 63E4116E15A: from=<sender@sender.lab.test>, size=463, nrcpt=1 (queue active)
Dec 02 18:39:35 sender postfix/smtp[9940]: Verified TLS connection established to mx1.dane-ok.test[203.0.113.35]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:35 sender postfix/smtp[9940]: 5C17816E159: to=<1eafe2-1@dane-ok.test>, relay=mx1.dane-ok.test[203.0.113.35]:25, delay=0.05, delays=0.01/0/0.03/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: stored 1796236775419087888.4c5b2378464d)
Dec 02 18:39:35 sender postfix/qmgr[9904]: 5C17816E159: removed
Dec 02 18:39:35 sender postfix/smtp[9911]: server certificate verification failed for mx1.dane-mismatch.test[203.0.113.36]:25: num=65:no matching DANE TLSA records
Dec 02 18:39:35 sender postfix/smtp[9911]: Untrusted TLS connection established to mx1.dane-mismatch.test[203.0.113.36]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:35 sender postfix/smtp[9911]: 63E4116E15A: to=<1eafe2-1@dane-mismatch.test>, relay=mx1.dane-mismatch.test[203.0.113.36]:25, delay=0.04, delays=0.01/0/0.03/0, dsn=4.7.5, status=deferred (Server certificate not verified)
Dec 02 18:39:35 sender postfix/cleanup[9909]: 91C2516E16A: message-id=<0eb33762c77e409dadde781f78b93fea@sender.lab.test>
Dec 02 18:39:35 sender postfix/qmgr[9904]: 91C2516E16A: from=<sender@sender.lab.test>, size=506, nrcpt=1 (queue active)
Dec 02 18:39:35 sender postfix/smtp[9940]: Verified TLS connection established to alias.dane-cname-mx.test[203.0.113.42]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:35 sender postfix/pickup[9903]: 9E84816E16C: uid=0 from=<sender@sender.lab.test>
Dec 02 18:39:35 sender postfix/smtp[9940]: 91C2516E16A: to=<1eafe2-1@dane-cname-mx.test>, relay=alias.dane-cname-mx.test[203.0.113.42]:25, delay=0.06, delays=0.01/0/0.03/0.02, dsn=2.0.0, status=sent (250 2.0.0 Ok: stored 1796236775628311407.e2eec60ce23a)
Dec 02 18:39:35 sender postfix/cleanup[9909]: 9E84816E16C: message-id=<983323373e584db18ee14cbf78b8ed01@sender.lab.test>
Dec 02 18:39:35 sender postfix/qmgr[9904]: 91C2516E16A: removed
Dec 02 18:39:35 sender postfix/qmgr[9904]: 9E84816E16C: from=<sender@sender.lab.test>, size=482, nrcpt=1 (queue active)
Dec 02 18:39:35 sender postfix/smtp[9911]: warning: TLS policy lookup for dane-mandatory.test/mx1.dane-mandatory.test: no TLSA records found
Dec 02 18:39:35 sender postfix/smtp[9911]: 9E84816E16C: to=<1eafe2-1@dane-mandatory.test>, relay=none, delay=0.03, delays=0.02/0/0.01/0, dsn=4.7.5, status=deferred (no TLSA records found)
Dec 02 18:39:35 sender postfix/qmgr[9904]: E5BD916E13A: from=<sender@sender.lab.test>, size=507, nrcpt=1 (queue active)
Dec 02 18:39:35 sender postfix/qmgr[9904]: 8260F16E164: from=<sender@sender.lab.test>, size=475, nrcpt=1 (queue active)
Dec 02 18:39:38 sender postfix/pickup[9903]: 619F016E172: uid=0 from=<sender@sender.lab.test>
Dec 02 18:39:38 sender postfix/cleanup[9909]: 619F016E172: message-id=<92370f4e8a68407b8a4cd457d8e64fe6@sender.lab.test>
Dec 02 18:39:38 sender postfix/qmgr[9904]: 619F016E172: from=<sender@sender.lab.test>, size=443, nrcpt=3 (queue active)
Dec 02 18:39:38 sender postfix/smtp[10020]: Verified TLS connection established to mx1.sts-enforce-ok.test[203.0.113.10]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:38 sender postfix/smtp[10020]: 619F016E172: to=<m1@sts-enforce-ok.test>, relay=mx1.sts-enforce-ok.test[203.0.113.10]:25, delay=0.03, delays=0/0/0.01/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: stored 1796236778417634089.37f36f5e2e25)
Dec 02 18:39:38 sender postfix/smtp[10020]: 619F016E172: to=<m2@sts-enforce-ok.test>, relay=mx1.sts-enforce-ok.test[203.0.113.10]:25, delay=0.03, delays=0/0/0.01/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: stored 1796236778417634089.37f36f5e2e25)
Dec 02 18:39:38 sender postfix/smtp[10020]: 619F016E172: to=<m3@sts-enforce-ok.test>, relay=mx1.sts-enforce-ok.test[203.0.113.10]:25, delay=0.03, delays=0/0/0.01/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: stored 1796236778417634089.37f36f5e2e25)
Dec 02 18:39:38 sender postfix/qmgr[9904]: 619F016E172: removed
Dec 02 18:39:38 sender postfix/pickup[9903]: 69B8816E173: uid=0 from=<sender@sender.lab.test>
Dec 02 18:39:38 sender postfix/cleanup[9909]: 69B8816E173: message-id=<2ac7af3e62964be09eae54d3c2759e91@sender.lab.test>
Dec 02 18:39:38 sender postfix/qmgr[9904]: 69B8816E173: from=<sender@sender.lab.test>, size=432, nrcpt=2 (queue active)
Dec 02 18:39:38 sender postfix/smtp[9940]: server certificate verification failed for mx1.sts-enforce-bad-cert.test[203.0.113.12]:25: num=62:hostname mismatch
Dec 02 18:39:38 sender postfix/smtp[9940]: Untrusted TLS connection established to mx1.sts-enforce-bad-cert.test[203.0.113.12]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:38 sender postfix/smtp[9940]: 69B8816E173: to=<m1@sts-enforce-bad-cert.test>, relay=mx1.sts-enforce-bad-cert.test[203.0.113.12]:25, delay=0.01, delays=0/0/0.01/0, dsn=4.7.5, status=deferred (Server certificate not verified)
Dec 02 18:39:38 sender postfix/smtp[9940]: 69B8816E173: to=<m2@sts-enforce-bad-cert.test>, relay=mx1.sts-enforce-bad-cert.test[203.0.113.12]:25, delay=0.01, delays=0/0/0.01/0, dsn=4.7.5, status=deferred (Server certificate not verified)
Dec 02 18:39:38 sender postfix/pickup[9903]: 7029916E175: uid=0 from=<sender@sender.lab.test>
Dec 02 18:39:38 sender postfix/cleanup[9909]: 7029916E175: message-id=<2cd00fe187b64ababcb90e26a461d0f4@sender.lab.test>
Dec 02 18:39:38 sender postfix/qmgr[9904]: 7029916E175: from=<sender@sender.lab.test>, size=415, nrcpt=2 (queue active)
Dec 02 18:39:38 sender postfix/smtp[9916]: Verified TLS connection established to mx1.sts-enforce-ok.test[203.0.113.10]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:38 sender postfix/smtp[9958]: Verified TLS connection established to mx1.dane-ok.test[203.0.113.35]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:38 sender postfix/smtp[9916]: 7029916E175: to=<x1@sts-enforce-ok.test>, relay=mx1.sts-enforce-ok.test[203.0.113.10]:25, delay=0.03, delays=0/0/0.01/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: stored 1796236778481414612.a3edb2b332dc)
Dec 02 18:39:38 sender postfix/qmgr[9904]: E5BD916E13A: from=<sender@sender.lab.test>, size=507, nrcpt=1 (queue active)
Dec 02 18:39:38 sender postfix/smtp[9958]: 7029916E175: to=<x2@dane-ok.test>, relay=mx1.dane-ok.test[203.0.113.35]:25, delay=0.03, delays=0/0/0.02/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: stored 1796236778488898454.3740f6cf9b38)
Dec 02 18:39:38 sender postfix/qmgr[9904]: 8260F16E164: from=<sender@sender.lab.test>, size=475, nrcpt=1 (queue active)
Dec 02 18:39:38 sender postfix/qmgr[9904]: 7029916E175: removed
Dec 02 18:39:38 sender postfix/qmgr[9904]: 9E84816E16C: from=<sender@sender.lab.test>, size=482, nrcpt=1 (queue active)
Dec 02 18:39:38 sender postfix/qmgr[9904]: 63E4116E15A: from=<sender@sender.lab.test>, size=463, nrcpt=1 (queue active)
Dec 02 18:39:38 sender postfix/qmgr[9904]: 69B8816E173: from=<sender@sender.lab.test>, size=432, nrcpt=2 (queue active)
Dec 02 18:39:38 sender postfix/qmgr[9904]: F023B16E13B: from=<sender@sender.lab.test>, size=480, nrcpt=1 (queue active)
Dec 02 18:39:38 sender postfix/qmgr[9904]: C91B916E133: from=<sender@sender.lab.test>, size=483, nrcpt=1 (queue active)
Dec 02 18:39:38 sender postfix/qmgr[9904]: 0426B16E140: from=<sender@sender.lab.test>, size=475, nrcpt=1 (queue active)
Dec 02 18:39:38 sender postfix/smtp[10020]: warning: TLS policy lookup for dane-mandatory.test/mx1.dane-mandatory.test: no TLSA records found
Dec 02 18:39:38 sender postfix/smtp[10020]: 9E84816E16C: to=<1eafe2-1@dane-mandatory.test>, relay=none, delay=2.9, delays=2.9/0/0.01/0, dsn=4.7.5, status=deferred (no TLSA records found)
Dec 02 18:39:38 sender postfix/smtp[9959]: 8260F16E164: to=<1eafe2-1@bogus-dnssec.test>, relay=none, delay=3, delays=3/0/0.01/0, dsn=4.4.3, status=deferred (Host or domain name not found. Name service error for name=bogus-dnssec.test type=MX: Host not found, try again)
Dec 02 18:39:38 sender postfix/smtp[10030]: 0426B16E140: to=<1eafe2-1@sts-enforce-no-starttls.test>, relay=mx1.sts-enforce-no-starttls.test[203.0.113.18]:25, delay=3.5, delays=3.5/0.02/0.01/0, dsn=4.7.4, status=deferred (TLS is required, but was not offered by host mx1.sts-enforce-no-starttls.test[203.0.113.18])
Dec 02 18:39:38 sender postfix/smtp[9911]: server certificate verification failed for mx1.sts-enforce-mx-not-in-policy.test[203.0.113.14]:25: num=62:hostname mismatch
Dec 02 18:39:38 sender postfix/smtp[9911]: Untrusted TLS connection established to mx1.sts-enforce-mx-not-in-policy.test[203.0.113.14]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:38 sender postfix/smtp[9911]: E5BD916E13A: to=<1eafe2-1@sts-enforce-mx-not-in-policy.test>, relay=mx1.sts-enforce-mx-not-in-policy.test[203.0.113.14]:25, delay=3.6, delays=3.6/0/0.04/0, dsn=4.7.5, status=deferred (Server certificate not verified)
Dec 02 18:39:38 sender postfix/smtp[9958]: server certificate verification failed for mx1.sts-enforce-expired-cert.test[203.0.113.16]:25: certificate has expired
Dec 02 18:39:38 sender postfix/smtp[9958]: Untrusted TLS connection established to mx1.sts-enforce-expired-cert.test[203.0.113.16]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:38 sender postfix/smtp[9916]: server certificate verification failed for mx1.sts-enforce-bad-cert.test[203.0.113.12]:25: num=62:hostname mismatch
Dec 02 18:39:38 sender postfix/smtp[9916]: Untrusted TLS connection established to mx1.sts-enforce-bad-cert.test[203.0.113.12]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:38 sender postfix/smtp[9940]: server certificate verification failed for mx1.dane-mismatch.test[203.0.113.36]:25: num=65:no matching DANE TLSA records
Dec 02 18:39:38 sender postfix/smtp[9940]: Untrusted TLS connection established to mx1.dane-mismatch.test[203.0.113.36]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:38 sender postfix/smtp[10020]: server certificate verification failed for mx1.sts-enforce-bad-cert.test[203.0.113.12]:25: num=62:hostname mismatch
Dec 02 18:39:38 sender postfix/smtp[10020]: Untrusted TLS connection established to mx1.sts-enforce-bad-cert.test[203.0.113.12]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256
Dec 02 18:39:38 sender postfix/smtp[9958]: F023B16E13B: to=<1eafe2-1@sts-enforce-expired-cert.test>, relay=mx1.sts-enforce-expired-cert.test[203.0.113.16]:25, delay=3.6, delays=3.5/0/0.04/0, dsn=4.7.5, status=deferred (Server certificate not verified)
Dec 02 18:39:38 sender postfix/smtp[9916]: 69B8816E173: to=<m1@sts-enforce-bad-cert.test>, relay=mx1.sts-enforce-bad-cert.test[203.0.113.12]:25, delay=0.1, delays=0.06/0/0.04/0, dsn=4.7.5, status=deferred (Server certificate not verified)
Dec 02 18:39:38 sender postfix/smtp[9940]: 63E4116E15A: to=<1eafe2-1@dane-mismatch.test>, relay=mx1.dane-mismatch.test[203.0.113.36]:25, delay=3.1, delays=3.1/0/0.04/0, dsn=4.7.5, status=deferred (Server certificate not verified)
Dec 02 18:39:38 sender postfix/smtp[10020]: C91B916E133: to=<1eafe2-1@sts-enforce-bad-cert.test>, relay=mx1.sts-enforce-bad-cert.test[203.0.113.12]:25, delay=3.7, delays=3.7/0.02/0.02/0, dsn=4.7.5, status=deferred (Server certificate not verified)
Dec 02 18:39:38 sender postfix/smtp[9916]: 69B8816E173: to=<m2@sts-enforce-bad-cert.test>, relay=mx1.sts-enforce-bad-cert.test[203.0.113.12]:25, delay=0.1, delays=0.06/0/0.04/0, dsn=4.7.5, status=deferred (Server certificate not verified)
"""


# ------------------------------------------------------------------------------------------------ helpers


def line(msg: str, pid: int = 100, stamp: str = "Dec  2 18:00:01", prog: str = "postfix/smtp") -> str:
    return f"{stamp} sender {prog}[{pid}]: {msg}"


def status(qid: str, rcpt: str, relay: str, state: str = "sent", reason: str = "250 2.0.0 Ok: queued as 4XY",
           dsn: str = "2.0.0", conn_use: int | None = None, pid: int = 100, **kwargs) -> str:
    use = f"conn_use={conn_use}, " if conn_use else ""
    return line(f"{qid}: to=<{rcpt}>, relay={relay}, {use}delay=0.52, delays=0.01/0/0.21/0.3, dsn={dsn}, "
                f"status={state} ({reason})", pid, **kwargs)


def tls(trust: str, host: str = "mx1.example.com", addr: str = "192.0.2.1", pid: int = 100,
        usage: str = "established") -> str:
    return line(f"{trust} TLS connection {usage} to {host}[{addr}]:25: {CIPHER}", pid)


def parse(lines: list[str], **kwargs) -> list[Attempt]:
    parser = PostfixLogParser(year=2026, **kwargs)
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


MX1 = "mx1.example.com[192.0.2.1]:25"
MX2 = "mx2.example.com[192.0.2.2]:25"
MX3 = "mx3.example.com[192.0.2.3]:25"
Q = "3F2A41C0D2"
DEFER_CERT = {"state": "deferred", "dsn": "4.7.5", "reason": "Server certificate not verified"}


def verify_failed(detail: str, who: str = "server ", namaddr: str = MX1, pid: int = 100) -> str:
    return line(f"{who}certificate verification failed for {namaddr}: {detail}", pid)


def cert_case(detail: str, who: str = "server ") -> list[str]:
    return [verify_failed(detail, who), tls("Untrusted"), status(Q, "a@example.com", MX1, **DEFER_CERT)]


def ok(domain: str = "example.com", recipients: int = 1, host: str = "mx1.example.com", addr: str = "192.0.2.1",
       trust: TlsOutcome = V, dane: bool = False) -> tuple:
    return (domain, recipients, host, addr, trust, dane, None, None)


def fail(result: ResultType, code: str | None, trust: TlsOutcome = U, domain: str = "example.com",
         recipients: int = 1, host: str | None = "mx1.example.com", addr: str | None = "192.0.2.1") -> tuple:
    return (domain, recipients, host, addr, trust, False, result, code)


# ------------------------------------------------------------------------------------------------ the table

CASES: list[tuple[str, list[str], list[tuple]]] = [
    ("verified delivery", [tls("Verified"), status(Q, "a@example.com", MX1)], [ok()]),
    ("trusted and anonymous deliveries (opportunistic TLS)", [
        tls("Trusted"), status(Q, "a@example.com", MX1),
        tls("Anonymous", pid=101), status("4B4B4B4B4B", "b@example.org", MX1, pid=101),
    ], [ok(trust=T), ok("example.org", trust=A)]),
    ("one session, three recipients, other processes in between", [
        tls("Verified"),
        status(Q, "a@example.com", MX1),
        tls("Verified", "mx.example.net", "198.51.100.7", pid=200),
        status(Q, "b@example.com", MX1),
        line("5C5C5C5C5C: removed", 300, prog="postfix/qmgr"),
        status(Q, "C@Example.COM", MX1),
        status("6D6D6D6D6D", "z@example.net", "mx.example.net[198.51.100.7]:25", pid=200),
    ], [ok(recipients=3), ok("example.net", host="mx.example.net", addr="198.51.100.7")]),
    ("hostname mismatch (num=62)", cert_case("num=62:hostname mismatch"),
     [fail(RT.CERTIFICATE_HOST_MISMATCH, "num=62:hostname mismatch")]),
    ("IP address mismatch (num=64)", cert_case("num=64:IP address mismatch"),
     [fail(RT.CERTIFICATE_HOST_MISMATCH, "num=64:IP address mismatch")]),
    ("expired", cert_case("certificate has expired"), [fail(RT.CERTIFICATE_EXPIRED, "certificate has expired")]),
    ("expired CA certificate", cert_case("certificate has expired", who="CA "),
     [fail(RT.CERTIFICATE_EXPIRED, "certificate has expired")]),
    ("not yet valid", cert_case("certificate not yet valid"),
     [fail(RT.CERTIFICATE_EXPIRED, "certificate not yet valid")]),
    ("untrusted issuer", cert_case("untrusted issuer /C=US/O=Example/CN=Example Issuing CA", who=""),
     [fail(RT.CERTIFICATE_NOT_TRUSTED, "untrusted issuer /C=US/O=Example/CN=Example Issuing CA")]),
    ("self-signed", cert_case("self-signed certificate", who=""),
     [fail(RT.CERTIFICATE_NOT_TRUSTED, "self-signed certificate")]),
    ("not trusted by local or TLSA policy", cert_case("not trusted by local or TLSA policy", who=""),
     [fail(RT.CERTIFICATE_NOT_TRUSTED, "not trusted by local or TLSA policy")]),
    ("no matching DANE TLSA records (num=65)", cert_case("num=65:no matching DANE TLSA records"),
     [fail(RT.VALIDATION_FAILURE, "num=65:no matching DANE TLSA records")]),
    ("not designated for use as a server certificate", cert_case(
        "not designated for use as a server certificate", who=""),
     [fail(RT.VALIDATION_FAILURE, "not designated for use as a server certificate")]),
    ("Server certificate not verified, Trusted and no detail line", [
        tls("Trusted"), status(Q, "a@example.com", MX1, **DEFER_CERT)],
     [fail(RT.CERTIFICATE_HOST_MISMATCH, "Server certificate not verified", T)]),
    ("Server certificate not verified, Untrusted and no detail line", [
        tls("Untrusted"), status(Q, "a@example.com", MX1, **DEFER_CERT)],
     [fail(RT.CERTIFICATE_NOT_TRUSTED, "Server certificate not verified")]),
    ("TLS is required, but was not offered", [
        status(Q, "a@example.com", MX1, "deferred", "TLS is required, but was not offered by host "
               "mx1.example.com[192.0.2.1]", "4.7.4")],
     [fail(RT.STARTTLS_NOT_SUPPORTED, "TLS is required, but was not offered", N)]),
    ("TLS is required, but host refused to start TLS", [
        status(Q, "a@example.com", MX1, "deferred", "TLS is required, but host mx1.example.com[192.0.2.1] refused "
               "to start TLS: 454 4.7.0 TLS not available due to local problem", "4.7.5")],
     [fail(RT.STARTTLS_NOT_SUPPORTED, "TLS is required, but host refused to start TLS", N)]),
    ("handshake failure, then the plaintext retry at level may (one attempt)", [
        line(f"SSL_connect error to {MX1}: -1"),
        line("warning: TLS library problem: error:0A000410:SSL routines::sslv3 alert handshake failure:"
             "../ssl/record/rec_layer_s3.c:1584:SSL alert number 40:"),
        line(f"{Q}: Cannot start TLS: handshake failure"),
        status(Q, "a@example.com", MX1),
    ], [fail(RT.VALIDATION_FAILURE, "Cannot start TLS: handshake failure", N)]),
    ("three MX hosts: refused connection, no STARTTLS, bad certificate, then delivered", [
        line("connect to mx0.example.com[192.0.2.9]:25: Connection refused"),
        line(f"{Q}: TLS is required, but was not offered by host mx1.example.com[192.0.2.1]"),
        verify_failed("num=62:hostname mismatch", namaddr=MX2),
        tls("Untrusted", "mx2.example.com", "192.0.2.2"),
        line(f"{Q}: Server certificate not verified"),
        tls("Verified", "mx3.example.com", "192.0.2.3"),
        status(Q, "a@example.com", MX3),
        status(Q, "b@example.com", MX3),
    ], [
        fail(RT.STARTTLS_NOT_SUPPORTED, "TLS is required, but was not offered", N, recipients=2),
        fail(RT.CERTIFICATE_HOST_MISMATCH, "num=62:hostname mismatch", recipients=2, host="mx2.example.com",
             addr="192.0.2.2"),
        ok(recipients=2, host="mx3.example.com", addr="192.0.2.3"),
    ]),
    ("all MX hosts fail: the last one's failure is in the status lines", [
        line(f"{Q}: TLS is required, but was not offered by host mx1.example.com[192.0.2.1]"),
        verify_failed("certificate has expired", namaddr=MX2),
        tls("Untrusted", "mx2.example.com", "192.0.2.2"),
        status(Q, "a@example.com", MX2, **DEFER_CERT),
    ], [
        fail(RT.STARTTLS_NOT_SUPPORTED, "TLS is required, but was not offered", N),
        fail(RT.CERTIFICATE_EXPIRED, "certificate has expired", host="mx2.example.com", addr="192.0.2.2"),
    ]),
    ("TLSA lookup error (SERVFAIL)", [
        line("warning: DANE TLSA lookup problem: Host or domain name not found. Name service error for "
             "name=_25._tcp.mx1.example.com type=TLSA: Host not found, try again"),
        line("warning: TLS policy lookup for example.com/mx1.example.com: TLSA lookup error for mx1.example.com:25"),
        status(Q, "a@example.com", "none", "deferred", "TLSA lookup error for mx1.example.com:25", "4.7.5"),
    ], [fail(RT.DNSSEC_INVALID, "TLSA lookup error", N, addr=None)]),
    ("TLSA lookup error without the warning line", [
        status(Q, "a@example.com", "none", "deferred", "TLSA lookup error for mx1.example.com:25", "4.7.5"),
    ], [fail(RT.DNSSEC_INVALID, "TLSA lookup error", N, addr=None)]),
    ("dane-only: no TLSA records found", [
        line("warning: TLS policy lookup for example.com/mx1.example.com: no TLSA records found"),
        status(Q, "a@example.com", "none", "deferred", "no TLSA records found", "4.7.5"),
    ], [fail(RT.DANE_REQUIRED, "no TLSA records found", N, addr=None)]),
    ("dane-only: non DNSSEC destination", [
        line("warning: TLS policy lookup for example.com/mx1.example.com: non DNSSEC destination"),
        status(Q, "a@example.com", "none", "deferred", "non DNSSEC destination", "4.7.5"),
    ], [fail(RT.DANE_REQUIRED, "non DNSSEC destination", N, addr=None)]),
    ("dane-only: TLSA records unusable", [
        line("warning: TLS policy lookup for example.com/mx1.example.com: TLSA records unusable"),
        status(Q, "a@example.com", "none", "deferred", "TLSA records unusable", "4.7.5"),
    ], [fail(RT.TLSA_INVALID, "TLSA records unusable", N, addr=None)]),
    ("two MX hosts, both without TLSA (dane-only): one attempt each", [
        line("warning: TLS policy lookup for example.com/mx1.example.com: no TLSA records found"),
        line("warning: TLS policy lookup for example.com/mx2.example.com: no TLSA records found"),
        status(Q, "a@example.com", "none", "deferred", "no TLSA records found", "4.7.5"),
    ], [fail(RT.DANE_REQUIRED, "no TLSA records found", N, addr=None),
        fail(RT.DANE_REQUIRED, "no TLSA records found", N, host="mx2.example.com", addr=None)]),
    ("dane: all TLSA records unusable, fallback to unauthenticated TLS", [
        line(f"warning: {MX1}: all TLSA records unusable, fallback to unauthenticated TLS"),
        tls("Untrusted"), status(Q, "a@example.com", MX1),
    ], [fail(RT.TLSA_INVALID, "all TLSA records unusable")]),
    ("dane-only: all TLSA records unusable", [
        line(f"warning: {MX1}: all TLSA records unusable"),
        verify_failed("num=1:unspecified certificate verification error", who="server "),
        tls("Untrusted"), status(Q, "a@example.com", MX1, **DEFER_CERT),
    ], [fail(RT.TLSA_INVALID, "all TLSA records unusable")]),
    ("DANE authentication logged (smtp_tls_loglevel 2)", [
        line(f"{MX1}: Matched DANE EE certificate at depth 0: 3 1 1 "
             "8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1"),
        tls("Verified"), status(Q, "a@example.com", MX1),
    ], [ok(dane=True)]),
    ("Postfix 3.10 external policy failure", [
        line(f"certificate verification failed for {MX1}: external policy failure (sts-webpki-invalid)"),
        tls("Untrusted"), status(Q, "a@example.com", MX1, **DEFER_CERT),
    ], [fail(RT.STS_WEBPKI_INVALID, "external policy failure (sts-webpki-invalid)")]),
    ("connection refused: no attempt", [
        line("connect to mx1.example.com[192.0.2.1]:25: Connection refused"),
        status(Q, "a@example.com", "none", "deferred", "connect to mx1.example.com[192.0.2.1]:25: Connection refused",
               "4.4.1"),
    ], []),
    ("connection timed out: no attempt", [
        status(Q, "a@example.com", "none", "deferred", "connect to mx1.example.com[192.0.2.1]:25: Connection timed "
               "out", "4.4.1"),
    ], []),
    ("lost connection before STARTTLS: no attempt", [
        status(Q, "a@example.com", MX1, "deferred", "lost connection with mx1.example.com[192.0.2.1] while receiving "
               "the initial server greeting", "4.4.2"),
    ], []),
    ("4xx greeting: no attempt", [
        status(Q, "a@example.com", MX1, "deferred", "host mx1.example.com[192.0.2.1] refused to talk to me: 421 4.3.2 "
               "Service shutting down", "4.3.2"),
    ], []),
    ("DNS failure: no attempt", [
        status(Q, "a@example.com", "none", "deferred", "Host or domain name not found. Name service error for "
               "name=example.com type=MX: Host not found, try again", "4.4.3"),
    ], []),
    ("our own TLS engine unavailable: no attempt", [
        status(Q, "a@example.com", MX1, "deferred", "TLS is required, but our TLS engine is unavailable", "4.7.5"),
    ], []),
    ("greylisted after TLS: a successful TLS session", [
        tls("Verified"),
        status(Q, "a@example.com", MX1, "deferred", "host mx1.example.com[192.0.2.1] said: 450 4.7.1 Greylisted, "
               "try again later (in reply to RCPT TO command)", "4.7.1"),
    ], [ok()]),
    ("greylisted in plaintext: the session reached the transaction without TLS", [
        status(Q, "a@example.com", MX1, "deferred", "host mx1.example.com[192.0.2.1] said: 450 4.7.1 Greylisted "
               "(in reply to RCPT TO command)", "4.7.1"),
    ], [ok(trust=N)]),
    ("plaintext delivery (no STARTTLS offered, level may)", [status(Q, "a@example.com", MX1)], [ok(trust=N)]),
    ("first MX lost the connection before TLS, second delivered", [
        line(f"{Q}: lost connection with mx1.example.com[192.0.2.1] while receiving the initial server greeting"),
        tls("Verified", "mx2.example.com", "192.0.2.2"), status(Q, "a@example.com", MX2),
    ], [ok(host="mx2.example.com", addr="192.0.2.2")]),
    ("first MX dropped the connection after TLS, second delivered: two TLS sessions", [
        tls("Verified"),
        line(f"{Q}: lost connection with mx1.example.com[192.0.2.1] while sending end of data -- message may be "
             "sent more than once"),
        tls("Verified", "mx2.example.com", "192.0.2.2"), status(Q, "a@example.com", MX2),
    ], [ok(), ok(host="mx2.example.com", addr="192.0.2.2")]),
    ("one recipient refused at RCPT, the other delivered: one session", [
        tls("Verified"),
        line(f"{Q}: host mx1.example.com[192.0.2.1] said: 452 4.2.2 Mailbox full (in reply to RCPT TO command)"),
        status(Q, "b@example.com", MX1),
        status(Q, "a@example.com", MX1, "deferred", "host mx1.example.com[192.0.2.1] said: 452 4.2.2 Mailbox full "
               "(in reply to RCPT TO command)", "4.2.2"),
    ], [ok(recipients=2)]),
    ("connection cache: later messages over the same TLS connection are no new sessions", [
        tls("Verified"),
        status(Q, "a@example.com", MX1),
        status("7E7E7E7E7E", "b@example.com", MX1, conn_use=2),
        status("8F8F8F8F8F", "c@example.com", MX1, conn_use=3),
        tls("Verified", usage="reused", pid=101),
        status("9A9A9A9A9A", "d@example.com", MX1, conn_use=2, pid=101),
    ], [ok()]),
    ("one session, two recipient domains: one attempt per domain", [
        tls("Verified"), status(Q, "a@example.com", MX1), status(Q, "b@example.net", MX1),
        status(Q, "c@example.net", MX1),
    ], [ok(), ok("example.net", recipients=2)]),
    ("IDN recipient domain becomes an A-label", [tls("Verified"), status(Q, "jörg@bücher.example", MX1)],
     [ok("xn--bcher-kva.example")]),
    ("a recipient domain that does not normalise is left out", [
        tls("Verified"), status(Q, "a@exa_mple..com", MX1)], []),
    ("lmtp is not SMTP: ignored", [
        line(f"Verified TLS connection established to {MX1}: {CIPHER}", prog="postfix/lmtp"),
        line(f"{Q}: to=<a@example.com>, relay={MX1}, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
             prog="postfix/lmtp"),
    ], []),
    ("other syslog names and services", [
        line(f"Verified TLS connection established to {MX1}: {CIPHER}", prog="postfix-lab/smtp"),
        line(f"{Q}: to=<a@example.com>, relay={MX1}, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
             prog="postfix-lab/smtp"),
        line(f"Trusted TLS connection established to {MX2}: {CIPHER}", pid=7, prog="postfix/smtp-tlsrpt"),
        line(f"AB12CD34EF: to=<b@example.org>, relay={MX2}, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
             pid=7, prog="postfix/smtp-tlsrpt"),
        line(f"Untrusted TLS connection established to {MX3}: {CIPHER}", pid=8, prog="postfix/relay/smtp"),
        line(f"CD12CD34EF: to=<c@example.net>, relay={MX3}, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
             pid=8, prog="postfix/relay/smtp"),
    ], [ok(), ok("example.org", host="mx2.example.com", addr="192.0.2.2", trust=T),
        ok("example.net", host="mx3.example.com", addr="192.0.2.3", trust=U)]),
    ("RFC 3339 and maillog_file prefixes", [
        f"2026-12-02T18:00:01.123456+00:00 sender postfix/smtp[100]: Verified TLS connection established to {MX1}: "
        + CIPHER,
        f"2026-12-02T18:00:01.223456+00:00 sender postfix/smtp[100]: {Q}: to=<a@example.com>, relay={MX1}, "
        "delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
        line(f"Verified TLS connection established to {MX2}: {CIPHER}", pid=5, stamp="Dec 02 18:00:02"),
        line(f"AB12CD34EF: to=<b@example.org>, relay={MX2}, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (ok)",
             pid=5, stamp="Dec 02 18:00:02"),
    ], [ok(), ok("example.org", host="mx2.example.com", addr="192.0.2.2")]),
    ("IPv6 MX address", [
        tls("Verified", addr="2001:DB8::25"),
        status(Q, "a@example.com", "mx1.example.com[2001:DB8::25]:25"),
    ], [ok(addr="2001:db8::25")]),
]


@pytest.mark.parametrize(("name", "lines", "expected"), CASES, ids=[c[0] for c in CASES])
def test_log_excerpt_gives_attempts(name: str, lines: list[str], expected: list[tuple]) -> None:
    assert table(parse(lines)) == sorted(expected, key=repr)


# ------------------------------------------------------------------------------------------------ a real log


REAL_EXPECTED = [
    # (queue id, domain, recipients, mx host, tls, result type, failure reason), in log order
    ("AD22A16E130", "sts-enforce-ok.test", 1, "mx1.sts-enforce-ok.test", V, None, None),
    ("C91B916E133", "sts-enforce-bad-cert.test", 1, "mx1.sts-enforce-bad-cert.test", U,
     RT.CERTIFICATE_HOST_MISMATCH, "num=62:hostname mismatch"),
    ("E5BD916E13A", "sts-enforce-mx-not-in-policy.test", 1, "mx1.sts-enforce-mx-not-in-policy.test", U,
     RT.CERTIFICATE_HOST_MISMATCH, "num=62:hostname mismatch"),
    ("F023B16E13B", "sts-enforce-expired-cert.test", 1, "mx1.sts-enforce-expired-cert.test", U,
     RT.CERTIFICATE_EXPIRED, "certificate has expired"),
    ("0EA7916E145", "sts-testing-bad-cert.test", 1, "mx1.sts-testing-bad-cert.test", T, None, None),
    ("5C17816E159", "dane-ok.test", 1, "mx1.dane-ok.test", V, None, None),
    ("63E4116E15A", "dane-mismatch.test", 1, "mx1.dane-mismatch.test", U, RT.VALIDATION_FAILURE,
     "num=65:no matching DANE TLSA records"),
    ("91C2516E16A", "dane-cname-mx.test", 1, "alias.dane-cname-mx.test", V, None, None),
    ("0426B16E140", "sts-enforce-no-starttls.test", 1, "mx1.sts-enforce-no-starttls.test", N,
     RT.STARTTLS_NOT_SUPPORTED, "TLS is required, but was not offered"),
    ("619F016E172", "sts-enforce-ok.test", 3, "mx1.sts-enforce-ok.test", V, None, None),
    ("9E84816E16C", "dane-mandatory.test", 1, "mx1.dane-mandatory.test", N, RT.DANE_REQUIRED,
     "no TLSA records found"),
    ("7029916E175", "dane-ok.test", 1, "mx1.dane-ok.test", V, None, None),
    ("7029916E175", "sts-enforce-ok.test", 1, "mx1.sts-enforce-ok.test", V, None, None),
    ("69B8816E173", "sts-enforce-bad-cert.test", 2, "mx1.sts-enforce-bad-cert.test", U,
     RT.CERTIFICATE_HOST_MISMATCH, "num=62:hostname mismatch"),
    ("9E84816E16C", "dane-mandatory.test", 1, "mx1.dane-mandatory.test", N, RT.DANE_REQUIRED,
     "no TLSA records found"),
    ("0426B16E140", "sts-enforce-no-starttls.test", 1, "mx1.sts-enforce-no-starttls.test", N,
     RT.STARTTLS_NOT_SUPPORTED, "TLS is required, but was not offered"),
    ("E5BD916E13A", "sts-enforce-mx-not-in-policy.test", 1, "mx1.sts-enforce-mx-not-in-policy.test", U,
     RT.CERTIFICATE_HOST_MISMATCH, "num=62:hostname mismatch"),
    ("F023B16E13B", "sts-enforce-expired-cert.test", 1, "mx1.sts-enforce-expired-cert.test", U,
     RT.CERTIFICATE_EXPIRED, "certificate has expired"),
    ("63E4116E15A", "dane-mismatch.test", 1, "mx1.dane-mismatch.test", U, RT.VALIDATION_FAILURE,
     "num=65:no matching DANE TLSA records"),
    ("C91B916E133", "sts-enforce-bad-cert.test", 1, "mx1.sts-enforce-bad-cert.test", U,
     RT.CERTIFICATE_HOST_MISMATCH, "num=62:hostname mismatch"),
    ("69B8816E173", "sts-enforce-bad-cert.test", 2, "mx1.sts-enforce-bad-cert.test", U,
     RT.CERTIFICATE_HOST_MISMATCH, "num=62:hostname mismatch"),
]


def test_real_postfix_37_log_from_the_lab() -> None:
    """The lab's real Postfix 3.7: one attempt per TLS handshake / STARTTLS failure / DANE policy failure; the
    interleaved status lines of 69B8816E173 (two recipients, other processes in between) are one session."""
    attempts = parse(REAL_POSTFIX_LOG.splitlines())
    got = [(a.queue_id, a.domain, a.recipients, a.mx_host, a.tls, a.result_type, a.failure_reason_code)
           for a in attempts]
    assert sorted(got, key=repr) == sorted(REAL_EXPECTED, key=repr)
    handshakes = REAL_POSTFIX_LOG.count("TLS connection established")
    no_tls = REAL_POSTFIX_LOG.count("status=deferred (TLS is required") + REAL_POSTFIX_LOG.count("TLS policy lookup")
    assert len(attempts) == handshakes + no_tls
    first = next(a for a in attempts if a.queue_id == "AD22A16E130")
    assert first.time == datetime(2026, 12, 2, 18, 39, 34, tzinfo=UTC)
    assert first.message_id == "a56fb2881fcd4604a773df87349fcb7e@sender.lab.test"
    assert first.mx_ip == "203.0.113.10" and first.mta == "postfix" and not first.dane
    assert all(a.message_id and a.message_id.endswith("@sender.lab.test") for a in attempts)


# ------------------------------------------------------------------------------------------------ behaviour


def test_message_id_comes_from_cleanup_and_is_forgotten_when_removed() -> None:
    parser = PostfixLogParser(year=2026)
    parser.feed(line(f"{Q}: message-id=<report.1@mxsec.example>", 9, prog="postfix/cleanup"))
    parser.feed(line("AAAAAAAAAA: message-id=no-brackets@x.example", 9, prog="postfix/cleanup"))
    parser.feed(line("BBBBBBBBBB: message-id=<>", 9, prog="postfix/cleanup"))
    parser.feed(line("CCCCCCCCCC: resent-message-id=<r@x.example>", 9, prog="postfix/cleanup"))
    out = []
    for qid in (Q, "AAAAAAAAAA", "BBBBBBBBBB", "CCCCCCCCCC"):
        out += parser.feed(tls("Verified"))
        out += parser.feed(status(qid, "a@example.com", MX1))
    out += parser.flush()
    assert [a.message_id for a in out] == ["report.1@mxsec.example", "no-brackets@x.example", None, None]
    before = parser.state_size
    parser.feed(line(f"{Q}: removed", 10, prog="postfix/qmgr"))
    assert parser.state_size == before - 1


def test_sessions_close_after_linger_lines_and_late_lines_are_not_counted_again() -> None:
    parser = PostfixLogParser(year=2026, linger=3)
    assert parser.feed(tls("Verified")) == []
    assert parser.feed(status(Q, "a@example.com", MX1)) == []
    assert parser.feed(status(Q, "b@example.com", MX1)) == []
    out = []
    for n in range(4):
        out += parser.feed(line(f"connect from client{n}.example.net[198.51.100.{n}]", 50 + n, prog="postfix/smtpd"))
    assert [(a.domain, a.recipients) for a in out] == [("example.com", 2)]
    assert parser.feed(status(Q, "c@example.com", MX1)) == []  # a straggler of the same burst
    assert parser.flush() == []


def test_flush_emits_and_later_lines_of_the_session_are_not_counted_again() -> None:
    parser = PostfixLogParser(year=2026)
    parser.feed(tls("Verified"))
    parser.feed(status(Q, "a@example.com", MX1))
    assert [a.recipients for a in parser.flush()] == [1]
    assert parser.feed(status(Q, "b@example.com", MX1)) == []
    assert parser.flush() == []


def test_the_next_line_of_the_same_process_closes_the_session() -> None:
    parser = PostfixLogParser(year=2026)
    parser.feed(tls("Verified"))
    parser.feed(status(Q, "a@example.com", MX1))
    out = parser.feed(tls("Verified", "mx2.example.com", "192.0.2.2"))
    assert [(a.mx_host, a.recipients) for a in out] == [("mx1.example.com", 1)]


def test_feeding_the_same_lines_again_counts_them_again() -> None:
    """Resume safety is the caller's job: the parser is no deduplicator of its input (module docstring)."""
    lines = [tls("Verified"), status(Q, "a@example.com", MX1), tls("Verified"), status(Q, "a@example.com", MX1)]
    assert len(parse(lines)) == 2
    # Only a status line without handshake lines of its own that repeats a session just closed (same process,
    # queue id and relay, within STRAGGLER_SECONDS) is taken for a late line of that session.
    plain = [status(Q, "a@example.com", MX1, "deferred", "TLS is required, but was not offered by host "
                    "mx1.example.com[192.0.2.1]", "4.7.4")]
    assert len(parse(plain * 2)) == 1
    later = [status(Q, "a@example.com", MX1, "deferred", "TLS is required, but was not offered by host "
                    "mx1.example.com[192.0.2.1]", "4.7.4", stamp="Dec  2 18:05:01")]
    assert len(parse(plain + later)) == 2


def test_several_lines_in_one_feed_and_bytes() -> None:
    text = "\r\n".join([tls("Verified"), status(Q, "a@example.com", MX1)]) + "\r\n"
    parser = PostfixLogParser(year=2026)
    assert parser.feed(text.encode()) == []
    assert [a.domain for a in parser.flush()] == ["example.com"]
    assert parser.stats.lines == 2


def test_stats_count_lines_attempts_and_dropped() -> None:
    parser = PostfixLogParser(year=2026)
    for text in (tls("Verified"), status(Q, "a@exa_mple..com", MX1), "garbage"):
        parser.feed(text)
    parser.flush()
    stats = parser.stats
    assert (stats.lines, stats.attempts, stats.dropped, stats.errors) == (3, 0, 1, 0)


# ------------------------------------------------------------------------------------------------ time stamps


def test_syslog_stamp_needs_a_year_or_a_clock() -> None:
    lines = [tls("Verified"), status(Q, "a@example.com", MX1)]
    assert [a.time for a in parse(lines)] == [datetime(2026, 12, 2, 18, 0, 1, tzinfo=UTC)]
    parser = PostfixLogParser()
    for text in lines:
        parser.feed(text)
    assert [a.time for a in parser.flush()] == [None]


def test_syslog_stamp_in_a_local_zone() -> None:
    attempts = parse([tls("Verified"), status(Q, "a@example.com", MX1)], tz=timezone(timedelta(hours=1)))
    assert attempts[0].time == datetime(2026, 12, 2, 17, 0, 1, tzinfo=UTC)


def test_rfc3339_stamp_brings_its_own_year_and_zone() -> None:
    text = (f"2027-01-05T00:30:00.5+02:00 sender postfix/smtp[1]: {Q}: to=<a@example.com>, relay={MX1}, delay=1, "
            "delays=0/0/0/1, dsn=2.0.0, status=sent (ok)")
    attempts = parse([f"2027-01-05T00:30:00.4+02:00 sender postfix/smtp[1]: Verified TLS connection established "
                      f"to {MX1}: {CIPHER}", text])
    assert attempts[0].time == datetime(2027, 1, 4, 22, 30, 0, 500000, tzinfo=UTC)
    assert attempts[0].day.isoformat() == "2027-01-04"


def test_stamp_reader_year_rollover_and_clock() -> None:
    reader = StampReader(year=2026)
    assert reader.syslog("Dec", "31", "23:59:59") == datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert reader.syslog("Jan", " 1", "00:00:01") == datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert reader.syslog("Dec", "31", "23:59:58") == datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC)  # a late line
    assert reader.syslog("Jan", "02", "10:00:00") == datetime(2027, 1, 2, 10, 0, tzinfo=UTC)
    assert reader.syslog("Feb", "30", "10:00:00") is None and reader.syslog("Foo", "1", "10:00:00") is None
    clock = StampReader(clock=lambda: datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    assert clock.syslog("Dec", "31", "23:59:00") == datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert clock.syslog("Jan", " 1", "00:04:00") == datetime(2027, 1, 1, 0, 4, tzinfo=UTC)
    assert StampReader().iso("2026-12-02 18:00:01 +0100") == datetime(2026, 12, 2, 17, 0, 1, tzinfo=UTC)
    assert StampReader().iso("2026-12-02T18:00:01Z") == datetime(2026, 12, 2, 18, 0, 1, tzinfo=UTC)
    assert StampReader().iso("2026-13-02T18:00:01Z") is None


# ------------------------------------------------------------------------------------------------ helpers of attempt.py


@pytest.mark.parametrize(("text", "expected"), [
    ("num=62:hostname mismatch", RT.CERTIFICATE_HOST_MISMATCH),
    ("num=64:IP address mismatch", RT.CERTIFICATE_HOST_MISMATCH),
    ("certificate name mismatch", RT.CERTIFICATE_HOST_MISMATCH),
    ("certificate has expired", RT.CERTIFICATE_EXPIRED),
    ("certificate not yet valid", RT.CERTIFICATE_EXPIRED),
    ("num=10:certificate has expired", RT.CERTIFICATE_EXPIRED),
    ("untrusted issuer /CN=x", RT.CERTIFICATE_NOT_TRUSTED),
    ("self-signed certificate", RT.CERTIFICATE_NOT_TRUSTED),
    ("self signed certificate in certificate chain", RT.CERTIFICATE_NOT_TRUSTED),
    ("unable to get local issuer certificate", RT.CERTIFICATE_NOT_TRUSTED),
    ("num=23:certificate revoked", RT.CERTIFICATE_NOT_TRUSTED),
    ("not trusted by local or TLSA policy", RT.CERTIFICATE_NOT_TRUSTED),
    ("num=65:no matching DANE TLSA records", RT.VALIDATION_FAILURE),
    ("num=7:certificate signature failure", RT.VALIDATION_FAILURE),
    ("certificate chain longer than limit(9)", RT.VALIDATION_FAILURE),
])
def test_classify_certificate_error(text: str, expected: ResultType) -> None:
    assert classify_certificate_error(text) is expected


def test_text_helpers() -> None:
    assert list(iter_lines(b"a\r\nb\n\nc\xff")) == ["a", "b", "c\ufffd"]
    assert list(iter_lines("x" * (MAX_LINE_CHARS + 10))) == ["x" * MAX_LINE_CHARS]
    assert list(iter_lines(None)) == []  # type: ignore[arg-type]
    assert clean_reason("a\x1b[31mb\x00") == "a?[31mb?"
    assert len(clean_reason("y" * 1000)) == 200
    assert mx_host("MX1.Example.COM.") == "mx1.example.com"
    assert mx_host("unknown") is None and mx_host("bad host") is None and mx_host("a\x1b") is None
    assert mx_ip("2001:DB8::1") == "2001:db8::1" and mx_ip("192.0.2.1") == "192.0.2.1"
    assert mx_ip("999.1.1.1") is None and mx_ip("IPv6:::1") == "::1" and mx_ip("") is None


def test_session_deduper_caps_open_sessions_and_tombstones() -> None:
    from mxsec.tlsrpt.attempt import Draft

    dedup = SessionDeduper(linger=1000, max_open=3, tombstone_lines=5, max_tombstones=2)
    emitted = []
    for n in range(6):
        emitted += dedup.open(n, Draft("postfix"))
    assert len(dedup) == 3 and len(emitted) == 3 and dedup.evicted == 3
    assert dedup.remembered == 2 and dedup.recent(2) is not None and dedup.recent(0) is None
    for _ in range(10):
        dedup.tick()
    assert dedup.remembered == 0


# ------------------------------------------------------------------------------------------------ properties

FRAGMENTS = [
    "Verified TLS connection established to {h}[{a}]:25: " + CIPHER,
    "Untrusted TLS connection reused to {h}[{a}]:25: " + CIPHER,
    "server certificate verification failed for {h}[{a}]:25: num=62:hostname mismatch",
    "certificate verification failed for {h}[{a}]:25: untrusted issuer /CN=x",
    "SSL_connect error to {h}[{a}]:25: -1",
    "warning: {h}[{a}]:25: all TLSA records unusable",
    "warning: TLS policy lookup for {d}/{h}: TLSA lookup error for {h}:25",
    "warning: TLS policy lookup for {d}/{h}: no TLSA records found",
    "connect to {h}[{a}]:25: Connection refused",
    "{q}: TLS is required, but was not offered by host {h}[{a}]",
    "{q}: Server certificate not verified",
    "{q}: Cannot start TLS: handshake failure",
    "{q}: lost connection with {h}[{a}] while sending RCPT TO",
    "{q}: host {h}[{a}] said: 450 4.7.1 try later (in reply to RCPT TO command)",
    "{q}: to=<u@{d}>, relay={h}[{a}]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
    "{q}: to=<u@{d}>, relay={h}[{a}]:25, conn_use=2, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)",
    "{q}: to=<u@{d}>, relay={h}[{a}]:25, delay=1, delays=0/0/0/1, dsn=4.7.5, status=deferred (Server certificate "
    "not verified)",
    "{q}: to=<u@{d}>, relay=none, delay=1, delays=0/0/0/1, dsn=4.7.5, status=deferred (TLSA lookup error for {h}:25)",
    "{q}: to=<u@{d}>, relay={h}[{a}]:25, delay=1, delays=0/0/0/1, dsn=4.7.4, status=deferred (TLS is required, but "
    "was not offered by host {h}[{a}])",
]


@st.composite
def log_lines(draw: st.DrawFn) -> str:
    fragment = draw(st.sampled_from(FRAGMENTS))
    text = fragment.format(
        h=draw(st.sampled_from(["mx1.example.com", "MX2.example.com.", "", "a b", "x\x00y", "ü.example"])),
        a=draw(st.sampled_from(["192.0.2.1", "2001:db8::1", "", "not-an-ip", "999.9.9.9"])),
        d=draw(st.sampled_from(["example.com", "bücher.example", "", "-bad-", "x" * 300])),
        q=draw(st.sampled_from(["3F2A41C0D2", "4Ld9Sv6T1Mz8p0", "NOQUEUE", "warning"])),
    )
    if draw(st.booleans()):
        text = text[:draw(st.integers(0, len(text)))] + draw(st.text(max_size=20))
    prog = draw(st.sampled_from(["postfix/smtp", "postfix/cleanup", "postfix/qmgr", "postfix-x/smtp", "smtp"]))
    pid = draw(st.integers(0, 30))
    return f"Dec  2 18:00:{draw(st.integers(0, 59)):02d} sender {prog}[{pid}]: {text}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300), log_lines()), max_size=60))
def test_any_input_never_raises_and_attempts_are_well_formed(items: list) -> None:
    parser = PostfixLogParser(year=2026, linger=5)
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
        assert (a.result_type is None) == (a.failure_reason_code is None) or a.result_type is not None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(log_lines(), min_size=50, max_size=300), st.integers(0, 2**32 - 1))
def test_state_stays_bounded(lines: list[str], seed: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(postfix_log, "MAX_PROCESSES", 4)
        patch.setattr(postfix_log, "MAX_MESSAGE_IDS", 4)
        patch.setattr(postfix_log, "MAX_WAITING", 3)
        _bounded_run(lines, seed)


def _bounded_run(lines: list[str], seed: int) -> None:
    parser = PostfixLogParser(year=2026, linger=8)
    rnd = random.Random(seed)
    for n, text in enumerate(lines):
        pid = rnd.randint(0, 1000)
        parser.feed(text.replace("[", f"[{pid}", 1) if rnd.random() < 0.5 else text)
        parser.feed(line(f"{n:010X}: message-id=<m{n}@x.example>", 3, prog="postfix/cleanup"))
        # processes (4) + ids (4) + waiting (3 per process) + sessions open within the linger window and
        # remembered tombstones (bounded by the lines fed; the caps are tested in the deduper test)
        assert len(parser._procs) <= 4 and len(parser._message_ids) <= 4
        assert all(len(p.waiting) <= 3 for p in parser._procs.values())
        assert len(parser.sessions) <= 2 * 8 + 2
    assert parser.stats.errors == 0


def test_huge_and_hostile_lines() -> None:
    parser = PostfixLogParser(year=2026)
    hostile = [
        line("Verified TLS connection established to " + "a" * 100_000 + "[192.0.2.1]:25: x"),
        line(f"{Q}: to=<" + "<" * 50_000 + ">, relay=x"),
        line("\x00\x1b[2J\udcff" * 1000),
        "\ufeff" + tls("Verified"),
        line(f"{Q}: to=<a@example.com>, relay=mx\x1b.example.com[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, "
             "status=sent (ok)"),
    ]
    for text in hostile:
        parser.feed(text)
    attempts = parser.flush()
    assert parser.stats.errors == 0
    assert all(a.mx_host is None or "\x1b" not in a.mx_host for a in attempts)


def test_throughput_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """A rough figure only (bench/tlsrpt_logs.py is the real benchmark); no assertion on speed."""
    base = REAL_POSTFIX_LOG.splitlines()
    lines = []
    for n in range(60):
        lines += [text.replace("16E1", f"{n:04X}") for text in base]
    parser = PostfixLogParser(year=2026)
    started = time.perf_counter()
    for text in lines:
        parser.feed(text)
    parser.flush()
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[postfix log parser: {len(lines) / elapsed:,.0f} lines/s over {len(lines):,} lines]")


def test_rpt_i_41_transient_connection_failures_are_not_sessions() -> None:
    """A refused or timed-out connection, or one lost before STARTTLS, is no TLS session (RFC 8460 §4.3.4)."""
    parser = PostfixLogParser(year=2026)
    lines = [
        "Dec  2 18:00:01 mta postfix/smtp[201]: connect to mx1.down.test[192.0.2.1]:25: Connection refused",
        "Dec  2 18:00:02 mta postfix/smtp[201]: connect to mx2.down.test[192.0.2.2]:25: Connection timed out",
        "Dec  2 18:00:02 mta postfix/smtp[201]: 4C1A2B3C4D: to=<u@down.test>, relay=none, delay=31, "
        "delays=0/0/31/0, dsn=4.4.1, status=deferred (connect to mx2.down.test[192.0.2.2]:25: Connection timed out)",
        "Dec  2 18:00:03 mta postfix/smtp[202]: 4C1A2B3C4E: lost connection with mx1.flaky.test[192.0.2.3] while "
        "receiving the initial server greeting",
        "Dec  2 18:00:03 mta postfix/smtp[202]: 4C1A2B3C4E: to=<u@flaky.test>, relay=mx1.flaky.test[192.0.2.3]:25, "
        "delay=1, delays=0/0/1/0, dsn=4.4.2, status=deferred (lost connection with mx1.flaky.test[192.0.2.3] while "
        "receiving the initial server greeting)",
    ]
    attempts = [a for line in lines for a in parser.feed(line)] + parser.flush()
    assert attempts == []
