"""The controllers of the simulated cluster: deployment, replicaset, daemonset, the llm-d
operator (LLMDeployment), KServe (InferenceService) and the volume provisioner.

Each `reconcile_*` reads the store, writes only what changed, and records the events a real
controller records, so `kubectl rollout status`, `describe` and `get events` read naturally.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from simulator import kube
from simulator.kube import GPU, owned_by, owner_ref, set_condition
from simulator.store import copy_json as kube_copy

if TYPE_CHECKING:
    from simulator.cluster import ClusterBehaviour

REVISION = "deployment.kubernetes.io/revision"
HEALTH_URL = "llm-d.io/health-url"
PART_OF = "app.kubernetes.io/part-of"
MODEL_VERSION = "llm-d.io/model-version"  # pod template label: the model version a pod serves
STORAGE_CLASSES = ("standard", "gp3")  # what the cluster's provisioner can make
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.6.3"
STORAGE_INITIALIZER_IMAGE = "kserve/storage-initializer:v0.13.0"
_REVISION_HISTORY = 10


# ---- pods from templates ----------------------------------------------------------------


def pod_from_template(
    sim: ClusterBehaviour, owner: dict, template: dict, name: str, extra_labels: dict[str, str]
) -> dict:
    meta = template.get("metadata") or {}
    spec = kube_copy(template.get("spec") or {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": owner["metadata"]["namespace"],
            "labels": {**(meta.get("labels") or {}), **extra_labels},
            "ownerReferences": [owner_ref(owner)],
        },
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": qos_class(spec)},
    }
    if meta.get("annotations"):
        pod["metadata"]["annotations"] = dict(meta["annotations"])
    return sim.store.create(pod)


def qos_class(spec: dict) -> str:
    containers = spec.get("containers") or []
    requests = [(c.get("resources") or {}).get("requests") or {} for c in containers]
    limits = [(c.get("resources") or {}).get("limits") or {} for c in containers]
    if not any(requests) and not any(limits):
        return "BestEffort"
    guaranteed = all(
        all(lim.get(r) is not None and (req.get(r, lim.get(r)) == lim.get(r)) for r in ("cpu", "memory"))
        for req, lim in zip(requests, limits)
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _pod_suffix(sim: ClusterBehaviour) -> str:
    return "".join(sim.rng.choice(kube.SAFE_ALPHABET) for _ in range(5))


def _live_pods(sim: ClusterBehaviour, owner: dict, pods: list[dict]) -> list[dict]:
    return [p for p in pods if owned_by(p, owner) and not p["metadata"].get("deletionTimestamp")]


def delete_pod(sim: ClusterBehaviour, pod: dict, reason: str = "Killing") -> None:
    container = (pod["spec"].get("containers") or [{}])[0].get("name", "")
    sim.store.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
    sim.forget_pod(pod)
    if pod["spec"].get("nodeName") and reason:
        sim.event(pod, "Normal", reason, f"Stopping container {container}", "kubelet")


def _deletion_order(sim: ClusterBehaviour, pod: dict) -> tuple:
    """Which pods a scale-down removes first: unscheduled, then not ready, then newest."""
    return (bool(pod["spec"].get("nodeName")), kube.is_ready(pod), -sim.pod_age_rank(pod))


# ---- ReplicaSets ------------------------------------------------------------------------


def reconcile_replicasets(sim: ClusterBehaviour, pods: list[dict]) -> None:
    for rs in sim.store.list("replicasets"):
        owned = _live_pods(sim, rs, pods)
        want = rs["spec"].get("replicas", 1)
        if len(owned) < want:
            for _ in range(want - len(owned)):
                name = f"{rs['metadata']['name']}-{_pod_suffix(sim)}"
                extra = {"pod-template-hash": rs["metadata"]["labels"]["pod-template-hash"]}
                pods.append(pod_from_template(sim, rs, rs["spec"]["template"], name, extra))
                sim.event(rs, "Normal", "SuccessfulCreate", f"Created pod: {name}", "replicaset-controller")
        elif len(owned) > want:
            for pod in sorted(owned, key=lambda p: _deletion_order(sim, p))[: len(owned) - want]:
                delete_pod(sim, pod)
                pods.remove(pod)
                sim.event(
                    rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}", "replicaset-controller"
                )
        owned = _live_pods(sim, rs, pods)
        ready = sum(1 for p in owned if kube.is_ready(p))
        status = {
            "replicas": len(owned),
            "fullyLabeledReplicas": len(owned),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"]["generation"],
        }
        sim.write_status(rs, status)


# ---- Deployments ------------------------------------------------------------------------


def _rolling_limits(deploy: dict, desired: int) -> tuple[int, int]:
    strategy = deploy["spec"].get("strategy") or {}
    rolling = strategy.get("rollingUpdate") or {}

    def resolve(value: object, default: str, round_up: bool) -> int:
        value = default if value is None else value
        if isinstance(value, str) and value.endswith("%"):
            exact = desired * float(value[:-1]) / 100
            return math.ceil(exact) if round_up else math.floor(exact)
        return int(value)  # type: ignore[call-overload]  # an int, or a string of digits

    if strategy.get("type") == "Recreate":
        return 0, desired
    surge = resolve(rolling.get("maxSurge"), "25%", True)
    unavailable = resolve(rolling.get("maxUnavailable"), "25%", False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _new_replicaset(sim: ClusterBehaviour, deploy: dict, template_hash: str, revision: int) -> dict:
    template = kube_copy(deploy["spec"]["template"])
    template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = template_hash
    selector = kube_copy(deploy["spec"]["selector"])
    selector.setdefault("matchLabels", {})["pod-template-hash"] = template_hash
    meta = deploy["metadata"]
    return sim.store.create(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{template_hash}",
                "namespace": meta["namespace"],
                "labels": template["metadata"]["labels"],
                "annotations": {
                    REVISION: str(revision),
                    "deployment.kubernetes.io/desired-replicas": str(deploy["spec"].get("replicas", 1)),
                },
                "ownerReferences": [owner_ref(deploy)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
            "status": {"replicas": 0},
        }
    )


def _revision(rs: dict) -> int:
    return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))


def reconcile_deployments(sim: ClusterBehaviour, pods: list[dict]) -> None:
    all_rs = sim.store.list("replicasets")
    for deploy in sim.store.list("deployments"):
        _reconcile_deployment(sim, deploy, [rs for rs in all_rs if owned_by(rs, deploy)], pods)


def _set_replicas(sim: ClusterBehaviour, deploy: dict, rs: dict, replicas: int) -> None:
    old = rs["spec"].get("replicas", 0)
    if old == replicas:
        return
    rs["spec"]["replicas"] = replicas
    rs["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/desired-replicas"] = str(
        deploy["spec"].get("replicas", 1)
    )
    rs.update(sim.store.update(rs))
    name = rs["metadata"]["name"]
    if replicas > old:
        message = f"Scaled up replica set {name} to {replicas}"
    else:
        message = f"Scaled down replica set {name} to {replicas} from {old}"
    sim.event(deploy, "Normal", "ScalingReplicaSet", message, "deployment-controller")


def _reconcile_deployment(sim: ClusterBehaviour, deploy: dict, owned: list[dict], pods: list[dict]) -> None:
    desired = deploy["spec"].get("replicas", 1)
    paused = bool(deploy["spec"].get("paused"))
    template_hash = kube.template_hash(deploy["spec"]["template"])
    new = next((rs for rs in owned if rs["metadata"]["labels"].get("pod-template-hash") == template_hash), None)
    top_revision = max((_revision(rs) for rs in owned), default=0)
    if new is None and not paused:
        new = _new_replicaset(sim, deploy, template_hash, top_revision + 1)
        owned.append(new)
        sim.mark_progress(deploy)
    elif new is not None and _revision(new) < top_revision:  # a rollback to an older template
        new["metadata"]["annotations"][REVISION] = str(top_revision + 1)
        new.update(sim.store.update(new))
        sim.mark_progress(deploy)
    old = [rs for rs in owned if rs is not new]
    surge, max_unavailable = _rolling_limits(deploy, desired)

    available = {rs["metadata"]["uid"]: _available(sim, rs, pods) for rs in owned}
    if paused:
        # The deployment controller holds a paused Deployment's template (no new ReplicaSet until
        # `kubectl rollout resume`) and only follows spec.replicas with its one active ReplicaSet.
        active = [rs for rs in owned if rs["spec"].get("replicas", 0) > 0]
        if len(active) == 1:
            _set_replicas(sim, deploy, active[0], desired)
    else:
        assert new is not None
        _roll(sim, deploy, new, old, available, desired, surge, max_unavailable)
    _prune_history(sim, deploy, old)
    _deployment_status(sim, deploy, new, owned, pods, max_unavailable)


def _roll(
    sim: ClusterBehaviour,
    deploy: dict,
    new: dict,
    old: list[dict],
    available: dict[str, int],
    desired: int,
    surge: int,
    max_unavailable: int,
) -> None:
    """RollingUpdate: grow the new ReplicaSet within maxSurge, shrink the old ones within
    maxUnavailable; with no old replicas left, the new one simply follows spec.replicas."""
    if all(rs["spec"].get("replicas", 0) == 0 for rs in old):
        _set_replicas(sim, deploy, new, desired)
        return
    current = new["spec"].get("replicas", 0)
    if current < desired:
        room = desired + surge - current - sum(rs["spec"].get("replicas", 0) for rs in old)
        if room > 0:
            _set_replicas(sim, deploy, new, min(desired, current + room))
    elif current > desired:
        _set_replicas(sim, deploy, new, desired)
    _scale_down_old(sim, deploy, new, old, available, desired - max_unavailable)


def _available(sim: ClusterBehaviour, rs: dict, pods: list[dict]) -> int:
    return sum(1 for p in _live_pods(sim, rs, pods) if kube.is_ready(p))


def _scale_down_old(
    sim: ClusterBehaviour, deploy: dict, new: dict, old: list[dict], available: dict[str, int], min_available: int
) -> None:
    """The deployment controller's order: unhealthy old replicas first, then healthy ones while
    enough stay available."""
    all_pods = new["spec"].get("replicas", 0) + sum(rs["spec"].get("replicas", 0) for rs in old)
    new_unavailable = new["spec"].get("replicas", 0) - available[new["metadata"]["uid"]]
    budget = all_pods - min_available - new_unavailable
    for rs in sorted(old, key=_revision):
        if budget <= 0:
            break
        replicas = rs["spec"].get("replicas", 0)
        unhealthy = replicas - available[rs["metadata"]["uid"]]
        cut = min(unhealthy, budget)
        if cut > 0:
            _set_replicas(sim, deploy, rs, replicas - cut)
            budget -= cut
    total_available = sum(available.values())
    budget = total_available - min_available
    for rs in sorted(old, key=_revision):
        if budget <= 0:
            break
        replicas = rs["spec"].get("replicas", 0)
        cut = min(replicas, budget, available[rs["metadata"]["uid"]])
        if cut > 0:
            _set_replicas(sim, deploy, rs, replicas - cut)
            budget -= cut


def _prune_history(sim: ClusterBehaviour, deploy: dict, old: list[dict]) -> None:
    limit = deploy["spec"].get("revisionHistoryLimit", _REVISION_HISTORY)
    idle = sorted(
        (rs for rs in old if rs["spec"].get("replicas", 0) == 0 and rs["status"].get("replicas", 0) == 0), key=_revision
    )
    for rs in idle[: max(0, len(idle) - limit)]:
        sim.store.delete("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"])


def _deployment_status(
    sim: ClusterBehaviour, deploy: dict, new: dict | None, owned: list[dict], pods: list[dict], max_unavailable: int
) -> None:
    """`new` is None while a paused Deployment holds a template no ReplicaSet has yet."""
    desired = deploy["spec"].get("replicas", 1)
    live = {rs["metadata"]["uid"]: _live_pods(sim, rs, pods) for rs in owned}
    replicas = sum(len(p) for p in live.values())
    updated = len(live[new["metadata"]["uid"]]) if new else 0
    ready = sum(1 for group in live.values() for p in group if kube.is_ready(p))
    status = dict(deploy.get("status") or {})
    now = sim.now_iso()
    conditions = list(status.get("conditions") or [])
    if ready >= desired - max_unavailable:
        conditions = set_condition(
            conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
            update_time=True,
        )
    else:
        conditions = set_condition(
            conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
            update_time=True,
        )
    rs_name = new["metadata"]["name"] if new else ""
    new_ready = sum(1 for p in live[new["metadata"]["uid"]] if kube.is_ready(p)) if new else 0
    complete = updated == desired and replicas == desired and new_ready == desired
    progress = (replicas, updated, ready)
    progressing = next((c for c in conditions if c.get("type") == "Progressing"), {})
    if deploy["spec"].get("paused"):
        # A paused Deployment's progress is not judged (no deadline): the controller says it is paused.
        conditions = set_condition(
            conditions, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", now, update_time=True
        )
        sim.mark_progress(deploy)
    elif progressing.get("reason") == "DeploymentPaused":
        conditions = set_condition(
            conditions, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", now, update_time=True
        )
    elif complete:
        conditions = set_condition(
            conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs_name}" has successfully progressed.',
            now,
            update_time=True,
        )
    elif sim.progress_stalled(deploy, progress):
        conditions = set_condition(
            conditions,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            f'ReplicaSet "{rs_name}" has timed out progressing.',
            now,
            update_time=True,
        )
    else:
        conditions = set_condition(
            conditions,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            f'ReplicaSet "{rs_name}" is progressing.',
            now,
            update_time=True,
        )
    status.update(
        {
            "observedGeneration": deploy["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, desired - ready),
            "conditions": conditions,
        }
    )
    for key in ("readyReplicas", "availableReplicas", "unavailableReplicas", "updatedReplicas"):
        if status[key] == 0:
            del status[key]  # the apiserver omits zero counts
    annotations = deploy["metadata"].get("annotations") or {}
    if new is not None and annotations.get(REVISION) != new["metadata"]["annotations"][REVISION]:
        deploy["metadata"].setdefault("annotations", {})[REVISION] = new["metadata"]["annotations"][REVISION]
        deploy.update(sim.store.update(deploy))
    sim.write_status(deploy, status)


# ---- DaemonSets -------------------------------------------------------------------------


def _ds_nodes(ds: dict, nodes: list[dict]) -> list[dict]:
    selector = ds["spec"]["template"]["spec"].get("nodeSelector") or {}
    return [n for n in nodes if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())]


def _ds_pod_template(ds: dict, node: str) -> dict:
    template = kube_copy(ds["spec"]["template"])
    spec = template["spec"]
    # the daemonset controller pins each pod to its node through affinity and lets the
    # scheduler bind it; its pods tolerate cordoned and unready nodes
    spec["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
            }
        }
    }
    spec["tolerations"] = list(spec.get("tolerations") or []) + [
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    ]
    return template


def ds_pod_node(pod: dict) -> str | None:
    if pod["spec"].get("nodeName"):
        return pod["spec"]["nodeName"]
    try:
        terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        return terms[0]["matchFields"][0]["values"][0]
    except (KeyError, IndexError, TypeError):
        return None


def reconcile_daemonsets(sim: ClusterBehaviour, pods: list[dict], nodes: list[dict]) -> None:
    for ds in sim.store.list("daemonsets"):
        revision = kube.template_hash(ds["spec"]["template"])
        targets = _ds_nodes(ds, nodes)
        owned = _live_pods(sim, ds, pods)
        by_node: dict[str, list[dict]] = {}
        for pod in owned:
            by_node.setdefault(ds_pod_node(pod) or "", []).append(pod)
        target_names = {n["metadata"]["name"] for n in targets}
        for node, group in by_node.items():
            if node not in target_names:
                for pod in group:
                    delete_pod(sim, pod)
                    pods.remove(pod)
        _roll_daemonset(sim, ds, revision, by_node, target_names, pods)
        for node in sorted(target_names):
            if not [p for p in by_node.get(node, []) if p in pods]:
                name = f"{ds['metadata']['name']}-{_pod_suffix(sim)}"
                extra = {
                    "controller-revision-hash": revision,
                    "pod-template-generation": str(ds["metadata"]["generation"]),
                }
                pods.append(pod_from_template(sim, ds, _ds_pod_template(ds, node), name, extra))
                sim.event(ds, "Normal", "SuccessfulCreate", f"Created pod: {name}", "daemonset-controller")
        _daemonset_status(sim, ds, revision, target_names, pods)


def _roll_daemonset(
    sim: ClusterBehaviour, ds: dict, revision: str, by_node: dict[str, list[dict]], targets: set[str], pods: list[dict]
) -> None:
    """RollingUpdate: old pods that are not available go at once; available ones one at a time
    (maxUnavailable 1) while the rest of the daemonset is available."""
    rolling = (ds["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {}
    configured = rolling.get("maxUnavailable", 1)
    max_unavailable = 1 if str(configured).endswith("%") else int(configured)
    unavailable = sum(1 for n in targets if not any(kube.is_ready(p) for p in by_node.get(n, []) if p in pods))
    for node in sorted(targets):
        for pod in by_node.get(node, []):
            if pod not in pods or pod["metadata"]["labels"].get("controller-revision-hash") == revision:
                continue
            if kube.is_ready(pod):
                if unavailable >= max_unavailable:
                    continue
                unavailable += 1
            delete_pod(sim, pod)
            pods.remove(pod)
            sim.event(
                ds, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}", "daemonset-controller"
            )


def _daemonset_status(sim: ClusterBehaviour, ds: dict, revision: str, targets: set[str], pods: list[dict]) -> None:
    owned = _live_pods(sim, ds, pods)
    on_target = [p for p in owned if ds_pod_node(p) in targets]
    scheduled = {ds_pod_node(p) for p in on_target if p["spec"].get("nodeName")}
    ready = {ds_pod_node(p) for p in on_target if kube.is_ready(p)}
    updated = {
        ds_pod_node(p)
        for p in on_target
        if p["spec"].get("nodeName") and p["metadata"]["labels"].get("controller-revision-hash") == revision
    }
    sim.write_status(
        ds,
        {
            "currentNumberScheduled": len(scheduled),
            "desiredNumberScheduled": len(targets),
            "numberMisscheduled": 0,
            "numberReady": len(ready),
            "updatedNumberScheduled": len(updated),
            "numberAvailable": len(ready),
            "numberUnavailable": len(targets) - len(ready),
            "observedGeneration": ds["metadata"]["generation"],
        },
    )


# ---- the llm-d operator: LLMDeployment -> Deployment + Service ------------------------


def model_server_template(llmd: dict) -> dict:
    """The pod template the operator renders from an LLMDeployment's spec."""
    meta, spec = llmd["metadata"], llmd["spec"]
    serving = spec.get("serving") or {}
    resources = kube_copy(spec.get("resources") or {})
    model, version = model_source(spec["model"])
    args = [
        "--model",
        model,
        *(["--revision", version] if version else []),
        "--port",
        "8000",
        "--max-num-seqs",
        str(serving.get("maxConcurrency", 64)),
    ]
    gpus = (resources.get("limits") or {}).get(GPU)
    if gpus and int(kube.parse_quantity(gpus)) > 1:
        args += ["--tensor-parallel-size", str(int(kube.parse_quantity(gpus)))]
    container = {
        "name": "vllm",
        "image": spec.get("image") or DEFAULT_VLLM_IMAGE,
        "args": args,
        "env": [
            {"name": "MODEL_ID", "value": model},
            {"name": "BATCH_SIZE", "value": str(serving.get("batchSize", 32))},
            {"name": "MAX_CONCURRENCY", "value": str(serving.get("maxConcurrency", 64))},
        ],
        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
        "resources": resources,
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": 8000, "scheme": "HTTP"},
            "periodSeconds": 10,
            "timeoutSeconds": 1,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
        "imagePullPolicy": "IfNotPresent",
    }
    pod_spec: dict = {"containers": [container], "nodeSelector": {"nvidia.com/gpu.present": "true"}}
    claim = (spec.get("storage") or {}).get("persistentVolumeClaim")
    if claim:
        container["volumeMounts"] = [{"name": "model-cache", "mountPath": "/models"}]
        pod_spec["volumes"] = [{"name": "model-cache", "persistentVolumeClaim": {"claimName": claim}}]
    labels = {"app": meta["name"], "llm-d.io/llmdeployment": meta["name"], PART_OF: "llm-d"}
    if version:
        labels[MODEL_VERSION] = version
    return {"metadata": {"labels": labels}, "spec": pod_spec}


