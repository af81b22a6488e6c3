"""`runbooks list` and `runbooks show` name each incident's cluster (the `Cluster` search attribute,
the state's `cluster`); `runbooks list --cluster NAME` shows that cluster's alone, and the default
cluster's include the incidents opened before clusters had names (no `Cluster`: `-`).

Real incidents: alerts through the triggers' intake on the dev server (no worker needed: the
triggers index an incident's attributes with its start), the `runbooks` command in its own process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from datetime import UTC, datetime

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from cli.control import render_state
from tests.helpers.dev_stack import RUNBOOKS
from tests.helpers.fixtures_alertmanager import AUTH, in_process, triggers_settings
from tests.helpers.service_outage import outage_input
from tests.helpers.waiting import wait_for_async
from standins.alertmanager import am_alert, am_payload
from workflows.incident import search
from workflows.incident.models import Alert, UnservedCluster
from workflows.incident.state import IncidentState


def _list(address: str, *args: str) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNBOOKS_")},
        "RUNBOOKS_CLUSTERS__DEFAULT": "east",
        "RUNBOOKS_CLUSTERS__SERVED": '["east", "west"]',
    }
    return subprocess.run(
        [RUNBOOKS, "list", "--temporal", address, "--limit", "1000", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _rows(listed: subprocess.CompletedProcess, prefix: str) -> dict[str, list[str]]:
    """This test's incidents (their ids start with `prefix`) -> the row's columns."""
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines and lines[0].split()[:3] == ["INCIDENT", "CLUSTER", "RUNBOOK"], listed.stdout
    return {line.split()[0]: line.split()[1:] for line in lines[1:] if line.startswith(prefix)}


async def test_list_shows_and_filters_by_cluster(dev_client: Client, task_queue):
    address = dev_client.service_client.config.target_host
    settings = triggers_settings(
        task_queue,
        clusters={"default": "east", "served": {"east": {"task_queue": f"{task_queue}-east"}, "west": {}}},
    )
    prefix = settings.temporal.incident_id_prefix
    alerts = {
        "east": am_alert("LLMDServiceDown"),  # no cluster label: the default cluster's
        "west": am_alert("LLMDServiceDown", cluster="west"),
        "prod-eu-west": am_alert("LLMDServiceDown", cluster="prod-eu-west"),  # served by no worker
    }
    ids: dict[str, str] = {}
    async with in_process(settings, dev_client) as http:
        for cluster, alert in alerts.items():
            resp = await http.post("/alertmanager", json=am_payload(alert), headers=AUTH)
            assert resp.status_code == 200, resp.text
            ids[cluster] = resp.json()["incidents"][0]["incident"]
    # An incident of 1.0, before clusters had names: no Cluster attribute.
    legacy = await dev_client.start_workflow(
        "ServiceOutage",
        outage_input(),
        id=f"{prefix}service-outage--cluster-1-0",
        task_queue=f"{task_queue}-east",
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search.RUNBOOK, "service-outage"),
                SearchAttributePair(search.INCIDENT_SEVERITY, "P1"),
                SearchAttributePair(search.INCIDENT_STATUS, "open"),
            ]
        ),
    )
    ids["-"] = legacy.id
    try:

        async def all_listed() -> dict[str, list[str]] | None:  # visibility catches up shortly after a start
            rows = _rows(await asyncio.to_thread(_list, address), prefix)
            return rows if set(rows) == set(ids.values()) else None

        rows = await wait_for_async(all_listed, "the four incidents in `runbooks list`", 60)
        assert {incident: row[0] for incident, row in rows.items()} == {i: c for c, i in ids.items()}

        def listed(cluster: str) -> set[str]:
            return set(_rows(_list(address, "--cluster", cluster), prefix))

        assert await asyncio.to_thread(listed, "west") == {ids["west"]}
        assert await asyncio.to_thread(listed, "prod-eu-west") == {ids["prod-eu-west"]}
        # The default cluster's: its own and those from before clusters, which run there.
        assert await asyncio.to_thread(listed, "east") == {ids["east"], ids["-"]}
        none = await asyncio.to_thread(_list, address, "--cluster", "north")
        assert none.returncode == 0 and prefix not in none.stdout
        empty = await asyncio.to_thread(_list, address, "--cluster", " ")
        assert empty.returncode == 2 and "--cluster needs a cluster's name" in empty.stderr
    finally:
        for incident in ids.values():
            await dev_client.get_workflow_handle(incident).terminate("test over")


def _state(**fields) -> IncidentState:
    now = datetime.now(UTC)
    return IncidentState(
        incident_id="service-outage--west.cluster",
        runbook="service-outage",
        title="t",
        severity="P1",
        alert=Alert(alertname="LLMDServiceDown", fingerprint="f", starts_at=now),
        incident_commander="On-call SRE",
        opened_at=now,
        **fields,
    )


def test_show_names_the_cluster_and_says_when_no_worker_serves_it():
    assert "  cluster: west" in render_state(_state(cluster="west"), []).splitlines()[1]
    assert "cluster: - (opened before clusters had names)" in render_state(_state(), [])
    unserved = UnservedCluster(cluster="prod-eu-west", label="cluster", served=["east", "west"])
    shown = render_state(_state(cluster="prod-eu-west", unserved_cluster=unserved), [])
    assert "  cluster: prod-eu-west" in shown
    assert "NOT ACTING: cluster 'prod-eu-west' (label `cluster`) is served by no worker" in shown
    assert "served: east, west" in shown
