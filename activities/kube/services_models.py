"""Inputs and results of the service-down reads and writes (activities/rollouts.py), seed 001's
"LLM-D Service Down" runbook: the outage scope of one Service, a Deployment's rollout history,
`kubectl rollout undo` and the pod recovery. Pure pydantic: workflows import this, not the client."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

INFERENCE_URL_ANNOTATION = "llm-d.io/inference-url"
CHANGE_CAUSE = "kubernetes.io/change-cause"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceRef(_Input):
    """`kubectl get svc NAME -n NS` and what stands behind it."""

    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)


class ServicePod(BaseModel):
    name: str
    uid: str = ""
    phase: str
    ready: bool
    reason: str | None = Field(None, description="CrashLoopBackOff, ImagePullBackOff, ... as kubectl shows it")
    restarts: int = 0
    node: str | None = None
    template_hash: str | None = Field(None, description="pod-template-hash: which revision the pod runs")

    def __str__(self) -> str:
        return f"{self.name} {self.reason or self.phase}{'' if self.ready else ' (not Ready)'}, {self.restarts} restarts"


class ServiceScope(BaseModel):
    """Seed 001 step 1, "Verify Outage Scope", for one Service: its pods, the Deployment behind it,
    the Ingresses that route to it, its health and inference URLs."""

    namespace: str
    name: str
    found: bool = Field(description="the Service exists (False: only a human can recreate it)")
    selector: dict[str, str] = Field(default_factory=dict)
    deployments: list[str] = Field(default_factory=list, description="Deployments whose pods the selector picks")
    pods: list[ServicePod] = Field(default_factory=list)
    ingresses: list[str] = Field(default_factory=list, description="Ingresses with a backend on this Service")
    health_url: str | None = Field(None, description="annotation llm-d.io/health-url")
    inference_url: str | None = Field(
        None, description="annotation llm-d.io/inference-url, else the health URL's /v1/chat/completions")

    @property
    def ready_pods(self) -> int:
        return sum(1 for p in self.pods if p.ready)

    @property
    def unready(self) -> list[ServicePod]:
        return [p for p in self.pods if not p.ready and p.phase not in ("Succeeded",)]


class Revision(BaseModel):
    """One line of `kubectl rollout history`, from the Deployment's ReplicaSets."""

    revision: int
    created: datetime | None = None
    images: dict[str, str] = Field(default_factory=dict, description="container -> image")
    change_cause: str | None = None
    template_hash: str | None = None
    replicas: int = 0
    labels: dict[str, str] = Field(default_factory=dict, description="its pod template's labels "
                                   "(llm-d.io/model-version: the model version it serves)")

    def __str__(self) -> str:
        images = ", ".join(f"{c}={i}" for c, i in self.images.items())
        return f"revision {self.revision} ({images})" + (f": {self.change_cause}" if self.change_cause else "")


class RolloutHistory(BaseModel):
    """`kubectl rollout history deployment/NAME -n NS`, newest last."""

    namespace: str
    name: str
    current: int | None = Field(None, description="the revision the Deployment's template is")
    revisions: list[Revision] = Field(default_factory=list)

    def revision(self, number: int | None) -> Revision | None:
        return next((r for r in self.revisions if r.revision == number), None)

    @property
    def previous(self) -> Revision | None:
        """The newest revision before the current one (what `kubectl rollout undo` goes back to)."""
        earlier = [r for r in self.revisions if self.current is not None and r.revision < self.current]
        return earlier[-1] if earlier else None


class RolloutUndo(_Input):
    """`kubectl rollout undo deployment/NAME -n NS --to-revision=N`: the Deployment's pod template
    set back to revision N's. `from_revision`: the revision the playbook saw as current; a retry that
    finds the template already at N's does nothing."""

    namespace: str
    name: str
    to_revision: int = Field(ge=1)
    from_revision: int | None = None
    rollback: bool = Field(False, description="undoing an earlier undo of this incident (its rollback)")
    dry_run: bool = False


class ServicePodsDeletion(_Input):
    """`kubectl delete pods -l SELECTOR -n NS` (seed 001 "Pod Recovery"), limited to the pods the
    scope read named (uid-checked, so a replacement is never deleted by a retry)."""

    namespace: str
    deployment: str = Field(min_length=1, description="the Deployment the pods belong to (the claim's object)")
    pods: list[str] = Field(min_length=1)
    uids: dict[str, str] = Field(default_factory=dict, description="pod -> uid as read")
    dry_run: bool = False


class InferenceProbe(_Input):
    """`curl -X POST URL -d '{"model": M, "messages": [{"role": "user", "content": "test"}]}'`
    (seed 001 validation); asks for one token."""

    url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    timeout_seconds: float = Field(10, gt=0)
