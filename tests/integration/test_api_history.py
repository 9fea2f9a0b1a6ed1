"""The delivery-history API against the real broker: attempt records written to the attempts topic are
indexed by ``fanout api`` and answered by ``GET /v1/events/{id}``, ``.../attempts`` and ``.../stats``
(each answer valid against the OpenAPI document); bad parameters are 400 problems, unknown ids 404,
a key without ``deliveries:read`` 403; ``/readyz`` and ``/metrics`` report the index's lag. An API
restart resumes indexing from the offsets in its index, a deleted index is rebuilt from the topic, and
rows older than ``history.retention`` are pruned."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fanout.api.context import API
from fanout.api.openapi import bundle, validator
from fanout.config import HistorySettings, Settings
from fanout.history.record import Body, Outcome
from fanout.model.errors import ConfigError
from tests.history_records import make
from tests.integration.api import READ_KEY, Client, api_settings, create_api_topics, running_api
from tests.integration.attempts import produce_records

pytestmark = pytest.mark.integration
TIMEOUT = 90.0
RETENTION = 3600


def settings_for(bootstrap: str, unique: str, payload_bytes: int = 8) -> Settings:
    s = api_settings(bootstrap, unique)
    history = HistorySettings(path=s.history.path, retention=RETENTION, payload_bytes=payload_bytes)
    return s.model_copy(update={"history": history})


def response_schema(path: str, method: str = "get", status: str = "200") -> Any:
    doc = bundle()
    return doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


async def caught_up(api: Client) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        status, _, body = await api.call("GET", "/readyz")
        if status == 200 and body["history"]["caught_up"] and body["history"]["lag_records"] == 0:
            return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"the history index did not catch up: {body}"
        await asyncio.sleep(0.1)


async def eventually(api: Client, path: str, want: int, params: dict[str, str] | None = None) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while True:
        status, _, body = await api.call("GET", path, params=params)
        if status == want:
            return body
        assert time.monotonic() < deadline, f"{path} stayed {status}: {body}"
        await asyncio.sleep(0.1)


def sample(now: int) -> list[Any]:
    payload = Body.of(b'{"order": 12345, "total": 99}', 1024)
    return [
        make(Outcome.RETRY_SCHEDULED, "evt-a", "hook-1", now - 3000, 1, status=503, payload=payload),
        make(Outcome.DELIVERED, "evt-a", "hook-1", now - 2000, 2, latency_ms=40.0),
        make(Outcome.RETRY_SCHEDULED, "evt-a", "hook-2", now - 2500, 1, status=500),
        make(Outcome.DEAD_LETTERED, "evt-a", "hook-2", now - 1500, 2, status=500),
        make(Outcome.RETRY_SCHEDULED, "evt-b", "hook-1", now - 1000, 1, status=502),
        make(Outcome.DROPPED, "evt-c", "hook-3", now - 900, 0),
    ]


async def test_the_history_routes_answer_from_the_indexed_attempts_topic(bootstrap: str, unique: str) -> None:
    settings = settings_for(bootstrap, unique)
    create_api_topics(settings)
    now = int(time.time() * 1000)
    produce_records(settings, sample(now))
    async with running_api(settings) as api:
        ready = await caught_up(api)
        assert ready["history"] == {"caught_up": True, "lag_records": 0, "lag_seconds": 0.0, "error": None}

        event = await eventually(api, "/v1/events/evt-a", 200)
        validator(response_schema("/v1/events/{id}")).validate(event)
        assert event["event_type"] == "order.created"
        assert event["origin"] == {
            "topic": "orders",
            "partition": 1,
            "offset": 42,
            "timestamp_ms": event["origin"]["timestamp_ms"],
        }
        assert event["payload"] == {"text": '{"order"', "encoding": "utf-8", "size": 29, "truncated": True}
        subs = {s["subscription"]: s for s in event["subscriptions"]}
        assert list(subs) == ["hook-1", "hook-2"]
        assert subs["hook-1"]["state"] == "delivered" and subs["hook-1"]["retry_at_ms"] is None
        assert [a["outcome"] for a in subs["hook-1"]["attempts"]] == ["retry_scheduled", "delivered"]
        assert [a["attempt"] for a in subs["hook-1"]["attempts"]] == [1, 2]
        assert all(a["payload"] is None for a in subs["hook-1"]["attempts"]), "the payload is shown once"
        assert subs["hook-2"]["state"] == "dead_lettered" and subs["hook-2"]["attempted"] == 2
        assert subs["hook-2"]["attempts"][-1]["response"]["status"] == 500

        pending = await eventually(api, "/v1/events/evt-b", 200)
        (only,) = pending["subscriptions"]
        assert only["state"] == "retry_pending" and only["retry_at_ms"] == now - 1000 + 5000
        dropped = await eventually(api, "/v1/events/evt-c", 200)
        assert dropped["subscriptions"][0]["state"] == "dropped"

        status, headers, problem = await api.call("GET", "/v1/events/evt-nope")
        assert status == 404 and headers["Content-Type"] == "application/problem+json"
        assert "evt-nope" in problem["detail"]

        page_schema = validator(response_schema("/v1/subscriptions/{id}/attempts"))
        status, _, page = await api.call("GET", "/v1/subscriptions/hook-1/attempts")
        assert status == 200
        page_schema.validate(page)
        assert [(a["event_id"], a["outcome"]) for a in page["items"]] == [
            ("evt-b", "retry_scheduled"),
            ("evt-a", "delivered"),
            ("evt-a", "retry_scheduled"),
        ]
        assert page["next_cursor"] is None
        _, _, failed = await api.call(
            "GET", "/v1/subscriptions/hook-1/attempts", params={"outcome": "failed"}
        )
        assert [a["response"]["status"] for a in failed["items"]] == [502, 503]
        _, _, by_status = await api.call("GET", "/v1/subscriptions/hook-1/attempts", params={"status": "503"})
        assert [a["event_id"] for a in by_status["items"]] == ["evt-a"]
        since = datetime.fromtimestamp((now - 1500) / 1000, UTC).isoformat(timespec="milliseconds")
        _, _, recent = await api.call("GET", "/v1/subscriptions/hook-1/attempts", params={"since": since})
        assert [a["event_id"] for a in recent["items"]] == ["evt-b"]

        seen = []
        params = {"limit": "1"}
        for _ in range(5):
            status, _, page = await api.call("GET", "/v1/subscriptions/hook-1/attempts", params=params)
            assert status == 200 and len(page["items"]) == 1
            seen.append(page["items"][0]["time_ms"])
            if page["next_cursor"] is None:
                break
            params = {"limit": "1", "cursor": page["next_cursor"]}
        assert seen == [now - 1000, now - 2000, now - 3000]

        stats = await eventually(api, "/v1/subscriptions/hook-1/stats", 200, params={"window": "1h"})
        validator(response_schema("/v1/subscriptions/{id}/stats")).validate(stats)
        assert stats["counts"]["delivered"] == 1 and stats["counts"]["retry_scheduled"] == 2
        assert stats["attempted"] == 3 and stats["success_rate"] == pytest.approx(1 / 3, abs=1e-5)
        assert stats["last_success_ms"] == now - 2000 and stats["last_failure_ms"] == now - 1000
        assert stats["failure_streak"]["failures"] == 1 and stats["failure_streak"]["ongoing"] is True
        assert stats["latency_ms"]["p99"] == pytest.approx(40.0, rel=0.05)
        _, _, series = await api.call(
            "GET", "/v1/subscriptions/hook-1/stats", params={"window": "1h", "buckets": "12"}
        )
        assert series["step_s"] == 300 and sum(p["attempted"] for p in series["series"]) == 3

        status, _, _ = await api.call("GET", "/v1/subscriptions/hook-1/attempts", key=READ_KEY)
        assert status == 403

        body = (await api.session.get(api.base + "/metrics")).content
        text = (await body.read()).decode()
        assert "fanout_history_lag_seconds 0.0" in text


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/subscriptions/hook-1/attempts", {"outcome": "exploded"}, "query.outcome"),
        ("/v1/subscriptions/hook-1/attempts", {"status": "abc"}, "query.status"),
        ("/v1/subscriptions/hook-1/attempts", {"limit": "0"}, "query.limit"),
        ("/v1/subscriptions/hook-1/attempts", {"since": "2026-01-01T00:00:00"}, "query.since"),
        (
            "/v1/subscriptions/hook-1/attempts",
            {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            "query.until",
        ),
        ("/v1/subscriptions/hook-1/attempts", {"cursor": "bm90LWEtY3Vyc29y"}, "query.cursor"),
        ("/v1/subscriptions/hook-1/stats", {"window": "0h"}, "query.window"),
        ("/v1/subscriptions/hook-1/stats", {"window": "90d"}, "query.window"),
        ("/v1/subscriptions/hook-1/stats", {"window": "1h", "buckets": "501"}, "query.buckets"),
    ],
)
async def test_bad_parameters_are_400_problems_naming_the_field(
    bootstrap: str, unique: str, path: str, params: dict[str, str], field: str
) -> None:
    settings = settings_for(bootstrap, unique)
    create_api_topics(settings)
    produce_records(settings, sample(int(time.time() * 1000)))
    async with running_api(settings) as api:
        await caught_up(api)
        await eventually(api, "/v1/events/evt-a", 200)
        status, headers, problem = await api.call("GET", path, params=params)
        assert status == 400, problem
        assert headers["Content-Type"] == "application/problem+json"
        assert problem["detail"] and field in problem["detail"] + str(problem.get("errors"))
        status, _, problem = await api.call("GET", path.replace("hook-1", "hook-unknown"))
        assert status == 404 and "hook-unknown" in problem["detail"]


async def test_an_api_restart_resumes_from_its_offsets_a_deleted_index_is_rebuilt_and_old_rows_pruned(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = settings_for(bootstrap, unique)
    create_api_topics(settings)
    now = int(time.time() * 1000)
    old = [make(Outcome.DELIVERED, f"old-{i}", "hook-1", now - 2 * RETENTION * 1000 + i) for i in range(20)]
    first = [make(Outcome.DELIVERED, f"first-{i}", "hook-1", now - 10_000 + i) for i in range(60)]
    produce_records(settings, old + first)
    path = tmp_path / "history.sqlite"

    async with running_api(settings, history=path) as api:
        await caught_up(api)
        indexer = api.app[API].history.indexer  # type: ignore[union-attr]
        assert indexer.store.indexed == 80
        assert set(indexer.first_offsets.values()) == {0}, "a new index reads the topic from the beginning"
        await eventually(api, "/v1/events/old-3", 404)  # pruned: older than history.retention
        await eventually(api, "/v1/events/first-3", 200)
        stored = {p: o for (_t, p), o in indexer.store.positions().items()}
        assert sum(stored.values()) == 80

    second = [make(Outcome.DELIVERED, f"second-{i}", "hook-1", now + i) for i in range(30)]
    produce_records(settings, second)
    async with running_api(settings, history=path) as api:
        await caught_up(api)
        indexer = api.app[API].history.indexer  # type: ignore[union-attr]
        assert indexer.store.indexed == 30, "the restart read only the records after its stored offsets"
        read_from = indexer.first_offsets
        assert read_from and all(read_from[p] == stored[p] for p in read_from)
        assert any(offset > 0 for offset in read_from.values())
        await eventually(api, "/v1/events/second-7", 200)
        await eventually(api, "/v1/events/first-7", 200)

    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    async with running_api(settings, history=path) as api:
        await caught_up(api)
        indexer = api.app[API].history.indexer  # type: ignore[union-attr]
        assert indexer.store.indexed == 110 and set(indexer.first_offsets.values()) == {0}
        await eventually(api, "/v1/events/first-59", 200)
        await eventually(api, "/v1/events/second-29", 200)
        await eventually(api, "/v1/events/old-0", 404)


async def test_a_second_api_on_the_same_index_file_fails_at_start_naming_the_setting(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    settings = settings_for(bootstrap, unique)
    create_api_topics(settings)
    path = tmp_path / "history.sqlite"
    async with running_api(settings, history=path):
        with pytest.raises(ConfigError, match=r"kept by another process .*history\.path"):
            async with running_api(settings, history=path):
                pass
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match=r"history\.path .*a-file/history\.sqlite: cannot open the index"):
        async with running_api(settings, history=tmp_path / "a-file" / "history.sqlite"):
            pass
