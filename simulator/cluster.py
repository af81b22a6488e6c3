"""The behaviour of the simulated llm-d cluster: controllers, scheduler, kubelets, GPUs,
traffic and the staged faults, reconciled on every tick over the shared store.

Time: delays are in simulated seconds and pass `time_scale` times faster than real time;
timestamps written into objects are wall clock. Randomness (pod name suffixes, start-up
jitter) comes from one generator seeded per cluster, so runs are reproducible in shape.
"""

from __future__ import annotations

import dataclasses
import random
import time
from datetime import datetime, timezone

from simulator import controllers, disruption, gateway, kube, kubelet, logs, metrics, scenarios
from simulator.gpu import GpuHealth, NodeGpus, SmiResult, make_node_gpus, run_nvidia_smi
from simulator.kube import GPU
from simulator.kubelet import Fate, Mode, PodRuntime
from simulator.scenarios import SCENARIOS, Fault, make_fault
from simulator.store import RESOURCES, NotFound, Store, now_iso
from simulator.store import copy_json as kube_copy

__all__ = ["ClusterBehaviour", "SCENARIOS"]

_SETTLE_SECONDS = 90.0  # simulated time the baseline gets to come up before it is served
_FAULT_SETTLE_SECONDS = 60.0  # and a seeded fault to show (restarts, back-offs)
_STEP = 2.0
_SYSTEM_CPU, _SYSTEM_MEMORY = 0.6, 6 * 2**30  # what the node's own daemons use


