"""What a webhook notification is: Alertmanager's payload (version 4), parsed and checked.

Unknown fields are ignored so newer senders still work; a field we rely on that is wrong is
a clear validation error naming it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

# Go's zero time: what Alertmanager puts in a firing alert's endsAt.
_ZERO_TIME_PREFIX = "0001-01-01T00:00:00"


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: AwareDatetime = Field(alias="startsAt")
    ends_at: AwareDatetime | None = Field(default=None, alias="endsAt")
    generator_url: str | None = Field(default=None, alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=128)

    @field_validator("ends_at", mode="before")
    @classmethod
    def _zero_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and value.startswith(_ZERO_TIME_PREFIX):
            return None
        return value

    @field_validator("starts_at")
    @classmethod
    def _real_start(cls, value: datetime) -> datetime:
        if value.year < 2000:
            raise ValueError("startsAt must be a real time (the incident id is built from it)")
        return value

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels.get("alertname", "").strip():
            raise ValueError("an alert needs a non-empty 'alertname' label")
        return labels

    @property
    def alertname(self) -> str:
        return self.labels["alertname"]


class AlertmanagerPayload(BaseModel):
    """Version 4 of the webhook body; unknown fields are ignored so newer Alertmanagers still work."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    alerts: list[AlertmanagerAlert]
    receiver: str | None = None
    group_key: str | None = Field(default=None, alias="groupKey")
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str | None = Field(default=None, alias="externalURL")



def is_drill(alert: AlertmanagerAlert) -> bool:
    return alert.labels.get("drill") == "true"


def drill_time_scale(alert: AlertmanagerAlert) -> float:
    """A drill on the simulator says how much faster it runs; a real alert always runs at SOP speed."""
    if not is_drill(alert):
        return 1.0
    try:
        return min(max(float(alert.labels.get("time_scale", "1")), 1.0), 1000.0)
    except ValueError:
        return 1.0
