from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_fanout_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests see only the settings they set themselves."""
    for name in list(os.environ):
        if name.startswith("FANOUT_"):
            monkeypatch.delenv(name)
