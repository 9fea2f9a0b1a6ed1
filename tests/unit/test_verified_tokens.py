"""The memory of verified JWTs is bounded in size and forgets a token when it expires."""

from __future__ import annotations

import jwt

from fanout.api.auth import Principal, VerifiedTokens

KEY = jwt.PyJWK({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMy", "alg": "HS256"})
WHO = Principal("svc", "jwt", frozenset({"events:publish"}))


def test_a_token_is_forgotten_at_its_expiry() -> None:
    now = [1000.0]
    tokens = VerifiedTokens(clock=lambda: now[0])
    tokens.put("t", WHO, "kid-1", KEY, expires=1010.0)
    now[0] = 1009.9
    assert tokens.get("t") == (WHO, "kid-1", KEY)
    now[0] = 1010.0
    assert tokens.get("t") is None and len(tokens) == 0


def test_at_most_size_tokens_are_remembered_the_oldest_go_first() -> None:
    tokens = VerifiedTokens(size=3, clock=lambda: 0.0)
    for i in range(5):
        tokens.put(f"t{i}", WHO, None, KEY, expires=100.0)
    assert len(tokens) == 3
    assert [tokens.get(f"t{i}") is not None for i in range(5)] == [False, False, True, True, True]
    tokens.put("t2", WHO, None, KEY, expires=100.0)  # again: now the newest
    tokens.put("t5", WHO, None, KEY, expires=100.0)
    assert tokens.get("t3") is None and tokens.get("t2") is not None
