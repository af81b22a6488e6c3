"""Seed 001's high-latency runbook, staged: one fault per root cause it names.

| fault | what breaks | what heals it |
|---|---|---|
| high-latency:queue-depth | demand on production/llm-d-decode at 2.5x: decode queue depth > 10, p95 > 3 s, decode GPUs ~98% | llm-d-decode scaled up until its Ready replicas carry the load (>= 4 of the 2 at baseline) |
| high-latency:gpu-exhaustion | demand on production/llm-d-prefill at 2.2x: prefill GPUs ~98%, p95 > 3 s | llm-d-prefill scaled up until its Ready replicas carry the load (>= 3 of 2) |
| high-latency:cache-misses | the llm-d services' prefix-cache hit ratio at 35% (KV-cache evictions), p95 ~3.6 s | no API change: the cache's configuration is a human's call; it passes after 20 simulated minutes so drills can follow |
| high-latency:cold-start | llm-d-prefill's model loads cold: model load time 240 s, p95 ~4 s | `POST /v1/warmup` of production/llm-d-prefill (the Service's `llm-d.io/warmup-url`) |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from simulator import metrics
from simulator.scenarios import DECODE, Fault, HighLatency, carries

if TYPE_CHECKING:
    from simulator.cluster import ClusterBehaviour

PREFILL = ("production", "llm-d-prefill")


class GpuExhaustion(Fault):
    name = "high-latency:gpu-exhaustion"
    DEMAND = 2.2

    def demand(self, namespace: str, service: str) -> float:
        return self.DEMAND if (namespace, service) == PREFILL else 1.0

    def healed(self, sim: ClusterBehaviour) -> bool:
        return carries(sim, PREFILL, self.DEMAND)


class CacheMisses(Fault):
    name = "high-latency:cache-misses"
    HIT_RATIO = 0.35
    LATENCY_FACTOR = 4.5
    LASTS_SECONDS = 20 * 60.0  # simulated

    def __init__(self) -> None:
        self.started: float | None = None

    def inject(self, sim: ClusterBehaviour) -> None:
        self.started = sim.now()

    def shape(self, load: metrics.ServiceLoad) -> None:
        if (load.namespace, load.service) in (DECODE, PREFILL):
            load.cache_hit_ratio, load.latency_factor, load.evicting = self.HIT_RATIO, self.LATENCY_FACTOR, True

    def healed(self, sim: ClusterBehaviour) -> bool:
        return self.started is not None and sim.now() - self.started >= self.LASTS_SECONDS


class ColdStart(Fault):
    name = "high-latency:cold-start"
    LOAD_SECONDS = 240.0
    LATENCY_FACTOR = 5.0

    def __init__(self) -> None:
        self.warmed = False

    def shape(self, load: metrics.ServiceLoad) -> None:
        if (load.namespace, load.service) == PREFILL and not self.warmed:
            load.model_load_seconds, load.latency_factor = self.LOAD_SECONDS, self.LATENCY_FACTOR

    def warm_up(self, namespace: str, service: str) -> None:
        if (namespace, service) == PREFILL:
            self.warmed = True

    def healed(self, sim: ClusterBehaviour) -> bool:
        return self.warmed


class QueueDepth(HighLatency):
    name = "high-latency:queue-depth"

    def healed(self, sim: ClusterBehaviour) -> bool:
        return carries(sim, DECODE, self.DEMAND)


LATENCY_FAULTS: dict[str, Callable[[], Fault]] = {
    "high-latency:queue-depth": QueueDepth,
    "high-latency:gpu-exhaustion": GpuExhaustion,
    "high-latency:cache-misses": CacheMisses,
    "high-latency:cold-start": ColdStart,
}
