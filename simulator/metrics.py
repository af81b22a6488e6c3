"""The serving traffic the simulated model servers handle, and the Prometheus series they,
DCGM and kube-state-metrics would expose about it.

Counters advance in real time (Prometheus' rate() is over real seconds) from each service's
demand, its Ready replicas and the active faults. A server that is not Ready exports
nothing, as a dead process would; its counters restart from zero in a new pod.

`up{job="llm-d-service"}` is synthesized by Prometheus per scrape target, so it cannot be a
series of /metrics. The simulator therefore serves one target per model service,
`/simulated/metrics/{namespace}/{service}`, answering 503 while that service has no Ready pod:
a Prometheus job named `llm-d-service` with one target per service (see `scrape_config`) gets
`up == 0` exactly while the service is down, as with a real per-service ServiceMonitor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
BASE_P95 = 0.8  # seconds, at or below 90% load
BASE_ERROR_FRACTION = 0.002
BASE_UTILIZATION = 0.6  # of a replica's capacity, at baseline demand
# Requests per second each service takes at baseline (real time).
DEFAULT_DEMAND = 6.0
BASE_CACHE_HIT_RATIO = 0.85  # prefix-cache hits per lookup (seed 001: below 0.6 is "cache misses")
BASE_MODEL_LOAD_SECONDS = 25.0  # how long the model server took to load its model (warm start)
_SIGMA = 0.5  # log-normal spread of request durations: p95 = median * e^(1.645 sigma)


@dataclass
class PodCounters:
    namespace: str
    service: str
    pod: str
    requests: dict[str, float] = field(default_factory=lambda: {"200": 0.0, "500": 0.0, "503": 0.0})
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(BUCKETS))
    count: float = 0.0
    total_seconds: float = 0.0
    evictions: float = 0.0
    gpu_utilization: float = 0.0
    memory_utilization: float = 0.0
    cache_requests: float = 0.0
    cache_hits: float = 0.0
    model_load_seconds: float = BASE_MODEL_LOAD_SECONDS


@dataclass
class ServiceLoad:
    namespace: str
    service: str
    base_demand: float  # requests/s offered at baseline
    capacity: float  # requests/s one Ready replica serves at 100%
    multiplier: float = 1.0  # what the active faults do to demand
    ready: int = 0
    # What the active faults do besides demand (Fault.shape sets them on every tick).
    latency_factor: float = 1.0
    cache_hit_ratio: float = BASE_CACHE_HIT_RATIO
    model_load_seconds: float = BASE_MODEL_LOAD_SECONDS
    evicting: bool = False

    def reset_shape(self) -> None:
        self.latency_factor, self.cache_hit_ratio = 1.0, BASE_CACHE_HIT_RATIO
        self.model_load_seconds, self.evicting = BASE_MODEL_LOAD_SECONDS, False

    @property
    def demand(self) -> float:
        return self.base_demand * self.multiplier

    @property
    def overload(self) -> float:
        if self.ready == 0:
            return math.inf
        return self.demand / (self.ready * self.capacity)

    @property
    def p95(self) -> float:
        return min(30.0, BASE_P95 * (1 + max(0.0, self.overload - 0.9) * 10) * self.latency_factor)

    @property
    def queue_depth(self) -> int:
        if self.ready == 0:
            return 0
        load = self.overload
        return round(load * 3) if load <= 0.9 else 10 + round((load - 0.9) * 60)


def _cdf(seconds: float, p95: float) -> float:
    median = p95 / math.exp(1.645 * _SIGMA)
    return 0.5 * (1 + math.erf(math.log(seconds / median) / (_SIGMA * math.sqrt(2))))


class Traffic:
    """Per-service load and per-pod counters, advanced by the cluster on each tick."""

    def __init__(self) -> None:
        self.services: dict[tuple[str, str], ServiceLoad] = {}
        self.pods: dict[str, PodCounters] = {}  # by pod uid

    def service(self, namespace: str, service: str, replicas: int) -> ServiceLoad:
        key = (namespace, service)
        if key not in self.services:
            # sized so the replicas a service was created with run at BASE_UTILIZATION
            demand = DEFAULT_DEMAND * max(1, replicas)
            self.services[key] = ServiceLoad(namespace, service, demand, demand / (max(1, replicas) * BASE_UTILIZATION))
        return self.services[key]

    def overload(self, namespace: str, service: str) -> float:
        load = self.services.get((namespace, service))
        return load.overload if load else math.inf

    def advance(
        self, counters: PodCounters, load: ServiceLoad, seconds: float, error_fraction: float, evicting: bool
    ) -> None:
        """`seconds` of real time of one Ready pod's share of its service's traffic."""
        rate = load.demand / max(1, load.ready)
        n = rate * seconds
        errors = n * error_fraction
        counters.requests["200"] += n - errors
        counters.requests["500"] += errors * 0.8
        counters.requests["503"] += errors * 0.2
        p95 = load.p95
        for i, bound in enumerate(BUCKETS):
            counters.buckets[i] += n * _cdf(bound, p95)
        counters.count += n
        median = p95 / math.exp(1.645 * _SIGMA)
        counters.total_seconds += n * median * math.exp(_SIGMA**2 / 2)
        if evicting or load.evicting:
            counters.evictions += 3.0 * seconds
        counters.cache_requests += n
        counters.cache_hits += n * load.cache_hit_ratio
        counters.model_load_seconds = load.model_load_seconds

    def forget(self, live_uids: Iterable[str]) -> None:
        live = set(live_uids)
        for uid in [u for u in self.pods if u not in live]:
            del self.pods[uid]


@dataclass(frozen=True)
class GpuSample:
    node: str
    index: int
    uuid: str
    temperature: int
    xid: int


@dataclass(frozen=True)
class ClusterSample:
    """What /metrics reports, gathered under the store lock, rendered outside it."""

    pods: list[PodCounters]
    queues: list[ServiceLoad]
    gpus: list[GpuSample]
    node_gpus: list[tuple[str, int, bool]]  # node, nvidia.com/gpu allocatable, is a GPU node
    phases: list[tuple[str, str, str]]  # namespace, llmdeployment, phase
    services_up: list[tuple[str, str, bool]]


class _Collector:
    def __init__(self, sample: ClusterSample) -> None:
        self.sample = sample

    def collect(self):  # noqa: C901 - one family after the other
        s = self.sample
        pod_labels = ["namespace", "service", "pod"]
        requests = CounterMetricFamily(
            "llm_d_requests", "Inference requests served, by HTTP status", labels=[*pod_labels, "status"]
        )
        duration = HistogramMetricFamily(
            "llm_d_request_duration_seconds", "End-to-end request latency", labels=pod_labels
        )
        inference = HistogramMetricFamily("inference_latency_seconds", "Model inference latency", labels=pod_labels)
        evictions = CounterMetricFamily("llm_d_kv_cache_evictions", "KV cache blocks evicted", labels=pod_labels)
        gpu_util = GaugeMetricFamily(
            "llm_d_gpu_utilization", "GPU utilization of the model server, percent", labels=pod_labels
        )
        mem_util = GaugeMetricFamily(
            "llm_d_memory_utilization",
            "Memory working set of the model server as a percent of its limit",
            labels=pod_labels,
        )
        cache_requests = CounterMetricFamily("llm_d_cache_requests", "Prefix/KV cache lookups", labels=pod_labels)
        cache_hits = CounterMetricFamily("llm_d_cache_hits", "Prefix/KV cache lookups that hit", labels=pod_labels)
        load_time = GaugeMetricFamily(
            "llm_d_model_load_time_seconds", "How long the model server took to load its model", labels=pod_labels
        )
        for c in s.pods:
            labels = [c.namespace, c.service, c.pod]
            for status, value in c.requests.items():
                requests.add_metric([*labels, status], value)
            buckets = [(str(b), v) for b, v in zip(BUCKETS, c.buckets)] + [("+Inf", c.count)]
            duration.add_metric(labels, buckets, c.total_seconds)
            inference.add_metric(labels, buckets, c.total_seconds * 0.92)
            evictions.add_metric(labels, c.evictions)
            gpu_util.add_metric(labels, c.gpu_utilization)
            mem_util.add_metric(labels, c.memory_utilization)
            cache_requests.add_metric(labels, c.cache_requests)
            cache_hits.add_metric(labels, c.cache_hits)
            load_time.add_metric(labels, c.model_load_seconds)
        yield from (requests, duration, inference, evictions, gpu_util, mem_util, cache_requests, cache_hits, load_time)
        queue = GaugeMetricFamily(
            "llm_d_queue_depth", "Requests waiting for a model server", labels=["namespace", "service"]
        )
        for load in s.queues:
            queue.add_metric([load.namespace, load.service], load.queue_depth)
        yield queue
        gpu_labels = ["gpu", "UUID", "device", "modelName", "Hostname"]
        xid = GaugeMetricFamily("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.", labels=gpu_labels)
        temp = GaugeMetricFamily("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", labels=gpu_labels)
        for g in s.gpus:
            labels = [str(g.index), g.uuid, f"nvidia{g.index}", "NVIDIA A100-SXM4-80GB", g.node]
            xid.add_metric(labels, g.xid)
            temp.add_metric(labels, g.temperature)
        yield from (xid, temp)
        node_labels = ["node", "resource", "unit"]
        allocatable = GaugeMetricFamily(
            "kube_node_status_allocatable", "Allocatable resources of a node", labels=node_labels
        )
        capacity = GaugeMetricFamily("kube_node_status_capacity", "Capacity of a node", labels=node_labels)
        node_info = GaugeMetricFamily(
            "kube_node_labels", "Kubernetes labels of a node", labels=["node", "label_nvidia_com_gpu_present"]
        )
        for node, gpus, is_gpu in s.node_gpus:
            node_info.add_metric([node, "true" if is_gpu else ""], 1)
            if is_gpu:
                allocatable.add_metric([node, "nvidia_com_gpu", "integer"], gpus)
                capacity.add_metric([node, "nvidia_com_gpu", "integer"], gpus)
        yield from (allocatable, capacity, node_info)
        phase = GaugeMetricFamily(
            "llm_d_deployment_status_phase",
            "1 for the LLMDeployment's current status.phase",
            labels=["namespace", "llmdeployment", "phase"],
        )
        for ns, name, current in s.phases:
            for value in ("Ready", "Pending", "Failed"):
                phase.add_metric([ns, name, value], 1 if current == value else 0)
        yield phase
        up = GaugeMetricFamily(
            "llm_d_service_available", "1 while the model service has a Ready pod", labels=["namespace", "service"]
        )
        for ns, name, is_up in s.services_up:
            up.add_metric([ns, name], 1 if is_up else 0)
        yield up


def render(sample: ClusterSample) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(sample))
    return generate_latest(registry)


def service_target(namespace: str, service: str, is_up: bool) -> tuple[int, bytes]:
    """The per-service scrape target: 200 with an info series while up, 503 while down."""
    if not is_up:
        return 503, b"service unavailable: no ready endpoints\n"
    return 200, (
        f'# HELP llm_d_service_info The model service behind this target.\n'
        f'# TYPE llm_d_service_info gauge\n'
        f'llm_d_service_info{{namespace="{namespace}",service="{service}"}} 1\n'
    ).encode()


def scrape_config(host_port: str, services: Iterable[tuple[str, str]], interval: str = "1s") -> list[dict]:
    """Prometheus scrape_configs for the simulator: the cluster-wide /metrics, and one
    `llm-d-service` target per model service so that up{job="llm-d-service"} means something."""
    return [
        {
            "job_name": "llm-d-cluster",
            "scrape_interval": interval,
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [host_port]}],
        },
        {
            "job_name": "llm-d-service",
            "scrape_interval": interval,
            "static_configs": [
                {
                    "targets": [host_port],
                    "labels": {
                        "__metrics_path__": f"/simulated/metrics/{ns}/{name}",
                        "instance": f"{ns}/{name}",
                        "namespace": ns,
                        "service": name,
                    },
                }
                for ns, name in services
            ],
        },
    ]
