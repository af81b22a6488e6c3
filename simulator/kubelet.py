"""The scheduler and the kubelets: where a pod goes, and what its containers do there.

A pod's course is decided by its `Fate` (what is wrong with it, if anything), which the
cluster works out from physical rules (a missing image, a memory limit below what the model
needs, a GPU with ECC errors, an unbound claim) and from the active faults. The kubelet turns
that into the status fields, restart counts, back-offs and events a real kubelet reports.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from simulator import gateway, kube
from simulator.gpu import SmiResult, find_nvidia_smi
from simulator.kube import GPU, set_condition

if TYPE_CHECKING:
    from simulator.cluster import ClusterBehaviour

# Simulated seconds (divided by time_scale in real time).
SCHEDULE_DELAY = 1.0
PULL_DELAY = 2.0
INIT_DURATION = 3.0
CRASH_AFTER = 4.0
PROBE_DURATION = 1.0
BACKOFF_START, BACKOFF_CAP = 10.0, 300.0
RESCHEDULE_EVERY = 15.0


class Mode(enum.Enum):
    CRASH = "crash"  # the main container exits after a few seconds: CrashLoopBackOff
    NOT_READY = "not-ready"  # it runs, its readiness probe fails
    IMAGE_PULL = "image-pull"  # the image cannot be pulled: ErrImagePull / ImagePullBackOff
    INIT_CRASH = "init-crash"  # an init container exits non-zero: Init:CrashLoopBackOff


@dataclass(frozen=True)
class Fate:
    mode: Mode
    reason: str = "Error"  # the terminated reason (Error, OOMKilled)
    exit_code: int = 1
    message: str = ""  # for events: the pull error, the probe failure
    log: tuple[str, ...] = ()  # what the failing container prints before it dies


@dataclass
class PodRuntime:
    uid: str
    seen: float  # simulated time the kubelet/scheduler first saw it
    ready_delay: float
    scheduled: float | None = None
    started: float | None = None  # the running container instance's start
    started_iso: str = ""
    backoff_until: float | None = None
    restarts: int = 0
    init_restarts: int = 0
    last_terminated: dict | None = None
    init_last_terminated: dict | None = None
    init_done: bool = False
    finished: dict | None = None  # a run-to-completion container's terminated state
    smi: SmiResult | None = None
    ip: str = ""
    sched_message: str = ""
    sched_event_at: float = -1e9
    said: set[str] = field(default_factory=set)  # one-shot events already recorded
    routes: tuple = ()  # a LiteLLM proxy's model_list, as it loaded it at start (simulator/gateway.py)


# ---- scheduling -------------------------------------------------------------------------


def _tolerates_cordon(pod: dict) -> bool:
    return any(
        t.get("key") == "node.kubernetes.io/unschedulable" and t.get("operator") == "Exists"
        for t in pod["spec"].get("tolerations") or []
    )


def _affinity_matches(pod: dict, node: dict) -> bool:
    affinity = ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not affinity:
        return True
    labels = node["metadata"].get("labels") or {}
    for term in affinity.get("nodeSelectorTerms") or []:
        fields_ok = all(
            (node["metadata"]["name"] in (e.get("values") or [])) == (e.get("operator") == "In")
            for e in term.get("matchFields") or []
            if e.get("key") == "metadata.name"
        )
        exprs_ok = (
            kube.selector_matches({"matchExpressions": term.get("matchExpressions") or []}, labels)
            if term.get("matchExpressions")
            else True
        )
        if fields_ok and exprs_ok:
            return True
    return False


def _node_free(sim: ClusterBehaviour, node: dict, pods: list[dict]) -> dict[str, float]:
    allocatable = node["status"].get("allocatable") or {}
    free = {r: kube.parse_quantity(allocatable.get(r, 0)) for r in ("cpu", "memory", GPU)}
    name = node["metadata"]["name"]
    for pod in pods:
        if pod["spec"].get("nodeName") == name and not kube.is_terminal(pod):
            for resource in free:
                free[resource] -= kube.pod_request(pod, resource)
    return free


def _misfit(sim: ClusterBehaviour, pod: dict, node: dict, free: dict[str, float]) -> str | None:
    """Why `pod` cannot go on `node`, in the scheduler's words; None if it can."""
    labels = node["metadata"].get("labels") or {}
    if node["spec"].get("unschedulable") and not _tolerates_cordon(pod):
        return "node(s) were unschedulable"
    taint = _untolerated_taint(pod, node)
    if taint:
        return f"node(s) had untolerated taint {{{taint}}}"
    selector = pod["spec"].get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()) or not _affinity_matches(pod, node):
        return "node(s) didn't match Pod's node affinity/selector"
    for resource, short in (("cpu", "cpu"), ("memory", "memory"), (GPU, GPU)):
        need = kube.pod_request(pod, resource)
        if need and need > free[resource] + 1e-9:
            return f"Insufficient {short}"
    return None


