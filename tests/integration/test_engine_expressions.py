"""CEL filters, transforms and Ed25519 signatures end to end: the real broker, a dispatcher, real
HTTP receivers."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import standardwebhooks
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fanout.http.signing import new_ed25519_key
from tests.integration.engine import (
    apply,
    create_engine_topics,
    engine_settings,
    header,
    produce_records,
    read_topic,
    running,
    subscription,
)
from tests.receivers import Received, Receiver

ORDERS = [
    {
        "amount": 1500,
        "currency": "EUR",
        "region": "eu",
        "customer": {"tier": "gold"},
        "tags": ["vip"],
        "placed": "2026-02-01T00:00:00Z",
    },
    {
        "amount": 1500,
        "currency": "USD",
        "region": "us",
        "customer": {},
        "tags": [],
        "placed": "2025-12-01T00:00:00Z",
    },
    {
        "amount": 20,
        "currency": "EUR",
        "region": "apac",
        "customer": {"tier": "basic"},
        "tags": ["vip", "new"],
        "placed": "2026-03-01T00:00:00Z",
    },
    {"amount": 999.5, "currency": "EUR", "region": "eu", "tags": ["new"], "placed": "2026-01-15T00:00:00Z"},
    {"currency": "EUR", "region": "us", "customer": {"tier": "gold"}, "tags": [], "placed": "nonsense"},
]
FILTERS = {
    "big-eur": 'data.amount > 1000 && data.currency == "EUR"',
    "regions": 'data.region in ["eu", "us"] && has(data.customer.tier)',
    "vip-or-small": '"vip" in data.tags || data.amount < 100',
    "recent": 'timestamp(data.placed) > timestamp("2026-01-01T00:00:00Z")',
    "tenant": 'event.attributes.tenant == "acme" && headers["tenant"] == "acme" && key.startsWith("o")',
}
EXPECTED = {
    "big-eur": {"o0"},
    "regions": {"o0", "o4"},
    "vip-or-small": {"o0", "o2"},
    "recent": {"o0", "o2", "o3"},  # o4's time does not parse: an error, no match
    "tenant": {"o0", "o1", "o2", "o3", "o4"},
}


def ids(requests: list[Received]) -> set[str]:
    return {r.headers["webhook-id"] for r in requests}


def records(topic_orders: list[dict[str, Any]]) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    return [
        (
            f"o{i}".encode(),
            orjson.dumps({"event": "order.created", "id": f"o{i}", "data": data}),
            [("tenant", b"acme")],
        )
        for i, data in enumerate(topic_orders)
    ]


async def test_filters_choose_events_and_errors_are_counted(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.orders"
    create_engine_topics(settings, [topic])
    async with (
        Receiver() as r0,
        Receiver() as r1,
        Receiver() as r2,
        Receiver() as r3,
        Receiver() as r4,
        Receiver() as everything,
    ):
        receivers = dict(zip(FILTERS, (r0, r1, r2, r3, r4), strict=True))
        subs = [
            subscription(name, receivers[name].url, [topic], filter_expr=expr)
            for name, expr in FILTERS.items()
        ]
        subs.append(subscription("everything", everything.url, [topic]))
        await apply(settings, subs)
        async with running(settings) as app:
            produce_records(settings, topic, records(ORDERS))
            await everything.wait_count(len(ORDERS), timeout=60)
            for name, receiver in receivers.items():
                await receiver.wait_count(len(EXPECTED[name]), timeout=30)
            errors = app.main.dispatcher.filter_errors.counts
        for name, receiver in receivers.items():
            assert ids(receiver.requests) == EXPECTED[name], name
        # o1 has no customer.tier... has() is false, not an error; o4 has no amount (big-eur: false &&
        # short-circuit only when currency is not EUR, so an error), no parsable time (recent)
        assert errors["recent"] == 1
        assert errors["big-eur"] == 1
        assert "tenant" not in errors and "everything" not in errors


async def test_a_transform_arrives_as_written_and_signed(bootstrap: str, unique: str) -> None:
    settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.orders"
    create_engine_topics(settings, [topic])
    private, public = new_ed25519_key()
    async with Receiver() as legacy, Receiver() as broken:
        partner = subscription(
            "partner",
            legacy.url,
            [topic],
            ed25519_keys=[private],
            filter_expr="has(data.amount)",
            transform=(
                '{"type": event.type, "payload": {"amount": data.amount, "at": timestamp(data.placed)}}'
            ),
        )
        failing = subscription("failing", broken.url, [topic], transform='{"total": data.amount * 2}')
        await apply(settings, [partner, failing])
        async with running(settings):
            produce_records(settings, topic, records(ORDERS[:2]))
            await legacy.wait_count(2, timeout=60)
            # 1500 * 2 is an int, 999.5 is not in ORDERS[:2]: both "failing" bodies build; o4 has no amount
            produce_records(settings, topic, records([ORDERS[4]]))
            dead = await asyncio.to_thread(read_topic, settings, settings.topics.dlq, 1, 60)
            await broken.wait_count(2, timeout=30)
        bodies = {r.headers["webhook-id"]: r.body for r in legacy.requests}
        assert bodies == {
            "o0": b'{"payload":{"amount":1500,"at":"2026-02-01T00:00:00Z"},"type":"order.created"}',
            "o1": b'{"payload":{"amount":1500,"at":"2025-12-01T00:00:00Z"},"type":"order.created"}',
        }
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
        hmac = standardwebhooks.Webhook(partner.secrets[0])
        for request in legacy.requests:
            assert request.headers["Content-Type"] == "application/json"
            signatures = dict(part.split(",", 1) for part in request.headers["webhook-signature"].split(" "))
            content = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
            key.verify(base64.b64decode(signatures["v1a"]), content + request.body)
            assert hmac.verify(request.body, request.headers)["type"] == "order.created"
        assert sorted(r.body for r in broken.requests) == [b'{"total":3000}', b'{"total":3000}']
        (record,) = [m for m in dead if header(m, "fanout-subscription") == "failing"]
        reason = header(record, "fanout-reason") or ""
        assert reason.startswith("transform failed: ") and "amount" in reason
        assert orjson.loads(record.value())["data"] == ORDERS[4]
        assert len(broken.requests) == 2  # nothing half-built was sent
