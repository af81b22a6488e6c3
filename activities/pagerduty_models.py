"""What the PagerDuty activities (activities/pagerduty.py) are asked to send, free of the `pagerduty`
package: an alert to trigger, a follow-up (acknowledge or resolve), and where it landed.

Field limits are PagerDuty's Events API v2 (summary <= 1,024 characters, dedup_key <= 255); the
activity trims the summary, the workflow keeps dedup keys short (incident id, + role).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

PagerDutySeverity = Literal["critical", "error", "warning", "info"]

# Seed 001's P0..P3 onto PagerDuty's severities (its Events API accepts only these four).
SEVERITY_MAP: dict[str, PagerDutySeverity] = {"P0": "critical", "P1": "error", "P2": "warning", "P3": "info"}
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255


class PagerDutyLink(BaseModel):
    href: str = Field(min_length=1)
    text: str | None = None


class PagerDutyTrigger(BaseModel):
    """One alert to open (or repeat: the same `dedup_key` never opens a second one).

    `route` picks the PagerDuty service: a severity ("P0".."P3", its routing key or the default one)
    or an escalation role ("Senior SRE": `pagerduty.roles`)."""

    incident_id: str
    route: str = Field(min_length=1)
    dedup_key: str = Field(min_length=1, max_length=MAX_DEDUP_KEY)
    summary: str = Field(min_length=1)
    source: str = Field(min_length=1, description="the cluster")
    severity: PagerDutySeverity
    component: str | None = Field(default=None, description="the playbook")
    group: str | None = Field(default=None, description="the incident's scope")
    event_class: str | None = Field(default=None, description="the alert's name")
    custom_details: dict[str, Any] = Field(default_factory=dict)
    links: list[PagerDutyLink] = Field(default_factory=list)


class PagerDutyFollowUp(BaseModel):
    """Acknowledge or resolve an alert raised before, through the same service (`route`)."""

    incident_id: str
    route: str = Field(min_length=1)
    dedup_key: str = Field(min_length=1, max_length=MAX_DEDUP_KEY)
    action: Literal["acknowledge", "resolve"]


class PagerDutyReceipt(BaseModel):
    """PagerDuty took the event (202): the alert's dedup key."""

    dedup_key: str
