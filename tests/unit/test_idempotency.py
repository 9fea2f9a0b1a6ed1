"""Idempotency-Key bookkeeping: the fingerprint of a request and the bounded per-replica memory."""

from __future__ import annotations

from fanout.api.idempotency import IdempotencyKeys, fingerprint, idempotent_id


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_fingerprint_covers_body_topic_and_key_but_not_json_key_order() -> None:
    body = {"event": "a", "data": {"x": 1, "y": [1, 2]}}
    same = {"data": {"y": [1, 2], "x": 1}, "event": "a"}
    assert fingerprint("t", None, body) == fingerprint("t", None, same)
    assert fingerprint("t", None, body) != fingerprint("t", None, {**body, "data": {"x": 2, "y": [1, 2]}})
    assert fingerprint("t", None, body) != fingerprint("u", None, body)
    assert fingerprint("t", None, body) != fingerprint("t", "k", body)
    assert fingerprint("t", None, [body]) != fingerprint("t", None, body)


def test_ids_depend_on_the_fingerprint() -> None:
    one, two = fingerprint("t", None, {"event": "a"}), fingerprint("t", None, {"event": "b"})
    assert idempotent_id("p", "t", "k", 0, one) == idempotent_id("p", "t", "k", 0, one)
    assert idempotent_id("p", "t", "k", 0, one) != idempotent_id("p", "t", "k", 0, two)
    assert idempotent_id("p", "t", "k", 0, one) != idempotent_id("q", "t", "k", 0, one)
    assert idempotent_id("p", "t", "k", 0, one) != idempotent_id("p", "t", "k", 1, one)


def test_a_key_is_bound_to_its_first_request_for_the_window() -> None:
    clock = Clock()
    keys = IdempotencyKeys(window=60, max_keys=100, clock=clock)
    assert keys.claim("p", "k", b"one")
    assert keys.claim("p", "k", b"one"), "the identical request again"
    assert not keys.claim("p", "k", b"two"), "another request under the same key"
    assert keys.claim("q", "k", b"two"), "keys are per caller"
    clock.now += 59
    assert not keys.claim("p", "k", b"two")
    clock.now += 1
    assert keys.claim("p", "k", b"two"), "forgotten after the window"
    assert not keys.claim("p", "k", b"one")


def test_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    clock = Clock()
    keys = IdempotencyKeys(window=3600, max_keys=3, clock=clock)
    for i in range(5):
        clock.now += 1
        assert keys.claim("p", f"k{i}", b"d")
    assert len(keys) == 3
    assert keys.claim("p", "k0", b"other"), "k0 was forgotten"
    assert not keys.claim("p", "k4", b"other"), "k4 is remembered"
    assert len(keys) == 3
