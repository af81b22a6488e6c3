"""Input, timings and pure helpers of the service-down playbook (workflows/playbooks/service_down/playbook.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import ConfigDict, Field
from temporalio import workflow

from workflows.incident import IncidentInput, SopTimings

with workflow.unsafe.imports_passed_through():
    from activities.kube.deployments_models import Revision, RolloutHistory
    from activities.kube.services_models import ServiceScope

GATE_ROLLOUT_UNDO = "rollout-undo"

# The labels an alert names its service by: the scrape target's namespace and service (what
# kubernetes_sd relabelling gives, and the simulator's scrape configuration sets).
SERVICE_LABELS = ("namespace", "service")


class ServiceDownTimings(SopTimings):
    """How long seed 001's service-down runbook waits; its values by default, shorter for drills."""

    cluster_waits = (
        "rollout_timeout_seconds",
        "rollout_poll_seconds",
        "validation_timeout_seconds",
        "validation_poll_seconds",
    )
    model_config = ConfigDict(extra="forbid")

    rollout_timeout_seconds: float = Field(300, gt=0, description="kubectl rollout status after the undo")
    rollout_poll_seconds: float = Field(5, gt=0)
    validation_timeout_seconds: float = Field(300, gt=0, description="how long the service gets to answer again")
    validation_poll_seconds: float = Field(10, gt=0)
    probe_timeout_seconds: float = Field(10, gt=0, description="one health or inference request")


class ServiceDownInput(IncidentInput):
    """IncidentInput plus the runbook's knobs, all defaulted. The Service comes from the alert's
    `namespace` and `service` labels unless `service` is given."""

    service: str | None = None
    change_window_minutes: float = Field(
        60, gt=0, description="a revision rolled out this long before the alert started counts as a recent change"
    )
    model: str = Field("llm-d", min_length=1, description="the model name of the validation request")
    service_manifest: str = Field(
        "manifests/service.yaml", description="what a human re-applies when the Service itself must be recreated"
    )
    timings: ServiceDownTimings = Field(default_factory=ServiceDownTimings)


def recent_rollout(history: RolloutHistory, since: datetime) -> tuple[Revision, Revision] | None:
    """(current, previous) when the current revision was rolled out at or after `since` and there is
    an earlier revision to go back to; None otherwise."""
    current, previous = history.revision(history.current), history.previous
    if current is None or previous is None or current.created is None or current.created < since:
        return None
    return current, previous


def scope_line(scope: ServiceScope) -> str:
    pods = "; ".join(str(p) for p in scope.pods) or "no pods"
    return f"{scope.namespace}/{scope.name}: {scope.ready_pods}/{len(scope.pods)} pods Ready ({pods})" + (
        f"; ingress {', '.join(scope.ingresses)}" if scope.ingresses else ""
    )


def window_start(starts_at: datetime, minutes: float) -> datetime:
    return starts_at - timedelta(minutes=minutes)
