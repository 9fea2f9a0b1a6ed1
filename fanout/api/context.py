"""What the handlers share: ``api(request)`` returns the running API's parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from fanout.api.idempotency import IdempotencyKeys
from fanout.telemetry.tracing import TRACING_OFF, Tracing

if TYPE_CHECKING:
    from fanout.api.health import BrokerProbe
    from fanout.api.history import History
    from fanout.api.jobs import Jobs
    from fanout.api.live import LiveSubscriptions
    from fanout.config import Settings
    from fanout.http.sender import HttpSender
    from fanout.kafka.producer import AsyncProducer
    from fanout.pipeline.ops import OpsEvents


@dataclass
class Api:
    settings: Settings
    live: LiveSubscriptions
    producer: AsyncProducer
    sender: HttpSender
    ops: OpsEvents
    jobs: Jobs
    probe: BrokerProbe
    tracing: Tracing = TRACING_OFF
    idempotency: IdempotencyKeys = field(default_factory=IdempotencyKeys)
    history: History | None = None
    publish_topics: frozenset[str] = field(init=False)  # api.topics but the internal ones
    default_topic: str | None = field(init=False)  # api.default_topic

    def __post_init__(self) -> None:
        topics = self.settings.topics
        self.publish_topics = frozenset(t for t in self.settings.api.topics if not topics.is_internal(t))
        self.default_topic = self.settings.api.default_topic


API: web.AppKey[Api] = web.AppKey("api")


def api(request: web.Request) -> Api:
    return request.app[API]
