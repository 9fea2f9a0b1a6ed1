"""Pure pieces of the control plane: replay headers (accepted by the dispatcher's RetryMeta), signing
with rotated secrets until they expire, merge patch, If-Match, cursors, CLI times, routes references,
inbound webhook schemes."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from multidict import CIMultiDict
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from fanout.api.inbound import Unverified, event_id, standard_webhook, verify
from fanout.api.problems import Problem
from fanout.api.subscriptions import expected_version, merge_patch
from fanout.api.validation import PARAMS
from fanout.commands.context import TIME
from fanout.config import DeliverySettings, IngestSource
from fanout.control.deadletters import BadCursor, decode_cursor, encode_cursor
from fanout.control.plans import rotated
from fanout.control.routes import parse_routes
from fanout.http.sender import HttpSender
from fanout.model import headers as H
from fanout.model.errors import ValidationFailed
from tests.unit.factories import KEY, OTHER_KEY, OTHER_SECRET, SECRET, make_delivery, make_sub


def test_replayed_dead_letters_are_retry_records_for_the_dispatcher() -> None:
    dead = [
        ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        *H.encode(
            {
                H.SUBSCRIPTION: "crm",
                H.GROUP: "old-group",
                H.ATTEMPT: 7,
                H.ORIGIN_TOPIC: "users",
                H.ORIGIN_PARTITION: 2,
                H.ORIGIN_OFFSET: 99,
                H.ORIGIN_TIMESTAMP: 1_700_000_000_000,
                H.FIRST_ATTEMPT: 1_600_000_000_000,
                H.EVENT_ID: "e-1",
                H.LAST_ERROR: "HTTP 503",
                H.REASON: "retries exhausted",
                H.STATUS: 503,
            }
        ),
    ]
    replayed = H.replay_of_dead_letter(dead, "blue", 1_800_000_000_000)
    assert replayed is not None
    meta = H.RetryMeta.parse(replayed)
    assert (meta.subscription, meta.attempt, meta.event_id, meta.last_error) == ("crm", 0, "e-1", "")
    assert meta.group == "blue", (
        "addressed to the replaying process's group, not the one that dead-lettered it"
    )
    assert H.for_group(replayed, "blue") and not H.for_group(replayed, "old-group")
    assert meta.first_attempt == 1_800_000_000 and H.not_before_ms(replayed) == 1_800_000_000_000
    assert (meta.origin_topic, meta.origin_partition, meta.origin_offset) == ("users", 2, 99)
    assert ("traceparent", dead[0][1]) in replayed
    assert not {H.REASON, H.STATUS, H.LAST_ERROR} & set(H.as_dict(replayed))
    poison = H.encode({H.REASON: "poison record: not JSON", H.ORIGIN_TOPIC: "users"})
    assert H.replay_of_dead_letter(poison, "blue", 1) is None


async def test_rotated_secrets_are_signed_with_until_they_expire() -> None:
    now = datetime.now(UTC)
    sub = rotated(make_sub(secrets=[SECRET]), OTHER_SECRET, 60, now)
    assert sub.signing_keys_at(now.timestamp()) == (OTHER_KEY, KEY)
    assert sub.signing_keys_at(now.timestamp() + 61) == (OTHER_KEY,), "expired: dropped at send time"
    again = rotated(sub, SECRET, 0, now)
    assert [p.secret for p in again.previous_secrets] == [SECRET], "no grace: only the older one is left"
    sender = HttpSender(DeliverySettings())
    delivery = make_delivery(sub=sub)
    headers = dict(sender.headers(delivery, b"{}"))
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (OTHER_SECRET, SECRET):
        Webhook(secret).verify(b"{}", headers)
    expired = rotated(make_sub(secrets=[SECRET]), OTHER_SECRET, 60, now - timedelta(minutes=5))
    assert len(dict(sender.headers(make_delivery(sub=expired), b"{}"))["webhook-signature"].split()) == 1


async def test_a_send_signs_with_the_keys_its_target_keeps_and_with_a_rotations_keys_until_they_expire() -> (
    None
):
    """A send signs with the HMAC states its target keeps (worked out when the routing table is
    installed), or, while a rotation's previous secret is valid, with the keys of the send time: the
    same signatures as the subscription's own keys give."""
    now = datetime.now(UTC)
    sender = HttpSender(DeliverySettings(allow_http=True, allow_cidrs=["127.0.0.0/8"]))
    plain = make_sub(url="http://127.0.0.1:9/hook", secrets=[SECRET])
    twin = make_sub(id="twin", url="http://127.0.0.1:9/other", secrets=[SECRET])
    sender.prepare([plain, twin])
    target = sender._target(plain)
    assert target.signing is not None and target.signing == sender._target(twin).signing, (
        "one keyed state per secret, shared by the subscriptions that use it"
    )
    assert target.target.raw == b"/hook"
    stamp = now.timestamp()
    signed = dict(sender.headers(make_delivery(sub=plain), b"{}", now=stamp, target=target))
    assert signed == dict(sender.headers(make_delivery(sub=plain), b"{}", now=stamp))
    Webhook(SECRET).verify(b"{}", signed)

    turning = rotated(plain, OTHER_SECRET, 60, now)
    sender.prepare([turning])
    target = sender._target(turning)
    assert target.signing is None, "a rotation in progress: the keys depend on the send time"
    during = dict(sender.headers(make_delivery(sub=turning), b"{}", now=stamp, target=target))
    assert len(during["webhook-signature"].split()) == 2
    for secret in (OTHER_SECRET, SECRET):
        Webhook(secret).verify(b"{}", during)
    after = dict(sender.headers(make_delivery(sub=turning), b"{}", now=stamp + 61, target=target))
    assert len(after["webhook-signature"].split()) == 1, "the previous secret expired: dropped at send time"


