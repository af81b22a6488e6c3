"""Requests and answers of the Deployment activities (activities/kube/deployments.py), free of the
`kubernetes` package: a Deployment's images, scale and rollout status, `kubectl rollout restart`,
`kubectl set image`, `kubectl scale`, `kubectl rollout history` and `kubectl rollout undo`."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from activities.models import Request

# On a Deployment a scale-up changed: which incident step did it, and the replicas it found,
# so a retried write recognises its own attempt and still knows the original.
SCALED_BY_ANNOTATION = "llm-runbooks.io/scaled-by"
REPLICAS_BEFORE_ANNOTATION = "llm-runbooks.io/replicas-before"
CHANGE_CAUSE = "kubernetes.io/change-cause"


# ---- reads ----------------------------------------------------------------------------------


class DeploymentRef(Request):
    """One Deployment: `kubectl get deployment NAME -n NS` (its images, its scale, its rollout history)."""

    namespace: str
    name: str


class DeploymentImages(BaseModel):
    """The images a Deployment runs now and the ones its previous revision ran."""

    namespace: str
    name: str
    containers: dict[str, str] = Field(description="container -> image, current revision")
    previous: dict[str, str] | None = Field(
        None, description="container -> image of the newest earlier revision with other images (ReplicaSets)"
    )
    revision: int | None = None


class DeploymentScale(BaseModel):
    """`kubectl get deployment NAME -n NS`: replicas, ready, GPUs per pod."""

    namespace: str
    name: str
    replicas: int = Field(description="spec.replicas")
    ready_replicas: int = 0
    gpus_per_pod: int = Field(0, description="nvidia.com/gpu the pod template asks for (limits)")
    scaled_by: str | None = Field(None, description=f"the {SCALED_BY_ANNOTATION} annotation, if any")
    model: str | None = Field(None, description="the first container's `--model` argument (vLLM / llm-d)")


class RolloutWait(Request):
    """`kubectl rollout status deployment/NAME -n NS --timeout=...`."""

    namespace: str
    name: str
    timeout_seconds: float = Field(180, gt=0)
    poll_seconds: float = Field(2, gt=0)


class RolloutStatus(BaseModel):
    namespace: str
    name: str
    complete: bool
    message: str
    paused: bool = Field(default=False, description="spec.paused: nothing rolls until someone resumes it")
    replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    waited_seconds: float = 0


class Revision(BaseModel):
    """One line of `kubectl rollout history`, from the Deployment's ReplicaSets."""

    revision: int
    created: datetime | None = None
    images: dict[str, str] = Field(default_factory=dict, description="container -> image")
    change_cause: str | None = None
    template_hash: str | None = None
    replicas: int = 0
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="its pod template's labels (llm-d.io/model-version: the model version it serves)",
    )

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


# ---- writes ---------------------------------------------------------------------------------


class RestartRequest(Request):
    """`kubectl rollout restart deployment/NAME -n NS`, stamped by one incident step.

    `restarted_at` and `restarted_by` come from the workflow (its clock and its incident id +
    step), so a retry writes the very same values and recognises them as already there.
    """

    namespace: str
    name: str
    restarted_at: str = Field(min_length=1, description="RFC 3339 time for kubectl's restartedAt")
    restarted_by: str = Field(min_length=1, description="incident id / step")
    dry_run: bool = False


class ImageChange(Request):
    """`kubectl set image deployment/NAME CONTAINER=IMAGE -n NS`."""

    namespace: str
    deployment: str
    container: str
    image: str = Field(min_length=1)
    dry_run: bool = False


class ScaleRequest(Request):
    """`kubectl scale deployment NAME --replicas=N -n NS`, stamped with `change_key` (incident id /
    step) so a retry is recognised; `rollback`: restore a recorded original and remove the stamp."""

    namespace: str
    name: str
    replicas: int = Field(ge=0)
    change_key: str = Field(min_length=1)
    action: str = "scale deployment"
    rollback: bool = False
    dry_run: bool = False


class RolloutUndo(Request):
    """`kubectl rollout undo deployment/NAME -n NS --to-revision=N`: the Deployment's pod template
    set back to revision N's. `from_revision`: the revision the playbook saw as current; a retry that
    finds the template already at N's does nothing."""

    namespace: str
    name: str
    to_revision: int = Field(ge=1)
    from_revision: int | None = None
    rollback: bool = Field(False, description="undoing an earlier undo of this incident (its rollback)")
    dry_run: bool = False
