"""SOP-001's vocabulary: its input and timings, what the health check and verification see, its
gates and patch ids. The steps themselves are in workflows/playbooks/service_outage/playbook.py.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

from workflows.incident import IncidentInput, SopTimings

with workflow.unsafe.imports_passed_through():
    from activities.kube.llmdeployments_models import LLMDeploymentSummary
    from activities.kube.models import PodSummary
    from activities.kube.nodes_models import NodeSummary
    from activities.kube.services_models import IngressPath, IngressSpec

GATE_MAINTENANCE = "maintenance-mode"
MAINTENANCE_INGRESS = "maintenance-mode"  # the Ingress SOP-001's maintenance page is served by
GATE_OPERATOR_ROLLBACK = "rollback-operator"


class OutageTimings(SopTimings):
    """How long SOP-001 waits, polls and allows each call; SOP values by default, shorter for drills."""

    cluster_waits = (
        "operator_rollout_timeout_seconds",
        "rollout_poll_seconds",
        "restart_grace_seconds",
        "verification_timeout_seconds",
        "verification_poll_seconds",
    )

    model_config = ConfigDict(extra="forbid")

    operator_rollout_timeout_seconds: float = Field(180, gt=0, description="kubectl rollout status --timeout=180s")
    rollout_poll_seconds: float = Field(5, gt=0)
    restart_grace_seconds: float = Field(
        300, ge=0, description="how long the restarts get to restore service before maintenance mode is considered"
    )
    verification_timeout_seconds: float = Field(600, gt=0, description="bounded wait for a verified recovery")
    verification_poll_seconds: float = Field(15, gt=0)
    health_timeout_seconds: float = Field(5, gt=0, description="curl's patience with the health endpoint")


class MaintenancePage(BaseModel):
    """The seed's `maintenance-mode` ingress, sending every host to the maintenance service."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = "default"
    name: str = MAINTENANCE_INGRESS
    host: str = "*.your-domain.com"
    service: str = "maintenance-service"
    port: int = 80

    def ingress(self) -> IngressSpec:
        """The ingress `kubectl apply` creates: every path of `host` to the maintenance service."""
        return IngressSpec(
            namespace=self.namespace,
            name=self.name,
            host=self.host,
            annotations={"nginx.ingress.kubernetes.io/default-backend": self.service},
            labels={"app.kubernetes.io/managed-by": "llm-runbooks"},
            paths=[IngressPath(path="/", path_type="Prefix", service=self.service, port=self.port)],
        )


class ServiceOutageInput(IncidentInput):
    """IncidentInput plus SOP-001's knobs, all defaulted: a plain IncidentInput starts it too."""

    operator_namespace: str = "llm-d-system"
    operator_deployment: str = "llm-d-operator"
    operator_container: str = "llm-d-operator"
    operator_previous_image: str | None = Field(
        None,
        description="rollback target when the cluster keeps no earlier operator revision (SOP: llm-d/operator:v0.4.0)",
    )
    logs_tail_lines: int = Field(20, ge=1, description="kubectl logs --tail=20")
    maintenance: MaintenancePage = Field(default_factory=MaintenancePage)
    timings: OutageTimings = Field(default_factory=OutageTimings)


class ClusterHealth(BaseModel):
    """What the quick health check saw."""

    operator_pods: list[PodSummary]
    llm_deployments: list[LLMDeploymentSummary]
    nodes: list[NodeSummary]

    @property
    def operator_unhealthy(self) -> list[PodSummary]:
        return [p for p in self.operator_pods if p.unhealthy]

    @property
    def not_ready(self) -> list[LLMDeploymentSummary]:
        return [d for d in self.llm_deployments if not d.ready]

    @property
    def not_ready_nodes(self) -> list[str]:
        return [n.name for n in self.nodes if not n.ready]

    def notes(self) -> list[str]:
        """The timeline's lines: operator pods, LLMDeployments, nodes."""
        pods, llmds = self.operator_pods, self.llm_deployments
        return [
            "operator pods: "
            + (", ".join(f"{p.name} {p.ready_containers}/{p.containers} {p.status}" for p in pods) or "none"),
            "LLMDeployments: " + (", ".join(f"{d.namespace}/{d.name} {d.phase}" for d in llmds) or "none"),
            f"nodes: {len(self.nodes)}, not Ready: {', '.join(self.not_ready_nodes) or 'none'}",
        ]

    def __str__(self) -> str:
        return (
            f"operator {'unhealthy' if self.operator_unhealthy else 'healthy'}; "
            f"{len(self.not_ready)}/{len(self.llm_deployments)} LLMDeployments not Ready; "
            f"{len(self.not_ready_nodes)}/{len(self.nodes)} nodes not Ready"
        )


class Verdict(BaseModel):
    """One verification pass: every LLMDeployment Ready and every health endpoint 2xx."""

    not_ready: list[str] = Field(default_factory=list)
    unhealthy: list[str] = Field(default_factory=list)

    @property
    def restored(self) -> bool:
        return not self.not_ready and not self.unhealthy

    def __str__(self) -> str:
        if self.restored:
            return "every LLMDeployment Ready and every health endpoint answering 2xx"
        parts = []
        if self.not_ready:
            parts.append(f"not Ready: {', '.join(self.not_ready)}")
        if self.unhealthy:
            parts.append(f"health failing: {', '.join(self.unhealthy)}")
        return "; ".join(parts)
