"""The loop-polled producer the attempt records go through: every record's ``done`` runs on the loop
once the broker acknowledged it, a record the broker refuses gets its error, and ``close`` waits for
what is outstanding."""

from __future__ import annotations

import asyncio
import threading

from fanout.config import Settings
from fanout.kafka.loop_producer import LoopProducer
from fanout.kafka.topics import admin_client, create_topics, internal_topics
from fanout.model.errors import ProduceFailed, RecordTooLarge
from tests.integration.engine import read_topic, wait_for_topics


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
