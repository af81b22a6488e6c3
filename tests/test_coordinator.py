"""The coordinator across incidents: holds, blast-radius caps, the alert ledger, continue-as-new.

Incidents here are `CoordinatedIncident` (tests/helpers/coordination_workflows.py): real workflows that
claim through CoordinationActivities and keep the notes the coordinator signals them, so a test
sees both timelines' side. Time skips on the test server for the caps' and ledger's windows.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from kubernetes import client as k8s
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.temporal_coordinator import (
    CoordinationActivities,
    alert_verdict,
    coordinator_update,
    signal_alert_resolved_early,
)
from tests.helpers.coordination_workflows import CoordinatedIncident, Finish, HolderInput
from worker.worker import PLAYBOOK_SANDBOX, activities_for, build_worker
from workflows.incident.coordination_models import (
    QUERY_COORDINATOR_STATE,
    UPDATE_CLAIM,
    AlertKey,
    AlertsClosed,
    Caps,
    ClaimAnswer,
    CoordinatorInput,
    CoordinatorState,
    ObjectKey,
    WriteClaim,
    coordinator_workflow_id,
)
from workflows.incident.coordinator import Coordinator

pytestmark = pytest.mark.timeout(90)

LLAMA = ObjectKey(kind="Deployment", namespace="llm", name="llama")


def node(name: str) -> ObjectKey:
    return ObjectKey(kind="Node", name=name)


@asynccontextmanager
async def coordination_worker(client: Client, task_queue: str):
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[Coordinator, CoordinatedIncident],
        activities=activities_for(CoordinationActivities(client, task_queue)),
        workflow_runner=PLAYBOOK_SANDBOX,
    ):
        yield


async def open_incident(client: Client, task_queue: str, runbook: str, **kw) -> WorkflowHandle:
    return await client.start_workflow(
        CoordinatedIncident.run,
        HolderInput(runbook=runbook, **kw),
        id=f"{runbook}-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )


async def claim(incident: WorkflowHandle, runbook: str, obj: ObjectKey, write: str, **kw) -> ClaimAnswer:
    """The incident claims through its activity (claim id filled from the activity)."""
    return await incident.execute_update(
        CoordinatedIncident.write, WriteClaim(incident_id=incident.id, runbook=runbook, object=obj, write=write, **kw)
    )


async def close(env: WorkflowEnvironment, incident: WorkflowHandle) -> list[str]:
    await incident.signal(CoordinatedIncident.finish, Finish())
    # Not skipping while it finishes: with nothing else due, the test server would jump to the
    # other open incidents' execution timeouts.
    with env.auto_time_skipping_disabled():
        return await incident.result()


async def coordinator_state(client: Client, task_queue: str) -> CoordinatorState:
    return await client.get_workflow_handle(coordinator_workflow_id(task_queue)).query(
        QUERY_COORDINATOR_STATE, result_type=CoordinatorState
    )


def test_object_keys_read_as_kubectl_does() -> None:
    assert str(LLAMA) == "Deployment llm/llama"
    assert str(node("gpu-node-1")) == "Node gpu-node-1"
    assert coordinator_workflow_id("llm-runbooks") == "runbooks-coordinator"
    with pytest.raises(ValueError, match="timezone"):
        AlertKey(fingerprint="abc", starts_at=datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        WriteClaim(incident_id="i", runbook="r", object=LLAMA, write="reboot")


async def test_sop001_and_sop004_restart_one_deployment_once_and_both_name_the_holder(
    time_skipping, task_queue
) -> None:
    client = time_skipping.client
    async with coordination_worker(client, task_queue):
        outage = await open_incident(client, task_queue, "service-outage")
        deploy = await open_incident(client, task_queue, "model-deploy-failure")
        assert (await claim(outage, "service-outage", LLAMA, "restart")).granted
        waited = await claim(deploy, "model-deploy-failure", LLAMA, "restart")
        assert not waited.granted and waited.capped is None
        assert (waited.held_by, waited.held_by_runbook) == (outage.id, "service-outage")
        assert outage.id in waited.reason
        # The holder hears once, however often the other incident asks again while it waits.
        again = await claim(deploy, "model-deploy-failure", LLAMA, "restart")
        assert again.held_by == outage.id
        heard = await outage.query(CoordinatedIncident.heard)
        assert [(n.waiting_incident, n.waiting_runbook, n.write, n.object) for n in heard] == [
            (deploy.id, "model-deploy-failure", "restart", LLAMA)
        ]
        notes = await close(time_skipping, outage)
        assert deploy.id in notes[0] and "Deployment llm/llama" in notes[0]
        # Released, but the restart still counts for the hour: the second incident gets a gate, not a restart.
        after = await claim(deploy, "model-deploy-failure", LLAMA, "restart")
        assert not after.granted and after.held_by is None
        assert after.capped == "1 restart of Deployment llm/llama in the last hour (cap 1)"
        state = await coordinator_state(client, task_queue)
        assert [(w.write, w.incident_id) for w in state.writes] == [("restart", outage.id)]
        assert (await claim(deploy, "model-deploy-failure", LLAMA, "restart", override_cap=True)).granted
        await close(time_skipping, deploy)


async def test_the_holder_may_write_again_but_its_restarts_count(time_skipping, task_queue) -> None:
    client = time_skipping.client
    async with coordination_worker(client, task_queue):
        inc = await open_incident(client, task_queue, "service-outage")
        assert (await claim(inc, "service-outage", LLAMA, "restart")).granted
        assert (await claim(inc, "service-outage", LLAMA, "patch")).granted
        second = await claim(inc, "service-outage", LLAMA, "restart")
        assert second.capped and "cap 1" in second.capped
        caps = Caps(restarts_per_object_per_hour=2)  # the team's config, sent with the claim
        assert (await claim(inc, "service-outage", LLAMA, "restart", caps=caps)).granted
        third = await claim(inc, "service-outage", LLAMA, "restart", caps=caps)
        assert third.capped == "2 restarts of Deployment llm/llama in the last hour (cap 2)"
        await close(time_skipping, inc)
        assert (await coordinator_state(client, task_queue)).holds == {}


async def test_a_retried_claim_is_answered_again_and_counted_once(time_skipping, task_queue) -> None:
    client = time_skipping.client
    async with coordination_worker(client, task_queue):
        ask = WriteClaim(
            incident_id="inc-retry",
            runbook="service-outage",
            object=LLAMA,
            write="restart",
            claim_id="inc-retry/step-3",
        )
        first = await coordinator_update(client, UPDATE_CLAIM, ask, result_type=ClaimAnswer, task_queue=task_queue)
        retry = await coordinator_update(client, UPDATE_CLAIM, ask, result_type=ClaimAnswer, task_queue=task_queue)
        assert first.granted and retry.granted
        assert len((await coordinator_state(client, task_queue)).writes) == 1
        reused = ask.model_copy(update={"object": node("gpu-node-1"), "write": "cordon"})
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await coordinator_update(client, UPDATE_CLAIM, reused, result_type=ClaimAnswer, task_queue=task_queue)
        assert "already used for Deployment llm/llama" in str(refused.value.cause)


async def test_holds_expire_and_a_closed_holder_holds_nothing(time_skipping, task_queue) -> None:
    client = time_skipping.client
    async with coordination_worker(client, task_queue):
        stuck = await open_incident(client, task_queue, "service-outage")
        other = await open_incident(client, task_queue, "model-deploy-failure")
        assert (await claim(stuck, "service-outage", LLAMA, "patch", hold_seconds=600)).granted
        assert (await claim(other, "model-deploy-failure", LLAMA, "patch")).held_by == stuck.id
        await time_skipping.sleep(timedelta(minutes=11))
        assert (await claim(other, "model-deploy-failure", LLAMA, "patch")).granted  # the hold expired
        # An incident that ends without releasing: the next claimant finds it closed and takes over.
        gone = await open_incident(client, task_queue, "gpu-unavailable", release_at_end=False)
        assert (await claim(gone, "gpu-unavailable", node("gpu-node-1"), "drain")).granted
        await close(time_skipping, gone)
        assert (await claim(other, "model-deploy-failure", node("gpu-node-1"), "drain")).granted
        state = await coordinator_state(client, task_queue)
        assert state.holds["Node gpu-node-1"].incident_id == other.id
        await close(time_skipping, other)
        await close(time_skipping, stuck)


async def test_restarts_per_hour_count_a_sliding_hour(time_skipping, task_queue) -> None:
    client = time_skipping.client
    async with coordination_worker(client, task_queue):
        inc = await open_incident(client, task_queue, "service-outage")
        assert (await claim(inc, "service-outage", LLAMA, "restart")).granted
        await time_skipping.sleep(timedelta(minutes=40))
        assert (await claim(inc, "service-outage", LLAMA, "restart")).capped
        await time_skipping.sleep(timedelta(minutes=21))
        assert (await claim(inc, "service-outage", LLAMA, "restart")).granted
        other = ObjectKey(kind="Deployment", namespace="llm", name="mistral")
        assert (await claim(inc, "service-outage", other, "restart")).granted  # per object
        await close(time_skipping, inc)


async def test_three_gpu_nodes_failing_the_second_cordon_asks_for_approval(time_skipping, task_queue) -> None:
    client = time_skipping.client
    async with coordination_worker(client, task_queue):
        incidents = [await open_incident(client, task_queue, "gpu-unavailable") for _ in range(3)]
        nodes = [node(f"gpu-node-{i}") for i in (1, 2, 3)]
        assert (await claim(incidents[0], "gpu-unavailable", nodes[0], "cordon")).granted
        second = await claim(incidents[1], "gpu-unavailable", nodes[1], "cordon")
        assert not second.granted
        assert second.capped == "1 node already cordoned by automation (gpu-node-1); cap 1 without approval"
        # The gate's approval: granted, and it counts, so the third asks again.
        assert (await claim(incidents[1], "gpu-unavailable", nodes[1], "cordon", override_cap=True)).granted
        third = await claim(incidents[2], "gpu-unavailable", nodes[2], "cordon")
        assert third.capped and third.capped.startswith(
            "2 nodes already cordoned by automation (gpu-node-1, gpu-node-2)"
        )
        # Closing an incident does not uncordon its node; the rollback's uncordon does.
        await close(time_skipping, incidents[0])
        assert (await claim(incidents[2], "gpu-unavailable", nodes[2], "cordon")).capped
        assert (await claim(incidents[1], "gpu-unavailable", nodes[1], "uncordon")).granted
        assert (await claim(incidents[2], "gpu-unavailable", nodes[2], "cordon")).capped  # gpu-node-1 still out
        roomy = Caps(cordons_without_approval=2)
        assert (await claim(incidents[2], "gpu-unavailable", nodes[2], "cordon", caps=roomy)).granted
        for inc in incidents[1:]:
            await close(time_skipping, inc)


async def test_a_cordon_stops_counting_after_its_window(time_skipping, task_queue) -> None:
    client = time_skipping.client
    async with coordination_worker(client, task_queue):
        inc = await open_incident(client, task_queue, "gpu-unavailable")
        assert (await claim(inc, "gpu-unavailable", node("gpu-node-1"), "cordon")).granted
        await time_skipping.sleep(timedelta(hours=25))
        assert (await claim(inc, "gpu-unavailable", node("gpu-node-2"), "cordon")).granted
        await close(time_skipping, inc)


async def test_share_of_replicas_removed_in_an_hour_is_capped(time_skipping, task_queue) -> None:
    client = time_skipping.client
    async with coordination_worker(client, task_queue):
        memory = await open_incident(client, task_queue, "high-memory")
        outage = await open_incident(client, task_queue, "service-outage")
        assert (await claim(memory, "high-memory", LLAMA, "scale-down", replicas_removed=2, replicas_total=4)).granted
        await close(time_skipping, memory)
        more = await claim(outage, "service-outage", LLAMA, "evict", replicas_removed=1, replicas_total=4)
        assert more.capped == (
            "removing 1 of 4 replicas of Deployment llm/llama (2 already in the last hour) is 75%, over the cap of 50%"
        )
        assert (
            await claim(
                outage, "service-outage", LLAMA, "evict", replicas_removed=1, replicas_total=4, override_cap=True
            )
        ).granted
        await time_skipping.sleep(timedelta(minutes=61))
        assert (await claim(outage, "service-outage", LLAMA, "evict", replicas_removed=2, replicas_total=4)).granted
        await close(time_skipping, outage)


async def test_ledger_verdicts_outlive_the_incident_and_expire(time_skipping, task_queue) -> None:
    client = time_skipping.client
    now = await time_skipping.get_current_time()
    closed_key = AlertKey(fingerprint="f00d", starts_at=now - timedelta(minutes=30))
    early_key = AlertKey(fingerprint="beef", starts_at=now - timedelta(minutes=5))
    async with coordination_worker(client, task_queue):
        assert (await alert_verdict(client, closed_key, task_queue=task_queue)).verdict == "new"
        inc = await open_incident(client, task_queue, "service-outage", alerts=[closed_key])
        await close(time_skipping, inc)
        verdict = await alert_verdict(client, closed_key, task_queue=task_queue)
        assert (verdict.verdict, verdict.closed_by) == (f"closed-by:{inc.id}", inc.id)
        # The same key in another timezone is the same firing; another startsAt is a new one.
        shifted = AlertKey(fingerprint="f00d", starts_at=closed_key.starts_at.astimezone(timezone(timedelta(hours=2))))
        assert not (await alert_verdict(client, shifted, task_queue=task_queue)).is_new
        refired = AlertKey(fingerprint="f00d", starts_at=now)
        assert (await alert_verdict(client, refired, task_queue=task_queue)).is_new
        await signal_alert_resolved_early(client, early_key, task_queue=task_queue)
        assert (await alert_verdict(client, early_key, task_queue=task_queue)).verdict == "resolved-before-firing"
        # A late resolved notification does not overwrite what the closed incident recorded.
        await signal_alert_resolved_early(client, closed_key, task_queue=task_queue)
        assert (await alert_verdict(client, closed_key, task_queue=task_queue)).closed_by == inc.id
        await time_skipping.sleep(timedelta(days=15))
        assert (await alert_verdict(client, closed_key, task_queue=task_queue)).is_new
        assert (await alert_verdict(client, early_key, task_queue=task_queue)).is_new
        assert (await coordinator_state(client, task_queue)).ledger == {}


async def test_a_resolved_before_any_worker_runs_still_reaches_the_ledger(time_skipping, task_queue) -> None:
    """Signal-with-start needs no worker: the webhook's record waits in history for one."""
    client = time_skipping.client
    key = AlertKey(fingerprint="cafe", starts_at=await time_skipping.get_current_time())
    await signal_alert_resolved_early(client, key, task_queue=task_queue)
    async with coordination_worker(client, task_queue):
        assert (await alert_verdict(client, key, task_queue=task_queue)).verdict == "resolved-before-firing"


