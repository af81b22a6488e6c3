"""`runbooks drill` against a fresh `runbooks dev`, exactly as an SRE rehearses: separate processes,
the alert through the triggers' webhook, gates answered by --auto-approve."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from kubernetes import client

from standins.alertmanager import free_port
from tests.helpers.dev_stack import RUNBOOKS, cluster, drill


def not_ready(home: Path) -> list[str]:
    items = client.CustomObjectsApi(cluster(home)).list_cluster_custom_object(
        "inference.llm-d.io", "v1alpha1", "llmdeployments"
    )["items"]
    return [i["metadata"]["name"] for i in items if i.get("status", {}).get("phase") != "Ready"]


def test_dev_stack_announces_where_everything_is(dev_stack):
    out = (dev_stack / "dev.log").read_text()
    for what in ("Temporal ", "Temporal Web UI", "simulated llm-d cluster", "Alertmanager hook", "kubeconfig"):
        assert what in out
    if shutil.which("prometheus"):  # dev starts one over the simulator, and says where
        prometheus = json.loads((dev_stack / "dev.json").read_text())["prometheus"]
        assert f"  Prometheus        {prometheus}" in out


# Order matters only in that the one fault automation cannot fix goes last.
@pytest.mark.parametrize(
    "scenario",
    [
        "service-outage",
        "high-memory",
        "gpu-unavailable",
        "model-deploy-failure:oom",
    ],
)
def test_drill_heals(dev_stack, scenario):
    done = drill(dev_stack, scenario)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outcome: resolved" in done.stdout
    assert "# Incident report" in done.stdout
    assert "| Before | After |" in done.stdout  # the actions table with the replaced values
    assert not_ready(dev_stack) == []


def test_drill_of_a_cause_automation_cannot_fix_ends_in_escalation(dev_stack):
    done = drill(dev_stack, "model-deploy-failure:image-pull")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "waiting for a human" in done.stdout
    assert "escalated to level 0" not in done.stdout  # level 0 is "not escalated"
    assert "image" in done.stdout.lower()  # the diagnosis travels with the escalation
    assert not_ready(dev_stack) == ["mixtral-8x7b"]  # nothing pretended to fix it


def test_unknown_drill_is_refused_and_stages_nothing(dev_stack):
    done = subprocess.run(
        [RUNBOOKS, "drill", "no-such-fault", "--home", str(dev_stack)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "no drill for 'no-such-fault'" in done.stderr


# ---- clean rehearsals: drills one after another end as each does on a fresh stack ----


def runbooks(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([RUNBOOKS, *args, "--home", str(home)], capture_output=True, text=True, timeout=timeout)


def test_a_second_dev_stack_on_the_same_home_refuses_and_names_the_first(dev_stack):
    second = subprocess.run(
        [
            RUNBOOKS,
            "dev",
            "--home",
            str(dev_stack),
            "--temporal-port",
            str(free_port()),
            "--ui-port",
            str(free_port()),
            "--triggers-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert "in use by another `runbooks dev`" in second.stderr and "pid " in second.stderr
    assert "temporal 127.0.0.1:" in second.stderr  # where the first one is
    assert "llm-runbooks dev stack is up" not in second.stdout


def test_drill_list_names_every_scenario_and_cause(dev_stack):
    from simulator.scenarios import SCENARIOS
    from workflows.playbooks.catalog import DRILLS

    done = runbooks(dev_stack, "drill", "--list")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line and not line.startswith(" ")}
    drillable = [s for s in SCENARIOS if s.partition(":")[0] in DRILLS]
    assert {"service-outage", "model-deploy-failure:image-pull", "model-deploy-failure:pvc-pending"} <= set(drillable)
    for scenario in drillable:
        assert scenario in rows, done.stdout
    assert "default of `model-deploy-failure`" in rows["model-deploy-failure:oom"]
    assert (
        "LLMDeploymentNotReady" in rows["model-deploy-failure:oom"]
        and "model-deploy-failure" in rows["model-deploy-failure:oom"]
    )


def team_drills() -> list[tuple[str, str]]:
    """(scenario, runbook) of every drill that installed packages' playbooks declare (entry points)."""
    from workflows.playbooks.catalog import ALL, BUILT_IN

    return [(d.scenario, p.name) for p in ALL if p not in BUILT_IN for d in p.drills]


