"""deploy/components/temporal-mtls and temporal-api-key as an overlay uses them: rendered with the base by
kubectl kustomize, valid against the Kubernetes schemas, each Deployment gets the Secret's files (or key)
and the variables that point the configuration at them, and the shipped configuration then loads with
mTLS (or the API key) on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from settings import load_settings
from tests.helpers.kube_deploy import DEPLOY, NAMESPACE, find, render

DEPLOYMENTS = ("llm-runbooks-worker", "llm-runbooks-triggers")
MOUNT = "/etc/llm-runbooks/temporal"


def overlay(tmp_path: Path, *components: str) -> list[dict]:
    """An overlay of the base with `components`, as a team writes one (kustomize wants relative paths)."""
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay" / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../deploy/base"],
                "components": [f"../deploy/components/{c}" for c in components],
            }
        )
    )
    return render(tmp_path / "overlay")


def container_of(objects: list[dict], name: str) -> tuple[dict, dict]:
    pod = find(objects, "Deployment", name, NAMESPACE)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def loaded(objects: list[dict], env: dict[str, str], tmp_path: Path):
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"]
    path = tmp_path / "runbooks.yaml"
    path.write_text(configmap["data"]["runbooks.yaml"])
    return load_settings(path, environ=env | {"TEMPORAL_CONFIG_FILE": str(tmp_path / "none.toml")})


def test_the_mtls_component_mounts_the_certificate_secret_and_points_the_configuration_at_it(tmp_path: Path):
    objects = overlay(tmp_path, "temporal-mtls")
    validate = pytest.importorskip("kubernetes_validate").validate
    for name in DEPLOYMENTS:
        pod, container = container_of(objects, name)
        validate(find(objects, "Deployment", name, NAMESPACE), "1.32", strict=True)
        (volume,) = [v for v in pod["volumes"] if v["name"] == "temporal-tls"]
        assert volume["secret"]["secretName"] == "llm-runbooks-temporal-tls"
        assert {"name": "temporal-tls", "mountPath": MOUNT, "readOnly": True} in container["volumeMounts"]
        env = {e["name"]: e.get("value") for e in container["env"] if "value" in e}
        temporal = loaded(objects, env, tmp_path).temporal
        # the keys a kubernetes.io/tls Secret (kubectl create secret tls, cert-manager) holds
        assert (temporal.client_cert_file, temporal.client_key_file) == (Path(MOUNT, "tls.crt"), Path(MOUNT, "tls.key"))
        assert temporal.describe_tls() == "mTLS"


def test_the_api_key_component_takes_the_key_from_the_secret_never_the_config_map(tmp_path: Path):
    objects = overlay(tmp_path, "temporal-api-key")
    for name in DEPLOYMENTS:
        _, container = container_of(objects, name)
        (key,) = [e for e in container["env"] if e["name"] == "RUNBOOKS_TEMPORAL__API_KEY"]
        assert key["valueFrom"]["secretKeyRef"] == {"name": "llm-runbooks-secrets", "key": "temporal-api-key"}
    temporal = loaded(objects, {"RUNBOOKS_TEMPORAL__API_KEY": "from-the-secret"}, tmp_path).temporal
    assert temporal.tls_enabled and temporal.describe_tls() == "TLS + API key"
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert "api_key" not in configmap["data"]["runbooks.yaml"]
