"""Test glue: a `mxsec daemon` process pointed at a fake world."""

from __future__ import annotations

from pathlib import Path

from mxsec.testing.daemonproc import MXSEC, Client, DaemonProcess, free_port

__all__ = ["MXSEC", "Client", "Daemon", "free_port"]


def Daemon(tmp: Path, *, world, **kwargs) -> DaemonProcess:  # noqa: N802 - reads like the class it builds
    host, port = world.dns_address
    return DaemonProcess(tmp, nameserver=f"{host}:{port}", ca_file=world.ca_file, **kwargs)