def _untolerated_taint(pod: dict, node: dict) -> str | None:
    """`key: value` of a NoSchedule/NoExecute taint of the node the pod does not tolerate."""
    tolerations = pod["spec"].get("tolerations") or []
    for taint in node["spec"].get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(
            t.get("key") in (None, "", taint.get("key"))
            and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
            and t.get("effect") in (None, "", taint.get("effect"))
            for t in tolerations
        ):
            return f"{taint.get('key')}: {taint.get('value', '')}"
    return None


def _unbound_claim(sim: ClusterBehaviour, pod: dict) -> str | None:
    for volume in pod["spec"].get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if not claim:
            continue
        pvc = sim.store.get("persistentvolumeclaims", pod["metadata"]["namespace"], claim)
        if pvc is None:
            return f'persistentvolumeclaim "{claim}" not found'
        if (pvc.get("status") or {}).get("phase") != "Bound":
            return "pod has unbound immediate PersistentVolumeClaims"
    return None


def schedule(sim: ClusterBehaviour, pod: dict, rt: PodRuntime, nodes: list[dict], pods: list[dict]) -> None:
    now = sim.now()
    if now - rt.seen < SCHEDULE_DELAY:
        return
    total = len(nodes)
    claim_problem = _unbound_claim(sim, pod)
    if claim_problem:
        message = (
            f"0/{total} nodes are available: {claim_problem}. preemption: 0/{total} nodes "
            f"are available: {total} Preemption is not helpful for scheduling."
        )
        _unschedulable(sim, pod, rt, message)
        return
    reasons: dict[str, int] = {}
    feasible = []
    for node in nodes:
        free = _node_free(sim, node, pods)
        why = _misfit(sim, pod, node, free)
        if why is None:
            feasible.append((free, node))
        else:
            reasons[why] = reasons.get(why, 0) + 1
    if not feasible:
        summary = ", ".join(sorted(f"{n} {why}" for why, n in reasons.items()))
        victims = sum(n for why, n in reasons.items() if why.startswith("Insufficient"))
        tail = []
        if victims:
            tail.append(f"{victims} No preemption victims found for incoming pod")
        if total - victims:
            tail.append(f"{total - victims} Preemption is not helpful for scheduling")
        message = (
            f"0/{total} nodes are available: {summary}. preemption: 0/{total} nodes are "
            f"available: {', '.join(sorted(tail))}."
        )
        _unschedulable(sim, pod, rt, message)
        return
    node = min(feasible, key=lambda f: _score(pod, *f))[1]
    bind(sim, pod, rt, node["metadata"]["name"])


def _score(pod: dict, free: dict[str, float], node: dict) -> tuple:
    """Lower is better. GPU pods go where most GPUs are free (LeastAllocated); other pods keep
    off GPU nodes where they can, leaving those for GPU work; then most free CPU; then name."""
    if kube.pod_request(pod, GPU):
        first = -free[GPU]
    else:
        first = kube.parse_quantity((node["status"].get("allocatable") or {}).get(GPU, 0)) + (
            8 if (node["metadata"].get("labels") or {}).get("nvidia.com/gpu.present") == "true" else 0
        )
    return first, -free["cpu"], node["metadata"]["name"]


def _unschedulable(sim: ClusterBehaviour, pod: dict, rt: PodRuntime, message: str) -> None:
    now = sim.now()
    if message == rt.sched_message and now - rt.sched_event_at < RESCHEDULE_EVERY:
        return
    rt.sched_message, rt.sched_event_at = message, now
    sim.event(pod, "Warning", "FailedScheduling", message, "default-scheduler")
    status = dict(pod.get("status") or {})
    status["phase"] = "Pending"
    status["conditions"] = set_condition(
        list(status.get("conditions") or []), "PodScheduled", "False", "Unschedulable", message, sim.now_iso()
    )
    sim.write_status(pod, status)


def bind(sim: ClusterBehaviour, pod: dict, rt: PodRuntime, node_name: str) -> None:
    pod["spec"]["nodeName"] = node_name
    pod.update(sim.store.update(pod))
    rt.scheduled = sim.now()
    sim.allocate_gpus(pod, node_name)
    sim.event(
        pod,
        "Normal",
        "Scheduled",
        f"Successfully assigned {pod['metadata']['namespace']}/{pod['metadata']['name']} to {node_name}",
        "default-scheduler",
    )


