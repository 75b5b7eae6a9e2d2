#!/usr/bin/env python3
"""A fleet of mxsec daemons on one Redis or PostgreSQL store: answers/s, store operations, fetches per policy.

    sudo .venv/bin/python bench/fleet.py                       # 1,000 domains, 1/2/4 daemons, both stores
    sudo .venv/bin/python bench/fleet.py --domains 200 --store redis
    sudo .venv/bin/python bench/fleet.py --json bench/results/fleet.json

1. **Daemons** (real processes). A fake world (DNS on 127.0.91.1, policy hosts on 127.0.91.2:443, generated
   domains with an enforce policy each) and a Redis or PostgreSQL server started here (``mxsec.testing.servers``:
   127.0.0.1, a temporary directory, PostgreSQL with its default durability). For 1, 2 and 4 daemons on one
   fresh store:
   - *cold*: every domain asked three times at once, each time of another daemon (round robin), by 64
     clients per daemon; answers/s, policy fetches and ``_mta-sts`` TXT look-ups per domain (the fleet's
     promise: 1 and 1), cache store operations per answer (the daemons' ``mxsec_store_operations_total``:
     reads, writes, lease claims, releases and publications);
   - *warm*: every domain asked once of every daemon: answers/s and store operations per answer (a daemon
     that never saw a domain reads it from the store once).
2. **A simulated day** (in process, simulated clock): 1, 2 and 4 policy services with their refreshers on
   one shared store (``mxsec.testing.fleetstore``), 100 domains, one refresher round a minute for 24 hours;
   TXT look-ups and fetches per policy per day for the fleet, with leases and without (``fleet_lease = 0``).

Prints a table per part and PASS/FAIL lines. Talks only to 127.0.0.0/8. Results: docs/fleet.md, "Sizing".
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mxsec.daemon.refresh import Refresher
from mxsec.daemon.service import PolicyService, ServiceSettings
from mxsec.daemon.socketmap import encode
from mxsec.dnsanswers import AddressAnswer, RRAnswer, TxtAnswer
from mxsec.sts.cache import RefreshTiming
from mxsec.sts.fetch import FetchOutcome
from mxsec.testing.daemonproc import DaemonProcess, free_port
from mxsec.testing.fakeworld import FakeWorld, WorldThread
from mxsec.testing.fleetstore import SharedMemoryStore
from mxsec.testing.servers import running_postgres, running_redis

CLIENTS_PER_DAEMON = 64
_databases = itertools.count(1)


# ------------------------------------------------------------------------------------------------ daemons


async def ask_many(work: list[tuple[int, str]], clients_per_port: int) -> tuple[float, list[str]]:
    """Ask every (port, domain) of ``work``: ``clients_per_port`` persistent connections per port, each asking
    one request at a time. Returns (seconds, replies in ``work`` order)."""
    replies: list[str] = [""] * len(work)
    by_port: dict[int, list[int]] = {}
    for index, (port, _) in enumerate(work):
        by_port.setdefault(port, []).append(index)

    async def client(port: int, indices: list[int]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        buffer = b""
        try:
            for index in indices:
                writer.write(encode(f"postfix {work[index][1]}".encode()))
                while True:
                    length, sep, rest = buffer.partition(b":")
                    if sep and length.isdigit() and len(rest) > int(length):
                        replies[index] = rest[: int(length)].decode()
                        buffer = rest[int(length) + 1:]
                        break
                    chunk = await asyncio.wait_for(reader.read(65536), 60)
                    if not chunk:
                        raise ConnectionError("daemon closed the connection")
                    buffer += chunk
        finally:
            writer.close()

    started = time.perf_counter()
    tasks = []
    for port, indices in by_port.items():
        for c in range(clients_per_port):
            share = indices[c::clients_per_port]
            if share:
                tasks.append(client(port, share))
    await asyncio.gather(*tasks)
    return time.perf_counter() - started, replies


def store_operations(metrics_ports: list[int]) -> int:
    """The cache store operations the daemons have asked so far (``mxsec_store_operations_total``)."""
    import urllib.request

    total = 0
    for port in metrics_ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith("mxsec_store_operations_total "):
                    total += int(float(line.split()[1]))
    return total


@dataclass
class FleetRun:
    store: str
    daemons: int
    cold_seconds: float
    cold_answers: int
    warm_seconds: float
    warm_answers: int
    fetches_per_domain: float
    txt_per_domain: float
    cold_store_ops: float
    warm_store_ops: float
    wrong: int


def run_fleet(kind: str, url: str, world: FakeWorld, domains: list[str], n: int, tmp: Path) -> FleetRun:
    config = tmp / f"fleet-{kind}-{n}.toml"
    config.write_text("[cache]\nfleet_lease = 20\n[dane]\nenabled = false\n")
    host, port = world.dns_address
    daemons = []
    metrics_ports: list[int] = []
    try:
        for i in range(n):
            state = tmp / f"{kind}-{n}-{i}"
            state.mkdir()
            metrics = free_port()
            metrics_ports.append(metrics)
            daemons.append(DaemonProcess(state, nameserver=f"{host}:{port}", ca_file=world.ca_file, cache=url,
                                         config=config, timeout=5,
                                         extra=["--metrics-listen", f"127.0.0.1:{metrics}"]).start())
        ports = [d.port for d in daemons]

        def count() -> int:
            return store_operations(metrics_ports)

        world.reset_stats()
        before = count()
        cold_work = [(ports[(3 * i + r) % n], d) for i, d in enumerate(domains) for r in range(3)]
        cold_seconds, cold_replies = asyncio.run(ask_many(cold_work, CLIENTS_PER_DAEMON))
        cold_ops = count() - before
        stats = world.stats.to_json()
        fetches = sum(v for h, v in stats["https_requests"].items() if h.startswith("mta-sts."))
        txt = sum(world.stats.queries(f"_mta-sts.{d}", "TXT") for d in domains)
        before = count()
        warm_work = [(p, d) for d in domains for p in ports]
        warm_seconds, warm_replies = asyncio.run(ask_many(warm_work, CLIENTS_PER_DAEMON))
        warm_ops = count() - before
        wrong = sum(1 for (_, d), reply in zip(cold_work + warm_work, cold_replies + warm_replies)
                    if not reply.startswith(f"OK secure match=mx{d.split('.')[0][1:]}."))
        return FleetRun(kind, n, cold_seconds, len(cold_work), warm_seconds, len(warm_work),
                        fetches / len(domains), txt / len(domains), cold_ops / len(cold_work),
                        warm_ops / len(warm_work), wrong)
    finally:
        for daemon in daemons:
            daemon.stop()


# -------------------------------------------------------------------------------------------- simulation


class CountingDns:
    def __init__(self) -> None:
        self.txt_calls = 0

    async def txt(self, name: str) -> TxtAnswer:
        self.txt_calls += 1
        return TxtAnswer("ok", ("v=STSv1; id=1",))

    async def mx(self, name: str) -> RRAnswer:
        return RRAnswer("nodata")

    async def addresses(self, name: str) -> AddressAnswer:
        return AddressAnswer("nxdomain")

    async def tlsa(self, host: str, port: int = 25) -> RRAnswer:
        return RRAnswer("nxdomain")

    async def lookup(self, name: str, rdtype: str | int) -> RRAnswer:
        return RRAnswer("nodata")


class CountingFetcher:
    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self, domain: str) -> FetchOutcome:
        self.calls += 1
        body = f"version: STSv1\nmode: enforce\nmx: mx.{domain}\nmax_age: 604800\n".encode()
        return FetchOutcome(body, None, "HTTP 200", 200, "text/plain")

    async def aclose(self) -> None:
        pass


class SimClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def simulate_day(daemons: int, domains: int, lease: float) -> tuple[float, float]:
    """TXT look-ups and fetches per policy during one simulated day after every domain was first asked."""
    clock, dns, fetcher, store = SimClock(), CountingDns(), CountingFetcher(), SharedMemoryStore()
    settings = ServiceSettings(dane=False, fleet_lease=lease, timing=RefreshTiming())
    services = [PolicyService(dns=dns, fetcher=fetcher, store=store, settings=settings, clock=clock)
                for _ in range(daemons)]
    names = [f"d{i}.sim.test" for i in range(domains)]
    for service in services:  # every daemon serves every domain
        await asyncio.gather(*(service.lookup(name) for name in names))
    dns.txt_calls = fetcher.calls = 0
    refreshers = [Refresher(service) for service in services]
    for minute in range(24 * 60):
        clock.now += 60
        # the daemons' rounds are not in step: each starts its round at its own second of the minute
        for refresher in refreshers[minute % daemons:] + refreshers[: minute % daemons]:
            await refresher.run_once()
    return dns.txt_calls / domains, fetcher.calls / domains


# ---------------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--store", choices=["redis", "postgres", "both"], default="both")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    kinds = ["redis", "postgres"] if args.store == "both" else [args.store]
    runs: list[FleetRun] = []
    with tempfile.TemporaryDirectory(prefix="mxsec-bench-fleet-") as tmpdir:
        tmp = Path(tmpdir)
        world = FakeWorld(dns=("127.0.91.1", 0), https=("127.0.91.2", 443), state_dir=tmp / "world")
        domains = world.generate(args.domains, suffix="fleet.test")
        with WorldThread(world):
            for kind in kinds:
                starter = running_redis() if kind == "redis" else running_postgres("fleet", durable=True)
                with starter as server:
                    for n in (1, 2, 4):
                        if kind == "redis":
                            server.flush()
                            url = server.url
                        else:
                            url = server.create_database(f"fleet_{next(_databases)}")
                        runs.append(run_fleet(kind, url, world, domains, n, tmp))
                        r = runs[-1]
                        print(f"{kind:8} {n} daemon(s): cold {r.cold_answers / r.cold_seconds:8,.0f} answers/s, "
                              f"warm {r.warm_answers / r.warm_seconds:8,.0f} answers/s, fetches/domain "
                              f"{r.fetches_per_domain:.2f}, TXT/domain {r.txt_per_domain:.2f}, store operations "
                              f"per answer cold {r.cold_store_ops:.2f} warm {r.warm_store_ops:.2f}, "
                              f"wrong {r.wrong}", flush=True)
    day = {}
    for n in (1, 2, 4):
        for lease in (20.0, 0.0):
            day[(n, lease)] = asyncio.run(simulate_day(n, 100, lease))
            txt, fetches = day[(n, lease)]
            print(f"simulated day, {n} daemon(s), {'leases' if lease else 'no leases'}: "
                  f"TXT look-ups {txt:.1f} and fetches {fetches:.1f} per policy", flush=True)
    print()
    print("| store | daemons | cold answers/s | warm answers/s | fetches per domain | TXT per domain "
          "| store operations per answer (cold / warm) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r.store} | {r.daemons} | {r.cold_answers / r.cold_seconds:,.0f} | "
              f"{r.warm_answers / r.warm_seconds:,.0f} | {r.fetches_per_domain:.2f} | {r.txt_per_domain:.2f} | "
              f"{r.cold_store_ops:.2f} / {r.warm_store_ops:.2f} |")
    print()
    print("| daemons | TXT look-ups per policy per day (leases / none) | fetches per policy per day (leases / none) |")
    print("|---:|---:|---:|")
    for n in (1, 2, 4):
        (t1, f1), (t0, f0) = day[(n, 20.0)], day[(n, 0.0)]
        print(f"| {n} | {t1:.1f} / {t0:.1f} | {f1:.1f} / {f0:.1f} |")
    once = all(r.fetches_per_domain == 1 and r.txt_per_domain == 1 for r in runs)
    right = all(r.wrong == 0 for r in runs)
    steady = all(day[(n, 20.0)] == day[(1, 20.0)] for n in (2, 4))
    print()
    print(f"PASS/FAIL one fetch and one TXT look-up per domain for the fleet: {'PASS' if once else 'FAIL'}")
    print(f"PASS/FAIL every answer right: {'PASS' if right else 'FAIL'}")
    print(f"PASS/FAIL refresh work per policy per day independent of the fleet's size: {'PASS' if steady else 'FAIL'}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"runs": [r.__dict__ for r in runs],
                                               "day": {f"{n}-{lease}": v for (n, lease), v in day.items()}},
                                              indent=2))
    return 0 if once and right and steady else 1


if __name__ == "__main__":
    sys.exit(main())
