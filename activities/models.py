"""Types every activity family shares."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ClusterChange(BaseModel):
    """One write to the cluster, with the value it replaced, so rollback can restore it exactly."""

    action: str = Field(description="what was done, in the SRE's words: 'restart deployment'")
    kind: str
    namespace: str | None = None
    name: str
    field: str = Field(description="the path that changed, e.g. spec.replicas")
    before: Any = None
    after: Any = None
    applied: bool = Field(True, description="False when the cluster already had the value (a retry)")
    dry_run: bool = False
    # The finding of the same run that justified the write (set by the incident, not the activity).
    finding: str | None = None
