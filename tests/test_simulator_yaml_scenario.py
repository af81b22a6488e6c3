"""A team stages its own fault from a YAML scenario file (simulator/scenario_files.py): what it creates
and patches is there for real kubectl and the official client, a bad file is refused whole with a
message naming the entry, and a reset to the baseline takes it all back."""

from __future__ import annotations

import json

import httpx
import pytest
from kubernetes import client

from cli.main import main as runbooks
from simulator.cluster import ClusterBehaviour
from simulator.scenario_files import ScenarioFileError, stage_scenario
from simulator.server import inject_into, read_kubeconfig, stage_file_into, stage_scenario_at
from simulator.store import RESOURCES, Store
from tests.helpers.waiting import wait_for

ROUTER = """
name: team-x-router-down
description: the team's router is new and llm-d-decode is scaled out
namespace: production
create:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: team-router, labels: {team: x}}
    spec:
      replicas: 1
      selector: {matchLabels: {app: team-router}}
      template:
        metadata: {labels: {app: team-router}}
        spec: {containers: [{name: router, image: "nginx:1.25"}]}
  - kind: ConfigMap
    metadata: {name: team-router-config}
    data: {upstream: llm-d-decode}
patch:
  - kind: Deployment
    name: llm-d-decode
    patch: {spec: {replicas: 3}, metadata: {labels: {patched-by: team-x}}}
  - kind: Deployment
    name: team-router
    type: strategic
    patch: {spec: {template: {spec: {containers: [{name: router, image: "nginx:1.27"}]}}}}
"""

# What a reset keeps (namespaces, ServiceAccounts, RBAC): a file's changes to those must be undone too.
KEPT = """
name: team-x-identity
create:
  - {kind: Namespace, metadata: {name: team-x}}
  - {kind: ServiceAccount, metadata: {name: router-bot, namespace: team-x}}
  - kind: Deployment
    metadata: {name: probe, namespace: team-x}
    spec:
      selector: {matchLabels: {app: probe}}
      template: {metadata: {labels: {app: probe}}, spec: {containers: [{name: probe, image: "busybox:1.36"}]}}
patch:
  - {kind: Namespace, name: production, patch: {metadata: {labels: {team: x}}}}
  - {kind: Deployment, namespace: production, name: llm-d-decode, patch: {spec: {replicas: 4}}}
delete:
  - {kind: Service, namespace: production, name: llm-d-decode}
"""

BAD = {
    "an unknown kind": (
        "name: b\ncreate:\n  - {kind: Deployment, metadata: {name: fine, namespace: production},"
        " spec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}},"
        " spec: {containers: [{name: c, image: i}]}}}}\n"
        "  - {apiVersion: v1, kind: Widget, metadata: {name: w}}\n",
        r"bad\.yaml: create\[1\]: kind 'Widget' in 'v1' is not served by the simulator",
    ),
    "a patch of a missing object": (
        "name: b\npatch:\n  - {kind: Deployment, namespace: production, name: llm-d-decode,"
        " patch: {spec: {replicas: 5}}}\n"
        "  - {kind: Deployment, namespace: production, name: no-such, patch: {spec: {}}}\n",
        r"bad\.yaml: patch\[1\]: Deployment production/no-such does not exist",
    ),
    "an unknown key": (
        "name: b\npatch:\n  - {kind: Deployment, namespace: production, name: llm-d-decode,"
        " patch: {spec: {replicas: 5}}, replicas: 5}\n",
        r"bad\.yaml: patch\[0\]\.replicas: Extra inputs are not permitted",
    ),
    "a missing name": ("description: nameless\n", r"bad\.yaml: name: Field required"),
    "an invalid object": (
        "name: b\ncreate:\n  - {kind: Deployment, metadata: {name: Bad_Name, namespace: production}}\n",
        r"bad\.yaml: create\[0\]: Deployment \"Bad_Name\" is invalid",
    ),
}


def _snapshot(store: Store) -> dict:
    return {plural: store.list(plural) for plural in RESOURCES}


@pytest.fixture(scope="module")
def quiet_cluster():
    """A seeded cluster that nothing ticks, so a refused file can be shown to have written nothing at all."""
    sim = ClusterBehaviour(Store(), time_scale=30.0)
    sim.seed("baseline")
    return sim


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_file_is_refused_whole_and_writes_nothing(quiet_cluster, case):
    document, message = BAD[case]
    before, version = _snapshot(quiet_cluster.store), quiet_cluster.store.resource_version()
    with pytest.raises(ScenarioFileError, match=message):
        stage_scenario(quiet_cluster, document, source="bad.yaml")
    assert quiet_cluster.store.resource_version() == version
    assert _snapshot(quiet_cluster.store) == before
    assert quiet_cluster.kept_changes == []


