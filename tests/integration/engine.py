"""Helpers for engine tests: settings with short delays, topics, subscriptions, a dispatcher run
in-process or as a real ``fanout run`` process, producing and reading records."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from aiohttp.abc import AbstractResolver
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from pydantic import SecretStr

from fanout.config import (
    DeliverySettings,
    DispatcherSettings,
    HistorySettings,
    KafkaSettings,
    RetrySettings,
    SecretsSettings,
    Settings,
    TelemetrySettings,
    TopicSettings,
)
from fanout.control.secretbox import new_key
from fanout.control.subscriptions import SubscriptionStore
from fanout.http.signing import new_secret
from fanout.kafka.topics import admin_client, create_topics, internal_topics, source_topics
from fanout.model.subscription import Subscription, parse_subscription
from fanout.runtime.app import DispatcherApp

ROOT = Path(__file__).resolve().parents[2]


def engine_settings(bootstrap: str, unique: str, partitions: int = 3, **sections: Any) -> Settings:
    """Settings for a test: its own topic prefix and group, second-scale retry tiers, loopback allowed,
    secrets encrypted at rest with a key of its own, a history index file of its own (an API process
    locks its file); the transport from ``FANOUT_TEST_TRANSPORT``."""
    base: dict[str, Any] = {
        "kafka": KafkaSettings(bootstrap_servers=bootstrap),
        "topics": TopicSettings(prefix=f"{unique}.fanout", partitions=partitions),
        "retry": RetrySettings(tiers=[0.5, 1, 2, 5, 10], schedule=[0.2, 0.5, 1, 1, 1, 1, 1, 1], max_age=120),
        "delivery": DeliverySettings(
            allow_http=True,
            allow_cidrs=["127.0.0.0/8"],
            breaker_cooldown=2,
            transport=os.environ.get("FANOUT_TEST_TRANSPORT", "fast"),  # run the engine tests on either
        ),
        "dispatcher": DispatcherSettings(
            group_id=f"{unique}.dispatcher",
            commit_interval_ms=200,
            drain_timeout=10,
            session_timeout_ms=10_000,
            http_port=0,  # several dispatchers share this machine; tests that probe choose a port
        ),
        "secrets": SecretsSettings(keys=[SecretStr(new_key())]),
        "telemetry": TelemetrySettings(),
        "history": HistorySettings(
            path=Path(tempfile.gettempdir()) / "fanout-test-history" / f"{unique}.sqlite"
        ),
    }
    for name, value in sections.items():
        if isinstance(value, dict):
            value = base[name].model_copy(update=value)
        base[name] = value
    return Settings(**base)


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as FANOUT_* environment variables, for a ``fanout`` subprocess."""
    env: dict[str, str] = {}
    for section, model in settings:
        for field, value in model.model_dump().items():
            if value is None:
                continue
            if isinstance(value, str | Path):
                text = str(value)  # a plain value: pydantic-settings parses JSON only for complex fields
            else:
                text = orjson.dumps(value, default=_reveal).decode()
            env[f"FANOUT_{section.upper()}__{field.upper()}"] = text
    return env


def _reveal(value: Any) -> Any:
    """JSON for what orjson does not know: secrets in clear (for a child process), paths, networks."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


def create_engine_topics(settings: Settings, sources: Iterable[str]) -> None:
    specs = internal_topics(settings) + source_topics(settings, list(sources))
    create_topics(admin_client(settings), specs)
    wait_for_topics(settings, [s.name for s in specs])


def wait_for_topics(settings: Settings, names: Iterable[str], timeout: float = 30.0) -> None:
    """Poll (with a deadline) until the broker's metadata shows every topic in ``names``."""
    admin = admin_client(settings)
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=10).topics
        missing = {n for n in wanted if n not in topics or topics[n].error is not None}
        if not missing:
            return
        assert time.monotonic() < deadline, f"topics never appeared in the metadata: {sorted(missing)}"
        time.sleep(0.1)


