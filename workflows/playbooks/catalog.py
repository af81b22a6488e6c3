"""Every playbook this project runs, read from each module's `PLAYBOOK` declaration.

The worker registers `ALL`, routing maps alert names through `PLAYBOOKS_BY_NAME` and the
declared alerts, the CLI and drills use the names. A playbook not listed here does not exist.
"""

from __future__ import annotations

from workflows.playbooks.gpu_nodes import gpu_hardware_failure, gpu_unavailable
from workflows.playbooks.high_latency import playbook as high_latency
from workflows.playbooks.high_memory import playbook as high_memory
from workflows.playbooks.kserve import (
    error_rate as kserve_error_rate,
    gpu_pending as kserve_gpu_pending,
    latency as kserve_latency,
    model_not_loading as kserve_model_not_loading,
)
from workflows.playbooks.llmd_error_rate import playbook as llmd_error_rate
from workflows.playbooks.model_deploy_failure import playbook as model_deploy_failure
from workflows.playbooks.service_down import playbook as service_down
from workflows.playbooks.service_outage import playbook as service_outage
from workflows.playbooks.triage import playbook as triage
from workflows.incident.playbook import Playbook

TRIAGE = "triage"

ALL: tuple[Playbook, ...] = (
    service_outage.PLAYBOOK,
    service_down.PLAYBOOK,
    high_memory.PLAYBOOK,
    high_latency.PLAYBOOK,
    llmd_error_rate.PLAYBOOK,
    gpu_unavailable.PLAYBOOK,
    gpu_hardware_failure.PLAYBOOK,
    model_deploy_failure.PLAYBOOK,
    kserve_error_rate.PLAYBOOK,
    kserve_model_not_loading.PLAYBOOK,
    kserve_gpu_pending.PLAYBOOK,
    kserve_latency.PLAYBOOK,
    triage.PLAYBOOK,
)

PLAYBOOKS_BY_NAME: dict[str, Playbook] = {p.name: p for p in ALL}

# runbook name (as in the Runbook search attribute, the CLI and alert routing) -> workflow type name
PLAYBOOKS: dict[str, str] = {p.name: p.workflow_type for p in ALL}


def playbook(runbook: str) -> Playbook:
    """The playbook named `runbook`; ValueError naming the known ones otherwise."""
    try:
        return PLAYBOOKS_BY_NAME[runbook]
    except KeyError:
        raise ValueError(f"no playbook named {runbook!r}; known: {', '.join(sorted(PLAYBOOKS))}") from None


def workflow_type(runbook: str) -> str:
    """The workflow type that runs `runbook`; a clear error for a name no playbook has."""
    return playbook(runbook).workflow_type
