"""What more than one Kubernetes family shares, free of the `kubernetes` package: a pod as kubectl
shows it, a pod pinned by uid, an event, the GPU resource name, a quantity's value, our annotations."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from activities.models import Request

GPU = "nvidia.com/gpu"
# kubectl's own annotation, so `kubectl rollout history` and dashboards read our restarts as restarts.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# Who restarted the Deployment or DaemonSet: the incident and step, so a retry recognises its own restart.
RESTARTED_BY = "llm-runbooks.io/restarted-by"
# The model service's health URL as llm-d publishes it on the Service.
HEALTH_URL_ANNOTATION = "llm-d.io/health-url"


class PodRef(Request):
    """One pod; `uid` pins the very pod that was read, so a retry never acts on its replacement."""

    namespace: str
    name: str
    uid: str | None = None


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


class EventEvidence(BaseModel):
    """One event about an object, as `kubectl get events` shows it."""

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


# ---- quantities ------------------------------------------------------------------------------

_SUFFIX = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "m": 1e-3,
    "": 1,
}
_QUANTITY = re.compile(r"^([0-9.]+(?:[eE][-+]?[0-9]+)?)([A-Za-z]*)$")


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity ("16Gi", "500m", "2") as a number; ValueError for nonsense."""
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]
