"""Replays end to end, with a real dispatcher: dead letter, browse, replay, delivered (same webhook-id);
a source time-range replay re-delivers exactly the events in the range; jobs readable from any instance."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import web

from fanout.control.jobs import find_job
from fanout.model import headers as H
from tests.integration.api import api_settings, create_api_topics, running_api, source_topic
from tests.integration.engine import (
    apply,
    header,
    produce,
    read_topic,
    running,
    subscription,
)
from tests.receivers import Receiver


async def test_dead_letter_then_replay_then_delivered(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)
    rejecting = True

    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=422 if rejecting else 204)

    async with Receiver(answer) as receiver:
        await apply(
            settings,
            [
                subscription("crm", receiver.url, [topic]),
                subscription("other", receiver.url, [topic], events=["nothing"]),
            ],
        )
        async with running(settings), running_api(settings) as api:
            status, _, published = await api.call(
                "POST", "/v1/events", {"event": "user_registered", "data": {"user_id": 1234}}
            )
            assert status == 202
            produce(settings, topic, [b"not json"])  # a poison record: dead-lettered without a subscription
            await receiver.wait_count(1)

            async def dead_letters(**params: str) -> dict[str, object]:
                deadline = time.monotonic() + 30
                while True:
                    status, _, page = await api.call("GET", "/v1/dead-letters", params=params)
                    assert status == 200, page
                    if len(page["items"]) >= 2 or time.monotonic() > deadline:
                        return page
                    await asyncio.sleep(0.1)

            page = await dead_letters()
            items = {d["subscription"]: d for d in page["items"]}
            assert set(items) == {"crm", None} and page["next_cursor"] is None
            dead = items["crm"]
            assert (
                dead["event_id"] == published["id"] and dead["attempts"] == 1 and dead["last_status"] == 422
            )
            assert dead["reason"].startswith("permanent failure") and dead["origin"]["topic"] == topic
            assert orjson.loads(dead["payload"])["data"] == {"user_id": 1234}
            assert items[None]["reason"].startswith("poison record")

            status, _, only = await api.call("GET", "/v1/dead-letters", params={"subscription": "crm"})
            assert [d["id"] for d in only["items"]] == [dead["id"]]
            status, _, first = await api.call("GET", "/v1/dead-letters", params={"limit": "1"})
            status, _, second = await api.call(
                "GET", "/v1/dead-letters", params={"limit": "1", "cursor": first["next_cursor"]}
            )
            assert {first["items"][0]["id"], second["items"][0]["id"]} == {d["id"] for d in page["items"]}
            assert second["next_cursor"] is None
            assert (await api.call("GET", "/v1/dead-letters", params={"cursor": "garbage!"}))[0] == 400
            future = {"since": "2999-01-01T00:00:00Z"}
            assert (await api.call("GET", "/v1/dead-letters", params=future))[2]["items"] == []

            rejecting = False
            status, _, counts = await api.call("POST", "/v1/dead-letters/replay", {})
            assert status == 200 and counts == {"replayed": 1, "skipped": 1}
            await receiver.wait_count(2)
            assert receiver.requests[1].headers["webhook-id"] == published["id"], "the same message"
            assert (await api.call("POST", "/v1/dead-letters/replay", {"subscription": "other"}))[2] == {
                "replayed": 0,
                "skipped": 0,
            }

    (replayed,) = read_topic(settings, settings.topics.retry(0), 1)
    meta = H.RetryMeta.parse(list(replayed.headers() or []))
    assert (meta.subscription, meta.attempt, meta.event_id) == ("crm", 0, published["id"])
    assert abs(meta.first_attempt - replayed.timestamp()[1] / 1000) < 5, "max_age counts from the replay"
    assert header(replayed, H.REASON) is None and header(replayed, H.NOT_BEFORE) is not None


async def test_dead_letter_of_a_key_ordered_subscription_replayed_is_delivered(
    bootstrap: str, unique: str
) -> None:
    """An ordered subscription is consumed by its own group, but its replays come back through the
    shared group's retry tier: they must find the subscription there, not be dropped as deleted."""
    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)
    rejecting = True

    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=422 if rejecting else 204)

    async with Receiver(answer) as receiver:
        await apply(settings, [subscription("ordered", receiver.url, [topic], ordering="key")])
        async with running(settings), running_api(settings) as api:
            status, _, published = await api.call(
                "POST", "/v1/events", {"event": "user_registered", "data": {"n": 1}}, params={"key": "k1"}
            )
            assert status == 202
            await receiver.wait_count(1)
            deadline = time.monotonic() + 30
            while True:
                page = (await api.call("GET", "/v1/dead-letters", params={"subscription": "ordered"}))[2]
                if page["items"] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert [d["event_id"] for d in page["items"]] == [published["id"]]
            rejecting = False
            status, _, counts = await api.call("POST", "/v1/dead-letters/replay", {"subscription": "ordered"})
            assert status == 200 and counts == {"replayed": 1, "skipped": 0}
            await receiver.wait_count(2)
    assert receiver.requests[1].headers["webhook-id"] == published["id"], "the same message"


