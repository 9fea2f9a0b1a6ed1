from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from fanout.config import DispatcherSettings, KafkaSettings, Settings
from fanout.kafka.consumer_config import consumer_config, consumer_error
from fanout.model.errors import FatalKafkaError


def test_a_fatal_error_returned_by_consume_stops_the_consumer_even_without_the_fatal_flag() -> None:
    """consume() hands over librdkafka's _FATAL (a static member fenced: "The instance ID is still used
    by another member") with fatal() False; the member then stayed up, joined to nothing."""
    fenced = KafkaError(KafkaError._FATAL, "Fatal error: Broker: The instance ID is still used")
    assert not fenced.fatal()
    with pytest.raises(FatalKafkaError, match="instance ID"):
        consumer_error(fenced)
    with pytest.raises(FatalKafkaError):
        consumer_error(KafkaError(KafkaError.FENCED_INSTANCE_ID, "fenced", fatal=True))


def test_other_consumer_errors_are_logged_and_the_consumer_goes_on() -> None:
    consumer_error(KafkaError(KafkaError._PARTITION_EOF))
    consumer_error(KafkaError(KafkaError._TRANSPORT, "broker down"))


def _config(**dispatcher: object) -> dict[str, object]:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="broker.invalid:9092"),
        dispatcher=DispatcherSettings(**dispatcher),  # type: ignore[arg-type]
    )
    return consumer_config(settings, "g", on_commit=lambda *a: None)


def test_the_classic_protocol_is_cooperative_with_the_clients_session_timeout() -> None:
    conf = _config()
    assert conf["group.protocol"] == "classic"
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"
    assert conf["session.timeout.ms"] == 10_000, "a dead member's partitions wait this long (defect 9)"
    assert conf["heartbeat.interval.ms"] == 1000


def test_the_consumer_protocol_leaves_assignment_and_session_to_the_broker() -> None:
    """librdkafka refuses the classic group settings with group.protocol=consumer."""
    conf = _config(group_protocol="consumer", session_timeout_ms=20_000)
    assert conf["group.protocol"] == "consumer"
    assert not {"partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"} & conf.keys()
