"""The `runbooks` command as an on-call engineer types it: separate processes, real servers."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import config

from cli.control import gate_commands
from cli.drill import waiting_outcome
from cli.main import DEFAULT_HOME, _resolve_home, build_parser
from tests.helpers.incident_queries import gate_asked, state_of, timeline_of
from tests.helpers.service_outage import CHANNEL, FAST, outage_input, set_health_url
from tests.helpers.waiting import wait_for, wait_for_async
from worker.worker import build_worker
from workflows.incident.state import IncidentState
from workflows.incident.models import Alert
from workflows.playbooks.service_outage.models import GATE_MAINTENANCE
from workflows.playbooks.service_outage.playbook import ServiceOutage

RUNBOOKS = str(Path(sys.executable).parent / "runbooks")


def runbooks(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([RUNBOOKS, *args], capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_simulator_command_serves_a_cluster_and_takes_injected_faults(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [RUNBOOKS, "simulator", "--port", str(free_port()), "--kubeconfig", str(kubeconfig), "--time-scale", "30"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: kubeconfig.exists() or proc.poll() is not None, "runbooks simulator to write its kubeconfig")
        assert proc.poll() is None, "runbooks simulator exited"
        api = config.new_client_from_config(config_file=str(kubeconfig))
        operator = lambda: k8s.CoreV1Api(api).list_namespaced_pod("llm-d-system").items  # noqa: E731
        assert all(p.status.phase == "Running" for p in operator())

        done = runbooks("simulator", "inject", "service-outage", "--kubeconfig", str(kubeconfig))
        assert done.returncode == 0, done.stderr
        wait_for(
            lambda: any(
                cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff"
                for p in operator()
                for cs in p.status.container_statuses or []
            ),
            "the operator to crash-loop",
        )

        refused = runbooks("simulator", "inject", "no-such-fault", "--kubeconfig", str(kubeconfig))
        assert refused.returncode != 0
        assert "no-such-fault" in refused.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.scenario("service-outage")
async def test_approve_and_reject_from_the_cli(temporal_dev, task_queue, simulator, kube_api, slack_client):
    client = temporal_dev.client
    address = client.service_client.config.target_host
    set_health_url(kube_api, "production", "mistral-7b", "http://127.0.0.1:9/health")  # restarts won't help
    # The gate stays open for the whole conversation: a dozen `runbooks` processes, each a Python start,
    # take a minute or more on a busy machine, longer than FAST's one-minute approval timeout.
    timings = FAST.model_copy(
        update={"restart_grace_seconds": 3, "verification_timeout_seconds": 3, "approval_timeout_minutes": 30}
    )
    inp = outage_input(timings=timings, approvers={"*": ["alice"]})
    incident = f"service-outage-{inp.alert.fingerprint}"

    async def cli(*args: str) -> subprocess.CompletedProcess:
        return await asyncio.to_thread(runbooks, *args, "--temporal", address)

    async with httpx.AsyncClient() as http:
        async with build_worker(client, kube_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await client.start_workflow(ServiceOutage.run, inp, id=incident, task_queue=task_queue)
            await gate_asked(handle, GATE_MAINTENANCE, 90)

            shown = await cli("show", incident)
            assert shown.returncode == 0 and f"gate '{GATE_MAINTENANCE}'" in shown.stdout
            # the same commands `drill --wait` prints, with what reaches this stack
            assert gate_commands(incident, GATE_MAINTENANCE, f" --temporal {address}") in shown.stdout

            # someone not on the gate's approver list is refused, and nothing is decided
            refused = await cli("approve", incident, GATE_MAINTENANCE, "--as", "mallory")
            assert refused.returncode == 2 and "mallory" in refused.stderr
            assert any(g.gate == GATE_MAINTENANCE for g in (await state_of(handle)).pending_gates)

            unknown = await cli("approve", "no-such-incident", GATE_MAINTENANCE, "--as", "alice")
            assert unknown.returncode == 2 and "no running incident" in unknown.stderr

            acked = await cli("ack", incident, "--as", "alice")
            assert acked.returncode == 0, acked.stderr

            # a note as the on-call engineer types it, and the old spelling
            noted = await cli("note", incident, "users report 503s since 10:02", "--as", "alice")
            assert noted.returncode == 0, noted.stderr
            flagged = await cli("note", incident, "--note", "status page updated", "--as", "alice")
            assert flagged.returncode == 0, flagged.stderr
            timeline = await timeline_of(handle)
            notes = " ".join(f"{e.title} {e.outcome} {e.details}" for e in timeline)
            assert "users report 503s since 10:02" in notes and "status page updated" in notes
            empty = await cli("note", incident, "--as", "alice")
            assert empty.returncode == 2 and "a note needs text" in empty.stderr

            # bad arguments: one line that names the argument, no traceback, nothing decided
            nobody = await cli("approve", incident, GATE_MAINTENANCE, "--as", "")
            assert nobody.returncode == 2 and "Traceback" not in nobody.stderr
            assert nobody.stderr.strip().count("\n") == 0 and "--as" in nobody.stderr
            assert any(g.gate == GATE_MAINTENANCE for g in (await state_of(handle)).pending_gates)

            # the open incident is listed with what its search attributes say
            async def listed_row() -> str | None:  # visibility catches up with the upserts shortly after
                listed = await cli("list")
                assert listed.returncode == 0, listed.stderr
                return next(
                    (
                        line
                        for line in listed.stdout.splitlines()
                        if line.startswith(incident) and "awaiting-approval" in line
                    ),
                    None,
                )

            row = await wait_for_async(listed_row, "the incident in `runbooks list`", 60)
            assert "service-outage" in row
            assert (
                incident in (await cli("list", "--runbook", "service-outage", "--status", "awaiting-approval")).stdout
            )
            assert incident not in (await cli("list", "--runbook", "high-memory")).stdout
            rejected = await cli(
                "reject", incident, GATE_MAINTENANCE, "--as", "alice", "--comment", "users keep trying"
            )
            assert rejected.returncode == 0, rejected.stderr

            state = await state_of(handle)
            gate = next(g for g in state.approvals if g.gate == GATE_MAINTENANCE)
            assert gate.decision and not gate.decision.approved
            assert (gate.decision.by, gate.decision.via, gate.decision.comment) == ("alice", "cli", "users keep trying")
            assert state.acknowledged_by == "alice"

            resolved = await cli("resolve", incident, "--as", "alice", "--note", "fixed the health URL by hand")
            assert resolved.returncode == 0, resolved.stderr
            await handle.result()


# ---- the words a new user meets --------------------------------------------


def _waiting(**fields) -> IncidentState:
    now = datetime.now(UTC)
    return IncidentState(
        incident_id="high-memory--cluster",
        runbook="high-memory",
        title="t",
        severity="P2",
        alert=Alert(alertname="LLMDMemoryPressure", fingerprint="f", starts_at=now),
        incident_commander="On-call SRE",
        opened_at=now,
        awaiting_human=True,
        **fields,
    )


def test_drill_wait_says_what_the_state_says_when_a_human_must_take_over():
    level0 = waiting_outcome(_waiting())
    assert "waiting for a human (not escalated" in level0 and "escalated to" not in level0
    found = waiting_outcome(_waiting(nothing_found="no pod near its memory limit"))
    assert found.startswith("nothing wrong found") and "waiting for the alert to resolve or a human" in found
    assert "escalated" not in found
    paged = waiting_outcome(_waiting(escalation_level=1, escalated_to="Senior SRE"))
    assert "escalated to level 1 (Senior SRE)" in paged
    assert "a step failed (KeyError" in waiting_outcome(_waiting(failure="KeyError: 'x'"))


def test_show_and_drill_print_the_same_gate_commands_with_home_when_not_the_default():
    from cli.control import cli_flags

    args = build_parser().parse_args(["show", "x", "--home", "/tmp/h"])
    assert cli_flags(args) == " --home /tmp/h"
    assert gate_commands("i", "g", cli_flags(args)) == (
        "  approve: runbooks approve i 'g' --as NAME --home /tmp/h\n"
        "  reject:  runbooks reject i 'g' --as NAME --comment WHY --home /tmp/h"
    )
    args = build_parser().parse_args(["show", "x", "--home", str(DEFAULT_HOME)])
    assert cli_flags(args) == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["--home", "/tmp/h", "drill", "--list"],
        ["drill", "--list", "--home", "/tmp/h"],
        ["--home", "/tmp/other", "schedules", "list", "--home", "/tmp/h"],  # the command's own wins
    ],
)
def test_home_goes_before_or_after_the_command(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    _resolve_home(parser, args)
    assert args.home == Path("/tmp/h")


def test_home_defaults_and_is_refused_where_it_means_nothing():
    parser = build_parser()
    args = parser.parse_args(["schedules", "pause", "gpu-health-check"])
    _resolve_home(parser, args)
    assert args.home == DEFAULT_HOME
    refused = runbooks("--home", "/tmp/h", "worker")
    assert refused.returncode == 2 and "--home has no meaning for `runbooks worker`" in refused.stderr
    helped = runbooks("drill", "--help")
    assert "state folder whose simulator and" in helped.stdout
    listed = runbooks("--home", "/tmp/h", "drill", "--list")
    assert listed.returncode == 0 and "service-outage" in listed.stdout, listed.stderr
    nosuch = runbooks("drill", "service-down:nosuch", "--home", "/tmp/h")
    assert nosuch.returncode == 2 and "service-down:hung-pods" in nosuch.stderr
    assert "baseline" not in nosuch.stderr
