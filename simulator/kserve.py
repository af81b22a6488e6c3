"""KServe's controller for InferenceServices (serving.kserve.io/v1beta1), with canary rollouts.

What it makes, per InferenceService NAME:
- Deployment `NAME-predictor` (the rolled-out revision) and, while a canary is live,
  `NAME-predictor-canary` (the latest created revision). Their pods carry
  `serving.kserve.io/inferenceservice=NAME` and `component=predictor`, the container
  `kserve-container` and the init container `storage-initializer` (args: the storageUri);
  the pod template's `serving.knative.dev/revision` label names the revision (NAME-predictor-0000N),
  as in KServe's Serverless mode.
- Service `NAME-predictor` selecting every predictor pod of both revisions, so a canary takes a share
  of the requests (here: a share by ready pods, not by `canaryTrafficPercent`; the status states the
  percentages KServe would route).
- status as KServe writes it: conditions (IngressReady, PredictorReady, Ready), url, address,
  modelStatus, and `components.predictor` with `latestCreatedRevision`, `latestReadyRevision`,
  `latestRolledoutRevision`, `previousRolledoutRevision` and `traffic`
  ([{revisionName, percent, latestRevision, tag}]).

Canary (`spec.predictor.canaryTrafficPercent`): a new `storageUri` with a percent below 100 starts a
canary revision beside the rolled-out one; 100 (or no percent) promotes it (the rolled-out revision
becomes the previous one); the `storageUri` set back to the rolled-out revision's removes the canary.
`canaryTrafficPercent: 0` keeps the canary revision but routes it nothing (status traffic 0 %).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator import controllers
from simulator.kube import owner_ref, set_condition
from simulator.store import copy_json

if TYPE_CHECKING:
    from simulator.cluster import ClusterBehaviour

ISVC_LABEL = "serving.kserve.io/inferenceservice"
REVISION_LABEL = "serving.knative.dev/revision"
CANARY_SUFFIX = "-canary"


def storage_uri(deploy: dict | None) -> str | None:
    """The storageUri a predictor Deployment loads: its storage-initializer's first argument."""
    if deploy is None:
        return None
    for init in deploy["spec"]["template"]["spec"].get("initContainers") or []:
        if init["name"] == "storage-initializer":
            return (init.get("args") or [None])[0]
    return None


def _revision_name(isvc: dict, number: int) -> str:
    return f"{isvc['metadata']['name']}-predictor-{number:05d}"


def _revision_number(name: str | None) -> int:
    try:
        return int((name or "").rsplit("-", 1)[-1])
    except ValueError:
        return 0


def _template(isvc: dict, uri: str, revision: str, app: str) -> dict:
    rendered = controllers.predictor_template(isvc)
    rendered["spec"]["initContainers"][0]["args"][0] = uri
    rendered["metadata"]["labels"].update({"app": app, REVISION_LABEL: revision})
    return rendered


def _deployment(sim: ClusterBehaviour, isvc: dict, name: str, template: dict, replicas: int) -> dict:
    meta = isvc["metadata"]
    return sim.store.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": {"app": name, ISVC_LABEL: meta["name"], "component": "predictor"},
                "ownerReferences": [owner_ref(isvc)],
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": template,
                "progressDeadlineSeconds": 600,
            },
        }
    )


def _set_template(sim: ClusterBehaviour, deploy: dict, template: dict, replicas: int) -> dict:
    current = deploy["spec"]["template"]
    keep = (current.get("metadata") or {}).get("annotations")  # a `kubectl rollout restart` stays
    if keep:
        template["metadata"]["annotations"] = dict(keep)
    if current == template and deploy["spec"].get("replicas") == replicas:
        return deploy
    deploy["spec"]["template"], deploy["spec"]["replicas"] = template, replicas
    return sim.store.update(deploy)


def reconcile_inferenceservices(sim: ClusterBehaviour) -> None:
    for isvc in sim.store.list("inferenceservices"):
        _reconcile(sim, isvc)


