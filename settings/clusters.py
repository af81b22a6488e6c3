"""Which cluster an alert came from, and where that cluster's incidents run.

One Temporal serves several clusters. Each cluster has its own task queue; its workers (in that
cluster, with its ServiceAccount) are the only ones polling it, so whatever an incident of that
cluster does happens there. The triggers read the cluster from the alert's `clusters.label` label
(Prometheus' `external_labels`, Thanos'), route the incident to that cluster's queue, and to the
default cluster's when the alert has no such label. An alert that names a cluster no worker serves
opens an incident that acts nowhere (workflows/incident/incident.py).

    clusters:
      label: cluster            # the alert label naming the cluster
      default: prod-us-east     # alerts without the label; the cluster a worker serves unless worker.cluster
      served: [prod-us-east, prod-eu-west]   # or {name: {task_queue: ...}}; empty: the default alone

The same `clusters:` section goes to every process (the triggers and each cluster's workers);
only `worker.cluster` differs from one cluster's deployment to the next. A cluster's task queue is
`<temporal.task_queue>.<name>` unless `served.<name>.task_queue` says otherwise (keep `llm-runbooks`
for a cluster whose 1.0 incidents are still open).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A cluster's name is part of task queue, schedule and incident ids: a DNS-label-like word.
CLUSTER_NAME = r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$"
DEFAULT_CLUSTER = "default"


class ServedCluster(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_queue: str | None = Field(default=None, min_length=1, description="None: <temporal.task_queue>.<name>")


class ClusterSettings(BaseModel):
    """The `clusters:` section (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(default="cluster", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="a Prometheus label name")
    default: str = Field(default=DEFAULT_CLUSTER, pattern=CLUSTER_NAME)
    served: dict[str, ServedCluster] = Field(default_factory=dict)
    # The triggers look at each cluster's task queue this often (triggers/cluster_watch.py); 0: never.
    watch_seconds: float = Field(default=60, ge=0)
    # No worker polled the queue for this long: the cluster has none, on-call is told. A live worker
    # polls at least once per long poll (a minute on Temporal's defaults), so keep it well above that.
    worker_silence_seconds: float = Field(default=150, gt=0)

    @field_validator("served", mode="before")
    @classmethod
    def _list_of_names(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return {name: {} for name in value}
        return value

    @model_validator(mode="after")
    def _names(self) -> ClusterSettings:
        bad = [name for name in self.served if not re.match(CLUSTER_NAME, name)]
        if bad:
            raise ValueError(
                f"served: {', '.join(map(repr, bad))} is not a cluster name (letters, digits, '-', '_', '.'; ≤ 63)"
            )
        if self.served and self.default not in self.served:
            raise ValueError(f"default {self.default!r} must be one of served ({', '.join(self.served)})")
        return self

    def names(self) -> list[str]:
        """The served clusters, the default first."""
        return [self.default, *(name for name in self.served if name != self.default)]

    def serves(self, name: str) -> bool:
        return name in self.names()

    def task_queue(self, base: str, name: str) -> str:
        """The task queue of cluster `name`'s incidents, checks and coordinator."""
        own = self.served.get(name)
        return own.task_queue if own and own.task_queue else f"{base}.{name}"

    def of(self, labels: Mapping[str, str]) -> tuple[str, str]:
        """The cluster an alert came from, and why: its label, else the default."""
        named = labels.get(self.label, "").strip()
        if named:
            return named, f"label {self.label}"
        return self.default, f"no {self.label} label: the default cluster"
