"""Requests and answers of the LLMDeployment activities (activities/kube/llmdeployments.py), free of
the `kubernetes` package: `kubectl get|describe|patch llmdeployment`, and SOP-004's evidence (its
pods, their events, the nodes' GPUs, the namespace's claims)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from activities.kube.claims_models import ClaimEvidence
from activities.kube.models import EventEvidence
from activities.kube.pods_models import PodEvidence
from activities.models import Request

# The pod template label the llm-d operator sets from spec.model.version: which model version a pod serves.
MODEL_VERSION_LABEL = "llm-d.io/model-version"
# On an LLMDeployment we changed: per spec field, who changed it and the value it replaced.
# A retry of the same write reads its original back from here, so rollback stays exact even
# when the first attempt's result was lost; `kubectl get llmd -o yaml` shows it to humans too.
REPLACED_ANNOTATION = "llm-runbooks.io/replaced"


# ---- reads ----------------------------------------------------------------------------------


class LLMDeploymentQuery(Request):
    namespace: str | None = Field(None, description="None: all namespaces (kubectl -A)")


class LLMDeploymentSummary(BaseModel):
    namespace: str
    name: str
    phase: str = Field(description="status.phase: Ready / Pending / Failed / Unknown")
    model: str | None = Field(None, description="spec.model; seed 002's object form as 'modelUri@version'")
    model_version: str | None = Field(None, description="spec.model.version (seed 002's object form only)")
    previous_versions: list[str] = Field(
        default_factory=list, description="spec.rollback.previousVersions: the last known good version first"
    )
    replicas: int | None = None
    ready_replicas: int = 0
    url: str | None = None
    health_url: str | None = Field(
        None, description="the Service's llm-d.io/health-url annotation, else status.url + /health"
    )

    @property
    def ready(self) -> bool:
        return self.phase == "Ready"


class DeploymentTarget(Request):
    """One LLMDeployment: `kubectl describe llmdeployment NAME -n NS` and friends."""

    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)
    events_limit: int = Field(20, ge=1, le=500, description="the newest events kept per object")


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


# ---- writes ---------------------------------------------------------------------------------


class LLMDeploymentPatch(Request):
    """A merge patch to an LLMDeployment's spec, e.g. {"serving": {"batchSize": 16}}."""

    namespace: str
    name: str
    spec: dict[str, Any] = Field(min_length=1)
    dry_run: bool = False


class LLMDeploymentChange(Request):
    """Set one field of an LLMDeployment's spec (merge patch), remembering the value it replaces.

    A dict value merges into the field (`{"batchSize": 1}` leaves the other serving settings);
    a None removes what it names, as merge patch's `null` does: the rollback of a setting that
    was not there before. `change_key` names this write (incident id + step + object) so a
    retry recognises its own earlier attempt.
    """

    namespace: str
    name: str
    field: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$", description="a top-level spec field: serving, replicas")
    value: Any
    change_key: str = Field(min_length=1)
    action: str = Field("patch LLMDeployment", description="what the change is, in the SRE's words")
    rollback: bool = Field(
        False, description="restoring a recorded original: also forget it, leaving the object as it was"
    )
    dry_run: bool = False