class ClusterBehaviour:
    def __init__(self, store: Store, *, time_scale: float = 1.0, base_url: str = "", seed: int = 7) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.store = store
        self.time_scale = time_scale
        self.base_url = base_url.rstrip("/")
        self.rng = random.Random(seed)
        self._seed = seed
        self._t0 = time.monotonic()
        self._offset = 0.0
        self._frozen: float | None = None  # the simulated clock while fast-forwarding: real time does not count
        self._last_traffic = time.monotonic()
        self.gpus: dict[str, NodeGpus] = {}
        self.runtimes: dict[str, PodRuntime] = {}
        self.faults: list[Fault] = []
        self.healed_faults: list[str] = []
        # What scenario files did to the kinds a reset keeps, each object's state before (simulator/scenario_files.py)
        self.kept_changes: list[tuple[tuple[str, str, str], dict | None]] = []
        self.missing_images: set[str] = set()
        self.denied_storage: set[str] = set()
        self.traffic = metrics.Traffic()
        self._progress: dict[str, tuple[tuple, float]] = {}
        self._said: dict[tuple, float] = {}
        self._ips = 0
        self._ages: dict[str, int] = {}

    # ---- the contract -------------------------------------------------------------------

    def seed(self, scenario: str) -> None:
        fault = make_fault(scenario)
        with self.store.lock:
            for obj in scenarios.baseline_objects(self.health_url):
                if not scenarios.kept_on_reset(self.store, obj):  # after reset(): its namespaces are still there
                    self.store.create(obj)
            for node in self.store.list("nodes"):
                if (node["metadata"].get("labels") or {}).get("nvidia.com/gpu.present") == "true":
                    name = node["metadata"]["name"]
                    self.gpus[name] = make_node_gpus(name, scenarios.GPUS_PER_NODE, self._seed)
            self._fast_forward(_SETTLE_SECONDS)
            if fault is not None:
                self._start(fault)
                self._fast_forward(_FAULT_SETTLE_SECONDS)
            self._advance_traffic()  # so /metrics has every series from the first scrape on

    def inject(self, fault: str) -> None:
        """Stage `fault` in the running cluster; ValueError for an unknown one or one already
        staged and not yet healed (injecting it twice would collide with its own objects)."""
        new = make_fault(fault)
        if new is None:  # "baseline": back to a fresh cluster
            self.reset()
            return
        with self.store.lock:
            if any(f.name == new.name for f in self.faults):
                raise ValueError(f"{new.name} is already injected and not yet healed")
            self._start(new)

    def reset(self) -> None:
        """Back to the baseline a fresh cluster starts from, so a drill meets only its own fault.

        Every object of the workload kinds is deleted (watchers see DELETED; events go too, so no
        earlier drill's events mislead a diagnosis), faults, pod runtimes, GPUs, traffic and the
        simulated clock start over, and the baseline is seeded and settled again. What no scenario
        makes stays (scenarios.KEPT_ON_RESET: namespaces, ServiceAccounts, Secrets, RBAC), except
        what a scenario file created, patched or deleted of those kinds: that is put back as it was.
        """
        from simulator.scenario_files import restore_kept

        with self.store.lock:
            restore_kept(self.store, self.kept_changes)
            for plural in RESOURCES:
                if plural in scenarios.KEPT_ON_RESET:
                    continue
                for obj in self.store.list(plural):
                    self.store.delete(plural, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            ClusterBehaviour.__init__(
                self, self.store, time_scale=self.time_scale, base_url=self.base_url, seed=self._seed
            )
            self.seed("baseline")

    def tick(self) -> None:
        with self.store.lock:
            self._reconcile()
            self._advance_traffic()

    def active_faults(self) -> list[str]:
        """The faults injected and not yet healed by their remedy."""
        with self.store.lock:
            return [f.name for f in self.faults]

    def pod_log(self, namespace: str, name: str, container: str | None, tail_lines: int | None) -> str:
        """The container's log; NotFound for no such pod, ValueError (a 400) for a container
        that does not exist or has not started, as the kubelet answers."""
        with self.store.lock:
            pod = self.store.get("pods", namespace, name)
            if pod is None:
                raise NotFound(f'pods "{name}" not found')
            lines = self._log_lines(pod, container)
        if tail_lines is not None:
            lines = lines[-tail_lines:] if tail_lines > 0 else []
        return "".join(line + "\n" for line in lines)

    def pod_metrics(self) -> list[dict]:
        with self.store.lock:
            return [self._pod_metric(p) for p in self.store.list("pods") if self._running(p)]

    def node_metrics(self) -> list[dict]:
        with self.store.lock:
            pods = [p for p in self.store.list("pods") if self._running(p)]
            result = []
            for node in self.store.list("nodes"):
                name = node["metadata"]["name"]
                mine = [p for p in pods if p["spec"].get("nodeName") == name]
                cpu = _SYSTEM_CPU + sum(self._pod_cpu(p) for p in mine)
                memory = _SYSTEM_MEMORY + sum(self._pod_memory(p) for p in mine)
                result.append(
                    {
                        "apiVersion": "metrics.k8s.io/v1beta1",
                        "kind": "NodeMetrics",
                        "metadata": {
                            "name": name,
                            "labels": node["metadata"].get("labels") or {},
                            "creationTimestamp": now_iso(),
                        },
                        "timestamp": now_iso(),
                        "window": "20.05s",
                        "usage": {"cpu": kube.cpu_nanocores(cpu), "memory": kube.memory_ki(memory)},
                    }
                )
            return result

    def health(self, namespace: str, service: str) -> tuple[int, dict]:
        with self.store.lock:
            svc = self.store.get("services", namespace, service)
            if svc is None:
                return 404, {"status": "not found", "namespace": namespace, "service": service}
            pods = self._service_pods(svc)
            ready = sum(1 for p in pods if kube.is_ready(p))
        body = {
            "status": "healthy" if ready else "unavailable",
            "namespace": namespace,
            "service": service,
            "readyReplicas": ready,
            "replicas": len(pods),
        }
        return (200 if ready else 503), body

    def service_metrics(self, namespace: str, service: str) -> tuple[int, bytes]:
        """The per-service scrape target behind up{job="llm-d-service"} (see metrics.py)."""
        code, _body = self.health(namespace, service)
        if code == 404:
            return 404, b"no such service\n"
        return metrics.service_target(namespace, service, code == 200)

    def prometheus_metrics(self) -> bytes:
        with self.store.lock:
            sample = self._sample()
        return metrics.render(sample)

    def warm_up(self, namespace: str, service: str, model: str) -> tuple[int, dict]:
        """`POST /v1/warmup` of a model service (seed 001): 404 for no such service, 503 while it has no
        Ready pod, else 200 and every active fault hears of it (a cold start heals)."""
        code, body = self.health(namespace, service)
        if code != 200:
            return code, body
        with self.store.lock:
            for fault in self.faults:
                fault.warm_up(namespace, service)
        return 200, {"status": "warm", "namespace": namespace, "service": service, "model": model}

    def on_eviction(self, namespace: str, name: str) -> None:
        with self.store.lock:
            pod = self.store.get("pods", namespace, name)
            if pod is not None:
                container = pod["spec"]["containers"][0]["name"]
                self.event(pod, "Normal", "Killing", f"Stopping container {container}", "kubelet")
                self.forget_pod(pod)

    # ---- helpers the controllers, kubelet and faults use ---------------------------------

    def now(self) -> float:
        """Simulated seconds since the cluster started."""
        if self._frozen is not None:
            return self._frozen
        return (time.monotonic() - self._t0) * self.time_scale + self._offset

    @staticmethod
    def now_iso() -> str:
        return now_iso()

    def health_url(self, namespace: str, service: str) -> str:
        return f"{self.base_url}/simulated/health/{namespace}/{service}"

    def event(
        self,
        obj: dict,
        type_: str,
        reason: str,
        message: str,
        component: str,
        *,
        once: bool = False,
        every: float | None = None,
    ) -> None:
        """Record an event; `once` records it a single time, `every` at most that often."""
        key = (obj["metadata"].get("uid"), reason, message)
        last = self._said.get(key)
        if last is not None and (once or (every is not None and self.now() - last < every)):
            return
        self._said[key] = self.now()
        self.store.add_event(obj, type_, reason, message, component)

    def write_status(self, obj: dict, status: dict) -> None:
        if obj.get("status") == status:
            return
        obj["status"] = status
        obj.update(self.store.update(obj))

    def forget_pod(self, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        self.runtimes.pop(uid, None)
        self.release_gpus(pod)

    def delete_pod(self, pod: dict) -> None:
        controllers.delete_pod(self, pod)

    def pod_age_rank(self, pod: dict) -> int:
        """Creation order of pods (higher = newer); timestamps have one-second resolution."""
        uid = pod["metadata"]["uid"]
        if uid not in self._ages:
            self._ages[uid] = len(self._ages)
        return self._ages[uid]

    def pod_by_uid(self, uid: str) -> dict | None:
        for pod in self.store.list("pods"):
            if pod["metadata"]["uid"] == uid:
                return pod
        return None

    def mark_progress(self, deploy: dict) -> None:
        self._progress.pop(deploy["metadata"]["uid"], None)

    def progress_stalled(self, deploy: dict, progress: tuple) -> bool:
        uid = deploy["metadata"]["uid"]
        seen = self._progress.get(uid)
        if seen is None or seen[0] != progress:
            self._progress[uid] = (progress, self.now())
            return False
        return self.now() - seen[1] > deploy["spec"].get("progressDeadlineSeconds", 600)

    def workload_problem(self, deploy: dict) -> tuple[str, str, bool] | None:
        """(reason, message, failed) for the first pod of a Deployment that is not coming up:
        failed for pods that crash, cannot pull or cannot load; not failed for Pending ones."""
        selector = deploy["spec"]["selector"]
        pods = [
            p
            for p in self.store.list("pods", deploy["metadata"]["namespace"])
            if kube.selector_matches(selector, p["metadata"].get("labels"))
        ]
        pending = None
        for pod in pods:
            name = pod["metadata"]["name"]
            fate = self.fate(pod) if pod["spec"].get("nodeName") else None
            if fate is not None:
                reason = {
                    Mode.CRASH: "CrashLoopBackOff",
                    Mode.NOT_READY: "ReadinessProbeFailed",
                    Mode.IMAGE_PULL: "ImagePullBackOff",
                    Mode.INIT_CRASH: "ModelLoadFailed",
                }[fate.mode]
                if fate.reason == "OOMKilled":
                    reason = "OOMKilled"
                detail = fate.message or (fate.log[-1] if fate.log else reason)
                return reason, f"pod {name}: {detail}", True
            scheduled = kube.condition(pod, "PodScheduled")
            if pending is None and scheduled and scheduled.get("status") == "False":
                pending = ("Unschedulable", f"pod {name}: {scheduled.get('message', '')}", False)
        progressing = kube.condition(deploy, "Progressing")
        if pending is None and progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
            return "ProgressDeadlineExceeded", progressing["message"], True
        return pending

    def operator_healthy(self) -> bool:
        pods = self.store.list("pods", scenarios.OPERATOR[0], label_selector=f"app={scenarios.OPERATOR[1]}")
        return any(kube.is_ready(p) for p in pods)

    def node_gpu_capacity(self, node: str) -> int:
        obj = self.store.get("nodes", None, node)
        return int(kube.parse_quantity(((obj or {}).get("status") or {}).get("capacity", {}).get(GPU, 0)))

    def node_drained(self, node: str) -> bool:
        """Cordoned, with no pod left on it but daemonset pods and finished ones."""
        obj = self.store.get("nodes", None, node)
        if obj is None or not obj["spec"].get("unschedulable"):
            return False
        for pod in self.store.list("pods", field_selector=f"spec.nodeName={node}"):
            owner = kube.controller_of(pod)
            if not kube.is_terminal(pod) and (owner is None or owner.get("kind") != "DaemonSet"):
                return False
        return True

    def node_unreachable(self, node: str) -> None:
        """The node's kubelet stops posting status, as the node lifecycle controller then records it:
        every condition Unknown (NodeStatusUnknown, "Kubelet stopped posting node status."), the
        `node.kubernetes.io/unreachable` NoSchedule and NoExecute taints; capacity and allocatable
        stay what the kubelet last reported."""
        with self.store.lock:
            self._unreachable(node)

    def _unreachable(self, node: str) -> None:
        obj = self.store.get("nodes", None, node)
        if obj is None:
            raise KeyError(node)
        now = self.now_iso()
        taints = [t for t in obj["spec"].get("taints") or [] if t.get("key") != "node.kubernetes.io/unreachable"]
        for effect in ("NoSchedule", "NoExecute"):
            taints.append({"key": "node.kubernetes.io/unreachable", "effect": effect, "timeAdded": now})
        obj["spec"]["taints"] = taints
        obj.update(self.store.update(obj))
        status = kube_copy(obj["status"])
        for condition in status.get("conditions") or []:
            condition.update(
                status="Unknown",
                reason="NodeStatusUnknown",
                message="Kubelet stopped posting node status.",
                lastTransitionTime=now,
            )
        self.write_status(obj, status)

    def allocate_gpus(self, pod: dict, node: str) -> None:
        count = int(kube.pod_request(pod, GPU))
        if count and node in self.gpus:
            self.gpus[node].allocate(pod["metadata"]["uid"], count)

    def release_gpus(self, pod: dict) -> None:
        for node in self.gpus.values():
            node.release(pod["metadata"]["uid"])

    def pod_ip(self, pod: dict) -> str:
        """An address from the node's pod CIDR (10.244.<node>.0/24)."""
        self._ips += 1
        names = sorted(n["metadata"]["name"] for n in self.store.list("nodes"))
        node = names.index(pod["spec"]["nodeName"]) if pod["spec"]["nodeName"] in names else 0
        return f"10.244.{node}.{(self._ips % 250) + 2}"

    def node_ip(self, node: str) -> str:
        obj = self.store.get("nodes", None, node)
        for address in ((obj or {}).get("status") or {}).get("addresses") or []:
            if address.get("type") == "InternalIP":
                return address["address"]
        return "10.0.0.1"

    def nvidia_smi(self, pod: dict, args: list[str]) -> SmiResult:
        """nvidia-smi in `pod`: it sees the GPUs allocated to it, or every GPU of its node when
        it asked for none (a privileged probe with NVIDIA_VISIBLE_DEVICES=all)."""
        node = self.gpus.get(pod["spec"]["nodeName"])
        if node is None:
            return SmiResult(127, "sh: 1: nvidia-smi: not found\n")
        held = node.held_by(pod["metadata"]["uid"])
        return run_nvidia_smi(args, node, held or None)

    def top_memory_pod(self) -> dict | None:
        pods = [p for p in self.store.list("pods") if self._running(p)]
        return max(pods, key=self._pod_memory, default=None)

    def oom_kill(self, pod: dict) -> None:
        """The kernel's OOM killer ends the pod's main container; the kubelet restarts it."""
        rt = self.runtimes.get(pod["metadata"]["uid"])
        if rt is None or rt.started is None:
            return
        main = pod["spec"]["containers"][0]
        rt.last_terminated = {
            "terminated": {
                "exitCode": 137,
                "reason": "OOMKilled",
                "startedAt": rt.started_iso,
                "finishedAt": self.now_iso(),
            }
        }
        rt.restarts += 1
        rt.started, rt.started_iso = self.now(), self.now_iso()
        limit = kube.container_limit(main, "memory") or 0
        node = self.store.get("nodes", None, pod["spec"]["nodeName"])
        if node is not None:  # a node deleted under its pods reports nothing
            self.event(
                node,
                "Warning",
                "OOMKilling",
                f"Memory cgroup out of memory: Killed process {4100 + rt.restarts} (python3) "
                f"total-vm:{int(limit // 1024) + 8123456}kB, anon-rss:{int(limit // 1024)}kB, "
                f"file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:{int(limit // 2**20)}kB oom_score_adj:-997",
                "kernel-monitor",
            )
        self.event(
            pod,
            "Warning",
            "Unhealthy",
            "Readiness probe failed: container restarted after being OOMKilled (memory limit "
            f"{main.get('resources', {}).get('limits', {}).get('memory', '')})",
            "kubelet",
        )

    # ---- fates: what is wrong with a pod ------------------------------------------------

    def fate(self, pod: dict) -> Fate | None:
        """Physical causes first (image, storage, driver, GPU, memory), then the faults'."""
        main = pod["spec"]["containers"][0]
        if main.get("image") in self.missing_images:
            image = main["image"]
            return Fate(
                Mode.IMAGE_PULL,
                message=(
                    f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull and '
                    f'unpack image "docker.io/{image}": failed to resolve reference "docker.io/{image}": '
                    f"docker.io/{image}: not found"
                ),
            )
        for init in pod["spec"].get("initContainers") or []:
            uri = (init.get("args") or [""])[0]
            if init["name"] == "storage-initializer" and any(uri.startswith(d) for d in self.denied_storage):
                return Fate(Mode.INIT_CRASH, "Error", 1, log=logs.access_denied(uri))
        node = self.gpus.get(pod["spec"].get("nodeName") or "")
        uid = pod["metadata"]["uid"]
        if node is not None and not node.driver_loaded:
            if (pod["metadata"].get("labels") or {}).get("name") == "nvidia-device-plugin-ds":
                return Fate(
                    Mode.CRASH,
                    "Error",
                    1,
                    log=(
                        "E0101 00:00:00.000000       1 factory.go:112] Failed to initialize NVML: could not "
                        "load NVML library.",
                        "E0101 00:00:00.000000       1 main.go:132] error starting plugins: error creating "
                        "plugin manager: unable to create plugin manager: nvml init failed: ERROR_LIBRARY_NOT_FOUND",
                    ),
                )
            if node.held_by(uid):
                return Fate(
                    Mode.CRASH,
                    "Error",
                    1,
                    log=(
                        "RuntimeError: Found no NVIDIA driver on your system. Please check that you have an "
                        "NVIDIA GPU and installed a driver from http://www.nvidia.com/Download/index.aspx",
                    ),
                )
        if node is not None and any(g.health is not GpuHealth.OK for g in node.held_by(uid)):
            return Fate(
                Mode.CRASH,
                "Error",
                1,
                log=(
                    "ERROR 01-01 00:00:00 engine.py:157] RuntimeError: CUDA error: uncorrectable ECC error encountered",
                    "CUDA kernel errors might be asynchronously reported at some other API call, so the "
                    "stacktrace below might be incorrect.",
                ),
            )
        need = self._model_memory_need(main)
        limit = kube.container_limit(main, "memory")
        if need is not None and limit is not None and need > limit:
            return Fate(
                Mode.CRASH,
                "OOMKilled",
                137,
                log=(
                    f"INFO 01-01 00:00:00 model_runner.py:1056] Starting to load model {self._model(main)}...",
                    "INFO 01-01 00:00:00 weight_utils.py:243] Using model weights format ['*.safetensors']",
                ),
            )
        for fault in self.faults:
            fate = fault.fate(self, pod)
            if fate is not None:
                return fate
        return None

    # ---- the reconcile loop --------------------------------------------------------------

    def _start(self, fault: Fault) -> None:
        fault.inject(self)
        self.faults.append(fault)

    def _fast_forward(self, seconds: float) -> None:
        """Reconcile `seconds` of simulated time in `_STEP` steps, on a clock that only the steps move:
        the same seed gives the same cluster however long each step takes (a busy machine)."""
        self._frozen = self.now()
        try:
            for _ in range(int(seconds / _STEP)):
                self._frozen += _STEP
                self._reconcile()
        finally:
            live = (time.monotonic() - self._t0) * self.time_scale + self._offset
            self._offset += self._frozen - live  # the live clock goes on from where the steps left it
            self._frozen = None

    def _reconcile(self) -> None:
        nodes = self.store.list("nodes")
        pods = self.store.list("pods")
        live = {p["metadata"]["uid"] for p in pods}
        for uid in [u for u in self.runtimes if u not in live]:
            self.runtimes.pop(uid)
            for node in self.gpus.values():
                node.release(uid)
        self._run_kubelets(nodes, pods)
        self._update_nodes(nodes, pods)
        for fault in self.faults:
            fault.tick(self)
        controllers.reconcile_pvcs(self)
        controllers.reconcile_llmdeployments(self, self.operator_healthy())
        controllers.reconcile_inferenceservices(self)
        pods = self.store.list("pods")
        controllers.reconcile_deployments(self, pods)
        controllers.reconcile_replicasets(self, pods)
        controllers.reconcile_daemonsets(self, pods, nodes)
        disruption.reconcile_budgets(self.store)
        self._schedule(nodes, pods)
        self._heal()

    def _runtime(self, pod: dict) -> PodRuntime:
        uid = pod["metadata"]["uid"]
        rt = self.runtimes.get(uid)
        if rt is None:
            gpu_pod = kube.pod_request(pod, GPU) > 0
            delay = self.rng.uniform(15, 30) if gpu_pod else self.rng.uniform(3, 6)
            rt = self.runtimes[uid] = PodRuntime(uid=uid, seen=self.now(), ready_delay=delay)
        return rt

    def _run_kubelets(self, nodes: list[dict], pods: list[dict]) -> None:
        by_name = {n["metadata"]["name"]: n for n in nodes}
        for pod in pods:
            if not pod["spec"].get("nodeName") or kube.is_terminal(pod):
                continue
            rt = self._runtime(pod)
            if rt.scheduled is None and not kubelet.admit_pinned(
                self, pod, rt, by_name.get(pod["spec"]["nodeName"]), pods
            ):
                continue
            kubelet.run(self, pod, rt, self.fate(pod))

    def _schedule(self, nodes: list[dict], pods: list[dict]) -> None:
        for pod in pods:
            if pod["spec"].get("nodeName") or kube.is_terminal(pod):
                continue
            kubelet.schedule(self, pod, self._runtime(pod), nodes, pods)

    def _update_nodes(self, nodes: list[dict], pods: list[dict]) -> None:
        """A GPU node advertises its GPUs only while its device plugin pod is registered (Ready)."""
        plugin_ready = {
            p["spec"].get("nodeName")
            for p in pods
            if (p["metadata"].get("labels") or {}).get("name") == "nvidia-device-plugin-ds" and kube.is_ready(p)
        }
        for node in nodes:
            name = node["metadata"]["name"]
            if name not in self.gpus:
                continue
            count = str(len(self.gpus[name].gpus)) if name in plugin_ready else "0"
            status = kube_copy(node["status"])
            status["capacity"][GPU] = status["allocatable"][GPU] = count
            self.write_status(node, status)

    def _heal(self) -> None:
        for fault in list(self.faults):
            if fault.healed(self):
                self.faults.remove(fault)
                self.healed_faults.append(fault.name)

    # ---- traffic and usage ---------------------------------------------------------------

    def _model_services(self) -> list[dict]:
        return [
            s
            for s in self.store.list("services")
            if (s["metadata"].get("labels") or {}).get(controllers.PART_OF) in ("llm-d", "kserve")
        ]

    def _service_pods(self, svc: dict) -> list[dict]:
        selector = {"matchLabels": svc["spec"].get("selector") or {}}
        return [
            p
            for p in self.store.list("pods", svc["metadata"]["namespace"])
            if kube.selector_matches(selector, p["metadata"].get("labels"))
        ]

    def _advance_traffic(self) -> None:
        now = time.monotonic()
        seconds, self._last_traffic = now - self._last_traffic, now
        live = []
        for svc in self._model_services():
            ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
            pods = [p for p in self._service_pods(svc) if kube.is_ready(p)]
            deploy = self.store.get("deployments", ns, name)
            load = self.traffic.service(ns, name, (deploy or {}).get("spec", {}).get("replicas", 1))
            multiplier = 1.0
            for fault in self.faults:
                multiplier *= fault.demand(ns, name)
            load.ready, load.multiplier = len(pods), multiplier
            load.reset_shape()
            for fault in self.faults:
                fault.shape(load)  # latency, cache hits, model load time (simulator/scenarios_latency.py)
            for pod in pods:
                uid = pod["metadata"]["uid"]
                live.append(uid)
                counters = self.traffic.pods.setdefault(uid, metrics.PodCounters(ns, name, pod["metadata"]["name"]))
                errors = [f.error_fraction(pod) for f in self.faults]
                fraction = max([e for e in errors if e is not None], default=metrics.BASE_ERROR_FRACTION)
                pressure = any(f.memory_pressure(pod) for f in self.faults)
                self.traffic.advance(counters, load, seconds, fraction, pressure)
                counters.gpu_utilization = round(min(98.0, load.overload * 100), 1)
                counters.memory_utilization = round(self._memory_fraction(pod) * 100, 1)
                for node in self.gpus.values():
                    for gpu in node.held_by(uid):
                        gpu.load = counters.gpu_utilization / 100
        self.traffic.forget(live)

    def _memory_fraction(self, pod: dict) -> float:
        jitter = (int(pod["metadata"]["uid"][:4], 16) % 100) / 100
        if any(f.memory_pressure(pod) for f in self.faults):
            return 0.93 + 0.04 * jitter
        return 0.52 + 0.15 * jitter

    def _pod_memory(self, pod: dict) -> float:
        main = pod["spec"]["containers"][0]
        limit = kube.container_limit(main, "memory")
        if limit is None:
            requested = ((main.get("resources") or {}).get("requests") or {}).get("memory")
            limit = kube.parse_quantity(requested) * 1.5 if requested else 128 * 2**20
        return limit * self._memory_fraction(pod)

    def _pod_cpu(self, pod: dict) -> float:
        jitter = (int(pod["metadata"]["uid"][4:8], 16) % 100) / 100
        if kube.pod_request(pod, GPU):
            return 1.2 + jitter
        requested = kube.pod_request(pod, "cpu")
        return max(0.002, requested * (0.15 + 0.3 * jitter))

    def _running(self, pod: dict) -> bool:
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        return pod["status"].get("phase") == "Running" and any("running" in s.get("state", {}) for s in statuses)

    def _pod_metric(self, pod: dict) -> dict:
        containers = pod["spec"]["containers"]
        return {
            "apiVersion": "metrics.k8s.io/v1beta1",
            "kind": "PodMetrics",
            "metadata": {
                "name": pod["metadata"]["name"],
                "namespace": pod["metadata"]["namespace"],
                "labels": pod["metadata"].get("labels") or {},
                "creationTimestamp": now_iso(),
            },
            "timestamp": now_iso(),
            "window": "15.011s",
            "containers": [
                {
                    "name": c["name"],
                    "usage": {
                        "cpu": kube.cpu_nanocores(self._pod_cpu(pod) if i == 0 else 0.001),
                        "memory": kube.memory_ki(self._pod_memory(pod) if i == 0 else 8 * 2**20),
                    },
                }
                for i, c in enumerate(containers)
            ],
        }

    def _sample(self) -> metrics.ClusterSample:
        gpus = [
            metrics.GpuSample(n.node, g.index, g.uuid, g.temperature_c, g.xid)
            for n in self.gpus.values()
            for g in n.gpus
        ]
        nodes = [
            (n["metadata"]["name"], self.node_gpu_capacity(n["metadata"]["name"]), n["metadata"]["name"] in self.gpus)
            for n in self.store.list("nodes")
        ]
        phases = [
            (d["metadata"]["namespace"], d["metadata"]["name"], (d.get("status") or {}).get("phase", "Pending"))
            for d in self.store.list("llmdeployments")
        ]
        services = []
        for svc in self._model_services():
            up = any(kube.is_ready(p) for p in self._service_pods(svc))
            services.append((svc["metadata"]["namespace"], svc["metadata"]["name"], up))
        queues = list(self.traffic.services.values())
        return metrics.ClusterSample(
            [_snapshot(c) for c in self.traffic.pods.values()], queues, gpus, nodes, phases, services
        )

    def model_services(self) -> list[tuple[str, str]]:
        """(namespace, service) of every model service: the llm-d-service scrape targets."""
        with self.store.lock:
            return [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in self._model_services()]

    # ---- logs ---------------------------------------------------------------------------

    def _log_lines(self, pod: dict, container: str | None) -> list[str]:
        names = [c["name"] for c in pod["spec"].get("initContainers") or []] + [
            c["name"] for c in pod["spec"]["containers"]
        ]
        main = pod["spec"]["containers"][0]["name"]
        container = container or main
        if container not in names:
            raise ValueError(f"container {container} is not valid for pod {pod['metadata']['name']}")
        rt = self.runtimes.get(pod["metadata"]["uid"])
        is_init = container != main and container not in [c["name"] for c in pod["spec"]["containers"]]
        started = rt is not None and (
            rt.started is not None or rt.finished is not None or (is_init and (rt.init_done or rt.init_last_terminated))
        )
        if rt is None or not started or (not is_init and pod["spec"].get("initContainers") and not rt.init_done):
            waiting = "PodInitializing" if pod["spec"].get("initContainers") else "ContainerCreating"
            fate = self.fate(pod)
            if fate is not None and fate.mode is Mode.IMAGE_PULL:
                waiting = "trying and failing to pull image"
            raise ValueError(
                f'container "{container}" in pod "{pod["metadata"]["name"]}" is waiting to start: {waiting}'
            )
        if rt.smi is not None:
            return rt.smi.output.splitlines()
        kind = logs.role(pod, container)
        start = _parse_iso(rt.started_iso) if rt.started_iso else logs.now_utc()
        fate = self.fate(pod)
        spec = next(
            c for c in (pod["spec"].get("initContainers") or []) + pod["spec"]["containers"] if c["name"] == container
        )
        lines = logs.startup(kind, spec, start)
        if is_init:
            if fate is not None and fate.mode is Mode.INIT_CRASH:
                return lines + list(fate.log)
            return lines + logs.steady(kind, start, 10.0, {})
        if fate is not None and fate.mode in (Mode.CRASH, Mode.NOT_READY):
            return lines[:3] + list(fate.log) if fate.mode is Mode.CRASH else lines + list(fate.log)
        elapsed = self.now() - (rt.started or self.now())
        load = self.traffic.services.get(
            (pod["metadata"]["namespace"], (pod["metadata"].get("labels") or {}).get("app", ""))
        )
        stats = {
            "pending": load.queue_depth if load else 0,
            "running": min(64, (load.demand / max(1, load.ready)) * 2) if load else 0,
            "prompt_tps": (load.demand * 180 / max(1, load.ready)) if load else 0,
            "gen_tps": (load.demand * 95 / max(1, load.ready)) if load else 0,
            "kv": self._memory_fraction(pod) * 90,
        }
        lines += logs.steady(kind, start, elapsed, stats)
        if kind == "litellm":
            lines += gateway.request_lines(self.store, rt.routes, start, elapsed)
        for fault in self.faults:
            lines += fault.symptoms(pod)
        return lines

    @staticmethod
    def _model(container: dict) -> str:
        args = container.get("args") or []
        return args[args.index("--model") + 1] if "--model" in args and args.index("--model") + 1 < len(args) else ""

    def _model_memory_need(self, container: dict) -> float | None:
        need = scenarios.MODEL_HOST_MEMORY_GIB.get(self._model(container))
        return need * 2**30 if need is not None else None


def _snapshot(c: metrics.PodCounters) -> metrics.PodCounters:
    return dataclasses.replace(c, requests=dict(c.requests), buckets=list(c.buckets))


def _parse_iso(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