async def test_continue_as_new_keeps_holds_counts_and_ledger(time_skipping, task_queue) -> None:
    client = time_skipping.client
    wf_id = coordinator_workflow_id(task_queue)
    small = CoordinatorInput(continue_as_new_after=3, ledger_max_entries=4)
    await client.start_workflow(Coordinator.run, small, id=wf_id, task_queue=task_queue)
    first_run = (await client.get_workflow_handle(wf_id).describe()).run_id
    async with coordination_worker(client, task_queue):
        holder = await open_incident(client, task_queue, "service-outage")
        assert (await claim(holder, "service-outage", LLAMA, "restart")).granted
        begin = await time_skipping.get_current_time()
        keys = [AlertKey(fingerprint=f"fp{i}", starts_at=begin) for i in range(6)]
        inc = await open_incident(client, task_queue, "high-memory", alerts=keys)
        await close(time_skipping, inc)
        waiter = await open_incident(client, task_queue, "model-deploy-failure")
        for _ in range(4):  # enough updates for two more runs
            assert (await claim(waiter, "model-deploy-failure", LLAMA, "restart")).held_by == holder.id
        handle = client.get_workflow_handle(wf_id)
        assert (await handle.describe()).run_id != first_run
        state = await coordinator_state(client, task_queue)
        assert state.holds[str(LLAMA)].incident_id == holder.id
        assert [w.write for w in state.writes] == ["restart"]
        # Bounded: the oldest ledger entries went first.
        assert list(state.ledger) == [str(k) for k in keys[2:]]
        assert (await alert_verdict(client, keys[5], task_queue=task_queue)).closed_by == inc.id
        assert (await claim(holder, "service-outage", LLAMA, "restart")).capped
        assert len(await holder.query(CoordinatedIncident.heard)) == 1  # the waiters list crossed runs too
        await close(time_skipping, holder)
        await close(time_skipping, waiter)


