"""The harness itself against the real broker: produce/consume round trip, topic creation, receivers."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from fanout.cli import main
from fanout.config import Settings
from fanout.kafka.topics import TopicSpec, create_topics, default_record_limit, internal_topics, source_topics
from tests.integration.engine import wait_for_topics
from tests.receivers import Receiver


def test_produce_and_consume_round_trip(settings: Settings, admin: AdminClient, unique: str) -> None:
    topic = f"{unique}.events"
    create_topics(admin, source_topics(settings, [topic]))
    producer = Producer({**settings.kafka.librdkafka(), "acks": "all", "enable.idempotence": True})
    sent = [orjson.dumps({"event": "user_registered", "data": {"user_id": i}}) for i in range(50)]
    for i, value in enumerate(sent):
        producer.produce(topic, value=value, key=str(i % 7).encode())
    assert producer.flush(30) == 0

    consumer = Consumer({**settings.kafka.librdkafka(), "group.id": unique, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got: list[bytes] = []
    try:
        for _ in range(60):
            for msg in consumer.consume(100, timeout=1.0):
                assert msg.error() is None, msg.error()
                got.append(msg.value() or b"")
            if len(got) >= len(sent):
                break
    finally:
        consumer.close()
    assert sorted(got) == sorted(sent)


def test_topics_create_is_idempotent_and_describe_lists_them(
    settings: Settings, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANOUT_KAFKA__BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    monkeypatch.setenv("FANOUT_TOPICS__PREFIX", settings.topics.prefix)
    monkeypatch.setenv("FANOUT_TOPICS__PARTITIONS", str(settings.topics.partitions))
    source = f"{unique}.orders"
    runner = CliRunner()

    first = runner.invoke(main, ["topics", "create", source, "--json"])
    assert first.exit_code == 0, first.output
    created = orjson.loads(first.output)
    expected = {t.name for t in internal_topics(settings)} | {source}
    assert {r["name"] for r in created} == expected
    assert all(r["created"] for r in created)

    second = runner.invoke(main, ["topics", "create", source, "--json"])
    assert second.exit_code == 0, second.output
    assert not any(r["created"] for r in orjson.loads(second.output))

    described = runner.invoke(main, ["topics", "describe", source, "--json"])
    assert described.exit_code == 0, described.output
    infos = {i["name"]: i for i in orjson.loads(described.output)}
    assert all(i["exists"] for i in infos.values())
    assert infos[settings.topics.subscriptions]["config"]["cleanup.policy"] == "compact"
    assert infos[settings.topics.retry(0)]["partitions"] == settings.topics.partitions


def test_topics_create_sizes_the_hand_off_topics_for_the_largest_existing_source(
    settings: Settings, admin: AdminClient, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANOUT_KAFKA__BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    monkeypatch.setenv("FANOUT_TOPICS__PREFIX", settings.topics.prefix)
    big, new = f"{unique}.big", f"{unique}.new"
    create_topics(admin, [TopicSpec(big, "source", 1, 1, {"max.message.bytes": str(8 << 20)})])
    wait_for_topics(settings, [big])
    runner = CliRunner()
    result = runner.invoke(main, ["topics", "create", big, new, "--json"])
    assert result.exit_code == 0, result.output
    described = runner.invoke(main, ["topics", "describe", big, new, "--json"])
    limits = {i["name"]: int(i["config"]["max.message.bytes"]) for i in orjson.loads(described.output)}
    for tier in range(len(settings.retry.tiers)):
        assert limits[settings.topics.retry(tier)] == 8 << 20
    assert limits[settings.topics.dlq] == 8 << 20
    assert limits[big] == 8 << 20  # an existing topic is left as it is
    assert limits[new] == default_record_limit(settings)


def test_describe_fails_when_topics_are_missing(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_KAFKA__BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    monkeypatch.setenv("FANOUT_TOPICS__PREFIX", settings.topics.prefix)
    result = CliRunner().invoke(main, ["topics", "describe"])
    assert result.exit_code == 1
    assert "MISSING" in result.output


def test_internal_names_are_refused_as_sources(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_TOPICS__PREFIX", settings.topics.prefix)
    result = CliRunner().invoke(main, ["topics", "create", f"{settings.topics.prefix}.sneaky"])
    assert result.exit_code == 2


async def test_receiver_records_requests(receiver: Receiver) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(receiver.url + "/hook", data=b"{}", headers={"webhook-id": "msg_1"}) as resp,
    ):
        assert resp.status == 204
    await receiver.wait_count(1, timeout=5)
    assert receiver.requests[0].headers["webhook-id"] == "msg_1"
    assert receiver.requests[0].path == "/hook"
