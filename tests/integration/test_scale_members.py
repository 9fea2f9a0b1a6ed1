"""Membership changes while events flow, and a group-wide rate limit across worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.engine import (
    DispatcherProcess,
    apply,
    create_engine_topics,
    engine_settings,
    events,
    produce,
    subscription,
    wait_for_members,
)
from tests.integration.test_engine_lanes import JITTER, LoopStalls, max_in_window
from tests.receivers import Receiver

pytestmark = pytest.mark.slow


async def test_members_join_and_leave_mid_stream_without_losing_events(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    partitions, bound = 6, 500
    settings = engine_settings(
        bootstrap,
        unique,
        partitions=partitions,
        dispatcher={"max_uncommitted": bound, "session_timeout_ms": 6000},
    )
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    n = 20_000
    async with Receiver() as receiver:
        await apply(settings, [subscription("all", receiver.url, [topic])])
        first, second, third = (DispatcherProcess(settings, tmp_path / f"d{i}.log") for i in (1, 2, 3))
        try:
            first.start()
            second.start()
            await wait_for_members(settings, 2)
            producing = asyncio.create_task(asyncio.to_thread(produce, settings, topic, events(n)))
            await receiver.wait_count(n // 4, 120)
            third.start()
            await receiver.wait_count(n // 2, 120)
            assert await asyncio.to_thread(first.terminate, 60) == 0, "a member leaving by SIGTERM exits 0"
            await producing
            await receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) == n, 180)
            await wait_for_members(settings, 2)
        except BaseException:
            for p in (first, second, third):
                print(p.log_path.name, p.log()[-3000:])
            raise
        finally:
            for p in (first, second, third):
                p.close()
    duplicates = len(receiver.requests) - n
    print(f"duplicates={duplicates}")
    assert {r.headers["webhook-id"] for r in receiver.requests} == {f"e{i}" for i in range(n)}
    assert duplicates <= bound * partitions
    assert "revoked" in second.log() or "revoked" in third.log() or "assigned" in third.log()


async def test_two_workers_share_one_rate_limit(bootstrap: str, unique: str, tmp_path: Path) -> None:
    settings = engine_settings(bootstrap, unique, partitions=4, dispatcher={"workers": 2})
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    n = 300
    async with Receiver() as receiver:
        await apply(
            settings,
            [subscription("limited", receiver.url, [topic], rate_limit={"per_second": 20, "burst": 5})],
        )
        supervisor = DispatcherProcess(settings, tmp_path / "workers.log")
        try:
            supervisor.start()
            await wait_for_members(settings, 2)
            with LoopStalls() as stalls:  # the receiver's loop: a stall reads requests late, bunched
                await asyncio.to_thread(produce, settings, topic, events(n))
                await receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) == n, 60)
            assert await asyncio.to_thread(supervisor.terminate, 60) == 0
        except BaseException:
            print(supervisor.log()[-5000:])
            raise
        finally:
            supervisor.close()
    times = sorted(r.at for r in receiver.requests)
    for window in (1.0, 2.0, 5.0):
        # burst, receiver-side jitter and stalls, rounding between the two workers' buckets
        allowed = 20 * (window + JITTER + stalls.worst) + 5 + 1
        assert max_in_window(times, window) <= allowed, (
            f"more than {allowed} requests in {window}s (receiver's loop stalled {stalls.worst:.3f}s)"
        )
    assert times[-1] - times[0] >= (n - 6) / 20 * 0.95, "300 events at 20/s take ~15s"
    log = supervisor.log()
    assert '"worker":0' in log and '"worker":1' in log  # JSON log lines name their worker


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def instance_ids(settings, group: str) -> set[str]:  # type: ignore[no-untyped-def]
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.librdkafka())
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {m.group_instance_id for m in description.members}


async def test_a_dead_worker_is_restarted_and_static_membership_is_used(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = engine_settings(bootstrap, unique, dispatcher={"workers": 2, "instance_id": "pod-a"})
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    async with Receiver() as receiver:
        await apply(settings, [subscription("all", receiver.url, [topic])])
        supervisor = DispatcherProcess(settings, tmp_path / "workers.log")
        try:
            supervisor.start()
            assert supervisor.proc is not None
            await wait_for_members(settings, 2)
            assert await asyncio.to_thread(instance_ids, settings, settings.dispatcher.group_id) == {
                "pod-a-0",
                "pod-a-1",
            }
            workers = children_of(supervisor.proc.pid)
            assert len(workers) == 2
            os.kill(workers[0], signal.SIGKILL)
            deadline = time.monotonic() + 30
            while "restarted as pid" not in supervisor.log():
                assert time.monotonic() < deadline, "the dead worker was not restarted"
                await asyncio.sleep(0.2)  # polling the supervisor's log with a deadline
            replaced = children_of(supervisor.proc.pid)
            assert len(replaced) == 2 and workers[0] not in replaced and workers[1] in replaced
            await asyncio.to_thread(produce, settings, topic, events(200))
            await receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) == 200, 60)
            assert await asyncio.to_thread(supervisor.terminate, 60) == 0
        except BaseException:
            print(supervisor.log()[-5000:])
            raise
        finally:
            supervisor.close()