@pytest.mark.integration
async def test_the_worker_runs_the_coordinator_on_the_dev_server(temporal_dev, task_queue) -> None:
    """`runbooks dev`'s worker (build_worker) serves the coordinator; update-with-start on the real server."""
    client = temporal_dev.client
    incidents_queue = f"{task_queue}-incidents"
    async with httpx.AsyncClient() as http, build_worker(client, k8s.ApiClient(), None, http, task_queue):
        # Incidents on their own queue, asking the worker's coordinator (as the playbooks' activities will).
        async with Worker(
            client,
            task_queue=incidents_queue,
            workflows=[CoordinatedIncident],
            activities=activities_for(CoordinationActivities(client, task_queue)),
            workflow_runner=PLAYBOOK_SANDBOX,
        ):
            outage = await open_incident(client, incidents_queue, "service-outage")
            deploy = await open_incident(client, incidents_queue, "model-deploy-failure")
            assert (await claim(outage, "service-outage", LLAMA, "restart")).granted
            assert (await claim(deploy, "model-deploy-failure", LLAMA, "restart")).held_by == outage.id
            await outage.signal(CoordinatedIncident.finish, Finish())
            assert deploy.id in (await outage.result())[0]
            assert (await claim(deploy, "model-deploy-failure", LLAMA, "restart")).capped
            await deploy.signal(CoordinatedIncident.finish, Finish())
            await deploy.result()
        key = AlertKey(fingerprint=uuid.uuid4().hex[:16], starts_at=datetime.now(timezone.utc))
        await signal_alert_resolved_early(client, key, task_queue=task_queue)
        assert (await alert_verdict(client, key, task_queue=task_queue)).verdict == "resolved-before-firing"
        desc = await client.get_workflow_handle(coordinator_workflow_id(task_queue)).describe()
        assert (desc.workflow_type, desc.task_queue, desc.status.name) == ("Coordinator", task_queue, "RUNNING")
        await client.get_workflow_handle(coordinator_workflow_id(task_queue)).terminate("test over")


