"""SOP-004's classification and fix planning: pure functions over the evidence kubectl shows."""

from __future__ import annotations

import pytest

from activities.kube.claims_models import ClaimEvidence
from activities.kube.llmdeployments_models import CommonIssues, DeploymentDescription, NodeAllocation
from activities.kube.models import GPU, EventEvidence, quantity
from activities.kube.pods_models import PodEvidence
from workflows.playbooks.model_deploy_failure.diagnosis import claim_on_default_class, classify_failure, plan_fixes

MISSING = (
    'Back-off pulling image "vllm/vllm-openai:v9-nope": ErrImagePull: rpc error: code = NotFound desc = '
    'failed to resolve reference "docker.io/vllm/vllm-openai:v9-nope": not found'
)
TIMEOUT = 'Back-off pulling image "vllm/vllm-openai:v0.6.3": dial tcp 104.18.1.1:443: i/o timeout'
NO_GPU = (
    "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 3 Insufficient "
    "nvidia.com/gpu. preemption: 0/4 nodes are available: 3 No preemption victims found for incoming pod."
)
UNBOUND = "0/4 nodes are available: pod has unbound immediate PersistentVolumeClaims."
NODES = [
    NodeAllocation(name="gpu-node-1", gpu_allocatable=8, gpu_requested=5),
    NodeAllocation(name="gpu-node-2", gpu_allocatable=8, gpu_requested=8),
]


def desc(*pods: PodEvidence, resources: dict | None = None, phase: str = "Failed", **extra) -> DeploymentDescription:
    res = resources or {"requests": {"memory": "4Gi", GPU: "1"}, "limits": {"memory": "6Gi", GPU: "1"}}
    return DeploymentDescription(
        namespace="production", name="mixtral-8x7b", phase=phase, resources=res, pods=list(pods), **extra
    )


def issues(
    *claims: ClaimEvidence, nodes: list[NodeAllocation] = NODES, pulls: list[EventEvidence] = ()
) -> CommonIssues:
    return CommonIssues(
        namespace="production", name="mixtral-8x7b", nodes=nodes, claims=list(claims), pull_events=list(pulls)
    )


def pod(**fields) -> PodEvidence:
    return PodEvidence(**{"name": "mixtral-8x7b-abc", "uid": "uid-1", "phase": "Running", **fields})


def crash_oom() -> PodEvidence:
    return pod(waiting_reason="CrashLoopBackOff", restarts=4, last_terminated_reason="OOMKilled", last_exit_code=137)


def pending_claim(**fields) -> ClaimEvidence:
    spec = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "200Gi"}},
        "storageClassName": "fast-nvme",
        "volumeMode": "Filesystem",
    }
    return ClaimEvidence(
        **{
            "name": "mixtral-8x7b-model-cache",
            "uid": "c1",
            "phase": "Pending",
            "storage_class": "fast-nvme",
            "spec": spec,
            **fields,
        }
    )


def test_missing_image_is_image_pull_and_cannot_be_fixed_by_restarts() -> None:
    d, i = (
        desc(
            pod(phase="Pending", waiting_reason="ImagePullBackOff", waiting_message=MISSING),
            image="vllm/vllm-openai:v9-nope",
        ),
        issues(),
    )
    found = classify_failure(d, i)
    assert (found.cause, found.image_missing) == ("image-pull", True)
    assert "does not exist" in found.summary and MISSING in found.evidence[0]
    plan = plan_fixes(d, i, found)
    assert not plan.anything and "a human must choose an image" in plan.cannot_fix


def test_a_transient_pull_failure_deletes_the_failed_pods_once() -> None:
    d, i = desc(pod(phase="Pending", waiting_reason="ErrImagePull", waiting_message=TIMEOUT)), issues()
    found = classify_failure(d, i)
    assert (found.cause, found.image_missing) == ("image-pull", False)
    plan = plan_fixes(d, i, found)
    assert [p.uid for p in plan.delete_failed_pods] == ["uid-1"] and not plan.adjust_resources


def test_pull_events_alone_are_enough_evidence() -> None:
    event = EventEvidence(
        kind="Pod",
        name="mixtral-8x7b-abc",
        type="Warning",
        reason="Failed",
        message='Failed to pull image "x:1": manifest unknown',
    )
    found = classify_failure(desc(pod(phase="Pending")), issues(pulls=[event]))
    assert found.cause == "image-pull" and found.image_missing


def test_oom_raises_the_memory_limit_to_the_sops_after_approval() -> None:
    d, i = desc(crash_oom()), issues()
    found = classify_failure(d, i)
    assert found.cause == "oom" and "6Gi" in found.summary
    plan = plan_fixes(d, i, found)
    assert plan.adjust_resources and plan.resources_why == "memory limit 6Gi → 16Gi" and not plan.delete_failed_pods