def model_source(model: str | dict) -> tuple[str, str | None]:
    """(model, version) of an LLMDeployment's spec.model: today's string, or seed 002's object
    `{modelUri: "hf://org/name", version: "v1.2.0", ...}` (the URI's scheme dropped, as vLLM takes it)."""
    if isinstance(model, dict):
        uri = str(model.get("modelUri") or "")
        version = model.get("version")
        return uri.partition("://")[2] or uri, str(version) if version else None
    return model, None


def model_service(owner: dict, name: str, selector: dict, port: int, health_url: str, part_of: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": owner["metadata"]["namespace"],
            "labels": {"app": name, PART_OF: part_of},
            "annotations": {HEALTH_URL: health_url},
            "ownerReferences": [owner_ref(owner)],
        },
        "spec": {
            "selector": selector,
            "type": "ClusterIP",
            "ports": [{"name": "http", "port": 80, "targetPort": port, "protocol": "TCP"}],
        },
    }


def reconcile_llmdeployments(sim: ClusterBehaviour, operator_healthy: bool) -> None:
    """The operator: only while its own pod is Ready does anything here move."""
    if not operator_healthy:
        return
    for llmd in sim.store.list("llmdeployments"):
        meta, spec = llmd["metadata"], llmd.get("spec") or {}
        if not spec.get("model"):
            continue
        ns, name = meta["namespace"], meta["name"]
        deploy = sim.store.get("deployments", ns, name)
        status = dict(llmd.get("status") or {})
        if deploy is None:
            deploy = sim.store.create(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "labels": {"app": name, PART_OF: "llm-d"},
                        "ownerReferences": [owner_ref(llmd)],
                    },
                    "spec": {
                        "replicas": spec.get("replicas", 1),
                        "selector": {"matchLabels": {"app": name}},
                        "template": model_server_template(llmd),
                        "progressDeadlineSeconds": 600,
                    },
                }
            )
            sim.store.create(model_service(llmd, name, {"app": name}, 8000, sim.health_url(ns, name), "llm-d"))
        elif status.get("observedGeneration") != meta["generation"]:
            _apply_llmd_spec(sim, llmd, deploy)
        status["observedGeneration"] = meta["generation"]
        _llmd_status(sim, llmd, deploy, status)


