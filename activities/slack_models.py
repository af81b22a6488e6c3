"""What the Slack activities (activities/slack.py) are asked to post and where it landed, free of
slack-sdk: the incident's first message, a thread message, an approval request, a message edit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class SlackMessageRef(BaseModel):
    """Where a message landed; `ts` of the first message is the incident's thread."""

    channel: str
    ts: str
    console: bool = False


class IncidentMessage(BaseModel):
    key: str = Field(min_length=1, description="idempotency key: incident id + purpose")
    incident_id: str
    channel: str | None = None
    severity: str
    title: str
    summary: str
    description: str | None = None
    runbook_url: str | None = None
    ui_url: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    incident_commander: str
    status: str = "Investigating"
    started_at: datetime
    cluster: str | None = Field(default=None, description="the incident's cluster; None: the worker's")


class MessageLink(BaseModel):
    """A link we mean in a message (`<url|label>`): text never forms one, it is escaped."""

    url: str = Field(min_length=1)
    label: str = Field(min_length=1)


class ThreadMessage(BaseModel):
    key: str = Field(min_length=1)
    incident_id: str | None = None  # shown on the console; None for a message about no incident
    channel: str | None = None
    thread_ts: str | None = None  # None: a top-level message
    text: str = Field(
        min_length=1,
        description="mrkdwn, also the notification fallback; `&`, `<`, `>` are escaped when posted (text, not markup)",
    )
    blocks: list[dict[str, Any]] | None = Field(default=None, description="their mrkdwn texts are escaped likewise")
    links: list[MessageLink] = Field(default_factory=list, description="shown on a last line, ` · ` between")
    cluster: str | None = Field(default=None, description="the incident's cluster; None: the worker's")


class ApprovalRequest(BaseModel):
    key: str = Field(min_length=1)
    incident_id: str
    channel: str | None = None
    thread_ts: str | None = None
    gate: str
    question: str
    destructive: bool = False
    deadline: datetime | None = None
    approvers: list[str] = Field(default_factory=list)
    cluster: str | None = Field(default=None, description="the incident's cluster; None: the worker's")


class MessageUpdate(BaseModel):
    incident_id: str | None = None  # shown on the console
    channel: str
    ts: str
    text: str = Field(min_length=1)
    blocks: list[dict[str, Any]] | None = None
    cluster: str | None = Field(default=None, description="the incident's cluster; None: the worker's")
