"""Create and describe fanout's topics, idempotently; size the producer's record limit from theirs.

``create_for`` and ``describe_for`` are what ``fanout topics create|describe`` run: they raise
``TopicAdminFailed`` (a ``FanoutError`` carrying the Kafka error's text) instead of Kafka's exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from fanout.config import RECORD_OVERHEAD_BYTES, LibrdkafkaConfig, Settings
from fanout.kafka.producer import QUEUE_KBYTES
from fanout.model.errors import FanoutError

HOUR_MS = 3600 * 1000
HEADER_ROOM_BYTES = 64 * 1024  # what fanout's headers add to a record it hands off, with room to spare
LIBRDKAFKA_MAX_MESSAGE_BYTES = 1_000_000_000  # the largest message.max.bytes librdkafka takes


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


def default_record_limit(settings: Settings) -> int:
    """The ``max.message.bytes`` fanout gives the topics it creates."""
    return settings.kafka.message_max_bytes + HEADER_ROOM_BYTES


def _common(settings: Settings, record_limit: int | None = None) -> dict[str, str]:
    conf = {"max.message.bytes": str(max(default_record_limit(settings), record_limit or 0))}
    if settings.topics.min_insync_replicas is not None:
        conf["min.insync.replicas"] = str(settings.topics.min_insync_replicas)
    return conf


def internal_topics(settings: Settings, record_limit: int | None = None) -> list[TopicSpec]:
    """The subscriptions (compacted), retry tiers, dead-letter, operational-event and attempts topics
    (the delivery history: key = event id, kept ``history.retention``). Their
    ``max.message.bytes`` is the default one, or ``record_limit`` when larger (the largest source
    topic's, so that whatever a source topic accepts can be handed off to a retry tier or the DLQ)."""
    t = settings.topics
    common = _common(settings, record_limit)

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
    topics.append(
        spec(
            t.attempts,
            "delivery history",
            t.partitions,
            **{"cleanup.policy": "delete", "retention.ms": str(int(settings.history.retention * 1000))},
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


class TopicAdminFailed(FanoutError):
    """A topic admin request failed; the message is the Kafka error."""


def create_for(settings: Settings, names: Iterable[str]) -> list[TopicResult]:
    """Create the internal topics and the source topics ``names`` (``fanout topics create``). The
    hand-off topics take records at least as large as the largest existing topic of ``names`` takes."""
    names = list(names)
    try:
        admin = admin_client(settings)
        largest = max(record_limits(admin, names).values(), default=None)
        return create_topics(admin, internal_topics(settings, largest) + source_topics(settings, names))
    except KafkaException as exc:
        raise TopicAdminFailed(str(exc.args[0])) from None


def describe_for(settings: Settings, names: Iterable[str]) -> list[TopicInfo]:
    """The internal topics and the source topics ``names`` as the cluster has them."""
    specs = internal_topics(settings) + source_topics(settings, list(names))
    try:
        return describe_topics(admin_client(settings), specs)
    except KafkaException as exc:
        raise TopicAdminFailed(str(exc.args[0])) from None


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


def record_limits(admin: AdminClient, names: Iterable[str], timeout: float = 10.0) -> dict[str, int]:
    """The ``max.message.bytes`` of each topic of ``names`` that exists (its own, or the broker's)."""
    specs = [TopicSpec(n, "", 0, 0) for n in sorted(set(names))]
    limits = {}
    for info in describe_topics(admin, specs, timeout):
        value = info.config.get("max.message.bytes", "")
        if info.exists and value.isdigit():
            limits[info.name] = int(value)
    return limits


@dataclass(frozen=True)
class ProducerSizing:
    """The producer's ``message.max.bytes`` for hand-offs, and what an operator should know about it."""

    message_max_bytes: int
    warnings: tuple[str, ...] = ()

    def config(self) -> LibrdkafkaConfig:
        """The producer settings: the record limit, and a local queue that holds two such records
        (librdkafka refuses a record larger than its queue as "queue full", forever)."""
        queue_kbytes = max(QUEUE_KBYTES, 2 * self.message_max_bytes // 1024)
        return {"message.max.bytes": self.message_max_bytes, "queue.buffering.max.kbytes": queue_kbytes}


def missing_topics(settings: Settings, names: Iterable[str], timeout: float = 10.0) -> list[str]:
    """The topics of ``names`` the cluster's metadata does not show (``KafkaException`` when the
    metadata cannot be read)."""
    topics = admin_client(settings).list_topics(timeout=timeout).topics
    return [n for n in names if n not in topics or topics[n].error is not None]


def hand_off_topics(settings: Settings) -> list[str]:
    """The topics the dispatcher hands records off to: every retry tier and the dead letters."""
    return [settings.topics.retry(i) for i in range(len(settings.retry.tiers))] + [settings.topics.dlq]


def size_producer(settings: Settings, limits: dict[str, int], sources: Iterable[str]) -> ProducerSizing:
    """Size the producer so that whatever a source topic accepts can be handed off.

    librdkafka checks a record's *uncompressed* size against ``message.max.bytes`` before sending; the
    broker checks the compressed batch against the topic's ``max.message.bytes``. The producer's limit
    is therefore the largest of ``kafka.message_max_bytes``, the internal topics' limits and each
    source topic's limit plus room for fanout's headers. A record can still be larger uncompressed
    (a source batch is compressed), and a hand-off topic can take less than a source topic (a warning
    here): settle then writes a dead letter without the value (``record too large``)."""
    sources = sorted(set(sources))
    internal = {n: limits[n] for n in hand_off_topics(settings) if n in limits}
    source = {n: limits[n] for n in sources if n in limits}
    wanted = max(
        settings.kafka.message_max_bytes,
        max(internal.values(), default=0),
        max(source.values(), default=0) + HEADER_ROOM_BYTES,
    )
    warnings = []
    if internal:
        smallest = min(internal, key=lambda n: internal[n])
        for name, limit in source.items():
            if limit > internal[smallest]:
                warnings.append(
                    f"source topic {name} accepts records up to {limit} bytes, more than {smallest} takes "
                    f"({internal[smallest]}): larger records that must be retried or dead-lettered will be "
                    f"dead-lettered without their value; raise max.message.bytes of the retry and "
                    f"dead-letter topics"
                )
    return ProducerSizing(min(wanted, LIBRDKAFKA_MAX_MESSAGE_BYTES), tuple(warnings))


def producer_sizing(settings: Settings, sources: Iterable[str]) -> ProducerSizing:
    """``size_producer`` from the limits the cluster reports now; ``kafka.message_max_bytes`` (with a
    warning) when they cannot be read."""
    sources = set(sources)
    try:
        limits = record_limits(admin_client(settings), sources | set(hand_off_topics(settings)))
    except (KafkaException, TimeoutError) as exc:
        return ProducerSizing(
            settings.kafka.message_max_bytes,
            (f"could not read the topics' max.message.bytes ({exc}); using kafka.message_max_bytes",),
        )
    return size_producer(settings, limits, sources)
