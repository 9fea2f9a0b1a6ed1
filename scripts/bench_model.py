"""The dispatcher's event-loop work per delivery, in process: scenario (a) or (c) without Kafka or sockets.

Records go through the code a dispatcher runs on its event loop (decode, route, lanes, the HTTP sender
with its signing and attempt metrics, settle, the attempt record), to a transport that answers 204 after
one turn of the loop and record sinks that acknowledge at once. ``a``: one subscription; ``c``:
``--subscriptions`` of them behind a tenant filter, the records going round all of them (as in
``scripts/bench``). After a warm-up that touches every subscription, the GC is frozen and switched off,
and the lanes' clock is virtual (``Clock``), so two runs of the same code do the same work (with
``PYTHONHASHSEED=0``); it prints the CPU time per delivery.

Timing on a shared machine moves by tens of percent; counting does not. Instructions and cache misses
per delivery are the difference of two runs under cachegrind, e.g.::

    PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=yes --cachegrind-out-file=c2k.out \\
        .venv/bin/python scripts/bench_model.py c --deliveries 2000
    valgrind ... --cachegrind-out-file=c6k.out .venv/bin/python scripts/bench_model.py c --deliveries 6000

and (``summary:`` of c6k.out less that of c2k.out) / 4,000.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fanout.config import Settings
from fanout.config.settings import DeliverySettings, DispatcherSettings, KafkaSettings
from fanout.http.sender import HttpSender
from fanout.http.signing import new_secret
from fanout.http.transport import Request, Response, Timeouts
from fanout.model.ports import RecordMetadata
from fanout.model.subscription import parse_subscription
from fanout.pipeline.dispatch import Dispatcher
from fanout.pipeline.flow import Lanes
from fanout.pipeline.lanes import LaneLimits
from fanout.pipeline.ops import OpsEvents
from fanout.pipeline.route import RoutingTable
from fanout.runtime import wiring
from fanout.telemetry.attempts import AttemptMetrics, instrument_send
from fanout.telemetry.histograms import LocalHistograms
from fanout.telemetry.metrics import LabelCap

TOPIC, PARTITIONS, BATCH = "events", 6, 500
BODY = b'{"event":"user.created","data":{"x":"' + b"a" * 990 + b'"}}'


class Record:
    """A consumed record as the dispatcher reads it (confluent-kafka's ``Message`` methods)."""

    __slots__ = ("_headers", "_offset", "_partition")

    def __init__(self, partition: int, offset: int, headers: list[tuple[str, bytes]] | None) -> None:
        self._partition, self._offset, self._headers = partition, offset, headers

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes:
        return BODY

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_764_500_000_000


class Acknowledging:
    """Record sinks (retry/dead-letter writer, ops events, attempt history) that the broker acknowledges
    at once."""

    def produce_then(
        self, topic: str, value: bytes, key: bytes | None, done: Callable[[Exception | None], None]
    ) -> None:
        asyncio.get_running_loop().call_soon(done, None)

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None, headers: object
    ) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        future.set_result(RecordMetadata(topic, 0, 0))
        return future


class Clock:
    """``time.monotonic`` for the model: it moves ``TURN`` seconds per turn of the loop, so that what
    depends on time (the lanes' expiry scans, their pace) goes the same way in every run, however fast
    the machine (or valgrind) runs it."""

    TURN = 0.0005

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now

    def turn(self) -> None:
        self.now += self.TURN


class Answering:
    """A transport that answers every request 204 after one turn of the loop."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def send(self, request: Request, timeouts: Timeouts) -> Response:
        await asyncio.sleep(0)
        return Response(204, [], b"", 0)


async def model(scenario: str, subscriptions: int, deliveries: int) -> float:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="broker.invalid:9092"),
        dispatcher=DispatcherSettings(group_id="model"),
        delivery=DeliverySettings(allow_http=True, allow_cidrs=["127.0.0.0/8"], connections_per_host=64),
    )
    count = subscriptions if scenario == "c" else 1
    subs = []
    for i in range(count):
        doc: dict[str, object] = {
            "id": f"s{i}",
            "url": f"http://127.0.0.1:9/sink/{i}",
            "topics": [TOPIC],
            "secrets": [new_secret()],
            "max_in_flight": 64,
        }
        if scenario == "c":
            doc["filter"] = {"tenant": f"t{i}"}
        subs.append(parse_subscription(doc))
    sink = Acknowledging()
    settler = wiring.settler(settings, sink, OpsEvents(sink, settings.topics.ops), on_gone=lambda d: None)
    settler.history = wiring.attempt_log(settings, sink, "model")
    sender = HttpSender(settings.delivery, body_prefix=wiring.response_prefix(settings))
    sender.transport = Answering()  # no start(): the model's endpoints are plain http, no TLS context
    table = RoutingTable.build(subs)
    sender.prepare(table.subscriptions.values())
    send = instrument_send(
        sender.send,
        AttemptMetrics(LocalHistograms(), LabelCap(settings.telemetry.max_subscription_labels)),
        None,
    )
    d = settings.delivery
    limits = LaneLimits(
        d.lane_queue, d.lane_max_wait, d.breaker_failures, d.breaker_cooldown, d.breaker_max_cooldown
    )
    lanes = Lanes(send, settler.done, limits, settings.dispatcher.max_queued, connections_per_host=64)
    retry = [settings.topics.retry(i) for i in range(len(settings.retry.tiers))]
    dispatcher = Dispatcher(table, lanes, settler, retry, "model", d.transform_max_bytes, addressable=table)
    dispatcher.assign([(TOPIC, p) for p in range(PARTITIONS)], 1)
    offsets = [0] * PARTITIONS
    sent = 0

    def batch(size: int) -> list[Record]:
        nonlocal sent
        records = []
        for i in range(sent, sent + size):
            partition = i % PARTITIONS
            headers = [("tenant", f"t{i % count}".encode())] if scenario == "c" else None
            records.append(Record(partition, offsets[partition], headers))
            offsets[partition] += 1
        sent += size
        return records

    async def run(total: int) -> None:
        end = sent + total
        while sent < end:
            if lanes.ready.is_set():  # flow control, as the consumer obeys it (the member's tick expires)
                dispatcher.on_records(batch(min(BATCH, end - sent)))
                lanes.expire()
            await asyncio.sleep(0)
            clock.turn()
        while lanes.queued or lanes.tasks:
            await asyncio.sleep(0)
            clock.turn()
            lanes.expire()

    clock = Clock()
    time.monotonic = clock.monotonic  # every module reads it as time.monotonic()
    await run(max(count, 2000))
    gc.collect()
    gc.freeze()
    gc.disable()
    started = time.process_time()
    await run(deliveries)
    elapsed = time.process_time() - started
    delivered = settler.counts.totals()["delivered"]
    if delivered != sent:
        raise RuntimeError(f"{sent} records, {delivered} delivered")
    return elapsed / deliveries * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=["a", "c"])
    parser.add_argument("--subscriptions", type=int, default=10_000, help="(c): subscriptions and tenants")
    parser.add_argument("--deliveries", type=int, default=20_000, help="deliveries measured")
    args = parser.parse_args()
    cpu = uvloop.run(model(args.scenario, args.subscriptions, args.deliveries))
    print(f"({args.scenario}) {cpu:.1f} us of CPU per delivery ({args.deliveries:,} deliveries)")


if __name__ == "__main__":
    main()
