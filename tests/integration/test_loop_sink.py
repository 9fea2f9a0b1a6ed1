"""The publish API's producer, polled on the loop: each future resolves on the loop to its own record's
place (or its error), a record nobody reports on fails by the report deadline, and ``close`` serves the
reports of what is outstanding."""

from __future__ import annotations

import asyncio
import threading

from fanout.config import Settings
from fanout.kafka.loop_sink import LoopSink
from fanout.kafka.topics import admin_client, create_topics, source_topics
from fanout.model.errors import ProduceFailed, RecordTooLarge
from fanout.model.ports import RecordMetadata
from tests.integration.engine import read_topic, wait_for_topics


async def test_each_future_gets_its_own_records_place_on_the_loop(settings: Settings, unique: str) -> None:
    topic = f"{unique}.events"
    create_topics(admin_client(settings), source_topics(settings, [topic]))
    wait_for_topics(settings, [topic])
    loop = asyncio.get_running_loop()
    sink = LoopSink(settings, loop, extra={"message.max.bytes": 100_000})
    threads: set[int] = set()
    n = 500
    futures = [sink.produce(topic, b'{"n":%d}' % i, b"k%d" % i, [("n", b"%d" % i)]) for i in range(n)]
    too_big = sink.produce(topic, b"x" * 200_000, None, [])
    for future in futures:
        future.add_done_callback(lambda _f: threads.add(threading.get_ident()))
    places = await asyncio.wait_for(asyncio.gather(*futures), 60)
    assert isinstance(too_big.exception(), RecordTooLarge)
    await sink.close(10)
    assert threads == {threading.get_ident()}, "futures resolve on the loop's thread"
    assert all(isinstance(p, RecordMetadata) and p.topic == topic for p in places)
    assert len({(p.partition, p.offset) for p in places}) == n
    records = read_topic(settings, topic, n)
    where = {(r.partition(), r.offset()): r for r in records}
    for i, place in enumerate(places):  # each future names the place of its own record
        record = where[(place.partition, place.offset)]
        assert record.value() == b'{"n":%d}' % i and record.key() == b"k%d" % i


async def test_a_record_without_a_report_fails_by_the_report_deadline(settings: Settings) -> None:
    """No broker answers (nothing listens on the port) and librdkafka would wait a minute for one: the
    future fails at the report deadline, not later."""
    unreachable = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:9"})}
    )
    loop = asyncio.get_running_loop()
    sink = LoopSink(unreachable, loop, extra={"message.timeout.ms": 60_000}, report_deadline=0.3)
    started = loop.time()
    future = sink.produce("anything", b"{}", None, [])
    try:
        await asyncio.wait_for(future, 30)
        raise AssertionError("the record cannot have been acknowledged")
    except ProduceFailed as exc:
        assert "no delivery report" in str(exc)
    assert 0.29 <= loop.time() - started < 10  # not before the deadline (0.3 s), and not a minute later
    await sink.close(0.1)
