"""The JWKS fetch (``fanout.http.jwks``) against a real HTTP server on loopback: a good document is
returned; a non-200 answer, a redirect (never followed), a body that is not a JSON object, one larger
than ``MAX_JWKS_BYTES``, a refused connection and a server slower than the deadline are
``JwksUnavailable``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from fanout.http.jwks import MAX_JWKS_BYTES, JwksUnavailable, fetch_jwks

DOCUMENT = {"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]}


@pytest.fixture
async def server() -> AsyncIterator[str]:
    release = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.json_response(DOCUMENT)

    def answer(response: web.StreamResponse) -> web.Handler:
        async def handler(_: web.Request) -> web.StreamResponse:
            return response

        return handler

    async def moved(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/jwks")

    app = web.Application()
    app.router.add_get("/jwks", answer(web.json_response(DOCUMENT)))
    app.router.add_get("/missing", answer(web.json_response({}, status=404)))
    app.router.add_get("/moved", moved)
    app.router.add_get("/list", answer(web.json_response([1, 2])))
    app.router.add_get("/text", answer(web.Response(text="<html>")))
    app.router.add_get("/huge", answer(web.Response(body=b"[" + b"1," * MAX_JWKS_BYTES + b"1]")))
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        release.set()
        await runner.cleanup()


async def test_a_jwks_document_is_fetched_and_every_bad_answer_is_unavailable(server: str) -> None:
    assert await fetch_jwks(f"{server}/jwks", 10) == DOCUMENT
    for path, reason in [
        ("/missing", "HTTP 404"),
        ("/moved", "HTTP 302"),
        ("/list", "not a JSON object"),
        ("/text", "not JSON"),
        ("/huge", "larger than"),
        ("/slow", "TimeoutError"),
    ]:
        with pytest.raises(JwksUnavailable, match=reason):
            await fetch_jwks(f"{server}{path}", 0.5)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(JwksUnavailable, match="Connect"):
        await fetch_jwks(f"http://127.0.0.1:{port}/jwks", 5)
