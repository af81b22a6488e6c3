"""SOP-004's evidence, its classification and the fixes that fit each cause; free of `kubernetes`.

The workflow imports these models and the pure functions `classify_failure` and `plan_fixes`;
only the worker imports `activities.deployments`, which talks to the cluster.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

GPU = "nvidia.com/gpu"
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


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- inputs ----------------------------------------------------------------------------------


class DeploymentTarget(_Input):
    """One LLMDeployment: `kubectl describe llmdeployment NAME -n NS` and friends."""

    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)
    events_limit: int = Field(20, ge=1, le=500, description="the newest events kept per object")


class PodRef(BaseModel):
    name: str
    uid: str


class FailedPodsDeletion(_Input):
    """`kubectl delete pods -l app=NAME --field-selector 'status.phase!=Running'`, for the pods the
    diagnosis saw failing (by uid: a retry never deletes their replacements)."""

    namespace: str
    app: str
    pods: list[PodRef] = Field(min_length=1)
    dry_run: bool = False


class ClaimReplacement(_Input):
    """Recreate a PersistentVolumeClaim with another spec (a claim's spec is immutable)."""

    namespace: str
    name: str
    key: str = Field(min_length=1, description="incident id / step: stamped on the new claim, so a retry sees it is done")
    spec_before: dict[str, Any] = Field(description="the spec replaced, as the diagnosis read it")
    spec_after: dict[str, Any] = Field(min_length=1)
    replace_bound: bool = Field(False, description="only a rollback may drop a Bound claim's volume")
    delete_wait_seconds: float = Field(60, gt=0)
    dry_run: bool = False


class ReadinessQuery(_Input):
    """One look of `kubectl wait --for=condition=ready pod -l app=NAME`."""

    namespace: str
    app: str
    replicas: int = Field(1, ge=0, description="how many Ready pods the deployment wants")


# ---- evidence --------------------------------------------------------------------------------


class PodEvidence(BaseModel):
    """What `kubectl describe pod` shows that tells why a model pod is not Ready."""

    name: str
    uid: str = ""
    phase: str = "Unknown"
    ready: bool = False
    restarts: int = 0
    node: str | None = None
    waiting_reason: str | None = None
    waiting_message: str | None = None
    init_waiting_reason: str | None = None
    last_terminated_reason: str | None = None
    last_exit_code: int | None = None
    unschedulable: str | None = Field(None, description="the PodScheduled=False message")
    status_reason: str | None = Field(None, description="pod.status.reason, e.g. Evicted, OutOfnvidia.com/gpu")
    status_message: str | None = None
    claims: list[str] = Field(default_factory=list)
    terminating: bool = False

    @property
    def line(self) -> str:
        state = self.waiting_reason or self.init_waiting_reason or self.status_reason or self.phase
        extra = f", last exit {self.last_terminated_reason}" if self.last_terminated_reason else ""
        return f"{self.name}: {self.phase}/{state}, ready={self.ready}, restarts={self.restarts}{extra}"


class EventEvidence(BaseModel):
    kind: str
    name: str
    type: str = "Normal"
    reason: str = ""
    message: str = ""
    count: int = 1
    last_seen: str | None = None

    @property
    def line(self) -> str:
        times = f" (x{self.count})" if self.count > 1 else ""
        return f"{self.type} {self.reason} {self.kind.lower()}/{self.name}: {self.message}{times}"


class ClaimEvidence(BaseModel):
    """One line of `kubectl get pvc`, with the spec a recreation would need."""

    name: str
    uid: str = ""
    phase: str = "Unknown"
    storage_class: str | None = None
    volume_name: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    events: list[EventEvidence] = Field(default_factory=list)

    @property
    def bound(self) -> bool:
        return self.phase == "Bound"

    @property
    def line(self) -> str:
        why = next((e.message for e in self.events if e.type == "Warning"), "")
        return f"pvc/{self.name}: {self.phase}, storageClass={self.storage_class or '(default)'}" + (
            f" — {why}" if why else ""
        )


class DeploymentDescription(BaseModel):
    """SOP-004 step 1: the LLMDeployment, its pods (label app=NAME) and their events."""

    namespace: str
    name: str
    found: bool = True
    phase: str = "Unknown"
    ready_replicas: int = 0
    replicas: int = 1
    condition: str | None = Field(None, description="the Ready condition's reason: message")
    image: str | None = None
    resources: dict[str, Any] = Field(default_factory=dict, description="spec.resources as it is now")
    claims: list[str] = Field(default_factory=list, description="claims the model mounts")
    pods: list[PodEvidence] = Field(default_factory=list)
    events: list[EventEvidence] = Field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.phase == "Ready"


class NodeAllocation(BaseModel):
    """`kubectl describe nodes | grep -A5 "Allocated resources"`, for GPUs."""

    name: str
    gpu_allocatable: int = 0
    gpu_requested: int = 0
    unschedulable: bool = False

    @property
    def gpu_free(self) -> int:
        return 0 if self.unschedulable else max(0, self.gpu_allocatable - self.gpu_requested)


class CommonIssues(BaseModel):
    """SOP-004 step 2: image pulls, resource availability, storage."""

    namespace: str
    name: str
    pull_events: list[EventEvidence] = Field(default_factory=list)
    nodes: list[NodeAllocation] = Field(default_factory=list)
    claims: list[ClaimEvidence] = Field(default_factory=list, description="every claim in the namespace")

    @property
    def most_free_gpus(self) -> int:
        return max((n.gpu_free for n in self.nodes), default=0)


class PodsReadiness(BaseModel):
    namespace: str
    app: str
    wanted: int
    ready: int
    not_ready: list[str] = Field(default_factory=list, description="pod: status, for the thread")

    @property
    def all_ready(self) -> bool:
        return self.ready >= self.wanted and not self.not_ready


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
        return FailureClassification(cause="none", summary=f"{desc.name} is Ready ({desc.ready_replicas}/{desc.replicas})")
    for rule in (_image_pull, _pvc_pending, _insufficient_gpu, _oom, _crash_loop):
        found = rule(desc, issues)
        if found is not None:
            return found
    evidence = [p.line for p in desc.pods] + [e.line for e in desc.events if e.type == "Warning"][-5:]
    return FailureClassification(
        cause="unknown",
        summary=f"{desc.name} is {desc.phase}" + (f" ({desc.condition})" if desc.condition else "")
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
    events = [e for e in _warnings(desc, issues) if "pull" in e.message.lower() and e.reason in ("Failed", "ErrImagePull")]
    if not pods and not events:
        return None
    messages = [p.waiting_message or "" for p in pods] + [e.message for e in events]
    missing = any(_IMAGE_MISSING.search(m) for m in messages)
    image = desc.image or "the model image"
    what = "does not exist in the registry" if missing else "could not be pulled (the registry may be unreachable)"
    return FailureClassification(
        cause="image-pull", image_missing=missing,
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
        evidence=[c.line for c in unbound] + [f"pvc/{m}: not found" for m in missing]
        + [f"{p.name}: {p.unschedulable}" for p in waiting],
    )


def _insufficient_gpu(desc: DeploymentDescription, issues: CommonIssues) -> FailureClassification | None:
    pods = [p for p in desc.pods if (p.unschedulable and f"Insufficient {GPU}" in p.unschedulable)
            or p.status_reason == f"OutOf{GPU}"]
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
    pods = [p for p in desc.pods if "CrashLoopBackOff" in (p.waiting_reason or "", p.init_waiting_reason or "")
            or (p.restarts > 0 and not p.ready)]
    if not pods:
        return None
    init = any(p.init_waiting_reason == "CrashLoopBackOff" for p in pods)
    where = "an init container (model download)" if init else "the model server"
    return FailureClassification(
        cause="crash-loop",
        summary=f"crash loop: {where} keeps exiting"
        + (f" ({pods[0].last_terminated_reason}, exit {pods[0].last_exit_code})" if pods[0].last_terminated_reason else ""),
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
    failed = [PodRef(name=p.name, uid=p.uid) for p in desc.pods if p.phase != "Running" and not p.terminating]
    target = sop.get("resources") or {}
    if found.cause == "none":
        return FixPlan()
    if found.cause == "image-pull":
        if found.image_missing:
            return FixPlan(cannot_fix=f"{found.summary}: a human must choose an image that exists "
                                      "(spec.image); restarting or deleting pods cannot help")
        return FixPlan(delete_failed_pods=failed) if failed else FixPlan(cannot_fix=found.summary)
    if found.cause == "oom":
        now, sop_limit = memory_limit(desc.resources), memory_limit(target)
        if sop_limit and (now is None or quantity(now) < quantity(sop_limit)):
            return FixPlan(adjust_resources=True, resources_why=f"memory limit {now} → {sop_limit}")
        return FixPlan(cannot_fix=f"{found.summary}; the SOP's limit ({sop_limit}) would not raise it: "
                                  "the model needs more memory than the SOP allows")
    if found.cause == "insufficient-gpu":
        now, sop_gpus = gpu_request(desc.resources), gpu_request(target)
        if sop_gpus and now > sop_gpus and sop_gpus <= issues.most_free_gpus:
            return FixPlan(adjust_resources=True, resources_why=f"{GPU} {now} → {sop_gpus} per pod")
        return FixPlan(cannot_fix=f"{found.summary}; the SOP's {sop_gpus} GPU per pod would not fit or change it: "
                                  "GPU capacity is short (see SOP-003)")
    if found.cause == "pvc-pending":
        claims = [c for c in issues.claims if c.name in _mounted(desc) and not c.bound and not c.volume_name]
        if claims:  # the Pending pod schedules by itself once the new claim is bound
            return FixPlan(recreate_claims=claims)
        return FixPlan(cannot_fix=f"{found.summary}: the claim is missing or was bound before; a human must fix storage")
    return FixPlan(cannot_fix=f"{found.summary}: no standard fix fits; restarting would only repeat the failure")


def _mounted(desc: DeploymentDescription) -> set[str]:
    return set(desc.claims) | {c for p in desc.pods for c in p.claims}


def claim_on_default_class(claim: ClaimEvidence) -> dict[str, Any]:
    """The claim's spec without its storage class (the cluster's default class provisions it)."""
    return {k: v for k, v in claim.spec.items() if k not in ("storageClassName", "volumeName")}


# ---- quantities ------------------------------------------------------------------------------

_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
           "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "m": 1e-3, "": 1}
_QUANTITY = re.compile(r"^([0-9.]+(?:[eE][-+]?[0-9]+)?)([A-Za-z]*)$")


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity ("16Gi", "500m", "2") as a number; ValueError for nonsense."""
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def memory_limit(resources: dict[str, Any]) -> str | None:
    value = (resources.get("limits") or {}).get("memory")
    return str(value) if value is not None else None


def gpu_request(resources: dict[str, Any]) -> int:
    value = (resources.get("limits") or {}).get(GPU) or (resources.get("requests") or {}).get(GPU) or 0
    return int(quantity(value))
