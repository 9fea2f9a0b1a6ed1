"""``POST /v1/ingest/{source}``: receive a third party's webhook, verify it, publish it.

The source's scheme (``fanout.api.inbound``) is the credential: third parties cannot send fanout API
keys, so this route takes none. A request that does not verify gets 401 and nothing is published.
A verified one is published to the source's topic in the simple event shape: the type from the
source's ``event_type`` / ``event_type_header`` / ``event_type_field`` (defaults per scheme:
``X-GitHub-Event``; the body's ``type`` for Stripe and Standard Webhooks), the id derived from the
delivery id (redeliveries keep their event id), the body as ``data`` (JSON, or text).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from fanout.api.context import api
from fanout.api.inbound import Unverified, event_id, verify
from fanout.api.problems import Problem, not_found
from fanout.api.publish import new_id, write
from fanout.api.validation import BODY
from fanout.config import IngestSource

routes = web.RouteTableDef()

DEFAULT_TYPE_HEADER = {"github": "X-GitHub-Event"}
DEFAULT_TYPE_FIELD = {"stripe": "type", "standard-webhooks": "type"}
MAX_TYPE = 256


def _event_type(source: IngestSource, request: web.Request, data: object) -> str:
    header = source.event_type_header or DEFAULT_TYPE_HEADER.get(source.scheme)
    field = source.event_type_field or DEFAULT_TYPE_FIELD.get(source.scheme)
    found: object = source.event_type
    if found is None and header:
        found = request.headers.get(header)
    if found is None and field and isinstance(data, dict):
        found = data.get(field)
    if not isinstance(found, str) or not 0 < len(found) <= MAX_TYPE:
        where = header or field or "event_type"
        raise Problem(400, f"no event type: expected {where} (a string of 1 to {MAX_TYPE} characters)")
    return found


@routes.post("/v1/ingest/{source}")
async def ingest(request: web.Request) -> web.Response:
    app = api(request)
    name = request.match_info["source"]
    source = app.settings.api.ingest.get(name)
    if source is None:
        raise not_found(f"ingest source {name!r}")
    body: bytes = request[BODY] or b""
    try:
        delivery_id = verify(source, request.headers, body)
    except Unverified as exc:
        raise Problem(
            401, f"the webhook does not verify: {exc}", headers={"WWW-Authenticate": "Signature"}
        ) from None
    try:
        data: object = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = body.decode("utf-8", "replace")
    event = {
        "event": _event_type(source, request, data),
        "id": event_id(name, delivery_id) if delivery_id else new_id(),
        "data": data,
    }
    (written,) = await write(app, source.topic, [(orjson.dumps(event), None, [])])
    return web.json_response(
        {"id": event["id"], "topic": written.topic, "partition": written.partition, "offset": written.offset},
        status=202,
    )
