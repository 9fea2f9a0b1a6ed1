"""Fan-out: each receiver gets exactly its events, every signature verifies with the reference library."""

from __future__ import annotations

import orjson
import standardwebhooks

from fanout.config import Settings
from tests.integration.engine import (
    apply,
    create_engine_topics,
    engine_settings,
    produce_records,
    running,
    subscription,
)
from tests.receivers import Received, Receiver


def ids(requests: list[Received]) -> list[str]:
    return [r.headers["webhook-id"] for r in requests]


async def test_fan_out_to_matching_filtered_and_non_matching(bootstrap: str, unique: str) -> None:
    settings: Settings = engine_settings(bootstrap, unique)
    topic = f"{unique}.users"
    create_engine_topics(settings, [topic])
    n = 1000
    acme = {i for i in range(n) if i % 4 == 0}
    created = [orjson.dumps({"event": "user.created", "id": f"e{i}", "data": {"i": i}}) for i in range(n)]
    async with (
        Receiver() as exact,
        Receiver() as prefix,
        Receiver() as star,
        Receiver() as other,
        Receiver() as tenant,
    ):
        subs = [
            subscription("exact", exact.url, [topic], events=["user.created"], headers={"X-Team": "crm"}),
            subscription("prefix", prefix.url, [topic], events=["user.*"]),
            subscription("star", star.url, [topic], events=["*"]),
            subscription("other", other.url, [topic], events=["order.*", "user.deleted"]),
            subscription("acme", tenant.url, [topic], events=["user.created"], filter={"tenant": "acme"}),
        ]
        await apply(settings, subs)
        async with running(settings):
            produce_records(
                settings,
                topic,
                (
                    (None, value, [("tenant", b"acme" if i in acme else b"globex")])
                    for i, value in enumerate(created)
                ),
            )
            for receiver in (exact, prefix, star):
                await receiver.wait_count(n, timeout=60)
            await tenant.wait_count(len(acme), timeout=30)

        expected = {f"e{i}" for i in range(n)}
        for receiver in (exact, prefix, star):
            assert sorted(ids(receiver.requests)) == sorted(expected)
        assert sorted(ids(tenant.requests)) == sorted(f"e{i}" for i in acme)
        assert other.requests == []
        assert {r.headers.get("X-Team") for r in exact.requests} == {"crm"}
        assert {r.headers.get("X-Team") for r in star.requests} == {None}
        assert {r.headers["Content-Type"] for r in star.requests} == {"application/json"}

        secrets = {s.id: s.secrets[0] for s in subs}
        for sub_id, receiver in (("exact", exact), ("prefix", prefix), ("star", star), ("acme", tenant)):
            verifier = standardwebhooks.Webhook(secrets[sub_id])
            for request in receiver.requests:
                payload = verifier.verify(request.body, request.headers)
                assert payload["type"] == "user.created"
                assert payload["id"] == request.headers["webhook-id"]
                assert payload["data"]["i"] == int(payload["id"][1:])
            wrong = standardwebhooks.Webhook(secrets["other"])
            try:
                wrong.verify(receiver.requests[0].body, receiver.requests[0].headers)
            except standardwebhooks.WebhookVerificationError:
                pass
            else:
                raise AssertionError("a signature verified with another subscription's secret")
