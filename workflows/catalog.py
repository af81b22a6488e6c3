"""Which workflow type runs which playbook: the names routing and the CLI use, mapped to classes."""

from __future__ import annotations

TRIAGE = "triage"

# runbook name (as in the Runbook search attribute, the CLI and alert routing) -> workflow type name
PLAYBOOKS: dict[str, str] = {
    "service-outage": "ServiceOutage",
    TRIAGE: "Triage",
    "high-memory": "HighMemory",
    "gpu-unavailable": "GpuUnavailable",
    "model-deploy-failure": "ModelDeploymentFailure",
}


def workflow_type(runbook: str) -> str:
    """The workflow type that runs `runbook`; a clear error for a name no playbook has."""
    try:
        return PLAYBOOKS[runbook]
    except KeyError:
        raise ValueError(f"no playbook named {runbook!r}; known: {', '.join(sorted(PLAYBOOKS))}") from None
