"""The ceiling: a bare asyncio netstring responder.

It parses socketmap requests (netstrings, ``NAME KEY``) and answers every one with
the same constant reply.  No lookup, no logging, no per-request allocation beyond
what parsing needs.  Nothing written in Python on the same event loop can answer
faster, so it is the upper bound the socketmap benchmark compares against.

    python bench/ceiling.py --listen 127.0.0.1:PORT [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

MAX_REQUEST = 1024  # same request size limit as Postfix's socketmap client side
DEFAULT_REPLY = b"OK secure match=mx.bench.test servername=hostname"


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


class Responder(asyncio.Protocol):
    __slots__ = ("buf", "transport")

    reply = netstring(DEFAULT_REPLY)

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        end = len(buf)
        count = 0
        while pos < end:
            colon = buf.find(b":", pos, pos + 6)
            if colon < 0:
                if end - pos >= 6 or not buf[pos:end].isdigit():
                    return self._bad()
                break
            digits = buf[pos:colon]
            if not digits.isdigit():
                return self._bad()
            size = int(digits)
            if size > MAX_REQUEST:
                return self._bad()
            stop = colon + 1 + size
            if stop >= end:  # payload or trailing comma not complete yet
                break
            if buf[stop] != 44:  # ","
                return self._bad()
            # buf[colon + 1:stop] is "NAME KEY"; the reply does not depend on it.
            count += 1
            pos = stop + 1
        self.buf = buf[pos:] if pos < end else b""
        if count:
            self.transport.write(self.reply * count if count > 1 else self.reply)

    def _bad(self) -> None:
        self.buf = b""
        self.transport.write(netstring(b"PERM bad netstring"))
        self.transport.close()


def choose_loop(name: str) -> str:
    if name in ("uvloop", "auto"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                sys.exit("ceiling: uvloop requested but not importable")
            return "asyncio"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    return "asyncio"


async def serve(host: str, port: int, loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Responder, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ceiling listening on {host}:{port} loop={loop_name}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    parser.add_argument("--reply", default=DEFAULT_REPLY.decode(), help="constant reply text")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    Responder.reply = netstring(args.reply.encode())
    loop_name = choose_loop(args.loop)
    asyncio.run(serve(host.strip("[]"), int(port), loop_name))


if __name__ == "__main__":
    main()
