"""`mxsec check` against the lab: every scenario yields the findings a postmaster should see.

The lab (DNSSEC-signed zones through a validating Unbound, policy hosts, the MX farm) is brought up once for
this module; one bulk `mxsec check --json` runs inside the sender namespace over every scenario domain, then
each scenario is asserted on its own: the codes that must be there (with their RFC 8460 result types) and
codes that must not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxsec.lab import acme, runner
from mxsec.lab.prerequisites import prerequisites
from mxsec.lab.scenarios import load_scenarios
from mxsec.lab.topology import Topology

from .conftest import unique_prefix

pytestmark = [pytest.mark.lab]

MXSEC = str(Path(sys.executable).with_name("mxsec"))

# scenario -> (codes that must appear, codes that must not appear)
EXPECTED: dict[str, tuple[dict[str, str | None], set[str]]] = {
    # policy hosts served by mxsec serve-policy with Pebble's certificates (trusted through the lab's bundle)
    "sts-acme": ({"sts-mode-enforce": None, "smtp-tls-ok": None}, {"sts-policy-certificate", "sts-policy-tls", "sts-policy-connect"}),
    "sts-acme-expired-mx": ({"smtp-certificate-expired": "certificate-expired"},
                            {"sts-policy-certificate", "sts-policy-tls", "sts-policy-connect"}),
    "sts-enforce-ok": ({"sts-mode-enforce": None, "smtp-tls-ok": None},
                       {"smtp-certificate-untrusted", "sts-mx-not-covered", "smtp-starttls-missing"}),
    "sts-enforce-bad-cert": ({"smtp-certificate-host-mismatch": "certificate-host-mismatch"}, set()),
    "sts-enforce-mx-not-in-policy": ({"sts-mx-not-covered": "validation-failure", "sts-pattern-unused": None},
                                     set()),
    "sts-enforce-expired-cert": ({"smtp-certificate-expired": "certificate-expired"}, set()),
    "sts-enforce-no-starttls": ({"smtp-starttls-missing": "starttls-not-supported"}, {"smtp-tls-ok"}),
    "sts-testing-bad-cert": ({"sts-mode-testing": None, "smtp-certificate-host-mismatch": "certificate-host-mismatch"},
                             set()),
    "sts-none": ({"sts-mode-none": None}, {"sts-mx-not-covered"}),
    "sts-policy-redirect": ({"sts-policy-redirect": "sts-policy-fetch-error"}, {"sts-mode-enforce"}),
    "sts-policy-404": ({"sts-policy-status": "sts-policy-fetch-error", "tlsrpt-missing": None}, set()),
    "sts-policy-bad-cert": ({"sts-policy-certificate": "sts-webpki-invalid"}, set()),
    "sts-wildcard-mx": ({"sts-mode-enforce": None}, {"sts-mx-not-covered", "sts-pattern-unused"}),
    # reports to the lab's receiving side (mxsec lab tlsrpt) though it has no policy
    "no-policy": ({"sts-txt-missing": None, "tlsrpt-ok": None, "tlsrpt-no-policy": None}, {"tlsrpt-missing"}),
    "sts-id-change": ({"sts-mode-enforce": None}, set()),
    "dane-ok": ({"dane-ok": None, "dane-no-rollover": None}, {"dane-mismatch", "tlsrpt-missing"}),
    "dane-mismatch": ({"dane-mismatch": "validation-failure"}, {"dane-ok"}),
    "dane-and-sts": ({"dane-ok": None, "dane-sts-webpki": None}, {"smtp-certificate-untrusted"}),
    "dane-unsigned-zone": ({"dane-tlsa-insecure": None, "dnssec-unsigned": None}, {"dane-mismatch", "dane-ok"}),
    "bogus-dnssec": ({"mx-lookup-failed": None}, {"smtp-tls-ok"}),
    "dane-rollover": ({"dane-ok": None}, {"dane-no-rollover", "dane-mismatch"}),
    "dane-cname-mx": ({"dane-ok": None, "mx-cname": None}, {"dane-mismatch"}),
    "dane-mandatory": ({"dane-tlsa-missing": None}, {"dane-ok"}),
    # the MX host name is outside the policy (its certificate is valid for another, allowed name)
    "sts-strict-mx-names": ({"sts-mx-not-covered": "validation-failure"}, set()),
}


def test_every_scenario_has_an_expectation() -> None:
    assert set(EXPECTED) == {sc.name for sc in load_scenarios()}


@pytest.fixture(scope="module")
def checked() -> Iterator[tuple[dict[str, dict], int, str]]:
    reason = prerequisites()
    if reason:
        pytest.skip(reason)
    topo = Topology(prefix=unique_prefix("c"))
    runner.down(topo)
    try:
        runner.up(topo)
        paths = runner.LabPaths.of(topo)
        domains = [sc.domain for sc in load_scenarios()]
        argv = ["ip", "netns", "exec", topo.sender_ns, MXSEC, "check", "--json",
                "--nameserver", topo.resolver_ip, "--ca-file", str(acme.trust_bundle(paths.root)),
                "--allow-address", topo.host_net, "--allow-address", topo.dns_net,
                "--timeout", "3", "--smtp-timeout", "5", *domains]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=180)
        results = {}
        for line in proc.stdout.splitlines():
            obj = json.loads(line)
            results[obj["domain"]] = obj
        yield results, proc.returncode, proc.stderr
    finally:
        runner.down(topo)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_findings_per_scenario(checked, name: str) -> None:
    results, _code, stderr = checked
    sc = next(s for s in load_scenarios() if s.name == name)
    result = results.get(sc.domain)
    assert result is not None, f"no JSON line for {sc.domain}; stderr: {stderr}"
    found = {f["code"]: f for f in result["findings"]}
    must, must_not = EXPECTED[name]
    for code, result_type in must.items():
        assert code in found, f"{name}: {code} missing; got {sorted(found)}"
        if result_type is not None:
            assert found[code]["result_type"] == result_type
    assert not (must_not & set(found)), f"{name}: unexpected {sorted(must_not & set(found))}"
    for f in result["findings"]:  # the stable keys of docs/check.md
        assert set(f) >= {"code", "severity", "message", "result_type", "requirement"}
        assert f["severity"] in ("error", "warning", "info")
    assert {"mta_sts", "tlsrpt", "dane", "mx"} <= set(result)


def test_check_exit_status_and_json_lines(checked) -> None:
    results, code, stderr = checked
    assert len(results) == len(EXPECTED)
    assert code == 1  # several scenarios are broken on purpose
    assert "Traceback" not in stderr