def admit_pinned(sim: ClusterBehaviour, pod: dict, rt: PodRuntime, node: dict | None, pods: list[dict]) -> bool:
    """A pod created with spec.nodeName skips the scheduler; its kubelet admits or rejects it."""
    name = pod["spec"]["nodeName"]
    if node is None:
        return False
    need = kube.pod_request(pod, GPU)
    if need:
        free = _node_free(sim, node, [p for p in pods if p is not pod])
        if need > free[GPU]:
            capacity = int(kube.parse_quantity((node["status"].get("allocatable") or {}).get(GPU, 0)))
            sim.write_status(
                pod,
                {
                    "phase": "Failed",
                    "reason": f"OutOf{GPU}",
                    "message": f"Pod was rejected: Node didn't have enough resource: {GPU}, requested: "
                    f"{int(need)}, used: {capacity - max(0, int(free[GPU]))}, capacity: {capacity}",
                    "startTime": sim.now_iso(),
                },
            )
            return False
    rt.scheduled = sim.now()
    sim.allocate_gpus(pod, name)
    return True


# ---- the kubelet ------------------------------------------------------------------------


def _container_id(pod_uid: str, name: str, attempt: int) -> str:
    return "containerd://" + hashlib.sha256(f"{pod_uid}/{name}/{attempt}".encode()).hexdigest()


def _image_id(image: str) -> str:
    digest = hashlib.sha256(image.encode()).hexdigest()
    repo = image.rsplit(":", 1)[0]
    return f"docker.io/{repo}@sha256:{digest}"


def _backoff(restarts: int) -> float:
    return min(BACKOFF_CAP, BACKOFF_START * 2 ** max(0, restarts - 1))


def run(sim: ClusterBehaviour, pod: dict, rt: PodRuntime, fate: Fate | None) -> None:
    """Advance one scheduled pod's containers and write its status if it changed."""
    if kube.is_terminal(pod):
        return
    now = sim.now()
    since = now - (rt.scheduled or now)
    main = pod["spec"]["containers"][0]
    command = list(main.get("command") or []) + list(main.get("args") or [])
    smi_args = find_nvidia_smi(command)
    if since < PULL_DELAY:
        _write(sim, pod, rt, phase="Pending", main_state={"waiting": {"reason": "ContainerCreating"}}, init_state=None)
        return
    if fate is not None and fate.mode is Mode.IMAGE_PULL:
        _image_pull_failure(sim, pod, rt, fate, since)
        return
    if pod["spec"].get("initContainers") and not rt.init_done:
        _run_init(sim, pod, rt, fate)
        return
    if rt.started is None or (rt.backoff_until is not None and now >= rt.backoff_until):
        _start(sim, pod, rt, main)
    started = rt.started
    assert started is not None, "_start sets it"
    if smi_args is not None:
        _run_probe(sim, pod, rt, smi_args)
        return
    if fate is not None and fate.mode is Mode.CRASH and rt.backoff_until is None and now - started >= CRASH_AFTER:
        _crash(sim, pod, rt, main, fate)
    if rt.backoff_until is not None and now < rt.backoff_until:
        message = (
            f"back-off {int(_backoff(rt.restarts))}s restarting failed container={main['name']} "
            f"pod={pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})"
        )
        _write(
            sim, pod, rt, phase="Running", main_state={"waiting": {"reason": "CrashLoopBackOff", "message": message}}
        )
        return
    ready = fate is None and now - started >= rt.ready_delay
    if fate is not None and fate.mode is Mode.NOT_READY and now - started >= rt.ready_delay:
        sim.event(pod, "Warning", "Unhealthy", fate.message, "kubelet", every=10)
    _write(sim, pod, rt, phase="Running", main_state={"running": {"startedAt": rt.started_iso}}, ready=ready)


def _start(sim: ClusterBehaviour, pod: dict, rt: PodRuntime, main: dict) -> None:
    if rt.backoff_until is not None:
        rt.restarts += 1
    rt.started, rt.started_iso, rt.backoff_until = sim.now(), sim.now_iso(), None
    if (pod["metadata"].get("labels") or {}).get("app") == "litellm":
        rt.routes = gateway.load_routes(sim.store, pod["metadata"]["namespace"])
    image = main.get("image", "")
    if "pulled" not in rt.said:
        rt.said.add("pulled")
        sim.event(pod, "Normal", "Pulling", f'Pulling image "{image}"', "kubelet")
        sim.event(
            pod,
            "Normal",
            "Pulled",
            f'Successfully pulled image "{image}" in 1.82s (1.82s including waiting). Image size: 4821733812 bytes.',
            "kubelet",
        )
    else:
        sim.event(pod, "Normal", "Pulled", f'Container image "{image}" already present on machine', "kubelet")
    sim.event(pod, "Normal", "Created", f"Created container: {main['name']}", "kubelet")
    sim.event(pod, "Normal", "Started", f"Started container {main['name']}", "kubelet")


