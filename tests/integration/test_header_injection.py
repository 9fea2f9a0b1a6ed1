"""Header injection end to end (issue 12): a CR/LF in an event's ``traceparent`` or content type never
reaches a subscriber's connection. Through the API such values are refused (400 naming the field);
written straight to Kafka (CloudEvents structured and binary mode, and plain record headers) they are
dropped by ``decode`` and counted, and the event is delivered without them. The receiver is a raw
asyncio server that logs every request line and header line it reads, so an extra header or a
second, smuggled request would be visible."""

from __future__ import annotations

from typing import Any

import orjson

from fanout.telemetry.metrics import Metrics
from tests.integration.api import api_settings, create_api_topics, record_count, running_api, source_topic
from tests.integration.engine import apply, produce_records, running, subscription
from tests.wire_receiver import WireReceiver, WireRequest

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SMUGGLED = "\r\ncontent-length: 0\r\n\r\nPOST /smuggled HTTP/1.1\r\nhost: victim\r\nx-smuggled: yes"
BAD_TRACEPARENT = TRACEPARENT + SMUGGLED
BAD_CONTENT_TYPE = "application/json" + SMUGGLED
CE_JSON = b"application/cloudevents+json"


def cloudevent(event_id: str, **attributes: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "type": "t.injected",
        "source": "/t",
        "id": event_id,
        "data": {"n": 1},
        **attributes,
    }


def binary(event_id: str, **attributes: str) -> list[tuple[str, bytes]]:
    ce = {"specversion": "1.0", "type": "t.injected", "source": "/t", "id": event_id, **attributes}
    return [(f"ce_{k}", v.encode()) for k, v in ce.items()]


