"""`runbooks drill SCENARIO`: stage a failure on the simulator and raise the alert that pages for it.

The alert goes the way a real one does: through the triggers' Alertmanager webhook when
`runbooks dev` runs it, else through the same intake code straight to Temporal.

Every drill starts from a clean slate, so drills run one after another end as each does on a fresh
stack (`--no-reset` stages on top of the cluster as it is, e.g. to rehearse two faults at once):
1. the stack's open incidents are resolved by "drill" (terminated if they do not close in time): a
   later alert of the same scope would otherwise join an incident about the previous drill;
2. the coordinator is terminated, so its holds, its caps' counted writes and its alert ledger start
   empty: the next claim starts a fresh one. Only when the stack runs the simulator with drills
   enabled (`runbooks dev`); on any other Temporal nothing is forgotten;
3. the simulated cluster is reset to its baseline (`runbooks simulator inject baseline`).
With `--cluster NAME` (a stack of `runbooks dev --clusters ...`) all three happen on cluster NAME only,
the fault is staged on NAME's simulator and the alert carries NAME in its cluster label
(cli/drill_slate.py); without, on the default cluster, as before clusters had names.
Why not ask the coordinator to forget only the caps: a fresh stack has none of its memory, and
forgetting part of it would make drills pass that fail on a fresh stack (or the other way round).

`--shadow` labels the alert `runbooks_shadow="true"`, which the webhook always honours (it can only
make automation do less): every write of the playbook is a server-side dry run, recorded as "would
have", and the report's Actions table lists what would have changed. The staged fault stays.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from datetime import datetime, timedelta, timezone

import httpx
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.service import RPCError

from settings import Settings
from cli.control import ControlError, gate_commands
from cli.control import cli_flags as command_flags
from cli.drill_slate import DrillTarget, clean_slate, drill_target
from cli.settings import connect, read_dev_state
from workflows.incident.state import IncidentState
from workflows.incident.models import (
    QUERY_STATE,
    QUERY_TIMELINE,
    UPDATE_DECIDE,
    UPDATE_HUMAN_ACTION,
    Decision,
    HumanAction,
)
from workflows.incident.report import render_report
from workflows.incident.timeline import TimelineEntry
from workflows.incident.playbook import Drill, Playbook

# Prometheus fires only after a rule's condition has held for its `for:` period (a minute or more in
# the seeds' rules); a drill waits as long, in simulated time (each playbook's `Drill.pending_seconds`),
# so the playbook meets the fault as an on-call engineer would rather than in its first second.


def drills() -> dict[str, tuple[Playbook, Drill]]:
    """Drill scenario (before any ":cause") -> the playbook that answers it and its declared drill."""
    from workflows.playbooks.catalog import DRILLS

    return DRILLS


# The alert label that puts an incident in shadow mode (settings.Settings.mode_for).
SHADOW_LABEL = "runbooks_shadow"


def drill_alert(
    scenario: str,
    *,
    now: datetime,
    time_scale: float = 1.0,
    shadow: bool = False,
    cluster_labels: dict[str, str] | None = None,
) -> dict:
    """One Alertmanager v4 alert for the scenario, labelled as a drill (and `runbooks_shadow="true"`
    with `shadow`, and `cluster_labels`: the cluster's, e.g. {"cluster": "west"}). Raises ControlError
    for a scenario no drill pages for."""
    base, _, cause = scenario.partition(":")
    if base not in drills():
        raise ControlError(
            f"no drill for {scenario!r}; known: {', '.join(sorted(drills()))} (model-deploy-failure:<cause>)"
        )
    drill = drills()[base][1]
    # The declared labels carry the namespace and the scope (one LLMDeployment, node, service or
    # InferenceService), as the alert rule labels them.
    labels = {
        "alertname": drill.alert,
        "namespace": "default",
        **drill.labels,
        "drill": "true",
        "scenario": scenario,
        "time_scale": f"{time_scale:g}",
    }
    if cause:
        labels["cause"] = cause
    labels.update(cluster_labels or {})
    if shadow:
        labels[SHADOW_LABEL] = "true"
    fingerprint = hashlib.sha256(repr(sorted(labels.items())).encode()).hexdigest()[:16]
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": f"[drill] {drill.summary}", "description": f"Drill of scenario {scenario}"},
        "startsAt": now.isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "runbooks drill",
        "fingerprint": fingerprint,
    }


def resolve_scenario(name: str) -> str:
    """The scenario a drill of `name` stages (a playbook with causes gets its default cause).

    Raises ControlError naming the drills (or the playbook's causes) for a name no drill pages for."""
    from simulator.scenarios import scenario_name

    declared = drills().get(name)
    if declared is not None and declared[1].file is not None:
        return name  # a team's YAML fault: staged from its file, no causes
    try:
        scenario = scenario_name(name)
    except ValueError:
        base = name.partition(":")[0]
        if base in drills():  # a drill's scenario with a cause it does not have: name its causes
            from simulator.scenarios import causes

            known = causes(base)
            raise ControlError(
                f"no drill for {name!r}: "
                + (
                    f"{base}'s causes are {', '.join(f'{base}:{c}' for c in known)}"
                    if known
                    else f"{base} has no causes: drill `{base}`"
                )
                + " (`runbooks drill --list`)"
            ) from None
        raise ControlError(
            f"no drill for {name!r}; known: {', '.join(sorted(drills()))} "
            "(`runbooks drill --list` shows every scenario and cause)"
        ) from None
    if scenario.partition(":")[0] not in drills():
        raise ControlError(
            f"no drill for {name!r}: the simulator stages it, but no alert pages for it "
            f"(`runbooks simulator inject {scenario}`); drills: `runbooks drill --list`"
        )
    return scenario


def drill_catalogue() -> list[tuple[str, str, str, str]]:
    """(scenario, runbook, alert, note) for every scenario a drill stages: the simulator's in its
    order, then those staged from a playbook's own YAML fault file."""
    from simulator.scenarios import DEFAULT_CAUSE, SCENARIOS

    rows = []
    for scenario in SCENARIOS:
        base, _, cause = scenario.partition(":")
        if base not in drills() or drills()[base][1].file is not None:
            continue
        book, drill = drills()[base]
        note = f"default of `{base}`" if DEFAULT_CAUSE.get(base) == cause else ""
        rows.append((scenario, book.name, drill.alert, note))
    for scenario, (book, drill) in drills().items():
        if drill.file is not None:
            rows.append((scenario, book.name, drill.alert, f"staged from {drill.file.name}"))
    return rows


def print_catalogue() -> int:
    from simulator.scenarios import SCENARIOS

    rows = [("SCENARIO", "RUNBOOK", "ALERT", "")] + drill_catalogue()
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print(("  ".join(c.ljust(w) for c, w in zip(row, widths)) + (f"  ({row[3]})" if row[3] else "")).rstrip())
    others = [s for s in SCENARIOS if s != "baseline" and s.partition(":")[0] not in drills()]
    if others:
        print(
            f"\nstaged by the simulator without a drill alert (`runbooks simulator inject NAME`): {', '.join(others)}"
        )
    print("\nrun one: runbooks drill SCENARIO [--wait] [--auto-approve] [--shadow] [--no-reset]")
    return 0


async def run_drill(settings: Settings, args: argparse.Namespace) -> int:
    if getattr(args, "list", False):
        return print_catalogue()
    if not args.scenario:
        raise ControlError("name a scenario (`runbooks drill --list` shows them all)")
    scenario = resolve_scenario(args.scenario)  # refuses an unknown one before anything changes
    if scenario != args.scenario:
        from simulator.scenarios import causes

        others = [c for c in causes(args.scenario) if f"{args.scenario}:{c}" != scenario]
        print(
            f"{args.scenario} names no cause: drilling its default, {scenario} "
            f"(others: {', '.join(f'{args.scenario}:{c}' for c in others)})",
            flush=True,
        )
    args.scenario = scenario
    dev = read_dev_state(args.home) or {}
    if dev.get("temporal") and not args.temporal:
        # A drill rehearses on the dev stack: talk to the Temporal it runs unless told otherwise.
        settings = settings.model_copy(
            update={
                "temporal": settings.temporal.model_copy(
                    update={"address": dev["temporal"], "ui_url": dev.get("ui") or settings.temporal.ui_url}
                )
            }
        )
    target, settings = drill_target(settings, dev, args.home, getattr(args, "cluster", None))
    kubeconfig = target.kubeconfig
    from simulator.server import inject_into, stage_file_into

    now = datetime.now(timezone.utc).replace(microsecond=0)
    time_scale = float(dev.get("time_scale") or 1.0)
    shadow = bool(getattr(args, "shadow", False))
    alert = drill_alert(
        args.scenario, now=now, time_scale=time_scale, shadow=shadow, cluster_labels=target.labels
    )  # refuses an unknown scenario first
    client = await connect(settings)
    if not getattr(args, "no_reset", False):
        await clean_slate(client, dev, target, args.scenario)
    drill = drills()[args.scenario.partition(":")[0]][1]
    try:
        if drill.file is not None:
            stage_file_into(kubeconfig, drill.file)
        else:
            inject_into(kubeconfig, args.scenario)
    except Exception as exc:  # the simulator says why (unknown fault, a refused file, not reachable)
        raise ControlError(
            f"could not stage {args.scenario!r} on the simulator of cluster {target.name}: {exc}"
        ) from None
    pending = drill.pending_seconds / time_scale
    on = f" on cluster {target.name}" if target.labels else ""
    print(
        f"scenario {args.scenario} staged{on}; the alert fires after its `for:` period ({pending:.0f}s here)",
        flush=True,
    )
    await asyncio.sleep(pending)
    payload = {
        "version": "4",
        "status": "firing",
        "receiver": "runbooks-drill",
        "alerts": [alert],
        "groupLabels": {"alertname": alert["labels"]["alertname"]},
        "commonLabels": alert["labels"],
    }
    outcome = await _raise_alert(settings, dev, payload)
    incident = outcome["incident"]
    print(f"alert {alert['labels']['alertname']} raised ({outcome['action']})")
    print(f"incident: {incident}{await _where(client, incident, target)}")
    if shadow:
        print("shadow mode: every write is a server-side dry run; the report lists what would have changed")
    ui = settings.temporal.ui_url
    if ui:
        print(f"Temporal UI: {ui}/namespaces/{settings.temporal.namespace}/workflows/{incident}")
    if not args.wait:
        return 0
    return await _wait(
        client,
        incident,
        auto_approve=args.auto_approve,
        timeout=args.timeout,
        shadow=shadow,
        cli_flags=command_flags(args),
    )


async def _where(client: Client, incident: str, target: DrillTarget) -> str:
    """` (cluster west, task queue llm-runbooks.west)`: where the incident runs, and a warning when that
    is not the drilled cluster's queue (the triggers serve other clusters than dev.json says)."""
    try:
        queue = (await client.get_workflow_handle(incident).describe(rpc_timeout=_RPC)).task_queue
    except RPCError:
        return ""
    if queue != target.task_queue:
        return (
            f"  (on task queue {queue}, not cluster {target.name}'s {target.task_queue}: "
            "the triggers do not route this cluster as the dev stack does)"
        )
    return f"  (cluster {target.name}, task queue {queue})"


async def _raise_alert(settings: Settings, dev: dict, payload: dict) -> dict:
    triggers = dev.get("triggers")
    if triggers:
        headers = {"Authorization": f"Bearer {dev['webhook_token']}"} if dev.get("webhook_token") else {}
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.post(f"{triggers}/alertmanager", json=payload, headers=headers)
        if resp.status_code >= 300:
            raise ControlError(f"the webhook refused the drill alert: HTTP {resp.status_code} {resp.text[:300]}")
        return resp.json()["incidents"][0]
    from triggers.alertmanager import AlertIntake
    from triggers.payload import AlertmanagerPayload
    from triggers.metrics import TriggerMetrics

    client = await connect(settings)

    async def get_client() -> Client:
        return client

    result = await AlertIntake(settings, get_client, TriggerMetrics()).handle(
        AlertmanagerPayload.model_validate(payload)
    )
    return {"incident": result[0].incident, "action": result[0].action}


# Exit codes of `runbooks drill --wait`.
RESOLVED, FAILED, NEEDS_HUMAN = 0, 1, 3
_RPC = timedelta(seconds=10)


async def _wait(
    client: Client, incident: str, *, auto_approve: bool, timeout: float, shadow: bool = False, cli_flags: str = ""
) -> int:
    """Until the incident resolves, or automation has done all it can and a human must take over.

    A shadow drill cannot heal its fault (nothing was written): once automation is done, its report
    is the outcome, and the drill resolves the incident so the scope is free for the next alert.

    Polls with short RPCs rather than holding a long poll open: a CLI must be able to exit at any
    moment without an RPC still in flight.
    """
    handle = client.get_workflow_handle(incident)
    deadline = time.monotonic() + timeout
    announced: set[str] = set()
    while (await handle.describe(rpc_timeout=_RPC)).status == WorkflowExecutionStatus.RUNNING:
        if time.monotonic() > deadline:
            raise ControlError(f"{incident} still running after {timeout:.0f}s; see `runbooks show {incident}`")
        state = await _state(handle)
        if state and state.awaiting_human and shadow:
            return await _end_shadow_drill(handle, state)
        if state and state.awaiting_human:
            timeline = await handle.query(QUERY_TIMELINE, result_type=list[TimelineEntry], rpc_timeout=_RPC)
            print(f"outcome: {waiting_outcome(state)}")
            print(render_report(state, timeline))
            return NEEDS_HUMAN
        if auto_approve and state:
            await _approve_pending(handle, state)
        elif state:
            _print_waiting_gates(state, announced, cli_flags)
        await asyncio.sleep(0.5)
    try:
        report = await handle.result(rpc_timeout=_RPC)
    except WorkflowFailureError as exc:
        print(f"outcome: FAILED: {exc.cause}")
        return FAILED
    state = await handle.query(QUERY_STATE, result_type=IncidentState, rpc_timeout=_RPC)
    print(f"outcome: {state.status} (escalation level {state.escalation_level})")
    print(report)
    return RESOLVED if state.status == "resolved" and state.failure is None else FAILED


def waiting_outcome(state: IncidentState) -> str:
    """What `drill --wait` says when automation is done and the incident waits for a human (exit 3),
    from the state: nothing found, failed, handed over, escalated or not."""
    if state.nothing_found:
        return (
            f"nothing wrong found (no change made): waiting for the alert to resolve or a human ({state.nothing_found})"
        )
    if state.handed_over_to:
        return f"handed over to {state.handed_over_to}: waiting for them"
    if state.could_not_tell:
        return f"could not tell (no change made): {'; '.join(state.could_not_tell)}; escalated, waiting for a human"
    done = f"a step failed ({state.failure})" if state.failure else "automation could not recover"
    if state.escalation_level == 0:
        return f"{done}; waiting for a human (not escalated: {state.escalated_to} has it)"
    return f"{done}; escalated to level {state.escalation_level} ({state.escalated_to}), waiting for a human"


async def _end_shadow_drill(handle, state: IncidentState) -> int:
    if state.failure:
        print(f"outcome: FAILED: {state.failure}")
        return FAILED
    note = "shadow drill over: every write was a dry run, the cluster did not change"
    try:
        await handle.execute_update(
            UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="drill", note=note), result_type=str, rpc_timeout=_RPC
        )
    except WorkflowUpdateFailedError:
        pass  # resolved meanwhile (the alert, or a human)
    report = await handle.result(rpc_timeout=_RPC)
    print(
        f"outcome: shadow drill done; {len(state.changes)} change(s) would have been made "
        "(the staged fault is still there)"
    )
    print(report)
    return RESOLVED


async def _state(handle) -> IncidentState | None:
    try:
        return await handle.query(QUERY_STATE, result_type=IncidentState, rpc_timeout=_RPC)
    except RPCError:
        return None  # finished between polls, or the worker is busy: ask again next round


def _print_waiting_gates(state: IncidentState, announced: set[str], cli_flags: str) -> None:
    """Each gate once, as it starts waiting, with the commands that answer it."""
    for gate in state.pending_gates:
        if gate.gate in announced:
            continue
        announced.add(gate.gate)
        who = f" (approvers: {', '.join(gate.approvers)})" if gate.approvers else ""
        print(
            f"WAITING FOR APPROVAL: gate {gate.gate!r}: {gate.question} (until {gate.deadline:%H:%M:%S}Z){who}\n"
            + gate_commands(state.incident_id, gate.gate, cli_flags),
            flush=True,
        )


async def _approve_pending(handle, state: IncidentState) -> None:
    for gate in state.pending_gates:
        decision = Decision(gate=gate.gate, approved=True, by="drill", comment="auto-approved drill", via="drill")
        try:
            await handle.execute_update(UPDATE_DECIDE, decision, result_type=str, rpc_timeout=_RPC)
            print(f"auto-approved gate {gate.gate!r}: {gate.question}")
        except (WorkflowUpdateFailedError, RPCError):
            pass  # decided or withdrawn meanwhile
