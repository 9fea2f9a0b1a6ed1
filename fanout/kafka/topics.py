"""Create and describe fanout's topics, idempotently."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from fanout.config import RECORD_OVERHEAD_BYTES, Settings

HOUR_MS = 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    role: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicResult:
    name: str
    role: str
    created: bool
    partitions: int


@dataclass(frozen=True)
class TopicInfo:
    name: str
    role: str
    exists: bool
    partitions: int = 0
    replication_factor: int = 0
    config: dict[str, str] = field(default_factory=dict)


def _common(settings: Settings) -> dict[str, str]:
    conf = {"max.message.bytes": str(settings.kafka.message_max_bytes + 64 * 1024)}
    if settings.topics.min_insync_replicas is not None:
        conf["min.insync.replicas"] = str(settings.topics.min_insync_replicas)
    return conf


def internal_topics(settings: Settings) -> list[TopicSpec]:
    """The subscriptions (compacted), retry tiers, dead-letter and operational-event topics."""
    t = settings.topics
    common = _common(settings)

    def spec(name: str, role: str, partitions: int, **extra: str) -> TopicSpec:
        return TopicSpec(name, role, partitions, t.replication_factor, {**common, **extra})

    topics = [
        spec(
            t.subscriptions,
            "subscriptions",
            1,
            **{"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": str(HOUR_MS)},
        )
    ]
    retry_ms = str(int(t.retry_retention_hours * HOUR_MS))
    for tier, delay in enumerate(settings.retry.tiers):
        topics.append(
            spec(t.retry(tier), f"retry tier {tier} ({delay:g}s)", t.partitions, **{"retention.ms": retry_ms})
        )
    topics.append(
        spec(
            t.dlq, "dead letters", t.partitions, **{"retention.ms": str(int(t.dlq_retention_hours * HOUR_MS))}
        )
    )
    topics.append(
        spec(
            t.ops,
            "operational events",
            t.partitions,
            **{"retention.ms": str(int(t.ops_retention_hours * HOUR_MS))},
        )
    )
    return topics


def source_topics(settings: Settings, names: list[str]) -> list[TopicSpec]:
    t = settings.topics
    return [TopicSpec(n, "source", t.partitions, t.replication_factor, _common(settings)) for n in names]


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka.librdkafka())


def create_topics(admin: AdminClient, specs: list[TopicSpec], timeout: float = 30.0) -> list[TopicResult]:
    """Create every topic in ``specs`` that does not exist yet. Existing topics are left as they are."""
    if not specs:
        return []
    new = [
        NewTopic(
            s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.config
        )
        for s in specs
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    results = []
    for s in specs:
        try:
            futures[s.name].result(timeout=timeout)
            results.append(TopicResult(s.name, s.role, True, s.partitions))
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                results.append(TopicResult(s.name, s.role, False, s.partitions))
            else:
                raise
    return results


_SHOWN_CONFIGS = ("cleanup.policy", "retention.ms", "min.insync.replicas", "max.message.bytes")


def describe_topics(admin: AdminClient, specs: list[TopicSpec], timeout: float = 30.0) -> list[TopicInfo]:
    """Partitions, replication and the configs that matter, for each of ``specs``."""
    metadata = admin.list_topics(timeout=timeout)
    present = [s for s in specs if s.name in metadata.topics and metadata.topics[s.name].error is None]
    configs: dict[str, dict[str, str]] = {}
    if present:
        resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in present]
        for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
            entries = future.result(timeout=timeout)
            configs[resource.name] = {k: entries[k].value for k in _SHOWN_CONFIGS if k in entries}
    infos = []
    for s in specs:
        if s not in present:
            infos.append(TopicInfo(s.name, s.role, False))
            continue
        parts = metadata.topics[s.name].partitions
        replicas = len(next(iter(parts.values())).replicas) if parts else 0
        infos.append(TopicInfo(s.name, s.role, True, len(parts), replicas, configs.get(s.name, {})))
    return infos


def broker_reachable(admin: AdminClient, topic: str, timeout: float = 5.0) -> bool:
    """True when the cluster answers a metadata request for ``topic`` within ``timeout``."""
    try:
        admin.list_topics(topic, timeout=timeout)
    except KafkaException:
        return False
    return True


def publish_topic_problems(admin: AdminClient, settings: Settings, names: list[str]) -> list[str]:
    """What would make publishing to ``names`` fail: a missing topic, or one whose record limit
    (``max.message.bytes``) is below ``api.max_body_bytes`` plus the room for headers."""
    needed = settings.api.max_body_bytes + RECORD_OVERHEAD_BYTES
    problems = []
    for info in describe_topics(admin, source_topics(settings, names)):
        if not info.exists:
            problems.append(
                f"topic {info.name} does not exist; create it with `fanout topics create {info.name}`"
            )
            continue
        limit = info.config.get("max.message.bytes")
        if limit is not None and limit.isdigit() and int(limit) < needed:
            problems.append(
                f"topic {info.name} takes records up to {limit} bytes, less than api.max_body_bytes plus "
                f"headers ({needed}): raise its max.message.bytes, or lower api.max_body_bytes"
            )
    return problems
