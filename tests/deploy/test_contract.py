"""Every command and setting the compose stack and the chart use exists in fanout.

For each fanout container (compose services built from the Dockerfile, every container of the rendered
chart): ``fanout <its arguments> --help`` must succeed, which checks the command path and every option
name (click refuses unknown options before it handles ``--help``); every ``FANOUT_*`` name must be a field
of ``fanout.config.Settings`` (pydantic-settings silently ignores unknown sections, so the names are
checked against the model explicitly); every ``OTEL_*`` name must be one the OpenTelemetry SDK defines;
and ``Settings`` must load from the container's environment.
"""

from __future__ import annotations

import base64
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, get_args, get_origin

import opentelemetry.environment_variables
import opentelemetry.sdk.environment_variables
import pytest
from pydantic import BaseModel

from fanout.config import ENV_NESTING, ENV_PREFIX, Settings, load_settings
from fanout.model.errors import ConfigError
from tests.deploy.conftest import CHART, COLD_INSTALL_TIMEOUT, ROOT, DeployCheck

pytestmark = pytest.mark.timeout(COLD_INSTALL_TIMEOUT + 60)

# FANOUT_* names that are not settings: the CLI's --config, and the image's healthcheck override.
NOT_SETTINGS = {"FANOUT_CONFIG", "FANOUT_HEALTHCHECK_URL"}
FROM_SECRET = "value-from-an-existing-secret"


@dataclass
class Container:
    where: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


def _compose_containers(compose: dict[str, Any]) -> list[Container]:
    containers = []
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        command = service.get("command", [])
        args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        env = service.get("environment", {})
        if isinstance(env, list):
            env = dict(item.partition("=")[::2] for item in env)
        containers.append(Container(f"compose service {name}", args, {k: str(v) for k, v in env.items()}))
    return containers


def _chart_containers(docs: list[dict[str, Any]], label: str) -> list[Container]:
    secrets = {
        d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in (d.get("data") or {}).items()}
        for d in docs
        if d["kind"] == "Secret"
    }
    containers = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            env: dict[str, str] = {}
            for var in c.get("env", []):
                if "value" in var:
                    env[var["name"]] = str(var["value"])
                elif ref := var.get("valueFrom", {}).get("secretKeyRef"):
                    value = secrets.get(ref["name"], {}).get(ref["key"])
                    if value is None and ref["name"] in secrets and ref.get("optional"):
                        continue  # the chart's own Secret lacks an optional key: the variable is unset
                    env[var["name"]] = FROM_SECRET if value is None else value
            where = f"chart ({label} values) {doc['kind']}/{doc['metadata']['name']} container {c['name']}"
            containers.append(
                Container(where, [str(a) for a in c.get("command", []) + c.get("args", [])], env)
            )
    return containers


@cache
def _help(args: tuple[str, ...]) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "fanout", *args, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-1] if proc.returncode else ""


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_mapping(annotation: Any) -> bool:
    return (
        annotation is dict
        or get_origin(annotation) is dict
        or any(_is_mapping(a) for a in get_args(annotation))
    )


def setting_problem(name: str) -> str | None:
    """Why FANOUT_<A>__<B>... does not name a field of Settings, or None."""
    if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
        return None
    parts = name.removeprefix(ENV_PREFIX).split(ENV_NESTING)
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        fields = {field_name.upper(): info.annotation for field_name, info in model.model_fields.items()}
        dotted = ".".join(parts[: i + 1]).lower()
        if part not in fields:
            return f"{name}: fanout has no setting {dotted}"
        annotation = fields[part]
        if _is_model(annotation):
            model = annotation
        elif i < len(parts) - 1:
            return None if _is_mapping(annotation) else f"{name}: {dotted} has no fields"
    return None


@cache
def otel_names() -> frozenset[str]:
    modules = (opentelemetry.sdk.environment_variables, opentelemetry.environment_variables)
    return frozenset(
        v for m in modules for v in vars(m).values() if isinstance(v, str) and v.startswith("OTEL_")
    )


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
            del os.environ[name]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def command_problems(containers: list[Container]) -> list[str]:
    problems = []
    for c in containers:
        code, message = _help(tuple(c.args))
        if code:
            problems.append(f"{c.where}: `fanout {shlex.join(c.args)} --help` failed: {message}")
    return problems


