"""Pinned tools and offline schemas for validating the Helm chart and the compose stack.

Everything lands in a cache outside the clone, ``$FANOUT_TOOLS_CACHE`` (default
``~/.cache/fanout/tools``), one directory per pinned item, written atomically. A second run finds
them all and downloads nothing.

- helm: ``go install helm.sh/helm/v3/cmd/helm@<v>`` through the Go module proxy -> ``helm-<v>/``
- kubeconform: ``go install github.com/yannh/kubeconform/cmd/kubeconform@<v>`` -> ``kubeconform-<v>/``
- Kubernetes JSON schemas: the PyPI wheel ``kubernetes-validate`` (strict schemas per Kubernetes
  minor), made resolvable by kubeconform -> ``k8s-schemas-<v>-<kubernetes versions>-<conversion>/``
- CRD schemas (ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication): the CRD YAML in
  the Go modules of prometheus-operator and KEDA, converted to strict JSON schemas -> ``crd-schemas-.../``
- the Compose specification schema: ``schema/compose-spec.json`` in the Go module compose-go
  -> ``compose-spec-<v>/``

``python scripts/deploy_tools.py`` installs what is missing and prints the paths as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

HELM_VERSION = "v3.22.0"
KUBECONFORM_VERSION = "v0.8.0"
KUBERNETES_VALIDATE_VERSION = "1.37.0"
# Validate against the oldest Kubernetes minor the chart supports and the newest one the schemas have.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# Bump when the conversion below changes, so that caches made by an older conversion are not reused.
CONVERSION = "c2"
PROMETHEUS_OPERATOR = ("github.com/prometheus-operator/prometheus-operator", "v0.85.0")
KEDA = ("github.com/kedacore/keda/v2", "v2.21.0")
COMPOSE_GO = ("github.com/compose-spec/compose-go/v2", "v2.16.2")
# (module, CRD file inside the module): the custom kinds the chart can render.
CRD_FILES = (
    (PROMETHEUS_OPERATOR, "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"),
    (PROMETHEUS_OPERATOR, "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"),
    (KEDA, "config/crd/bases/keda.sh_scaledobjects.yaml"),
    (KEDA, "config/crd/bases/keda.sh_triggerauthentications.yaml"),
)


def cache_root() -> Path:
    return Path(os.environ.get("FANOUT_TOOLS_CACHE", Path.home() / ".cache" / "fanout" / "tools"))


def log(message: str) -> None:
    print(f"deploy-tools: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubeconform: Path
    k8s_schemas: dict[str, Path]  # Kubernetes version -> directory of <kind>-<group>-<version>.json
    crd_schemas: Path
    compose_schema: Path

    def as_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


@contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A temporary sibling of ``final`` that becomes ``final`` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        (tmp / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _cached(directory: Path, build: Callable[[Path], None], what: str) -> Path:
    if (directory / ".complete").is_file():
        return directory
    log(f"installing {what} into {directory}")
    started = time.monotonic()
    with _staging(directory) as tmp:
        build(tmp)
    log(f"installed {what} in {time.monotonic() - started:.1f}s")
    return directory


def _go_env() -> dict[str, str]:
    if shutil.which("go") is None:
        raise SystemExit("deploy-tools: the go command is needed (apt-get install golang, or go.dev)")
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = "-mod=mod"
    return env


def _go_install(package: str, version: str, target: Path) -> None:
    env = _go_env() | {"GOBIN": str(target)}
    subprocess.run(["go", "install", "-trimpath", f"{package}@{version}"], env=env, check=True)


def _go_module_dir(module: str, version: str) -> Path:
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        env=_go_env(),
        check=True,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    info = json.loads(out.stdout)
    if "Error" in info:
        raise SystemExit(f"deploy-tools: go mod download {module}@{version}: {info['Error']}")
    return Path(info["Dir"])


def _k8s_schemas(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"),
                *("-d", tmp, f"kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
            ],
            check=True,
        )
        (wheel,) = Path(tmp).glob("kubernetes_validate-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for version in KUBERNETES_VERSIONS:
                prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
                out = target / version
                out.mkdir()
                names = [n for n in archive.namelist() if n.startswith(prefix) and n.endswith(".json")]
                if not names:
                    raise SystemExit(f"deploy-tools: no schemas for Kubernetes {version} in {wheel.name}")
                for name in names:
                    # Each schema has an https://kubernetes.io/api/... "$id" and refers to the shared
                    # definitions as "/api/_definitions.json", resolved against that id. Drop the id and
                    # make the reference relative, so kubeconform resolves it next to the schema file.
                    schema = json.loads(archive.read(name))
                    schema.pop("$id", None)
                    text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
                    (out / name.removeprefix(prefix)).write_text(text)


def _strict(node: Any) -> Any:
    """OpenAPI v3 (CRD) schema -> JSON schema that refuses unknown fields, as kubeconform -strict expects."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _crd_schemas(target: Path) -> None:
    for (module, version), path in CRD_FILES:
        crd = yaml.safe_load((_go_module_dir(module, version) / path).read_text())
        kind = crd["spec"]["names"]["kind"].lower()
        group = crd["spec"]["group"].split(".")[0]
        for served in crd["spec"]["versions"]:
            schema = _strict(served["schema"]["openAPIV3Schema"])
            schema["$schema"] = "http://json-schema.org/draft-07/schema#"
            schema["x-source"] = f"{module}@{version}/{path}"
            (target / f"{kind}-{group}-{served['name']}.json").write_text(json.dumps(schema, indent=1))


def _compose_schema(target: Path) -> None:
    module, version = COMPOSE_GO
    shutil.copyfile(
        _go_module_dir(module, version) / "schema" / "compose-spec.json", target / "compose-spec.json"
    )


def ensure() -> Tools:
    root = cache_root()
    helm_dir = _cached(
        root / f"helm-{HELM_VERSION}",
        lambda d: _go_install("helm.sh/helm/v3/cmd/helm", HELM_VERSION, d),
        f"helm {HELM_VERSION}",
    )
    kubeconform_dir = _cached(
        root / f"kubeconform-{KUBECONFORM_VERSION}",
        lambda d: _go_install("github.com/yannh/kubeconform/cmd/kubeconform", KUBECONFORM_VERSION, d),
        f"kubeconform {KUBECONFORM_VERSION}",
    )
    k8s_dir = _cached(
        root / f"k8s-schemas-{KUBERNETES_VALIDATE_VERSION}-{'-'.join(KUBERNETES_VERSIONS)}-{CONVERSION}",
        _k8s_schemas,
        f"Kubernetes {', '.join(KUBERNETES_VERSIONS)} schemas "
        f"(kubernetes-validate {KUBERNETES_VALIDATE_VERSION})",
    )
    crd_dir = _cached(
        root / f"crd-schemas-prometheus-operator-{PROMETHEUS_OPERATOR[1]}-keda-{KEDA[1]}-{CONVERSION}",
        _crd_schemas,
        "CRD schemas (ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication)",
    )
    compose_dir = _cached(
        root / f"compose-spec-{COMPOSE_GO[1]}",
        _compose_schema,
        f"compose-spec schema (compose-go {COMPOSE_GO[1]})",
    )
    return Tools(
        helm=helm_dir / "helm",
        kubeconform=kubeconform_dir / "kubeconform",
        k8s_schemas={v: k8s_dir / v for v in KUBERNETES_VERSIONS},
        crd_schemas=crd_dir,
        compose_schema=compose_dir / "compose-spec.json",
    )


if __name__ == "__main__":
    print(json.dumps(ensure().as_json(), indent=2))
