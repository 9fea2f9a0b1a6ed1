"""The alert rules: ``promtool check rules`` and ``promtool test rules`` when promtool is available
(``scripts/promtool`` builds it once from the Go module proxy into ~/.cache/fanout/promtool), and
always a structural check of the file and the dashboard."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm/fanout/alerts/fanout-rules.yaml"
RULES_TEST = ROOT / "tests/alerts/fanout-rules.test.yaml"
DASHBOARD = ROOT / "helm/fanout/dashboards/fanout.json"
PROMTOOL_VERSION = "v0.316.0"
BUILD_WAIT_SECONDS = 20 * 60
REQUIRED_ALERTS = {
    "FanoutDeadLettersGrowing",
    "FanoutSubscriptionDisabled",
    "FanoutConsumerLagRising",
    "FanoutSubscriptionErrorRate",
}


def promtool() -> Path | None:
    cache = Path(os.environ.get("FANOUT_PROMTOOL_CACHE", Path.home() / ".cache/fanout/promtool"))
    binary = cache / PROMTOOL_VERSION / "promtool"
    return binary if binary.is_file() else None


def balanced(expr: str) -> bool:
    depth = 0
    for char in re.sub(r'"[^"]*"', "", expr):
        depth += {"(": 1, ")": -1, "{": 1, "}": -1, "[": 1, "]": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def test_rules_file_is_a_plain_prometheus_rules_file() -> None:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert balanced(rule["expr"]), rule["alert"]
        assert re.search(r"\bfanout_[a-z_]+", rule["expr"]), rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))


def test_dashboard_queries_the_prometheus_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("throughput", "success rate", "latency", "retry", "dead letter", "lag", "circuit"):
        assert topic in titles
    for panel in panels:
        assert panel["datasource"]["uid"] == "prometheus"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus"
            assert balanced(target["expr"]), target["expr"]


def built_promtool() -> Path | None:
    """The cached promtool, waiting for the build ``scripts/test`` started in the background, if any."""
    building = os.environ.get("FANOUT_PROMTOOL_BUILDING")
    deadline = time.monotonic() + BUILD_WAIT_SECONDS
    while promtool() is None and building and Path(f"/proc/{building}").exists():
        if time.monotonic() > deadline:
            break
        time.sleep(2)  # polling a background build with a deadline
    return promtool()


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    found = built_promtool()
    if found is None:
        reason = "promtool is not built (scripts/promtool --path builds it)"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    binary = str(found)
    check = subprocess.run([binary, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [binary, "test", "rules", str(RULES_TEST)], capture_output=True, text=True, timeout=60
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
