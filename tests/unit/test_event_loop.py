"""The test suite runs on uvloop, like ``fanout run``: a bug that only uvloop shows must show here."""

from __future__ import annotations

import asyncio

import uvloop


async def test_tests_run_on_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
