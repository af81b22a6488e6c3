"""Resolution stops action, through the webhook with a worker acting on the simulator.

When every alert of an incident's scope resolves while a playbook waits at an approval gate, the
gate is withdrawn (its Slack message says so), no write reaches the cluster after the resolve
(the simulator's audit log), verification still runs and the incident resolves by alertmanager.
And a human's `escalate` always moves one level up.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from kubernetes import client as k8s
from temporalio.client import Client

from standins.slack import SlackStandIn
from tests.helpers.audit import writes
from tests.helpers.incident_queries import gate_asked, state_of, timeline_of
from tests.helpers.service_outage import set_health_url
from tests.helpers.waiting import wait_for_async
from tests.helpers.webhook_stack import CHANNEL, alert, incident_of, notify, resolved, webhook_and_worker
from settings import Settings
from cli import control
from workflows.incident.escalation import EscalationPolicy
from workflows.playbooks.gpu_nodes.models import cordon_gate
from workflows.playbooks.service_outage.models import GATE_MAINTENANCE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WITHDRAWN = "withdrawn: every alert of the scope resolved: the fault is gone"


def _assert_stopped_at_the_gate(state, timeline, gate: str, resolved_at: datetime, slack: SlackStandIn) -> None:
    """The gate withdrawn (not approved, nobody decided), verification after the resolve, resolved by alert."""
    (asked,) = [g for g in state.approvals if g.gate == gate]
    assert asked.decision is None and not asked.approved and asked.outcome == WITHDRAWN
    assert state.status == "resolved" and state.resolved_by == "alertmanager"
    assert state.fault_gone_at is not None
    verification = [e for e in timeline if e.kind == "step" and e.title == "Verification"]
    assert len(verification) == 1 and verification[0].started_at >= resolved_at - timedelta(seconds=1)
    assert verification[0].ended_at is not None
    # The approval message in Slack no longer asks: its buttons are replaced by the outcome.
    message = next(m for m in slack.messages(CHANNEL) if asked.question in m["text"])
    assert message.get("edited") and WITHDRAWN in message["text"]
    assert not any(b.get("type") == "actions" for b in message.get("blocks", []))


@pytest.mark.scenario("service-outage")
async def test_sop_001_alert_resolves_at_the_maintenance_gate(
    dev_client: Client,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_standin: SlackStandIn,
    slack_client,
):
    set_health_url(kube_api, "production", "mistral-7b", "http://127.0.0.1:9/health")  # the restarts can't help
    outage = alert("LLMDServiceDown", datetime.now(timezone.utc) - timedelta(minutes=1))
    handle = dev_client.get_workflow_handle(incident_of(task_queue, "service-outage"))

    async with webhook_and_worker(dev_client, task_queue, kube_api, slack_client) as hook:
        assert [o["action"] for o in await notify(hook, outage)] == ["started"]
        await gate_asked(handle, GATE_MAINTENANCE, 45)
        before = len(simulator.audit())
        resolved_at = datetime.now(timezone.utc)
        assert [o["action"] for o in await notify(hook, resolved(outage, resolved_at))] == ["resolve-signalled"]
        await asyncio.wait_for(handle.result(), timeout=60)
        state = await state_of(handle)
        timeline = await timeline_of(handle)

    assert simulator.audit()[before:] == [], "a write after every alert resolved"
    assert not [e for e in simulator.audit() if e.resource == "ingresses"], "no maintenance page"
    _assert_stopped_at_the_gate(state, timeline, GATE_MAINTENANCE, resolved_at, slack_standin)
    # Automation's own reasons to page (verification failed) are recorded, not paged, once the fault is gone.
    assert not any(e.level > 0 for e in state.escalations)
    assert any(e.kind == "escalation" and e.title.startswith("not paged") for e in timeline)


@pytest.mark.scenario("gpu-hardware-failure")
async def test_sop_003_alert_resolves_while_waiting_to_cordon(
    dev_client: Client,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_standin: SlackStandIn,
    slack_client,
):
    lost = alert("LLMDGPUCapacityLost", datetime.now(timezone.utc) - timedelta(minutes=1), node="gpu-node-2")
    handle = dev_client.get_workflow_handle(incident_of(task_queue, "gpu-unavailable"))
    gate = cordon_gate("gpu-node-2")

    async with webhook_and_worker(dev_client, task_queue, kube_api, slack_client) as hook:
        assert [o["action"] for o in await notify(hook, lost)] == ["started"]
        await gate_asked(handle, gate, 45)
        before = len(simulator.audit())
        resolved_at = datetime.now(timezone.utc)
        assert [o["action"] for o in await notify(hook, resolved(lost, resolved_at))] == ["resolve-signalled"]
        await asyncio.wait_for(handle.result(), timeout=60)
        state = await state_of(handle)
        timeline = await timeline_of(handle)

    after = writes(simulator, since=before, dry_runs=True, probes=False)
    assert after == [], "a write after every alert resolved (probe and test pods aside)"
    assert not [e for e in simulator.audit() if e.resource == "nodes" or e.verb == "evict"], "no cordon, no drain"
    assert state.changes == []
    _assert_stopped_at_the_gate(state, timeline, gate, resolved_at, slack_standin)


# SOP-001 has marks for levels 1-3; SOP-004 for one LLMDeployment has only its 15-minute mark (level 1).
ESCALATING = [
    pytest.param("LLMDServiceDown", {}, id="service-outage"),
    pytest.param(
        "LLMDeploymentNotReady",
        {"namespace": "production", "llmdeployment": "llama-3-8b"},
        id="model-deploy-failure-one-deployment",
    ),
]


@pytest.mark.parametrize(("alertname", "labels"), ESCALATING)
async def test_escalate_twice_from_the_cli_pages_level_1_then_level_2(
    dev_client: Client,
    task_queue: str,
    simulator,
    kube_api: k8s.ApiClient,
    slack_standin: SlackStandIn,
    slack_client,
    capsys,
    alertname: str,
    labels: dict[str, str],
):
    """`runbooks escalate` (the CLI's Update) on a webhook-started incident, twice: each is the next
    level, also past the playbook's last mark (a level-1 incident paged level 1 again)."""
    fired = alert(alertname, datetime.now(timezone.utc) - timedelta(minutes=1), **labels)
    target = dev_client.service_client.config.target_host
    settings = Settings.model_validate({"temporal": {"address": target, "task_queue": task_queue}})

    async with webhook_and_worker(dev_client, task_queue, kube_api, slack_client) as hook:
        [opened] = await notify(hook, fired)  # the baseline cluster: nothing wrong found, it waits for a human
        incident = opened["incident"]
        handle = dev_client.get_workflow_handle(incident)

        async def waiting():
            return (await state_of(handle)).nothing_found

        await wait_for_async(waiting, "the playbook done looking", timeout=60)
        assert (await state_of(handle)).escalation_level == 0
        assert await control.human_action(settings, incident, "escalate", "carol", "users still see errors") == 0
        first = await state_of(handle)
        assert await control.human_action(settings, incident, "escalate", "carol", None) == 0
        second = await state_of(handle)
        printed = capsys.readouterr().out.splitlines()
        await handle.terminate("test over")

    assert (first.escalation_level, second.escalation_level) == (1, 2)
    assert [(e.level, e.notify) for e in second.escalations] == [(1, "Senior SRE"), (2, "Engineering team")]
    assert printed == ["escalated to Senior SRE", "escalated to Engineering team"]
    pages = [m["text"] for m in slack_standin.messages(CHANNEL) if "Escalation to" in m["text"]]
    assert len(pages) == 2 and "(level 1)" in pages[0] and "(level 2)" in pages[1]
    assert "carol asked to escalate: users still see errors" in pages[0]


def test_past_the_last_mark_escalation_follows_the_sop_path_to_its_top() -> None:
    one_mark = EscalationPolicy.of(15)  # SOP-004, one deployment
    assert one_mark.step_after(1) is None
    assert [(s.level, s.notify) for s in (one_mark.beyond(1), one_mark.beyond(2))] == [
        (2, "Engineering team"),
        (3, "Incident Commander + Engineering Manager"),
    ]
    assert one_mark.beyond(3) is None  # the top: it is paged again
    assert one_mark.who(3) == "Incident Commander + Engineering Manager" and one_mark.who(0) == "On-call SRE"
    assert EscalationPolicy([]).beyond(0).level == 1  # no marks at all (a P3 triage): still one level up
