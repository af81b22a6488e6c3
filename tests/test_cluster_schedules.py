"""The scheduled checks of several clusters on one Temporal (settings/clusters.py, worker/schedule_specs.py).

Each cluster has its own three schedules, `<prefix><check>.<cluster>`, starting the checks on its
own task queue: applying (or disabling) one cluster's leaves the other's as they are, a pause
included; the default cluster adopts a 1.0 schedule (no cluster in its id) with its pause; the
`runbooks schedules` commands pick a cluster by `--cluster` or by the id; and a check run by
`west`'s worker opens its incident on `west`'s queue, with `Cluster=west`. On the dev server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from datetime import timedelta

import httpx
import pytest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError, RPCStatusCode

from settings import Settings
from tests.helpers.dev_stack import RUNBOOKS
from worker.schedule_specs import (
    apply_schedules,
    describe_schedules,
    desired_schedules,
    for_cluster,
    schedule_id,
)
from worker.worker import build_worker
from workflows.checks.models import CHECK_IDS, GPU_HEALTH_CHECK, GpuHealthCheckResult
from workflows.incident import search


def two_clusters(prefix: str, **sections) -> Settings:
    """east (the default) and west; their queues are `llm-runbooks.<name>` unless `sections` say otherwise."""
    return Settings.model_validate(
        {
            "temporal": {"incident_id_prefix": prefix},
            "clusters": {"default": "east", "served": ["east", "west"]},
            **sections,
        }
    )


def test_each_clusters_schedules_carry_its_name_and_start_on_its_queue():
    settings = two_clusters("stack-a.")
    for cluster in ("east", "west"):
        wanted = desired_schedules(for_cluster(settings, cluster))
        assert [s.id for s in wanted] == [f"stack-a.{check}.{cluster}" for check in CHECK_IDS]
        for s in wanted:
            action = s.schedule.action
            assert isinstance(action, ScheduleActionStartWorkflow)
            assert (action.id, action.task_queue) == (s.id, f"llm-runbooks.{cluster}")
    # The worker's own cluster by default; a served cluster's own queue when it names one.
    assert schedule_id(settings, GPU_HEALTH_CHECK) == "stack-a.gpu-health-check.east"
    west = settings.model_copy(update={"worker": settings.worker.model_copy(update={"cluster": "west"})})
    assert schedule_id(west, GPU_HEALTH_CHECK) == "stack-a.gpu-health-check.west"
    own = two_clusters("", clusters={"default": "east", "served": {"east": {}, "west": {"task_queue": "w-q"}}})
    assert {s.schedule.action.task_queue for s in desired_schedules(for_cluster(own, "west"))} == {"w-q"}  # type: ignore[attr-defined]


async def _state(client: Client, sid: str) -> ScheduleState | None:
    try:
        return (await client.get_schedule_handle(sid).describe()).schedule.state
    except RPCError as err:
        assert err.status == RPCStatusCode.NOT_FOUND
        return None


async def _every(client: Client, sid: str) -> list[timedelta]:
    return [i.every for i in (await client.get_schedule_handle(sid).describe()).schedule.spec.intervals]


async def _delete_all(client: Client, prefix: str) -> None:
    for cluster in ("east", "west"):
        for check in CHECK_IDS:
            try:
                await client.get_schedule_handle(f"{prefix}{check}.{cluster}").delete()
            except RPCError:
                pass


async def test_applying_one_clusters_schedules_leaves_the_others_alone(dev_client: Client):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = two_clusters(prefix)
    east, west = for_cluster(settings, "east"), for_cluster(settings, "west")
    try:
        assert all(": created," in line for line in await apply_schedules(dev_client, east))
        assert all(": created," in line for line in await apply_schedules(dev_client, west))
        for cluster in ("east", "west"):
            for check in CHECK_IDS:
                desc = await dev_client.get_schedule_handle(f"{prefix}{check}.{cluster}").describe()
                assert isinstance(desc.schedule.action, ScheduleActionStartWorkflow)
                assert desc.schedule.action.task_queue == f"llm-runbooks.{cluster}"
        west_gpu, east_gpu = f"{prefix}gpu-health-check.west", f"{prefix}gpu-health-check.east"
        await dev_client.get_schedule_handle(west_gpu).pause(note="west: node upgrades")

        # east's worker starts with a new interval: east's schedule changes, west's (paused) does not
        faster = for_cluster(two_clusters(prefix, schedules={"gpu_health_every_minutes": 7}), "east")
        lines = await apply_schedules(dev_client, faster)
        assert [line.split(":")[0] for line in lines] == [f"{prefix}{check}.east" for check in CHECK_IDS]
        assert await _every(dev_client, east_gpu) == [timedelta(minutes=7)]
        assert await _every(dev_client, west_gpu) == [timedelta(minutes=15)]
        west_state = await _state(dev_client, west_gpu)
        assert west_state is not None and west_state.paused and west_state.note == "west: node upgrades"

        # west turns its checks off: west's are deleted, east's stay
        off = for_cluster(two_clusters(prefix, schedules={"enabled": False}), "west")
        assert len(await apply_schedules(dev_client, off)) == 3
        for check in CHECK_IDS:
            assert await _state(dev_client, f"{prefix}{check}.west") is None
            assert await _state(dev_client, f"{prefix}{check}.east") is not None
    finally:
        await _delete_all(dev_client, prefix)


async def test_the_default_cluster_adopts_a_1_0_schedule_with_its_pause(dev_client: Client):
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = two_clusters(prefix)
    legacy = f"{prefix}gpu-health-check"  # 1.0's id: no cluster
    await dev_client.create_schedule(
        legacy,
        Schedule(
            action=ScheduleActionStartWorkflow("GpuHealthCheck", id=legacy, task_queue="llm-runbooks"),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=15))]),
            state=ScheduleState(paused=True, note="a human paused it in 1.0"),
        ),
    )
    try:
        await apply_schedules(dev_client, for_cluster(settings, "west"))  # not west's to adopt
        assert await _state(dev_client, legacy) is not None
        listed = await describe_schedules(dev_client, settings, ["east", "west"])
        assert f"{legacy}: 1.0's schedule, still there" in listed
        assert f"{prefix}gpu-health-check.east: missing (run `runbooks schedules apply`" in listed

        lines = await apply_schedules(dev_client, for_cluster(settings, "east"))
        assert lines[0].startswith(f"{prefix}gpu-health-check.east: created PAUSED")
        assert f"1.0's {legacy} adopted and deleted" in lines[0]
        state = await _state(dev_client, f"{prefix}gpu-health-check.east")
        assert state is not None and state.paused and state.note == "a human paused it in 1.0"
        assert await _state(dev_client, legacy) is None
        assert "1.0's schedule" not in await describe_schedules(dev_client, settings, ["east"])
    finally:
        await _delete_all(dev_client, prefix)
        try:
            await dev_client.get_schedule_handle(legacy).delete()
        except RPCError:
            pass


def _schedules_cli(address: str, prefix: str, *args: str) -> subprocess.CompletedProcess:
    """`runbooks schedules ...` with the two clusters' configuration in the environment."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNBOOKS_")},
        "RUNBOOKS_TEMPORAL__ADDRESS": address,
        "RUNBOOKS_TEMPORAL__INCIDENT_ID_PREFIX": prefix,
        "RUNBOOKS_CLUSTERS__DEFAULT": "east",
        "RUNBOOKS_CLUSTERS__SERVED": '["east", "west"]',
    }
    return subprocess.run([RUNBOOKS, "schedules", *args], capture_output=True, text=True, timeout=120, env=env)


