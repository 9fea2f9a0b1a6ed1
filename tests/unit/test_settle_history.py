"""Settle with the delivery history on: which outcome writes which attempt record, and that a source
offset settles only once its attempt records are acknowledged (like its retry and dead-letter records)."""

from __future__ import annotations

import asyncio

import orjson

from fanout.history.codec import decode
from fanout.history.record import AttemptRecord, Outcome
from fanout.history.writer import Mode, SinkAttemptLog
from fanout.model import headers as H
from fanout.model.attempt import AttemptResult
from fanout.model.errors import EndpointGone, RetryableDelivery
from fanout.model.event import Delivery
from fanout.pipeline.counts import DISABLED_REASON
from fanout.pipeline.lanes import Spilled
from fanout.pipeline.offsets import Ticket
from tests.history_records import VALIDATOR
from tests.unit.factories import make_sub
from tests.unit.test_settle import DLQ, RETRY, Harness, Produced, until

ATTEMPTS = "fx.attempts"


def harness(mode: Mode = "all") -> Harness:
    h = Harness()
    h.settler.history = SinkAttemptLog(h.sink, ATTEMPTS, mode, "m-0", response_bytes=8)
    return h


def attempted(h: Harness, status: int | None, body: bytes = b"") -> Delivery:
    """A delivery whose attempt the sender saw answered with ``status`` (None: no answer)."""
    d = h.delivery()
    d.result = AttemptResult(1_700_000_000, 0.02, status, [(b"content-type", b"text/plain")], body, len(body))
    return d


def records(h: Harness) -> list[AttemptRecord]:
    out = []
    for r in h.sink.to(ATTEMPTS):
        assert r.value is not None
        VALIDATOR.validate(orjson.loads(r.value))
        out.append(decode(r.value))
    return out


def released(d: Delivery) -> bool:
    """Every share of the delivery's source record released (its offset may be committed)."""
    assert isinstance(d.ticket, Ticket)
    return d.ticket.pending == 0


async def settled(h: Harness, d: Delivery) -> None:
    await until(lambda: released(d))


async def callbacks() -> None:
    """Let the loop run the done-callbacks of the futures acknowledged so far."""
    for _ in range(3):
        await asyncio.sleep(0)


def only(h: Harness, topic: str) -> Produced:
    (record,) = h.sink.to(topic)
    return record


async def test_a_delivered_offset_settles_only_once_its_attempt_record_is_acknowledged() -> None:
    h = harness()
    d = attempted(h, 200, b"accepted, thank you")
    h.settler.done(d, None, 0.02)
    assert not released(d)
    (record,) = records(h)
    assert (record.outcome, record.attempt, record.subscription) == (Outcome.DELIVERED, 1, "hook-1")
    assert record.request is not None and record.request.webhook_id == d.event.id
    assert record.response is not None and record.response.status == 200
    assert record.response.body is not None and record.response.body.text == "accepted"
    assert record.response.body.truncated and record.error is None
    only(h, ATTEMPTS).ack()
    await settled(h, d)


async def test_a_retry_needs_its_retry_record_and_its_attempt_record_acknowledged() -> None:
    h = harness()
    d = attempted(h, 503, b"busy")
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.02)
    retry, attempt = only(h, RETRY[0]), only(h, ATTEMPTS)
    (record,) = records(h)
    assert record.outcome is Outcome.RETRY_SCHEDULED and record.attempt == 1
    assert record.retry is not None and record.retry.tier == 0
    assert record.retry.not_before_ms == int(retry.fanout[H.NOT_BEFORE])
    assert record.error is not None and (record.error.kind, record.error.message) == (
        "HTTPStatus",
        "HTTP 503",
    )
    retry.ack()
    await callbacks()
    assert not released(d)
    attempt.ack()
    await settled(h, d)


async def test_a_410_records_the_attempt_as_dead_lettered_and_a_disabled_subscription_without_one() -> None:
    h = harness()
    d = attempted(h, 410)
    h.settler.done(d, EndpointGone("HTTP 410", 410), 0.02)
    disabled = h.delivery(make_sub(enabled=False))
    h.settler.dead_letter(disabled, DISABLED_REASON)
    gone, off = records(h)
    assert gone.outcome is Outcome.DEAD_LETTERED and gone.response is not None and gone.response.status == 410
    assert gone.reason is not None and "endpoint gone" in gone.reason
    assert (off.outcome, off.request, off.response, off.reason) == (
        Outcome.DISABLED,
        None,
        None,
        DISABLED_REASON,
    )
    h.sink.to(DLQ)[0].ack()
    h.sink.to(DLQ)[1].ack()
    await callbacks()
    assert not released(d) and not released(disabled)
    for r in h.sink.to(ATTEMPTS):
        r.ack()
    await settled(h, d)
    await settled(h, disabled)


async def test_a_spill_and_a_drop_are_recorded_without_an_attempt() -> None:
    h = harness()
    d = h.delivery()
    h.settler.done(d, Spilled("lane full", 2.0), 0.0)
    gone = h.delivery()
    h.settler.dropped(gone.event, "deleted-sub", 3, gone.ticket, gone.traceparent)
    spilled, dropped = records(h)
    assert (spilled.outcome, spilled.request, spilled.reason) == (Outcome.SPILLED, None, "lane full")
    assert spilled.retry is not None
    assert (dropped.outcome, dropped.subscription, dropped.attempt) == (Outcome.DROPPED, "deleted-sub", 3)
    assert not released(gone)
    h.sink.to(ATTEMPTS)[1].ack()
    await settled(h, gone)


async def test_failures_mode_keeps_no_delivered_record_and_a_success_settles_at_once() -> None:
    h = harness("failures")
    d = attempted(h, 204)
    h.settler.done(d, None, 0.02)
    assert released(d) and h.sink.records == []
    failed = attempted(h, 500)
    h.settler.done(failed, RetryableDelivery("HTTP 500", 500), 0.02)
    assert [r.outcome for r in records(h)] == [Outcome.RETRY_SCHEDULED]


async def test_an_attempt_is_reported_by_one_record_only() -> None:
    h = harness()
    d = attempted(h, 503)
    h.settler.done(d, RetryableDelivery("HTTP 503", 503), 0.02)
    assert d.result is None  # taken by its record: a later attempt-less record cannot report it again
