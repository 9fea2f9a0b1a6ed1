"""CPU per request of each delivery transport, and of a plain aiohttp client, on their own.

A minimal HTTP/1.1 server (every request answered 204) runs in a child process; this process sends
``--requests`` POSTs of 1 KiB with the headers a delivery carries, ``--concurrency`` in flight, through
each client in turn, and prints the client's own CPU time per request (user + system). CPU time, unlike
throughput, hardly moves when other processes load the machine.

    .venv/bin/python scripts/bench_transport.py --requests 30000
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fanout.http.fields import RequestTarget
from fanout.http.options import TransportOptions, open_transport
from fanout.http.ssrf import AddressPolicy
from fanout.http.transport import Limits, Origin, Request, Timeouts

SERVER = """
import asyncio, sys, uvloop
class Answer(asyncio.Protocol):
    def connection_made(self, transport): self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\\r\\n\\r\\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            size = int(head[at + 15:].split(b"\\r\\n")[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + size: return
            self.buffer = self.buffer[end + 4 + size:]
            self.transport.write(b"HTTP/1.1 204 No Content\\r\\nServer: s\\r\\nConnection: keep-alive\\r\\n\\r\\n")
async def main():
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(3600)
uvloop.run(main())
"""
HOOK = RequestTarget.build("/hook")
BODY = b"x" * 1024
HEADERS = [
    ("content-type", "application/json"),
    ("webhook-id", "evt-0123456789abcdef"),
    ("webhook-timestamp", "1700000000"),
    ("webhook-signature", "v1," + "a" * 44),
]


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(kind: str, port: int, requests: int, concurrency: int) -> tuple[float, float]:
    close: Callable[[], Awaitable[None]]
    if kind == "plain-aiohttp":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        url = f"http://127.0.0.1:{port}/hook"

        async def send() -> None:
            async with session.post(url, data=BODY, headers=dict(HEADERS)) as response:
                await response.read()

        close = session.close
    else:
        policy = AddressPolicy([ipaddress.ip_network("127.0.0.0/8")])
        transport = open_transport(kind, TransportOptions(policy, Limits(4096, concurrency)))
        await transport.start()
        origin, timeouts = Origin("http", "127.0.0.1", port), Timeouts(5, 10, 5, 10)

        async def send() -> None:
            await transport.send(Request(origin, HOOK, list(HEADERS), BODY), timeouts)

        close = transport.close
    for _ in range(200):
        await send()
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while sent < requests:
            sent += 1
            await send()

    cpu_before, started = cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu_used, elapsed = cpu() - cpu_before, time.perf_counter() - started
    await close()
    return cpu_used / sent * 1e6, sent / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--clients", default="fast,aiohttp,plain-aiohttp")
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for kind in args.clients.split(","):
            per_request, rate = uvloop.run(measure(kind, port, args.requests, args.concurrency))
            print(f"{kind:<14} {per_request:6.1f} µs CPU per request   ({rate:,.0f} requests/s)", flush=True)
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
