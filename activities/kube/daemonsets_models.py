"""Requests and answers of the DaemonSet activities (activities/kube/daemonsets.py), free of the
`kubernetes` package: `kubectl rollout restart ds` and `kubectl rollout status ds`, by default of
the NVIDIA device plugin."""

from __future__ import annotations

from pydantic import BaseModel, Field

from activities.kube.gpus_models import DEVICE_PLUGIN_DAEMONSET, DEVICE_PLUGIN_NAMESPACE
from activities.models import Request


class DaemonSetRestart(Request):
    """`kubectl rollout restart ds/NAME -n NS`, stamped by one incident step.

    `restarted_at` and `restarted_by` come from the workflow (its clock, its incident id and
    step), so a retry writes the very same values and recognises them as already there.
    """

    namespace: str = DEVICE_PLUGIN_NAMESPACE
    name: str = DEVICE_PLUGIN_DAEMONSET
    restarted_at: str = Field(min_length=1, description="RFC 3339 time for kubectl's restartedAt")
    restarted_by: str = Field(min_length=1, description="incident id / step")
    dry_run: bool = False


class DaemonSetRolloutWait(Request):
    """`kubectl rollout status ds/NAME -n NS --timeout=180s`."""

    namespace: str = DEVICE_PLUGIN_NAMESPACE
    name: str = DEVICE_PLUGIN_DAEMONSET
    timeout_seconds: float = Field(180, gt=0)
    poll_seconds: float = Field(2, gt=0)


class DaemonSetRolloutStatus(BaseModel):
    namespace: str
    name: str
    complete: bool
    message: str = Field(description="kubectl rollout status's words")
    desired: int = 0
    updated: int = 0
    available: int = 0
    waited_seconds: float = 0
