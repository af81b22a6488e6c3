"""Seed 004's KServe incidents: the input every KServe playbook takes, its timings, and the
helpers they share (which InferenceService the alert names, the seed's commands filled in).
The steps are in workflows/playbooks/kserve/error_rate.py, kserve_model_not_loading.py, kserve_gpu_pending.py.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, Field

from workflows.incident import EscalationPolicy, EscalationStep, IncidentInput, SopTimings

ISVC_LABEL = "inferenceservice"  # the alert label that names the InferenceService (the scope's)
GATE_CANARY_ROLLBACK = "canary-rollback"
GATE_REDEPLOY = "redeploy"
RESTART = "restart-predictor"
CANARY = "canary-rollback"


class KServeTimings(SopTimings):
    """Waits on the cluster (drills shorten them: `cluster_waits`)."""

    cluster_waits: ClassVar[tuple[str, ...]] = ("verification_timeout_seconds", "verification_poll_seconds")

    model_config = ConfigDict(extra="forbid")

    verification_timeout_seconds: float = Field(
        600, gt=0, description="how long recovery may take (model load 2-5 min)"
    )
    verification_poll_seconds: float = Field(15, gt=0)


class KServeIncidentInput(IncidentInput):
    """IncidentInput plus the InferenceService (else the alert's `namespace`/`inferenceservice` labels)
    and the seed's settings, all defaulted."""

    inferenceservice: str | None = Field(None, description="the InferenceService; default: the alert's label")
    serving_namespace: str = Field("mlops-serving", description="seed 004's namespace, when the alert names none")
    log_tail_lines: int = Field(100, ge=1, le=5000, description="seed 004: `kubectl logs ... --tail=100`")
    canary_window_minutes: float = Field(
        60, gt=0, description="a canary created this long before the alert's startsAt counts as 'in the window'"
    )
    eks_cluster: str = Field("llm-mlops-dev", description="seed 004's `eksctl scale nodegroup --cluster`")
    gpu_nodegroup: str = Field("gpu-inference", description="seed 004's `--name`")
    timings: KServeTimings = Field(default_factory=KServeTimings)

    def target(self) -> tuple[str, str | None]:
        """(namespace, InferenceService name or None) the alert points at."""
        labels = self.alert.labels
        namespace = self.namespace or labels.get("namespace") or self.serving_namespace
        name = self.inferenceservice or labels.get(ISVC_LABEL)
        service = labels.get("service", "")
        if not name and service.endswith("-predictor"):
            name = service.removesuffix("-predictor")
        return namespace, name


def eksctl_scale(inp: KServeIncidentInput, nodes: int) -> str:
    """Seed 004's node-group scaling command, filled in."""
    return f"eksctl scale nodegroup --cluster {inp.eks_cluster} --name {inp.gpu_nodegroup} --nodes {nodes}"


# Seed 004's contacts ("Contacts" table): ML Platform On-Call (PagerDuty, at once) is the first
# responder; the Model Owner in #model-team at 15 minutes, Infrastructure in #platform at 30. With
# `pagerduty.roles` naming "Model Owner" or "Infrastructure", each mark pages that service too.
FIRST_RESPONDER_004 = "ML Platform On-Call"
SEED_004_CONTACTS = EscalationPolicy(
    [
        EscalationStep(after_minutes=15, level=1, notify="Model Owner (#model-team)"),
        EscalationStep(after_minutes=30, level=2, notify="Infrastructure (#platform)"),
    ]
)
# The patch under which a KServe incident escalates along SEED_004_CONTACTS (runs from before kept P1's marks).
SEED_004_CONTACTS_PATCH = "seed-004-contacts"
