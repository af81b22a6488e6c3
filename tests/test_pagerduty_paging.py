"""Paging through PagerDuty (issue 23) on the time-skipping server: the real `pagerduty` client,
inside PagerDutyEvents' activities, against the PagerDuty stand-in over HTTPS.

One alert per incident (dedup_key = the incident id) however often the alert repeats or an
activity retries; the 15-minute mark pages the Senior SRE's service (dedup_key + role); a human's
acknowledgement acknowledges both, the resolution resolves both; a refused event is "paging failed"
and the page goes to Slack; severities that do not page stay Slack only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.pagerduty import PagerDutyEvents, events_client
from standins.pagerduty import PagerDutyStandIn, routing_key
from tests.helpers.fixtures_slack import RecordingSlack
from tests.helpers.incident_harness import PLAYBOOKS, incident_input, start
from tests.helpers.incident_playbooks import WaitForHumans
from tests.helpers.incident_queries import until
from tests.helpers.waiting import wait_for
from workflows.incident.paging import PAGERDUTY_RETRY
from workflows.incident.models import (
    SIGNAL_ALERT_REPEATED,
    UPDATE_HUMAN_ACTION,
    AlertRepeated,
    HumanAction,
    IncidentInput,
    PagingPlan,
)

pytestmark = pytest.mark.timeout(90)

CLUSTER = "prod-us-east"
PLAN = PagingPlan(severities=["P0"], roles=["Senior SRE"], source=CLUSTER)


def events(pd: PagerDutyStandIn, keys: dict[str, str] | None = None) -> PagerDutyEvents:
    keys = keys or {"default": pd.keys["LLM Platform"], "Senior SRE": pd.keys["Senior SRE"]}
    clients = {route: events_client(key, events_url=pd.base_url, ca_file=pd.ca_file) for route, key in keys.items()}
    for client in clients.values():
        client.sleep_timer = 0.01  # the client's own pause before its one 429 retry
    return PagerDutyEvents(clients)


@asynccontextmanager
async def paging_worker(
    env: WorkflowEnvironment, task_queue: str, slack: RecordingSlack, pagerduty: PagerDutyEvents
) -> AsyncIterator[Worker]:
    with ThreadPoolExecutor(max_workers=4) as executor:  # the PagerDuty client is synchronous
        async with Worker(
            env.client,
            task_queue=task_queue,
            workflows=PLAYBOOKS,
            disable_eager_activity_execution=True,
            activities=[*slack.activities, pagerduty.trigger, pagerduty.follow_up],
            activity_executor=executor,
        ) as worker:
            yield worker


def p0_input(begin, **fields) -> IncidentInput:
    fields.setdefault("paging", PLAN)
    return incident_input(
        begin,
        severity="P0",
        cluster=CLUSTER,
        scope="llm/llm-d",
        ui_url="http://temporal.example:8233",
        **fields,
    )


async def resolve(handle) -> str:
    await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="fixed by hand"))
    return await handle.result()


async def test_one_alert_per_incident_the_15_minute_mark_pages_senior_sre_resolution_resolves_both(
    time_skipping: WorkflowEnvironment, task_queue: str, pd: PagerDutyStandIn
) -> None:
    slack = RecordingSlack()
    async with paging_worker(time_skipping, task_queue, slack, events(pd)):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, WaitForHumans, p0_input(begin), task_queue)
        await time_skipping.sleep(timedelta(minutes=5))
        [alert] = wait_for(lambda: pd.alerts(handle.id), "the incident's PagerDuty alert")
        assert (alert.routing_key, alert.severity, alert.status) == (pd.keys["LLM Platform"], "critical", "triggered")
        assert alert.payload["source"] == CLUSTER
        assert (alert.payload["component"], alert.payload["group"]) == ("test-outage", "llm/llm-d")
        assert alert.payload["class"] == "LLMDServiceDown"
        assert alert.summary.startswith("P0 ") and "llm-d service is down" in alert.summary
        details = alert.payload["custom_details"]
        assert (details["incident"], details["severity"], details["gates waiting"]) == (handle.id, "P0", [])
        hrefs = [link["href"] for link in alert.links]
        assert f"http://temporal.example:8233/namespaces/default/workflows/{handle.id}" in hrefs
        assert "https://runbooks.example/sop-001" in hrefs
        for _ in range(3):  # Alertmanager repeats the alert: still one PagerDuty alert
            await handle.signal(
                SIGNAL_ALERT_REPEATED, AlertRepeated(received_at=await time_skipping.get_current_time())
            )
        await time_skipping.sleep(timedelta(minutes=12))  # past the 15-minute mark
        senior = wait_for(lambda: pd.alerts(f"{handle.id}:Senior SRE"), "the Senior SRE's alert")
        assert [a.routing_key for a in senior] == [pd.keys["Senior SRE"]]
        assert len(pd.alerts(handle.id)) == 1 and len(pd.events("trigger")) == 2
        await resolve(handle)
    assert [(a.dedup_key, a.status) for a in pd.alerts()] == [
        (handle.id, "resolved"),
        (f"{handle.id}:Senior SRE", "resolved"),
    ]
    # each resolve went through the service its alert was opened on
    assert {(e.dedup_key, e.routing_key) for e in pd.events("resolve")} == {
        (handle.id, pd.keys["LLM Platform"]),
        (f"{handle.id}:Senior SRE", pd.keys["Senior SRE"]),
    }


async def test_an_acknowledgement_acknowledges_the_pagerduty_alert(
    time_skipping: WorkflowEnvironment, task_queue: str, pd: PagerDutyStandIn
) -> None:
    slack = RecordingSlack()
    async with paging_worker(time_skipping, task_queue, slack, events(pd)):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, WaitForHumans, p0_input(begin), task_queue)
        await until(handle, lambda s: [a.status for a in s.pagerduty_alerts] == ["triggered"], "paged")
        await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="acknowledge", by="carol"))
        state = await until(handle, lambda s: s.pagerduty_alerts[0].status == "acknowledged", "acknowledged")
        assert [a.log for a in pd.alerts(handle.id)] == [["trigger", "acknowledge"]]
        assert state.acknowledged_by == "carol"
        await resolve(handle)
    assert [a.log for a in pd.alerts(handle.id)] == [["trigger", "acknowledge", "resolve"]]


async def test_429_and_5xx_are_retried_and_still_make_one_alert(
    time_skipping: WorkflowEnvironment, task_queue: str, pd: PagerDutyStandIn
) -> None:
    pd.fail_next(429, 429, 503, 500)  # the client retries one 429 itself; Temporal retries the rest
    slack = RecordingSlack()
    async with paging_worker(time_skipping, task_queue, slack, events(pd)):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, WaitForHumans, p0_input(begin), task_queue)
        await time_skipping.sleep(timedelta(minutes=5))
        state = await until(handle, lambda s: s.pagerduty_alerts and s.pagerduty_alerts[0].status != "triggering")
        assert state.pagerduty_alerts[0].status == "triggered" and state.paging_failures == []
        assert pd.requests >= 5 and len(pd.alerts(handle.id)) == 1
        await resolve(handle)


async def test_a_page_whose_answer_was_lost_is_sent_again_and_still_makes_one_alert(
    time_skipping: WorkflowEnvironment, task_queue: str, pd: PagerDutyStandIn
) -> None:
    """PagerDuty took the trigger but the worker never heard (its answer lost, or the worker killed
    mid-page): the activity's retry sends the same dedup key again, which only adds to the alert."""
    pd.lose_next_answers(2)
    slack = RecordingSlack()
    async with paging_worker(time_skipping, task_queue, slack, events(pd)):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, WaitForHumans, p0_input(begin), task_queue)
        await time_skipping.sleep(timedelta(minutes=5))
        state = await until(handle, lambda s: s.pagerduty_alerts and s.pagerduty_alerts[0].status != "triggering")
        assert state.pagerduty_alerts[0].status == "triggered" and state.paging_failures == []
        [alert] = pd.alerts(handle.id)
        assert alert.log == ["trigger", "trigger", "trigger"]  # sent three times, one alert
        await resolve(handle)
    assert [a.status for a in pd.alerts(handle.id)] == ["resolved"]


