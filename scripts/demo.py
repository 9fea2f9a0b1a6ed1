"""The demo's steps once a broker is up: topics, sample events, and what came out the other end."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import orjson
from confluent_kafka import Consumer, Producer

from fanout.config import load_settings

TOPIC = "demo.events"
SAMPLES = [
    {"event": "user_registered", "data": {"user_id": 1234, "email": "user@example.com"}},
    {"event": "user_registered", "data": {"user_id": 1235, "email": "ada@example.com"}},
    {"event": "order_placed", "data": {"order_id": "o-1", "total": 42.5}},
]


def main() -> int:
    settings = load_settings()
    subprocess.run([sys.executable, "-m", "fanout", "topics", "create", TOPIC], check=True)
    producer = Producer({**settings.kafka.librdkafka(), "acks": "all"})
    for sample in SAMPLES:
        producer.produce(TOPIC, orjson.dumps(sample))
    assert producer.flush(30) == 0
    print(f"demo: published {len(SAMPLES)} sample events to {TOPIC}")

    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"demo-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([TOPIC])
    wanted = {orjson.dumps(s) for s in SAMPLES}
    seen: set[bytes] = set()
    deadline = time.monotonic() + 30
    while seen < wanted and time.monotonic() < deadline:
        for msg in consumer.consume(100, timeout=1.0):
            if msg.error() is None and msg.value() in wanted:
                seen.add(msg.value() or b"")
    consumer.close()
    for sample in SAMPLES:
        mark = "ok " if orjson.dumps(sample) in seen else "MISSING"
        print(f"  {mark} {sample['event']}: {orjson.dumps(sample['data']).decode()}")
    print("demo: not built yet: the dispatcher (fanout run), the API and the demo receiver; this demo")
    print("      shows the events reaching Kafka and being read back, nothing more.")
    return 0 if seen == wanted else 1


if __name__ == "__main__":
    sys.exit(main())
