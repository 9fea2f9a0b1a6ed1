"""Broker loss: in a 3-broker KRaft cluster (internal topics at replication factor 3,
min.insync.replicas 2), the leader of a source partition is SIGKILLed mid-run and started again.
Every event is delivered, and delivery resumes within RESUME_BOUND seconds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.engine import (
    ROOT,
    DispatcherProcess,
    apply,
    create_engine_topics,
    engine_settings,
    events,
    produce,
    subscription,
)
from tests.receivers import Receiver

pytestmark = pytest.mark.slow

CLUSTER_PORT = int(os.environ.get("FANOUT_TEST_CLUSTER_PORT", "19092"))
RESUME_BOUND = 30.0  # seconds from the kill to the next delivery


def kafka(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "kafka"), *args], check=True, cwd=ROOT)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A three-broker cluster of our own for this module; stopped and cleaned afterwards."""
    kafka("start", "--nodes", "3", "--port", str(CLUSTER_PORT))
    try:
        yield ",".join(f"127.0.0.1:{CLUSTER_PORT + i}" for i in range(3))
    finally:
        kafka("stop", "--port", str(CLUSTER_PORT), "--clean")


def node_pid(node_id: int) -> int:
    state = Path(os.environ.get("FANOUT_KAFKA_STATE", ROOT / ".kafka"))
    return int((state / f"p{CLUSTER_PORT}" / f"node{node_id}" / "pid").read_text().strip())


def produce_to(settings, topic: str, partition: int, values: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka import Producer

    producer = Producer({**settings.kafka.librdkafka(), "acks": "all", "linger.ms": 5})
    for value in values:
        producer.produce(topic, value=value, partition=partition)
    assert producer.flush(120) == 0


def leader_of(bootstrap: str, topic: str, partition: int) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return metadata.topics[topic].partitions[partition].leader


async def test_leader_loss_mid_run_loses_nothing(cluster: str, unique: str, tmp_path: Path) -> None:
    settings = engine_settings(
        cluster,
        unique,
        topics={"replication_factor": 3, "min_insync_replicas": 2},
        dispatcher={"session_timeout_ms": 6000},
    )
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    n = 3000
    async with Receiver() as receiver:
        await apply(settings, [subscription("all", receiver.url, [topic])])
        process = DispatcherProcess(settings, tmp_path / "dispatcher.log")
        try:
            process.start()
            await asyncio.to_thread(produce, settings, topic, events(n // 2))
            await receiver.wait_count(n // 4, 60)
            victim = leader_of(cluster, topic, 0)
            os.kill(node_pid(victim), signal.SIGKILL)
            killed_at = time.time()
            # The second half goes to partition 0, whose leader is gone: its first delivery measures the
            # time to elect a new leader and for the producer and the dispatcher to find it.
            later = {f"e{i}" for i in range(n // 2, n)}
            second = events(n // 2, start=n // 2)
            producing = asyncio.create_task(asyncio.to_thread(produce_to, settings, topic, 0, second))
            await receiver.wait_for(lambda reqs: any(r.headers["webhook-id"] in later for r in reqs), 90)
            resumed_after = (
                min(r.at for r in receiver.requests if r.headers["webhook-id"] in later) - killed_at
            )
            await asyncio.to_thread(kafka, "start", "--nodes", "3", "--port", str(CLUSTER_PORT))
            await producing
            await receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) == n, 120)
            assert process.proc is not None and process.proc.poll() is None, "the dispatcher rode through"
        except BaseException:
            print(process.log()[-6000:])
            raise
        finally:
            process.close()
    duplicates = len(receiver.requests) - n
    print(
        f"killed broker {victim}; partition 0 delivered after {resumed_after:.1f}s; {duplicates} duplicates"
    )
    assert resumed_after < RESUME_BOUND
    assert {r.headers["webhook-id"] for r in receiver.requests} == {f"e{i}" for i in range(n)}
