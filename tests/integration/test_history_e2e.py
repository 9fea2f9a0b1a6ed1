"""The delivery history end to end: a real ``fanout run`` process, the real broker, three receivers, a
``kill -9`` mid-run and a restart; then the attempts topic indexed by the history indexer, and every
event's history compared with what the receivers saw.

1,000 events go to three subscriptions: ``healthy`` answers 204; ``flaky`` answers 500 to 30% of its
requests (chosen by a seeded generator); ``gone`` answers 410 from its 101st request on, which disables
it. Mid-run the receivers hold every new request unanswered, the test waits until the attempts topic
reports every request answered so far, and the dispatcher is killed with SIGKILL while the held
requests are in flight. A request whose answer the dispatcher never read cannot be reported by it:
those (the held ones) are the requests the comparison leaves out. The dispatcher then restarts, and
the run goes on until its consumer group has committed every source and retry-tier record.

Asserted for every event and subscription: the index holds a ``delivered`` record exactly when the
receiver answered a request for it with 2xx, and the final state is then ``delivered`` (or, for an
event read again after the restart once a 410 had disabled ``gone``, ``disabled``); otherwise it is
``dead_lettered`` or ``disabled``; the HTTP
attempts recorded equal the requests the receiver answered, status by status; and every record of the
topic validates against ``schemas/attempt.schema.json``.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import orjson
from aiohttp import web
from confluent_kafka import Consumer, TopicPartition

from fanout.config import Settings
from fanout.history.codec import decode
from fanout.history.indexer import HistoryIndexer
from fanout.history.store import HistoryStore
from tests.history_records import VALIDATOR
from tests.integration.engine import (
    DispatcherProcess,
    apply,
    create_engine_topics,
    engine_settings,
    events,
    produce,
    subscription,
)
from tests.receivers import Receiver

N = 1000
GONE_AFTER = 100
FLAKY_RATE = 0.3
KILL_AT = 300  # requests at the healthy receiver
TIMEOUT = 60.0


class Answers:
    """A receiver's responder: ``status(n)`` for request n, or, while ``hold`` is set, no answer until
    it is cleared (those requests are ``held``). ``answered[n]`` is the status request n got."""

    def __init__(self, status: object) -> None:
        self.status = status
        self.hold = False
        self.release = asyncio.Event()
        self.held: set[int] = set()
        self.answered: dict[int, int] = {}

    async def __call__(self, request: web.Request, n: int) -> web.StreamResponse:
        if self.hold:
            self.held.add(n)
            await self.release.wait()
            return web.Response(status=503)
        status = self.status(n)  # type: ignore[operator]
        self.answered[n] = status
        return web.Response(status=status, text="ok" if status < 300 else "no", content_type="text/plain")


class TopicReader:
    """Every value of ``topic`` from the beginning, read on a thread until ``stop``."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.values: list[bytes] = []
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                **settings.kafka.librdkafka(),
                "group.id": f"reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(500, 0.2):
                if msg.error() is None and msg.value() is not None:
                    self.values.append(msg.value())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def attempts(self) -> int:
        """Records of the topic so far that report an HTTP attempt."""
        return sum(1 for v in list(self.values) if b'"request":{' in v)


def ends(settings: Settings, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer({**settings.kafka.librdkafka(), "group.id": f"ends-{uuid.uuid4().hex}"})
    try:
        out = {}
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                out[(topic, p)] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        return out
    finally:
        consumer.close()


def all_committed(settings: Settings, topics: list[str]) -> bool:
    """The dispatcher's group has committed every record of ``topics`` (nothing left to deliver)."""
    end = ends(settings, topics)
    consumer = Consumer({**settings.kafka.librdkafka(), "group.id": settings.dispatcher.group_id})
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in end], timeout=10)
    finally:
        consumer.close()
    return all(max(tp.offset, 0) >= end[(tp.topic, tp.partition)] for tp in committed)


