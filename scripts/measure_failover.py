"""How long deliveries pause when a dispatcher dies: kill -9 one of two members, time until the other
delivers the dead member's partitions again.

Each run: a fresh topic (6 partitions) and group, one subscription to a local receiver, two `fanout run`
processes, events produced at a steady rate on every partition. Once both members deliver, the one
owning partition 0 is SIGKILLed; for each partition it owned, the pause is the time from the kill to
the first delivery of that partition's events after it (by the survivor, or with --restart by the
restarted member too). A run reports the longest of those pauses (when the last partition came back).

Variants: the group protocol (classic or KIP-848 consumer), static membership (group.instance.id) or
not, the session timeout (classic: the client's session.timeout.ms; consumer: the group's
consumer.session.timeout.ms, set with the admin API, which the broker bounds by
group.consumer.min.session.timeout.ms: 45 s unless configured lower, as scripts/kafka does), and
whether the dead member is restarted at once (as `fanout run --workers N` or Kubernetes would).

  scripts/measure_failover.py [--bootstrap 127.0.0.1:9092] [--runs 1] [--only classic-45s,...]

Prints one JSON line per run and a summary table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from pydantic import SecretStr

from fanout.config import (
    DeliverySettings,
    DispatcherSettings,
    KafkaSettings,
    SecretsSettings,
    Settings,
    TopicSettings,
)
from fanout.control.secretbox import new_key
from fanout.control.subscriptions import SubscriptionStore
from fanout.http.signing import new_secret
from fanout.kafka.topics import admin_client, create_topics, internal_topics, source_topics
from fanout.model.subscription import parse_subscription

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 6
RATE = 120  # events per second, over all partitions
GIVE_UP = 150.0  # seconds without the dead member's partitions: the run failed


@dataclass(frozen=True)
class Variant:
    name: str
    protocol: str
    static: bool
    session_ms: int | None  # None: the broker's default (consumer protocol)
    restart: bool = False


VARIANTS = [
    Variant("classic-45s", "classic", False, 45_000),
    Variant("classic-45s-static", "classic", True, 45_000),
    Variant("classic-10s", "classic", False, 10_000),
    Variant("classic-10s-static", "classic", True, 10_000),
    Variant("consumer-default", "consumer", False, None),
    Variant("consumer-default-static", "consumer", True, None),
    Variant("consumer-10s", "consumer", False, 10_000),
    Variant("consumer-10s-static", "consumer", True, 10_000),
    Variant("classic-45s-restart", "classic", False, 45_000, restart=True),
    Variant("classic-45s-static-restart", "classic", True, 45_000, restart=True),
    Variant("classic-10s-restart", "classic", False, 10_000, restart=True),
    Variant("classic-10s-static-restart", "classic", True, 10_000, restart=True),
    Variant("consumer-default-restart", "consumer", False, None, restart=True),
    Variant("consumer-default-static-restart", "consumer", True, None, restart=True),
    Variant("consumer-10s-restart", "consumer", False, 10_000, restart=True),
    Variant("consumer-10s-static-restart", "consumer", True, 10_000, restart=True),
]


def settings_for(bootstrap: str, variant: Variant, run_id: str) -> Settings:
    dispatcher: dict[str, Any] = {
        "group_id": f"{run_id}.dispatcher",
        "group_protocol": variant.protocol,
        "http_port": 0,
        "commit_interval_ms": 250,
        "drain_timeout": 10,
    }
    if variant.protocol == "classic" and variant.session_ms is not None:
        dispatcher["session_timeout_ms"] = variant.session_ms
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=TopicSettings(prefix=f"{run_id}.fanout", partitions=PARTITIONS),
        delivery=DeliverySettings(allow_http=True, allow_cidrs=["127.0.0.0/8"]),  # type: ignore[list-item]
        dispatcher=DispatcherSettings(**dispatcher),
        secrets=SecretsSettings(keys=[SecretStr(new_key())]),
    )


def member_env(settings: Settings, name: str, static: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    for section, model in settings:
        for field, value in model.model_dump().items():
            if value is None:
                continue
            if isinstance(value, list) and value and isinstance(value[0], SecretStr):
                value = [v.get_secret_value() for v in value]
            text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
            env[f"FANOUT_{section.upper()}__{field.upper()}"] = text
    env["FANOUT_KAFKA__CLIENT_ID"] = name
    if static:
        env["FANOUT_DISPATCHER__INSTANCE_ID"] = name
    return env


class Member:
    def __init__(self, settings: Settings, name: str, static: bool, log_dir: Path) -> None:
        self.env = member_env(settings, name, static)
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fanout", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Receipts:
    """The receiver: when each partition's events arrived."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, int]] = []

    async def handle(self, request: web.Request) -> web.Response:
        event_id = request.headers.get("webhook-id", "")
        self.arrivals.append((time.time(), int(event_id.split(":")[0])))
        return web.Response(status=204)

    def first_after(self, moment: float, partitions: set[int]) -> dict[int, float]:
        first: dict[int, float] = {}
        for at, partition in self.arrivals:
            if at > moment and partition in partitions and partition not in first:
                first[partition] = at
        return first


