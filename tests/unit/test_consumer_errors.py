from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from fanout.errors import FatalKafkaError
from fanout.kafka.consumer import consumer_error


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
