"""The API's connections under slow and greedy clients (issue 13, defects 7 and 10): a request must
arrive within ``api.read_timeout`` of its first byte (a client trickling its head or body, or saying
nothing, is answered 408 and cut off), one client address holds at most
``api.max_connections_per_client`` connections (one more is answered 429 and closed) while other
clients keep working, and a malformed request (an oversized header) is a 400 problem logged as one
WARNING line without a traceback or the offending bytes."""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import orjson
import pytest

from tests.integration.api import FULL_KEY, api_settings, create_api_topics, running_api

BODY = orjson.dumps({"event": "slow.client", "data": {"pad": "x" * 64}})


def head(port: int, length: int = len(BODY)) -> bytes:
    return (
        f"POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Bearer {FULL_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    ).encode()


async def trickle(port: int, kind: str, bound: float, source: str = "127.0.0.1") -> tuple[float, bytes]:
    """Open a connection and misbehave as ``kind`` until the server closes it (or ``bound`` seconds):
    (seconds the connection stayed open, what the server sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    started = time.monotonic()
    received = b""
    if kind == "body":
        writer.write(head(port))
    data = head(port) if kind == "head" else BODY
    sent = 0
    try:
        while time.monotonic() - started < bound:
            # Once the server has answered or closed, there is nothing left to trickle: writing to a
            # transport the server closed raises (uvloop: RuntimeError). Stop writing and read what
            # the server sent before it closed.
            if kind != "silent" and sent < len(data) and not received:
                try:
                    writer.write(data[sent : sent + 1])
                    sent += 1
                except (ConnectionError, RuntimeError):
                    sent = len(data)
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 0.5)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            if not chunk:
                break
            received += chunk
    finally:
        writer.close()
    return time.monotonic() - started, received


async def test_slow_clients_are_cut_off_by_the_read_deadline(bootstrap: str, unique: str) -> None:
    read_timeout = 2.0
    settings = api_settings(bootstrap, unique, read_timeout=read_timeout, max_connections_per_client=0)
    create_api_topics(settings)
    async with running_api(settings) as api:
        port = int(api.base.rsplit(":", 1)[1])
        bound = read_timeout + 10  # far beyond the deadline: a connection still open then was not cut off
        kinds = ["body"] * 20 + ["head"] * 15 + ["silent"] * 15
        slow = asyncio.gather(*(trickle(port, kind, bound) for kind in kinds))
        status, _, _ = await api.call("POST", "/v1/events", {"event": "meanwhile"})
        assert status == 202, "a normal client is served while the slow ones trickle"
        results = await slow
    for kind, (seconds, received) in zip(kinds, results, strict=True):
        assert seconds < bound, f"a {kind} trickler was never cut off"
        assert seconds >= read_timeout * 0.9, f"a {kind} trickler was cut off early ({seconds:.2f}s)"
        assert received.startswith(b"HTTP/1.1 408 "), (kind, received[:200])
        assert b"application/problem+json" in received
    longest = max(seconds for seconds, _ in results)
    assert longest < read_timeout + 5, f"the slowest cut-off took {longest:.2f}s"


async def test_a_client_over_its_connection_cap_is_refused_while_others_are_served(
    bootstrap: str, unique: str
) -> None:
    settings = api_settings(bootstrap, unique, read_timeout=60, max_connections_per_client=4)
    create_api_topics(settings)
    async with running_api(settings) as api:
        port = int(api.base.rsplit(":", 1)[1])
        await api.session.close()  # its connections would count against 127.0.0.1
        held = [
            await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0)) for _ in range(4)
        ]
        seconds, received = await trickle(port, "silent", 10, source="127.0.0.2")
        assert received.startswith(b"HTTP/1.1 429 "), received[:200]
        assert seconds < 5, "refused at once, not after a timeout"

        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))
        ) as other:
            headers = {"Authorization": f"Bearer {FULL_KEY}"}
            async with other.post(api.base + "/v1/events", json={"event": "other"}, headers=headers) as r:
                assert r.status == 202, "another client is served"

        for _, writer in held:
            writer.close()
        deadline = time.monotonic() + 10
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        ) as again:
            while True:
                try:
                    async with again.get(api.base + "/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "the client's slots were never released"
                await asyncio.sleep(0.1)


async def test_an_oversized_header_is_a_quiet_400(
    bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)
    secret = "s3cret-" + "x" * 70_000
    async with running_api(settings) as api:
        port = int(api.base.rsplit(":", 1)[1])
        with caplog.at_level(logging.DEBUG):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /healthz HTTP/1.1\r\nhost: x\r\nx-token: {secret}\r\n\r\n".encode())
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
    assert answer.split(b" ", 2)[1] == b"400", answer[:200]
    assert b"application/problem+json" in answer and b"s3cret" not in answer
    problem = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert problem["status"] == 400 and problem["type"] == "urn:fanout:problem:malformed-request"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage()[:200] for r in errors]
    (line,) = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert "LineTooLong" in line.getMessage()
    assert all("s3cret" not in r.getMessage() and not r.exc_info for r in caplog.records)


async def test_a_client_that_leaves_mid_body_is_no_error(
    bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)
    async with running_api(settings) as api:
        port = int(api.base.rsplit(":", 1)[1])
        with caplog.at_level(logging.INFO):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head(port) + BODY[:10])
            await writer.drain()
            writer.close()  # gone before the body arrived
            deadline = time.monotonic() + 10
            while not any("POST /v1/events" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the server never noticed the client left"
                await asyncio.sleep(0.05)
            status, _, _ = await api.call("POST", "/v1/events", {"event": "after"})
            assert status == 202
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("left before its body arrived" in r.getMessage() for r in caplog.records)
