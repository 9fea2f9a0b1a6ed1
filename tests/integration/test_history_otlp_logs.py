"""``history.otlp_logs``: ``fanout api`` emits each attempt it indexes as an OpenTelemetry log record with
its trace context, over OTLP/HTTP, to a real receiver on loopback (decoded with opentelemetry-proto);
a new index emits only the attempts decided after it started, not the topic's whole past."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from fanout.config import HistorySettings
from fanout.history.record import Outcome
from tests.history_records import TRACE, make
from tests.integration.api import api_settings, create_api_topics, running_api
from tests.integration.attempts import produce_records
from tests.integration.test_api_history import caught_up

pytestmark = pytest.mark.integration
TIMEOUT = 60.0


class OtlpReceiver:
    """Accepts ``POST /v1/logs`` (protobuf) and keeps every log record with its resource attributes."""

    def __init__(self) -> None:
        self.records: list[tuple[dict[str, Any], Any]] = []
        self.arrived = asyncio.Event()

    async def logs(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportLogsServiceRequest.FromString(await request.read())
        for resource_logs in message.resource_logs:
            resource = {a.key: _value(a.value) for a in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    self.records.append((resource, record))
        self.arrived.set()
        return web.Response(body=b"", content_type="application/x-protobuf")


def _value(v: AnyValue) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


def attributes(record: Any) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in record.attributes}


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    r = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/logs", r.logs)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield r, f"http://127.0.0.1:{port}/v1/logs"
    finally:
        await runner.cleanup()


async def test_each_indexed_attempt_is_an_otlp_log_record_with_its_trace(
    bootstrap: str, unique: str, receiver: tuple[OtlpReceiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, url = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", url)
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "fanout-api-test")
    settings = api_settings(bootstrap, unique)
    settings = settings.model_copy(
        update={"history": HistorySettings(path=settings.history.path, otlp_logs=True, retention=3600)}
    )
    create_api_topics(settings)
    now = int(time.time() * 1000)
    produce_records(settings, [make(Outcome.DELIVERED, "evt-before", "hook-1", now - 60_000)])
    async with running_api(settings) as api:
        await caught_up(api)
        decided = int(time.time() * 1000) + 1000
        produce_records(
            settings,
            [
                make(Outcome.RETRY_SCHEDULED, "evt-after", "hook-1", decided, 1, status=503),
                make(Outcome.DEAD_LETTERED, "evt-after", "hook-2", decided + 1, 3, trace_id=None),
            ],
        )
        deadline = time.monotonic() + TIMEOUT
        while len(sink.records) < 2:
            assert time.monotonic() < deadline, f"{len(sink.records)} log records arrived"
            sink.arrived.clear()
            with __import__("contextlib").suppress(TimeoutError):
                await asyncio.wait_for(sink.arrived.wait(), 1)

    emitted = sorted(
        (attributes(r)["fanout.event_id"], attributes(r)["fanout.subscription"]) for _, r in sink.records
    )
    assert emitted == [("evt-after", "hook-1"), ("evt-after", "hook-2")], (
        "each attempt once; the one decided before the new index started is not emitted"
    )
    by_sub = {attributes(r)["fanout.subscription"]: (res, r) for res, r in sink.records}
    resource, retry = by_sub["hook-1"]
    assert resource["service.name"] == "fanout-api-test"
    assert retry.trace_id.hex() == TRACE and retry.flags & 0x01
    assert retry.time_unix_nano == decided * 1_000_000
    assert retry.severity_text == "WARN" and retry.body.string_value == "retry_scheduled evt-after -> hook-1"
    attrs = attributes(retry)
    assert attrs["fanout.event_id"] == "evt-after" and attrs["fanout.outcome"] == "retry_scheduled"
    assert attrs["http.response.status_code"] == 503 and attrs["fanout.attempt"] == 1
    assert attrs["fanout.latency_ms"] == 12.5 and attrs["error.type"] == "HTTPStatus"
    assert attrs["messaging.destination.name"] == "orders" and attrs["messaging.kafka.offset"] == 42
    _, dead = by_sub["hook-2"]
    assert dead.trace_id == b"" and dead.severity_text == "ERROR"
    assert attributes(dead)["fanout.reason"] == "retries exhausted"
