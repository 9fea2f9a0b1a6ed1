"""The small parts of the history: latency histograms, the indexer's lag, the writer's port and log,
the settings and the attempts topic, the lag metrics."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanout.config import HistorySettings, Settings, TopicSettings, load_settings
from fanout.history import latency, writer
from fanout.history.codec import decode
from fanout.history.metrics import register_history_metrics
from fanout.history.record import Body, Failure, Origin, Outcome, Request, Response, Retry
from fanout.history.status import HistoryStatus, lag_records, lag_seconds
from fanout.history.writer import SinkAttemptLog, recorded, trace_id_of
from fanout.kafka.topics import internal_topics
from fanout.model.attempt import AttemptResult
from fanout.model.errors import ConfigError, ProduceFailed, RecordTooLarge
from fanout.model.event import Headers
from fanout.model.ports import RecordMetadata
from fanout.pipeline.handoff import Backoff
from fanout.telemetry.metrics import Metrics
from tests.history_records import VALIDATOR
from tests.unit.factories import make_event

# -- latency -------------------------------------------------------------------------------------------


@given(st.floats(1, 3_600_000, allow_nan=False))
def test_a_bucket_stands_for_its_latencies_within_five_percent(ms: float) -> None:
    assert abs(latency.value(latency.bucket(ms)) - ms) <= ms * 0.05 + 1e-9


def test_histograms_merge_and_survive_bad_blobs() -> None:
    a = latency.pack({3: 2, 10: 1})
    b = latency.pack({3: 1, 50: 4})
    assert latency.unpack(latency.merge(a, b)) == {3: 3, 10: 1, 50: 4}
    assert latency.merge(None, a) == a
    for bad in (b"nonsense", b"{}", b"[1]", b'[-1, 5, 3, "x", 999, 1]'):
        assert latency.unpack(bad) == {}


def test_percentiles_of_a_histogram() -> None:
    hist: latency.Histogram = {}
    for ms in range(1, 1001):
        b = latency.bucket(float(ms))
        hist[b] = hist.get(b, 0) + 1
    p50, p99 = latency.percentiles(hist, (0.5, 0.99))
    assert p50 is not None and p99 is not None
    assert math.isclose(p50, 500, rel_tol=0.06) and math.isclose(p99, 990, rel_tol=0.06)
    assert latency.percentiles({}, (0.5,)) == [None]
    assert latency.percentiles({0: 1}, (0.99,)) == [0.5]


# -- lag -----------------------------------------------------------------------------------------------


def test_records_lag_counts_from_the_next_offset_or_the_start() -> None:
    assert lag_records({0: 10, 1: 5}, {0: 7}, {0: 0, 1: 2}) == 3 + 3
    assert lag_records({0: 10}, {0: 3}, {0: 8}) == 2  # retention deleted what was before 8
    assert lag_records({0: 10, 1: 5}, {0: 7}, {}) is None
    assert lag_records({0: -1}, {0: 0}, {0: 0}) is None


def test_seconds_lag_is_zero_when_caught_up_else_the_age_of_the_last_record() -> None:
    assert lag_seconds(0, 1000, 0, 50) == 0
    assert lag_seconds(5, 40_000, 0, 50) == 10
    assert lag_seconds(5, None, 20, 50) == 30
    assert lag_seconds(None, 40_000, 0, 50) is None


def test_the_lag_metrics_are_exported_under_their_prometheus_names() -> None:
    metrics = Metrics("test")
    register_history_metrics(metrics.meter, lambda: HistoryStatus(7, 2.5, False, 100, 3, 1))
    text = metrics.scrape().decode()
    assert "fanout_history_lag_seconds 2.5" in text
    assert "fanout_history_lag_records 7.0" in text
    assert "fanout_history_skipped_total 3.0" in text and "fanout_history_rebuilds_total 1.0" in text
    unknown = Metrics("test")
    register_history_metrics(unknown.meter, lambda: HistoryStatus(None, None, False))
    assert "fanout_history_lag_seconds " not in unknown.scrape().decode()


# -- settings and the topic ----------------------------------------------------------------------------


def test_history_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Settings().history
    assert (h.record, h.retention, h.response_bytes, h.payload_bytes, h.otlp_logs) == (
        "all",
        7 * 24 * 3600,
        1024,
        0,
        False,
    )
    monkeypatch.setenv("FANOUT_HISTORY__RECORD", "failures")
    monkeypatch.setenv("FANOUT_HISTORY__RETENTION", "3600")
    loaded = load_settings().history
    assert (loaded.record, loaded.retention) == ("failures", 3600)


@pytest.mark.parametrize(
    ("name", "value"),
    [("RECORD", "some"), ("RETENTION", "10"), ("RESPONSE_BYTES", "-1"), ("PAYLOAD_BYTES", "70000")],
)
def test_bad_history_settings_fail_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"FANOUT_HISTORY__{name}", value)
    with pytest.raises(ConfigError, match=f"history.{name.lower()}"):
        load_settings()


def test_a_directory_is_not_an_index_file(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="directory"):
        HistorySettings(path=tmp_path)  # type: ignore[arg-type]


def test_topics_create_makes_the_attempts_topic_with_the_history_retention() -> None:
    settings = Settings(topics=TopicSettings(prefix="acme"), history=HistorySettings(retention=2 * 86400))
    spec = next(t for t in internal_topics(settings) if t.name == "acme.attempts")
    assert settings.topics.attempts == "acme.attempts" and settings.topics.is_internal(spec.name)
    assert spec.config["retention.ms"] == str(2 * 86400 * 1000)
    assert spec.config["cleanup.policy"] == "delete"
    assert spec.partitions == settings.topics.partitions


# -- the writer's side ---------------------------------------------------------------------------------


def test_history_record_modes() -> None:
    assert all(recorded("all", o) for o in Outcome)
    assert not any(recorded("off", o) for o in Outcome)
    assert {o for o in Outcome if recorded("failures", o)} == {
        Outcome.RETRY_SCHEDULED,
        Outcome.DEAD_LETTERED,
        Outcome.DROPPED,
        Outcome.DISABLED,
    }


def test_trace_ids_come_from_the_traceparent() -> None:
    assert (
        trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        == "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01") is None
    assert trace_id_of(None) is None and trace_id_of("garbage") is None


@given(st.text(alphabet="0123456789abcdefABCDEF -g\u0669\n", min_size=32, max_size=32))
def test_a_trace_id_is_32_lowercase_hex_digits_not_all_zero(trace_id: str) -> None:
    valid = re.fullmatch(r"[0-9a-f]{32}", trace_id) is not None and trace_id != "0" * 32
    assert trace_id_of(f"00-{trace_id}-00f067aa0ba902b7-01") == (trace_id if valid else None)


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_record_carries_the_attempt_and_the_payload_on_a_deliverys_first_record_only() -> None:
    event = make_event(value=b'{"event":"order.created","data":{"n":1}}')
    event.source_timestamp_ms = 1_699_999_999_000
    log = SinkAttemptLog(FakeSink([]), "t.attempts", "all", "m-0", response_bytes=4, payload_bytes=10)
    result = AttemptResult(1_700_000_000, 0.0125, 503, [(b"Content-Type", b"text/plain")], b"nope", 9)
    value = log.encode(
        Outcome.RETRY_SCHEDULED,
        event,
        "hook-1",
        1,
        traceparent=TRACEPARENT,
        result=result,
        error="HTTP 503",
        retry=(0, 1_700_000_005_000),
        now=1.7e9,
    )
    obj = orjson.loads(value)
    VALIDATOR.validate(obj)
    first = decode(value)
    assert first.payload is not None and first.payload.text == '{"event":"' and first.payload.truncated
    assert (first.event_id, first.subscription, first.attempt, first.time_ms) == (
        event.id,
        "hook-1",
        1,
        1.7e12,
    )
    assert first.request == Request(event.id, 1_700_000_000, 12.5)
    assert first.response is not None and first.response.status == 503
    assert first.response.content_type == "text/plain" and first.response.body is not None
    assert (first.response.body.text, first.response.body.size, first.response.body.truncated) == (
        "nope",
        9,
        True,
    )
    assert first.error == Failure("HTTPStatus", "HTTP 503") and first.retry == Retry(0, 1_700_000_005_000)
    assert first.origin == Origin("orders", 0, event.offset, 1_699_999_999_000)
    assert first.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and first.member == "m-0"
    second = decode(log.encode(Outcome.DELIVERED, event, "hook-1", 2, result=AttemptResult(1, 0.001, 204)))
    assert second.payload is None and second.error is None
    assert second.response == Response(204, None, Body("", "utf-8", 0, False))
    spilled = decode(log.encode(Outcome.SPILLED, event, "hook-1", 0, reason="lane full", retry=(1, 5)))
    assert spilled.request is None and spilled.response is None and spilled.reason == "lane full"
    assert spilled.payload is not None  # no attempt made before it: the delivery's first record


def test_a_record_never_holds_request_headers_secrets_or_the_request_body() -> None:
    secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
    event = make_event(value=b'{"data":"request-body-text"}')
    log = SinkAttemptLog(FakeSink([]), "t.attempts", "all", "m-0")
    result = AttemptResult(1, 0.01, 200, [(b"content-type", b"application/json")], b"{}", 2)
    value = log.encode(Outcome.DELIVERED, event, "hook-1", 1, result=result)
    assert b"request-body-text" not in value and b"whsec_" not in value and secret.encode() not in value
    assert b"webhook-signature" not in value and b"authorization" not in value.lower()


class FakeSink:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.produced: list[tuple[str, bytes | None, bytes | None, Headers]] = []

    def produce_then(
        self, topic: str, value: bytes, key: bytes | None, done: Callable[[Exception | None], None]
    ) -> None:
        """``AsyncProducer.produce_then``: ``done`` hears how the record's future ended."""
        future = self.produce(topic, value, key, [])
        future.add_done_callback(lambda f: None if f.cancelled() else done(f.exception()))

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> asyncio.Future[RecordMetadata]:
        self.produced.append((topic, value, key, headers))
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        if self.failures:
            future.set_exception(self.failures.pop(0))
        else:
            future.set_result(RecordMetadata(topic, 0, len(self.produced)))
        return future


