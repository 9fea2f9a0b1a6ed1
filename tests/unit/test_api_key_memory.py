"""API keys are remembered once their digest matched: the same principal as the digest gives, nothing
remembered for a credential that did not match (so the memory holds at most one entry per key)."""

from __future__ import annotations

from fanout.api.auth import Authenticator, key_digest
from fanout.config import ApiSettings
from fanout.config.api import ApiKey


def test_only_matching_keys_are_remembered_and_they_answer_as_the_digest_does() -> None:
    keys = [ApiKey(name=n, sha256=key_digest(f"fo_{n}_secret"), scopes=["events:publish"]) for n in "ab"]
    auth = Authenticator(ApiSettings(keys=keys))
    for attempt in range(1000):
        assert auth.api_key(f"fo_a_secret{attempt}") is None
        assert auth.api_key("fo_a_secre") is None
    assert len(auth._known) == 0, "a credential that did not match is not remembered"
    for _ in range(3):
        a, b = auth.api_key("fo_a_secret"), auth.api_key("fo_b_secret")
        assert a is not None and (a.name, a.kind, a.scopes) == ("a", "api-key", frozenset({"events:publish"}))
        assert b is not None and b.name == "b"
    assert len(auth._known) == 2
    assert auth.api_key("fo_a_secret ") is None and auth.api_key("FO_A_SECRET") is None
