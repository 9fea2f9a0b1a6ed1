"""Memory stays bounded under hostile responses, for both transports.

32 requests in flight (a lane's default ``max_in_flight``) against servers that send, as fast as the
client reads, an endless header line, an endless Content-Length body and an endless chunked body. Each
request must fail with ``ResponseTooLarge`` at its cap (64 KiB of headers, 1 MiB of body), and the
process's resident memory, sampled every 5 ms while they run, must not grow by more than
``BOUND_MIB`` over the baseline taken after a warm-up round. (Before the response caps, one 200 MiB
header line alone grew the dispatcher by 165 MiB.) The servers run in this process too; their buffers
are bounded by asyncio's write flow control.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Awaitable, Callable

import pytest

from fanout.http.transport import Origin, ResponseTooLarge, Timeouts
from tests.rawhttp import TRANSPORTS, endless, open_test_transport, post, serving

BOUND_MIB = 32
IN_FLIGHT = 32
PAGE = os.sysconf("SC_PAGE_SIZE")
T = Timeouts(connect=5, read=30, pool=5, total=30)
HOSTILE = (
    endless(b"HTTP/1.1 200 OK\r\nX-Endless: "),
    endless(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n"),
    endless(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"10000\r\n" + b"z" * 65536 + b"\r\n"),
)


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / (1024 * 1024)


async def _round(kind: str) -> None:
    for handler in HOSTILE:
        async with serving(handler) as server, open_test_transport(kind) as t:
            origin = Origin("http", "127.0.0.1", server.port)
            results = await asyncio.gather(
                *(t.send(post(origin), T) for _ in range(IN_FLIGHT)), return_exceptions=True
            )
        assert all(isinstance(r, ResponseTooLarge) for r in results), results[:3]


async def _sampling(work: Callable[[], Awaitable[None]]) -> float:
    peak = rss_mib()
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mib())
            await asyncio.sleep(0.005)

    sampler = asyncio.ensure_future(sample())
    try:
        await work()
    finally:
        done.set()
        await sampler
    return max(peak, rss_mib())


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_memory_is_bounded_under_hostile_responses(kind: str) -> None:
    await _round(kind)  # warm-up: one-time allocations belong to the baseline
    gc.collect()
    baseline = rss_mib()
    peak = await _sampling(lambda: _round(kind))
    print(f"{kind}: baseline {baseline:.1f} MiB, peak {peak:.1f} MiB, growth {peak - baseline:.1f} MiB")
    assert peak - baseline < BOUND_MIB