async def test_pagerduty_down_for_good_gives_up_within_the_bound_and_pages_in_slack(
    time_skipping: WorkflowEnvironment, task_queue: str, pd: PagerDutyStandIn
) -> None:
    pd.fail_every(503)
    slack = RecordingSlack()
    async with paging_worker(time_skipping, task_queue, slack, events(pd)):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, WaitForHumans, p0_input(begin), task_queue)
        await time_skipping.sleep(timedelta(minutes=10))  # the retries' back-off is ~3 minutes in all
        state = await until(handle, lambda s: s.paging_failures, "paging failed")
        assert "page to P0" in state.paging_failures[0] and "503" in state.paging_failures[0]
        assert pd.requests == PAGERDUTY_RETRY.maximum_attempts  # one request per attempt, then it stops
        assert slack.matching("*Paging failed*")
        pd.fail_every(None)
        await resolve(handle)


async def test_a_refused_event_is_paging_failed_and_the_page_goes_to_slack(
    time_skipping: WorkflowEnvironment, task_queue: str, pd: PagerDutyStandIn
) -> None:
    wrong = {"default": routing_key("a service PagerDuty does not have"), "Senior SRE": pd.keys["Senior SRE"]}
    slack = RecordingSlack()
    async with paging_worker(time_skipping, task_queue, slack, events(pd, wrong)):
        begin = await time_skipping.get_current_time()
        handle = await start(time_skipping, WaitForHumans, p0_input(begin), task_queue)
        state = await until(handle, lambda s: s.paging_failures, "paging failed")
        assert "Invalid routing key" in state.paging_failures[0] and "page to P0" in state.paging_failures[0]
        assert state.pagerduty_alerts[0].status == "failed"
        [fallback] = slack.matching("*Paging failed*")
        assert "Invalid routing key" in fallback.text and "llm-d service is down" in fallback.text
        meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        assert "**paging failed**: PagerDuty page to P0" in meta.current_details
        report = await resolve(handle)
    assert pd.alerts() == [] and pd.refusals()
    assert "Paging failed" in report