async def test_source_range_replay_redelivers_exactly_the_range(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique, partitions=2)
    topic = source_topic(settings)
    create_api_topics(settings)
    now_ms = int(time.time() * 1000)
    since, until = now_ms - 3_600_000, now_ms - 1_800_000

    def event(i: int, kind: str = "user.created") -> bytes:
        return orjson.dumps({"event": kind, "id": f"e{i}", "data": {"i": i}})

    # before the range, in it (with one event of a type the subscription does not take), after it
    stamps = {0: since - 60_000, 1: since, 2: since + 1, 3: until - 1, 4: until, 5: now_ms - 1000}
    records = [(f"k{i}".encode(), event(i), None, ms) for i, ms in stamps.items()]
    records.append((b"k6", event(6, "order.placed"), None, since + 10))
    produce_records_at(settings, topic, sorted(records, key=lambda r: r[3]))

    async with Receiver() as receiver:
        await apply(settings, [subscription("crm", receiver.url, [topic], events=["user.*"])])
        async with running(settings), running_api(settings) as api:
            await receiver.wait_count(6)  # the normal delivery of the six user.* events
            body = {"since": "1970-01-01T00:00:00Z", "until": "1970-01-01T00:00:00Z"}
            assert (await api.call("POST", "/v1/subscriptions/crm/replay", body))[0] == 400
            assert (await api.call("POST", "/v1/subscriptions/nope/replay", {"since": body["since"]}))[
                0
            ] == 404
            body = {"since": iso(since), "until": iso(until)}
            status, headers, job = await api.call("POST", "/v1/subscriptions/crm/replay", body)
            assert status == 202 and headers["Location"] == f"/v1/jobs/{job['id']}"
            assert job["status"] == "running" and job["subscription"] == "crm"
            await receiver.wait_count(9)
            deadline = time.monotonic() + 30
            while job["status"] == "running" and time.monotonic() < deadline:
                job = (await api.call("GET", f"/v1/jobs/{job['id']}"))[2]
            assert job["status"] == "succeeded", job
            assert (job["total"], job["matched"], job["written"]) == (4, 3, 3)
            assert (await api.call("GET", "/v1/jobs/job_1_deadbeef"))[0] == 404

    redelivered = [r.headers["webhook-id"] for r in receiver.requests[6:]]
    assert sorted(redelivered) == ["e1", "e2", "e3"]
    written = read_topic(settings, settings.topics.retry(0), 3)
    assert sorted(header(m, H.EVENT_ID) or "" for m in written) == ["e1", "e2", "e3"]
    elsewhere = find_job(settings, job["id"])  # what any other instance reads from the ops topic
    assert elsewhere is not None and elsewhere.view() == job


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def produce_records_at(settings: object, topic: str, records: list[tuple[bytes, bytes, None, int]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({**settings.kafka.librdkafka(), "acks": "all"})  # type: ignore[attr-defined]
    for key, value, _, ms in records:
        producer.produce(topic, value=value, key=key, timestamp=ms)
    assert producer.flush(30) == 0
