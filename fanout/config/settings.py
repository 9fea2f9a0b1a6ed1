"""Settings: environment (``FANOUT_`` prefix, ``__`` for nesting), an optional YAML file, defaults.

Precedence, highest first: environment variables, the config file (``--config`` or ``FANOUT_CONFIG``),
defaults. ``load_settings`` turns a validation failure into ``ConfigError`` naming every bad field and
the environment variable that sets it.
"""

from __future__ import annotations

import itertools
import logging
import math
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from fanout.config.api import RECORD_OVERHEAD_BYTES as RECORD_OVERHEAD_BYTES
from fanout.config.api import SCOPES as SCOPES
from fanout.config.api import ApiKey as ApiKey
from fanout.config.api import ApiSettings as ApiSettings
from fanout.config.api import ConsoleSettings as ConsoleSettings
from fanout.config.api import IngestSource as IngestSource
from fanout.config.api import JwtSettings as JwtSettings
from fanout.config.api import SecretsSettings as SecretsSettings
from fanout.config.transport import TransportSettings
from fanout.model.errors import ConfigError

ENV_PREFIX = "FANOUT_"
ENV_NESTING = "__"

LibrdkafkaConfig = dict[str, Any]
LIBRDKAFKA_LOGGER = logging.getLogger("fanout.librdkafka")
HISTORY_MAX_BODY_BYTES = 65_536  # fanout.history.record.MAX_BODY_BYTES (a test keeps them equal)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class KafkaSettings(_Section):
    """Connection to the Kafka cluster; ``librdkafka()`` emits the client configuration."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Brokers to connect to first: `host:port[,host:port...]`."""
    client_id: str = "fanout"
    """librdkafka's `client.id`: how fanout's Kafka clients name themselves in the brokers' logs and
    quotas."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`; the `SASL_` ones need `sasl_mechanism`."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    """`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (these need `sasl_username` and `sasl_password`), or
    `OAUTHBEARER` (its `sasl.oauthbearer.*` settings go in `extra`)."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password (a secret: never printed)."""
    ssl_ca_location: Path | None = None
    """CA certificates (PEM file) that verify the brokers; unset: librdkafka's default."""
    ssl_certificate_location: Path | None = None
    """Client certificate (PEM file) for mutual TLS with the brokers."""
    ssl_key_location: Path | None = None
    """Client private key (PEM file) for mutual TLS with the brokers."""
    ssl_key_password: SecretStr | None = None
    """Password of the client private key (a secret)."""
    ssl_endpoint_identification: bool = True
    """With `SSL` or `SASL_SSL`: check that a broker's certificate names the host connected to
    (`ssl.endpoint.identification.algorithm=https`); `false` turns the check off."""
    message_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    """The smallest record limit of fanout's producers (2 MiB); the topics fanout creates take it plus 64
    KiB. At start the dispatcher raises its producer's limit to what its source and hand-off topics take
    (docs/delivery.md, "Topics")."""
    extra: dict[str, str] = Field(
        default_factory=dict, description="Passed through to librdkafka as-is (escape hatch)."
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("must not be empty: give host:port[,host:port...]")
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server!r} is not host:port")
        return ",".join(servers)

    @model_validator(mode="after")
    def _sasl(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
            not self.sasl_username or self.sasl_password is None
        ):
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_username and sasl_password")
        return self

    def librdkafka(self) -> LibrdkafkaConfig:
        """The librdkafka configuration common to every client (producer, consumer, admin). The client's
        own log lines go through Python logging (logger ``fanout.librdkafka``), so they come out in the
        process's log format rather than as raw lines on stderr."""
        conf: LibrdkafkaConfig = {
            "logger": LIBRDKAFKA_LOGGER,
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for key, path in (
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
        ):
            if path is not None:
                conf[key] = str(path)
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        if self.security_protocol in ("SSL", "SASL_SSL"):
            conf["ssl.endpoint.identification.algorithm"] = (
                "https" if self.ssl_endpoint_identification else "none"
            )
        conf.update(self.extra)
        return conf


class TopicSettings(_Section):
    """Names and shapes of fanout's internal topics (docs/delivery.md, "Topics")."""

    prefix: str = Field(default="fanout", pattern=r"^[A-Za-z0-9._-]+$")
    """Prefix of the internal topics: `<prefix>.subscriptions`, `.retry.<n>`, `.dlq`, `.ops`, `.attempts`."""
    partitions: int = Field(default=6, ge=1, le=10_000)
    """Partitions of every topic fanout creates (internal topics, and the source topics named to `fanout
    topics create`)."""
    replication_factor: int = Field(default=1, ge=1, le=32)
    """Replicas of every topic fanout creates (3 in production)."""
    min_insync_replicas: int | None = Field(default=None, ge=1)
    """`min.insync.replicas` of the topics fanout creates (2 with 3 replicas in production); unset: the
    broker's default. At most `replication_factor`."""
    retry_retention_hours: float = Field(default=7 * 24, gt=0)
    """Hours the retry-tier topics keep a record (`retention.ms`); must exceed `retry.max_age` (or
    `retry.max_pending`, if longer) plus the longest tier."""
    dlq_retention_hours: float = Field(default=14 * 24, gt=0)
    """Hours the dead-letter topic keeps a record: how long a dead letter can be listed and replayed."""
    ops_retention_hours: float = Field(default=7 * 24, gt=0)
    """Hours the operational-events topic keeps a record; `GET /v1/jobs/{id}` finds jobs this recent."""

    @model_validator(mode="after")
    def _isr(self) -> TopicSettings:
        if self.min_insync_replicas is not None and self.min_insync_replicas > self.replication_factor:
            raise ValueError("min_insync_replicas cannot exceed replication_factor")
        return self

    @property
    def subscriptions(self) -> str:
        return f"{self.prefix}.subscriptions"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def ops(self) -> str:
        return f"{self.prefix}.ops"

    @property
    def attempts(self) -> str:
        return f"{self.prefix}.attempts"

    def retry(self, tier: int) -> str:
        return f"{self.prefix}.retry.{tier}"

    def is_internal(self, topic: str) -> bool:
        return topic.startswith(f"{self.prefix}.")


class RetrySettings(_Section):
    """Global retry tiers and the default per-subscription retry policy, in seconds."""

    tiers: list[float] = Field(default=[5, 30, 120, 300, 600, 1800, 3600, 7200, 18000, 36000], min_length=1)
    """Delays of the retry tiers in seconds, strictly increasing; one topic `<prefix>.retry.<n>` each. A
    delivery due in d seconds goes to the smallest tier whose delay is at least d."""
    schedule: list[float] = Field(default=[5, 300, 1800, 7200, 18000, 36000, 36000], min_length=1)
    """Default seconds before attempts 2, 3, ... (a subscription's `retry.schedule` replaces it); after the
    last one, the dead letters."""
    jitter: float = Field(default=0.2, ge=0, lt=1)
    """Fraction by which each schedule delay varies at random, either way (0.2: ±20%)."""
    max_age: float = Field(
        default=3 * 24 * 3600,
        gt=0,
        description="Seconds from a delivery's first attempt until it is dead-lettered.",
    )
    max_pending: float = Field(
        default=3 * 24 * 3600,
        gt=0,
        description="Seconds a delivery may wait for its first attempt (spilled while its lane was paced or "
        "its circuit open) before it is dead-lettered.",
    )

    @field_validator("tiers")
    @classmethod
    def _increasing(cls, tiers: list[float]) -> list[float]:
        if any(t <= 0 or not math.isfinite(t) for t in tiers):
            raise ValueError("every tier delay must be a positive number of seconds")
        if any(b <= a for a, b in itertools.pairwise(tiers)):
            raise ValueError("tier delays must be strictly increasing")
        return tiers

    @field_validator("schedule")
    @classmethod
    def _non_negative(cls, schedule: list[float]) -> list[float]:
        if any(d < 0 or not math.isfinite(d) for d in schedule):
            raise ValueError("schedule delays must be non-negative seconds")
        return schedule


class DeliverySettings(TransportSettings):
    """How the dispatcher talks HTTP to subscribers (the transport's own settings: ``TransportSettings``)."""

    allow_http: bool = Field(default=False, description="Allow http:// endpoints (demo and tests only).")
    allow_cidrs: list[IPv4Network | IPv6Network] = Field(
        default_factory=list, description="Address ranges the SSRF guard admits despite being non-global."
    )
    ca_bundle: Path | None = None
    """CA certificates (PEM file) that verify subscribers' servers; unset: the system's CAs."""
    client_cert_dir: Path | None = Field(
        default=None,
        description="The only directory whose files a routes file's client_certificate may name (cert_file, "
        "key_file: resolved with links followed, they must stay inside it); unset: inline PEM only.",
    )
    connections_per_host: int = Field(default=256, ge=1)
    """Open connections per origin (idle ones included), shared by every lane of that host."""
    max_connections: int = Field(default=4096, ge=1)
    """Open connections in all (idle ones included); the oldest idle connection is closed to make room for
    a new one."""
    dns_cache_seconds: float = Field(default=10, ge=0)
    """Seconds a host's resolved (and SSRF-checked) addresses are reused; 0: resolve for every connection."""
    lane_queue: int = Field(
        default=2000,
        ge=4,
        description="Deliveries a lane queues at most (deliveries coming back from a spill: twice that).",
    )
    lane_max_wait: float = Field(
        default=2.0,
        gt=0,
        description="A lane queues a delivery only if its pace starts it within this many seconds; queued "
        "deliveries spill only when a request of the lane is out for longer than this.",
    )
    breaker_failures: int = Field(default=5, ge=1)
    """Consecutive failures that open a lane's circuit breaker."""
    breaker_cooldown: float = Field(default=30, gt=0)
    """Seconds an open breaker waits before it lets one probe request through."""
    breaker_max_cooldown: float = Field(
        default=600, gt=0, description="Each failed probe doubles the cool-down, up to this many seconds."
    )
    failing_after: int = Field(
        default=4,
        ge=1,
        description="Consecutive failures that emit the ops event fanout.subscription.failing.",
    )
    retry_after_max: float = Field(default=3600, gt=0)
    """Longest `Retry-After` honoured, in seconds; a longer one is clamped to it."""
    user_agent: str = "fanout-webhooks"
    """`User-Agent` of every delivery, followed by `/<fanout version>`."""
    transform_max_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest body a transform may make."
    )

    @model_validator(mode="after")
    def _pools(self) -> DeliverySettings:
        if self.connections_per_host > self.max_connections:
            raise ValueError("connections_per_host cannot exceed max_connections")
        return self


class DispatcherSettings(_Section):
    """The consumer-group member that runs the delivery pipeline (``fanout run``)."""

    group_id: str = Field(default="fanout-dispatcher", min_length=1)
    """Consumer group of the dispatchers (`fanout run --group-id` overrides). Replays are addressed to the
    group in the replaying process's settings."""
    instance_id: str | None = Field(
        default=None,
        min_length=1,
        description="Static group membership (group.instance.id) for rolling deploys; workers add -<index>.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Consumer processes `fanout run` supervises (`--workers N` overrides).",
    )
    topics: list[str] = Field(default_factory=list, description="Source topics beyond the subscriptions'.")
    batch_size: int = Field(default=500, ge=1, le=100_000)
    """Records the poll loop takes from librdkafka in one call, at most."""
    max_uncommitted: int = Field(
        default=10_000,
        ge=1,
        description="Per partition: records read but not yet committed; pause above. The bound on duplicates "
        "after a crash.",
    )
    max_queued: int = Field(
        default=1000,
        ge=1,
        description="Deliveries queued in all lanes above which fetching pauses (started ones do not count).",
    )
    linger_ms: int = Field(
        default=50,
        ge=0,
        le=1000,
        description="Milliseconds the dispatcher's producers gather records into one batch per partition "
        "(librdkafka's linger.ms for attempt records and retry, dead-letter and operational records). "
        "Larger batches cost the dispatcher and the broker less per record; a source offset whose records "
        "wait commits up to this much later.",
    )
    commit_interval_ms: int = Field(default=250, ge=50)
    """Milliseconds between commits of the settled offsets (a revoke or a stop commits at once)."""
    drain_timeout: float = Field(default=30, gt=0)
    """Seconds a revoke or a SIGTERM waits for the deliveries in hand to settle before committing."""
    group_protocol: Literal["classic", "consumer"] = Field(
        default="classic",
        description="Consumer-group protocol: classic (cooperative-sticky; the session timeout and heartbeat "
        "below apply) or consumer (KIP-848: the broker's group.consumer.* settings apply instead).",
    )
    session_timeout_ms: int = Field(
        default=10_000,
        ge=6000,
        description="Classic protocol: a dead member's partitions wait this long before moving "
        "(docs/delivery.md, 'Scaling and failure').",
    )
    heartbeat_interval_ms: int = Field(
        default=1000, ge=100, description="Members learn of a rebalance at their next heartbeat."
    )
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    """librdkafka's `max.poll.interval.ms`: a member whose poll loop stops for longer leaves the group."""
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a group without a committed offset starts on a source topic: `earliest` or `latest` (a new
    group starts the retry tiers at their end)."""
    http_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="/healthz, /readyz, /metrics; worker i of --workers N uses http_port + i; 0: off.",
    )
    http_host: str = "0.0.0.0"
    """Address the probes and metrics server binds."""
    stall_timeout: float = Field(
        default=60,
        gt=0,
        description="/healthz fails when a poll loop has not completed a cycle for this many seconds (must "
        "exceed drain_timeout: a revoke blocks the loop while it drains).",
    )

    @model_validator(mode="after")
    def _stall(self) -> DispatcherSettings:
        if self.stall_timeout <= self.drain_timeout:
            raise ValueError(
                "stall_timeout must exceed drain_timeout (a revoke blocks the poll loop while draining)"
            )
        return self


class HistorySettings(_Section):
    """Delivery history: the attempts topic the dispatcher writes, and the index each API replica keeps
    of it (docs/delivery.md, "Delivery history")."""

    record: Literal["all", "failures", "off"] = Field(
        default="all",
        description="Attempt records the dispatcher writes: all, failures (non-2xx attempts and terminal "
        "outcomes) or off. The attempts topic must exist unless off.",
    )
    retention: float = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="Seconds the attempts topic and the index keep a record (the topic's retention.ms).",
    )
    response_bytes: int = Field(
        default=1024,
        ge=0,
        le=HISTORY_MAX_BODY_BYTES,
        description="Bytes of each response body kept in its attempt record (0: none).",
    )
    payload_bytes: int = Field(
        default=0,
        ge=0,
        le=HISTORY_MAX_BODY_BYTES,
        description="Bytes of the event's payload kept with its first record per subscription (0: none).",
    )
    path: Path = Field(
        default=Path(".fanout/history.sqlite"),
        description="The API's index file (SQLite); rebuilt from the attempts topic when missing or corrupt.",
    )
    otlp_logs: bool = Field(
        default=False,
        description="`fanout api` also emits each attempt it indexes as an OpenTelemetry log record with its "
        "trace, over OTLP/HTTP to OTEL_EXPORTER_OTLP_LOGS_ENDPOINT (or OTEL_EXPORTER_OTLP_ENDPOINT).",
    )

    @field_validator("path")
    @classmethod
    def _file(cls, path: Path) -> Path:
        if not path.name or path.is_dir():
            raise ValueError(f"{path} is a directory; give the index file's path")
        return path


class TelemetrySettings(_Section):
    """Logs, traces and metrics. OTLP export is configured by the standard OTEL_* variables
    (docs/observability.md)."""

    log_format: Literal["json", "text"] = "json"
    """`json` (one object per line, to stderr) or `text`."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """`DEBUG`, `INFO`, `WARNING` or `ERROR` (`fanout run --log-level` overrides)."""
    trace_sample_ratio: float = Field(
        default=1.0, ge=0, le=1, description="Parent-based: applies to records that arrive without a trace."
    )
    max_subscription_labels: int = Field(
        default=1000, ge=1, description="Distinct subscription label values; the rest are reported as _other."
    )


class Settings(BaseSettings):
    """Everything fanout reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTING,
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    retry: RetrySettings = RetrySettings()
    delivery: DeliverySettings = DeliverySettings()
    dispatcher: DispatcherSettings = DispatcherSettings()
    api: ApiSettings = ApiSettings()
    console: ConsoleSettings = ConsoleSettings()
    secrets: SecretsSettings = SecretsSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    history: HistorySettings = HistorySettings()

    @model_validator(mode="after")
    def _api_topics(self) -> Settings:
        internal = [t for t in self.api.topics if self.topics.is_internal(t)]
        internal += [s.topic for s in self.api.ingest.values() if self.topics.is_internal(s.topic)]
        if internal:
            raise ValueError(f"api: {internal[0]!r} is an internal topic; the API never publishes there")
        needed = self.api.max_body_bytes + RECORD_OVERHEAD_BYTES
        if needed > self.kafka.message_max_bytes:
            raise ValueError(
                f"api.max_body_bytes ({self.api.max_body_bytes}) plus {RECORD_OVERHEAD_BYTES} bytes for "
                f"headers must fit in kafka.message_max_bytes ({self.kafka.message_max_bytes})"
            )
        return self

    @model_validator(mode="after")
    def _retention(self) -> Settings:
        needed = (max(self.retry.max_age, self.retry.max_pending) + self.retry.tiers[-1]) / 3600
        if self.topics.retry_retention_hours <= needed:
            raise ValueError(
                f"topics.retry_retention_hours must exceed retry.max_age (or max_pending if longer) plus the "
                f"longest tier ({needed:.1f} h), or retries would expire before they are due"
            )
        return self


def _sources_with_file(config_file: Path | None) -> type[Settings]:
    class FileBacked(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_file is not None:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
            return tuple(sources)

    return FileBacked


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + ENV_NESTING.join(str(part).upper() for part in loc if isinstance(part, str))


def describe_validation_error(err: ValidationError, config_file: Path | None = None) -> str:
    """One line per bad field: dotted name, the environment variable that sets it, the reason."""
    lines = []
    for problem in err.errors():
        loc = tuple(problem["loc"])
        field = ".".join(str(p) for p in loc) or "(settings)"
        where = f" (env {_env_name(loc)}" + (f" or {config_file}" if config_file else "") + ")" if loc else ""
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"invalid setting {field}{where}: {message}")
    return "\n".join(lines)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from the environment and the optional YAML file; raise ConfigError if invalid."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    try:
        return _sources_with_file(config_file)(**overrides)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, config_file)) from None
