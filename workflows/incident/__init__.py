"""The incident engine: what a playbook imports. Everything a playbook needs is named here
(`from workflows.incident import Incident, Playbook, ...`); the modules beside this one are the
engine's own parts (state, journal, guard, gates, controls, escalation, alerts, Slack, report,
coordination) and may change shape.

No base class: a playbook holds an `Incident`.

How a playbook uses it (workflows/playbooks/service_outage/playbook.py is the full example)::

    @workflow.defn
    class ServiceOutage:
        @workflow.init
        def __init__(self, inp: ServiceOutageInput) -> None:
            self.incident = Incident(inp, POLICY)     # registers every handler before any update runs
            self.cluster = Cluster(self.incident, inp.timings)   # workflows/incident/calls.py: typed activity calls

        @workflow.run
        async def run(self, inp: ServiceOutageInput) -> str:
            return await self.incident.run(self.respond)

        async def respond(self) -> None:
            async with self.incident.step("2. Quick health check"):
                pods = await self.cluster.list_pods(PodQuery(namespace="llm-d-system"))
            verdict = await self.incident.poll_until(self.look, lambda v: v.ok, deadline=deadline,
                                                     every=timedelta(seconds=30), summary="next look")
            change = await self.cluster.restart_deployment(req, finding="operator pod x CrashLoopBackOff")
            if await self.incident.approval("maintenance-mode", "Enable maintenance mode?", destructive=True):
                ...
            self.incident.resolve("health endpoint 200 and every LLMDeployment Ready")

Construct the Incident in a `@workflow.init` `__init__`: an Update that arrives in the same first
workflow task as the start is looked up before `run()` begins
(tests/test_incident_controls.py::test_update_right_after_start_is_not_lost).

What a playbook can rely on:
- `act()` returns None when automation must not write: handed over, resolved, or every alert of
  the scope resolved (the fault is gone) unless a human ordered a rollback. In shadow mode every
  write goes as a server-side dry run (`dry_run=True` on its request) and is recorded as "would have".
- `approval()` returns False on reject, timeout (which also escalates), hand-over, resolution, or
  when the fault goes away while it waits (the gate is withdrawn, its Slack message updated).
- A human's resolve cancels the playbook body; `resolve()` by automation lets the body finish.
- Any exception escaping the body (an activity failure, a bug such as KeyError) fails that step,
  marks the incident failed and escalates, in the same workflow task; the incident then waits for
  a human or for its alerts to resolve.
- Raise nothing for "the fix didn't work": return and let `run()` wait.
- Waits for the cluster: `pause()` and `poll_until()` end early once `interrupted` (a rollback asked
  for, a hand-over, the fault gone); `missing_target()` is what a playbook says when its alert
  names no object to act on.
"""

from workflows.incident.approval import gate_name
from workflows.incident.calls import Cluster, Read, Write
from workflows.incident.escalation import EscalationPolicy
from workflows.incident.facades import KServe, Prometheus
from workflows.incident.incident import Incident
from workflows.incident.loops import missing_target, pause, poll_until
from workflows.incident.models import EscalationStep, IncidentInput, Severity, SopTimings
from workflows.incident.playbook import Alert, Drill, Playbook, WorkerClients
from workflows.incident.scope import Scope
from workflows.incident.state import IncidentState, PlaybookPolicy, failure_text
from workflows.incident.timeline import TimelineEntry

__all__ = [
    "Alert",
    "Cluster",
    "Drill",
    "EscalationPolicy",
    "EscalationStep",
    "Incident",
    "IncidentInput",
    "IncidentState",
    "KServe",
    "Playbook",
    "PlaybookPolicy",
    "Prometheus",
    "Read",
    "Scope",
    "Severity",
    "SopTimings",
    "TimelineEntry",
    "WorkerClients",
    "Write",
    "failure_text",
    "gate_name",
    "missing_target",
    "pause",
    "poll_until",
]