def _crash(sim: ClusterBehaviour, pod: dict, rt: PodRuntime, main: dict, fate: Fate) -> None:
    rt.last_terminated = {
        "terminated": {
            "exitCode": fate.exit_code,
            "reason": fate.reason,
            "startedAt": rt.started_iso,
            "finishedAt": sim.now_iso(),
            "containerID": _container_id(pod["metadata"]["uid"], main["name"], rt.restarts),
        }
    }
    if main.get("terminationMessagePolicy") == "FallbackToLogsOnError" and fate.log:
        # the kubelet's fallback: the log's tail, at most 80 lines and 2048 bytes
        rt.last_terminated["terminated"]["message"] = "\n".join(fate.log[-80:])[-2048:] + "\n"
    rt.backoff_until = sim.now() + _backoff(rt.restarts + 1)
    sim.event(
        pod,
        "Warning",
        "BackOff",
        f"Back-off restarting failed container {main['name']} in pod "
        f"{pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})",
        "kubelet",
    )


def _image_pull_failure(sim: ClusterBehaviour, pod: dict, rt: PodRuntime, fate: Fate, since: float) -> None:
    image = pod["spec"]["containers"][0].get("image", "")
    backing_off = since >= PULL_DELAY + 5
    sim.event(pod, "Normal", "Pulling", f'Pulling image "{image}"', "kubelet", every=30)
    sim.event(pod, "Warning", "Failed", fate.message, "kubelet", every=30)
    sim.event(pod, "Warning", "Failed", "Error: ErrImagePull", "kubelet", every=30)
    if backing_off:
        sim.event(pod, "Normal", "BackOff", f'Back-off pulling image "{image}"', "kubelet", every=10)
        sim.event(pod, "Warning", "Failed", "Error: ImagePullBackOff", "kubelet", every=10)
        waiting = {
            "reason": "ImagePullBackOff",
            "message": f'Back-off pulling image "{image}": ErrImagePull: {fate.message.split(": ", 1)[-1]}',
        }
    else:
        waiting = {"reason": "ErrImagePull", "message": fate.message.split(": ", 1)[-1]}
    _write(sim, pod, rt, phase="Pending", main_state={"waiting": waiting})


def _run_init(sim: ClusterBehaviour, pod: dict, rt: PodRuntime, fate: Fate | None) -> None:
    now = sim.now()
    init = pod["spec"]["initContainers"][0]
    if rt.started is None or (rt.backoff_until is not None and now >= rt.backoff_until):
        if rt.backoff_until is not None:
            rt.init_restarts += 1
        rt.started, rt.started_iso, rt.backoff_until = now, sim.now_iso(), None
        sim.event(
            pod, "Normal", "Pulled", f'Container image "{init.get("image", "")}" already present on machine', "kubelet"
        )
        sim.event(pod, "Normal", "Created", f"Created container: {init['name']}", "kubelet")
        sim.event(pod, "Normal", "Started", f"Started container {init['name']}", "kubelet")
    started = rt.started
    failing = fate is not None and fate.mode is Mode.INIT_CRASH
    if not failing and now - started >= INIT_DURATION:
        rt.init_done, rt.started, rt.backoff_until = True, None, None
        rt.init_last_terminated = {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": rt.started_iso,
                "finishedAt": sim.now_iso(),
            }
        }
        run(sim, pod, rt, fate)
        return
    if failing and rt.backoff_until is None and now - started >= INIT_DURATION and fate is not None:
        rt.init_last_terminated = {
            "terminated": {
                "exitCode": fate.exit_code,
                "reason": fate.reason,
                "startedAt": rt.started_iso,
                "finishedAt": sim.now_iso(),
            }
        }
        rt.backoff_until = now + _backoff(rt.init_restarts + 1)
        sim.event(
            pod,
            "Warning",
            "BackOff",
            f"Back-off restarting failed container {init['name']} in pod "
            f"{pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})",
            "kubelet",
        )
    if rt.backoff_until is not None:
        init_state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": (
                    f"back-off {int(_backoff(rt.init_restarts + 1))}s restarting failed container={init['name']} "
                    f"pod={pod['metadata']['name']}_{pod['metadata']['namespace']}({pod['metadata']['uid']})"
                ),
            }
        }
    else:
        init_state = {"running": {"startedAt": rt.started_iso}}
    _write(sim, pod, rt, phase="Pending", main_state={"waiting": {"reason": "PodInitializing"}}, init_state=init_state)


