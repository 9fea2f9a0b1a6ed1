"""The chart and the compose file pass the static validation of scripts/deploy-check."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import COLD_INSTALL_TIMEOUT, DeployCheck

pytestmark = pytest.mark.timeout(COLD_INSTALL_TIMEOUT + 60)


def test_deploy_check_passes(deploy_check: DeployCheck) -> None:
    failed = [c for c in deploy_check.result["checks"] if not c["ok"]]
    details = "\n\n".join(f"{c['name']}:\n{c['output']}" for c in failed)
    assert deploy_check.returncode == 0 and not failed, f"{details}\n\n{deploy_check.output}"


def test_every_rendering_validated(deploy_check: DeployCheck) -> None:
    """Every values file, for every Kubernetes version, was rendered and validated strictly."""
    names = {c["name"] for c in deploy_check.result["checks"]}
    renderings = deploy_check.result["renderings"]
    assert {k.rsplit("-", 1)[0] for k in renderings} == {"default", "all-on", "alternatives"}
    for k8s in {key.rsplit("-", 1)[1] for key in renderings}:
        assert f"kubeconform -strict (Kubernetes {k8s}: default, all-on, alternatives)" in names
    assert "compose/docker-compose.yml against the Compose specification schema" in names


def test_all_on_values_turn_everything_on(deploy_check: DeployCheck) -> None:
    kinds = {doc["kind"] for doc in deploy_check.rendering("all-on")}
    expected = {
        "Deployment", "Service", "Ingress", "PodDisruptionBudget", "Job", "Secret", "ConfigMap",
        "ServiceAccount", "ScaledObject", "TriggerAuthentication", "ServiceMonitor",
    }  # fmt: skip
    assert expected <= kinds, f"missing: {sorted(expected - kinds)}"


def test_alternatives_take_the_other_branches(deploy_check: DeployCheck) -> None:
    docs = deploy_check.rendering("alternatives")
    kinds = {doc["kind"] for doc in docs}
    assert "HorizontalPodAutoscaler" in kinds
    assert not kinds & {"Secret", "ScaledObject", "Ingress", "PodDisruptionBudget"}
    assert not any(d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-api") for d in docs)