def _reconcile(sim: ClusterBehaviour, isvc: dict) -> None:
    meta = isvc["metadata"]
    ns, name = meta["namespace"], f"{meta['name']}-predictor"
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    uri = (predictor.get("model") or {}).get("storageUri", "")
    percent = predictor.get("canaryTrafficPercent")
    replicas = predictor.get("minReplicas", 1)
    status = copy_json(isvc.get("status") or {})
    comp = dict(((status.get("components") or {}).get("predictor")) or {})
    created = _revision_number(comp.get("latestCreatedRevision"))
    stable = sim.store.get("deployments", ns, name)
    canary = sim.store.get("deployments", ns, name + CANARY_SUFFIX)
    if stable is None:
        revision = _revision_name(isvc, created + 1)
        stable = _deployment(sim, isvc, name, _template(isvc, uri, revision, name), replicas)
        sim.store.create(
            controllers.model_service(
                isvc,
                name,
                {ISVC_LABEL: meta["name"], "component": "predictor"},
                8080,
                sim.health_url(ns, name),
                "kserve",
            )
        )
        comp.update(latestCreatedRevision=revision, latestRolledoutRevision=revision)
        created += 1
    stable_rev = stable["spec"]["template"]["metadata"]["labels"].get(REVISION_LABEL) or _revision_name(isvc, 1)
    stable_uri = storage_uri(stable)
    traffic: list[dict]
    if uri == stable_uri:
        if canary is not None:  # back to the rolled-out revision: the canary goes
            sim.store.delete_with_dependents("deployments", ns, canary["metadata"]["name"])
            sim.event(
                isvc,
                "Normal",
                "CanaryRemoved",
                f"canary revision {_rev_of(canary)} removed: storageUri is back to {uri}",
                "kserve-controller",
            )
            canary = None
        stable = _set_template(sim, stable, _template(isvc, uri, stable_rev, name), replicas)
        comp["latestRolledoutRevision"] = stable_rev
        traffic = [{"revisionName": stable_rev, "percent": 100, "latestRevision": True}]
    elif percent is None or percent >= 100:  # promote: the new storageUri becomes the rolled-out revision
        revision = (
            _rev_of(canary) if canary is not None and storage_uri(canary) == uri else _revision_name(isvc, created + 1)
        )
        created = max(created, _revision_number(revision))
        if canary is not None:
            sim.store.delete_with_dependents("deployments", ns, canary["metadata"]["name"])
            canary = None
        stable = _set_template(sim, stable, _template(isvc, uri, revision, name), replicas)
        comp.update(
            previousRolledoutRevision=stable_rev, latestRolledoutRevision=revision, latestCreatedRevision=revision
        )
        sim.event(isvc, "Normal", "RolledOut", f"revision {revision} ({uri}) rolled out to 100%", "kserve-controller")
        traffic = [{"revisionName": revision, "percent": 100, "latestRevision": True}]
    else:  # a canary at `percent`
        if canary is not None and storage_uri(canary) != uri:
            sim.store.delete_with_dependents("deployments", ns, canary["metadata"]["name"])
            canary = None
        if canary is None:
            revision = _revision_name(isvc, created + 1)
            created += 1
            canary = _deployment(
                sim, isvc, name + CANARY_SUFFIX, _template(isvc, uri, revision, name + CANARY_SUFFIX), 1
            )
            sim.event(
                isvc,
                "Normal",
                "CanaryCreated",
                f"canary revision {revision} ({uri}) at {percent}%",
                "kserve-controller",
            )
        revision = _rev_of(canary)
        comp.update(latestCreatedRevision=revision, latestRolledoutRevision=stable_rev)
        traffic = [
            {"revisionName": stable_rev, "percent": 100 - int(percent), "latestRevision": False, "tag": "prev"},
            {"revisionName": revision, "percent": int(percent), "latestRevision": True, "tag": "latest"},
        ]
    if comp.get("latestCreatedRevision") is None or _revision_number(comp["latestCreatedRevision"]) < created:
        comp["latestCreatedRevision"] = _revision_name(isvc, created)
    comp["traffic"] = traffic
    comp["url"] = f"http://{meta['name']}-predictor.{ns}.example.com"
    status["components"] = {"predictor": comp}
    status["observedGeneration"] = meta["generation"]
    _status(sim, isvc, stable, canary, status)


def _rev_of(deploy: dict) -> str:
    return deploy["spec"]["template"]["metadata"]["labels"].get(REVISION_LABEL, "")


