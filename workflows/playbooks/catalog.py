"""Every playbook the worker runs: this project's, and those other installed packages declare.

A package adds playbooks through the entry point group `llm_runbooks.playbooks`; each entry
names a `Playbook` (or a module whose `PLAYBOOK` is one), e.g. in its pyproject.toml::

    [project.entry-points."llm_runbooks.playbooks"]
    model-cache-errors = "team_runbooks.cache:PLAYBOOK"

The worker registers `ALL`, routing maps alert names through the declared alerts, the drills and
the RBAC test read the same declarations. A playbook not listed here does not exist.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from types import ModuleType

from workflows.incident import Drill, Playbook, Severity
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

TRIAGE = "triage"
ENTRY_POINTS = "llm_runbooks.playbooks"

BUILT_IN: tuple[Playbook, ...] = (
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


class PlaybookLoadError(RuntimeError):
    """An installed package declares a playbook that cannot be used: it names which and why."""


def installed_playbooks() -> tuple[Playbook, ...]:
    """The playbooks other installed packages declare (entry point group `llm_runbooks.playbooks`),
    by entry point name. PlaybookLoadError names the package and entry for one that does not load or
    is not a Playbook: a worker must not start without a playbook its team installed."""
    found = []
    for ep in sorted(entry_points(group=ENTRY_POINTS), key=lambda e: e.name):
        where = f"entry point {ep.name!r} = {ep.value!r} of {ep.dist.name if ep.dist else 'an installed package'}"
        try:
            value = ep.load()
        except Exception as exc:  # noqa: BLE001 - re-raised with where it came from
            raise PlaybookLoadError(f"{where} does not load: {type(exc).__name__}: {exc}") from exc
        if isinstance(value, ModuleType):
            value = getattr(value, "PLAYBOOK", None)
        if not isinstance(value, Playbook):
            raise PlaybookLoadError(
                f"{where} is not a Playbook (a module's PLAYBOOK or the object itself): {type(value).__name__}"
            )
        found.append(value)
    return tuple(found)


def _checked(playbooks: tuple[Playbook, ...]) -> tuple[Playbook, ...]:
    names: dict[str, str] = {}
    alerts: dict[str, str] = {}
    drills: dict[str, str] = {}
    for p in playbooks:
        for key, seen, what in ((p.name, names, "playbook name"), (p.workflow_type, names, "workflow type")):
            if key in seen:
                raise PlaybookLoadError(f"{what} {key!r} is declared twice ({p.workflow.__module__})")
            seen[key] = p.name
        for alert in p.alerts:
            if alert in alerts:
                raise PlaybookLoadError(f"alert {alert} is declared by two playbooks: {alerts[alert]}, {p.name}")
            alerts[alert] = p.name
        for drill in p.drills:
            if drill.scenario in drills:
                raise PlaybookLoadError(
                    f"drill {drill.scenario} is declared by two playbooks: {drills[drill.scenario]}, {p.name}"
                )
            drills[drill.scenario] = p.name
            if drill.alert not in p.alerts:
                raise PlaybookLoadError(
                    f"{p.name}'s drill {drill.scenario} raises {drill.alert}, which the playbook does not declare"
                )
    return playbooks


ALL: tuple[Playbook, ...] = _checked(BUILT_IN + installed_playbooks())

PLAYBOOKS_BY_NAME: dict[str, Playbook] = {p.name: p for p in ALL}

# runbook name (as in the Runbook search attribute, the CLI and alert routing) -> workflow type name
PLAYBOOKS: dict[str, str] = {p.name: p.workflow_type for p in ALL}

# alert name -> (severity, where the runbook says so), as the playbooks declare
ALERT_SEVERITY: dict[str, tuple[Severity, str]] = {
    name: (alert.severity, alert.source) for p in ALL for name, alert in p.alerts.items()
}

# drill scenario (before any ":cause") -> (the playbook, its drill)
DRILLS: dict[str, tuple[Playbook, Drill]] = {d.scenario: (p, d) for p in ALL for d in p.drills}


def playbook(runbook: str) -> Playbook:
    """The playbook named `runbook`; ValueError naming the known ones otherwise."""
    try:
        return PLAYBOOKS_BY_NAME[runbook]
    except KeyError:
        raise ValueError(f"no playbook named {runbook!r}; known: {', '.join(sorted(PLAYBOOKS))}") from None


def workflow_type(runbook: str) -> str:
    """The workflow type that runs `runbook`; a clear error for a name no playbook has."""
    return playbook(runbook).workflow_type
