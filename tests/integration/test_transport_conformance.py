"""Both transports against raw servers that misbehave on purpose: HTTP/1.1 framing, response limits and
header checks. Every case runs against ``fast`` and ``aiohttp`` and requires the same outcome class.
(Connecting, TLS, the pool and the proxy: ``test_transport_connections.py``.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from fanout.http.fields import HeaderBlock, RequestTarget
from fanout.http.transport import (
    InvalidHeader,
    Origin,
    ProtocolError,
    ReadTimeout,
    Request,
    ResponseLimits,
    ResponseTooLarge,
    ServerDisconnected,
    Timeouts,
)
from tests.rawhttp import (
    NO_CONTENT,
    TRANSPORTS,
    Conn,
    RawServer,
    answer,
    endless,
    open_test_transport,
    post,
    serving,
)

T = Timeouts(connect=5, read=10, pool=5, total=10)
HOOK = RequestTarget.build("/hook")


@pytest.fixture(params=TRANSPORTS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def at(server: RawServer, host: str = "127.0.0.1") -> Origin:
    return Origin("http", host, server.port)


async def test_keep_alive_reuses_one_connection(kind: str) -> None:
    async with serving(answer(NO_CONTENT)) as server, open_test_transport(kind) as t:
        for _ in range(10):
            assert (await t.send(post(at(server), "/hook?x=1"), T)).status == 204
    assert len(server.requests) == 10 and server.connections == 1
    request = server.requests[0]
    assert request.line == "POST /hook?x=1 HTTP/1.1"
    assert request.header("host") == f"127.0.0.1:{server.port}" and request.body == b"{}"


async def test_informational_responses_are_skipped(kind: str) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
    first = interim + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
    second = b"HTTP/1.1 201 Created\r\nContent-Length: 6\r\n\r\nsecond"
    async with serving(answer(first, second)) as server, open_test_transport(kind) as t:
        one = await t.send(post(at(server)), T)
        two = await t.send(post(at(server)), T)
    assert (one.status, one.body) == (200, b"first")
    assert (two.status, two.body) == (201, b"second"), "the final response answered the first request"
    assert server.connections == 1


async def test_101_is_a_protocol_error(kind: str) -> None:
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    async with serving(answer(switching)) as server, open_test_transport(kind) as t:
        with pytest.raises(ProtocolError):
            await t.send(post(at(server)), T)


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it",
        b"HTTP/1.0 200 OK\r\n\r\nall of it",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nall of it",
    ],
    ids=["http11", "http10", "non-chunked-coding"],
)
async def test_a_close_delimited_body_completes_at_eof(kind: str, response: bytes) -> None:
    async with serving(answer(response, close=True)) as server, open_test_transport(kind) as t:
        result = await t.send(post(at(server)), T)
        again = await t.send(post(at(server)), T)
    assert (result.status, result.body) == (200, b"all of it") and again.status == 200
    assert len(server.requests) == 2 and server.connections == 2, "each success was sent once"


async def test_chunked_with_extensions_and_trailers(kind: str) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
        b'5;name=value\r\nhello\r\n6;quoted="a b"\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n'
    )
    async with serving(answer(chunked)) as server, open_test_transport(kind) as t:
        for _ in range(3):
            response = await t.send(post(at(server)), T)
            assert (response.status, response.body) == (200, b"hello world")
    assert server.connections == 1, "the connection stays usable after the trailers"


async def test_http10_keep_alive_and_close(kind: str) -> None:
    kept = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    async with serving(answer(kept)) as server, open_test_transport(kind) as t:
        for _ in range(3):
            assert (await t.send(post(at(server)), T)).body == b"ok"
    assert server.connections == 1
    plain = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with serving(answer(plain)) as server, open_test_transport(kind) as t:
        for _ in range(3):
            assert (await t.send(post(at(server)), T)).body == b"ok"
    assert server.connections == 3, "an HTTP/1.0 response without keep-alive ends its connection"


async def test_connection_close_is_honoured(kind: str) -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with serving(answer(closing)) as server, open_test_transport(kind) as t:
        for _ in range(3):
            assert (await t.send(post(at(server)), T)).status == 200
    assert server.connections == 3


async def test_a_request_on_a_connection_the_server_just_closed_is_sent_again(kind: str) -> None:
    async def close_when_the_second_request_starts(conn: Conn) -> None:
        await conn.request()
        await conn.send(NO_CONTENT)
        if conn.server.connections == 1:
            await conn.reader.read(1)  # the next request is being written: close without a word
            return
        while True:
            await conn.request()
            await conn.send(NO_CONTENT)

    async with serving(close_when_the_second_request_starts) as server, open_test_transport(kind) as t:
        assert (await t.send(post(at(server)), T)).status == 204
        assert (await t.send(post(at(server)), T)).status == 204
    assert server.connections == 2 and len(server.requests) == 2


async def test_a_new_connection_that_closes_is_not_tried_again(kind: str) -> None:
    async def close_after_reading(conn: Conn) -> None:
        await conn.request()

    async with serving(close_after_reading) as server, open_test_transport(kind) as t:
        with pytest.raises(ServerDisconnected):
            await t.send(post(at(server)), T)
    assert server.connections == 1


@pytest.mark.parametrize(
    "body",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ],
)
async def test_an_early_close_mid_body_fails_and_is_not_sent_again(kind: str, body: bytes) -> None:
    async with serving(answer(body, close=True)) as server, open_test_transport(kind) as t:
        with pytest.raises(ServerDisconnected):
            await t.send(post(at(server)), T)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "status_line",
    [
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTX/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    ],
)
async def test_an_invalid_status_line_is_a_protocol_error(kind: str, status_line: bytes) -> None:
    async with serving(answer(status_line)) as server, open_test_transport(kind) as t:
        with pytest.raises(ProtocolError):
            await t.send(post(at(server)), T)


async def test_garbage_is_a_protocol_error(kind: str) -> None:
    async def garbage(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"\x16\x03\x01\x02\x00\x01\x00\xff garbage \x00\x00")
        await conn.reader.read()  # keep the connection open: the parser must not wait for more

    async with serving(garbage) as server, open_test_transport(kind) as t:
        with pytest.raises(ProtocolError):
            await t.send(post(at(server)), T)


async def test_bytes_after_the_response_do_not_answer_the_next_request(kind: str) -> None:
    extra = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 500 Stale\r\nContent-Length: 0\r\n\r\n"
    async with serving(answer(extra, NO_CONTENT)) as server, open_test_transport(kind) as t:
        assert (await t.send(post(at(server)), T)).status == 200
        await asyncio.sleep(0)  # (the stray bytes may arrive before or after: both must be safe)
        assert (await t.send(post(at(server)), T)).status in (200, 204)
    assert server.connections == 2, "a connection that sent an unasked-for response is not reused"


async def test_a_redirect_is_returned_not_followed(kind: str) -> None:
    async with serving(answer(b"")) as server:
        moved = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/other\r\nContent-Length: 0\r\n\r\n"
        server.handler = answer(moved % server.port)
        async with open_test_transport(kind) as t:
            response = await t.send(post(at(server)), T)
    assert response.status == 302 and response.header(b"location") is not None
    assert [r.line for r in server.requests] == ["POST /hook HTTP/1.1"]


async def test_response_headers_and_body_prefix_are_returned(kind: str) -> None:
    big = b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 200000\r\n\r\n" + b"y" * 200_000
    async with serving(answer(big)) as server, open_test_transport(kind) as t:
        for _ in range(2):
            response = await t.send(post(at(server)), T)
            assert response.status == 503 and response.header(b"retry-after") == b"7"
            assert response.body == b"y" * ResponseLimits().body_prefix
            assert response.body_size == 200_000
    assert server.connections == 1, "a body under the cap is read to its end; the connection is kept"


@pytest.mark.parametrize(
    ("wire", "size"),
    [
        (b"Content-Length: 10\r\n\r\n0123456789", 10),
        (b"Transfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n4\r\n6789\r\n0\r\n\r\n", 10),
        (b"Content-Length: 3\r\n\r\nabc", 3),
        (b"Content-Length: 0\r\n\r\n", 0),
    ],
    ids=["length", "chunked", "shorter-than-the-prefix", "empty"],
)
@pytest.mark.parametrize("prefix", [0, 4])
async def test_the_history_prefix_of_a_body_and_its_whole_size(
    kind: str, wire: bytes, size: int, prefix: int
) -> None:
    head = b"HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\n"
    async with (
        serving(answer(head + wire)) as server,
        open_test_transport(kind, response=ResponseLimits(body_prefix=prefix)) as t,
    ):
        response = await t.send(post(at(server)), T)
    full = b"0123456789" if size == 10 else b"abc"[:size]
    assert (response.status, response.body, response.body_size) == (500, full[:prefix], size)


# -- response limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(100)) + b"\r\n",
    ],
    ids=["one-long-line", "many-lines"],
)
async def test_an_oversized_header_block_fails(kind: str, head: bytes) -> None:
    async with serving(answer(head)) as server, open_test_transport(kind) as t:
        with pytest.raises(ResponseTooLarge):
            await t.send(post(at(server)), T)
    lines = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(50))
    fits = b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 0\r\n\r\n"
    async with serving(answer(fits)) as server, open_test_transport(kind) as t:
        assert len((await t.send(post(at(server)), T)).headers) == 51


@pytest.mark.parametrize(
    "handler",
    [
        endless(b"HTTP/1.1 200 OK\r\nX-Endless: "),
        endless(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n"),
        endless(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"10000\r\n" + b"z" * 65536 + b"\r\n"
        ),
        endless(b"HTTP/1.1 200 OK\r\n\r\n"),
    ],
    ids=["header-line", "content-length", "chunked", "close-delimited"],
)
async def test_an_endless_response_fails_at_its_cap_not_at_the_deadline(kind: str, handler: object) -> None:
    async with serving(handler) as server, open_test_transport(kind) as t:  # type: ignore[arg-type]
        started = time.monotonic()
        with pytest.raises(ResponseTooLarge):
            await t.send(post(at(server)), T)
    assert time.monotonic() - started < T.total / 2


@pytest.mark.parametrize("in_head", [False, True], ids=["body", "head"])
async def test_a_one_byte_per_second_trickle_ends_at_the_deadline(kind: str, in_head: bool) -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"t" * 1000

    async def trickle(conn: Conn) -> None:
        await conn.request()
        start = 0 if in_head else response.index(b"\r\n\r\n") + 4
        await conn.send(response[:start])
        for byte in response[start:]:
            await conn.send(bytes([byte]))
            await asyncio.sleep(1)

    deadline = Timeouts(connect=2, read=2.5, pool=2, total=2.5)
    async with serving(trickle) as server, open_test_transport(kind) as t:
        started = time.monotonic()
        with pytest.raises(ReadTimeout):
            await t.send(post(at(server)), deadline)
    assert 2.4 < time.monotonic() - started < 2.5 + 2.0  # the bound holds on a loaded machine


# -- request headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        ("traceparent", "00-abc\r\nContent-Length: 0\r\n\r\nPOST /smuggled HTTP/1.1"),
        ("x-a", "line\nfeed"),
        ("x-a", "carriage\rreturn"),
        ("x-a", "nul\x00byte"),
        ("x-a", "bell\x07"),
        ("x-a", "日本"),
        ("bad name", "v"),
        ("x:y", "v"),
        ("", "v"),
        ("Content-Length", "0"),
        ("host", "elsewhere"),
    ],
)
async def test_headers_that_cannot_go_on_the_wire_are_refused_before_any_io(
    kind: str, header: tuple[str, str]
) -> None:
    async with serving(answer(NO_CONTENT)) as server, open_test_transport(kind) as t:
        with pytest.raises(InvalidHeader) as refused:
            await t.send(post(at(server), headers=[("content-type", "application/json"), header]), T)
        with pytest.raises(InvalidHeader):
            await t.send(Request(at(server), HOOK, [], b"{}", HeaderBlock.build([header])), T)
        with pytest.raises(InvalidHeader):
            await t.send(post(at(server), "/hook path\r\nX: y"), T)
    assert header[1][:3] not in str(refused.value) or not header[1][:3].strip(), "values are not echoed"
    assert server.connections == 0


async def test_latin1_and_tabs_are_allowed(kind: str) -> None:
    async with serving(answer(NO_CONTENT)) as server, open_test_transport(kind) as t:
        fields = [("x-name", "café\tcrème"), ("x-empty", "")]
        assert (await t.send(post(at(server), headers=fields), T)).status == 204
    assert server.requests[0].header("x-empty") == ""
