"""Idempotency-Key against the real broker (issue 13, defect 4): the identical request keeps its event
ids; a different request under the same key is a 409 and publishes nothing; a replica that never saw
the key publishes the different request under ids of its own, never the first request's ids."""

from __future__ import annotations

import asyncio

from tests.integration.api import api_settings, create_api_topics, record_count, running_api, source_topic
from tests.integration.engine import read_topic


async def test_a_key_reused_with_a_different_body_is_a_conflict(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)
    batch = [{"event": "order.placed", "data": {"n": 1}}, {"event": "order.placed", "data": {"n": 2}}]
    changed = [batch[0], {"event": "order.placed", "data": {"n": 3}}]
    key = {"Idempotency-Key": "order-17"}
    async with running_api(settings) as api, running_api(settings) as replica:
        status, _, first = await api.call("POST", "/v1/events", batch, headers=key)
        assert status == 202, first
        status, _, again = await api.call("POST", "/v1/events", batch, headers=key)
        assert status == 202 and [r["id"] for r in again] == [r["id"] for r in first], "a retry keeps its ids"
        reordered = [{"data": e["data"], "event": e["event"]} for e in batch]
        status, _, same = await api.call("POST", "/v1/events", reordered, headers=key)
        assert status == 202 and [r["id"] for r in same] == [r["id"] for r in first], (
            "same JSON, same request"
        )

        for body, params in ((changed, None), (batch, {"key": "customer-9"}), (batch[0], None)):
            status, headers, problem = await api.call("POST", "/v1/events", body, headers=key, params=params)
            assert status == 409, problem
            assert headers["Content-Type"].startswith("application/problem+json")
            assert problem["type"] == "urn:fanout:problem:idempotency-key-reused"
        assert record_count(settings, topic) == 6, "nothing published for the conflicts"

        status, _, elsewhere = await replica.call("POST", "/v1/events", changed, headers=key)
        assert status == 202, elsewhere
        assert {r["id"] for r in elsewhere}.isdisjoint({r["id"] for r in first}), "never the first ids"
        status, _, _ = await replica.call("POST", "/v1/events", batch, headers=key)
        assert status == 409, "the replica now holds the key for its own first request"

    records = await asyncio.to_thread(read_topic, settings, topic, 8)
    assert len(records) == 8
