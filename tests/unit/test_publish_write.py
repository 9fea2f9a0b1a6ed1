"""``write`` answers for exactly the records of one request: all acknowledged, or a 503/413 problem,
and never waits for a delivery report past its bound."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fanout.api import publish
from fanout.api.context import Api
from fanout.api.problems import Problem
from fanout.config import ApiSettings, Settings
from fanout.model.errors import ProduceFailed, RecordTooLarge
from fanout.model.ports import RecordMetadata


class Producer:
    """Hands out the futures ``write`` waits for; the test settles them (or never does)."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[RecordMetadata]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Any) -> Any:
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


def app(producer: Producer, produce_timeout: float = 30) -> Api:
    settings = Settings(api=ApiSettings(produce_timeout=produce_timeout))
    return Api(settings, None, producer, None, None, None, None)  # type: ignore[arg-type]


RECORDS: list[publish.Record] = [(b"a", None, []), (b"b", None, []), (b"c", None, [])]


async def test_every_acknowledgement_in_order() -> None:
    producer = Producer()
    writing = asyncio.create_task(publish.write(app(producer), "t", RECORDS))
    await asyncio.sleep(0)
    for offset, future in reversed(list(enumerate(producer.futures))):
        future.set_result(RecordMetadata("t", 0, offset))
    assert [m.offset for m in await writing] == [0, 1, 2]


@pytest.mark.parametrize(
    ("error", "status"),
    [(ProduceFailed("Broker: Not enough in-sync replicas"), 503), (RecordTooLarge("big"), 413)],
)
async def test_one_failed_record_fails_the_request(error: Exception, status: int) -> None:
    producer = Producer()
    writing = asyncio.create_task(publish.write(app(producer), "t", RECORDS))
    await asyncio.sleep(0)
    producer.futures[0].set_result(RecordMetadata("t", 0, 0))
    producer.futures[2].set_exception(error)
    with pytest.raises(Problem) as raised:
        await writing
    assert raised.value.status == status
    assert producer.futures[1].cancelled(), "nothing waits for the rest"


async def test_a_report_that_never_comes_is_a_503_after_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "REPORT_GRACE_SECONDS", 0.05)
    producer = Producer()
    writing = asyncio.create_task(publish.write(app(producer, produce_timeout=0.05), "t", RECORDS))
    await asyncio.sleep(0)
    producer.futures[0].set_result(RecordMetadata("t", 0, 0))
    with pytest.raises(Problem) as raised:
        await asyncio.wait_for(writing, 10)
    assert raised.value.status == 503 and "timed out" in raised.value.detail
    assert all(f.done() for f in producer.futures)
