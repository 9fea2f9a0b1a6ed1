"""``fanout publish TYPE --data JSON|@file``: write one event to a topic, directly to Kafka."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import click
import orjson

from fanout.commands.context import CliState, UsageOrConfigError, pass_state, print_json
from fanout.kafka.producer import BlockingProducer, ProduceFailed
from fanout.model.errors import FanoutError


def _data(text: str | None) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise UsageOrConfigError(f"--data {text}: cannot read: {exc.strerror}") from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageOrConfigError(f"--data is not valid JSON: {exc}") from None


@click.command()
@click.argument("event_type")
@click.option("--data", help="The payload: JSON text, or @FILE with JSON.")
@click.option("--key", help="The record key (partitioning; key-ordered subscriptions).")
@click.option("--topic", help="The topic (default: api.default_topic).")
@click.option("--id", "event_id", help="The event id (the webhook-id; default: a new one).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_state
def publish(
    state: CliState,
    event_type: str,
    data: str | None,
    key: str | None,
    topic: str | None,
    event_id: str | None,
    as_json: bool,
) -> None:
    """Publish an event {"event": TYPE, "data": ...} directly to Kafka and wait for the broker's
    acknowledgement (acks=all)."""
    settings = state.settings
    topic = topic or settings.api.default_topic
    if not topic:
        raise UsageOrConfigError("no topic: give --topic (api.default_topic is not set)")
    if settings.topics.is_internal(topic):
        raise UsageOrConfigError(f"{topic!r} is an internal topic")
    if not 0 < len(event_type) <= 256:
        raise UsageOrConfigError("TYPE must be 1 to 256 characters")
    event = {"event": event_type, "id": event_id or f"evt_{uuid.uuid4().hex}", "data": _data(data)}
    producer = BlockingProducer(settings)
    try:
        written = producer.produce(
            topic, orjson.dumps(event), key.encode() if key else None, [("content-type", b"application/json")]
        )
    except (ProduceFailed, FanoutError) as exc:
        raise click.ClickException(f"publish failed: {exc}") from None
    finally:
        producer.close()
    result = {
        "id": event["id"],
        "topic": written.topic,
        "partition": written.partition,
        "offset": written.offset,
    }
    if as_json:
        print_json(result)
    else:
        click.echo(
            f"published {result['id']} to {topic} (partition {written.partition}, offset {written.offset})"
        )
