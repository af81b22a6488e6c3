"""Which NVIDIA XID codes mean the GPU itself is failing (seed 002's hardware check): a pure function
over the node events the node activities read."""

from __future__ import annotations

from activities.kube.nodes_models import NodeEvents

# XID codes that mean the GPU itself is failing (NVIDIA's XID catalogue): replace or reset the GPU,
# not the workload. 48 double-bit ECC, 63/64 ECC page retirement or row remapping, 74 NVLink,
# 79 fallen off the bus, 92 high single-bit ECC rate, 94/95 contained/uncontained ECC error.
HARDWARE_XIDS = {
    48: "double-bit ECC error",
    63: "ECC page retirement / row remapping",
    64: "ECC page retirement / row remapping failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
}


def hardware_xids(events: NodeEvents) -> list[str]:
    """`XID 48 (double-bit ECC error)` for every hardware XID logged, each code once, in order seen."""
    seen: dict[int, str] = {}
    for e in events.events:
        if e.xid is not None and e.xid in HARDWARE_XIDS:
            seen.setdefault(e.xid, f"XID {e.xid} ({HARDWARE_XIDS[e.xid]})")
    return list(seen.values())
