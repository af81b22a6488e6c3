"""What a webhook notification is: Alertmanager's payload (version 4) or Grafana-managed
alerting's webhook contact point (version 1, the same alert fields plus a few of its own),
parsed and checked.

Unknown fields are ignored so newer senders still work; a field we rely on that is wrong is
a clear validation error naming it. `parse_notification` reads either from the raw body.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator

log = logging.getLogger(__name__)

# Go's zero time: what Alertmanager puts in a firing alert's endsAt.
_ZERO_TIME_PREFIX = "0001-01-01T00:00:00"


UNNAMED_ALERT = "UnnamedAlert"


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
    def _has_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        # Alertmanager accepts (and sends on) alerts without `alertname`; refusing one would lose
        # its whole group for good. Only an alert with no label at all is not an alert.
        if not labels:
            raise ValueError("an alert needs at least one label")
        return labels

    @property
    def alertname(self) -> str:
        """The `alertname` label; an alert without one is named UNNAMED_ALERT (triage takes it)."""
        return self.labels.get("alertname", "").strip() or UNNAMED_ALERT


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


class GrafanaPayload(AlertmanagerPayload):
    """Grafana-managed alerting's webhook contact point (`"version": "1"`).

    Grafana sends Alertmanager's alert fields unchanged (labels, annotations, startsAt,
    endsAt, fingerprint, status) and adds its own keys, kept here for the log and ignored
    by routing: the same alert routes and deduplicates as its Alertmanager twin.
    """

    version: Literal["1"]  # type: ignore[assignment]
    # Kept for the log, never relied on: whatever their shape, they cannot refuse a notification.
    org_id: Any = Field(default=None, alias="orgId")
    title: Any = None
    state: Any = Field(default=None, description="Grafana's group state: alerting, ok, ...")
    message: Any = None


# One pass over the body: `version` picks the model ("4" Alertmanager, "1" Grafana).
_NOTIFICATION: TypeAdapter[AlertmanagerPayload] = TypeAdapter(
    Annotated[AlertmanagerPayload | GrafanaPayload, Field(discriminator="version")]
)
SENDERS = {"4": "Alertmanager", "1": "Grafana"}


def parse_notification(body: bytes | bytearray | str) -> AlertmanagerPayload:
    """The webhook body as Alertmanager's v4 or Grafana's v1 payload.

    Parses the raw JSON straight into the model (no intermediate dict). Raises pydantic's
    ValidationError naming the wrong field (see `triggers.app` for how it is answered).
    """
    return _NOTIFICATION.validate_json(body)


def _drill_labelled(alert: AlertmanagerAlert) -> bool:
    return alert.labels.get("drill") == "true"


def is_drill(alert: AlertmanagerAlert, enabled: bool) -> bool:
    """A drill on the simulator, when drills are enabled (`drills.enabled`, on in `runbooks dev`).

    With drills off, a `drill="true"` label is ignored (and logged): a label on a real alert
    must not change how the playbook acts on the real cluster.
    """
    if not _drill_labelled(alert):
        return False
    if not enabled:
        log.warning(
            "alert %s (%s) has drill=\"true\" but drills are disabled (drills.enabled): "
            "handled as a real alert at SOP speed",
            alert.alertname,
            alert.fingerprint,
        )
        return False
    return True


def drill_time_scale(alert: AlertmanagerAlert, enabled: bool) -> float:
    """How much faster a drill's cluster waits run (1..1000, from its `time_scale` label); a real
    alert, or any alert while drills are disabled, always runs at SOP speed (1.0)."""
    if not (enabled and _drill_labelled(alert)):
        return 1.0
    try:
        return min(max(float(alert.labels.get("time_scale", "1")), 1.0), 1000.0)
    except ValueError:
        return 1.0