def test_installed_team_playbooks_are_drilled_like_ours(dev_stack):
    """A playbook from another installed package (scripts/test installs each under examples/): listed
    by `drill --list`, its alert routed to it by the webhook, its own fault file staged, healed."""
    if not team_drills():
        pytest.skip("no other package declares a playbook here (scripts/test installs examples/*)")
    listed = runbooks(dev_stack, "drill", "--list").stdout
    for scenario, runbook in team_drills():
        row = next((line for line in listed.splitlines() if line.startswith(scenario + " ")), "")
        assert runbook in row and "staged from" in row, listed
        done = drill(dev_stack, scenario)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"incident: {runbook}--" in done.stdout and "outcome: resolved" in done.stdout, done.stdout


# The causes of SOP-004 on one stack, image-pull first: on a fresh stack image-pull asks a human and each other
# cause heals. Before clean rehearsals, :oom after :image-pull joined the open image-pull incident and reported it.
@pytest.mark.parametrize(
    ("cause", "code", "diagnosis"),
    [
        ("image-pull", 3, "image-pull"),
        ("oom", 0, "oom"),
        ("insufficient-gpu", 0, "insufficient-gpu"),
        ("pvc-pending", 0, "pvc"),
    ],
)
def test_model_deploy_failure_causes_one_after_another_as_on_a_fresh_stack(dev_stack, cause, code, diagnosis):
    done = drill(dev_stack, f"model-deploy-failure:{cause}")
    assert done.returncode == code, done.stdout + done.stderr
    assert "clean slate:" in done.stdout
    step2 = next(line for line in done.stdout.splitlines() if "2. Check common issues" in line)
    assert f"mixtral-8x7b: {diagnosis}" in step2, step2
    if code == 0:
        assert "outcome: resolved" in done.stdout and not_ready(dev_stack) == []
    else:
        assert not_ready(dev_stack) == ["mixtral-8x7b"]
        # the incident a drill opened is listed while it waits for a human
        listed = runbooks(dev_stack, "list")
        assert listed.returncode == 0, listed.stderr
        row = next(line for line in listed.stdout.splitlines() if line.startswith("model-deploy-failure--"))
        assert "model-deploy-failure" in row and "P1" in row


def test_the_same_drill_twice_meets_no_cap(dev_stack):
    """SOP-001 restarts the operator once per drill; the cap (1 restart per object per hour) counts only this drill's."""
    for _ in range(2):
        done = drill(dev_stack, "service-outage")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "beyond-cap" not in done.stdout and "outcome: resolved" in done.stdout


def test_drill_of_a_playbook_picks_its_default_cause_and_prints_each_gate_with_its_commands(dev_stack):
    proc = subprocess.Popen(
        [RUNBOOKS, "drill", "model-deploy-failure", "--home", str(dev_stack), "--wait", "--timeout", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out = []
        for line in proc.stdout:
            out.append(line)
            if line.strip().startswith("approve: "):
                break
        text = "".join(out)
        assert "drilling its default, model-deploy-failure:oom" in text, text
        assert "WAITING FOR APPROVAL: gate 'reduce-resources:mixtral-8x7b'" in text, text
        command = line.strip().removeprefix("approve: ").replace("--as NAME", "--as alice")
        approved = subprocess.run(
            shlex.split(command.replace("runbooks", RUNBOOKS, 1)), capture_output=True, text=True, timeout=60
        )
        assert approved.returncode == 0, approved.stderr
        assert "approved by alice" in approved.stdout
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, text + rest
        assert "outcome: resolved" in rest
    finally:
        if proc.poll() is None:
            proc.kill()


def test_console_slack_lines_name_their_incident_and_each_incident_is_announced_once(dev_stack):
    log = (dev_stack / "dev.log").read_text().splitlines()
    console = [line for line in log if line.startswith("[slack:console] ")]
    drills = [line for line in console if "[drill]" in line or "Approval needed" in line]
    drilled = (
        "service-outage--",
        "high-memory--",
        "gpu-unavailable--",
        "model-deploy-failure--",
        *(f"{runbook}--" for _, runbook in team_drills()),
    )
    assert drills and all(line.split()[1].startswith(drilled) for line in drills), drills[:5]
    outage = [line for line in console if line.startswith("[slack:console] service-outage--cluster ")]
    announcements = [line for line in outage if "INCIDENT:" in line]
    runs = (dev_stack / "dev.log").read_text().count("*Scope:*")  # SOP-001's step 3, once per incident
    assert runs >= 1 and len(announcements) == runs