def test_model_copy_does_not_keep_stale_keys() -> None:
    sub = make_sub(secrets=[SECRET])
    assert sub.signing_keys == (KEY,)
    assert sub.model_copy(update={"secrets": [OTHER_SECRET]}).signing_keys == (OTHER_KEY,)


def test_merge_patch_is_rfc_7396() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}
    assert merge_patch(target, {"a": None, "b": {"c": None, "x": 9}, "e": [2]}) == {
        "b": {"d": 3, "x": 9},
        "e": [2],
    }
    assert merge_patch(target, {}) == target


class _Request(dict[Any, Any]):
    pass


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("*", None),
        ('"3"', 3),
        ('W/"12"', 12),
        ("3", "412"),
        ('"x"', "412"),
        ('"1", "2"', "412"),
    ],
)
def test_if_match(value: str | None, expected: int | str | None) -> None:
    request = _Request({PARAMS: {} if value is None else {"If-Match": value}})
    if expected == "412":
        with pytest.raises(Problem) as problem:
            expected_version(request)  # type: ignore[arg-type]
        assert problem.value.status == 412
    else:
        assert expected_version(request) == expected  # type: ignore[arg-type]


def test_cursors_round_trip_and_refuse_forgeries() -> None:
    assert decode_cursor(encode_cursor({0: 5, 3: 17})) == {0: 5, 3: 17}
    for bad in ("", "!!", "WzFd", "eyItMSI6IDV9", encode_cursor({0: 1})[:-2] + "zz"):
        with pytest.raises(BadCursor):
            decode_cursor(bad)


def test_cli_times() -> None:
    now = time.time() * 1000
    ten_am = int(datetime(2026, 11, 28, 10, tzinfo=UTC).timestamp() * 1000)
    assert TIME.convert("2026-11-28T10:00:00Z", None, None) == ten_am
    assert TIME.convert("2026-11-28T10:00:00", None, None) == TIME.convert(
        "2026-11-28T10:00:00+00:00", None, None
    )
    assert TIME.convert("1764324000", None, None) == 1_764_324_000_000
    assert abs(TIME.convert("2h", None, None) - (now - 7_200_000)) < 5000
    with pytest.raises(click.BadParameter):
        TIME.convert("yesterday", None, None)


def test_routes_may_reference_environment_variables_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_SECRET", SECRET)
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    document = {
        "subscriptions": [
            {
                "id": "crm",
                "url": "https://crm.example.com/",
                "topics": ["users"],
                "secrets": ["${env:CRM_SECRET}"],
                "auth": {"type": "basic", "username": "u", "password": f"${{file:{password}}}"},
            }
        ]
    }
    (sub,) = parse_routes(document, DeliverySettings())
    assert sub.secrets == [SECRET] and sub.auth is not None and sub.auth.password == "s3cret"  # type: ignore[union-attr]
    monkeypatch.delenv("CRM_SECRET")
    with pytest.raises(ValidationFailed, match="CRM_SECRET is not set"):
        parse_routes(document, DeliverySettings())
    literal = {
        "subscriptions": [{**document["subscriptions"][0], "url": "https://10.1.2.3/", "secrets": [SECRET]}]
    }
    with pytest.raises(ValidationFailed, match="SSRF"):
        parse_routes(literal, DeliverySettings())


def source(scheme: str, secret: str, **fields: Any) -> IngestSource:
    return IngestSource(scheme=scheme, topic="t", secrets=[SecretStr(secret)], **fields)  # type: ignore[arg-type]


