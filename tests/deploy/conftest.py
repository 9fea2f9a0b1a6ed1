"""Deployment files: the chart rendered and validated once per session by ``scripts/deploy-check``.

The script installs its pinned tools (helm, kubeconform, offline schemas) into
``$FANOUT_TOOLS_CACHE`` on first use; later runs reuse them and download nothing.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "fanout"
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# The cold run builds helm from source through the Go module proxy (about two minutes on two cores).
COLD_INSTALL_TIMEOUT = 1200


@dataclass(frozen=True)
class DeployCheck:
    returncode: int
    output: str
    result: dict[str, Any]

    def rendering(self, label: str) -> list[dict[str, Any]]:
        """The chart rendered with ``label`` values ("default" or "all-on") for the newest Kubernetes."""
        key = max((k for k in self.result["renderings"] if k.startswith(f"{label}-")), default=None)
        if key is None:
            pytest.fail(f"deploy-check rendered nothing for {label} values:\n{self.output}", pytrace=False)
        text = Path(self.result["renderings"][key]).read_text()
        return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session")
def deploy_check(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployCheck]:
    out = tmp_path_factory.mktemp("deploy-check")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "deploy-check"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=COLD_INSTALL_TIMEOUT,
    )
    result_file = out / "result.json"
    result = (
        json.loads(result_file.read_text()) if result_file.is_file() else {"renderings": {}, "checks": []}
    )
    yield DeployCheck(proc.returncode, proc.stdout + proc.stderr, result)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document
