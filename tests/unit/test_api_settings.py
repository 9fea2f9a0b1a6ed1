"""The api and secrets settings: what is refused at start, with the field named."""

from __future__ import annotations

import pytest

from fanout.config import load_settings
from fanout.model.errors import ConfigError


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"FANOUT_API__TOPICS": '["fanout.dlq"]'}, "internal topic"),
        (
            {"FANOUT_API__INGEST": '{"gh": {"scheme": "github", "topic": "fanout.ops", "secrets": ["s"]}}'},
            "internal",
        ),
        ({"FANOUT_API__TOPICS": '["a"]', "FANOUT_API__DEFAULT_TOPIC": "b"}, "not in topics"),
        ({"FANOUT_API__MAX_BODY_BYTES": "3000000"}, "must fit in kafka.message_max_bytes"),
        (
            {"FANOUT_API__KEYS": '[{"name": "x", "sha256": "abc", "scopes": ["events:publish"]}]'},
            "api.keys.0.sha256",
        ),
        ({"FANOUT_API__KEYS": f'[{{"name": "x", "sha256": "{"a" * 64}", "scopes": ["root"]}}]'}, "scopes"),
        (
            {"FANOUT_API__INGEST": '{"bad name": {"scheme": "token", "topic": "t", "secrets": ["s"]}}'},
            "source name",
        ),
        ({"FANOUT_SECRETS__KEYS": '["bm90LWEta2V5"]'}, "16, 24 or 32 bytes"),
    ],
)
def test_refused_at_start(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], words: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=words):
        load_settings()


def test_defaults() -> None:
    settings = load_settings()
    assert (settings.api.host, settings.api.port, settings.api.max_body_bytes) == (
        "0.0.0.0",
        8080,
        1024 * 1024,
    )
    assert settings.api.keys == [] and settings.api.jwt is None and settings.secrets.keys == []
