"""`runbooks dev --clusters east,west` and `runbooks drill X --cluster NAME`, as an SRE rehearses many
clusters on one machine: one simulated cluster and one worker per name, one Temporal, one triggers;
each drill stages, alerts and starts from a clean slate on its own cluster only.

Also the choices behind it, without a stack: which clusters dev serves, which one a drill targets,
and the bad flags refused before anything starts."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import datetime, timezone
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client, config

from activities.kube.models import RESTARTED_AT
from cli.control import ControlError
from cli.dev_clusters import dev_clusters
from cli.drill_slate import drill_target
from settings import Settings
from standins.alertmanager import free_port
from tests.helpers.dev_stack import RUNBOOKS, drill, running_dev
from tests.helpers.waiting import wait_for

# ---- without a stack -------------------------------------------------------------------------------


def test_dev_serves_the_clusters_it_runs_the_first_the_default_unless_configured():
    two = dev_clusters(Settings(), ["east", "west"])
    assert two.clusters.names() == ["east", "west"] and two.clusters.default == "east"
    assert [two.cluster_task_queue(n) for n in ("east", "west")] == ["llm-runbooks.east", "llm-runbooks.west"]
    configured = Settings.model_validate(
        {"clusters": {"default": "west", "served": {"west": {"task_queue": "llm-runbooks"}, "prod": {}}}}
    )
    picked = dev_clusters(configured, ["east", "west"])
    assert picked.clusters.default == "west" and picked.clusters.names() == ["west", "east"]  # prod is not run
    assert picked.cluster_task_queue("west") == "llm-runbooks"  # its configured queue kept
    plain = dev_clusters(Settings(), None)
    assert plain.clusters.names() == ["default"] and plain.cluster_task_queue("default") == "llm-runbooks.default"


def _dev_state(tmp_path: Path, *names: str) -> dict:
    for name in names:
        (tmp_path / f"{name}.kubeconfig").write_text("{}")
    return {
        "cluster": names[0],
        "kubeconfig": str(tmp_path / f"{names[0]}.kubeconfig"),
        "simulator": "http://sim-0",
        "clusters": {n: str(tmp_path / f"{n}.kubeconfig") for n in names},
        "task_queues": {n: f"q-{n}" for n in names},
        "simulators": {n: f"http://sim-{n}" for n in names},
        "cluster_label": "region",
    }


def test_a_drill_targets_the_named_cluster_and_routes_as_the_dev_stack_does(tmp_path: Path):
    dev = _dev_state(tmp_path, "east", "west")
    target, settings = drill_target(Settings(), dev, tmp_path, "west")
    assert (target.name, target.task_queue, target.simulator) == ("west", "q-west", "http://sim-west")
    assert target.kubeconfig == str(tmp_path / "west.kubeconfig") and target.labels == {"region": "west"}
    assert settings.clusters.names() == ["east", "west"] and settings.cluster_task_queue("west") == "q-west"
    default, _ = drill_target(Settings(), dev, tmp_path, None)
    assert (default.name, default.task_queue, default.labels) == ("east", "q-east", {})  # unlabelled, as before
    with pytest.raises(ControlError, match="runs no cluster 'north': it runs east, west"):
        drill_target(Settings(), dev, tmp_path, "north")


def test_a_state_file_from_before_clusters_had_names_is_the_default_cluster(tmp_path: Path):
    (tmp_path / "k").write_text("{}")
    target, settings = drill_target(Settings(), {"kubeconfig": str(tmp_path / "k")}, tmp_path, None)
    assert (target.name, target.kubeconfig, target.task_queue) == (
        "default",
        str(tmp_path / "k"),
        "llm-runbooks.default",
    )
    assert settings == Settings()
    with pytest.raises(ControlError, match="no simulator found"):
        drill_target(Settings(), {}, tmp_path, None)


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--clusters", "east,,west"], "name each cluster"),
        (["--clusters", "east,east"], "east named twice"),
        (["--clusters", "east,we st"], "'we st' is not a cluster name"),
        (["--clusters", "east,west", "--kubeconfig", "/dev/null"], "--kubeconfig is one real cluster"),
    ],
)
def test_bad_cluster_flags_are_refused_before_anything_starts(tmp_path: Path, flags: list[str], said: str):
    done = subprocess.run(
        [RUNBOOKS, "dev", "--home", str(tmp_path), "--temporal-port", str(free_port()), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and said in done.stderr, done.stderr
    assert "stack is up" not in done.stdout and not (tmp_path / "temporal.db").exists()


# ---- `runbooks dev --clusters east,west` -----------------------------------------------------------


@pytest.fixture(scope="module")
def two_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("dev-clusters")
    with running_dev(home, "--clusters", "east,west", clean_exit=True, workers=2):
        yield home


def api_of(home: Path, name: str) -> client.ApiClient:
    kubeconfig = json.loads((home / "dev.json").read_text())["clusters"][name]
    return config.new_client_from_config(config_file=kubeconfig)


def operator_restarted(home: Path, name: str) -> bool:
    deployment = client.AppsV1Api(api_of(home, name)).read_namespaced_deployment("llm-d-operator", "llm-d-system")
    return RESTARTED_AT in (deployment.spec.template.metadata.annotations or {})


def not_ready(home: Path, name: str) -> list[str]:
    items = client.CustomObjectsApi(api_of(home, name)).list_cluster_custom_object(
        "inference.llm-d.io", "v1alpha1", "llmdeployments"
    )["items"]
    return [i["metadata"]["name"] for i in items if i.get("status", {}).get("phase") != "Ready"]


@pytest.mark.integration
def test_the_banner_and_dev_json_list_each_cluster(two_clusters: Path):
    state = json.loads((two_clusters / "dev.json").read_text())
    assert state["cluster"] == "east" and set(state["clusters"]) == {"east", "west"}
    assert state["kubeconfig"] == state["clusters"]["east"]  # the default's, as before clusters had names
    assert state["task_queues"] == {"east": "llm-runbooks.east", "west": "llm-runbooks.west"}
    banner = (two_clusters / "dev.log").read_text()
    for name in ("east", "west"):
        kubeconfig = state["clusters"][name]
        assert kubeconfig == str(two_clusters / f"simulator-{name}.kubeconfig")
        assert f"  cluster           {name}: simulated llm-d cluster at {state['simulators'][name]}" in banner
        assert f"KUBECONFIG={kubeconfig} kubectl get llmdeployments -A" in banner
        assert f"  worker            cluster {name}: every playbook, on task queue llm-runbooks.{name}" in banner
        (ready,) = [line for line in banner.splitlines() if f"worker ready task_queue=llm-runbooks.{name} " in line]
        assert ready.endswith(f" cluster={name}"), ready
    assert "runbooks drill service-outage --cluster west --wait --auto-approve" in banner


@pytest.mark.integration
def test_a_drill_on_one_cluster_acts_there_only_and_its_clean_slate_leaves_the_other_alone(two_clusters: Path):
    # west: a fault automation cannot fix, so its incident stays open, waiting for a human
    stuck = drill(two_clusters, "model-deploy-failure:image-pull", "--cluster", "west")
    assert stuck.returncode == 3, stuck.stdout + stuck.stderr
    assert "staged on cluster west" in stuck.stdout and "(cluster west, task queue llm-runbooks.west)" in stuck.stdout
    assert not_ready(two_clusters, "west") == ["mixtral-8x7b"] and not_ready(two_clusters, "east") == []
    west_incident = next(line.split()[1] for line in stuck.stdout.splitlines() if line.startswith("incident: "))

    # east, the default: no --cluster, as every single-cluster drill; heals east, touches nothing on west
    done = drill(two_clusters, "service-outage")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outcome: resolved" in done.stdout and "simulated cluster east reset to its baseline" in done.stdout
    assert west_incident not in done.stdout  # the clean slate closed east's incidents only
    assert operator_restarted(two_clusters, "east") and not operator_restarted(two_clusters, "west")
    assert not_ready(two_clusters, "west") == ["mixtral-8x7b"]
    listed = subprocess.run(
        [RUNBOOKS, "list", "--home", str(two_clusters)], capture_output=True, text=True, timeout=60
    ).stdout
    assert west_incident in listed  # still open, on west

    # west again, from its clean slate: its open incident closed, its simulator reset, the outage healed
    healed = drill(two_clusters, "service-outage", "--cluster", "west")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert f"closed 1 open incident(s) ({west_incident})" in healed.stdout
    assert "outcome: resolved" in healed.stdout and not_ready(two_clusters, "west") == []
    assert operator_restarted(two_clusters, "west")


@pytest.mark.integration
def test_a_drill_for_a_cluster_the_stack_does_not_run_is_refused(two_clusters: Path):
    done = subprocess.run(
        [RUNBOOKS, "drill", "service-outage", "--cluster", "north", "--home", str(two_clusters)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "runs no cluster 'north': it runs east, west" in done.stderr


@pytest.mark.integration
def test_the_cli_serves_the_clusters_of_the_dev_stack_it_talks_to(two_clusters: Path):
    def runbooks(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RUNBOOKS, *args, "--home", str(two_clusters)], capture_output=True, text=True, timeout=60
        )

    listed = runbooks("schedules", "list", "--cluster", "west")
    assert listed.returncode == 0, listed.stderr
    assert "gpu-health-check.west" in listed.stdout and ".east" not in listed.stdout
    everything = runbooks("schedules", "list")
    assert everything.returncode == 0 and "gpu-health-check.east" in everything.stdout, everything.stderr
    paused = runbooks("schedules", "pause", "gpu-health-check", "--cluster", "west", "--note", "test")
    assert paused.returncode == 0 and "gpu-health-check.west: paused" in paused.stdout, paused.stderr
    refused = runbooks("schedules", "list", "--cluster", "north")
    assert refused.returncode == 2 and "clusters.served lists east, west" in refused.stderr


@pytest.mark.integration
def test_a_drill_leaves_the_incident_of_a_cluster_no_worker_serves_open(two_clusters: Path):
    state = json.loads((two_clusters / "dev.json").read_text())
    fingerprint = uuid.uuid4().hex[:16]
    alert = {
        "status": "firing",
        "labels": {"alertname": "LLMDServiceDown", "cluster": "prod-eu-west", "instance": "10.9.0.1:8000"},
        "startsAt": datetime.now(timezone.utc).isoformat(),
        "fingerprint": fingerprint,
    }
    body = {"version": "4", "status": "firing", "groupKey": f"{{}}:{fingerprint}", "alerts": [alert]}
    sent = httpx.post(
        f"{state['triggers']}/alertmanager",
        json=body,
        headers={"Authorization": f"Bearer {state['webhook_token']}"},
        timeout=30,
    )
    assert sent.status_code == 200, sent.text

    def listed() -> str:
        return subprocess.run(
            [RUNBOOKS, "list", "--home", str(two_clusters)], capture_output=True, text=True, timeout=60
        ).stdout

    unserved = wait_for(lambda: next((line for line in listed().splitlines() if "prod-eu-west" in line), None), "it")
    done = drill(two_clusters, "service-outage")  # east, the default cluster, whose queue hosts that incident
    assert done.returncode == 0, done.stdout + done.stderr
    incident = unserved.split()[0]
    assert incident not in done.stdout, "the clean slate closes the drilled cluster's incidents only"
    assert incident in listed()
