from __future__ import annotations

import base64
import re
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from fanout.http.signing import SECRET_PREFIX, new_secret, sign
from tests.unit.factories import KEY, OTHER_KEY, OTHER_SECRET, SECRET

BODY = b'{"id":"evt_1","type":"user.created","timestamp":"2024-05-01T12:00:00.000Z","data":{"n":"\xc3\xa9"}}'


def headers(signature: str, msg_id: str = "evt_1", timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def test_one_key_verifies_with_the_reference_library() -> None:
    now = int(time.time())
    signature = sign((KEY,), "evt_1", now, BODY)
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", signature)
    assert Webhook(SECRET).verify(BODY, headers(signature, timestamp=now)) == {
        "id": "evt_1",
        "type": "user.created",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "data": {"n": "é"},
    }


def test_rotation_signs_with_every_key_and_each_secret_verifies_alone() -> None:
    now = int(time.time())
    signature = sign((KEY, OTHER_KEY), "evt_1", now, BODY)
    assert len(signature.split(" ")) == 2
    for secret in (SECRET, OTHER_SECRET):
        Webhook(secret).verify(BODY, headers(signature, timestamp=now), json_parse=False)


def test_a_wrong_secret_does_not_verify() -> None:
    now = int(time.time())
    signature = sign((OTHER_KEY,), "evt_1", now, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, headers(signature, timestamp=now))


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp"])
def test_signature_covers_id_timestamp_and_body(tamper: str) -> None:
    now = int(time.time())
    signature = sign((KEY,), "evt_1", now, BODY)
    body, msg_id, ts = BODY, "evt_1", now
    if tamper == "body":
        body = BODY.replace(b"user.created", b"user.deleted")
    elif tamper == "id":
        msg_id = "evt_2"
    else:
        ts = now - 1
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, headers(signature, msg_id=msg_id, timestamp=ts))


def test_signature_is_deterministic_for_the_same_attempt() -> None:
    assert sign((KEY,), "a", 1, b"x") == sign((KEY,), "a", 1, b"x")
    assert sign((KEY,), "a", 1, b"x") != sign((KEY,), "a", 2, b"x")


@pytest.mark.parametrize("size", [24, 32, 64])
def test_new_secret_is_whsec_and_base64_of_size_bytes(size: int) -> None:
    secret = new_secret(size)
    assert secret.startswith(SECRET_PREFIX)
    key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    assert len(key) == size
    Webhook(secret)  # the reference library accepts it


def test_new_secrets_are_random_and_default_to_32_bytes() -> None:
    a, b = new_secret(), new_secret()
    assert a != b
    assert len(base64.b64decode(a[len(SECRET_PREFIX) :])) == 32


def test_new_secret_signs_verifiably() -> None:
    secret = new_secret()
    key = base64.b64decode(secret[len(SECRET_PREFIX) :])
    now = int(time.time())
    Webhook(secret).verify(BODY, headers(sign((key,), "evt_1", now, BODY), timestamp=now), json_parse=False)


@pytest.mark.parametrize("size", [0, 23, 65])
def test_new_secret_refuses_sizes_outside_24_to_64(size: int) -> None:
    with pytest.raises(ValueError, match="24 to 64"):
        new_secret(size)


def test_verify_accepts_reference_signatures_and_refuses_tampering() -> None:
    import time as _time
    from datetime import UTC, datetime

    import standardwebhooks

    from fanout.api.inbound import Unverified, standard_webhook
    from fanout.http.signing import new_secret

    def verify(secrets: list[str], headers: dict[str, str], body: bytes) -> bool:
        try:
            return standard_webhook(secrets, headers, body, 300) == headers["webhook-id"]
        except Unverified:
            return False

    secret, other = new_secret(), new_secret()
    body = b'{"type":"user.created","data":{}}'
    now = datetime.now(tz=UTC)
    signature = standardwebhooks.Webhook(secret).sign("msg_1", now, body.decode())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    assert verify([secret], headers, body)
    assert verify([other, secret], headers, body)  # rotation: any active secret
    assert not verify([other], headers, body)
    assert not verify([secret], headers, body + b" ")
    assert not verify([secret], {**headers, "webhook-id": "msg_2"}, body)
    stale = {**headers, "webhook-timestamp": str(int(_time.time()) - 600)}
    assert not verify([secret], stale, body)
    assert not verify([secret], {k: v for k, v in headers.items() if k != "webhook-signature"}, body)


def test_the_signer_gives_the_same_signatures_as_sign() -> None:
    from fanout.http.signing import Signer, new_secret, sign, sign_with
    from fanout.model.subscription import parse_subscription

    sub = parse_subscription(
        {"id": "s", "url": "https://x.example/h", "topics": ["t"], "secrets": [new_secret(), new_secret(64)]}
    )
    signer = Signer()
    for body in (b"", b"{}", b"x" * 5000):
        assert signer.sign(sub.signing_keys, "msg_1", 1700000000, body) == sign(
            sub.signing_keys, "msg_1", 1700000000, body
        )
    assert signer.sign(sub.signing_keys, "msg_2", 1700000000, b"{}") != signer.sign(
        sub.signing_keys, "msg_1", 1700000000, b"{}"
    )
    states = signer.states(sub.signing_keys)
    assert signer.states(sub.signing_keys) == states, "one keyed state per key, made once"
    assert sign_with(states, "msg_1", 1700000000, b"{}") == sign(sub.signing_keys, "msg_1", 1700000000, b"{}")
    assert sign_with(states, "msg_1", 1700000000, b"{}") == sign_with(states, "msg_1", 1700000000, b"{}"), (
        "signing copies the keyed states: it never changes them"
    )


def test_the_keyed_states_give_hmac_sha256_for_keys_of_every_length() -> None:
    import hashlib
    import hmac

    from fanout.http.signing import keyed, sign_with

    # 0 to 2 blocks and more: shorter than SHA-256's 64-byte block (padded), exactly one, longer (hashed)
    for size in range(0, 140):
        key = bytes((size * 7 + i * 13) % 256 for i in range(size))
        for body in (b"", b"{}", bytes(range(256)) * 9):
            expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest())
            signature = sign_with((keyed(key),), "msg_1", 1700000000, body)
            assert signature == "v1," + expected.decode(), f"a key of {size} bytes"
