"""POST /v1/events against the real broker: the README's curl body, CloudEvents, batches, idempotency,
trace context, and every error status (400, 401, 403, 413, 415)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.integration.api import (
    READ_KEY,
    api_settings,
    create_api_topics,
    record_count,
    running_api,
    source_topic,
)
from tests.integration.engine import create_engine_topics, header, read_topic, wait_for_topics

CURL_BODY = b'{"event": "user_registered", "data": {"user_id": 1234, "email": "user@example.com"}}'
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_publish_answers_after_the_broker_acknowledged(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique, max_body_bytes=4096)
    topic = source_topic(settings)
    create_api_topics(settings)
    async with running_api(settings) as api:
        status, _, body = await api.call(
            "POST",
            "/v1/events",
            data=CURL_BODY,
            headers={"Content-Type": "application/json", "traceparent": TRACEPARENT},
        )
        assert status == 202, body
        assert set(body) == {"id", "topic", "partition", "offset"} and body["topic"] == topic
        ce = {"specversion": "1.0", "type": "order.placed", "source": "/shop", "id": "ce-1", "data": {"n": 1}}
        status, _, ce_result = await api.call(
            "POST",
            "/v1/events",
            data=orjson.dumps(ce),
            headers={"Content-Type": "application/cloudevents+json"},
        )
        assert status == 202 and ce_result["id"] == "ce-1"
        batch = [{"event": "a", "data": 1}, {"event": "b", "id": "mine"}, ce]
        status, _, results = await api.call("POST", "/v1/events", batch, headers={"Idempotency-Key": "k-1"})
        assert status == 202 and [r["id"] for r in results][1:] == ["mine", "ce-1"]
        status, _, again = await api.call("POST", "/v1/events", batch, headers={"Idempotency-Key": "k-1"})
        assert status == 202 and [r["id"] for r in again] == [r["id"] for r in results]
        assert again[0]["offset"] != results[0]["offset"] or again[0]["partition"] != results[0]["partition"]
        status, _, other = await api.call("POST", "/v1/events", batch, headers={"Idempotency-Key": "k-2"})
        assert other[0]["id"] != results[0]["id"]

        # errors, as problem+json, and nothing written for any of them
        errors = [
            (
                await api.call(
                    "POST", "/v1/events", data=b"{nope", headers={"Content-Type": "application/json"}
                ),
                400,
            ),
            (await api.call("POST", "/v1/events", {"data": {}}), 400),
            (await api.call("POST", "/v1/events", [{"event": "ok"}, {"event": ""}]), 400),
            (await api.call("POST", "/v1/events", {"event": "x"}, params={"topic": "elsewhere"}), 400),
            (
                await api.call("POST", "/v1/events", {"event": "x"}, params={"topic": settings.topics.dlq}),
                400,
            ),
            (await api.call("POST", "/v1/events", {"event": "x", "data": "y" * 5000}), 413),
            (
                await api.call("POST", "/v1/events", data=CURL_BODY, headers={"Content-Type": "text/plain"}),
                415,
            ),
            (await api.call("POST", "/v1/events", data=CURL_BODY, key=None), 401),
            (await api.call("POST", "/v1/events", data=CURL_BODY, key="fo_wrong"), 401),
            (await api.call("POST", "/v1/events", {"event": "x"}, key=READ_KEY), 403),
        ]
        for (status, headers, problem), expected in errors:
            assert status == expected, (expected, problem)
            assert headers["Content-Type"].startswith("application/problem+json")
            assert problem["status"] == expected and problem["type"].startswith("urn:fanout:problem:")
        unauthorized = errors[7][0]
        assert unauthorized[1]["WWW-Authenticate"].startswith("Bearer")

    assert record_count(settings, topic) == 11, "only the accepted events were written"
    records = read_topic(settings, topic, 11)
    assert len(records) == 11, "only the accepted events were written (1 + 1 + 3 batches of 3)"
    first = next(m for m in records if orjson.loads(m.value()).get("id") == body["id"])
    assert (first.partition(), first.offset()) == (body["partition"], body["offset"])
    assert orjson.loads(first.value()) == {**orjson.loads(CURL_BODY), "id": body["id"]}
    assert header(first, "traceparent") == TRACEPARENT
    ce_record = next(m for m in records if orjson.loads(m.value()).get("id") == "ce-1")
    assert header(ce_record, "content-type") == "application/cloudevents+json"


def test_publish_topics_are_checked_at_start(bootstrap: str, unique: str) -> None:
    from fanout.kafka.topics import TopicSpec, admin_client, create_topics, publish_topic_problems

    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)
    small = f"{unique}.small"
    create_topics(admin_client(settings), [TopicSpec(small, "source", 1, 1, {"max.message.bytes": "4096"})])
    wait_for_topics(settings, [small])
    problems = publish_topic_problems(admin_client(settings), settings, [topic, small, f"{unique}.missing"])
    assert len(problems) == 2
    assert f"{unique}.small takes records up to 4096 bytes" in problems[0]
    assert f"{unique}.missing does not exist" in problems[1]


async def test_the_api_serves_its_metrics(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)
    async with running_api(settings) as api:
        assert (await api.call("POST", "/v1/events", {"event": "a", "data": 1}))[0] == 202
        assert (await api.call("POST", "/v1/events", {"event": "a", "data": 1}, key=None))[0] == 401
        async with api.session.get(api.base + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
    assert "fanout_build_info{" in text
    assert 'fanout_api_requests_total{operation="publishEvents",status="202"} 1.0' in text
    assert 'fanout_api_requests_total{operation="publishEvents",status="401"} 1.0' in text


async def test_publish_continues_the_callers_trace_with_a_producer_span(bootstrap: str, unique: str) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from fanout.telemetry.tracing import setup_tracing

    exporter = InMemorySpanExporter()
    tracing = setup_tracing(1.0, "fanout-api", processors=[SimpleSpanProcessor(exporter)])
    settings = api_settings(bootstrap, unique)
    create_api_topics(settings)
    async with running_api(settings, tracing=tracing) as api:
        status, _, body = await api.call(
            "POST", "/v1/events", {"event": "a", "data": 1}, headers={"traceparent": TRACEPARENT}
        )
        assert status == 202, body
    (span,) = exporter.get_finished_spans()
    trace_id, parent_id = TRACEPARENT.split("-")[1:3]
    assert span.name == f"send {source_topic(settings)}"
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == parent_id
    (record,) = await asyncio.to_thread(read_topic, settings, source_topic(settings), 1)
    sent = header(record, "traceparent") or ""
    assert sent.split("-")[1] == trace_id and sent.split("-")[2] == format(span.context.span_id, "016x")


async def test_each_request_gets_its_own_records_acknowledgement_or_a_503(
    bootstrap: str, unique: str
) -> None:
    """Delivery reports are handed to the loop in batches: concurrent requests through the one producer
    must each get the answer for their own records. Requests to a topic whose broker refuses every record
    (``message.timestamp.before.max.ms=0``: every record is too old once it arrives) and to an
    allow-listed topic that does not exist get 503s (a batch too), never a 202; requests to a healthy
    topic at the same time each get their 202 and their record; nothing lands in the refusing topic."""
    from fanout.kafka.topics import TopicSpec, admin_client, create_topics

    refusing, missing, healthy = f"{unique}.refusing", f"{unique}.missing", f"{unique}.events"
    settings = api_settings(bootstrap, unique, topics=[healthy, refusing, missing], produce_timeout=2)
    config = {"message.timestamp.before.max.ms": "0"}
    create_topics(admin_client(settings), [TopicSpec(refusing, "source", 2, 1, config)])
    create_engine_topics(settings, [healthy])
    wait_for_topics(settings, [refusing, healthy])
    async with running_api(settings) as api:

        def post(body: object, topic: str) -> Any:
            return api.call("POST", "/v1/events", body, params={"topic": topic})

        calls = [
            *(post({"event": "r", "data": i}, refusing) for i in range(6)),
            post([{"event": "r"}] * 3, refusing),
            *(post({"event": "m", "data": i}, missing) for i in range(3)),
            *(post({"event": "h", "data": i}, healthy) for i in range(8)),
        ]
        answers = await asyncio.gather(*calls)
    refused, absent, accepted = answers[:7], answers[7:10], answers[10:]
    for status, headers, problem in refused + absent:
        assert status == 503, problem
        assert headers["Content-Type"].startswith("application/problem+json")
        assert "did not acknowledge" in problem["detail"]
    assert any("Broker:" in problem["detail"] for _, _, problem in refused), "the broker refused them"
    assert [status for status, _, _ in accepted] == [202] * 8
    assert len({(body["partition"], body["offset"]) for _, _, body in accepted}) == 8
    assert record_count(settings, refusing) == 0
    assert record_count(settings, healthy) == 8
