"""``POST /v1/events``: publish an event (simple shape or CloudEvents JSON) or a JSON array of them.

The body was validated against ``schemas/envelope.schema.json`` (``fanout.api.middleware``). The topic
is the ``topic`` query parameter or ``api.default_topic`` and must be on ``api.topics``. Every event gets
an id before it is written, so the answer can name it: its own, or one derived from the
``Idempotency-Key`` (with the caller, the topic, the event's index in the batch and the request's
fingerprint: a repeated request gets the same ids, so subscribers see the same ``webhook-id``; the same
key with a different request is a 409, see ``fanout.api.idempotency``), or a new random one. The answer is 202
only after the broker acknowledged every record (acks=all). ``traceparent``/``tracestate`` go into the
record headers. Values that would reach a subscriber's request headers must be valid
(``fanout.model.wire_syntax``), or the request is a 400 naming the field: the ``traceparent`` and
``tracestate`` headers, and a CloudEvent's ``traceparent``, ``tracestate`` and ``datacontenttype``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson
from aiohttp import web
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from fanout.api.auth import PRINCIPAL
from fanout.api.context import Api, api
from fanout.api.idempotency import fingerprint, idempotent_id
from fanout.api.problems import Problem
from fanout.api.validation import BODY, PARAMS
from fanout.kafka.producer import ProduceFailed, RecordTooLarge
from fanout.kafka.send_span import inject_trace_headers, start_send_span
from fanout.model import wire_syntax
from fanout.model.event import Headers
from fanout.model.ports import RecordMetadata

Record = tuple[bytes, bytes | None, Headers]

routes = web.RouteTableDef()


class RandomIds:
    """``evt_`` and 128 random bits in hex, from ``os.urandom`` read 4 KiB at a time (a system call per
    256 ids, not one per id; a forked child starts with a fresh pool)."""

    POOL_BYTES = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._at = b"", 0

    def __call__(self) -> str:
        at = self._at
        if at + 16 > len(self._pool):
            self._pool, at = os.urandom(self.POOL_BYTES), 0
        self._at = at + 16
        return "evt_" + self._pool[at : at + 16].hex()


new_id = RandomIds()
REPORT_GRACE_SECONDS = 5.0  # after api.produce_timeout, librdkafka's own bound on a delivery report


def _expire(futures: list[asyncio.Future[RecordMetadata]]) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(ProduceFailed(""))


async def write(app: Api, topic: str, records: list[Record]) -> list[RecordMetadata]:
    """Produce ``records`` and wait for every acknowledgement; 413 when one is too large for Kafka,
    503 when the broker did not acknowledge (the caller may retry: with an Idempotency-Key the ids
    stay the same). librdkafka reports every record within ``api.produce_timeout``; one timer bounds
    the wait to ``REPORT_GRACE_SECONDS`` after that in any case."""
    futures = [app.producer.produce(topic, value, key, headers) for value, key, headers in records]
    wait = app.settings.api.produce_timeout + REPORT_GRACE_SECONDS
    timer = asyncio.get_running_loop().call_later(wait, _expire, futures)
    try:
        if len(futures) == 1:
            return [await futures[0]]
        return list(await asyncio.gather(*futures))  # the first failure answers at once
    except RecordTooLarge:
        raise Problem(413, "the event does not fit in a Kafka record (kafka.message_max_bytes)") from None
    except ProduceFailed as exc:
        detail = str(exc) or "timed out"
        if "Unknown topic" in detail or "UNKNOWN_TOPIC" in detail:
            detail = f"topic {topic} does not exist; create it with `fanout topics create {topic}`"
        raise Problem(503, f"the broker did not acknowledge the write: {detail}") from None
    finally:
        timer.cancel()
        for future in futures:
            future.cancel()


WIRE_CHECKS = {
    "traceparent": (wire_syntax.traceparent, "must be a W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>"),
    "tracestate": (wire_syntax.tracestate, "must be a W3C tracestate: up to 32 unique key=value members"),
    "datacontenttype": (wire_syntax.media_type, "must be a media type: type/subtype[; name=value]..."),
}


TRACE_HEADERS = ("traceparent", "tracestate")
CONTENT_TYPES = {
    False: ("content-type", b"application/json"),
    True: ("content-type", b"application/cloudevents+json"),
}


def checked(value: str, name: str, field: str) -> str:
    """``value`` as ``wire_syntax`` accepts it, or a 400 naming ``field``."""
    check, message = WIRE_CHECKS[name]
    valid = check(value)
    if valid is None:
        raise Problem(400, f"{field} is invalid: it {message}", errors=[{"field": field, "message": message}])
    return valid


def check_attributes(events: list[dict[str, Any]], batch: bool) -> None:
    """A CloudEvent's attributes that become request headers downstream must be valid (the simple shape
    has none: its schema allows no other fields)."""
    for index, event in enumerate(events):
        if "specversion" not in event:
            continue
        for name in WIRE_CHECKS:
            value = event.get(name)
            if isinstance(value, str):
                checked(value, name, f"body/{index}/{name}" if batch else f"body/{name}")


def _trace_headers(params: dict[str, Any]) -> Headers:
    """The ``traceparent``/``tracestate`` request headers (400 if invalid); a tracestate alone is ignored."""
    if "traceparent" not in params and "tracestate" not in params:
        return []
    found = {name: checked(params[name], name, f"header.{name}") for name in TRACE_HEADERS if name in params}
    if "traceparent" not in found:
        return []
    return [(name, value.encode()) for name, value in found.items()]


def _publish_span(app: Api, request: web.Request, topic: str, trace: Headers) -> Span | None:
    """With tracing on, a PRODUCER span for the write, child of the request's trace context (if any);
    its context replaces the request's in the records' headers."""
    tracer = app.tracing.tracer
    if tracer is None:
        return None
    carrier = {name: value.decode() for name, value in trace if value is not None}
    parent = TraceContextTextMapPropagator().extract(carrier) if carrier else None
    return start_send_span(tracer, topic, context=parent)


def chosen_topic(app: Api, params: dict[str, Any]) -> str:
    topic = params.get("topic") or app.default_topic
    if topic is None:
        raise Problem(400, "no topic: give ?topic= (api.default_topic is not set)", slug="no-topic")
    if topic not in app.publish_topics:
        raise Problem(
            400, f"topic {topic!r} is not on the publish allow-list (api.topics)", "topic-not-allowed"
        )
    return str(topic)


@routes.post("/v1/events")
async def publish(request: web.Request) -> web.Response:
    app = api(request)
    params = request[PARAMS]
    topic = chosen_topic(app, params)
    body = request[BODY]
    batch = isinstance(body, list)
    events: list[dict[str, Any]] = body if batch else [body]
    idempotency = params.get("Idempotency-Key")
    principal = request[PRINCIPAL].name
    key = params["key"].encode() if "key" in params else None
    check_attributes(events, batch)
    trace = _trace_headers(params)
    digest = b""
    if idempotency:
        digest = fingerprint(topic, params.get("key"), body)
        if not app.idempotency.claim(principal, idempotency, digest):
            raise Problem(
                409,
                "this Idempotency-Key was used with a different request (body, topic or key); "
                "use a new key for a new request",
                slug="idempotency-key-reused",
            )
    span = _publish_span(app, request, topic, trace)
    if span is not None:
        trace = inject_trace_headers([], span)
    records: list[Record] = []
    ids = []
    for index, event in enumerate(events):
        if not event.get("id"):
            event = {
                **event,
                "id": idempotent_id(principal, topic, idempotency, index, digest)
                if idempotency
                else new_id(),
            }
        content_type = CONTENT_TYPES["specversion" in event]
        records.append((orjson.dumps(event), key, [*trace, content_type] if trace else [content_type]))
        ids.append(str(event["id"]))
    try:
        written = await write(app, topic, records)
    finally:
        if span is not None:
            span.end()
    results = [
        {"id": event_id, "topic": m.topic, "partition": m.partition, "offset": m.offset}
        for event_id, m in zip(ids, written, strict=True)
    ]
    return web.Response(
        body=orjson.dumps(results if batch else results[0]), status=202, content_type="application/json"
    )
