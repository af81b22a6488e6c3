"""Inputs and outputs of the Kubernetes activities, free of the `kubernetes` package.

Workflows import these models freely; only the worker imports `activities.kube` and the
activity modules `activities.kube_api`, which pull in the (large, non-deterministic) Kubernetes client.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# kubectl's own annotation, so `kubectl rollout history` and dashboards read our restarts as restarts.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# Who restarted the deployment: the incident and step, so a retry recognises its own restart.
RESTARTED_BY = "llm-runbooks.io/restarted-by"
# The model service's health URL as llm-d publishes it on the Service.
HEALTH_URL_ANNOTATION = "llm-d.io/health-url"
# The pod template label the llm-d operator sets from spec.model.version: which model version a pod serves.
MODEL_VERSION_LABEL = "llm-d.io/model-version"
MAINTENANCE_INGRESS = "maintenance-mode"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- reads ----------------------------------------------------------------------------------


class PodQuery(_Input):
    namespace: str | None = Field(None, description="None: all namespaces")
    label_selector: str | None = None


class PodSummary(BaseModel):
    """One line of `kubectl get pods`, plus why a pod is unhealthy."""

    namespace: str
    name: str
    phase: str
    ready: bool
    ready_containers: int
    containers: int
    restarts: int
    # CrashLoopBackOff / Error / ImagePullBackOff / OOMKilled ... as kubectl's STATUS column shows
    reason: str | None = None
    node: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.reason or self.phase

    @property
    def finished(self) -> bool:
        """Ran to completion (a Job's pod, a one-off hook): not Ready by design, and nothing to heal."""
        return self.phase == "Succeeded"

    @property
    def unhealthy(self) -> bool:
        """SOP-001's test: `0/1 Running`, `Error` or `CrashLoopBackOff` (and any other not-ready pod).

        A Succeeded pod is not unhealthy: its containers exited 0 and it will never be Ready again,
        so restarting its controller would fix nothing.
        """
        if self.finished:
            return False
        return not self.ready or self.reason is not None

    def __str__(self) -> str:
        """`kubectl get pods` in one phrase: `llm-d-operator-x 0/1 CrashLoopBackOff, 7 restarts`."""
        restarts = f", {self.restarts} restarts" if self.restarts else ""
        return f"{self.name} {self.ready_containers}/{self.containers} {self.status}{restarts}"


class LLMDeploymentQuery(_Input):
    namespace: str | None = Field(None, description="None: all namespaces (kubectl -A)")


class LLMDeploymentSummary(BaseModel):
    namespace: str
    name: str
    phase: str = Field(description="status.phase: Ready / Pending / Failed / Unknown")
    model: str | None = Field(None, description="spec.model; seed 002's object form as 'modelUri@version'")
    model_version: str | None = Field(None, description="spec.model.version (seed 002's object form only)")
    previous_versions: list[str] = Field(
        default_factory=list, description="spec.rollback.previousVersions: the last known good version first")
    replicas: int | None = None
    ready_replicas: int = 0
    url: str | None = None
    health_url: str | None = Field(
        None, description="the Service's llm-d.io/health-url annotation, else status.url + /health"
    )

    @property
    def ready(self) -> bool:
        return self.phase == "Ready"


class NodeQuery(_Input):
    label_selector: str | None = None


class NodeSummary(BaseModel):
    name: str
    ready: bool
    unschedulable: bool = False
    conditions: dict[str, str] = Field(default_factory=dict, description="type -> status")
    gpu_capacity: int = 0
    gpu_allocatable: int = 0
    labels: dict[str, str] = Field(default_factory=dict)


class LogQuery(_Input):
    """`kubectl logs -n NS deployment/NAME --tail=N` or `kubectl logs -n NS POD --tail=N`."""

    namespace: str
    deployment: str | None = None
    pod: str | None = None
    container: str | None = None
    tail_lines: int = Field(20, ge=1, le=5000)

    @model_validator(mode="after")
    def _one_target(self) -> LogQuery:
        if (self.deployment is None) == (self.pod is None):
            raise ValueError("give exactly one of deployment or pod")
        return self


class PodLog(BaseModel):
    namespace: str
    pod: str
    text: str


class DeploymentRef(_Input):
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


# ---- writes ---------------------------------------------------------------------------------


class RestartRequest(_Input):
    """`kubectl rollout restart deployment/NAME -n NS`, stamped by one incident step.

    `restarted_at` and `restarted_by` come from the workflow (its clock and its incident id +
    step), so a retry writes the very same values and recognises them as already there.
    """

    namespace: str
    name: str
    restarted_at: str = Field(min_length=1, description="RFC 3339 time for kubectl's restartedAt")
    restarted_by: str = Field(min_length=1, description="incident id / step")
    dry_run: bool = False


class RolloutWait(_Input):
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
    replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    waited_seconds: float = 0


class IngressPath(BaseModel):
    path: str = "/"
    path_type: str = "Prefix"
    service: str
    port: int


class IngressSpec(_Input):
    """An Ingress we own, e.g. SOP-001's maintenance page."""

    namespace: str
    name: str
    host: str | None = None
    paths: list[IngressPath]
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    ingress_class: str | None = None
    dry_run: bool = False


class IngressRef(_Input):
    namespace: str
    name: str
    dry_run: bool = False


class ImageChange(_Input):
    """`kubectl set image deployment/NAME CONTAINER=IMAGE -n NS`."""

    namespace: str
    deployment: str
    container: str
    image: str = Field(min_length=1)
    dry_run: bool = False


class ScaleRequest(_Input):
    namespace: str
    deployment: str
    replicas: int = Field(ge=0)
    dry_run: bool = False


class LLMDeploymentPatch(_Input):
    """A merge patch to an LLMDeployment's spec, e.g. {"serving": {"batchSize": 16}}."""

    namespace: str
    name: str
    spec: dict[str, Any] = Field(min_length=1)
    dry_run: bool = False
