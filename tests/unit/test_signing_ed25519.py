"""Ed25519 signatures (Standard Webhooks v1a): what fanout signs verifies with ``cryptography``'s public
key alone, beside the v1 HMAC entries; rotation keeps both keys signing during the grace period."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks import Webhook

from fanout.api.inbound import standard_webhook
from fanout.cli import main
from fanout.config import SecretsSettings
from fanout.control.codec import SubscriptionCodec
from fanout.control.plans import rotated_ed25519
from fanout.control.secretbox import new_key
from fanout.http.signing import Signer, new_ed25519_key, verify_ed25519
from fanout.model.subscription import ed25519_public_key
from tests.unit.factories import SECRET, make_sub


def public_of(whpk: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(whpk.removeprefix("whpk_")))


def test_v1a_signatures_verify_with_the_public_key_only() -> None:
    private, public = new_ed25519_key()
    sub = make_sub(ed25519_keys=[private])
    body = b'{"id":"evt-1","data":{"n":1}}'
    stamp = int(time.time())
    header = Signer().sign(sub.signing_keys_at(stamp), "evt-1", stamp, body, sub.ed25519_keys_at(stamp))
    v1, v1a = header.split(" ")
    assert v1.startswith("v1,") and v1a.startswith("v1a,")
    signature = base64.b64decode(v1a[4:])
    assert len(signature) == 64
    public_of(public).verify(signature, f"evt-1.{stamp}.".encode() + body)  # raises if invalid
    headers = {"webhook-id": "evt-1", "webhook-timestamp": str(stamp), "webhook-signature": header}
    assert verify_ed25519([public], headers, body)
    assert not verify_ed25519([public], headers, body + b" ")
    assert not verify_ed25519([new_ed25519_key()[1]], headers, body)
    # the v1 entry still verifies with the reference library, which skips the v1a entry
    Webhook(SECRET).verify(body, headers)
    assert standard_webhook([SECRET], headers, body, 300) == "evt-1"


def test_keys_round_trip_and_match_cryptography() -> None:
    private, public = new_ed25519_key()
    seed = base64.b64decode(private.removeprefix("whsk_"))
    assert len(seed) == 32
    key = Ed25519PrivateKey.from_private_bytes(seed)
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public == "whpk_" + base64.b64encode(raw).decode() == ed25519_public_key(private)
    # the 64-byte form (seed and public key, libsodium's) is accepted too, when the halves belong together
    assert ed25519_public_key("whsk_" + base64.b64encode(seed + raw).decode()) == public
    with pytest.raises(ValueError, match="does not belong"):
        ed25519_public_key("whsk_" + base64.b64encode(seed + bytes(32)).decode())


def test_an_ed25519_only_subscription_signs_v1a_only() -> None:
    private, public = new_ed25519_key()
    sub = make_sub(secrets=[], ed25519_keys=[private])
    header = Signer().sign(sub.signing_keys_at(0), "e", 1, b"{}", sub.ed25519_keys_at(0))
    assert header.startswith("v1a,") and " " not in header
    assert sub.public()["ed25519_public_keys"] == [public]
    assert private not in json.dumps(sub.public())


def test_rotation_signs_with_both_keys_until_the_grace_period_ends() -> None:
    old, old_public = new_ed25519_key()
    new, new_public = new_ed25519_key()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    sub = rotated_ed25519(make_sub(ed25519_keys=[old]), new, 3600, now)
    assert sub.ed25519_keys == [new]
    assert sub.public()["ed25519_public_keys"] == [new_public, old_public]
    during = (now + timedelta(seconds=60)).timestamp()
    after = (now + timedelta(seconds=3601)).timestamp()
    body = b"{}"
    header = Signer().sign((), "e", int(during), body, sub.ed25519_keys_at(during))
    parts = header.split(" ")
    assert len(parts) == 2
    content = f"e.{int(during)}.".encode() + body
    for public, part in zip((new_public, old_public), parts, strict=True):
        public_of(public).verify(base64.b64decode(part[4:]), content)
    assert len(sub.ed25519_keys_at(after)) == 1
    assert (
        rotated_ed25519(sub, new_ed25519_key()[0], 0, now).previous_ed25519_keys == sub.previous_ed25519_keys
    )


def test_ed25519_keys_are_sealed_at_rest() -> None:
    private, _ = new_ed25519_key()
    old, _ = new_ed25519_key()
    sub = rotated_ed25519(make_sub(ed25519_keys=[old]), private, 600)
    codec = SubscriptionCodec(SecretsSettings(keys=[new_key()]))
    record = codec.encode(sub)
    assert private.encode() not in record and old.encode() not in record
    decoded = codec.decode(sub.id.encode(), record)
    assert decoded is not None and decoded[1] == sub


def test_keys_signing_command_prints_a_pair() -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["keys", "signing", "--ed25519", "--json"])
    assert out.exit_code == 0, out.output
    pair = json.loads(out.output)
    assert ed25519_public_key(pair["private_key"]) == pair["public_key"]
    hmac_out = runner.invoke(main, ["keys", "signing"])
    assert hmac_out.exit_code == 0 and make_sub(secrets=[hmac_out.output.strip()])
