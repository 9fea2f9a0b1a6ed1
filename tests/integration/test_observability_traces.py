"""One trace from the producer to the subscriber: the publisher's span, the dispatcher's process,
attempt and hand-off spans, and the ``traceparent`` the receiver got; a retried delivery stays in the
trace and links to the original context. An in-memory exporter collects every span."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from fanout.kafka.publisher import Publisher
from fanout.telemetry.tracing import parse_traceparent, setup_tracing
from tests.integration.engine import apply, create_engine_topics, engine_settings, running, subscription
from tests.receivers import Receiver


async def wait_for_spans(
    exporter: InMemorySpanExporter, done: Callable[[list[ReadableSpan]], bool], timeout: float = 20
) -> list[ReadableSpan]:
    deadline = time.monotonic() + timeout
    while True:
        spans = list(exporter.get_finished_spans())
        if done(spans):
            return spans
        assert time.monotonic() < deadline, f"spans: {[s.name for s in spans]}"
        await asyncio.sleep(0.1)  # spans end on the dispatcher's loop, after the responses


def received_parent(traceparent: str) -> tuple[int, int]:
    context = parse_traceparent(traceparent)
    assert context is not None, traceparent
    assert context.trace_flags.sampled
    return context.trace_id, context.span_id


async def test_one_trace_from_producer_to_subscriber_and_through_a_retry(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.users"
    create_engine_topics(settings, [topic])
    exporter = InMemorySpanExporter()
    tracing = setup_tracing(1.0, "fanout-test", processors=[SimpleSpanProcessor(exporter)])
    client_provider = TracerProvider()
    client_provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def fail_once(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503 if n == 0 else 204)

    async with Receiver() as ok, Receiver(fail_once) as flaky:
        await apply(
            settings,
            [
                subscription("ok", ok.url, [topic], events=["user.*"]),
                subscription("flaky", f"{flaky.url}/in?token=t0ps3cret", [topic], events=["user.*"]),
            ],
        )
        async with running(settings, tracing=tracing):
            publisher = Publisher(bootstrap, tracer_provider=client_provider)
            event_id = publisher.publish(topic, "user.created", {"user_id": 7}, key="7")
            publisher.flush()
            await ok.wait_count(1)
            await flaky.wait_count(2)
            spans = await wait_for_spans(exporter, lambda s: sum(x.name == "POST" for x in s) == 3)

    by_id = {s.context.span_id: s for s in spans}
    (producer,) = [s for s in spans if s.kind is SpanKind.PRODUCER and s.name == f"send {topic}"]
    trace_id = producer.context.trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}, "every span is in the producer's trace"

    def parent(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, span.name
        return by_id[span.parent.span_id]

    # The source record: one process span, a child of the producer's span.
    (process,) = [s for s in spans if s.name == f"process {topic}"]
    assert parent(process) is producer and process.kind is SpanKind.CONSUMER
    assert process.attributes is not None
    assert process.attributes["messaging.system"] == "kafka"
    assert process.attributes["messaging.destination.name"] == topic
    assert process.attributes["messaging.consumer.group.name"] == settings.dispatcher.group_id
    assert process.attributes["messaging.message.id"] == event_id
    assert "messaging.kafka.offset" in process.attributes
    assert "messaging.destination.partition.id" in process.attributes

    # Delivered at once: the receiver's traceparent is the attempt span, a child of the process span.
    attempts = [s for s in spans if s.name == "POST"]
    (to_ok,) = [a for a in attempts if a.attributes and a.attributes["fanout.subscription.id"] == "ok"]
    assert parent(to_ok) is process and to_ok.kind is SpanKind.CLIENT
    assert received_parent(ok.requests[0].headers["traceparent"]) == (trace_id, to_ok.context.span_id)
    assert to_ok.attributes is not None
    assert to_ok.attributes["http.response.status_code"] == 204
    assert to_ok.attributes["fanout.delivery.attempt"] == 1
    assert to_ok.attributes["fanout.event.id"] == event_id
    assert to_ok.attributes["url.full"] == ok.url

    # Retried: attempt 1 failed, the retry-tier write is a child of it, the retry's process span
    # continues from that write and links to the original context, and so does attempt 2.
    flaky_attempts = sorted(
        (a for a in attempts if a.attributes and a.attributes["fanout.subscription.id"] == "flaky"),
        key=lambda a: a.start_time or 0,
    )
    first, second = flaky_attempts
    assert parent(first) is process
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes is not None and first.attributes["http.response.status_code"] == 503
    assert first.attributes["url.full"] == f"{flaky.url}/in?REDACTED"
    assert received_parent(flaky.requests[0].headers["traceparent"]) == (trace_id, first.context.span_id)
    retry_topic = settings.topics.retry(0)
    (hand_off,) = [s for s in spans if s.name == f"send {retry_topic}"]
    assert parent(hand_off) is first and hand_off.kind is SpanKind.PRODUCER
    (retry_process,) = [s for s in spans if s.name == f"process {retry_topic}"]
    assert parent(retry_process) is hand_off
    assert [link.context.span_id for link in retry_process.links] == [producer.context.span_id]
    assert parent(second) is retry_process
    assert [link.context.span_id for link in second.links] == [producer.context.span_id]
    assert second.attributes is not None and second.attributes["fanout.delivery.attempt"] == 2
    assert received_parent(flaky.requests[1].headers["traceparent"]) == (trace_id, second.context.span_id)
    tracing.shutdown()


async def test_without_tracing_the_subscriber_gets_the_producers_traceparent(
    bootstrap: str, unique: str
) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.users"
    create_engine_topics(settings, [topic])
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Receiver() as receiver:
        await apply(settings, [subscription("ok", receiver.url, [topic], events=["*"])])
        async with running(settings):
            publisher = Publisher(bootstrap, tracer_provider=provider)
            publisher.publish(topic, "user.created", {"user_id": 7})
            publisher.flush()
            await receiver.wait_count(1)
    (producer,) = exporter.get_finished_spans()
    assert received_parent(receiver.requests[0].headers["traceparent"]) == (
        producer.context.trace_id,
        producer.context.span_id,
    )
