"""The Slack stand-in is as strict as Slack, through the real slack-sdk client: ids where Slack
wants ids, conversations.list paged by cursor, 429 with Retry-After on request, mrkdwn as read."""

from __future__ import annotations

import pytest
from slack_sdk.errors import SlackApiError

from standins.slack import channel_id, render_mrkdwn

pytestmark = pytest.mark.timeout(30)


async def _error(call) -> SlackApiError:
    with pytest.raises(SlackApiError) as err:
        await call
    return err.value


async def test_post_message_takes_a_name_the_methods_that_need_an_id_refuse_it(slack_client, slack_standin) -> None:
    posted = await slack_client.chat_postMessage(channel="#incidents", text="first")
    cid = posted["channel"]
    assert cid == channel_id("#incidents") and cid.startswith("C")
    reply = await slack_client.chat_postMessage(channel=cid, thread_ts=posted["ts"], text="in the thread")
    assert reply["ok"]
    for call in (
        slack_client.conversations_history(channel="#incidents"),
        slack_client.conversations_history(channel="incidents"),
        slack_client.conversations_replies(channel="#incidents", ts=posted["ts"]),
        slack_client.chat_update(channel="#incidents", ts=posted["ts"], text="edited"),
    ):
        assert (await _error(call)).response["error"] == "channel_not_found"
    history = await slack_client.conversations_history(channel=cid)
    assert [m["text"] for m in history["messages"]] == ["first"]
    assert (await slack_client.chat_update(channel=cid, ts=posted["ts"], text="edited"))["ok"]


async def test_channels_that_do_not_exist_are_archived_or_lack_the_bot(slack_client, slack_standin) -> None:
    err = await _error(slack_client.chat_postMessage(channel="#no-such-channel", text="x"))
    assert err.response["error"] == "channel_not_found"
    slack_standin.add_channel("old-incidents", archived=True)
    slack_standin.add_channel("private-ops", private=True, member=False)
    assert (await _error(slack_client.chat_postMessage(channel="#old-incidents", text="x"))).response[
        "error"
    ] == "is_archived"
    assert (await _error(slack_client.chat_postMessage(channel="private-ops", text="x"))).response[
        "error"
    ] == "not_in_channel"
    # an empty channel has an empty history, not an error
    assert (await slack_client.conversations_history(channel=channel_id("#llm-platform")))["messages"] == []


async def test_conversations_list_pages_by_cursor_with_types_and_archived(slack_client, slack_standin) -> None:
    slack_standin.add_channel("archived-one", archived=True)
    secret = slack_standin.add_channel("secret-war-room", private=True)
    names: list[str] = []
    pages = 0
    async for page in await slack_client.conversations_list(limit=3, exclude_archived=True):
        pages += 1
        assert len(page["channels"]) <= 3
        names += [c["name"] for c in page["channels"]]
    assert pages > 1  # slack-sdk followed response_metadata.next_cursor
    assert "incidents" in names and "archived-one" not in names and "secret-war-room" not in names
    assert len(names) == len(set(names))
    everything = await slack_client.conversations_list(types="public_channel,private_channel", limit=1000)
    listed = {c["name"]: c for c in everything["channels"]}
    assert listed["secret-war-room"]["id"] == secret and listed["secret-war-room"]["is_private"]
    assert listed["archived-one"]["is_archived"]
    assert everything["response_metadata"]["next_cursor"] == ""
    assert (await _error(slack_client.conversations_list(cursor="not-a-cursor"))).response["error"] == "invalid_cursor"
    assert (await _error(slack_client.conversations_list(limit=1001))).response["error"] == "invalid_limit"


async def test_rate_limit_answers_429_with_retry_after_then_lets_calls_through(slack_client, slack_standin) -> None:
    slack_standin.rate_limit("chat.postMessage", seconds=30, times=2)
    for _ in range(2):
        err = await _error(slack_client.chat_postMessage(channel="#incidents", text="x"))
        assert err.response.status_code == 429 and err.response["error"] == "ratelimited"
        assert err.response.headers["Retry-After"] == "30"
    assert slack_standin.messages("#incidents") == []  # a limited call posts nothing
    assert (await slack_client.chat_postMessage(channel="#incidents", text="x"))["ok"]
    assert (await slack_client.conversations_history(channel=channel_id("#incidents")))["ok"]  # other methods free


async def test_messages_are_kept_as_posted_and_rendered_as_a_reader_sees_them(slack_client, slack_standin) -> None:
    text = "R&amp;D: &lt;no value&gt; <https://runbooks.example/x|Runbook> <!channel> <@U123>"
    posted = await slack_client.chat_postMessage(channel="#incidents", text=text)
    [message] = slack_standin.messages("#incidents")
    assert message["text"] == text
    [seen] = slack_standin.rendered("#incidents", posted["ts"])
    assert seen.text == "R&D: <no value> Runbook @channel @U123"
    assert seen.links == ["https://runbooks.example/x"]
    assert seen.broadcasts == ["channel"] and seen.mentions == ["@U123"]
    assert render_mrkdwn("&lt;|eot_id|&gt; &lt;@U123&gt;").text == "<|eot_id|> <@U123>"
    assert render_mrkdwn("&lt;|eot_id|&gt; &lt;@U123&gt;").mentions == []
