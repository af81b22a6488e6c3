"""deploy/ and docker-compose.yml as shipped: `kubectl kustomize deploy/` renders, every
object validates against the Kubernetes schemas (kubernetes-validate) and passes a server-side dry run
on the simulated cluster, the Deployments are what a cluster admin expects (probes, non-root,
resources, ServiceAccounts, Secrets referenced), the shadow overlay changes only the mode, the
many-cluster overlays deploy one worker per cluster and the triggers once, and `docker-compose config`
accepts the compose file with the namespace's retention set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers.kube_deploy import DEPLOY, NAMESPACE, ROOT, find, kubectl, render
from settings import load_settings, worker_settings

BASE = render(DEPLOY)
SHADOW = render(DEPLOY / "overlays" / "shadow")
CLUSTERS = {name: render(DEPLOY / "overlays" / f"cluster-{name}") for name in ("east", "west")}
TRIGGERS = render(DEPLOY / "overlays" / "triggers")
DEPLOYMENTS = ("llm-runbooks-worker", "llm-runbooks-triggers")


def config_of(objects: list[dict]) -> tuple[dict, str]:
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap"]
    return configmap, configmap["data"]["runbooks.yaml"]


def test_kustomize_renders_the_base_with_every_object_a_cluster_needs():
    kinds = sorted((o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in BASE)
    assert {k for k, _, _ in kinds} == {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }, kinds
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "llm-runbooks" for o in BASE)
    # the Slack app manifest lives in deploy/ but is Slack's, not Kubernetes'
    assert not any(o.get("kind") in (None, "") or "display_information" in o for o in BASE)


@pytest.mark.parametrize(
    "objects",
    [BASE, SHADOW, *CLUSTERS.values(), TRIGGERS],
    ids=["base", "shadow", *(f"cluster-{n}" for n in CLUSTERS), "triggers"],
)
def test_every_rendered_object_validates_against_the_kubernetes_schemas(objects: list[dict]):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for obj in objects:
        kubernetes_validate.validate(obj, "1.32", strict=True)  # raises with the field and the reason


def test_the_deployments_are_probed_non_root_bounded_and_use_their_own_service_accounts():
    for name in DEPLOYMENTS:
        deployment = find(BASE, "Deployment", name, NAMESPACE)
        pod = deployment["spec"]["template"]["spec"]
        find(BASE, "ServiceAccount", pod["serviceAccountName"], NAMESPACE)
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert find(BASE, "PodDisruptionBudget", name, NAMESPACE)["spec"]["selector"] == deployment["spec"]["selector"]
        (container,) = pod["containers"]
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
        assert container["livenessProbe"] and container["readinessProbe"]
        env = {e["name"]: e for e in container["env"]}
        assert env["RUNBOOKS_CONFIG"]["value"] == "/config/runbooks.yaml"
        # secrets only by reference, never in the rendered objects
        assert all(
            e["valueFrom"]["secretKeyRef"]["name"] == "llm-runbooks-secrets"
            for n, e in env.items()
            if n != "RUNBOOKS_CONFIG"
        )
    triggers = find(BASE, "Deployment", "llm-runbooks-triggers", NAMESPACE)["spec"]["template"]["spec"]
    assert triggers["automountServiceAccountToken"] is False  # they never call the Kubernetes API
    probes = triggers["containers"][0]
    assert (probes["livenessProbe"]["httpGet"]["path"], probes["readinessProbe"]["httpGet"]["path"]) == (
        "/healthz",
        "/readyz",
    )
    service = find(BASE, "Service", "llm-runbooks-triggers", NAMESPACE)
    assert (
        service["spec"]["selector"]
        == find(BASE, "Deployment", "llm-runbooks-triggers")["spec"]["selector"]["matchLabels"]
    )
    assert not any(o["kind"] == "Secret" for o in BASE)


def test_the_shipped_configuration_loads_and_the_shadow_overlay_changes_only_the_mode(tmp_path: Path):
    _, base_text = config_of(BASE)
    _, shadow_text = config_of(SHADOW)
    (tmp_path / "base.yaml").write_text(base_text)
    (tmp_path / "shadow.yaml").write_text(shadow_text)
    base = load_settings(tmp_path / "base.yaml", environ={})
    shadow = load_settings(tmp_path / "shadow.yaml", environ={})
    assert (base.mode, shadow.mode) == ("act", "shadow")
    assert base.model_copy(update={"mode": "shadow"}) == shadow
    assert base.server.host == "0.0.0.0" and base.server.port == 8080

    # every other object is the base's, annotated; the Deployments follow the new ConfigMap
    def strip(objects: list[dict]) -> list[dict]:
        out = []
        for obj in json.loads(json.dumps(objects)):
            obj["metadata"].get("annotations", {}).pop("llm-runbooks/mode", None)
            if not obj["metadata"].get("annotations"):
                obj["metadata"].pop("annotations", None)
            template = obj.get("spec", {}).get("template", {}).get("metadata", {})
            template.get("annotations", {}).pop("llm-runbooks/mode", None)
            if "annotations" in template and not template["annotations"]:
                template.pop("annotations")
            if obj["kind"] != "ConfigMap":
                out.append(obj)
        return out

    shadow_configmap, _ = config_of(SHADOW)
    rendered = json.dumps(strip(SHADOW)).replace(
        shadow_configmap["metadata"]["name"], config_of(BASE)[0]["metadata"]["name"]
    )
    assert json.loads(rendered) == strip(BASE)


def _ids(objects: list[dict]) -> set[tuple[str, str, str]]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects}


def test_each_cluster_gets_its_worker_and_the_triggers_are_deployed_once(tmp_path: Path):
    """An overlay per cluster: the worker, its ServiceAccount and RBAC, told its cluster; the triggers
    overlay: the triggers alone. Together they are the base, nothing lost, nothing added."""
    worker_objects = {i for i in _ids(BASE) if i[0] not in ("Namespace", "ConfigMap") and "triggers" not in i[2]}
    shared = {i for i in _ids(BASE) if i[0] == "Namespace"}
    for name, objects in CLUSTERS.items():
        configmap, text = config_of(objects)
        assert {i for i in _ids(objects) if i[0] != "ConfigMap"} == worker_objects | shared, name
        (container,) = find(objects, "Deployment", "llm-runbooks-worker", NAMESPACE)["spec"]["template"]["spec"][
            "containers"
        ]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["RUNBOOKS_WORKER__CLUSTER"] == name
        (tmp_path / f"{name}.yaml").write_text(text)
        settings = load_settings(tmp_path / f"{name}.yaml", environ={"RUNBOOKS_WORKER__CLUSTER": name})
        assert settings.clusters.serves(name) and worker_settings(settings).task_queue == f"llm-runbooks.{name}"
    triggers = {i for i in _ids(TRIGGERS) if i[0] != "ConfigMap"}
    assert triggers == {i for i in _ids(BASE) if "triggers" in i[2]} | shared
    assert not any(o["kind"].endswith("Role") or o["kind"].endswith("RoleBinding") for o in TRIGGERS)
    # one configuration for all: the same ConfigMap (name and data), the base's plus `clusters:`
    configmaps = [config_of(objects)[0] for objects in [*CLUSTERS.values(), TRIGGERS]]
    assert all(c == configmaps[0] for c in configmaps)
    (tmp_path / "shared.yaml").write_text(configmaps[0]["data"]["runbooks.yaml"])
    (tmp_path / "base.yaml").write_text(config_of(BASE)[1])
    shared_settings = load_settings(tmp_path / "shared.yaml", environ={})
    assert shared_settings.clusters.names() == sorted(CLUSTERS)  # every overlay's cluster is served
    base = load_settings(tmp_path / "base.yaml", environ={})
    assert shared_settings.model_copy(update={"clusters": base.clusters}) == base


def test_server_side_dry_run_on_the_simulated_cluster_accepts_every_object_then_apply_creates_them(
    simulator, tmp_path: Path
):
    home = tmp_path / "home"
    home.mkdir()
    stream = kubectl("kustomize", str(DEPLOY)).stdout
    # as on a real cluster, a dry run in a namespace that does not exist yet is refused: create it first
    kubectl(
        "create",
        "-f",
        "-",
        kubeconfig=simulator.kubeconfig_path,
        home=home,
        stdin=json.dumps(find(BASE, "Namespace", NAMESPACE)),
    )
    dry = kubectl(
        "apply", "--dry-run=server", "-f", "-", kubeconfig=simulator.kubeconfig_path, stdin=stream, home=home
    ).stdout
    assert dry.count("(server dry run)") == len(BASE), dry
    assert simulator.store.get("clusterroles", None, "llm-runbooks-worker") is None, "a dry run stored something"
    kubectl("apply", "-k", str(DEPLOY), kubeconfig=simulator.kubeconfig_path, home=home)
    role = kubectl(
        "get", "clusterrole", "llm-runbooks-worker", "-o", "json", kubeconfig=simulator.kubeconfig_path, home=home
    ).stdout
    assert json.loads(role)["rules"] == find(BASE, "ClusterRole", "llm-runbooks-worker")["rules"]
    again = kubectl("apply", "-k", str(DEPLOY), kubeconfig=simulator.kubeconfig_path, home=home).stdout
    assert "created" not in again and "clusterrole.rbac.authorization.k8s.io/llm-runbooks-worker unchanged" in again, (
        again
    )


def test_docker_compose_config_accepts_the_compose_file_and_sets_the_retention():
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (scripts/test installs Debian's docker-compose)")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if k != "TEMPORAL_RETENTION"}
    done = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    compose = yaml.safe_load(done.stdout)
    assert compose["services"]["temporal"]["environment"]["DEFAULT_NAMESPACE_RETENTION"] == "336h"
    setup = " ".join(compose["services"]["temporal-search-attributes"]["command"])
    assert "namespace update --namespace default --retention 336h" in setup
    assert {"worker", "triggers", "temporal", "postgresql", "temporal-ui"} <= set(compose["services"])
