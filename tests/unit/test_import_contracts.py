"""The layering checks of ``make lint`` catch what they are meant to catch.

Both run on a small package tree built here, never on the real one (which may be mid-refactor):
- the import-linter contracts are pyproject.toml's own, renamed onto a fake root package with one
  module per layer; the tree passes as built, and each injected violation breaks the contract named;
- scripts/check_http_clients.py finds aiohttp's client used outside ``<package>.http`` in every form it
  knows, and lets aiohttp's server and the client inside ``http`` be.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
FAKE = "fakefanout"
# Every layer of the target (docs/development.md), each importing only what it may.
LAYERS = {
    "model": [],
    "config": ["model"],
    "pipeline": ["model"],
    "kafka": ["model", "config"],
    "http": ["model", "config"],
    "telemetry": ["model", "config"],
    "control": ["model", "config", "kafka", "telemetry"],
    "history": ["model", "config", "kafka", "telemetry"],
    "runtime": ["pipeline", "kafka", "http", "telemetry", "control", "history"],
    "api": ["runtime", "control", "history", "telemetry"],
    "commands": ["api", "runtime", "control"],
}


def _contracts() -> str:
    """pyproject.toml's [tool.importlinter] section, about FAKE instead of fanout."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = [f'root_package = "{FAKE}"', "include_external_packages = true"]
    for contract in config["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        for key, value in contract.items():
            lines.append(f"{key} = {_toml(value)}")
    return "[tool.importlinter]\n" + "\n".join(lines).replace("fanout.", f"{FAKE}.") + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace('"', '\\"') + '"'


def _tree(root: Path, extra: dict[str, str] | None = None) -> Path:
    package = root / FAKE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text(f"import {FAKE}.commands.main\n")
    for layer, imports in LAYERS.items():
        (package / layer).mkdir()
        (package / layer / "__init__.py").write_text("")
        (package / layer / "main.py").write_text("".join(f"import {FAKE}.{i}.main\n" for i in imports))
    (package / "kafka" / "client.py").write_text("import confluent_kafka\n")
    (package / "http" / "client.py").write_text("import aiohttp\n")
    (package / "api" / "server.py").write_text("from aiohttp import web\n")
    for module, source in (extra or {}).items():
        (package / module).write_text(source)
    config = root / "contracts.toml"
    config.write_text(_contracts())
    return config


def _lint_imports(root: Path, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(config)],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _contract_names() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return [c["name"].replace("fanout.", f"{FAKE}.") for c in config["contracts"]]


def test_the_layered_tree_keeps_every_contract(tmp_path: Path) -> None:
    done = _lint_imports(tmp_path, _tree(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(_contract_names())} kept, 0 broken" in done.stdout


def _broken(stdout: str) -> set[str]:
    return {name for name in _contract_names() if f"{name} BROKEN" in stdout}


LAYERS_CONTRACT = "Layers: each layer imports only the layers below it"


@pytest.mark.parametrize(
    ("module", "source", "contracts"),
    [
        (
            "kafka/bad.py",
            f"import {FAKE}.pipeline.main\n",
            {LAYERS_CONTRACT, "Kafka adapters do no decoding"},
        ),
        ("kafka/bad.py", f"import {FAKE}.http.main\n", {LAYERS_CONTRACT, "Kafka adapters do no decoding"}),
        ("kafka/bad.py", f"import {FAKE}.control.main\n", {LAYERS_CONTRACT}),
        ("telemetry/bad.py", f"import {FAKE}.runtime.main\n", {LAYERS_CONTRACT}),
        ("telemetry/bad.py", f"import {FAKE}.history.main\n", {LAYERS_CONTRACT}),
        ("pipeline/bad.py", f"import {FAKE}.telemetry.main\n", {LAYERS_CONTRACT, "The pipeline depends on"}),
        ("pipeline/bad.py", f"import {FAKE}.config.main\n", {"The pipeline depends on"}),
        ("pipeline/bad.py", "import opentelemetry.trace\n", {"The pipeline depends on"}),
        ("pipeline/bad.py", "import aiohttp\n", {"The pipeline depends on"}),
        ("model/bad.py", f"import {FAKE}.config.main\n", {LAYERS_CONTRACT, "The model imports nothing"}),
        ("commands/bad.py", "from confluent_kafka import KafkaException\n", {"confluent_kafka only in"}),
        ("http/bad.py", "import confluent_kafka.admin\n", {"confluent_kafka only in"}),
    ],
)
def test_a_violation_breaks_its_contract(
    tmp_path: Path, module: str, source: str, contracts: set[str]
) -> None:
    done = _lint_imports(tmp_path, _tree(tmp_path, {module: source}))
    assert done.returncode == 1, done.stdout + done.stderr
    broken = _broken(done.stdout)
    for expected in contracts:
        assert any(name.startswith(expected) for name in broken), (expected, broken, done.stdout)


def test_history_and_control_may_use_telemetry(tmp_path: Path) -> None:
    """Telemetry sits below control and history (issue 14), not beside them."""
    extra = {
        "history/metrics.py": f"import {FAKE}.telemetry.main\n",
        "control/ops.py": f"import {FAKE}.telemetry.main\n",
    }
    done = _lint_imports(tmp_path, _tree(tmp_path, extra))
    assert done.returncode == 0, done.stdout


def _check_http_clients(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "check_http_clients.py"),
            "--root",
            str(root),
            "--package",
            FAKE,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


CLIENT_USES = [
    "from aiohttp import ClientSession\n",
    "from aiohttp import TCPConnector as C\n",
    "from aiohttp import request\n",
    "from aiohttp import client\n",
    "from aiohttp import *\n",
    "from aiohttp.client import ClientSession\n",
    "from aiohttp.connector import TCPConnector\n",
    "import aiohttp.client\n",
    "import aiohttp.connector as conn\n",
    "import aiohttp\n\nasync def f():\n    async with aiohttp.ClientSession() as s:\n        pass\n",
    "import aiohttp as ah\n\nt = ah.ClientTimeout(total=5)\n",
    "import aiohttp.web\n\nr = aiohttp.request('GET', 'http://x')\n",
    "import aiohttp\n\nr = aiohttp.client.request\n",
]


@pytest.mark.parametrize("source", CLIENT_USES)
def test_the_aiohttp_client_outside_http_is_found(tmp_path: Path, source: str) -> None:
    _tree(tmp_path, {"api/jwks.py": source})
    done = _check_http_clients(tmp_path)
    assert done.returncode == 1, done.stdout
    assert f"{FAKE}/api/jwks.py:" in done.stdout


def test_aiohttps_server_and_the_client_inside_http_pass(tmp_path: Path) -> None:
    extra = {
        "api/app.py": "from aiohttp import web\nimport aiohttp.web as w\n",
        "api/resolve.py": "from aiohttp.abc import AbstractResolver\n",
        "http/session.py": "import aiohttp\n\ns = aiohttp.ClientSession\nfrom aiohttp import TCPConnector\n",
        "runtime/errors.py": "import aiohttp\n\nE = aiohttp.ClientError\n",
    }
    _tree(tmp_path, extra)
    done = _check_http_clients(tmp_path)
    assert done.returncode == 0, done.stdout


def test_the_top_of_the_package_holds_only_init_main_and_cli() -> None:
    """Every other module belongs to a layer (a sub-package)."""
    top = sorted(p.name for p in (ROOT / "fanout").glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "cli.py"]