@pytest.mark.integration
async def test_a_storm_of_incidents_opening_and_closing_all_reach_the_ledger(temporal_dev, task_queue) -> None:
    """The server lets only 10 updates wait on one workflow. Two hundred incidents closing at once all
    record their alerts (signals: no such limit), and two hundred opening at once all get the ledger's
    answer (a query: no limit, no history event)."""
    client = temporal_dev.client
    calls = CoordinationActivities(client, task_queue)
    now = datetime.now(timezone.utc)
    keys = [AlertKey(fingerprint=f"storm{i}", starts_at=now) for i in range(200)]
    async with coordination_worker(client, task_queue):
        sizes = await asyncio.gather(
            *(
                calls.record_alerts_closed(AlertsClosed(incident_id=f"inc-{i}", keys=[key]))
                for i, key in enumerate(keys)
            )
        )
        repeats = await asyncio.gather(*(calls.alert_verdict(key) for key in keys))
        fresh = await asyncio.gather(
            *(calls.alert_verdict(AlertKey(fingerprint=f"new{i}", starts_at=now)) for i in range(200))
        )
        state = await coordinator_state(client, task_queue)
    assert sizes == [1] * 200
    assert [v.closed_by for v in repeats] == [f"inc-{i}" for i in range(200)]
    assert all(v.is_new for v in fresh)
    assert len(state.ledger) == 200


async def test_no_coordinator_yet_means_every_alert_is_new(time_skipping, task_queue) -> None:
    """Before any incident closed or any alert resolved early there is no ledger to ask."""
    verdict = await CoordinationActivities(time_skipping.client, task_queue).alert_verdict(
        AlertKey(fingerprint="first", starts_at=await time_skipping.get_current_time())
    )
    assert verdict.is_new
