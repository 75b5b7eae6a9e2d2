"""The daemon: configuration → adapters → service → listeners; signals; reload; shutdown.

The adapters come from :mod:`mxsec.config.wiring` (shared with the command-line tools). ``build_service`` is
shared by ``mxsec daemon`` and ``mxsec query`` so both give the same answer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import cast

from mxsec.config import Config, load_config, parse_listen
from mxsec.config.wiring import make_adapters
from mxsec.daemon.refresh import Refresher
from mxsec.daemon.served import ServedRecorder
from mxsec.daemon.replies import Zone
from mxsec.daemon.server import SocketmapServer, _listen_key, connection_cap
from mxsec.daemon.service import PolicyService, ServiceSettings
from mxsec.errors import ConfigError
from mxsec.logs import setup_logging
from mxsec.net.dns import DnsClient, remote_validators
from mxsec.storage import PolicyStore, open_store
from mxsec.storage.urls import redact
from mxsec.sts.cache import RefreshTiming

log = logging.getLogger("mxsec.daemon")

#: the map names every daemon answers, with their reply dialect (docs/daemon.md, "Protocol")
BUILTIN_MAPS = {"postfix": "postfix", "QUERY": "postfix", "tlsrpt": "tlsrpt", "QUERYwithTLSRPT": "tlsrpt",
                "exim": "exim"}


def make_zones(config: Config) -> dict[str, Zone]:
    default = config.daemon.default_zone
    zones = {
        name: Zone(
            dialect=dialect,  # the tlsrpt dialect is never served under "postfix": older Postfix rejects its attributes
            strict_testing=default.strict_testing,
            require_sni=default.require_sni,
            strict_mx_names=default.strict_mx_names,
        )
        for name, dialect in BUILTIN_MAPS.items()
    }
    for name, zone in config.daemon.zones.items():
        zones[name] = Zone(
            dialect="tlsrpt" if zone.tlsrpt else "postfix",
            strict_testing=zone.strict_testing,
            require_sni=zone.require_sni,
            strict_mx_names=zone.strict_mx_names,
        )
    return zones


def service_settings(config: Config) -> ServiceSettings:
    r = config.refresh
    return ServiceSettings(
        lookup_timeout=config.daemon.lookup_timeout,
        fail_retry=r.fail_retry,
        negative_ttl=r.negative_ttl,
        timing=RefreshTiming(recheck_after=r.recheck_after, force_fetch_after=r.force_fetch_after),
        dane=config.dane.enabled,
        dane_mandatory=tuple(config.dane.mandatory),
        dane_disabled=tuple(config.dane.disabled),
        per_client=config.daemon.client_resolutions,
        table_limit=config.daemon.table_limit,
        fleet_lease=config.cache.fleet_lease,
    )


def build_service(config: Config, store: PolicyStore | None = None) -> PolicyService:
    dns, fetcher = make_adapters(config)
    if store is None:
        store = open_store(config.cache.url, local_copy=config.cache.local_copy or None)
    return PolicyService(dns=dns, fetcher=fetcher, store=store, settings=service_settings(config))


@dataclass
class Daemon:
    config: Config
    config_path: str | None
    overrides: dict
    service: PolicyService | None = None
    server: SocketmapServer | None = None
    refresher: Refresher | None = None
    metrics: tuple | None = None
    recorder: ServedRecorder | None = None

    async def start(self) -> None:
        config = self.config
        self.service = build_service(config)
        loaded = self.service.load()
        log.info("cache loaded", extra={"policies": loaded, "cache": redact(config.cache.url)})
        self.service.warm_dane()
        self.service.start_listening()
        warn_remote_validators(self.service)
        self.server = SocketmapServer(
            self.service,
            make_zones(config),
            max_connections=self._connection_cap(config),
            unix_mode=config.daemon.unix_mode,
            max_pending=config.daemon.max_pending,
            idle_timeout=config.daemon.idle_timeout,
            partial_timeout=config.daemon.partial_timeout,
        )
        if config.tlsrpt.record_policies:
            self.recorder = ServedRecorder(config.tlsrpt.db, clock=self.service.clock)
            await self.recorder.start()
            self.server.observer = self.recorder.observe
        for addr in config.daemon.listen:
            try:
                await self.server.listen(parse_listen(addr))
            except OSError as exc:
                raise ConfigError(f"cannot listen on {addr}: {exc.strerror or exc}") from None
        if config.refresh.enabled:
            self.refresher = Refresher(
                self.service, tick=min(config.refresh.interval, 60.0), concurrency=config.refresh.concurrency
            )
            self.refresher.start()
        if config.metrics.listen:
            from mxsec.daemon.metrics import start_metrics

            m = parse_listen(config.metrics.listen)
            if m.kind != "tcp":
                raise ConfigError("metrics.listen must be HOST:PORT")
            assert m.host is not None and m.port is not None  # a tcp address has both
            self.server.timing = True
            try:
                self.metrics = start_metrics(self.server, m.host, m.port)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {config.metrics.listen}: {exc.strerror or exc}") from None

    @staticmethod
    def _connection_cap(config: Config) -> int:
        wanted = config.daemon.max_connections
        cap = connection_cap(wanted)
        if cap < wanted:
            log.warning("too few file descriptors for daemon.max_connections; serving fewer connections "
                        "(raise LimitNOFILE / ulimit -n)", extra={"max_connections": wanted, "serving": cap})
        return cap

    async def reload(self) -> None:
        """SIGHUP: re-read the configuration and apply what can change without a restart."""
        from mxsec.config import apply_overrides

        try:
            new = apply_overrides(load_config(self.config_path), **self.overrides)
            dns, fetcher = make_adapters(new)
        except ConfigError as exc:
            log.error("reload failed; keeping the running configuration", extra={"error": str(exc)})
            return
        old = self.config
        setup_logging(new.log.level, new.log.format)
        service, server = self.service, self.server
        assert service is not None and server is not None  # reload follows start
        old_fetcher = service.fetcher
        service.reconfigure(dns=dns, fetcher=fetcher, settings=service_settings(new))
        warn_remote_validators(service)
        await old_fetcher.aclose()
        server.zones = make_zones(new)
        server.max_connections = self._connection_cap(new)
        server.max_pending = new.daemon.max_pending
        server.idle_timeout = new.daemon.idle_timeout
        server.partial_timeout = new.daemon.partial_timeout
        server.clear_memo()
        wanted = {}
        for addr in new.daemon.listen:
            try:
                parsed = parse_listen(addr)
            except ConfigError as exc:
                log.error("reload: bad listen address", extra={"error": str(exc)})
                continue
            wanted[_listen_key(parsed)] = parsed
        for key in list(server.servers):
            if key not in wanted:
                await server.unlisten(key)
        for key, parsed in wanted.items():
            if key not in server.servers:
                try:
                    await server.listen(parsed)
                except OSError as exc:
                    log.error("reload: cannot listen", extra={"listen": key, "error": str(exc)})
        if new.cache.url != old.cache.url:
            log.warning("cache.url changed; takes effect on restart", extra={"cache": redact(new.cache.url)})
        self.config = new
        log.info("configuration reloaded")

    async def stop(self, *, quiet: bool = False) -> None:
        timeout = self.config.daemon.shutdown_timeout
        if self.server is not None:
            await self.server.close(timeout)
        if self.refresher is not None:
            await self.refresher.stop()
        if self.metrics is not None:
            self.metrics[0].shutdown()
        if self.recorder is not None:
            await self.recorder.close()
        if self.service is not None:
            await self.service.aclose()
            await self.service.fetcher.aclose()
            self.service.store.close()
        if not quiet:
            log.info("stopped")


def warn_remote_validators(service: PolicyService) -> None:
    """DANE-H-2: DANE trusts the resolver's AD bit; say so loudly when that bit crosses a network."""
    if not service.settings.dane:
        return
    dns = cast(DnsClient, service.dns)  # the daemon's resolver comes from make_adapters (build_service)
    remote = remote_validators(dns.nameserver_addresses)
    if remote:
        log.warning("DANE trusts the AD bit of a resolver that is not on loopback; use a local validating "
                    "resolver (or TSIG/IPsec to it)", extra={"nameservers": remote, "alert": True})


async def run_daemon(config: Config, config_path: str | None, overrides: dict) -> None:
    daemon = Daemon(config, config_path, overrides)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: list[asyncio.Task] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reloads.append(asyncio.ensure_future(daemon.reload())))
    try:
        await daemon.start()
    except BaseException:
        await daemon.stop(quiet=True)  # the caller prints the one-line error
        raise
    assert daemon.server is not None  # set by start
    log.info("ready", extra={"listen": list(daemon.server.servers)})
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        for task in reloads:
            await asyncio.gather(task, return_exceptions=True)
        await daemon.stop()
