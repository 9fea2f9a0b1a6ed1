"""``fanout listen``: a local receiver that prints each delivery and whether its signature verifies."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Mapping

import click
import orjson
from aiohttp import web

from fanout.api.inbound import Unverified, standard_webhook

TOLERANCE = 300.0


def _summary(body: bytes) -> tuple[str, str]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "-", body[:200].decode("utf-8", "replace")
    event_type = payload.get("type", "-") if isinstance(payload, dict) else "-"
    data = payload.get("data", payload) if isinstance(payload, dict) else payload
    return str(event_type), orjson.dumps(data).decode()[:200]


def _verified(secrets: list[str], headers: Mapping[str, str], body: bytes) -> bool:
    try:
        standard_webhook(secrets, headers, body, TOLERANCE)
    except (Unverified, ValueError):  # ValueError: a --secret that is not base64
        return False
    return True


def make_app(secrets: list[str], status: int, as_json: bool) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        verified = _verified(secrets, request.headers, body) if secrets else None
        event_type, data = _summary(body)
        record = {
            "received_at": time.time(),
            "path": request.path,
            "id": request.headers.get("webhook-id"),
            "type": event_type,
            "verified": verified,
            "data": data,
        }
        if as_json:
            sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
        else:
            mark = {True: "signature ok", False: "SIGNATURE INVALID", None: "signature not checked"}[verified]
            stamp = time.strftime("%H:%M:%S")
            sys.stdout.write(f"{stamp}  {record['id']}  {event_type}  {mark}  {data}\n")
        sys.stdout.flush()
        return web.Response(status=status)

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", receive)
    return app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9000, show_default=True, type=int, help="Port to listen on.")
@click.option("--secret", "secrets", multiple=True, help="whsec_ secret to verify with (repeatable).")
@click.option(
    "--status", default=204, show_default=True, type=click.IntRange(100, 599), help="Status to answer."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per delivery.")
def listen(host: str, port: int, secrets: tuple[str, ...], status: int, as_json: bool) -> None:
    """Receive webhooks locally and print each one, with its signature check."""

    async def serve() -> None:
        runner = web.AppRunner(make_app(list(secrets), status, as_json), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        click.echo(f"listening on http://{host}:{port}/", err=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
