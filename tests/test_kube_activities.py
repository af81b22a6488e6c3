"""The Kubernetes activities against the simulated cluster: what they read, what they write, and that a
retried write changes nothing twice (checked in the simulator's audit log)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from kubernetes import client as k8s
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kube.deployments import KubeDeployments
from activities.kube.deployments_models import (
    REPLICAS_BEFORE_ANNOTATION,
    SCALED_BY_ANNOTATION,
    DeploymentRef,
    ImageChange,
    RestartRequest,
    RolloutWait,
    ScaleRequest,
)
from activities.kube.llmdeployments import KubeLLMDeployments
from activities.kube.llmdeployments_models import LLMDeploymentPatch, LLMDeploymentQuery
from activities.kube.models import RESTARTED_AT, RESTARTED_BY
from activities.kube.nodes import KubeNodes
from activities.kube.nodes_models import NodeQuery
from activities.kube.pods import KubePods
from activities.kube.pods_models import LogQuery, PodQuery
from activities.kube.services import KubeServices
from activities.kube.services_models import IngressPath, IngressRef, IngressSpec
from tests.helpers.audit import writes
from tests.helpers.waiting import wait_for

OPERATOR_NS, OPERATOR = "llm-d-system", "llm-d-operator"


@dataclass
class Kube:
    """The Kubernetes activity families, on one client."""

    api_client: k8s.ApiClient
    pods: KubePods
    deployments: KubeDeployments
    nodes: KubeNodes
    llmds: KubeLLMDeployments
    services: KubeServices


@pytest.fixture
def kube(kube_api: k8s.ApiClient) -> Kube:
    return Kube(
        kube_api,
        KubePods(kube_api),
        KubeDeployments(kube_api),
        KubeNodes(kube_api),
        KubeLLMDeployments(kube_api),
        KubeServices(kube_api),
    )


@pytest.fixture
def run():
    """Run an activity method in an activity context (heartbeats need one)."""
    env = ActivityEnvironment()
    return env.run


def test_reads_the_baseline_cluster(kube, run):
    pods = run(kube.pods.list_pods, PodQuery(namespace=OPERATOR_NS))
    operator = [p for p in pods if p.labels.get("app") == OPERATOR]
    assert operator and all(p.ready and not p.unhealthy for p in operator)

    llmds = run(kube.llmds.list_llm_deployments, LLMDeploymentQuery())
    names = {(d.namespace, d.name) for d in llmds}
    assert {("production", "llama-3-8b"), ("mlops-serving", "codellama-13b")} <= names
    assert all(d.ready for d in llmds)
    # the health URL comes from the Service annotation llm-d publishes
    assert all(d.health_url and d.health_url.startswith("http") for d in llmds)
    only_prod = run(kube.llmds.list_llm_deployments, LLMDeploymentQuery(namespace="production"))
    assert {d.namespace for d in only_prod} == {"production"}

    gpu_nodes = run(kube.nodes.list_nodes, NodeQuery(label_selector="nvidia.com/gpu.present=true"))
    assert {n.name for n in gpu_nodes} == {"gpu-node-1", "gpu-node-2", "gpu-node-3"}
    assert all(n.ready and n.gpu_capacity == 8 for n in gpu_nodes)


@pytest.mark.scenario("service-outage")
def test_sees_the_outage_and_reads_operator_logs(kube, run):
    def operator_pods() -> list:
        return run(kube.pods.list_pods, PodQuery(namespace=OPERATOR_NS, label_selector=f"app={OPERATOR}"))

    # A crash-looping pod shows, read by read, as SOP-001 lists it: `0/1 Running` between two crashes,
    # then `Error` or `CrashLoopBackOff`; never Ready.
    pods = operator_pods()
    assert pods and all(p.unhealthy and not p.ready for p in pods)
    assert {p.status for p in pods} <= {"Running", "Error", "CrashLoopBackOff"}, [str(p) for p in pods]
    wait_for(
        lambda: any(p.status in ("Error", "CrashLoopBackOff") and p.unhealthy for p in operator_pods()),
        "a read that shows the operator's crash",
    )
    assert all(not d.ready for d in run(kube.llmds.list_llm_deployments, LLMDeploymentQuery()))

    log = run(kube.pods.pod_logs, LogQuery(namespace=OPERATOR_NS, deployment=OPERATOR, tail_lines=20))
    lines = log.text.strip().splitlines()
    assert log.pod.startswith(OPERATOR) and 0 < len(lines) <= 20


def test_restart_is_stamped_and_a_retry_does_not_roll_again(kube, run, simulator):
    req = RestartRequest(
        namespace="production",
        name="llama-3-8b",
        restarted_at="2030-01-01T00:00:00Z",
        restarted_by="incident-1/standard-fixes",
    )
    first = run(kube.deployments.restart_deployment, req)
    assert first.applied and first.before is None and first.after == req.restarted_at
    assert first.field == f"spec.template.metadata.annotations[{RESTARTED_AT}]"

    retry = run(kube.deployments.restart_deployment, req)
    assert not retry.applied
    patches = [e for e in writes(simulator, name="llama-3-8b", dry_runs=True) if e.verb == "patch"]
    assert len(patches) == 1, "a retried restart must not patch (and roll the pods) again"

    deployment = k8s.AppsV1Api(kube.api_client).read_namespaced_deployment("llama-3-8b", "production")
    annotations = deployment.spec.template.metadata.annotations
    assert annotations[RESTARTED_AT] == req.restarted_at
    assert annotations[RESTARTED_BY] == req.restarted_by

    status = run(
        kube.deployments.wait_for_rollout,
        RolloutWait(namespace="production", name="llama-3-8b", timeout_seconds=30, poll_seconds=0.2),
    )
    assert status.complete, status.message

    # a later step of the same incident restarts again, and records the value it replaced
    again = run(
        kube.deployments.restart_deployment,
        req.model_copy(update={"restarted_at": "2030-01-01T00:05:00Z", "restarted_by": "incident-1/rollback"}),
    )
    assert again.applied and again.before == req.restarted_at


def test_set_image_records_the_old_image_and_finds_it_as_previous(kube, run, simulator):
    change = ImageChange(namespace=OPERATOR_NS, deployment=OPERATOR, container=OPERATOR, image="llm-d/operator:v0.5.1")
    done = run(kube.deployments.set_image, change)
    assert done.applied and done.before == "llm-d/operator:v0.5.0" and done.after == "llm-d/operator:v0.5.1"
    assert not run(kube.deployments.set_image, change).applied
    assert len([e for e in writes(simulator, name=OPERATOR, dry_runs=True) if e.verb == "patch"]) == 1

    assert run(
        kube.deployments.wait_for_rollout,
        RolloutWait(namespace=OPERATOR_NS, name=OPERATOR, timeout_seconds=30, poll_seconds=0.2),
    ).complete
    images = run(kube.deployments.deployment_images, DeploymentRef(namespace=OPERATOR_NS, name=OPERATOR))
    assert images.containers == {OPERATOR: "llm-d/operator:v0.5.1"}
    assert images.previous == {OPERATOR: "llm-d/operator:v0.5.0"}


def test_scale_and_patch_llm_deployment_record_before_and_after(kube, run):
    scale = ScaleRequest(namespace="production", name="llama-3-8b", replicas=1, change_key="incident-1/scale")
    scaled = run(kube.deployments.scale_deployment, scale)
    assert scaled.applied and scaled.after == 1 and isinstance(scaled.before, int) and scaled.before != 1
    retry = run(kube.deployments.scale_deployment, scale)
    assert not retry.applied and retry.before == scaled.before, "a retry still knows the original"
    back = run(
        kube.deployments.scale_deployment, scale.model_copy(update={"replicas": scaled.before, "rollback": True})
    )
    assert back.applied and back.after == scaled.before
    annotations = (
        k8s.AppsV1Api(kube.api_client).read_namespaced_deployment("llama-3-8b", "production").metadata.annotations
    )
    assert SCALED_BY_ANNOTATION not in (annotations or {}) and REPLICAS_BEFORE_ANNOTATION not in (annotations or {})

    llmd = k8s.CustomObjectsApi(kube.api_client).get_namespaced_custom_object(
        "inference.llm-d.io", "v1alpha1", "production", "llmdeployments", "mistral-7b"
    )
    old_batch = llmd["spec"]["serving"]["batchSize"]
    patch = LLMDeploymentPatch(namespace="production", name="mistral-7b", spec={"serving": {"batchSize": 4}})
    patched = run(kube.llmds.patch_llm_deployment, patch)
    assert patched.applied and patched.before == {"serving": {"batchSize": old_batch}}
    llmd = k8s.CustomObjectsApi(kube.api_client).get_namespaced_custom_object(
        "inference.llm-d.io", "v1alpha1", "production", "llmdeployments", "mistral-7b"
    )
    assert llmd["spec"]["serving"]["batchSize"] == 4
    assert llmd["spec"]["serving"]["maxConcurrency"], "a merge patch keeps the sibling fields"


def test_maintenance_ingress_apply_and_delete_are_idempotent(kube, run, simulator):
    spec = IngressSpec(
        namespace="default",
        name="maintenance-mode",
        host="*.your-domain.com",
        annotations={"nginx.ingress.kubernetes.io/default-backend": "maintenance-service"},
        paths=[IngressPath(service="maintenance-service", port=80)],
    )
    created = run(kube.services.apply_ingress, spec)
    assert created.applied and created.before is None
    assert created.after["spec"]["rules"][0]["host"] == "*.your-domain.com"
    assert not run(kube.services.apply_ingress, spec).applied

    removed = run(kube.services.delete_ingress, IngressRef(namespace="default", name="maintenance-mode"))
    assert removed.applied and removed.before == created.after and removed.after is None
    assert not run(kube.services.delete_ingress, IngressRef(namespace="default", name="maintenance-mode")).applied
    verbs = [e.verb for e in writes(simulator, dry_runs=True) if e.resource == "ingresses"]
    assert verbs == ["create", "delete"]


def test_dry_run_changes_nothing(kube, run):
    change = run(
        kube.deployments.set_image,
        ImageChange(
            namespace=OPERATOR_NS, deployment=OPERATOR, container=OPERATOR, image="llm-d/operator:v9", dry_run=True
        ),
    )
    assert change.dry_run and change.before == "llm-d/operator:v0.5.0"
    images = run(kube.deployments.deployment_images, DeploymentRef(namespace=OPERATOR_NS, name=OPERATOR))
    assert images.containers[OPERATOR] == "llm-d/operator:v0.5.0"


def test_errors_retrying_cannot_fix_are_non_retryable_and_readable(kube, run, simulator):
    with pytest.raises(ApplicationError) as missing:
        run(
            kube.deployments.restart_deployment,
            RestartRequest(namespace="production", name="no-such-model", restarted_at="t", restarted_by="i/s"),
        )
    assert missing.value.non_retryable and missing.value.type == "KubernetesNotFound"
    assert "restart deployment production/no-such-model" in str(missing.value)

    with pytest.raises(ApplicationError) as no_container:
        run(
            kube.deployments.set_image,
            ImageChange(namespace=OPERATOR_NS, deployment=OPERATOR, container="sidecar", image="x:1"),
        )
    assert no_container.value.non_retryable and OPERATOR in str(no_container.value)

    with pytest.raises(ApplicationError) as invalid:
        run(
            kube.services.apply_ingress,
            IngressSpec(
                namespace="default",
                name="Not_A_Valid_Name",
                paths=[IngressPath(service="maintenance-service", port=80)],
            ),
        )
    assert invalid.value.non_retryable and invalid.value.type == "KubernetesInvalid"

    configuration = k8s.Configuration()
    configuration.host = kube.api_client.configuration.host
    configuration.ssl_ca_cert = kube.api_client.configuration.ssl_ca_cert
    configuration.api_key = {"BearerToken": "wrong-token"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    with k8s.ApiClient(configuration) as stranger:
        with pytest.raises(ApplicationError) as denied:
            run(KubePods(stranger).list_pods, PodQuery(namespace=OPERATOR_NS))
    assert denied.value.non_retryable and denied.value.type == "KubernetesForbidden"
    assert "RBAC" in str(denied.value)
    assert writes(simulator, dry_runs=True) == [], "failed writes must not change the cluster"