FAST = Backoff(first=0.001, cap=0.002)


class FakeTicket:
    def __init__(self) -> None:
        self.released = 0
        self.fenced = False

    def add(self, n: int) -> None:
        return None

    def release(self) -> None:
        self.released += 1


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.001)


async def test_the_log_writes_the_record_keyed_by_event_id_and_retries_until_acknowledged() -> None:
    sink = FakeSink([ProduceFailed("broker down"), ProduceFailed("still down")])
    log = SinkAttemptLog(sink, "t.attempts", "all", "m-0", backoff=FAST)
    event, ticket = make_event(), FakeTicket()
    log.write(Outcome.SPILLED, event, "hook-1", 0, ticket, reason="lane full", retry=(0, 1))
    await until(lambda: ticket.released > 0)
    assert ticket.released == 1 and len(sink.produced) == 3 and log.stats == {"retried": 2, "written": 1}
    topic, value, key, headers = sink.produced[-1]
    assert (topic, key, headers) == ("t.attempts", event.id.encode(), [])
    assert decode(value).outcome is Outcome.SPILLED and value == sink.produced[0][1]


async def test_a_fenced_delivery_stops_retrying_and_a_refused_record_is_dropped() -> None:
    sink = FakeSink([ProduceFailed("down")] * 100)
    log = SinkAttemptLog(sink, "t.attempts", "all", "m-0", backoff=FAST)
    ticket = FakeTicket()
    log.write(Outcome.DROPPED, make_event(), "hook-1", 0, ticket)
    await until(lambda: log.stats["retried"] >= 3)
    ticket.fenced = True  # the partition was revoked: the next failure stops the retries
    await until(lambda: log.stats["retried"] >= 4)
    tried = len(sink.produced)
    await asyncio.sleep(0.05)  # nothing more happens: time is what there is to wait for
    assert len(sink.produced) == tried and ticket.released == 0
    refusing = SinkAttemptLog(FakeSink([RecordTooLarge("too big")]), "t.attempts", "all", "m-0", backoff=FAST)
    refused = FakeTicket()
    refusing.write(Outcome.DROPPED, make_event(), "hook-1", 0, refused)
    await until(lambda: refused.released > 0)
    assert refusing.stats == {"refused": 1} and refused.released == 1


def test_the_log_wants_what_its_mode_records() -> None:
    log = SinkAttemptLog(FakeSink([]), "t.attempts", "failures", "m-0")
    assert not log.wants(Outcome.DELIVERED) and log.wants(Outcome.DEAD_LETTERED)


@pytest.mark.parametrize(
    ("data", "limit", "size"),
    [(b"", 8, 0), (b"ok", 8, None), (b"0123456789", 4, None), ("h\u00e9llo".encode(), 2, None),
     (b"\xff\xfe binary", 4, 100), (b"abc", 0, None), (b"x" * 70_000, 65_536, None)],
)  # fmt: skip
def test_the_writers_body_is_what_body_of_stores(data: bytes, limit: int, size: int | None) -> None:
    expected = Body.of(data, limit, size)
    got = writer._body(data, limit, size)
    if expected is None:
        assert got is None
    else:
        assert got == {
            "text": expected.text,
            "encoding": expected.encoding,
            "size": expected.size,
            "truncated": expected.truncated,
        }