async def test_a_severity_that_does_not_page_and_an_unconfigured_incident_stay_slack_only(
    time_skipping: WorkflowEnvironment, task_queue: str, pd: PagerDutyStandIn
) -> None:
    slack = RecordingSlack()
    async with paging_worker(time_skipping, task_queue, slack, events(pd)):
        begin = await time_skipping.get_current_time()
        p2 = await start(time_skipping, WaitForHumans, incident_input(begin, severity="P2", paging=PLAN), task_queue)
        bare = await start(time_skipping, WaitForHumans, incident_input(begin, severity="P0"), task_queue)
        await time_skipping.sleep(timedelta(minutes=20))  # past the 15-minute mark too
        assert slack.matching("Escalation to Senior SRE")
        for handle in (p2, bare):  # both resolved before either result is awaited (awaiting one skips time)
            await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="by hand"))
        await p2.result()
        await bare.result()
    assert pd.requests == 0


async def test_dedup_keys_stay_within_pagerdutys_255_characters() -> None:
    from workflows.incident.paging import dedup_key

    long_id = "service-outage--" + "x" * 300
    assert len(dedup_key(long_id, "Senior SRE")) == 255
    assert dedup_key(long_id, "Senior SRE") != dedup_key(long_id, "Engineering team")
    assert dedup_key("short", "Senior SRE") == "short:Senior SRE"