async def test_the_schedules_commands_pick_the_cluster_by_flag_or_by_id(dev_client: Client):
    address = dev_client.service_client.config.target_host
    prefix = f"t{uuid.uuid4().hex[:8]}."

    async def cli(*args: str) -> subprocess.CompletedProcess:
        return await asyncio.to_thread(_schedules_cli, address, prefix, *args)

    try:
        done = await cli("apply", "--cluster", "west")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() and all(".west: created" in line for line in done.stdout.splitlines())
        assert await _state(dev_client, f"{prefix}gpu-health-check.east") is None  # west's only
        done = await cli("apply")  # clusters.default's
        assert done.returncode == 0 and f"{prefix}gpu-health-check.east: created" in done.stdout, done.stderr

        listed = await cli("list")
        assert listed.returncode == 0, listed.stderr
        assert "cluster east: task queue llm-runbooks.east" in listed.stdout
        assert "cluster west: task queue llm-runbooks.west" in listed.stdout
        assert all(f"{prefix}{c}.{k}: active" in listed.stdout for c in CHECK_IDS for k in ("east", "west"))
        only_west = (await cli("list", "--cluster", "west")).stdout
        assert "cluster east" not in only_west and f"{prefix}gpu-health-check.west: active" in only_west

        done = await cli("pause", "gpu-health-check", "--cluster", "west", "--note", "west is upgrading")
        assert done.returncode == 0 and done.stdout.strip() == f"{prefix}gpu-health-check.west: paused", done.stderr
        west, east = (
            await _state(dev_client, f"{prefix}gpu-health-check.west"),
            await _state(dev_client, f"{prefix}gpu-health-check.east"),
        )
        assert west is not None and west.paused and east is not None and not east.paused
        listed = (await cli("list", "--cluster", "west")).stdout
        assert f"`runbooks schedules unpause {prefix}gpu-health-check.west` resumes it" in listed
        done = await cli("unpause", f"{prefix}gpu-health-check.west")  # the full id, as `list` prints it
        assert done.returncode == 0, done.stderr
        west = await _state(dev_client, f"{prefix}gpu-health-check.west")
        assert west is not None and not west.paused

        # wrong input: refused with the reason, nothing changed
        for args, reason in (
            (
                ("pause", "gpu-health-check.west", "--cluster", "east"),
                "is cluster west's schedule, not --cluster east's",
            ),
            (("pause", "gpu-health-check", "--cluster", "north"), "cluster 'north' is not served: clusters.served"),
            (("pause", "gpu-health-check.north"), "cluster 'north' is not served"),
            (("pause", "no-such-check"), "no scheduled check 'no-such-check'"),
            (("list", "--cluster", "north"), "cluster 'north' is not served"),
        ):
            refused = await cli(*args)
            assert refused.returncode == 2 and reason in refused.stderr, (args, refused.stderr)
        for cluster in ("east", "west"):
            state = await _state(dev_client, f"{prefix}gpu-health-check.{cluster}")
            assert state is not None and not state.paused

        # a triggered check starts on its cluster's queue, under its schedule's id
        done = await cli("trigger", "morning-health-check", "--cluster", "west")
        assert done.returncode == 0, done.stderr
        run_id = done.stdout.split("started ", 1)[1].strip()
        assert run_id.startswith(f"{prefix}morning-health-check.west")
        run = dev_client.get_workflow_handle(run_id)
        assert (await run.describe()).task_queue == "llm-runbooks.west"  # no worker polls it here
        await run.terminate("test over")
    finally:
        await _delete_all(dev_client, prefix)