def name_problems(containers: list[Container]) -> list[str]:
    problems = []
    for c in containers:
        for name in c.env:
            if problem := setting_problem(name):
                problems.append(f"{c.where}: {problem}")
            elif name.startswith("OTEL_") and name not in otel_names():
                problems.append(f"{c.where}: {name} is not an OpenTelemetry SDK variable")
    return problems


def load_problems(containers: list[Container]) -> list[str]:
    problems = []
    for c in containers:
        with _environment(
            {k: v for k, v in c.env.items() if k.startswith(ENV_PREFIX) and k not in NOT_SETTINGS}
        ):
            try:
                load_settings()
            except ConfigError as exc:
                problems.append(f"{c.where}: {exc}".replace("\n", f"\n{c.where}: "))
    return problems


def _report(problems: list[str]) -> str:
    return "\n" + "\n".join(problems)


# -- compose


def test_compose_commands_exist(compose: dict[str, Any]) -> None:
    containers = _compose_containers(compose)
    assert {c.where for c in containers} >= {
        f"compose service {s}" for s in ("topics-init", "subscriptions-init", "dispatcher", "api", "receiver")
    }
    problems = command_problems(containers)
    assert not problems, _report(problems)


def test_compose_setting_names_exist(compose: dict[str, Any]) -> None:
    problems = name_problems(_compose_containers(compose))
    assert not problems, _report(problems)


def test_compose_settings_load(compose: dict[str, Any]) -> None:
    problems = load_problems(_compose_containers(compose))
    assert not problems, _report(problems)


def test_compose_dispatcher_outlives_its_drain_deadline(compose: dict[str, Any]) -> None:
    dispatcher = compose["services"]["dispatcher"]
    drain = float(dispatcher["environment"].get("FANOUT_DISPATCHER__DRAIN_TIMEOUT", 30))
    grace = dispatcher.get("stop_grace_period", "10s")
    assert grace.endswith("s") and float(grace[:-1]) > drain, f"stop_grace_period {grace} <= drain {drain}s"
    assert dispatcher["deploy"]["replicas"] == 2


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    """Every file the stack mounts from this repository, except what issue 6 adds to helm/fanout/."""
    missing = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            ours = source.startswith(".") and not source.startswith("../helm/fanout/")
            if ours and not (ROOT / "compose" / source).resolve().exists():
                missing.append(f"{name}: {source}")
    assert not missing


# -- the rendered chart

LABELS = ("default", "all-on", "alternatives")


@pytest.mark.parametrize("label", LABELS)
def test_chart_commands_exist(deploy_check: DeployCheck, label: str) -> None:
    problems = command_problems(_chart_containers(deploy_check.rendering(label), label))
    assert not problems, _report(problems)


@pytest.mark.parametrize("label", LABELS)
def test_chart_setting_names_exist(deploy_check: DeployCheck, label: str) -> None:
    problems = name_problems(_chart_containers(deploy_check.rendering(label), label))
    assert not problems, _report(problems)


@pytest.mark.parametrize("label", LABELS)
def test_chart_settings_load(deploy_check: DeployCheck, label: str) -> None:
    problems = load_problems(_chart_containers(deploy_check.rendering(label), label))
    assert not problems, _report(problems)


@pytest.mark.parametrize("label", LABELS)
def test_chart_dispatcher_outlives_its_drain_deadline(deploy_check: DeployCheck, label: str) -> None:
    for doc in deploy_check.rendering(label):
        if doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("-dispatcher"):
            pod = doc["spec"]["template"]["spec"]
            env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
            drain = float(env["FANOUT_DISPATCHER__DRAIN_TIMEOUT"])
            assert pod["terminationGracePeriodSeconds"] > drain
            return
    pytest.fail("no dispatcher Deployment rendered")


@pytest.mark.parametrize("label", LABELS)
def test_chart_probes_use_the_ports_fanout_listens_on(deploy_check: DeployCheck, label: str) -> None:
    for doc in deploy_check.rendering(label):
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        setting = "FANOUT_API__PORT" if container["args"][0] == "api" else "FANOUT_DISPATCHER__HTTP_PORT"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == int(env[setting])
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] == "http"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("label", LABELS)
def test_chart_api_replays_to_the_dispatchers_group(deploy_check: DeployCheck, label: str) -> None:
    """Replays go to the retry tier addressed to the API's dispatcher.group_id: it must be the
    dispatchers' group, or the dispatchers skip them (issue 13, defect 8)."""
    groups = {}
    for doc in deploy_check.rendering(label):
        if doc["kind"] in ("Deployment", "StatefulSet"):
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            env = {e["name"]: e.get("value") for e in container["env"]}
            groups[container["args"][0]] = env.get("FANOUT_DISPATCHER__GROUP_ID")
    assert "run" in groups
    if "api" in groups:
        assert groups["api"] == groups["run"]