def test_a_file_is_staged_for_kubectl_and_the_client(simulator, kube_api, kubectl, tmp_path):
    path = tmp_path / "router.yaml"
    path.write_text(ROUTER)
    staged = stage_file_into(simulator.kubeconfig_path, path)
    assert staged == {
        "name": "team-x-router-down",
        "created": ["Deployment production/team-router", "ConfigMap production/team-router-config"],
        "patched": ["Deployment production/llm-d-decode"],
        "deleted": [],
    }

    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    router = apps.read_namespaced_deployment("team-router", "production")
    assert router.spec.template.spec.containers[0].image == "nginx:1.27"  # created, then patched by the file
    assert router.spec.strategy.type == "RollingUpdate"  # the apiserver's defaults, as for kubectl apply
    assert core.read_namespaced_config_map("team-router-config", "production").data == {"upstream": "llm-d-decode"}
    decode = apps.read_namespaced_deployment("llm-d-decode", "production")
    assert decode.spec.replicas == 3 and decode.metadata.labels["patched-by"] == "team-x"

    seen = json.loads(kubectl("get", "deploy", "team-router", "llm-d-decode", "-n", "production", "-o", "json").stdout)
    assert {i["metadata"]["name"]: i["spec"]["replicas"] for i in seen["items"]} == {
        "team-router": 1,
        "llm-d-decode": 3,
    }
    assert (
        "llm-d-decode"
        in kubectl("get", "cm", "team-router-config", "-n", "production", "-o", "jsonpath={.data.upstream}").stdout
    )
    # the controllers treat it as any other Deployment: its pod comes up
    wait_for(
        lambda: (
            "Running"
            in kubectl(
                "get", "pods", "-n", "production", "-l", "app=team-router", "-o", "jsonpath={.items[*].status.phase}"
            ).stdout
        ),
        timeout=30,
        what="the team's router pod to run",
    )

    # staging it again collides with what it made: refused, nothing applied
    with pytest.raises(ValueError, match=r"create\[0\]: Deployment production/team-router already exists"):
        stage_file_into(simulator.kubeconfig_path, path)


def test_the_route_needs_the_admin_token_and_answers_422_naming_the_entry(simulator, kube_api):
    url, token, verify = read_kubeconfig(simulator.kubeconfig_path)
    document, _ = BAD["a patch of a missing object"]
    audit = simulator.audit()
    answer = httpx.post(
        f"{url}/admin/scenario?source=team.yaml",
        content=document,
        verify=verify,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 422
    assert answer.json()["details"]["causes"] == [
        {
            "field": "patch[1]",
            "message": "Deployment production/no-such does not exist (patch needs an "
            "object the cluster has or the file creates)",
        }
    ]
    assert client.AppsV1Api(kube_api).read_namespaced_deployment("llm-d-decode", "production").spec.replicas == 2
    assert simulator.audit() == audit

    assert (
        httpx.post(
            f"{url}/admin/scenario", content="name: x\n", verify=verify, headers={"Authorization": "Bearer wrong"}
        ).status_code
        == 401
    )
    assert (
        httpx.post(
            f"{url}/admin/scenario",
            content="[not, a, mapping]",
            verify=verify,
            headers={"Authorization": f"Bearer {token}"},
        ).status_code
        == 400
    )
    with pytest.raises(ValueError, match=r"refused scenario file team\.yaml: team\.yaml: patch\[1\]"):
        stage_scenario_at(simulator.url, token, document, source="team.yaml")


def test_reset_removes_what_a_file_created_and_undoes_its_patches(simulator, kube_api):
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    production = core.read_namespace("production").metadata
    _, token, _ = read_kubeconfig(simulator.kubeconfig_path)
    stage_scenario_at(simulator.url, token, KEPT, source="kept.yaml")
    assert core.read_namespace("production").metadata.labels["team"] == "x"
    assert core.read_namespaced_service_account("router-bot", "team-x")
    assert apps.read_namespaced_deployment("llm-d-decode", "production").spec.replicas == 4
    assert "llm-d-decode" not in {s.metadata.name for s in core.list_namespaced_service("production").items}

    inject_into(simulator.kubeconfig_path, "baseline")
    assert "team-x" not in {n.metadata.name for n in core.list_namespace().items}
    assert not [a for a in core.list_service_account_for_all_namespaces().items if a.metadata.namespace == "team-x"]
    assert not [d for d in apps.list_deployment_for_all_namespaces().items if d.metadata.namespace == "team-x"]
    restored = core.read_namespace("production").metadata
    assert restored.labels == production.labels and restored.uid == production.uid  # kept, put back as it was
    assert apps.read_namespaced_deployment("llm-d-decode", "production").spec.replicas == 2
    assert core.read_namespaced_service("llm-d-decode", "production")  # the baseline's, seeded again
    assert simulator.behaviour.kept_changes == []

    # the same file stages again on the fresh baseline
    assert stage_scenario_at(simulator.url, token, KEPT, source="kept.yaml")["created"][0] == "Namespace team-x"


def test_runbooks_simulator_inject_file(simulator, kube_api, tmp_path, capsys):
    path, bad = tmp_path / "router.yaml", tmp_path / "bad.yaml"
    path.write_text(ROUTER)
    bad.write_text(BAD["an unknown kind"][0])
    kubeconfig = str(simulator.kubeconfig_path)
    assert runbooks(["simulator", "inject", "--file", str(bad), "--kubeconfig", kubeconfig]) == 2
    assert "create[1]: kind 'Widget' in 'v1' is not served" in capsys.readouterr().err
    assert "fine" not in {
        d.metadata.name for d in client.AppsV1Api(kube_api).list_namespaced_deployment("production").items
    }

    assert runbooks(["simulator", "inject", "--file", str(path), "--kubeconfig", kubeconfig]) == 0
    assert "staged team-x-router-down: created Deployment production/team-router" in capsys.readouterr().out
    assert runbooks(["simulator", "inject", "baseline", "--file", str(path), "--kubeconfig", kubeconfig]) == 2
    assert "not both" in capsys.readouterr().err
