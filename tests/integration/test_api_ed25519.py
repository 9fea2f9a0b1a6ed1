"""Ed25519 (Standard Webhooks ``v1a``) keys through the API, delivered by a real dispatcher to a real
receiver: a create with ``signing=both`` generates an HMAC secret (shown once) and a key pair whose
private key is never shown and is sealed at rest; ``/public-key`` serves the ``whpk_`` keys; every
delivery's ``v1a`` signature verifies with ``cryptography``'s ``Ed25519PublicKey`` over
``id.timestamp.body`` (the ``standardwebhooks`` library verifies only ``v1``: it checks the ``v1`` one);
a rotation keeps both keys signing during the grace period, and one without grace drops the key it
replaced."""

from __future__ import annotations

import base64
import dataclasses
import time

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook

from fanout.control.subscriptions import read_to_end
from tests.integration.api import (
    READ_KEY,
    api_settings,
    create_api_topics,
    dispatcher_sees,
    running_api,
    source_topic,
)
from tests.integration.engine import read_topic, running
from tests.receivers import Received, Receiver


def v1a_verifies(public_key: str, request: Received) -> bool:
    """Standard Webhooks v1a, by hand: some ``v1a,<base64>`` entry of ``webhook-signature`` is an Ed25519
    signature of ``id.timestamp.body`` by ``public_key`` (``whpk_`` + base64 of the raw 32 bytes), and the
    timestamp is within 5 minutes."""
    assert public_key.startswith("whpk_")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    msg_id, stamp = request.headers["webhook-id"], request.headers["webhook-timestamp"]
    assert abs(time.time() - int(stamp)) < 300
    signed = f"{msg_id}.{stamp}.".encode() + request.body
    for entry in request.headers["webhook-signature"].split():
        version, _, signature = entry.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(signature), signed)
        except InvalidSignature:
            continue
        return True
    return False


def versions(request: Received) -> list[str]:
    return [entry.partition(",")[0] for entry in request.headers["webhook-signature"].split()]


async def test_ed25519_keys_generated_served_rotated_and_verified(bootstrap: str, unique: str) -> None:
    settings = api_settings(bootstrap, unique)
    topic = source_topic(settings)
    create_api_topics(settings)
    async with Receiver() as receiver, running_api(settings) as api:
        body = {"id": "partner", "url": receiver.url, "topics": [topic]}
        status, _, problem = await api.call("POST", "/v1/subscriptions", body, params={"signing": "rsa"})
        assert status == 400, problem
        status, _, created = await api.call("POST", "/v1/subscriptions", body, params={"signing": "both"})
        assert status == 201, created
        secret, first = created["secret"], created["ed25519_public_key"]
        assert created["ed25519_public_keys"] == [first] and created["secret_count"] == 1
        assert "whsk_" not in orjson.dumps(created).decode(), "the private key is never returned"
        status, _, got = await api.call("GET", "/v1/subscriptions/partner", key=READ_KEY)
        assert (
            status == 200
            and "whsk_" not in orjson.dumps(got).decode()
            and got["ed25519_public_keys"] == [first]
        )
        status, headers, served = await api.call("GET", "/v1/subscriptions/partner/public-key", key=READ_KEY)
        assert status == 200 and headers["ETag"] == '"1"'
        assert served == {"id": "partner", "version": 1, "keys": [{"public_key": first, "expires_at": None}]}
        private = read_to_end(settings)["partner"].ed25519_keys[0]

        # HMAC only by default; Ed25519 only when asked, or when the body gives only Ed25519 keys
        status, _, hmac_only = await api.call("POST", "/v1/subscriptions", {**body, "id": "plain"})
        assert status == 201 and "secret" in hmac_only and "ed25519_public_key" not in hmac_only
        assert (await api.call("GET", "/v1/subscriptions/plain/public-key"))[0] == 404
        assert (await api.call("GET", "/v1/subscriptions/nope/public-key"))[0] == 404
        status, _, ed_only = await api.call(
            "POST", "/v1/subscriptions", {**body, "id": "ed-only"}, params={"signing": "ed25519"}
        )
        assert status == 201 and "secret" not in ed_only and ed_only["secret_count"] == 0, ed_only
        assert (await api.call("DELETE", "/v1/subscriptions/plain"))[0] == 204
        assert (await api.call("DELETE", "/v1/subscriptions/ed-only"))[0] == 204

        async with running(settings) as dispatcher:
            await dispatcher_sees(dispatcher, "partner", lambda s: s.version >= 1)
            await api.call("POST", "/v1/events", {"event": "a", "data": {"n": 1}})
            await receiver.wait_count(1)

            status, _, rotated = await api.call(
                "POST",
                "/v1/subscriptions/partner/rotate-secret",
                {"grace_seconds": 600, "signing": "ed25519"},
            )
            assert status == 200 and "secret" not in rotated, rotated
            second = rotated["ed25519_public_key"]
            assert second != first and len(rotated["previous_ed25519_keys_expire_at"]) == 1
            status, _, served = await api.call("GET", "/v1/subscriptions/partner/public-key")
            assert [k["public_key"] for k in served["keys"]] == [second, first]
            assert served["keys"][0]["expires_at"] is None and served["keys"][1]["expires_at"] is not None
            await dispatcher_sees(dispatcher, "partner", lambda s: s.version >= rotated["version"])
            await api.call("POST", "/v1/events", {"event": "b"})
            await receiver.wait_count(2)

            status, _, again = await api.call(
                "POST", "/v1/subscriptions/partner/rotate-secret", {"grace_seconds": 0, "signing": "ed25519"}
            )
            third = again["ed25519_public_key"]
            await dispatcher_sees(dispatcher, "partner", lambda s: s.version >= again["version"])
            await api.call("POST", "/v1/events", {"event": "c"})
            await receiver.wait_count(3)
        status, _, served = await api.call("GET", "/v1/subscriptions/partner/public-key")
        assert [k["public_key"] for k in served["keys"]] == [third, first]

    before, during, after = receiver.requests
    assert versions(before) == ["v1", "v1a"]
    assert v1a_verifies(first, before) and not v1a_verifies(second, before)
    Webhook(secret).verify(before.body, before.headers)  # the v1 signature, by the reference library
    assert versions(during) == ["v1", "v1a", "v1a"]
    assert v1a_verifies(second, during) and v1a_verifies(first, during), "both keys during the grace period"
    assert versions(after) == ["v1", "v1a", "v1a"]
    assert v1a_verifies(third, after) and v1a_verifies(first, after), "the first is still within its grace"
    assert not v1a_verifies(second, after), "replaced without grace: dropped at once"
    assert not v1a_verifies(third, dataclasses.replace(after, body=after.body + b" ")), "a changed body fails"
    Webhook(secret).verify(after.body, after.headers)

    # at rest: the private key only sealed
    raw = b"".join(m.value() or b"" for m in read_topic(settings, settings.topics.subscriptions, 1))
    assert (
        b"enc:v1:" in raw
        and private.encode() not in raw
        and private.removeprefix("whsk_").encode() not in raw
    )
