"""The loop-polled producer the dispatcher's records go through: every record's ``done`` (or future) runs
on the loop once the broker acknowledged it, a record the broker refuses gets its error, and ``close``
waits for what is outstanding."""

from __future__ import annotations

import asyncio
import threading

import pytest

from fanout.config import Settings
from fanout.kafka.loop_producer import LoopProducer
from fanout.kafka.topics import admin_client, create_topics, internal_topics
from fanout.model.errors import ProduceFailed, RecordTooLarge
from tests.integration.engine import header, read_topic, wait_for_topics


async def test_every_record_is_acknowledged_on_the_loop_and_a_refused_one_gets_its_error(
    settings: Settings,
) -> None:
    topic = settings.topics.attempts
    specs = [s for s in internal_topics(settings) if s.name == topic]
    create_topics(admin_client(settings), specs)
    wait_for_topics(settings, [topic])
    loop = asyncio.get_running_loop()
    producer = LoopProducer(settings, loop, extra={"message.max.bytes": 100_000})
    n = 2000
    results: list[ProduceFailed | None] = []
    threads: set[int] = set()
    all_done = asyncio.Event()

    def done(error: ProduceFailed | None) -> None:
        threads.add(threading.get_ident())
        results.append(error)
        if len(results) == n + 1:
            all_done.set()

    for i in range(n):
        producer.produce_then(topic, b'{"n":%d}' % i, b"evt-%d" % i, done)
    producer.produce_then(topic, b"x" * 200_000, b"too-big", done)
    await asyncio.wait_for(all_done.wait(), 60)
    await producer.close()
    assert threads == {threading.get_ident()}, "done runs on the loop's thread"
    assert results.count(None) == n
    assert [type(e) for e in results if e is not None] == [RecordTooLarge]
    assert len(read_topic(settings, topic, n)) == n


async def test_produce_is_a_record_sink_whose_futures_resolve_on_the_loop(settings: Settings) -> None:
    """``produce`` (the dispatcher's retry, dead-letter and ops records, through the same producer as
    the attempt records): each future resolves on the loop, once the broker acknowledged the record,
    to where it was written, with its headers kept; a record the broker refuses fails its future with
    the final error, and the attempt records written meanwhile are acknowledged as before."""
    topic = settings.topics.dlq
    attempts = settings.topics.attempts
    specs = [s for s in internal_topics(settings) if s.name in (topic, attempts)]
    create_topics(admin_client(settings), specs)
    wait_for_topics(settings, [topic, attempts])
    loop = asyncio.get_running_loop()
    producer = LoopProducer(settings, loop, extra={"message.max.bytes": 100_000})
    threads: set[int] = set()
    n = 500
    acked: list[ProduceFailed | None] = []
    futures = []
    for i in range(n):
        future = producer.produce(topic, b"v%d" % i, b"k%d" % i, [("fanout-attempt", b"%d" % i)])
        future.add_done_callback(lambda f: threads.add(threading.get_ident()))
        futures.append(future)
        producer.produce_then(attempts, b'{"n":%d}' % i, b"evt-%d" % i, acked.append)
    too_big = producer.produce(topic, b"x" * 200_000, b"too-big", [])
    results = await asyncio.wait_for(asyncio.gather(*futures), 60)
    with pytest.raises(RecordTooLarge):
        await asyncio.wait_for(too_big, 60)
    await producer.close()
    assert threads == {threading.get_ident()}, "futures resolve on the loop's thread"
    assert all(r.topic == topic and r.offset >= 0 for r in results)
    assert len({(r.partition, r.offset) for r in results}) == n
    assert acked == [None] * n
    written = read_topic(settings, topic, n)
    assert sorted(header(m, "fanout-attempt") or "" for m in written) == sorted(str(i) for i in range(n))
