"""Secrets at rest: AES-GCM seal/open with key rotation, and the subscriptions-topic codec that seals
every secret field and opens them transparently."""

from __future__ import annotations

import base64
import logging

import orjson
import pytest
from pydantic import SecretStr

from fanout.config import SecretsSettings
from fanout.control.codec import SubscriptionCodec
from fanout.control.secretbox import SecretBox, SecretUnreadable, new_key
from tests.unit.factories import OTHER_SECRET, SECRET, make_sub

OLD, NEW = new_key(), new_key()


def box(*keys: str) -> SecretBox:
    return SecretBox.from_base64(keys)


def test_seal_open_and_rotation() -> None:
    sealed = box(OLD).seal("whsec_x", "sub:a")
    assert sealed.startswith("enc:v1:") and "whsec_x" not in sealed
    assert box(OLD).seal("whsec_x", "sub:a") != sealed, "a fresh nonce every time"
    assert box(OLD).open(sealed, "sub:a") == "whsec_x"
    rotated = box(NEW, OLD)  # the new key first, the old one still opens
    assert rotated.open(sealed, "sub:a") == "whsec_x"
    resealed = rotated.seal(rotated.open(sealed, "sub:a"), "sub:a")
    assert box(NEW).open(resealed, "sub:a") == "whsec_x", "after a rewrite the old key can go"
    with pytest.raises(SecretUnreadable, match=r"not in secrets\.keys"):
        box(NEW).open(sealed, "sub:a")


def test_sealed_values_are_bound_to_their_context_and_tamper_evident() -> None:
    sealed = box(OLD).seal("whsec_x", "sub:a")
    with pytest.raises(SecretUnreadable):
        box(OLD).open(sealed, "sub:b")
    raw = bytearray(base64.urlsafe_b64decode(sealed.rsplit(":", 1)[1]))
    raw[-1] ^= 1
    tampered = sealed.rsplit(":", 1)[0] + ":" + base64.urlsafe_b64encode(bytes(raw)).decode()
    with pytest.raises(SecretUnreadable, match="tampered"):
        box(OLD).open(tampered, "sub:a")


def test_without_keys_values_pass_as_they_are() -> None:
    assert not box().enabled
    assert box().seal("whsec_x", "c") == "whsec_x"
    assert box(OLD).open("whsec_plain", "c") == "whsec_plain", "written before a key was configured"


def full_sub() -> object:
    return make_sub(
        secrets=[SECRET],
        previous_secrets=[{"secret": OTHER_SECRET, "expires_at": "2999-01-01T00:00:00Z"}],
        headers={"X-Token": "header-secret"},
        auth={
            "type": "oauth2",
            "token_url": "https://idp.example.com/t",
            "client_id": "c",
            "client_secret": "cs-1",
        },
        client_certificate={"cert_pem": "-----CERT-----", "key_pem": "-----PRIVATE KEY-----"},
    )


def test_codec_seals_every_secret_field_and_opens_them() -> None:
    sub = full_sub()
    codec = SubscriptionCodec(SecretsSettings(keys=[SecretStr(OLD)]))
    record = codec.encode(sub)  # type: ignore[arg-type]
    for secret in (SECRET, OTHER_SECRET, "header-secret", "cs-1", "PRIVATE KEY"):
        assert secret.encode() not in record
    doc = orjson.loads(record)
    assert doc["client_certificate"]["cert_pem"] == "-----CERT-----", "not a secret"
    assert doc["auth"]["client_id"] == "c" and doc["headers"]["X-Token"].startswith("enc:v1:")
    assert codec.decode(b"hook-1", record) == ("hook-1", sub)
    assert codec.decode(b"hook-1", None) == ("hook-1", None)


def test_codec_skips_what_it_cannot_open(caplog: pytest.LogCaptureFixture) -> None:
    record = SubscriptionCodec(SecretsSettings(keys=[SecretStr(OLD)])).encode(full_sub())  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        assert SubscriptionCodec(SecretsSettings(keys=[SecretStr(NEW)])).decode(b"hook-1", record) is None
    assert "not in secrets.keys" in caplog.text and "cs-1" not in caplog.text
    plain = orjson.dumps(make_sub().document())
    assert SubscriptionCodec(SecretsSettings(keys=[SecretStr(NEW)])).decode(b"hook-1", plain) == (
        "hook-1",
        make_sub(),
    )


def test_encryption_keys_are_validated() -> None:
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        SecretsSettings(keys=[SecretStr(base64.b64encode(b"short").decode())])


def test_records_written_before_this_version_still_decode() -> None:
    """A record of the earlier format: no previous_secrets, no auth, secrets in clear."""
    old = {
        "id": "hook-1",
        "version": 3,
        "url": "https://hooks.example.com/in",
        "topics": ["orders"],
        "secrets": [SECRET],
    }
    for keys in ([], [SecretStr(OLD)]):
        decoded = SubscriptionCodec(SecretsSettings(keys=keys)).decode(b"hook-1", orjson.dumps(old))
        assert decoded is not None and decoded[1] is not None
        assert decoded[1].secrets == [SECRET] and decoded[1].previous_secrets == []


def test_records_without_new_features_are_readable_by_the_previous_version() -> None:
    record = orjson.loads(SubscriptionCodec(SecretsSettings()).encode(make_sub()))
    assert "previous_secrets" not in record and "auth" not in record
    previous_fields = {
        "id", "version", "url", "topics", "events", "filter", "enabled", "disabled_reason", "secrets",
        "headers", "rate_limit", "max_in_flight", "timeout", "retry", "payload", "ordering",
        "client_certificate", "description",
    }  # fmt: skip
    assert set(record) <= previous_fields
