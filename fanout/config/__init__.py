"""Settings: one section per concern, read from the environment and an optional YAML file.

Import from here (``from fanout.config import Settings``); the sections live in their own modules.
"""

from fanout.config.settings import (
    ENV_NESTING as ENV_NESTING,
)
from fanout.config.settings import (
    ENV_PREFIX as ENV_PREFIX,
)
from fanout.config.settings import (
    HISTORY_MAX_BODY_BYTES as HISTORY_MAX_BODY_BYTES,
)
from fanout.config.settings import (
    RECORD_OVERHEAD_BYTES as RECORD_OVERHEAD_BYTES,
)
from fanout.config.settings import (
    SCOPES as SCOPES,
)
from fanout.config.settings import (
    ApiKey as ApiKey,
)
from fanout.config.settings import (
    ApiSettings as ApiSettings,
)
from fanout.config.settings import (
    ConsoleSettings as ConsoleSettings,
)
from fanout.config.settings import (
    DeliverySettings as DeliverySettings,
)
from fanout.config.settings import (
    DispatcherSettings as DispatcherSettings,
)
from fanout.config.settings import (
    HistorySettings as HistorySettings,
)
from fanout.config.settings import (
    IngestSource as IngestSource,
)
from fanout.config.settings import (
    JwtSettings as JwtSettings,
)
from fanout.config.settings import (
    KafkaSettings as KafkaSettings,
)
from fanout.config.settings import (
    LibrdkafkaConfig as LibrdkafkaConfig,
)
from fanout.config.settings import (
    RetrySettings as RetrySettings,
)
from fanout.config.settings import (
    SecretsSettings as SecretsSettings,
)
from fanout.config.settings import (
    Settings as Settings,
)
from fanout.config.settings import (
    TelemetrySettings as TelemetrySettings,
)
from fanout.config.settings import (
    TopicSettings as TopicSettings,
)
from fanout.config.settings import (
    describe_validation_error as describe_validation_error,
)
from fanout.config.settings import (
    load_settings as load_settings,
)