def test_oom_already_at_or_above_the_sop_limit_is_not_fixed_by_lowering_it() -> None:
    d = desc(crash_oom(), resources={"limits": {"memory": "32Gi", GPU: "1"}})
    plan = plan_fixes(d, issues(), classify_failure(d, issues()))
    assert not plan.adjust_resources and "needs more memory than the SOP allows" in plan.cannot_fix


def test_insufficient_gpu_asks_for_one_gpu_per_pod_when_one_fits() -> None:
    d = desc(pod(phase="Pending", unschedulable=NO_GPU), resources={"limits": {GPU: "16", "memory": "32Gi"}})
    found = classify_failure(d, issues())
    assert (
        found.cause == "insufficient-gpu"
        and "asks for 16" in found.summary
        and "most free on one node is 3" in found.summary
    )
    plan = plan_fixes(d, issues(), found)
    assert plan.adjust_resources and plan.resources_why == f"{GPU} 16 → 1 per pod"


@pytest.mark.parametrize(
    "gpus, nodes", [("1", NODES), ("4", [NodeAllocation(name="n", gpu_allocatable=8, gpu_requested=8)])]
)
def test_insufficient_gpu_the_sop_patch_cannot_help_escalates(gpus: str, nodes) -> None:
    d = desc(pod(phase="Pending", unschedulable=NO_GPU), resources={"limits": {GPU: gpus}})
    i = issues(nodes=nodes)
    plan = plan_fixes(d, i, classify_failure(d, i))
    assert not plan.anything and "GPU capacity is short" in plan.cannot_fix


def test_a_pod_rejected_by_its_node_for_gpus_counts_too() -> None:
    rejected = pod(phase="Failed", status_reason=f"OutOf{GPU}", status_message="Node didn't have enough resource")
    assert classify_failure(desc(rejected), issues()).cause == "insufficient-gpu"


def test_pvc_pending_recreates_the_never_bound_claim_on_the_default_class() -> None:
    claim = pending_claim(
        events=[
            EventEvidence(
                kind="PersistentVolumeClaim",
                name="mixtral-8x7b-model-cache",
                type="Warning",
                reason="ProvisioningFailed",
                message='storageclass.storage.k8s.io "fast-nvme" not found',
            )
        ]
    )
    d = desc(pod(phase="Pending", unschedulable=UNBOUND, claims=[claim.name]), phase="Pending")
    found = classify_failure(d, issues(claim))
    assert found.cause == "pvc-pending" and '"fast-nvme" not found' in found.evidence[0]
    plan = plan_fixes(d, issues(claim), found)
    assert [c.name for c in plan.recreate_claims] == [claim.name] and not plan.delete_failed_pods
    assert claim_on_default_class(claim) == {
        "accessModes": ["ReadWriteOnce"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": "200Gi"}},
    }


def test_a_missing_claim_is_pvc_pending_but_left_to_a_human() -> None:
    d = desc(pod(phase="Pending", unschedulable='persistentvolumeclaim "cache" not found', claims=["cache"]))
    found = classify_failure(d, issues())
    assert found.cause == "pvc-pending" and "pvc/cache: not found" in found.evidence
    assert plan_fixes(d, issues(), found).cannot_fix


def test_crash_loop_without_oom_escalates_instead_of_restarting() -> None:
    d = desc(pod(waiting_reason="CrashLoopBackOff", restarts=5, last_terminated_reason="Error", last_exit_code=1))
    found = classify_failure(d, issues())
    assert found.cause == "crash-loop" and "exit 1" in found.summary
    plan = plan_fixes(d, issues(), found)
    assert not plan.anything and "restarting would only repeat the failure" in plan.cannot_fix


def test_an_init_container_crash_loop_points_at_the_model_download() -> None:
    d = desc(pod(phase="Pending", init_waiting_reason="CrashLoopBackOff"))
    found = classify_failure(d, issues())
    assert found.cause == "crash-loop" and "model download" in found.summary


def test_the_most_specific_sign_wins() -> None:
    both = pod(
        phase="Pending",
        waiting_reason="ImagePullBackOff",
        waiting_message=MISSING,
        restarts=2,
        last_terminated_reason="OOMKilled",
    )
    assert classify_failure(desc(both), issues()).cause == "image-pull"


def test_unknown_ready_and_missing_deployments() -> None:
    found = classify_failure(desc(pod(phase="Pending"), condition="ReplicasNotReady: 0/1"), issues())
    assert found.cause == "unknown" and "ReplicasNotReady" in found.summary
    assert plan_fixes(desc(), issues(), found).cannot_fix
    ready = classify_failure(desc(phase="Ready"), issues())
    assert ready.cause == "none" and not plan_fixes(desc(phase="Ready"), issues(), ready).anything
    gone = DeploymentDescription(namespace="production", name="ghost", found=False)
    assert "not found" in classify_failure(gone, issues()).summary


def test_quantities() -> None:
    assert quantity("16Gi") == 16 * 2**30 and quantity("500m") == 0.5 and quantity(2) == 2 and quantity("1e3") == 1000
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity("lots")
