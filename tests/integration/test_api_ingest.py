"""POST /v1/ingest/{source}: GitHub, Stripe and Standard Webhooks (signed by the reference library), and
a shared token: a good signature publishes, a tampered body or a stale timestamp gets 401 and publishes
nothing, a redelivery keeps its event id."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta

import orjson
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from fanout.config import IngestSource
from tests.integration.api import api_settings, create_api_topics, record_count, running_api
from tests.integration.engine import read_topic

GITHUB_SECRET = "gh-secret-1"
STRIPE_SECRET = "whsec_stripe_test_secret"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def github_headers(body: bytes, delivery: str, secret: str = GITHUB_SECRET) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={signature}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "push",
        "Content-Type": "application/json",
    }


def stripe_headers(body: bytes, at: int | None = None) -> dict[str, str]:
    stamp = str(at if at is not None else int(time.time()))
    signature = hmac.new(STRIPE_SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={stamp},v1={signature},v0=ignored", "Content-Type": "application/json"}


def standard_headers(body: bytes, msg_id: str, at: datetime | None = None) -> dict[str, str]:
    when = at or datetime.now(UTC)
    signature = Webhook(STANDARD_SECRET).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


async def test_ingest_verifies_each_scheme(bootstrap: str, unique: str) -> None:
    topic = f"{unique}.inbound"
    sources = {
        "github": IngestSource(scheme="github", topic=topic, secrets=[SecretStr(GITHUB_SECRET)]),
        "stripe": IngestSource(
            scheme="stripe", topic=topic, secrets=[SecretStr(STRIPE_SECRET)], tolerance=300
        ),
        "partner": IngestSource(
            scheme="standard-webhooks", topic=topic, secrets=[SecretStr(STANDARD_SECRET)]
        ),
        "cron": IngestSource(
            scheme="token", topic=topic, secrets=[SecretStr("t0ken")], event_type="cron.tick"
        ),
    }
    settings = api_settings(bootstrap, unique, ingest=sources)
    create_api_topics(settings)
    push = orjson.dumps({"ref": "refs/heads/main", "commits": []})
    charge = orjson.dumps({"id": "evt_1Abc", "type": "charge.succeeded", "data": {"object": {"amount": 5}}})
    partner = orjson.dumps({"type": "invoice.paid", "timestamp": "2026-11-28T10:00:00Z", "data": {"n": 7}})
    stale = int(time.time()) - 3600

    async with running_api(settings) as api:

        async def post(source: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
            status, _, answer = await api.call(
                "POST", f"/v1/ingest/{source}", data=body, headers=headers, key=None
            )
            return status, answer

        accepted = {
            "github": await post("github", push, github_headers(push, "d-1")),
            "github again": await post("github", push, github_headers(push, "d-1")),
            "github other": await post("github", push, github_headers(push, "d-2")),
            "stripe": await post("stripe", charge, stripe_headers(charge)),
            "stripe again": await post("stripe", charge, stripe_headers(charge)),
            "partner": await post("partner", partner, standard_headers(partner, "msg_1")),
            "partner again": await post("partner", partner, standard_headers(partner, "msg_1")),
            "cron": await post("cron", b'{"at": 1}', {"Authorization": "Bearer t0ken"}),
        }
        for name, (status, answer) in accepted.items():
            assert status == 202, (name, answer)
            assert answer["topic"] == topic
        ids = {name: answer["id"] for name, (_, answer) in accepted.items()}
        assert ids["github"] == ids["github again"] != ids["github other"]
        assert ids["stripe"] == ids["stripe again"]
        assert ids["partner"] == ids["partner again"]

        refused = {
            "github tampered": await post("github", push + b" ", github_headers(push, "d-3")),
            "github wrong secret": await post("github", push, github_headers(push, "d-4", "nope")),
            "github unsigned": await post("github", push, {"X-GitHub-Event": "push"}),
            "stripe tampered": await post("stripe", charge.replace(b"5", b"6"), stripe_headers(charge)),
            "stripe stale": await post("stripe", charge, stripe_headers(charge, at=stale)),
            "partner tampered": await post("partner", partner + b"\n", standard_headers(partner, "msg_2")),
            "partner stale": await post(
                "partner", partner, standard_headers(partner, "msg_3", datetime.now(UTC) - timedelta(hours=1))
            ),
            "cron wrong token": await post("cron", b"{}", {"Authorization": "Bearer guess"}),
        }
        for name, (status, problem) in refused.items():
            assert status == 401, (name, problem)
            assert problem["type"] == "urn:fanout:problem:unauthorized"
        assert "timestamp" in refused["stripe stale"][1]["detail"]
        assert "timestamp" in refused["partner stale"][1]["detail"]
        assert (await post("nobody", push, github_headers(push, "d-5")))[0] == 404

    assert record_count(settings, topic) == 8, "the 8 accepted requests, nothing from the refused ones"
    records = {orjson.loads(m.value())["id"]: orjson.loads(m.value()) for m in read_topic(settings, topic, 8)}
    assert len(records) == 5, "redeliveries kept their event ids"
    assert (
        records[ids["github"]]["event"] == "push"
        and records[ids["github"]]["data"]["ref"] == "refs/heads/main"
    )
    assert records[ids["stripe"]]["event"] == "charge.succeeded"
    assert records[ids["partner"]]["event"] == "invoice.paid"
    assert records[ids["cron"]] == {"event": "cron.tick", "id": ids["cron"], "data": {"at": 1}}
