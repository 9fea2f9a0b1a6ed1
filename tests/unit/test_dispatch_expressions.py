"""The dispatcher with CEL: filters choose deliveries, a transform makes the body, and a transform that
fails dead-letters its delivery with the reason (nothing is sent)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from fanout.model import headers as H
from fanout.model.event import Delivery
from fanout.pipeline.expressions import FilterErrors
from fanout.pipeline.route import RoutingTable
from tests.unit.factories import make_sub
from tests.unit.test_dispatch import make_dispatcher
from tests.unit.test_settle import Harness, until


@dataclass
class Source:
    offset_: int
    value_: bytes

    def topic(self) -> str | None:
        return "orders"

    def partition(self) -> int | None:
        return 0

    def offset(self) -> int | None:
        return self.offset_

    def key(self) -> bytes | None:
        return b"k"

    def value(self) -> bytes | None:
        return self.value_

    def headers(self) -> Any:
        return []

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_772_366_400_000)


def order(offset: int, amount: Any) -> Source:
    return Source(
        offset, orjson.dumps({"event": "order.created", "id": f"o{offset}", "data": {"amount": amount}})
    )


async def test_filters_and_transforms_shape_what_is_sent() -> None:
    harness = Harness()
    sent: list[Delivery] = []
    subs = [
        make_sub(
            id="big", filter_expr="data.amount > 100", transform='{"kind": event.type, "n": data.amount}'
        ),
        make_sub(id="bad-transform", filter_expr="data.amount > 100", transform="data.missing"),
        make_sub(id="all"),
    ]
    dispatcher = make_dispatcher(harness, subs, sent=sent)
    shared = FilterErrors()
    dispatcher.filter_errors = shared
    dispatcher.assign([("orders", 0)], 1)
    dispatcher.on_records([order(0, 500), order(1, 5), order(2, "text")])
    await until(lambda: len(sent) == 4 and len(harness.sink.to(harness.settings.topics.dlq)) == 1)
    by_sub = sorted((d.subscription.id, d.event.id, d.body) for d in sent)
    assert by_sub == [
        ("all", "o0", None),
        ("all", "o1", None),
        ("all", "o2", None),
        ("big", "o0", b'{"kind":"order.created","n":500}'),
    ]
    (dead,) = harness.sink.to(harness.settings.topics.dlq)
    reason = (dict(dead.headers)[H.REASON] or b"").decode()
    assert reason.startswith("transform failed: ") and "missing" in reason
    assert harness.counts.dead_letters[("bad-transform", "transform_failed")] == 1
    # "text" > 100 is a type error: no match, counted for both filtered subscriptions
    assert shared.counts == {"big": 1, "bad-transform": 1}
    # the counter survives a table swap, and forgets deleted subscriptions
    dispatcher.set_table(RoutingTable.build([subs[0]]))
    assert dispatcher.filter_errors is shared and shared.counts == {"big": 1}