def _apply_llmd_spec(sim: ClusterBehaviour, llmd: dict, deploy: dict) -> None:
    """Roll the operator-owned fields into the Deployment, keeping everything else (a
    `kubectl rollout restart` annotation, say) as server-side apply would."""
    rendered = model_server_template(llmd)
    template = deploy["spec"]["template"]
    template["spec"]["containers"] = rendered["spec"]["containers"]
    labels = template["metadata"].setdefault("labels", {})
    labels.pop(MODEL_VERSION, None)
    if MODEL_VERSION in rendered["metadata"]["labels"]:
        labels[MODEL_VERSION] = rendered["metadata"]["labels"][MODEL_VERSION]
    if "volumes" in rendered["spec"]:
        template["spec"]["volumes"] = rendered["spec"]["volumes"]
    else:
        template["spec"].pop("volumes", None)
    deploy["spec"]["replicas"] = llmd["spec"].get("replicas", 1)
    sim.store.update(deploy)


def _llmd_status(sim: ClusterBehaviour, llmd: dict, deploy: dict, status: dict) -> None:
    desired = llmd["spec"].get("replicas", 1)
    dstatus = deploy.get("status") or {}
    ready = dstatus.get("readyReplicas", 0)
    up_to_date = (
        dstatus.get("observedGeneration") == deploy["metadata"]["generation"]
        and dstatus.get("updatedReplicas", 0) == desired
        and dstatus.get("replicas", 0) == desired
    )
    problem = sim.workload_problem(deploy)
    now = sim.now_iso()
    conditions = list(status.get("conditions") or [])
    if ready >= desired and up_to_date:
        phase, cond = "Ready", ("True", "ReplicasReady", f"{ready}/{desired} replicas ready")
    elif problem:
        phase, cond = ("Failed" if problem[2] else "Pending"), ("False", problem[0], problem[1])
    else:
        phase, cond = "Pending", ("False", "ReplicasNotReady", f"{ready}/{desired} replicas ready")
    conditions = set_condition(conditions, "Ready", *cond, now)
    meta = llmd["metadata"]
    status.update(
        {
            "phase": phase,
            "replicas": desired,
            "readyReplicas": ready,
            "url": f"http://{meta['name']}.{meta['namespace']}.svc.cluster.local",
            "conditions": conditions,
        }
    )
    sim.write_status(llmd, status)


