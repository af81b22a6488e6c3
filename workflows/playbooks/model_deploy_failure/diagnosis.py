"""SOP-004's judgement of a model deployment that will not come up: why it fails (from the most
specific sign in its pods, events and claims to the least) and which of the SOP's standard fixes fit
that cause. Pure functions over what the LLMDeployment activities read; the playbook calls them.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from activities.kube.claims_models import ClaimEvidence
from activities.kube.llmdeployments_models import CommonIssues, DeploymentDescription
from activities.kube.models import GPU, EventEvidence, PodRef, quantity

FailureCause = Literal["image-pull", "oom", "insufficient-gpu", "pvc-pending", "crash-loop", "unknown", "none"]
# SOP-004 step 3's resource patch, as `kubectl patch llmdeployment --type=merge` sends it.
SOP_RESOURCES: dict[str, Any] = {
    "resources": {
        "requests": {"memory": "8Gi", GPU: "1"},
        "limits": {"memory": "16Gi", GPU: "1"},
    }
}
# Registry answers that mean the image does not exist: pulling again cannot help.
_IMAGE_MISSING = re.compile(r"not found|manifest unknown|NotFound|repository does not exist|name unknown", re.I)
_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_UNBOUND = ("unbound immediate PersistentVolumeClaims", "persistentvolumeclaim")


# ---- classification --------------------------------------------------------------------------


class FailureClassification(BaseModel):
    cause: FailureCause
    summary: str
    evidence: list[str] = Field(default_factory=list)
    image_missing: bool = Field(False, description="image-pull: the registry says the image does not exist")


def classify_failure(desc: DeploymentDescription, issues: CommonIssues) -> FailureClassification:
    """Why the LLMDeployment is not Ready, from the most specific sign to the least."""
    if not desc.found:
        return FailureClassification(cause="unknown", summary=f"LLMDeployment {desc.namespace}/{desc.name} not found")
    if desc.ready:
        return FailureClassification(
            cause="none", summary=f"{desc.name} is Ready ({desc.ready_replicas}/{desc.replicas})"
        )
    for rule in (_image_pull, _pvc_pending, _insufficient_gpu, _oom, _crash_loop):
        found = rule(desc, issues)
        if found is not None:
            return found
    evidence = [p.line for p in desc.pods] + [e.line for e in desc.events if e.type == "Warning"][-5:]
    return FailureClassification(
        cause="unknown",
        summary=f"{desc.name} is {desc.phase}"
        + (f" ({desc.condition})" if desc.condition else "")
        + ": no known failure pattern in its pods and events",
        evidence=evidence or ["no pods and no warning events"],
    )


def _warnings(desc: DeploymentDescription, issues: CommonIssues | None = None) -> list[EventEvidence]:
    events = desc.events + (issues.pull_events if issues else [])
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for e in events:
        key = (e.name, e.reason, e.message)
        if e.type == "Warning" and key not in seen:
            seen.add(key)
            unique.append(e)
    return unique


def _image_pull(desc: DeploymentDescription, issues: CommonIssues) -> FailureClassification | None:
    pods = [p for p in desc.pods if p.waiting_reason in _PULL_REASONS]
    events = [
        e for e in _warnings(desc, issues) if "pull" in e.message.lower() and e.reason in ("Failed", "ErrImagePull")
    ]
    if not pods and not events:
        return None
    messages = [p.waiting_message or "" for p in pods] + [e.message for e in events]
    missing = any(_IMAGE_MISSING.search(m) for m in messages)
    image = desc.image or "the model image"
    what = "does not exist in the registry" if missing else "could not be pulled (the registry may be unreachable)"
    return FailureClassification(
        cause="image-pull",
        image_missing=missing,
        summary=f"image pull: {image} {what}",
        evidence=[p.line + (f" — {p.waiting_message}" if p.waiting_message else "") for p in pods]
        + [e.line for e in events[:3]],
    )


def _pvc_pending(desc: DeploymentDescription, issues: CommonIssues) -> FailureClassification | None:
    mounted = set(desc.claims) | {c for p in desc.pods for c in p.claims}
    unbound = [c for c in issues.claims if c.name in mounted and not c.bound]
    waiting = [p for p in desc.pods if p.unschedulable and any(s in p.unschedulable for s in _UNBOUND)]
    missing = sorted(mounted - {c.name for c in issues.claims})
    if not unbound and not waiting and not missing:
        return None
    names = [c.name for c in unbound] + missing
    return FailureClassification(
        cause="pvc-pending",
        summary=f"storage: claim {', '.join(names) or '?'} not bound, the model pods cannot be scheduled",
        evidence=[c.line for c in unbound]
        + [f"pvc/{m}: not found" for m in missing]
        + [f"{p.name}: {p.unschedulable}" for p in waiting],
    )


def _insufficient_gpu(desc: DeploymentDescription, issues: CommonIssues) -> FailureClassification | None:
    pods = [
        p
        for p in desc.pods
        if (p.unschedulable and f"Insufficient {GPU}" in p.unschedulable) or p.status_reason == f"OutOf{GPU}"
    ]
    events = [e for e in _warnings(desc) if e.reason == "FailedScheduling" and f"Insufficient {GPU}" in e.message]
    if not pods and not events:
        return None
    wanted = gpu_request(desc.resources)
    return FailureClassification(
        cause="insufficient-gpu",
        summary=f"insufficient GPU: each pod asks for {wanted} {GPU}, the most free on one node is {issues.most_free_gpus}",
        evidence=[f"{p.name}: {p.unschedulable or p.status_message}" for p in pods][:3]
        + [f"{n.name}: {n.gpu_requested}/{n.gpu_allocatable} GPUs allocated" for n in issues.nodes],
    )


def _oom(desc: DeploymentDescription, issues: CommonIssues) -> FailureClassification | None:
    pods = [p for p in desc.pods if p.last_terminated_reason == "OOMKilled" or p.status_reason == "OOMKilled"]
    if not pods:
        return None
    limit = memory_limit(desc.resources) or "none"
    return FailureClassification(
        cause="oom",
        summary=f"OOM: the model server is OOMKilled under its memory limit {limit}",
        evidence=[p.line for p in pods][:3],
    )


def _crash_loop(desc: DeploymentDescription, issues: CommonIssues) -> FailureClassification | None:
    pods = [
        p
        for p in desc.pods
        if "CrashLoopBackOff" in (p.waiting_reason or "", p.init_waiting_reason or "")
        or (p.restarts > 0 and not p.ready)
    ]
    if not pods:
        return None
    init = any(p.init_waiting_reason == "CrashLoopBackOff" for p in pods)
    where = "an init container (model download)" if init else "the model server"
    return FailureClassification(
        cause="crash-loop",
        summary=f"crash loop: {where} keeps exiting"
        + (
            f" ({pods[0].last_terminated_reason}, exit {pods[0].last_exit_code})"
            if pods[0].last_terminated_reason
            else ""
        ),
        evidence=[p.line for p in pods][:3] + [e.line for e in _warnings(desc)][-3:],
    )


# ---- the fixes that fit ----------------------------------------------------------------------


class FixPlan(BaseModel):
    """SOP-004 step 3, for one deployment: only the fixes that fit its cause."""

    adjust_resources: bool = False
    resources_why: str = ""
    recreate_claims: list[ClaimEvidence] = Field(default_factory=list)
    delete_failed_pods: list[PodRef] = Field(default_factory=list)
    cannot_fix: str | None = Field(None, description="why automation stops here and humans take over")

    @property
    def anything(self) -> bool:
        return self.adjust_resources or bool(self.recreate_claims) or bool(self.delete_failed_pods)


def plan_fixes(
    desc: DeploymentDescription, issues: CommonIssues, found: FailureClassification, sop: dict[str, Any] = SOP_RESOURCES
) -> FixPlan:
    """Which of SOP-004's standard fixes fit `found.cause`; `cannot_fix` says why when none does."""
    failed = [
        PodRef(namespace=desc.namespace, name=p.name, uid=p.uid)
        for p in desc.pods
        if p.phase != "Running" and not p.terminating
    ]
    target = sop.get("resources") or {}
    if found.cause == "none":
        return FixPlan()
    if found.cause == "image-pull":
        if found.image_missing:
            return FixPlan(
                cannot_fix=f"{found.summary}: a human must choose an image that exists "
                "(spec.image); restarting or deleting pods cannot help"
            )
        return FixPlan(delete_failed_pods=failed) if failed else FixPlan(cannot_fix=found.summary)
    if found.cause == "oom":
        now, sop_limit = memory_limit(desc.resources), memory_limit(target)
        if sop_limit and (now is None or quantity(now) < quantity(sop_limit)):
            return FixPlan(adjust_resources=True, resources_why=f"memory limit {now} → {sop_limit}")
        return FixPlan(
            cannot_fix=f"{found.summary}; the SOP's limit ({sop_limit}) would not raise it: "
            "the model needs more memory than the SOP allows"
        )
    if found.cause == "insufficient-gpu":
        gpus_now, sop_gpus = gpu_request(desc.resources), gpu_request(target)
        if sop_gpus and gpus_now > sop_gpus and sop_gpus <= issues.most_free_gpus:
            return FixPlan(adjust_resources=True, resources_why=f"{GPU} {gpus_now} → {sop_gpus} per pod")
        return FixPlan(
            cannot_fix=f"{found.summary}; the SOP's {sop_gpus} GPU per pod would not fit or change it: "
            "GPU capacity is short (see SOP-003)"
        )
    if found.cause == "pvc-pending":
        claims = [c for c in issues.claims if c.name in _mounted(desc) and not c.bound and not c.volume_name]
        if claims:  # the Pending pod schedules by itself once the new claim is bound
            return FixPlan(recreate_claims=claims)
        return FixPlan(
            cannot_fix=f"{found.summary}: the claim is missing or was bound before; a human must fix storage"
        )
    return FixPlan(cannot_fix=f"{found.summary}: no standard fix fits; restarting would only repeat the failure")


def _mounted(desc: DeploymentDescription) -> set[str]:
    return set(desc.claims) | {c for p in desc.pods for c in p.claims}


def claim_on_default_class(claim: ClaimEvidence) -> dict[str, Any]:
    """The claim's spec without its storage class (the cluster's default class provisions it)."""
    return {k: v for k, v in claim.spec.items() if k not in ("storageClassName", "volumeName")}


# ---- quantities ------------------------------------------------------------------------------


def memory_limit(resources: dict[str, Any]) -> str | None:
    value = (resources.get("limits") or {}).get("memory")
    return str(value) if value is not None else None


def gpu_request(resources: dict[str, Any]) -> int:
    value = (resources.get("limits") or {}).get(GPU) or (resources.get("requests") or {}).get(GPU) or 0
    return int(quantity(value))
