"""The console's pure parts: sealed sessions and CSRF tokens, the overview table on 1,000 rows, charts
that escape what they print, the redirect after sign-in, and the console settings."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr, ValidationError

from fanout.api.console.charts import health_chart, sparkline
from fanout.api.console.guard import safe_next
from fanout.api.console.history import Bucket, Failure, Health, Stats
from fanout.api.console.overview import PAGE_SIZE, rows, table
from fanout.api.console.session import MAX_REVOKED, Sessions
from fanout.config import ConsoleSettings, Settings

KEY = SecretStr(base64.b64encode(b"k" * 32).decode())


def sessions(**fields: object) -> Sessions:
    return Sessions(ConsoleSettings(session_key=KEY, **fields))  # type: ignore[arg-type]


def test_a_sealed_session_opens_with_the_same_key_only_and_hides_the_credential() -> None:
    box = sessions()
    session = box.new("fo_secret_key_value", now=1000)
    cookie = box.seal(session)
    assert "fo_secret_key_value" not in cookie
    assert "fo_secret" not in base64.urlsafe_b64decode(cookie + "==").decode("latin-1")
    assert box.open(cookie, now=1001) == session
    assert sessions().open(cookie, now=1001) == session  # another replica with the same key
    other = Sessions(ConsoleSettings(session_key=SecretStr(base64.b64encode(b"o" * 32).decode())))
    assert other.open(cookie, now=1001) is None
    assert Sessions(ConsoleSettings()).open(cookie, now=1001) is None  # no key: a random one


def test_an_altered_expired_or_revoked_session_is_refused() -> None:
    box = sessions(session_ttl=600)
    session = box.new("key", now=1000)
    cookie = box.seal(session)
    flipped = cookie[:20] + ("A" if cookie[20] != "A" else "B") + cookie[21:]
    assert box.open(flipped, now=1001) is None
    assert box.open("not base64 !!", now=1001) is None
    assert box.open("", now=1001) is None and box.open(None) is None
    assert box.open(cookie, now=1599) == session
    assert box.open(cookie, now=1600) is None  # session_ttl from sign-in, however much it is used
    box.revoke(session, now=1001)
    assert box.open(cookie, now=1002) is None


def test_revocations_are_bounded_and_forget_expired_sessions() -> None:
    box = sessions(session_ttl=60)
    for n in range(10):
        box.revoke(box.new(f"k{n}", now=float(n)), now=float(n))
    box.revoke(box.new("late", now=1000), now=1000)  # the ten earlier ones expired by now
    assert len(box._revoked) == 1
    assert MAX_REVOKED >= 10_000


def test_csrf_tokens_are_per_session_and_per_login_nonce() -> None:
    box = sessions()
    a, b = box.new("k", now=1), box.new("k", now=1)
    assert box.csrf(a) != box.csrf(b)
    assert box.same(box.csrf(a), sessions().csrf(a))
    assert not box.same(None, box.csrf(a)) and not box.same("", box.csrf(a))
    assert box.login_csrf("nonce-1") != box.login_csrf("nonce-2") != box.csrf(a)


def test_console_settings_name_a_bad_key() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        ConsoleSettings(session_key=SecretStr(base64.b64encode(b"short").decode()))
    with pytest.raises(ValidationError, match="base64"):
        ConsoleSettings(session_key=SecretStr("not base64!"))
    with pytest.raises(ValidationError):
        ConsoleSettings(session_ttl=5)
    settings = Settings(console={"session_ttl": 3600, "enabled": False})  # type: ignore[arg-type]
    assert settings.console.session_ttl == 3600 and not settings.console.enabled
    assert "kkkk" not in repr(ConsoleSettings(session_key=KEY))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/console/subscriptions/crm", "/console/subscriptions/crm"),
        ("/console/?q=a&sort=p99", "/console/?q=a&sort=p99"),
        ("https://evil.example/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("/console//evil.example", "/console/"),
        ("/console/\\evil", "/console/"),
        ("/console/login", "/console/"),
        ("/v1/subscriptions", "/console/"),
        (None, "/console/"),
    ],
)
def test_after_sign_in_only_console_pages(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def _subs(n: int) -> list[dict[str, object]]:
    return [
        {"id": f"sub-{i:04d}", "url": f"https://h{i}.example/hook", "topics": ["t"], "enabled": i % 10 != 0}
        for i in range(n)
    ]


def test_the_overview_sorts_searches_and_pages_1000_subscriptions() -> None:
    health = {
        f"sub-{i:04d}": Health(
            Stats(attempts=i, delivered=i - i // 3, failed=i // 3, p99_ms=float(i % 50) or None,
                  failure_streak=3 if i % 7 == 0 else 0, last_failure=Failure(float(i)) if i % 3 else None)
        )
        for i in range(1, 1000)
    }  # fmt: skip
    all_rows = rows(_subs(1000), health)
    t = table(all_rows, sort="volume", descending=True)
    assert [r.id for r in t.rows[:3]] == ["sub-0999", "sub-0998", "sub-0997"]
    assert len(t.rows) == PAGE_SIZE and t.pages == 10 and t.matched == 1000
    last = table(all_rows, sort="volume", descending=True, page=99)
    assert last.page == 10 and last.rows[-1].id == "sub-0000"  # no history: 0 attempts
    p99 = table(all_rows, sort="p99", page=10).rows
    assert all(r.stats.p99_ms is None for r in p99[-20:])  # rows without the figure go last
    up = table(all_rows, sort="p99", descending=True).rows
    assert up[0].stats.p99_ms == 49.0
    assert table(all_rows, query="SUB-012").matched == 10
    assert table(all_rows, query="h5.example").matched == 1
    assert table(all_rows, query="nothing like it").rows == []
    assert table(all_rows, sort="nonsense").rows[0].id == "sub-0000"
    states = {r.id: r.state for r in all_rows}
    assert (
        states["sub-0010"] == "disabled"
        and states["sub-0007"] == "failing"
        and states["sub-0001"] == "enabled"
    )
    assert t.totals.disabled == 100 and t.totals.attempts == sum(range(1000))


def test_charts_escape_labels_and_draw_one_bar_per_busy_bucket() -> None:
    series = [Bucket(0, 2, 1), Bucket(3600, 0, 0), Bucket(7200, 4, 0)]
    svg = str(sparkline(series))
    assert svg.count("<rect") == 3 and 'role="img"' in svg and "Delivered per interval: 2, 0, 4" in svg
    assert "no attempts" in str(sparkline([Bucket(0)]))
    chart = str(health_chart(series))
    assert "7 in all, 1 failed" in chart and "<script" not in chart and "style=" not in chart
