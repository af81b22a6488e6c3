"""The gateway playbook's input, its timings and its own activity's request and answer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from activities.models import Request
from workflows.incident import IncidentInput, SopTimings

GATE_RESTART = "restart-gateway"


class GatewayTimings(SopTimings):
    """Waits on the cluster (a drill shortens them: `cluster_waits`)."""

    cluster_waits = ("rollout_timeout_seconds", "verification_timeout_seconds", "verification_poll_seconds")

    model_config = ConfigDict(extra="forbid")

    rollout_timeout_seconds: float = Field(300, gt=0, description="`kubectl rollout status --timeout`")
    verification_timeout_seconds: float = Field(300, gt=0, description="how long the 5xx may take to stop")
    verification_poll_seconds: float = Field(15, gt=0)


class GatewayIncidentInput(IncidentInput):
    """IncidentInput plus where the gateway runs (else the alert's `namespace`/`deployment` labels)."""

    gateway_namespace: str = Field("litellm", description="when the alert names no namespace")
    gateway_deployment: str = Field("litellm", description="when the alert names no deployment")
    configmap: str = Field("litellm-config", description="the ConfigMap holding the proxy's config.yaml")
    log_tail_lines: int = Field(200, ge=1, le=5000, description="`kubectl logs deployment/litellm --tail=N`")
    timings: GatewayTimings = Field(default_factory=GatewayTimings)

    def target(self) -> tuple[str, str]:
        labels = self.alert.labels
        return (
            self.namespace or labels.get("namespace") or self.gateway_namespace,
            labels.get("deployment") or self.gateway_deployment,
        )


class RoutesQuery(Request):
    """`kubectl get configmap NAME -n NS -o yaml`: the proxy's model_list."""

    namespace: str
    configmap: str


class Upstream(BaseModel):
    """One model_list entry and whether the Service its api_base names exists."""

    model: str
    api_base: str
    namespace: str | None = None  # of the Service api_base names; None: not a cluster Service URL
    service: str | None = None
    exists: bool | None = None  # None: api_base names no in-cluster Service, so not checked

    def line(self) -> str:
        where = f"Service {self.namespace}/{self.service}" if self.service else f"`{self.api_base}`"
        state = {True: "exists", False: "NOT FOUND", None: "not checked"}[self.exists]
        return f"{self.model} → {where} ({state})"


class GatewayRoutes(BaseModel):
    found: bool  # False: no such ConfigMap, or no config.yaml in it
    why: str = ""  # when not found, or when config.yaml does not parse: what the API (or YAML) said
    upstreams: list[Upstream] = Field(default_factory=list)