def subscription(sub_id: str, url: str, topics: list[str], **fields: Any) -> Subscription:
    return parse_subscription(
        {"id": sub_id, "url": url, "topics": topics, "secrets": [new_secret()], **fields}
    )


async def apply(settings: Settings, subs: Iterable[Subscription]) -> None:
    store = SubscriptionStore(settings)
    try:
        await asyncio.get_running_loop().run_in_executor(None, store.apply, list(subs))
    finally:
        store.close()


@contextlib.asynccontextmanager
async def running(
    settings: Settings, resolver: AbstractResolver | None = None, **app_options: Any
) -> AsyncIterator[DispatcherApp]:
    """A dispatcher running in this event loop; stopped (drained) on exit. ``app_options`` go to
    ``DispatcherApp`` (``tracing``, ``metrics``)."""
    app = DispatcherApp(settings, resolver=resolver, handle_signals=False, **app_options)
    task = asyncio.create_task(app.run())
    started = asyncio.create_task(app.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        raise AssertionError(f"dispatcher exited during start: {task.result()!r}")
    assert started in done, "dispatcher did not start within 60s"
    try:
        yield app
    finally:
        app.stop()
        code = await asyncio.wait_for(task, 60)
        assert code == 0, f"dispatcher exited with {code}"


class DispatcherProcess:
    """``fanout run`` as a real child process (for kill -9 and SIGTERM tests). ``wrap`` turns the command
    into the one to run (the chaos tests run it inside a network namespace)."""

    def __init__(
        self, settings: Settings, log_path: Path, wrap: Callable[[list[str]], list[str]] = lambda argv: argv
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.wrap = wrap
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
        env.update(settings_env(self.settings))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.wrap([sys.executable, "-m", "fanout", "run"]),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def produce(
    settings: Settings,
    topic: str,
    values: Iterable[bytes | None],
    headers: list[tuple[str, bytes]] | None = None,
    key: bytes | None = None,
) -> int:
    return produce_records(settings, topic, ((key, value, headers) for value in values))


Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]


def produce_records(settings: Settings, topic: str, records: Iterable[Record]) -> int:
    """Produce (key, value, headers) records with acks=all and wait for every acknowledgement."""
    producer = Producer({**settings.kafka.librdkafka(), "acks": "all", "linger.ms": 5})
    n = 0
    for key, value, headers in records:
        producer.produce(topic, value=value, key=key, headers=headers)
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return n


def events(n: int, event_type: str = "user.created", start: int = 0) -> list[bytes]:
    return [
        orjson.dumps({"event": event_type, "id": f"e{i}", "data": {"i": i}}) for i in range(start, start + n)
    ]


def read_topic(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list[Message]:
    """Read ``topic`` from the beginning until ``expected`` records arrived (or fail with what came)."""
    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(m for m in consumer.consume(1000, 0.5) if m.error() is None)
    finally:
        consumer.close()
    assert len(got) >= expected, f"{topic}: expected {expected} records, got {len(got)}"
    return got


def header(msg: Message, name: str) -> str | None:
    for key, value in msg.headers() or []:
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


def committed_total(settings: Settings, topics: Iterable[str]) -> int:
    """Sum of the group's committed offsets over ``topics`` (0 where nothing is committed)."""
    consumer = Consumer({**settings.kafka.librdkafka(), "group.id": settings.dispatcher.group_id})
    try:
        parts = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            parts.extend(TopicPartition(topic, p) for p in meta.partitions)
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def group_members(settings: Settings, group_id: str | None = None) -> int:
    """How many members of the group currently hold at least one partition."""
    from confluent_kafka.admin import AdminClient

    group = group_id or settings.dispatcher.group_id
    admin = AdminClient(settings.kafka.librdkafka())
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return sum(1 for m in description.members if m.assignment and m.assignment.topic_partitions)


async def wait_for_members(
    settings: Settings, n: int, timeout: float = 60, group_id: str | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        count = await asyncio.to_thread(group_members, settings, group_id)
        if count == n:
            return
        assert time.monotonic() < deadline, f"group has {count} members with partitions, not {n}"
        await asyncio.sleep(0.5)  # polling the broker with a deadline


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")
