"""The ceiling: the fastest plain client we can write in Python, with no Kafka.

One process, aiohttp on uvloop, keep-alive, pre-serialised bodies and headers, ``--concurrency``
requests in flight (the dispatcher's in-flight limit), posting the same bodies to the same sink.
Prints one JSON line: requests, seconds, requests/s, CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time

import aiohttp
import orjson
import uvloop


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(url: str, body: bytes, count: int, concurrency: int) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    headers = {"content-type": "application/json", "webhook-id": "ceiling"}
    remaining = count

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 204:
                        raise RuntimeError(f"sink answered {response.status}")

        for _ in range(concurrency):  # warm the connection pool
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
        started, cpu = time.perf_counter(), cpu_seconds()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, used = time.perf_counter() - started, cpu_seconds() - cpu
    return {"requests": count, "seconds": elapsed, "per_second": count / elapsed, "cpu_seconds": used}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with open(args.body_file, "rb") as f:
        body = f.read()
    result = uvloop.run(run(args.url, body, args.count, args.concurrency))
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
