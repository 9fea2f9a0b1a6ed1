"""The Dockerfile and every image reference: pinned versions, no ``latest``, a non-root user, a healthcheck
on the probe endpoints. No Docker engine here: these checks read the files."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

import fanout
from tests.deploy.conftest import CHART, COLD_INSTALL_TIMEOUT, COMPOSE_FILE, DOCKERFILE, ROOT, DeployCheck

# A tag that names a release: it contains a version number with at least major.minor.
PINNED_TAG = re.compile(r"^v?\d+\.\d+(\.\d+)?([.-][\w.-]+)?$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, FROM first."""
    result: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def arg_defaults() -> dict[str, str]:
    defaults = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
    return defaults


def image_problem(reference: str) -> str | None:
    """Why an image reference is not pinned, or None."""
    if DIGEST.search(reference):
        return None
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        return f"{reference}: no tag"
    if tag == "latest":
        return f"{reference}: 'latest'"
    if not PINNED_TAG.match(tag):
        return f"{reference}: tag {tag!r} is not a version"
    return None


def test_multi_stage_with_a_pinned_slim_python_base() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "expected a build stage and a runtime stage"
    defaults = arg_defaults()
    names = set()
    for stage in all_stages:
        source = stage[0][1].split()[0]
        source = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults.get(m.group(1) or m.group(2), "?"), source)
        if source in names:  # FROM <earlier stage>
            continue
        assert image_problem(source) is None, image_problem(source)
        assert re.match(r"^python:3\.11\.\d+-slim", source), f"{source}: expected python:3.11.<patch>-slim..."
        if " AS " in stage[0][1].upper():
            names.add(stage[0][1].split()[-1])


def test_runtime_stage_runs_fanout_as_non_root_without_build_tools() -> None:
    runtime = stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]} is root"
    assert user.isdigit(), "use a numeric USER so that Kubernetes runAsNonRoot can verify it"
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    for tool in ("gcc", "build-essential", "make ", "g++", "apt-get install", "pip install"):
        assert tool not in runs, f"the runtime stage installs {tool.strip()}"
    assert any(k == "COPY" and "--from=" in rest for k, rest in runtime), (
        "runtime should copy from the build stage"
    )
    assert ("ENTRYPOINT", '["fanout"]') in runtime


def test_healthcheck_uses_the_probe_endpoints() -> None:
    runtime = stages()[-1]
    (check,) = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert "fanout-healthcheck" in check
    script = (ROOT / "docker" / "healthcheck.py").read_text()
    assert "/healthz" in script
    assert "FANOUT_DISPATCHER__HTTP_PORT" in script and "FANOUT_API__PORT" in script


def test_dockerignore_admits_exactly_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in rest:
            copied.update(Path(p).parts[0] for p in rest.split()[:-1])
    assert copied <= admitted, f".dockerignore excludes {sorted(copied - admitted)}"
    assert "*" in ignore, ".dockerignore should exclude everything not listed (.venv, .kafka, .git...)"


class _Probe(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[tuple[HTTPServer, type[_Probe]]]:
    handler = type("Probe", (_Probe,), {})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def _healthcheck(env: dict[str, str]) -> int:
    script = ROOT / "docker" / "healthcheck.py"
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=20).returncode


def test_healthcheck_script_passes_on_200_and_fails_otherwise(
    probe_server: tuple[HTTPServer, type[_Probe]], unused_tcp_port: int
) -> None:
    server, handler = probe_server
    port = str(server.server_address[1])
    closed = str(unused_tcp_port)
    assert _healthcheck({"FANOUT_DISPATCHER__HTTP_PORT": port, "FANOUT_API__PORT": closed}) == 0
    assert _healthcheck({"FANOUT_DISPATCHER__HTTP_PORT": closed, "FANOUT_API__PORT": port}) == 0
    handler.status = 503
    assert _healthcheck({"FANOUT_DISPATCHER__HTTP_PORT": port, "FANOUT_API__PORT": closed}) == 1
    assert _healthcheck({"FANOUT_DISPATCHER__HTTP_PORT": closed, "FANOUT_API__PORT": closed}) == 1


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_no_latest_anywhere_in_the_dockerfile() -> None:
    assert not re.search(r":latest\b", DOCKERFILE.read_text())


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    problems = []
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image, f"service {name} has no image"
        if "build" in service:
            assert image.rpartition(":")[2] not in ("", "latest"), f"{name}: built image needs a tag"
            continue
        if problem := image_problem(image):
            problems.append(f"{name}: {problem}")
    assert not problems
    assert "latest" not in re.findall(r"image:\s*\S+:(\w+)", COMPOSE_FILE.read_text())


def test_values_pin_the_image() -> None:
    for values_file in [CHART / "values.yaml", *sorted((CHART / "ci").glob("*.yaml"))]:
        values = yaml.safe_load(values_file.read_text()) or {}
        tag = values.get("image", {}).get("tag", "")
        assert tag != "latest", f"{values_file.name}: image.tag latest"
        assert not tag or PINNED_TAG.match(tag), f"{values_file.name}: image.tag {tag!r} is not a version"


def test_chart_app_version_is_fanouts_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == fanout.__version__


@pytest.mark.timeout(COLD_INSTALL_TIMEOUT + 60)
def test_rendered_images_are_pinned(deploy_check: DeployCheck) -> None:
    problems = []
    for label in ("default", "all-on", "alternatives"):
        for doc in deploy_check.rendering(label):
            spec = doc.get("spec", {})
            pod = spec.get("template", {}).get("spec", {}) if doc["kind"] in ("Deployment", "Job") else {}
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                if problem := image_problem(container["image"]):
                    problems.append(f"{label} {doc['kind']}/{doc['metadata']['name']}: {problem}")
    assert not problems