def test_routes_in_the_all_on_values_are_valid(deploy_check: DeployCheck, tmp_path: Any) -> None:
    """The subscriptions ConfigMap holds a routes file that `fanout subscriptions apply` accepts."""
    from fanout.config import DeliverySettings
    from fanout.control.routes import load_routes

    (configmap,) = [
        d
        for d in deploy_check.rendering("all-on")
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-routes")
    ]
    routes = tmp_path / "routes.yaml"
    routes.write_text(configmap["data"]["routes.yaml"])
    assert [s.id for s in load_routes(routes, DeliverySettings())] == ["crm-users"]


# -- what issue 6 (observability) puts into the chart


def test_dashboard_and_alert_rules_live_in_the_chart(
    deploy_check: DeployCheck, compose: dict[str, Any]
) -> None:
    """One copy of each, in helm/fanout/, rendered by the chart and mounted by compose."""
    missing = [p for p in ("dashboards/fanout.json", "alerts/fanout-rules.yaml") if not (CHART / p).is_file()]
    assert not missing, f"helm/fanout/ lacks {missing} (issue 6 adds them)"
    kinds = {(d["kind"], d["metadata"]["name"]) for d in deploy_check.rendering("all-on")}
    assert ("PrometheusRule", "fanout") in kinds
    assert ("ConfigMap", "fanout-dashboards") in kinds
    mounts = [v for s in compose["services"].values() for v in s.get("volumes", [])]
    assert any(v.startswith("../helm/fanout/alerts:") for v in mounts)
    assert any(v.startswith("../helm/fanout/dashboards:") for v in mounts)


# -- the checker itself


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("FANOUT_KAFKA__BOOTSTRAP_SERVERS", None),
        ("FANOUT_KAFKA__EXTRA", None),
        ("FANOUT_KAFKA__EXTRA__SOCKET.KEEPALIVE.ENABLE", None),  # a key inside a dict field
        ("FANOUT_DELIVERY", None),  # a whole section as JSON
        ("FANOUT_CONFIG", None),
        ("PATH", None),
        ("FANOUT_DISPATCHER__BOGUS", "fanout has no setting dispatcher.bogus"),
        ("FANOUT_BOGUS__PORT", "fanout has no setting bogus"),
        ("FANOUT_BOGUS", "fanout has no setting bogus"),
        ("FANOUT_KAFKA__BOOTSTRAP_SERVERS__HOST", "kafka.bootstrap_servers has no fields"),
    ],
)
def test_setting_problem(name: str, expected: str | None) -> None:
    problem = setting_problem(name)
    assert problem == (None if expected is None else f"{name}: {expected}")


def test_help_refuses_unknown_commands_and_options() -> None:
    assert _help(("topics", "create", "events"))[0] == 0
    assert _help(("topics", "create", "--no-such-option"))[0] == 2
    assert _help(("no-such-command",))[0] == 2


def _api_workload(deploy_check: DeployCheck, label: str) -> dict[str, Any]:
    (doc,) = [
        d
        for d in deploy_check.rendering(label)
        if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"].endswith("-api")
    ]
    return doc


@pytest.mark.parametrize(("label", "persistent"), [("default", False), ("all-on", True)])
def test_chart_keeps_the_api_history_index_on_its_own_volume(
    deploy_check: DeployCheck, label: str, persistent: bool
) -> None:
    """history.path is on a volume of its own (the root file system is read-only): an emptyDir by
    default; with api.history.persistence a claim per replica, which only a StatefulSet gives (a
    Deployment's replicas would share one claim, and one index file belongs to one process)."""
    doc = _api_workload(deploy_check, label)
    pod = doc["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    index = Path(env["FANOUT_HISTORY__PATH"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert Path(mounts["history"]) == index.parent
    volumes = {v["name"]: v for v in pod["volumes"]}
    if persistent:
        assert doc["kind"] == "StatefulSet" and doc["spec"]["serviceName"].endswith("-api")
        assert "history" not in volumes
        (claim,) = doc["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "history"
        assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
        assert claim["spec"]["storageClassName"] == "standard"
    else:
        assert doc["kind"] == "Deployment"
        assert "emptyDir" in volumes["history"]