def produce_steadily(settings: Settings, topic: str, stop: threading.Event) -> None:
    producer = Producer({**settings.kafka.librdkafka(), "linger.ms": 5})
    seq = 0
    start = time.monotonic()
    while not stop.is_set():
        partition = seq % PARTITIONS
        value = orjson.dumps({"event": "tick", "id": f"{partition}:{seq}", "data": {}})
        producer.produce(topic, value=value, partition=partition)
        producer.poll(0)
        seq += 1
        time.sleep(max(0.0, start + seq / RATE - time.monotonic()))
    producer.flush(10)


def owners(admin: AdminClient, group: str, topic: str) -> dict[str, set[tuple[str, int]]]:
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    found: dict[str, set[tuple[str, int]]] = {}
    for member in description.members:
        parts = member.assignment.topic_partitions if member.assignment else []
        found.setdefault(member.client_id, set()).update((tp.topic, tp.partition) for tp in parts)
    return found


def set_group_session(admin: AdminClient, group: str, session_ms: int) -> None:
    resource = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry(
                "consumer.session.timeout.ms", str(session_ms), incremental_operation=AlterConfigOpType.SET
            ),
            ConfigEntry(
                "consumer.heartbeat.interval.ms",
                str(max(1000, session_ms // 10)),
                incremental_operation=AlterConfigOpType.SET,
            ),
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result()


async def measure(bootstrap: str, variant: Variant, log_dir: Path) -> dict[str, Any]:
    run_id = "fo" + uuid.uuid4().hex[:8]
    settings = settings_for(bootstrap, variant, run_id)
    admin = admin_client(settings)
    topic = f"{run_id}.events"
    create_topics(admin, internal_topics(settings) + source_topics(settings, [topic]))
    group = settings.dispatcher.group_id
    if variant.protocol == "consumer" and variant.session_ms is not None:
        set_group_session(admin, group, variant.session_ms)
    receipts = Receipts()
    app = web.Application()
    app.router.add_post("/", receipts.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    store = SubscriptionStore(settings)
    sub = parse_subscription(
        {"id": "all", "url": f"http://127.0.0.1:{port}/", "topics": [topic], "secrets": [new_secret()]}
    )
    await asyncio.to_thread(store.apply, [sub])
    store.close()
    members = {name: Member(settings, name, variant.static, log_dir / run_id) for name in ("m0", "m1")}
    (log_dir / run_id).mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    producing = threading.Thread(target=produce_steadily, args=(settings, topic, stop), daemon=True)
    result: dict[str, Any] = {"variant": variant.name, "run": run_id}
    try:
        for member in members.values():
            member.start()
        producing.start()
        deadline = time.monotonic() + 90
        every = set(range(PARTITIONS))
        while True:
            found = await asyncio.to_thread(owners, admin, group, topic)
            delivering = {p for _, p in receipts.arrivals[-2 * RATE :]}
            if all(found.get(name) for name in members) and delivering == every:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the two members never both owned partitions: {found}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # steady state: both members in the group, every partition delivering
        found = await asyncio.to_thread(owners, admin, group, topic)
        victim = next(name for name in members if (topic, 0) in found.get(name, set()))
        lost = {p for t, p in found[victim] if t == topic}
        result["victim_partitions"] = len(found[victim])
        killed_at = time.time()
        members[victim].kill()
        if variant.restart:
            members[victim].start()
        while True:
            back = receipts.first_after(killed_at + 0.2, lost)
            if len(back) == len(lost):
                break
            if time.time() - killed_at > GIVE_UP:
                raise RuntimeError(f"partitions {sorted(lost - set(back))} did not come back in {GIVE_UP}s")
            await asyncio.sleep(0.1)
        pauses = sorted(at - killed_at for at in back.values())
        result.update(partitions=sorted(lost), first=round(pauses[0], 1), pause=round(pauses[-1], 1))
    except Exception as exc:
        result["error"] = str(exc)
    finally:
        stop.set()
        producing.join(15)
        await asyncio.gather(*(asyncio.to_thread(m.stop) for m in members.values()))
        await runner.cleanup()
        names = [topic, *(spec.name for spec in internal_topics(settings))]
        for future in admin.delete_topics(names).values():
            with contextlib.suppress(Exception):  # cleanup only
                future.result()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("FANOUT_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--logs", type=Path, default=ROOT / "bench-results" / "failover")
    args = parser.parse_args()
    wanted = {v for v in args.only.split(",") if v}
    variants = [v for v in VARIANTS if not wanted or v.name in wanted]
    results: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for variant in variants:
            result = asyncio.run(measure(args.bootstrap, variant, args.logs))
            print(json.dumps(result), flush=True)
            if "pause" in result:
                results.setdefault(variant.name, []).append(result["pause"])
    print(f"\n{'variant':34} {'runs':>4} {'pause s (median)':>17} {'min':>6} {'max':>6}")
    for variant in variants:
        pauses = results.get(variant.name, [])
        if pauses:
            print(
                f"{variant.name:34} {len(pauses):4} {statistics.median(pauses):17.1f} "
                f"{min(pauses):6.1f} {max(pauses):6.1f}"
            )
        else:
            print(f"{variant.name:34} {0:4} {'failed':>17}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