@pytest.mark.scenario("gpu-hardware-failure")
async def test_a_check_run_by_wests_worker_opens_its_incident_on_wests_queue(
    dev_client: Client, kube_api, slack_client, task_queue
):
    """The same finding east's worker would report, reported by west's: west's incident (scope
    key, task queue, Cluster attribute), so only west's workers act on it."""
    prefix = f"{task_queue}."
    west_queue = f"{task_queue}-west"
    settings = two_clusters(
        prefix,
        clusters={
            "default": "east",
            "served": {"east": {"task_queue": f"{task_queue}-east"}, "west": {"task_queue": west_queue}},
        },
    )
    west = for_cluster(settings, "west")
    sid = schedule_id(west, GPU_HEALTH_CHECK)
    incidents: list[str] = []
    async with httpx.AsyncClient() as http:
        worker = build_worker(dev_client, kube_api, slack_client, http, west_queue, config=settings, cluster="west")
        async with worker:
            try:
                await apply_schedules(dev_client, west)
                handle = dev_client.get_schedule_handle(sid)
                await handle.trigger()
                run = None
                for _ in range(100):
                    actions = (await handle.describe()).info.recent_actions
                    run = next(
                        (a.action for a in actions if isinstance(a.action, ScheduleActionExecutionStartWorkflow)), None
                    )
                    if run:
                        break
                    await asyncio.sleep(0.2)
                assert run is not None, "the triggered check started no run"
                check = dev_client.get_workflow_handle(
                    run.workflow_id, run_id=run.first_execution_run_id, result_type=GpuHealthCheckResult
                )
                result = await asyncio.wait_for(check.result(), 200)
                assert [n.node for n in result.findings] == ["gpu-node-2"]
                incidents = [i.incident for i in result.incidents]
                assert incidents == [f"{prefix}gpu-hardware-failure--west.node.gpu-node-2"], result.incidents
                desc = await dev_client.get_workflow_handle(incidents[0]).describe()
                assert desc.task_queue == west_queue
                assert desc.typed_search_attributes.get(search.CLUSTER) == "west"
            finally:
                for incident in incidents:
                    try:
                        await dev_client.get_workflow_handle(incident).terminate("test over")
                    except RPCError:
                        pass
                for check in CHECK_IDS:
                    await dev_client.get_schedule_handle(schedule_id(west, check)).delete()