def _ready(deploy: dict) -> bool:
    dstatus = deploy.get("status") or {}
    want = deploy["spec"].get("replicas", 1)
    return dstatus.get("readyReplicas", 0) >= max(1, want) and dstatus.get("updatedReplicas", 0) >= want


def _status(sim: ClusterBehaviour, isvc: dict, stable: dict, canary: dict | None, status: dict) -> None:
    meta = isvc["metadata"]
    ready = _ready(stable) and (canary is None or _ready(canary))
    now = sim.now_iso()
    comp = status["components"]["predictor"]
    if _ready(stable):
        comp["latestReadyRevision"] = _rev_of(canary) if canary is not None and _ready(canary) else _rev_of(stable)
    conditions = set_condition(list(status.get("conditions") or []), "IngressReady", "True", "Ready", "", now)
    # KServe's conditions are its Deployments' (Available, MinimumReplicasUnavailable ...): a container's
    # own error never reaches them; it is in modelStatus.lastFailureInfo.
    latest = canary if canary is not None else stable
    if ready:
        predictor = ("True", "Ready", "")
    else:
        available: dict = next(
            (c for c in (latest.get("status") or {}).get("conditions") or [] if c.get("type") == "Available"), {}
        )
        predictor = (
            "False",
            available.get("reason") or "MinimumReplicasUnavailable",
            available.get("message") or "Deployment does not have minimum availability.",
        )
    conditions = set_condition(conditions, "PredictorReady", *predictor, now)
    conditions = set_condition(conditions, "Ready", *predictor, now)
    pods = [
        p
        for p in sim.store.list("pods", meta["namespace"])
        if (p["metadata"].get("labels") or {}).get(ISVC_LABEL) == meta["name"]
        and (p["metadata"].get("labels") or {}).get(REVISION_LABEL) == _rev_of(latest)
        and not p["metadata"].get("deletionTimestamp")
    ]
    status.update(
        {
            "url": f"http://{meta['name']}.{meta['namespace']}.example.com",
            "address": {"url": f"http://{meta['name']}-predictor.{meta['namespace']}.svc.cluster.local"},
            "conditions": conditions,
            "modelStatus": _model_status(status.get("modelStatus") or {}, pods, ready),
        }
    )
    sim.write_status(isvc, status)


def _model_status(previous: dict, pods: list[dict], ready: bool) -> dict:
    """modelStatus as KServe's PropagateModelStatus writes it from the first pod of the latest revision:
    Loaded when Ready; Loading while the storage-initializer runs; FailedToLoad (ModelLoadFailed, the
    container's termination message and exit code) when the storage-initializer or the kserve-container
    errors or crash-loops; Pending otherwise. activeModelState stays what last loaded."""
    states = dict(previous.get("states") or {})
    model = {k: v for k, v in previous.items() if k in ("lastFailureInfo", "copies")}
    if ready:
        states.update(targetModelState="Loaded", activeModelState="Loaded")
        return {**model, "states": states, "transitionStatus": "UpToDate", "copies": {"totalCopies": len(pods)}}
    target, failure = ("Pending", None) if not pods else _pod_model_state(pods[0])
    states["targetModelState"] = target
    if failure is not None:
        model["lastFailureInfo"] = failure
    transition = {"FailedToLoad": "BlockedByFailedLoad"}.get(target, "InProgress")
    return {**model, "states": states, "transitionStatus": transition}


def _pod_model_state(pod: dict) -> tuple[str, dict | None]:
    status = pod.get("status") or {}
    for statuses, name in (
        (status.get("initContainerStatuses"), "storage-initializer"),
        (status.get("containerStatuses"), "kserve-container"),
    ):
        cs = next((c for c in statuses or [] if c.get("name") == name), None)
        if cs is None:
            continue
        state = cs.get("state") or {}
        if name == "storage-initializer" and "running" in state:
            return "Loading", None
        terminated = state.get("terminated")
        if terminated and terminated.get("reason") == "Error":
            return "FailedToLoad", _failure(terminated)
        if (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff":
            return "FailedToLoad", _failure(((cs.get("lastState") or {}).get("terminated")) or {})
    return "Pending", None


def _failure(terminated: dict) -> dict:
    info = {"reason": "ModelLoadFailed", "message": terminated.get("message", "")}
    if terminated.get("exitCode") is not None:
        info["exitCode"] = terminated["exitCode"]
    return info
