"""PolicyFetcher against the fake world (DNS + HTTPS on 127.0.80.x only)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import warnings
from typing import Any

import pytest

from mxsec.testing.fakeworld import FakeWorld, PolicySpec, policy_text
from mxsec.testing.pki import TestCA, write_pem
from mxsec.net.dns import DnsClient
from mxsec.net.guard import AddressGuard
from mxsec.net.https import POLICY_PATH, HttpsSettings, PolicyFetcher
from mxsec.sts.fetch import FetchProblem
from tests.integration.conftest import UNUSED_IP, dns_settings_for, unique_domain

BODY = policy_text(["mx1.example.test", "*.mx.example.test"], max_age=86400)


def add(world: FakeWorld, prefix: str, **policy: Any) -> str:
    domain = unique_domain(prefix)
    policy.setdefault("body", BODY)
    world.add_domain(domain, txt=["v=STSv1; id=1"], policy=PolicySpec(**policy))
    return domain


async def test_sts_b_1_fetch_200_ok(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "ok")
    outcome = await make_fetcher().fetch(domain)
    assert outcome.ok, outcome.detail
    assert outcome.problem is None
    assert outcome.body == BODY.encode()
    assert outcome.status == 200
    assert outcome.content_type == "text/plain"
    assert outcome.address == fake_world.https_address[0]
    [request] = fake_world.stats.requests_to(f"mta-sts.{domain}")
    assert request.method == "GET"
    assert request.path == POLICY_PATH


async def test_sts_b_15_sni_and_host_are_the_policy_host(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "sni")
    host = f"mta-sts.{domain}"
    outcome = await make_fetcher().fetch(domain)
    assert outcome.ok, outcome.detail
    assert fake_world.stats.sni_seen(host) == 1
    [request] = fake_world.stats.requests_to(host)
    assert request.sni == host
    assert request.headers["host"].split(":")[0] == host


async def test_sts_b_9_redirect_not_followed(fake_world: FakeWorld, make_fetcher: Any) -> None:
    """EC-9: a 301 is a fetch failure; the target is never requested."""
    target = add(fake_world, "redirect-target")
    domain = add(fake_world, "redirect", status=301, location=f"https://mta-sts.{target}{POLICY_PATH}")
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.REDIRECT
    assert outcome.status == 301
    assert f"https://mta-sts.{target}{POLICY_PATH}" in outcome.detail
    assert "not followed" in outcome.detail
    assert outcome.body is None
    assert fake_world.stats.requests_for(f"mta-sts.{target}") == 0


async def test_sts_b_9_302_without_location(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "redirect-noloc", status=302)
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.REDIRECT
    assert "Location" in outcome.detail


@pytest.mark.parametrize("status", [404, 500, 204])
async def test_sts_b_8_non_200_is_http_status(fake_world: FakeWorld, make_fetcher: Any, status: int) -> None:
    """EC-10 (404) and every other non-200 status."""
    # A 204 cannot carry content (RFC 9110 §15.3.5); a body after it is a malformed response, not a status.
    domain = add(fake_world, f"status{status}", status=status, **({"body": ""} if status == 204 else {}))
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.HTTP_STATUS
    assert outcome.status == status
    assert str(status) in outcome.detail
    assert outcome.body is None


async def test_ec_10_policy_host_without_address_is_dns_error(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "noaddr", host_address=None)
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.DNS_ERROR
    assert f"mta-sts.{domain}" in outcome.detail
    assert "no address" in outcome.detail


async def test_policy_host_servfail_is_dns_error(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "hostservfail")
    fake_world.set_failure(f"mta-sts.{domain}", "servfail")
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.DNS_ERROR
    assert "SERVFAIL" in outcome.detail


@pytest.mark.parametrize("kind", ["expired", "not-yet-valid", "wrong-name", "untrusted", "self-signed"])
async def test_sts_b_4_bad_certificate_is_certificate_invalid(
    fake_world: FakeWorld, make_fetcher: Any, kind: str
) -> None:
    domain = add(fake_world, f"cert-{kind}", cert=kind)
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.CERTIFICATE_INVALID, outcome
    assert outcome.detail.startswith("certificate verify failed: ")
    assert "\n" not in outcome.detail
    assert fake_world.stats.requests_for(f"mta-sts.{domain}") == 0


async def test_sts_b_4_expired_detail_names_openssl_reason(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "cert-expired-detail", cert="expired")
    outcome = await make_fetcher().fetch(domain)
    assert outcome.detail == "certificate verify failed: certificate has expired"


async def test_sts_b_5_common_name_only_certificate_is_rejected(fake_world: FakeWorld, make_fetcher: Any) -> None:
    """DNS-ID only: a certificate naming the host only in the subject CN is not valid for it."""
    domain = add(fake_world, "cert-cn-only", cert="cn-only")
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.CERTIFICATE_INVALID


async def test_sts_b_4_ca_file_replaces_system_store(
    fake_world: FakeWorld, make_fetcher: Any, tmp_path: Any
) -> None:
    domain = add(fake_world, "cafile")
    with_ca = make_fetcher()
    assert with_ca.ssl_context.cert_store_stats()["x509_ca"] == 1  # only the given root, no system roots
    assert (await with_ca.fetch(domain)).ok
    system_only = make_fetcher(ca_file=None)
    outcome = await system_only.fetch(domain)
    assert outcome.problem is FetchProblem.CERTIFICATE_INVALID
    other_root = TestCA("some other root").write(tmp_path / "other.pem")
    outcome = await make_fetcher(ca_file=str(other_root)).fetch(domain)
    assert outcome.problem is FetchProblem.CERTIFICATE_INVALID


def test_bad_ca_file_is_config_error(tmp_path: Any) -> None:
    from mxsec.errors import ConfigError

    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError) as info:
        PolicyFetcher(HttpsSettings(ca_file=str(missing)), DnsClient(dns_settings_for_dummy()), AddressGuard())
    assert "\n" not in str(info.value)


def dns_settings_for_dummy() -> Any:
    from mxsec.net.dns import DnsSettings

    return DnsSettings(nameservers=[(UNUSED_IP, 53)], timeout=0.5)


async def test_sts_b_2_ec_8_html_media_type_rejected(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "html", content_type="text/html")
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.MEDIA_TYPE
    assert outcome.content_type == "text/html"
    assert "text/html" in outcome.detail


async def test_sts_b_2_ec_8_missing_content_type_rejected(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "notype", content_type=None)
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.MEDIA_TYPE


async def test_sts_b_3_text_plain_with_charset_ok(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "charset", content_type="text/plain; charset=utf-8")
    outcome = await make_fetcher().fetch(domain)
    assert outcome.ok, outcome.detail
    assert outcome.content_type == "text/plain; charset=utf-8"


async def test_sts_b_12_oversize_body_is_too_large_streamed(fake_world: FakeWorld, make_fetcher: Any) -> None:
    """No Content-Length: the cap applies while streaming, and reading stops."""
    domain = add(fake_world, "oversize", oversize=True, content_length=False)
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.TOO_LARGE
    assert "65536" in outcome.detail
    assert outcome.body is None


async def test_sts_b_12_oversize_content_length_is_too_large(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "oversize-cl", oversize=True)
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.TOO_LARGE


async def test_sts_b_12_body_exactly_at_the_cap_is_accepted(fake_world: FakeWorld, make_fetcher: Any) -> None:
    body = BODY + "#" * (300 - len(BODY))
    domain = add(fake_world, "atcap", body=body, content_length=False)
    assert (await make_fetcher(max_body=300).fetch(domain)).ok
    assert (await make_fetcher(max_body=299).fetch(domain)).problem is FetchProblem.TOO_LARGE


async def test_sts_b_12_slow_server_times_out_within_deadline(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "slow", delay=3.0)
    started = time.monotonic()
    outcome = await make_fetcher(timeout=0.5).fetch(domain)
    elapsed = time.monotonic() - started
    assert outcome.problem is FetchProblem.TIMEOUT
    assert "0.5s" in outcome.detail
    assert elapsed < 1.5


async def test_sts_b_12_total_deadline_includes_dns(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "slowdns")
    fake_world.set_failure(f"mta-sts.{domain}", "drop")
    slow_dns = DnsClient(dns_settings_for(fake_world, timeout=5.0))
    started = time.monotonic()
    outcome = await make_fetcher(timeout=0.5, dns=slow_dns).fetch(domain)
    assert outcome.problem is FetchProblem.TIMEOUT
    assert "resolving" in outcome.detail
    assert time.monotonic() - started < 1.5


async def test_sts_b_10_no_http_cache_two_fetches_two_requests(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "nocache", headers={"Cache-Control": "max-age=86400", "ETag": '"v1"'})
    fetcher = make_fetcher()
    first = await fetcher.fetch(domain)
    second = await fetcher.fetch(domain)
    assert first.ok and second.ok
    requests = fake_world.stats.requests_to(f"mta-sts.{domain}")
    assert len(requests) == 2
    for request in requests:
        assert "if-none-match" not in request.headers
        assert "if-modified-since" not in request.headers
        assert "cookie" not in request.headers


async def test_ec_23_cname_delegation_still_fetches_customer_host(
    fake_world: FakeWorld, make_fetcher: Any, dns_client: DnsClient
) -> None:
    """_mta-sts.customer CNAME -> provider: the policy comes from mta-sts.customer with its own certificate."""
    customer, provider = unique_domain("deleg-customer"), unique_domain("deleg-provider")
    fake_world.add_domain(provider, txt=["v=STSv1; id=provider"], policy=PolicySpec(body="provider policy"))
    fake_world.add_domain(customer, policy=PolicySpec(body=BODY))
    fake_world.set_record(f"_mta-sts.{customer}", "CNAME", [f"_mta-sts.{provider}."])
    txt = await dns_client.txt(f"_mta-sts.{customer}")
    assert txt.records == ("v=STSv1; id=provider",)
    outcome = await make_fetcher().fetch(customer)
    assert outcome.ok, outcome.detail
    assert outcome.body == BODY.encode()
    assert fake_world.stats.sni_seen(f"mta-sts.{customer}") == 1
    assert fake_world.stats.requests_for(f"mta-sts.{provider}") == 0


async def test_guard_refuses_loopback_unless_allowed(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "guarded")
    host = f"mta-sts.{domain}"
    refused = await make_fetcher(guard=AddressGuard()).fetch(domain)
    assert refused.problem is FetchProblem.ADDRESS_REFUSED
    assert "loopback" in refused.detail
    assert fake_world.stats.sni_seen(host) == 0  # never connected
    allowed = await make_fetcher(guard=AddressGuard(allow=["127.0.0.0/8"])).fetch(domain)
    assert allowed.ok, allowed.detail


async def test_guard_skips_refused_address_and_uses_allowed_one(fake_world: FakeWorld, make_fetcher: Any) -> None:
    https_ip = fake_world.https_address[0]
    domain = add(fake_world, "mixed", host_address=["127.0.80.3", https_ip])
    guard = AddressGuard(allow=[f"{https_ip}/32"])
    outcome = await make_fetcher(guard=guard).fetch(domain)
    assert outcome.ok, outcome.detail
    assert outcome.address == https_ip


async def test_each_address_tried_until_one_connects(fake_world: FakeWorld, make_fetcher: Any) -> None:
    https_ip = fake_world.https_address[0]
    domain = add(fake_world, "fallback", host_address=[UNUSED_IP, https_ip])
    outcome = await make_fetcher().fetch(domain)
    assert outcome.ok, outcome.detail
    assert outcome.address == https_ip


async def test_connection_refused_is_connect_error(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "refused", host_address=UNUSED_IP)
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.CONNECT_ERROR
    assert "connection refused" in outcome.detail
    assert "\n" not in outcome.detail


async def test_invalid_domain_is_rejected_without_network(make_fetcher: Any) -> None:
    outcome = await make_fetcher().fetch("evil.test/path?x=")
    assert outcome.problem is FetchProblem.DNS_ERROR


async def test_many_concurrent_fetches(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domains = [add(fake_world, "bulk") for _ in range(60)]
    fetcher = make_fetcher()
    outcomes = await asyncio.gather(*(fetcher.fetch(d) for d in domains))
    assert all(o.ok for o in outcomes), [o.detail for o in outcomes if not o.ok][:3]


def test_sts_b_16_client_context_minimum_is_tls_1_2(fake_world: FakeWorld) -> None:
    fetcher = PolicyFetcher(HttpsSettings(ca_file=str(fake_world.ca_file)), DnsClient(dns_settings_for(fake_world)),
                            AddressGuard())
    assert fetcher.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert fetcher.ssl_context.check_hostname is True
    assert fetcher.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert fetcher.ssl_context.hostname_checks_common_name is False


async def test_sts_b_16_tls_1_1_only_server_is_tls_error(
    fake_world: FakeWorld, make_fetcher: Any, tmp_path: Any
) -> None:
    """A policy host that offers only TLS 1.1 (with a valid certificate) is refused."""
    legacy_ip = "127.0.80.4"
    domain = unique_domain("legacy")
    host = f"mta-sts.{domain}"
    cert, key = fake_world.ca.issue([host])
    cert_file, key_file = write_pem(tmp_path / "c.pem", cert), write_pem(tmp_path / "k.pem", key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert_file, key_file)
        server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1
        server_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        legacy_client = ssl.create_default_context(cafile=str(fake_world.ca_file))
        legacy_client.set_ciphers("DEFAULT:@SECLEVEL=0")
        legacy_client.minimum_version = ssl.TLSVersion.TLSv1
        legacy_client.maximum_version = ssl.TLSVersion.TLSv1_1

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(reader.read(4096), 2)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    try:
        server = await asyncio.start_server(handler, legacy_ip, fake_world.https_address[1], ssl=server_ctx)
    except OSError as exc:
        pytest.skip(f"cannot bind the legacy TLS server: {exc}")
    try:
        try:  # prove the server really speaks TLS 1.1 here, so the failure below means something
            _r, w = await asyncio.wait_for(
                asyncio.open_connection(legacy_ip, fake_world.https_address[1], ssl=legacy_client,
                                        server_hostname=host), 5)
            negotiated = w.get_extra_info("ssl_object").version()
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
        except (ssl.SSLError, OSError):
            pytest.skip("the local OpenSSL cannot run a TLS 1.1 server")
        assert negotiated == "TLSv1.1"
        fake_world.add_domain(domain, policy=PolicySpec(body=BODY, host_address=legacy_ip))
        outcome = await make_fetcher().fetch(domain)
        assert outcome.problem is FetchProblem.TLS_ERROR, outcome
        assert host in outcome.detail
    finally:
        server.close()
        await server.wait_closed()


async def test_fakeworld_cli_generate_spec_control_and_sigterm(tmp_path: Any) -> None:
    """The benchmark's way of running the world: a subprocess with --generate, --spec and --control."""
    import json
    import signal
    import sys
    import urllib.request

    from mxsec.config.values import parse_nameserver
    from mxsec.net.dns import DnsSettings

    spec = {"domains": {"spec.test": {"txt": ["v=STSv1; id=s1"],
                                      "policy": {"body": {"mode": "testing", "mx": ["mx.spec.test"]}}}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    state = tmp_path / "state"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mxsec.testing.fakeworld", "--dns", "127.0.80.5:0", "--https", "127.0.80.6:0",
        "--state-dir", str(state), "--generate", "3", "--spec", str(tmp_path / "spec.json"),
        "--control", "127.0.80.7:0",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    try:
        ready = state / "ready.json"
        for _ in range(200):  # at most ~20 s
            if ready.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        assert ready.exists(), (await proc.stderr.read()).decode() if proc.returncode is not None else "not ready"
        info = json.loads(ready.read_text())
        assert info["domains"] == ["d0.bench.test", "d1.bench.test", "d2.bench.test", "spec.test"]
        assert (state / "ca.pem").exists()
        dns = DnsClient(DnsSettings(nameservers=[parse_nameserver(info["dns"])], timeout=2))
        assert (await dns.txt("_mta-sts.d2.bench.test")).records == ("v=STSv1; id=1",)
        fetcher = PolicyFetcher(
            HttpsSettings(ca_file=str(state / "ca.pem"), port=int(info["https"].rsplit(":", 1)[1]), timeout=5),
            dns, AddressGuard(allow=["127.0.0.0/8"]),
        )
        try:
            generated = await fetcher.fetch("d1.bench.test")
            assert generated.ok, generated.detail
            assert b"mx: mx1.bench.test" in generated.body and b"mx: *.mx.bench.test" in generated.body
            assert b"max_age: 86400" in generated.body
            from_spec = await fetcher.fetch("spec.test")
            assert from_spec.ok and b"mode: testing" in from_spec.body
        finally:
            await fetcher.aclose()

        def control(method: str, path: str) -> dict[str, Any]:
            request = urllib.request.Request(f"http://{info['control']}{path}", method=method, data=b"" if method == "POST" else None)
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(request, timeout=5) as response:
                return json.loads(response.read())

        stats = await asyncio.to_thread(control, "GET", "/stats")
        assert stats["https_requests"] == {"mta-sts.d1.bench.test": 1, "mta-sts.spec.test": 1}
        assert (await asyncio.to_thread(control, "POST", "/reset")) == {"ok": True}
        assert (await asyncio.to_thread(control, "GET", "/stats"))["https_total"] == 0
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert not ready.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sts_b_6_wildcard_certificate_covers_policy_host(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "wild", cert="wildcard")
    outcome = await make_fetcher().fetch(domain)
    assert outcome.ok, outcome.detail


async def test_sts_b_6_wildcard_matches_one_label_only(fake_world: FakeWorld, make_fetcher: Any) -> None:
    domain = add(fake_world, "wildbroad", cert="wildcard-too-broad")
    outcome = await make_fetcher().fetch(domain)
    assert outcome.problem is FetchProblem.CERTIFICATE_INVALID


def test_sts_b_17_tls_context_follows_current_bcp(fake_world: FakeWorld) -> None:
    """RFC 9325 (BCP 195): TLS >= 1.2, certificate and name checks on, no TLS compression."""
    fetcher = PolicyFetcher(HttpsSettings(ca_file=str(fake_world.ca_file)), DnsClient(dns_settings_for(fake_world)),
                            AddressGuard())
    ctx = fetcher.ssl_context
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.options & ssl.OP_NO_COMPRESSION
