"""Slack for tests: the local Web API stand-in (for the real slack-sdk client) and a recording
fake of SlackActivities for the time-skipping layer, which tests timing and decisions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
import pytest_asyncio
from pydantic import BaseModel
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity

from activities.slack_models import ApprovalRequest, IncidentMessage, MessageUpdate, SlackMessageRef, ThreadMessage
from standins.slack import DEFAULT_CHANNELS, SlackStandIn

# The workspace every test's stand-in has: the seeds' channels and those the tests name.
TEST_CHANNELS = (
    *DEFAULT_CHANNELS,
    "incidents-test",
    "incidents-coordination",
    "incidents-error-rate",
    "incidents-healthy",
    "incidents-latency",
    "incidents-rbac",
    "incidents-shadow",
    "incidents-sop004",
    "incidents-ui",
    "ops",
    "sev0",
)


@pytest.fixture(scope="session")
def slack_standin_server() -> Iterator[SlackStandIn]:
    standin = SlackStandIn(channels=TEST_CHANNELS).start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def slack_standin(slack_standin_server: SlackStandIn) -> SlackStandIn:
    """The running stand-in, emptied for this test."""
    slack_standin_server.reset()
    return slack_standin_server


@pytest_asyncio.fixture(loop_scope="session")
async def slack_client(slack_standin: SlackStandIn) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=slack_standin.base_url)


@dataclass
class Posted:
    """One Slack activity call as the workflow made it; `at` is the (skipped) server time it was scheduled."""

    method: str
    arg: BaseModel
    at: datetime

    @property
    def text(self) -> str:
        return getattr(self.arg, "text", "") or getattr(self.arg, "question", "") or getattr(self.arg, "summary", "")


class RecordingSlack:
    """Registered under SlackActivities' activity names; records instead of calling Slack."""

    def __init__(self) -> None:
        self.posted: list[Posted] = []
        self._ts = 0

    def _record(self, method: str, arg: BaseModel, channel: str | None) -> SlackMessageRef:
        self.posted.append(Posted(method, arg, activity.info().current_attempt_scheduled_time))
        self._ts += 1
        return SlackMessageRef(channel=channel or "C0TEST", ts=f"1000.{self._ts:06d}")

    def texts(self, method: str = "post_in_thread") -> list[str]:
        return [p.text for p in self.posted if p.method == method]

    def matching(self, needle: str) -> list[Posted]:
        return [p for p in self.posted if needle in p.text]

    @property
    def activities(self) -> list:
        return [self.post_incident, self.post_in_thread, self.request_approval, self.update_message]

    @activity.defn(name="post_incident")
    async def post_incident(self, msg: IncidentMessage) -> SlackMessageRef:
        return self._record("post_incident", msg, msg.channel)

    @activity.defn(name="post_in_thread")
    async def post_in_thread(self, msg: ThreadMessage) -> SlackMessageRef:
        return self._record("post_in_thread", msg, msg.channel)

    @activity.defn(name="request_approval")
    async def request_approval(self, req: ApprovalRequest) -> SlackMessageRef:
        return self._record("request_approval", req, req.channel)

    @activity.defn(name="update_message")
    async def update_message(self, upd: MessageUpdate) -> SlackMessageRef:
        self.posted.append(Posted("update_message", upd, activity.info().current_attempt_scheduled_time))
        return SlackMessageRef(channel=upd.channel, ts=upd.ts)


@pytest.fixture
def recording_slack() -> RecordingSlack:
    return RecordingSlack()