# ---- KServe: InferenceService -> <name>-predictor Deployment + Service ----------------


def predictor_template(isvc: dict) -> dict:
    meta = isvc["metadata"]
    predictor = isvc["spec"].get("predictor") or {}
    model = predictor.get("model") or {}
    uri = model.get("storageUri", "")
    return {
        "metadata": {
            "labels": {
                "app": f"{meta['name']}-predictor",
                "component": "predictor",
                "serving.kserve.io/inferenceservice": meta["name"],
                PART_OF: "kserve",
            }
        },
        "spec": {
            "initContainers": [
                {
                    "name": "storage-initializer",
                    "image": STORAGE_INITIALIZER_IMAGE,
                    "args": [uri, "/mnt/models"],
                    "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models"}],
                }
            ],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": DEFAULT_VLLM_IMAGE,
                    "args": ["--model", "/mnt/models", "--port", "8080", "--served-model-name", meta["name"]],
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "resources": kube_copy(model.get("resources") or {}),
                    "volumeMounts": [
                        {"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True}
                    ],
                    # KServe's default: the container's last log lines become its termination message
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}},
                }
            ],
            "volumes": [{"name": "kserve-provision-location", "emptyDir": {}}],
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
        },
    }


def reconcile_inferenceservices(sim: ClusterBehaviour) -> None:
    """KServe's controller, canary rollouts included: simulator/kserve.py."""
    from simulator import kserve  # it renders pods with predictor_template above

    kserve.reconcile_inferenceservices(sim)


# ---- the volume provisioner -------------------------------------------------------------


def reconcile_pvcs(sim: ClusterBehaviour) -> None:
    for pvc in sim.store.list("persistentvolumeclaims"):
        if (pvc.get("status") or {}).get("phase") == "Bound":
            continue
        storage_class = pvc["spec"].get("storageClassName") or "standard"
        if storage_class not in STORAGE_CLASSES:
            sim.event(
                pvc,
                "Warning",
                "ProvisioningFailed",
                f'storageclass.storage.k8s.io "{storage_class}" not found',
                "persistentvolume-controller",
                once=True,
            )
            sim.write_status(pvc, {"phase": "Pending"})
            continue
        pvc["spec"]["volumeName"] = f"pvc-{pvc['metadata']['uid']}"
        pvc = sim.store.update(pvc)
        size = ((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage", "10Gi")
        sim.write_status(
            pvc,
            {
                "phase": "Bound",
                "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
                "capacity": {"storage": size},
            },
        )
        sim.event(
            pvc,
            "Normal",
            "ProvisioningSucceeded",
            f"Successfully provisioned volume pvc-{pvc['metadata']['uid']} using {storage_class}",
            "persistentvolume-controller",
        )
