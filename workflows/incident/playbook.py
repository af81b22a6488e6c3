"""A playbook declares itself once: name, workflow, policy, scope and the alerts it handles.

Each `workflows/<playbook>.py` ends with `PLAYBOOK = Playbook(...)`; `workflows/playbooks/catalog.py`
lists them, and the worker's registration, the webhook's routing and the drill catalogue all
read that list (tests/test_registry.py fails if they disagree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workflows.incident.models import Severity
from workflows.incident.scope import Scope

if TYPE_CHECKING:
    from workflows.incident.state import PlaybookPolicy


@dataclass(frozen=True)
class Playbook:
    policy: PlaybookPolicy
    workflow: type  # the @workflow.defn class
    scope: Scope
    # alert name -> the severity the seeds give it (None: the playbook's default)
    alerts: dict[str, Severity | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The runbook name: the `Runbook` search attribute, the CLI's and routing's name."""
        return self.policy.runbook

    @property
    def workflow_type(self) -> str:
        defn: Any = getattr(self.workflow, "__temporal_workflow_definition")
        return defn.name
