"""Inputs and results of the node-health reads (activities/node_health.py): a node's own events,
with the NVIDIA XID codes the kernel logged. Pure pydantic: workflows import this, not the client."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, computed_field

# `NVRM: Xid (PCI:0000:3b:00): 48, pid=..., name=..., An uncorrectable double bit error ...`
XID_PATTERN = re.compile(r"\bXid\s*\([^)]*\):\s*(\d+)", re.IGNORECASE)

# XID codes that mean the GPU itself is failing (NVIDIA's XID catalogue): replace or reset the GPU,
# not the workload. 48 double-bit ECC, 63/64 ECC page retirement or row remapping, 74 NVLink,
# 79 fallen off the bus, 92 high single-bit ECC rate, 94/95 contained/uncontained ECC error.
HARDWARE_XIDS = {48: "double-bit ECC error", 63: "ECC page retirement / row remapping",
                 64: "ECC page retirement / row remapping failure", 74: "NVLink error",
                 79: "GPU has fallen off the bus", 92: "high single-bit ECC error rate",
                 94: "contained ECC error", 95: "uncontained ECC error"}


class NodeEventsQuery(BaseModel):
    """`kubectl get events -A --field-selector involvedObject.kind=Node,involvedObject.name=NODE`."""

    model_config = ConfigDict(extra="forbid")

    node: str = Field(min_length=1)
    warnings_only: bool = Field(True, description="only type=Warning events, as `kubectl describe node` lists them")
    since: datetime | None = Field(None, description="only events last seen at or after this time")


class NodeEvent(BaseModel):
    reason: str
    message: str
    source: str = Field("", description="the component that reported it (kernel-monitor, kubelet ...)")
    count: int = 1
    last_seen: datetime | None = None

    @computed_field
    @property
    def xid(self) -> int | None:
        """The XID code of an `NVRM: Xid` line, else None."""
        m = XID_PATTERN.search(self.message)
        return int(m.group(1)) if m else None

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}" + (f" (x{self.count})" if self.count > 1 else "")


class NodeEvents(BaseModel):
    node: str
    events: list[NodeEvent] = Field(default_factory=list, description="newest first")

    @property
    def hardware_xids(self) -> list[str]:
        """`XID 48 (double-bit ECC error)` for every hardware XID logged, each code once, in order seen."""
        seen: dict[int, str] = {}
        for e in self.events:
            if e.xid is not None and e.xid in HARDWARE_XIDS:
                seen.setdefault(e.xid, f"XID {e.xid} ({HARDWARE_XIDS[e.xid]})")
        return list(seen.values())