async def test_the_api_refuses_header_breaking_trace_context_and_content_types(
    bootstrap: str, unique: str
) -> None:
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)
    cases = [
        ({"json": cloudevent("a", traceparent=BAD_TRACEPARENT)}, "body/traceparent"),
        (
            {"json": cloudevent("b", traceparent="00-" + "0" * 32 + "-00f067aa0ba902b7-01")},
            "body/traceparent",
        ),
        ({"json": cloudevent("c", traceparent=TRACEPARENT, tracestate="k=v\r\nx: y")}, "body/tracestate"),
        ({"json": cloudevent("d", datacontenttype=BAD_CONTENT_TYPE)}, "body/datacontenttype"),
        ({"json": cloudevent("e", datacontenttype="application/json; charset")}, "body/datacontenttype"),
        ({"json": [{"event": "ok"}, cloudevent("f", traceparent="nope")]}, "body/1/traceparent"),
        (
            {"json": {"event": "x"}, "headers": {"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"}},
            "header.traceparent",
        ),
        ({"json": {"event": "x"}, "headers": {"traceparent": "ff" + TRACEPARENT[2:]}}, "header.traceparent"),
        ({"json": {"event": "x"}, "headers": {"traceparent": TRACEPARENT.upper()}}, "header.traceparent"),
        (
            {"json": {"event": "x"}, "headers": {"traceparent": TRACEPARENT, "tracestate": "a=1,a=2"}},
            "header.tracestate",
        ),
        (
            {"data": b'{"event": "x"}', "headers": {"Content-Type": "application/json; charset"}},
            "header.Content-Type",
        ),
    ]
    async with running_api(settings) as api:
        for request, field in cases:
            status, headers, problem = await api.call("POST", "/v1/events", **request)
            assert status == 400, (field, status, problem)
            assert headers["Content-Type"].startswith("application/problem+json")
            assert [e["field"] for e in problem["errors"]] == [field], problem
            assert "\r" not in problem["detail"] and "smuggled" not in orjson.dumps(problem).decode()
        # the valid forms pass
        valid = cloudevent("g", traceparent=TRACEPARENT, tracestate="congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        valid["datacontenttype"] = 'text/plain; charset="utf-8"'
        status, _, body = await api.call(
            "POST", "/v1/events", valid, headers={"traceparent": TRACEPARENT, "tracestate": "vendor@tenant=x"}
        )
        assert status == 202, body
    assert record_count(settings, source_topic(settings)) == 1, "nothing refused was written"


def requests_for(receiver: WireReceiver, ids: list[str]) -> bool:
    """Every event's body has arrived (the smuggled request, if any, carries the body: it comes last)."""
    return all(any(f'"{i}"'.encode() in r.body for r in receiver.requests) for i in ids)


def request_of(receiver: WireReceiver, event_id: str) -> WireRequest:
    (request,) = [r for r in receiver.requests if f'"{event_id}"'.encode() in r.body]
    return request


async def test_injected_values_written_straight_to_kafka_never_reach_the_wire(
    bootstrap: str, unique: str
) -> None:
    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)
    simple = {"event": "t.injected", "data": {"n": 1}}
    records = [
        # structured mode: the traceparent attribute, and the record's content-type header
        (None, orjson.dumps(cloudevent("s-tp", traceparent=BAD_TRACEPARENT)), [("content-type", CE_JSON)]),
        (None, orjson.dumps(cloudevent("s-ct")), [("content-type", BAD_CONTENT_TYPE.encode())]),
        # binary mode: ce_traceparent, ce_tracestate and ce_datacontenttype
        (None, b'{"n": "b-tp"}', binary("b-tp", traceparent=BAD_TRACEPARENT)),
        (None, b'{"n": "b-ts"}', binary("b-ts", traceparent=TRACEPARENT, tracestate="k=v" + SMUGGLED)),
        (None, b'{"n": "b-ct"}', binary("b-ct", datacontenttype=BAD_CONTENT_TYPE)),
        # plain record headers on the simple shape
        (None, orjson.dumps({**simple, "id": "p-tp"}), [("traceparent", BAD_TRACEPARENT.encode())]),
        (None, orjson.dumps({**simple, "id": "p-ct"}), [("content-type", BAD_CONTENT_TYPE.encode())]),
        # valid values are kept
        (
            None,
            b'{"n": "ok"}',
            binary("ok", traceparent=TRACEPARENT, datacontenttype="text/plain; charset=utf-8"),
        ),
    ]
    ids = ["s-tp", "s-ct", "b-tp", "b-ts", "b-ct", "p-tp", "p-ct", "ok"]
    metrics = Metrics("fanout-test", environ={})
    async with WireReceiver() as standard, WireReceiver() as raw:
        await apply(
            settings,
            [
                subscription("standard", standard.url, [topic]),
                subscription("raw", raw.url, [topic], payload="raw"),
            ],
        )
        async with running(settings, metrics=metrics) as app:
            produce_records(settings, topic, records)
            await standard.wait_for(lambda: requests_for(standard, ids), 60)
            await raw.wait_for(lambda: requests_for(raw, ids), 60)
            scrape = metrics.scrape().decode()
        for receiver in (standard, raw):
            lines = [r.line for r in receiver.requests]
            assert set(lines) == {"POST /hook HTTP/1.1"}, [(r.line, r.headers) for r in receiver.requests]
            for request in receiver.requests:
                names = [n.lower() for n, _ in request.headers]
                assert "x-smuggled" not in names and names.count("content-length") == 1, request
                assert request.values("content-length") == [str(len(request.body))], request
            for event_id in ids:
                request = request_of(receiver, event_id)
                kept = [TRACEPARENT] if event_id in ("b-ts", "ok") else []
                assert request.values("traceparent") == kept, request
                assert request.values("tracestate") == [], request
        assert request_of(standard, "b-ct").values("content-type") == ["application/json"]
        assert request_of(raw, "b-ct").values("content-type") == ["application/json"]
        assert request_of(raw, "p-ct").values("content-type") == ["application/json"]
        assert request_of(raw, "s-ct").values("content-type") == ["application/json"]
        assert request_of(raw, "s-tp").values("content-type") == ["application/cloudevents+json"]
        assert request_of(raw, "ok").values("content-type") == ["text/plain; charset=utf-8"]
        dropped = app.telemetry.dispatcher_metrics.dropped_attributes
        assert dropped == {"traceparent": 3, "tracestate": 1, "content-type": 2, "datacontenttype": 1}
        assert 'fanout_decode_dropped_attributes_total{attribute="traceparent"} 3.0' in scrape
        assert 'fanout_decode_dropped_attributes_total{attribute="datacontenttype"} 1.0' in scrape