def _run_probe(sim: ClusterBehaviour, pod: dict, rt: PodRuntime, smi_args: list[str]) -> None:
    main = pod["spec"]["containers"][0]
    if rt.finished is None and sim.now() - (rt.started or 0.0) >= PROBE_DURATION:  # run() started it
        rt.smi = sim.nvidia_smi(pod, smi_args)
        code = rt.smi.exit_code
        rt.finished = {
            "terminated": {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": rt.started_iso,
                "finishedAt": sim.now_iso(),
                "containerID": _container_id(pod["metadata"]["uid"], main["name"], 0),
            }
        }
        sim.release_gpus(pod)
    if rt.finished is None:
        _write(sim, pod, rt, phase="Running", main_state={"running": {"startedAt": rt.started_iso}}, ready=True)
        return
    phase = "Succeeded" if rt.finished["terminated"]["exitCode"] == 0 else "Failed"
    _write(sim, pod, rt, phase=phase, main_state=rt.finished, ready=False)


def _write(
    sim: ClusterBehaviour,
    pod: dict,
    rt: PodRuntime,
    *,
    phase: str,
    main_state: dict,
    ready: bool = False,
    init_state: dict | None = None,
) -> None:
    now = sim.now_iso()
    status = dict(pod.get("status") or {})
    main = pod["spec"]["containers"][0]
    conditions = list(status.get("conditions") or [])
    inits = pod["spec"].get("initContainers") or []
    initialized = not inits or rt.init_done
    terminal = phase in ("Succeeded", "Failed")
    conditions = set_condition(conditions, "PodReadyToStartContainers", "True", "", "", now)
    conditions = set_condition(
        conditions,
        "Initialized",
        "True" if initialized else "False",
        "PodCompleted" if terminal else ("" if initialized else "ContainersNotInitialized"),
        "" if initialized else f"containers with incomplete status: [{inits[0]['name']}]",
        now,
    )
    not_ready = f"containers with unready status: [{main['name']}]"
    ready_cond = (
        ("True", "", "")
        if ready
        else ("False", "PodCompleted" if terminal else "ContainersNotReady", "" if terminal else not_ready)
    )
    conditions = set_condition(conditions, "ContainersReady", *ready_cond, now)
    conditions = set_condition(conditions, "Ready", *ready_cond, now)
    conditions = set_condition(conditions, "PodScheduled", "True", "", "", now)
    conditions = [_tidy(c) for c in conditions]
    if not rt.ip:
        rt.ip = sim.pod_ip(pod)
    node_ip = sim.node_ip(pod["spec"]["nodeName"])
    status.update(
        {
            "phase": phase,
            "conditions": conditions,
            "hostIP": node_ip,
            "hostIPs": [{"ip": node_ip}],
            "podIP": rt.ip,
            "podIPs": [{"ip": rt.ip}],
            "startTime": status.get("startTime") or now,
            "qosClass": status.get("qosClass") or "BestEffort",
            "containerStatuses": [_container_status(pod, rt, main, main_state, ready, rt.restarts, rt.last_terminated)],
        }
    )
    if inits:
        state = (
            init_state
            if init_state is not None
            else (
                rt.init_last_terminated
                if rt.init_done and rt.init_last_terminated
                else {"waiting": {"reason": "PodInitializing"}}
            )
        )
        status["initContainerStatuses"] = [
            _container_status(
                pod,
                rt,
                inits[0],
                state,
                rt.init_done,
                rt.init_restarts,
                None if rt.init_done else rt.init_last_terminated,
            )
        ]
    sim.write_status(pod, status)


def _tidy(cond: dict) -> dict:
    """The apiserver omits empty reason/message."""
    return {k: v for k, v in cond.items() if v != "" or k in ("status", "type")}


def _container_status(
    pod: dict, rt: PodRuntime, container: dict, state: dict, ready: bool, restarts: int, last: dict | None
) -> dict:
    image = container.get("image", "")
    running = "running" in state or "terminated" in state
    status = {
        "name": container["name"],
        "image": image,
        "imageID": _image_id(image) if running else "",
        "ready": ready,
        "restartCount": restarts,
        "started": "running" in state,
        "state": state,
        "lastState": last or {},
    }
    if running:
        status["containerID"] = _container_id(pod["metadata"]["uid"], container["name"], restarts)
    return status
