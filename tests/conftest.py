"""Shared fixtures: the real Kafka broker, unique names per test, real HTTP receivers on loopback.

Integration tests need a broker at ``FANOUT_KAFKA__BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092;
``make test`` starts one with ``scripts/kafka``). When ``CI`` is set a missing broker fails the run;
locally those tests skip with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvloop
from confluent_kafka.admin import AdminClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from fanout.config import KafkaSettings, Settings, TopicSettings
from tests.receivers import Receiver

ROOT = Path(__file__).resolve().parent.parent
INTEGRATION_DIR = Path(__file__).parent / "integration"
BROWSER_DIR = Path(__file__).parent / "browser"

# Property tests check what the code does, not how fast (scripts/bench measures that). Hypothesis's
# default 200 ms deadline per example is a wall-clock bound that a shared, loaded machine breaks: a
# full garbage collection of the test process's heap inside one example took 1.3 s here at load 6, and
# whether one lands in an example depends on which tests ran before (it failed tests/unit in random
# orders). No deadline, and no health check on how long generating data takes.
hypothesis_settings.register_profile("fanout", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("fanout")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parents = Path(str(item.fspath)).parents
        if INTEGRATION_DIR in parents:
            item.add_marker(pytest.mark.integration)
        if BROWSER_DIR in parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.browser)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Tests run on uvloop, the event loop fanout runs on."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """The bootstrap servers of a reachable broker, or a skip (a failure under CI)."""
    servers = os.environ.get("FANOUT_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    admin = AdminClient({"bootstrap.servers": servers, "socket.connection.setup.timeout.ms": 3000})
    try:
        admin.list_topics(timeout=10)
    except Exception as exc:
        reason = f"no Kafka broker at {servers} ({exc}); start one with scripts/kafka start"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return servers


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> Iterator[str]:
    """A short name unique to this test, for topics, prefixes and consumer groups. The topics named with
    it are deleted after a test that used the broker: a broker keeps a file open per partition, and a
    whole run's topics (about forty partitions a test) would take it past its open-file limit."""
    name = "t" + uuid.uuid4().hex[:10]
    yield name
    if "bootstrap" in request.fixturenames:
        delete_topics(os.environ.get("FANOUT_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092"), name)


def delete_topics(servers: str, prefix: str) -> None:
    """Delete the topics whose names start with ``prefix`` (best effort: a test's result never depends
    on it, and a broker a test stopped may be gone)."""
    admin = AdminClient({"bootstrap.servers": servers, "socket.connection.setup.timeout.ms": 3000})
    try:
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        if names:
            for future in admin.delete_topics(names, operation_timeout=30).values():
                future.exception(timeout=60)
    except Exception:  # cleanup only
        pass


@pytest.fixture
def settings(bootstrap: str, unique: str) -> Settings:
    """Settings pointing at the test broker, with internal topics under a prefix of this test's own."""
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        topics=TopicSettings(prefix=f"{unique}.fanout", partitions=3),
    )


@pytest.fixture
def admin(bootstrap: str) -> Iterator[AdminClient]:
    yield AdminClient({"bootstrap.servers": bootstrap})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real aiohttp server on 127.0.0.1 that records every request and answers 204."""
    async with Receiver() as r:
        yield r
