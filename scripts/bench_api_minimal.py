"""The API scenario's yardstick: the least an aiohttp server can do for ``POST /v1/events``.

aiohttp on uvloop (as ``fanout api`` runs), no middleware, no access log: read the body, parse it as
JSON (orjson, as fanout does), answer 202 with a JSON body of the shape fanout answers. No auth, no
validation, no Kafka. Serves until SIGTERM.
"""

from __future__ import annotations

import argparse

import orjson
import uvloop
from aiohttp import web

ANSWER = orjson.dumps({"id": "evt_0", "topic": "bench", "partition": 0, "offset": 0})


async def publish(request: web.Request) -> web.Response:
    orjson.loads(await request.read())
    return web.Response(status=202, body=ANSWER, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-body", type=int, default=1024 * 1024)
    args = parser.parse_args()
    app = web.Application(client_max_size=args.max_body)
    app.router.add_post("/v1/events", publish)
    web.run_app(
        app, host="127.0.0.1", port=args.port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


if __name__ == "__main__":
    main()