async def until(predicate: object, what: str, timeout: float = TIMEOUT, every: float = 0.25) -> None:
    """Poll ``predicate`` (a blocking call, run on a thread) until it holds, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting until {what}"
        await asyncio.sleep(every)  # polling the broker, with a deadline


async def test_every_events_history_matches_what_the_receivers_saw_across_a_kill_9(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("FANOUT_TEST_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    settings = engine_settings(
        bootstrap, unique, partitions=3, dispatcher={"session_timeout_ms": 6000, "commit_interval_ms": 200}
    )
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    retry_topics = [settings.topics.retry(i) for i in range(len(settings.retry.tiers))]
    answers = {
        "healthy": Answers(lambda n: 204),
        "flaky": Answers(lambda n: 500 if rng.random() < FLAKY_RATE else 200),
        "gone": Answers(lambda n: 410 if n >= GONE_AFTER else 202),
    }
    reader = TopicReader(settings, settings.topics.attempts)
    process = DispatcherProcess(settings, tmp_path / "dispatcher.log")
    async with (
        Receiver(answers["healthy"]) as healthy,
        Receiver(answers["flaky"]) as flaky,
        Receiver(answers["gone"]) as gone,
    ):
        receivers = {"healthy": healthy, "flaky": flaky, "gone": gone}
        await apply(settings, [subscription(name, r.url, [topic]) for name, r in receivers.items()])
        try:
            await asyncio.to_thread(produce, settings, topic, events(N))
            process.start()
            await healthy.wait_count(KILL_AT, TIMEOUT)
            for a in answers.values():
                a.hold = True
            answered = lambda: sum(len(a.answered) for a in answers.values())  # noqa: E731
            await until(lambda: reader.attempts() >= answered(), "every answered request is recorded")
            held = sum(len(a.held) for a in answers.values())
            process.kill()
            for a in answers.values():
                a.hold = False
                a.release.set()
            process.start()
            await until(lambda: all_committed(settings, [topic, *retry_topics]), "everything is settled")
        except BaseException:
            print(process.log()[-20_000:])
            raise
        finally:
            process.close()
    print(f"seed={seed}: {held} requests held at the kill; {len(reader.values)} records so far")

    store = HistoryStore(tmp_path / "history.sqlite", settings.history.retention)
    indexer = HistoryIndexer(settings, store)
    indexer.start()
    try:
        total = sum(ends(settings, [settings.topics.attempts]).values())
        await until(lambda: store.indexed >= total, f"the index holds all {total} records", every=0.1)
        assert store.skipped == 0
        await until(lambda: len(reader.values) >= total, "the reader has every record", every=0.1)
        reader.stop()
        for value in reader.values:
            VALIDATOR.validate(orjson.loads(value))
            decode(value)

        requests: dict[tuple[str, str], list[int]] = defaultdict(list)
        for name, receiver in receivers.items():
            for n, request in enumerate(receiver.requests):
                if n in answers[name].answered:
                    requests[(request.headers["webhook-id"], name)].append(answers[name].answered[n])
        states: Counter[str] = Counter()
        for i in range(N):
            event_id = f"e{i}"
            history = await asyncio.to_thread(store.event, event_id)
            assert history is not None, f"{event_id}: no history"
            assert {s.subscription for s in history.subscriptions} == set(receivers), event_id
            for sub in history.subscriptions:
                seen = requests.get((event_id, sub.subscription), [])
                recorded = [r.response.status for r in sub.attempts if r.request is not None and r.response]
                assert len([r for r in sub.attempts if r.request is not None]) == len(seen), (
                    f"seed={seed} {event_id} {sub.subscription}: {sub.attempts} vs {seen}"
                )
                assert Counter(recorded) == Counter(seen), f"seed={seed} {event_id} {sub.subscription}"
                delivered = any(200 <= s < 300 for s in seen)
                outcomes = [r.outcome.value for r in sub.attempts]
                assert ("delivered" in outcomes) == delivered, f"{event_id} {sub.subscription}: {outcomes}"
                if delivered:  # or re-read after the restart, once a 410 had disabled the subscription
                    assert sub.state == "delivered" or (sub.subscription, sub.state) == ("gone", "disabled")
                else:
                    assert sub.state in ("dead_lettered", "disabled"), f"{event_id}: {outcomes}"
                states[f"{sub.subscription}:{sub.state}"] += 1
        print(f"seed={seed}: final states {dict(states)}")
        assert states["healthy:delivered"] == N
        assert 0 < states["gone:delivered"] <= GONE_AFTER, "only the first 100 requests to gone got a 202"
        assert states["gone:dead_lettered"] + states["gone:disabled"] == N - states["gone:delivered"]
        assert states["flaky:delivered"] + states["flaky:dead_lettered"] == N
        assert held > 0, "requests were in flight when the dispatcher was killed"
    finally:
        indexer.stop()
