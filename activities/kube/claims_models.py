"""Requests and answers of the PersistentVolumeClaim activity (activities/kube/claims.py), free of
the `kubernetes` package: a claim as `kubectl get pvc` shows it, with the events about it, and its
recreation with another spec."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from activities.kube.models import EventEvidence
from activities.models import Request


class ClaimEvidence(BaseModel):
    """One line of `kubectl get pvc`, with the spec a recreation would need."""

    name: str
    uid: str = ""
    phase: str = "Unknown"
    storage_class: str | None = None
    volume_name: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    events: list[EventEvidence] = Field(default_factory=list)

    @property
    def bound(self) -> bool:
        return self.phase == "Bound"

    @property
    def line(self) -> str:
        why = next((e.message for e in self.events if e.type == "Warning"), "")
        return f"pvc/{self.name}: {self.phase}, storageClass={self.storage_class or '(default)'}" + (
            f" — {why}" if why else ""
        )


class ClaimReplacement(Request):
    """Recreate a PersistentVolumeClaim with another spec (a claim's spec is immutable)."""

    namespace: str
    name: str
    key: str = Field(
        min_length=1, description="incident id / step: stamped on the new claim, so a retry sees it is done"
    )
    spec_before: dict[str, Any] = Field(description="the spec replaced, as the diagnosis read it")
    spec_after: dict[str, Any] = Field(min_length=1)
    replace_bound: bool = Field(False, description="only a rollback may drop a Bound claim's volume")
    delete_wait_seconds: float = Field(60, gt=0)
    dry_run: bool = False
