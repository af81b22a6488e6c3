"""Escalation marks and stakeholder updates on the time-skipping server.

Times come from the server: each recorded Slack post carries the (skipped) time its activity
was scheduled, compared with the alert's startsAt: at its mark or after it, by no more than the real
time the test took (`ServerClock`).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.helpers.fixtures_slack import RecordingSlack
from tests.helpers.incident_queries import state_of
from tests.helpers.incident_harness import ServerClock, incident_input, incident_worker, start
from tests.helpers.incident_playbooks import WaitForHumans, WaitForKServeHumans
from workflows.incident.escalation import EscalationPolicy
from workflows.incident.models import SIGNAL_ALERT_RESOLVED, UPDATE_HUMAN_ACTION, AlertResolved, HumanAction
from workflows.incident.search import ESCALATION_LEVEL

pytestmark = pytest.mark.timeout(60)


def escalations(slack: RecordingSlack) -> list:
    return [p for p in slack.posted if p.method == "post_in_thread" and ":escalation-" in p.arg.key]


def assert_at(clock: ServerClock, posts: list, expected_minutes: list[float], origin=None) -> None:
    clock.assert_at([p.at for p in posts], expected_minutes, origin)


async def resolve(handle, by: str = "bob") -> str:
    await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by=by, note="fixed by hand"))
    return await handle.result()


def test_standard_policy_follows_the_sop_escalation_path() -> None:
    steps = EscalationPolicy.standard().steps
    assert [(s.after_minutes, s.level, s.notify) for s in steps] == [
        (15, 1, "Senior SRE"),
        (30, 2, "Engineering team"),
        (45, 3, "Incident Commander + Engineering Manager"),
    ]
    with pytest.raises(ValueError):
        EscalationPolicy.of()


async def test_escalates_at_15_30_45_minutes_after_starts_at_once_each(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        clock = await ServerClock.read(time_skipping)
        begin = clock.begin
        handle = await start(time_skipping, WaitForHumans, incident_input(begin), task_queue)
        await time_skipping.sleep(timedelta(minutes=70))
        posts = escalations(slack)
        assert_at(clock, posts, [15, 30, 45])
        assert ["Senior SRE" in posts[0].text, "Engineering team" in posts[1].text] == [True, True]
        assert "Incident Commander + Engineering Manager" in posts[2].text
        desc = await handle.describe()
        assert desc.typed_search_attributes.get(ESCALATION_LEVEL) == 3
        report = await resolve(handle)
    assert len(escalations(slack)) == 3
    assert "| 3 | Incident Commander + Engineering Manager |" in report


async def test_no_escalation_after_the_alert_resolves(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        clock = await ServerClock.read(time_skipping)
        begin = clock.begin
        handle = await start(time_skipping, WaitForHumans, incident_input(begin), task_queue)
        await time_skipping.sleep(timedelta(minutes=20))
        await handle.signal(SIGNAL_ALERT_RESOLVED, AlertResolved(ends_at=await time_skipping.get_current_time()))
        await time_skipping.sleep(timedelta(minutes=60))
        assert_at(clock, escalations(slack), [15])
        await resolve(handle)


async def test_no_escalation_after_resolution(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        clock = await ServerClock.read(time_skipping)
        begin = clock.begin
        handle = await start(time_skipping, WaitForHumans, incident_input(begin), task_queue)
        await time_skipping.sleep(timedelta(minutes=10))
        report = await resolve(handle)
        await time_skipping.sleep(timedelta(minutes=60))
    assert escalations(slack) == []
    assert "No escalation was needed." in report


async def test_a_mark_already_past_fires_at_once(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        clock = await ServerClock.read(time_skipping)
        now = clock.begin
        starts_at = now - timedelta(minutes=20)  # the alert fired 20 minutes before the incident opened
        handle = await start(time_skipping, WaitForHumans, incident_input(starts_at), task_queue)
        # (31, not 30: the test server can stall when a sleep ends exactly as a workflow timer fires)
        await time_skipping.sleep(timedelta(minutes=31))
        assert_at(clock, escalations(slack), [20, 30, 45], origin=starts_at)
        assert "already past" in escalations(slack)[0].text
        await resolve(handle)


async def test_escalate_now_takes_the_next_level_and_marks_do_not_repeat_it(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        clock = await ServerClock.read(time_skipping)
        begin = clock.begin
        handle = await start(time_skipping, WaitForHumans, incident_input(begin), task_queue)
        await time_skipping.sleep(timedelta(minutes=5))
        answer = await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="escalate", by="carol"))
        assert answer == "escalated to Senior SRE"
        await time_skipping.sleep(timedelta(minutes=60))
        posts = escalations(slack)
        assert_at(clock, posts, [5, 30, 45])  # the 15-minute mark finds Senior SRE already paged
        assert "carol asked to escalate" in posts[0].text
        await resolve(handle)


async def test_policy_from_the_input_overrides_the_playbook(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        clock = await ServerClock.read(time_skipping)
        begin = clock.begin
        inp = incident_input(begin, escalation=list(EscalationPolicy.of(10, 20).steps))
        handle = await start(time_skipping, WaitForHumans, inp, task_queue)
        await time_skipping.sleep(timedelta(minutes=50))
        assert_at(clock, escalations(slack), [10, 20])
        await resolve(handle)


@pytest.mark.parametrize(("severity", "expected"), [("P0", [15, 30, 45, 60]), ("P1", [30, 60]), ("P2", [])])
async def test_stakeholder_updates_follow_the_severity(time_skipping, task_queue, severity, expected) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        clock = await ServerClock.read(time_skipping)
        begin = clock.begin
        handle = await start(time_skipping, WaitForHumans, incident_input(begin, severity=severity), task_queue)
        await time_skipping.sleep(timedelta(minutes=65))
        updates = slack.matching("INCIDENT UPDATE")
        assert_at(clock, updates, expected)
        await resolve(handle)
    if severity == "P0":
        first = updates[0].text
        for field in (
            "Status: INVESTIGATING",
            "Severity: P0 (Critical)",
            "Impact: test impact",
            "Start Time: ",
            "Current Actions:",
            "Next Update: ",
            "Incident Commander: @alice",
        ):
            assert field in first, first
    assert len(slack.matching("INCIDENT UPDATE")) == len(expected)  # none after resolution


async def test_an_alert_firing_for_hours_gets_one_catch_up_update_not_one_per_missed_mark(
    time_skipping, task_queue
) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        clock = await ServerClock.read(time_skipping)
        started = clock.begin - timedelta(hours=6)  # P0: 24 marks of 15 min already past
        handle = await start(time_skipping, WaitForHumans, incident_input(started, severity="P0"), task_queue)
        await time_skipping.sleep(timedelta(minutes=20))
        updates = slack.matching("INCIDENT UPDATE")
        # one at once for the 24 marks past, then the cadence goes on from the next (6h15m after startsAt)
        assert_at(clock, updates, [0, 15])
        await resolve(handle)


async def test_kserve_incidents_escalate_along_seed_004s_contacts(time_skipping, task_queue) -> None:
    slack = RecordingSlack()
    async with incident_worker(time_skipping, task_queue, slack):
        clock = await ServerClock.read(time_skipping)
        handle = await start(time_skipping, WaitForKServeHumans, incident_input(clock.begin, severity="P1"), task_queue)
        await time_skipping.sleep(timedelta(minutes=40))
        posts = escalations(slack)
        assert_at(clock, posts, [15, 30])
        assert "Model Owner (#model-team)" in posts[0].text and "Infrastructure (#platform)" in posts[1].text
        state = await state_of(handle)
        await resolve(handle)
    assert [e.notify for e in state.escalations] == ["Model Owner (#model-team)", "Infrastructure (#platform)"]
