"""SOP-004 end to end: the real Temporal dev server, the worker in-process, the simulated cluster
in each `model-deploy-failure:<cause>` fault, and the Slack Web API stand-in.

Each cause heals when a standard fix fits (after a human approves it, as in Slack) or ends in
escalation with the diagnosis; the simulator's audit log shows every write exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime, timezone

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.kube.claims import KubeClaims
from activities.kube.claims_models import ClaimReplacement
from activities.kube.llmdeployments import KubeLLMDeployments
from activities.kube.llmdeployments_models import DeploymentTarget
from activities.kube.models import PodRef
from activities.kube.pods import KubePods
from activities.kube.pods_models import FailedPodsDeletion

from standins.slack import SlackStandIn
from tests.helpers.audit import target, writes
from tests.helpers.histories import save_history
from tests.helpers.incident_queries import approving_everything, state_of, step_done, timeline_of, until
from tests.helpers.waiting import wait_for
from worker.worker import build_worker
from workflows.playbooks.model_deploy_failure.diagnosis import claim_on_default_class
from workflows.playbooks.model_deploy_failure.models import (
    DeployFailureTimings,
    DeploymentCase,
    ModelDeploymentFailureInput,
)
from workflows.playbooks.model_deploy_failure.playbook import ModelDeploymentFailure
from workflows.incident.models import (
    Alert,
    HumanAction,
    RollbackRequest,
    SIGNAL_ROLLBACK,
    UPDATE_HUMAN_ACTION,
)

pytestmark = pytest.mark.integration

CHANNEL = "#incidents-sop004"
NS, MODEL = "production", "mixtral-8x7b"
CLAIM = f"{MODEL}-model-cache"
FAST = DeployFailureTimings(
    recovery_timeout_seconds=60,
    recovery_poll_seconds=0.5,
    verification_timeout_seconds=30,
    verification_poll_seconds=0.5,
    health_timeout_seconds=2,
    kube_call_timeout_seconds=10,
    claim_delete_wait_seconds=10,
    approval_timeout_minutes=5,
)
# cause -> the writes SOP-004 must make, each exactly once: (verb, resource, name)
HEALS = {
    "oom": [("patch", "llmdeployments", MODEL)],
    "insufficient-gpu": [("patch", "llmdeployments", MODEL)],
    "pvc-pending": [("delete", "persistentvolumeclaims", CLAIM), ("create", "persistentvolumeclaims", CLAIM)],
}


def incident_input(cause: str, *, named: bool = True) -> ModelDeploymentFailureInput:
    labels = {"alertname": "LLMDeploymentNotReady", "namespace": NS, "cause": cause, "severity": "P1"}
    if named:
        labels["llmdeployment"] = MODEL
    alert = Alert(
        alertname="LLMDeploymentNotReady",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels=labels,
        annotations={"summary": f"LLMDeployment {NS}/{MODEL} is not Ready"},
    )
    return ModelDeploymentFailureInput(
        alert=alert,
        runbook="model-deploy-failure",
        namespace=NS,
        incident_commander="alice",
        slack_channel=CHANNEL,
        timings=FAST,
    )


def llm_deployment(kube_api: k8s.ApiClient) -> dict:
    return k8s.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        "inference.llm-d.io", "v1alpha1", NS, "llmdeployments", MODEL
    )


def written(simulator) -> list[tuple[str, str, str]]:
    """(verb, resource, object) of every accepted write."""
    return [(e.verb, e.resource, target(e)) for e in writes(simulator)]


@contextlib.asynccontextmanager
async def running(client: Client, kube_api, slack_client, task_queue: str, inp: ModelDeploymentFailureInput):
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            yield await client.start_workflow(
                ModelDeploymentFailure.run,
                inp,
                id=f"model-deploy-failure-{inp.alert.fingerprint}",
                task_queue=task_queue,
            )


@pytest.mark.parametrize(
    "cause",
    [
        pytest.param(cause, marks=pytest.mark.scenario(f"model-deploy-failure:{cause}"))
        for cause in ("oom", "insufficient-gpu", "pvc-pending", "image-pull")
    ],
)
async def test_each_cause_heals_or_escalates_with_the_diagnosis(
    cause: str,
    temporal_dev,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_standin: SlackStandIn,
    slack_client,
):
    before = llm_deployment(kube_api)
    assert before["status"]["phase"] != "Ready"
    # pvc-pending runs without the llmdeployment label: the playbook finds the not-Ready one itself
    inp = incident_input(cause, named=cause != "pvc-pending")

    async with running(temporal_dev.client, kube_api, slack_client, task_queue, inp) as handle:
        async with approving_everything(handle, via="slack") as decided:
            if cause in HEALS:
                report = await asyncio.wait_for(handle.result(), 60)
            else:
                await until(handle, lambda s: s.escalation_level >= 1, "the escalation")
                await handle.execute_update(
                    UPDATE_HUMAN_ACTION,
                    HumanAction(action="resolve", by="bob", note="image fixed by hand"),
                    result_type=str,
                )
                report = await asyncio.wait_for(handle.result(), 30)
        state = await state_of(handle)
        cases = await handle.query(ModelDeploymentFailure.diagnosis, result_type=list[DeploymentCase])
        timeline = await timeline_of(handle)
        await save_history(handle, f"model_deploy_failure_{cause.replace('-', '_')}")

    assert [c.classification.cause for c in cases] == [cause]
    texts = [m["text"] for m in slack_standin.messages(CHANNEL)]
    assert any(f"*Diagnosis* `{NS}/{MODEL}`: *{cause}*" in t for t in texts), texts

    if cause in HEALS:
        # healed, by the fix that fits, each write once, approved by a human first
        assert llm_deployment(kube_api)["status"]["phase"] == "Ready"
        assert state.status == "resolved" and state.resolved_by == "automation"
        assert state.escalation_level == 0
        assert sorted(written(simulator)) == sorted(HEALS[cause])
        assert decided == ([f"recreate-claim:{CLAIM}"] if cause == "pvc-pending" else [f"reduce-resources:{MODEL}"])
        assert [(g.kind, g.target) for g in state.approvals] == (
            [("recreate-claim", CLAIM)] if cause == "pvc-pending" else [("reduce-resources", MODEL)]
        )
        # the report carries what was replaced and what was set, and the diagnosis that justified it
        for change in state.changes:
            assert change.applied and f"{change.namespace}/{change.name}" in report
            assert change.finding and f"{cause}: " in change.finding, change
        if cause != "pvc-pending":
            (change,) = state.changes
            assert change.before["resources"]["limits"] == before["spec"]["resources"]["limits"]
            assert change.after["resources"]["limits"] == {"memory": "16Gi", "nvidia.com/gpu": "1"}
            assert "16Gi" in report and before["spec"]["resources"]["limits"]["memory"] in report
        else:
            claim = k8s.CoreV1Api(kube_api).read_namespaced_persistent_volume_claim(CLAIM, NS)
            assert claim.status.phase == "Bound" and claim.spec.storage_class_name in (None, "standard")
            assert "fast-nvme" in report
        steps = [e.title for e in timeline if e.kind == "step"]
        assert steps == [
            "1. Identify failure reason",
            "2. Check common issues",
            "3. Apply standard fixes",
            "4. Monitor recovery",
            "Verification",
        ]
    else:
        # no standard fix fits a missing image: escalated with the diagnosis, nothing touched, no restarts
        assert written(simulator) == []
        assert state.escalation_level >= 1 and "no standard fix fits" in state.escalations[0].reason
        assert any("Automation cannot fix this" in t and "does not exist in the registry" in t for t in texts)
        assert decided == [] and state.changes == []
        assert llm_deployment(kube_api)["status"]["phase"] != "Ready"


@pytest.mark.scenario("model-deploy-failure:oom")
async def test_rollback_restores_the_recorded_resources_exactly(
    temporal_dev, task_queue: str, simulator, kube_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    original = llm_deployment(kube_api)["spec"]["resources"]
    inp = incident_input("oom")

    async with running(temporal_dev.client, kube_api, slack_client, task_queue, inp) as handle:
        # the engineer asks for the rollback while the adjustment waits for approval, then approves it
        await until(handle, lambda s: bool(s.pending_gates), "the approval request")
        await handle.signal(SIGNAL_ROLLBACK, RollbackRequest(by="carol", reason="test the old limits"))
        async with approving_everything(handle, via="slack"):
            await step_done(handle, "Rollback")
        assert llm_deployment(kube_api)["spec"]["resources"] == original
        await handle.execute_update(
            UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="carol", note="done"), result_type=str
        )
        report = await asyncio.wait_for(handle.result(), 30)
        state = await state_of(handle)
        await save_history(handle, "model_deploy_failure_rollback_on_request")

    # the patch and its restore, once each; the restore is itself a recorded change
    assert written(simulator) == [("patch", "llmdeployments", MODEL)] * 2
    applied, restored = state.changes
    assert restored.after == applied.before and restored.before == applied.after
    assert applied.before["resources"]["limits"]["memory"] == original["limits"]["memory"] == "6Gi"
    assert state.resolved_by == "carol"
    assert "Rollback" in report or "restore" in report.lower()


# ---- the activities' retry safety, on the simulator -----------------------------------------------


@pytest.mark.scenario("model-deploy-failure:pvc-pending")
def test_claim_recreation_is_retry_safe_and_refuses_a_bound_claim(simulator, kube_api: k8s.ApiClient) -> None:
    llmds, claims, run = KubeLLMDeployments(kube_api), KubeClaims(kube_api), ActivityEnvironment().run
    target = DeploymentTarget(namespace=NS, name=MODEL)
    (claim,) = [c for c in run(llmds.check_common_issues, target).claims if c.name == CLAIM]
    req = ClaimReplacement(
        namespace=NS,
        name=CLAIM,
        key="incident-1/claim",
        spec_before=claim.spec,
        spec_after=claim_on_default_class(claim),
        delete_wait_seconds=5,
    )
    first, retry = run(claims.replace_claim, req), run(claims.replace_claim, req)
    assert (first.applied, retry.applied) == (True, False)
    assert first.before["storageClassName"] == "fast-nvme" and "storageClassName" not in first.after
    assert sorted(written(simulator)) == sorted(HEALS["pvc-pending"])
    core = k8s.CoreV1Api(kube_api)
    wait_for(
        lambda: (
            (
                core.read_namespaced_persistent_volume_claim(CLAIM, NS).status or k8s.V1PersistentVolumeClaimStatus()
            ).phase
            == "Bound"
        ),
        "the recreated claim bound",
        10,
    )
    again = req.model_copy(update={"key": "incident-2/claim"})
    with pytest.raises(ApplicationError, match="Bound") as err:
        run(claims.replace_claim, again)
    assert err.value.non_retryable and len(written(simulator)) == 2


@pytest.mark.scenario("model-deploy-failure:image-pull")
def test_deleting_failed_pods_touches_only_the_pods_named_once(simulator, kube_api: k8s.ApiClient) -> None:
    llmds, pods, run = KubeLLMDeployments(kube_api), KubePods(kube_api), ActivityEnvironment().run
    (failed,) = run(llmds.describe_llm_deployment, DeploymentTarget(namespace=NS, name=MODEL)).pods
    req = FailedPodsDeletion(namespace=NS, app=MODEL, pods=[PodRef(namespace=NS, name=failed.name, uid=failed.uid)])
    (first,), (retry,) = run(pods.delete_failed_pods, req), run(pods.delete_failed_pods, req)
    assert (first.applied, retry.applied) == (True, False) and "ImagePullBackOff" in first.before
    assert written(simulator) == [("delete", "pods", failed.name)]
