"""Requests and answers of the Service and Ingress activities (activities/kube/services.py), free of
the `kubernetes` package: one Service and what stands behind it (seed 001's outage scope), the
deletion of its pods, and an Ingress we own (SOP-001's maintenance page)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from activities.models import Request

INFERENCE_URL_ANNOTATION = "llm-d.io/inference-url"


class ServiceRef(Request):
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
        return (
            f"{self.name} {self.reason or self.phase}{'' if self.ready else ' (not Ready)'}, {self.restarts} restarts"
        )


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
        None, description="annotation llm-d.io/inference-url, else the health URL's /v1/chat/completions"
    )

    @property
    def ready_pods(self) -> int:
        return sum(1 for p in self.pods if p.ready)

    @property
    def unready(self) -> list[ServicePod]:
        return [p for p in self.pods if not p.ready and p.phase not in ("Succeeded",)]


class ServicePodsDeletion(Request):
    """`kubectl delete pods -l SELECTOR -n NS` (seed 001 "Pod Recovery"), limited to the pods the
    scope read named (uid-checked, so a replacement is never deleted by a retry)."""

    namespace: str
    deployment: str = Field(min_length=1, description="the Deployment the pods belong to (the claim's object)")
    pods: list[str] = Field(min_length=1)
    uids: dict[str, str] = Field(default_factory=dict, description="pod -> uid as read")
    dry_run: bool = False


class IngressPath(BaseModel):
    path: str = "/"
    path_type: str = "Prefix"
    service: str
    port: int


class IngressSpec(Request):
    """An Ingress we own, e.g. SOP-001's maintenance page."""

    namespace: str
    name: str
    host: str | None = None
    paths: list[IngressPath]
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    ingress_class: str | None = None
    dry_run: bool = False


class IngressRef(Request):
    namespace: str
    name: str
    dry_run: bool = False
