"""`runbooks simulator inject baseline` puts the simulated cluster back to a fresh baseline: what one
drill broke, created or left in events is gone before the next one."""

from __future__ import annotations

import pytest
from kubernetes import client

from simulator.scenarios import MISSING_IMAGE, causes, scenario_name
from simulator.server import inject_into
from tests.helpers.waiting import wait_for

LLMD = ("inference.llm-d.io", "v1alpha1", "llmdeployments")


def llmds(kube_api: client.ApiClient) -> dict[str, str]:
    items = client.CustomObjectsApi(kube_api).list_cluster_custom_object(*LLMD)["items"]
    return {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in items}


def mixtral_events(kube_api: client.ApiClient) -> list[str]:
    return [
        e.reason
        for e in client.CoreV1Api(kube_api).list_namespaced_event("production").items
        if e.involved_object.name.startswith("mixtral-8x7b")
    ]


def test_inject_baseline_resets_what_a_drill_left(simulator, kube_api):
    core = client.CoreV1Api(kube_api)
    fresh_pods = sorted(p.metadata.name for p in core.list_pod_for_all_namespaces().items)
    fresh_models = llmds(kube_api)
    namespace_uid = core.read_namespace("production").metadata.uid

    inject_into(simulator.kubeconfig_path, "model-deploy-failure:image-pull")
    wait_for(lambda: any(r in ("Failed", "BackOff") for r in mixtral_events(kube_api)), "mixtral-8x7b failing to pull")
    client.AppsV1Api(kube_api).patch_namespaced_deployment_scale(
        "llm-d-decode", "production", {"spec": {"replicas": 5}}
    )
    assert "mixtral-8x7b" in llmds(kube_api)

    inject_into(simulator.kubeconfig_path, "baseline")
    assert llmds(kube_api) == fresh_models  # the drill's model is gone, the others are as seeded
    assert mixtral_events(kube_api) == []  # no event of the earlier drill can mislead a diagnosis
    assert client.AppsV1Api(kube_api).read_namespaced_deployment("llm-d-decode", "production").spec.replicas == 2
    assert sorted(p.metadata.name for p in core.list_pod_for_all_namespaces().items) == fresh_pods
    assert simulator.behaviour.active_faults() == []
    assert core.read_namespace("production").metadata.uid == namespace_uid  # namespaces stay

    # the same fault stages again, and a different one meets only its own symptoms
    inject_into(simulator.kubeconfig_path, "model-deploy-failure:oom")
    wait_for(
        lambda: any(
            cs.last_state.terminated and cs.last_state.terminated.reason == "OOMKilled"
            for p in core.list_namespaced_pod("production", label_selector="app=mixtral-8x7b").items
            for cs in p.status.container_statuses or []
        ),
        "mixtral-8x7b OOMKilled",
    )
    assert not [e for e in core.list_namespaced_event("production").items if MISSING_IMAGE in (e.message or "")]


def test_a_scenario_with_only_causes_stages_its_default_or_names_its_causes():
    assert scenario_name("model-deploy-failure") == "model-deploy-failure:oom"
    assert causes("model-deploy-failure") == ["image-pull", "oom", "insufficient-gpu", "pvc-pending"]
    assert scenario_name("gpu-unavailable") == "gpu-unavailable"  # a fault of its own, and a cause (driver)
    with pytest.raises(ValueError, match="unknown scenario 'no-such'"):
        scenario_name("no-such")


@pytest.mark.parametrize("fault", ["kserve-high-latency", "high-latency:queue-depth", "high-latency:gpu-exhaustion"])
def test_a_demand_fault_staged_right_after_a_reset_stays_until_its_remedy(simulator, fault):
    """A demand fault's `healed` must judge the demand it adds, not the traffic of the tick before it:
    staged right after `inject baseline` (as every drill does), kserve-high-latency used to count as
    healed at once, and its drill met a healthy service ("nothing wrong found")."""
    inject_into(simulator.kubeconfig_path, "baseline")
    inject_into(simulator.kubeconfig_path, fault)
    for _ in range(3):
        simulator.behaviour.tick()
    assert fault in simulator.behaviour.active_faults()