def test_inbound_standard_webhooks_verify_with_the_reference_library_under_the_sources_tolerance() -> None:
    body = b'{"type": "invoice.paid", "data": {"n": 1}}'
    now = int(time.time())

    def headers(at: int, *secrets: str, msg_id: str = "msg_1") -> CIMultiDict[str]:
        when = datetime.fromtimestamp(at, UTC)
        signed = " ".join(Webhook(s).sign(msg_id, when, body.decode()) for s in secrets)
        return CIMultiDict({"webhook-id": msg_id, "webhook-timestamp": str(at), "webhook-signature": signed})

    strict, lenient = source("standard-webhooks", SECRET), source("standard-webhooks", SECRET, tolerance=900)
    assert verify(strict, headers(now, SECRET), body) == "msg_1"
    assert verify(strict, headers(now - 290, SECRET), body) == "msg_1"
    with pytest.raises(Unverified, match="tolerance"):
        verify(strict, headers(now - 600, SECRET), body)
    with pytest.raises(Unverified, match="tolerance"):
        verify(strict, headers(now + 600, SECRET), body)
    # a configured tolerance beyond the library's fixed five minutes still holds
    assert verify(lenient, headers(now - 600, SECRET), body) == "msg_1"
    with pytest.raises(Unverified, match="tolerance"):
        verify(lenient, headers(now - 1000, SECRET), body)
    # rotation: the sender signs with both secrets, either configured one verifies
    assert standard_webhook([OTHER_SECRET], headers(now, SECRET, OTHER_SECRET), body, 300) == "msg_1"
    with pytest.raises(Unverified, match="no signature"):
        verify(strict, headers(now, OTHER_SECRET), body)
    with pytest.raises(Unverified, match="no signature"):
        verify(strict, headers(now, SECRET, msg_id="msg_2"), body.replace(b"1", b"2"))
    bad = headers(now, SECRET)
    bad["webhook-signature"] = "v1,not-base64 v2,x garbage"
    with pytest.raises(Unverified, match="no signature"):
        verify(strict, bad, body)
    with pytest.raises(Unverified, match="UTF-8"):
        verify(strict, headers(now, SECRET), b"\xff\xfe")
    with pytest.raises(Unverified, match="required"):
        verify(strict, CIMultiDict({"webhook-timestamp": str(now)}), body)
    with pytest.raises(Unverified, match="malformed"):
        verify(strict, CIMultiDict({**headers(now, SECRET), "webhook-timestamp": "12e3"}), body)


def test_inbound_schemes() -> None:
    body = b'{"id": "evt_9", "type": "charge.succeeded"}'
    stamp = str(int(time.time()))
    github = source("github", "gh")
    signature = "sha256=" + hmac.new(b"gh", body, hashlib.sha256).hexdigest()
    assert (
        verify(github, CIMultiDict({"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "d1"}), body)
        == "d1"
    )
    with pytest.raises(Unverified):
        verify(github, CIMultiDict({"X-Hub-Signature-256": "sha256=zz"}), body)
    stripe = source("stripe", "whsec_s", tolerance=60)
    v1 = hmac.new(b"whsec_s", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert verify(stripe, CIMultiDict({"Stripe-Signature": f"t={stamp},v1=bad,v1={v1}"}), body) == "evt_9"
    old = str(int(stamp) - 61)
    v1_old = hmac.new(b"whsec_s", old.encode() + b"." + body, hashlib.sha256).hexdigest()
    with pytest.raises(Unverified, match="tolerance"):
        verify(stripe, CIMultiDict({"Stripe-Signature": f"t={old},v1={v1_old}"}), body)
    standard = source("standard-webhooks", SECRET)
    signed = Webhook(SECRET).sign("msg_1", datetime.now(UTC), body.decode())
    headers = CIMultiDict({"webhook-id": "msg_1", "webhook-timestamp": stamp, "webhook-signature": signed})
    assert verify(standard, headers, body) == "msg_1"
    with pytest.raises(Unverified):
        verify(standard, headers, body + b" ")
    token = source("token", "tok", token_header="X-Token")
    assert verify(token, CIMultiDict({"X-Token": "tok"}), b"") is None
    with pytest.raises(Unverified):
        verify(token, CIMultiDict({"X-Token": "Bearer nope"}), b"")
    assert event_id("gh", "d1") == event_id("gh", "d1") != event_id("other", "d1")


def test_job_ids_outside_the_ops_retention_are_not_looked_up() -> None:
    from fanout.config import KafkaSettings, Settings
    from fanout.control.jobs import find_job, new_job_id

    nowhere = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"))  # would fail if contacted
    assert find_job(nowhere, "job_ffffffffffffffff_00000000") is None, "from the future"
    assert find_job(nowhere, "job_0_00000000") is None, "older than the retention"
    assert find_job(nowhere, "not-a-job") is None
    assert new_job_id().startswith("job_")
