"""Shadow mode end to end: every playbook drilled on its fault with `mode="shadow"`.

The real Temporal dev server, the worker in-process, the simulated cluster in each playbook's fault
and the Slack Web API stand-in; every gate is approved as `runbooks drill --auto-approve` does, so
each playbook goes as far as it would. The simulator's audit log must hold only server-side dry
runs (`dryRun=All`), the fault must still be there, and the report must say "Shadow mode" and list
each would-have change in its Actions table. The GPU checks' own nvidia-smi probe and test pods are
reads, not remediation: they run in shadow mode too and are created and deleted once each.

`runbooks drill X --shadow` is checked the same way: the drill's alert carries
`runbooks_shadow="true"`, which the webhook honours whatever the configuration says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client

from tests.helpers.fixtures_alertmanager import triggers_settings
from tests.helpers.audit import playbook_writes, probe_pods_balanced
from tests.helpers.incident_queries import approving_everything, state_of, timeline_of
from tests.helpers.playbook_cases import CASES, CHANNEL, automation_done
from standins.slack import SlackStandIn
from tests.helpers.waiting import wait_for_async
from cli.main import build_parser
from cli.drill import SHADOW_LABEL, drill_alert, run_drill
from cli.settings import DEV_STATE
from worker.worker import build_worker
from workflows.incident.state import IncidentState
from workflows.incident.models import (
    UPDATE_HUMAN_ACTION,
    HumanAction,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def obj(change) -> str:
    return f"{change.kind} {change.namespace + '/' if change.namespace else ''}{change.name}"


@pytest.mark.parametrize("playbook", [pytest.param(p, marks=pytest.mark.scenario(c[0])) for p, c in CASES.items()])
async def test_every_playbook_in_shadow_mode_writes_only_dry_runs_and_reports_what_would_have_changed(
    playbook: str,
    temporal_dev,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_standin: SlackStandIn,
    slack_client,
):
    scenario, run, make_input, expected = CASES[playbook]
    client: Client = temporal_dev.client
    inp = make_input()
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await client.start_workflow(run, inp, id=f"{task_queue}.{playbook}--shadow", task_queue=task_queue)
            async with approving_everything(handle) as decided:
                done = await wait_for_async(lambda: automation_done(handle), f"{playbook} to do all it would", 60)
            assert isinstance(done, IncidentState) and done.failure is None, done
            await handle.execute_update(
                UPDATE_HUMAN_ACTION,
                HumanAction(action="resolve", by="alice", note="shadow drill over"),
                result_type=str,
            )
            report = await asyncio.wait_for(handle.result(), 30)
            state = await state_of(handle)
            timeline = await timeline_of(handle)

    writes = playbook_writes(simulator)
    # the audit log holds only dry-run writes: nothing the playbook sent changed the cluster
    assert [(e.verb, e.resource, e.name) for e in writes if not e.dry_run] == []
    assert probe_pods_balanced(simulator)
    if scenario != "baseline":
        assert scenario in simulator.behaviour.active_faults(), "the fault healed: something was written"
    assert "**Shadow mode**" in report and state.mode == "shadow"
    if not expected:  # a playbook that only tells on-call
        assert writes == [] and state.changes == []
        return
    # ... and it did try: each would-have change is a dry run the API server validated
    assert writes and state.changes, f"{playbook} found nothing to do in shadow mode ({decided})"
    assert all(c.dry_run for c in state.changes)
    dry_run_names = {e.name or ((e.body or {}).get("metadata") or {}).get("name") for e in writes}
    assert {c.name for c in state.changes} <= dry_run_names, (state.changes, writes)
    assert expected <= {(c.kind, f"{c.namespace}/{c.name}" if c.namespace else c.name) for c in state.changes}
    # the report's Actions table lists every would-have change, each marked "dry run"
    actions = report.split("## Actions", 1)[1].split("## Approvals", 1)[0]
    rows = [line for line in actions.splitlines() if line.startswith("| ") and "dry run" in line]
    assert len(rows) == len(state.changes), actions
    for change, row in zip(state.changes, rows):
        assert obj(change) in row and change.action in row, (change, row)
    would_have = [e for e in timeline if e.kind == "action" and e.title.startswith("would have: ")]
    assert len(would_have) >= len(state.changes)


# ---- `runbooks drill X --shadow` ---------------------------------------------------------------------


def test_drill_help_offers_shadow_and_the_alert_carries_the_label():
    parser = build_parser()
    drill = parser._subparsers._group_actions[0].choices["drill"]  # type: ignore[union-attr]
    assert "--shadow" in drill.format_help() and "dry run" in drill.format_help()
    assert parser.parse_args(["drill", "service-outage", "--shadow"]).shadow is True
    now = datetime.now(timezone.utc)
    assert drill_alert("service-outage", now=now, shadow=True)["labels"][SHADOW_LABEL] == "true"
    assert SHADOW_LABEL not in drill_alert("service-outage", now=now)["labels"]


async def test_drill_shadow_on_the_simulator_changes_nothing_and_prints_the_would_have_report(
    temporal_dev,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    """`runbooks drill model-deploy-failure:oom --shadow --wait --auto-approve`, in-process against the
    test's dev server, worker and simulator (the dev stack's state file points the drill at them)."""
    client: Client = temporal_dev.client
    home = tmp_path / "home"
    home.mkdir()
    (home / DEV_STATE).write_text(
        json.dumps(
            {
                "temporal": client.service_client.config.target_host,
                "kubeconfig": str(simulator.kubeconfig_path),
                "time_scale": 30,
            }
        )
    )
    # `mode: act` in the configuration: the drill's label alone puts the incident in shadow mode. Anyone
    # may approve (as on `runbooks dev`), so --auto-approve's "drill" answers every gate.
    settings = triggers_settings(task_queue, drills={"enabled": True}, approvers={"default": []})
    assert settings.mode == "act"
    args = argparse.Namespace(
        scenario="model-deploy-failure:oom",
        home=home,
        temporal=None,
        wait=True,
        auto_approve=True,
        timeout=75.0,
        shadow=True,
        no_reset=True,
    )
    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            code = await run_drill(settings, args)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "shadow mode: every write is a server-side dry run" in out
    assert "would have been made" in out and "**Shadow mode**" in out
    actions = out.split("## Actions", 1)[1].split("## Approvals", 1)[0]
    assert any("LLMDeployment production/mixtral-8x7b" in row and "dry run" in row for row in actions.splitlines()), (
        actions
    )
    writes = playbook_writes(simulator)
    assert writes and all(e.dry_run for e in writes), [(e.verb, e.resource, e.name, e.dry_run) for e in writes]
    assert "model-deploy-failure:oom" in simulator.behaviour.active_faults()
