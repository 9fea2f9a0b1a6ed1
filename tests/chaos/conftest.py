"""Chaos suite fixtures: network namespaces with faults on their links (``netns.py``), a three-broker
cluster of the suite's own that a namespace reaches through an anchor address, and the scenario report
printed at the end of the run.

Network faults need root, iproute2 and a kernel with network namespaces, veth and ifb
(``scripts/chaos-setup`` installs iproute2). Without them the tests that need them skip with the reason,
and fail when ``CI`` is set. The cluster is started with ``scripts/kafka`` on ports of its own
(``FANOUT_TEST_CHAOS_PORT``, default 19400: brokers 19400-19402, controllers 19500-19502, the external
listeners 19600-19602) in ``$FANOUT_KAFKA_STATE/chaos``, and stopped and removed afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chaos import netns
from tests.chaos.scenario import Outcome

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_PORT = int(os.environ.get("FANOUT_TEST_CHAOS_PORT", "19400"))
NODES = 3
OUTCOMES: list[Outcome] = []


@functools.cache
def netns_unavailable() -> str | None:
    """Why network faults cannot be made here (None: they can). Sweeps a crashed run's leftovers first."""
    if os.geteuid() == 0:
        with contextlib.suppress(netns.NetnsError, OSError, subprocess.TimeoutExpired):
            netns.sweep()
    return netns.unavailable()


def require_netns() -> None:
    reason = netns_unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"chaos: {reason}", pytrace=False)
        pytest.skip(f"chaos: {reason}")


@pytest.fixture
def namespace() -> Iterator[netns.Namespace]:
    """A network namespace of this test's own; removed (with whatever still runs in it) afterwards."""
    require_netns()
    ns = netns.Namespace()
    try:
        yield ns
    finally:
        ns.close()


@dataclass(frozen=True)
class ChaosCluster:
    """The suite's three-broker cluster. ``bootstrap`` is on 127.0.0.1 (for the test's own clients);
    ``external`` on the anchor address (for a dispatcher inside a namespace), when namespaces work."""

    port: int
    bootstrap: str
    anchor: str | None
    external: str | None
    env: dict[str, str]

    def kafka(self, *args: str) -> None:
        subprocess.run(
            [str(ROOT / "scripts" / "kafka"), *args, "--port", str(self.port)],
            check=True,
            cwd=ROOT,
            env=self.env,
            timeout=300,
        )


@pytest.fixture(scope="module")
def chaos_cluster() -> Iterator[ChaosCluster]:
    env = dict(os.environ)
    env["FANOUT_KAFKA_STATE"] = str(Path(os.environ.get("FANOUT_KAFKA_STATE", ROOT / ".kafka")) / "chaos")
    anchor = netns.Anchor.create() if netns_unavailable() is None else None
    bootstrap = ",".join(f"127.0.0.1:{CLUSTER_PORT + i}" for i in range(NODES))
    external = None
    if anchor is not None:
        external = ",".join(f"{anchor.address}:{CLUSTER_PORT + 200 + i}" for i in range(NODES))
    cluster = ChaosCluster(CLUSTER_PORT, bootstrap, anchor and anchor.address, external, env)
    try:
        cluster.kafka("stop", "--clean")  # a crashed run's cluster, from this state dir only
        start = ["start", "--nodes", str(NODES)]
        cluster.kafka(*start, *(["--external-host", anchor.address] if anchor else []))
        yield cluster
    finally:
        try:
            cluster.kafka("stop", "--clean")
        finally:
            if anchor is not None:
                anchor.close()


@pytest.fixture
def chaos_report() -> Callable[[Outcome], None]:
    """Record a scenario's outcome: printed now and in the run's summary (before any assertion on it)."""

    def record(outcome: Outcome) -> None:
        OUTCOMES.append(outcome)
        print(f"chaos {outcome.line()}")

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if OUTCOMES:
        terminalreporter.section("chaos scenarios")
        for outcome in OUTCOMES:
            terminalreporter.write_line(outcome.line())
