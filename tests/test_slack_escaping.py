"""Alert and cluster text reaches Slack as text: `&`, `<`, `>` escaped, so `<!channel>`, `<@U123>`,
`<no value>`, `R&D` and `<|eot_id|>` are shown as written and form no mention, broadcast or link;
our own `*bold*`, `:emoji:` and the links we build stay. Read back through the stand-in's rendering."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.slack import SlackActivities
from activities.slack_models import ApprovalRequest, IncidentMessage, MessageLink, MessageUpdate, ThreadMessage
from standins.slack import SlackStandIn
from tests.helpers.incident_harness import slack_worker, start
from tests.helpers.waiting import wait_for_async
from workflows.incident.models import SIGNAL_HUMAN_ACTION, Alert, HumanAction, IncidentInput
from workflows.playbooks.triage.playbook import Triage

pytestmark = pytest.mark.timeout(60)
CHANNEL = "#incidents"
NASTY = "<no value> R&D <|eot_id|> <!channel> <@U123>"


@pytest.fixture
def slack(slack_client) -> SlackActivities:
    return SlackActivities(slack_client, default_channel=CHANNEL, cluster="east<&>")


def _no_markup_but(seen, links: list[str] | None = None) -> None:
    for r in seen:
        assert r.mentions == [] and r.broadcasts == [], r
    assert [u for r in seen for u in r.links] == (links or [])


async def test_every_message_kind_escapes_what_it_is_given(slack, slack_standin: SlackStandIn) -> None:
    inc = IncidentMessage(
        key="inc-1:1:incident",
        incident_id="inc-1",
        severity="P1",
        title="Alert without a playbook",
        summary=f"summary {NASTY}",
        description=f"description {NASTY}",
        runbook_url="https://runbooks.example/sop?a=1&b=2",
        labels={"team": "R&D", "model": "<|eot_id|>", "owner": "<@U123>"},
        incident_commander="<!here>",
        started_at=datetime(2026, 5, 1, tzinfo=timezone.utc),
    )
    ref = await ActivityEnvironment().run(slack.post_incident, inc)
    seen = slack_standin.rendered(CHANNEL, ref.ts)
    _no_markup_but(seen, ["https://runbooks.example/sop?a=1&b=2"])
    shown = "\n".join(r.text for r in seen)
    assert f"summary {NASTY}" in shown and f"description {NASTY}" in shown
    assert "`model=<|eot_id|>`" in shown and "`team=R&D`" in shown and "`owner=<@U123>`" in shown
    [message] = slack_standin.messages(CHANNEL)
    assert message["blocks"][1]["text"]["text"].startswith("*summary &lt;no value&gt; R&amp;D")  # bold kept

    note = ThreadMessage(
        key="inc-1:2:note",
        channel=ref.channel,
        thread_ts=ref.ts,
        text=f":mag: *Pods in `llm`:* {NASTY}",
        links=[MessageLink(url="https://prometheus.example/graph?g0.expr=up>0", label="Source <1>")],
    )
    posted = await ActivityEnvironment().run(slack.post_in_thread, note)
    seen = slack_standin.rendered(CHANNEL, posted.ts)
    _no_markup_but(seen, ["https://prometheus.example/graph?g0.expr=up>0"] * 2)  # text and blocks
    assert seen[0].text == f"[east<&>] :mag: *Pods in `llm`:* {NASTY}\nSource <1>"

    built = ThreadMessage(
        key="inc-1:3:report",
        channel=ref.channel,
        thread_ts=ref.ts,
        text="report",
        blocks=[{"type": "section", "fields": [{"type": "mrkdwn", "text": f"*pod* {NASTY}"}]}],
    )
    posted = await ActivityEnvironment().run(slack.post_in_thread, built)
    seen = slack_standin.rendered(CHANNEL, posted.ts)
    _no_markup_but(seen)
    assert f"*pod* {NASTY}" in [r.text for r in seen]

    req = ApprovalRequest(
        key="inc-1:4:approval",
        incident_id="inc-1",
        channel=ref.channel,
        thread_ts=ref.ts,
        gate="cordon-drain",
        question=f"Cordon node `{NASTY}`?",
        destructive=True,
    )
    asked = await ActivityEnvironment().run(slack.request_approval, req)
    seen = slack_standin.rendered(CHANNEL, asked.ts)
    _no_markup_but(seen)
    assert sum(f"Cordon node `{NASTY}`?" in r.text for r in seen) == 3  # fallback, section, confirm dialog
    await ActivityEnvironment().run(
        slack.update_message, MessageUpdate(channel=ref.channel, ts=asked.ts, text=f"*Cordon?*\nrejected: {NASTY}")
    )
    seen = slack_standin.rendered(CHANNEL, asked.ts)
    _no_markup_but(seen)
    assert seen[0].text == f"[east<&>] *Cordon?*\nrejected: {NASTY}"


async def test_the_console_shows_text_as_given(capsys) -> None:
    console = SlackActivities(None, default_channel=CHANNEL)
    note = ThreadMessage(key="k", text=f"*x* {NASTY}", links=[MessageLink(url="https://x.example", label="Source")])
    await ActivityEnvironment().run(console.post_in_thread, note)
    out = capsys.readouterr().out
    assert f"*x* {NASTY}\nSource: https://x.example" in out and "&lt;" not in out


async def test_a_triage_incident_about_a_hostile_alert_posts_it_as_text(
    time_skipping: WorkflowEnvironment, task_queue: str, slack: SlackActivities, slack_standin: SlackStandIn
) -> None:
    begin = await time_skipping.get_current_time()
    alert = Alert(
        alertname="ModelOutputGarbled",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=begin,
        labels={"alertname": "ModelOutputGarbled", "team": "R&D", "stop": "<|eot_id|>", "owner": "<@U123>"},
        annotations={"summary": "value is <no value> <!channel>", "description": "R&D says <!here> & <@U123>"},
        generator_url="http://prometheus.example/graph?g0.expr=rate(x[5m])>0&g0.tab=1",
    )
    inp = IncidentInput(alert=alert, runbook="triage", incident_commander="alice", slack_channel=CHANNEL)
    async with slack_worker(time_skipping, task_queue, slack, Triage):
        handle = await start(time_skipping, Triage, inp, task_queue)
        await wait_for_async(
            lambda: any("No playbook handles" in m["text"] for m in slack_standin.messages(CHANNEL)), "triage post"
        )
        await handle.signal(SIGNAL_HUMAN_ACTION, HumanAction(action="resolve", by="alice", note="seen"))
        await handle.result()
    seen = slack_standin.rendered(CHANNEL)
    for r in seen:
        assert r.mentions == [] and r.broadcasts == [], r
    links = {u for r in seen for u in r.links}
    assert links == {"http://prometheus.example/graph?g0.expr=rate(x[5m])>0&g0.tab=1"}  # the Source link only
    shown = "\n".join(r.text for r in seen)
    for literal in ("value is <no value> <!channel>", "R&D says <!here> & <@U123>", "`stop=<|eot_id|>`", "R&D"):
        assert literal in shown
    triage = next(m for m in slack_standin.messages(CHANNEL) if "No playbook handles" in m["text"])
    assert triage["text"].startswith(
        "[east&lt;&amp;&gt;] :mag: *No playbook handles `ModelOutputGarbled`*"
    )  # ours kept
