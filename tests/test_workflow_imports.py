"""Playbooks call activities one way (workflows/incident/calls.py), and no workflow module pulls in the world.

A workflow module runs in the sandbox, re-imported for replay: it may import only the pure pydantic
models of activities/ (`*_models.py`, `models.py`, the nvidia-smi parser), never the activity classes,
the `kubernetes` client or httpx. And every declaration in `workflows.incident.calls.Cluster` names an
activity the worker registers, with its request model and result type, and a write exactly when
coordination claims it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from activities.http import HttpProbes, ModelWarmUp
from activities.kserve import KServeActivities
from activities.kube.claims import KubeClaims
from activities.kube.daemonsets import KubeDaemonSets
from activities.kube.deployments import KubeDeployments
from activities.kube.gpu_probes import KubeGpuProbes
from activities.kube.gpus import KubeGpus
from activities.kube.llmdeployments import KubeLLMDeployments
from activities.kube.nodes import KubeNodes
from activities.kube.pods import KubePods
from activities.kube.services import KubeServices
from activities.prometheus import PrometheusQueries
from activities.temporal_coordinator import CoordinationActivities
from workflows.incident.calls import Cluster, Read, Write
from workflows.incident.claims import _WRITES

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in (ROOT / "workflows").rglob("*.py")
    if p.stem != "__init__"
)
# The activity modules (everything under activities/ but its pure models): what workflows may not import.
PURE = {"__init__", "models", "nvidia_smi"}
FORBIDDEN = tuple(
    sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "activities").rglob("*.py")
        if p.stem not in PURE and not p.stem.endswith("_models")
    )
)
FORBIDDEN_PACKAGES = ("kubernetes", "httpx")
FAMILIES = (
    KubePods,
    KubeDeployments,
    KubeDaemonSets,
    KubeNodes,
    KubeGpus,
    KubeGpuProbes,
    KubeLLMDeployments,
    KubeClaims,
    KubeServices,
    KServeActivities,
    HttpProbes,
    ModelWarmUp,
    PrometheusQueries,
    CoordinationActivities,
)

# Run in a fresh interpreter: this test process has imported the activities already.
_PROBE = """
import importlib, json, sys
forbidden, packages, modules = json.loads(sys.argv[1])
found = {}
for name in modules:
    importlib.import_module(name)
    bad = sorted(m for m in sys.modules if m in forbidden or m.split(".")[0] in packages)
    if bad:
        found[name] = bad
        for m in list(sys.modules):  # so the next module is judged on its own imports
            if m.startswith(("workflows", "activities")) or m.split(".")[0] in packages:
                del sys.modules[m]
print(json.dumps(found))
"""


def test_there_are_workflow_modules():
    assert {
        "workflows.incident.calls",
        "workflows.playbooks.service_outage.playbook",
        "workflows.playbooks.catalog",
    } <= set(WORKFLOW_MODULES)


def test_no_workflow_module_imports_activity_classes_kubernetes_or_httpx():
    arg = json.dumps([FORBIDDEN, FORBIDDEN_PACKAGES, WORKFLOW_MODULES])
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, arg], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found == {}, f"workflow modules importing activity classes, kubernetes or httpx: {found}"


def test_the_probe_notices_a_forbidden_import():
    """The check itself fails when a module does pull in the kubernetes client."""
    arg = json.dumps([FORBIDDEN, FORBIDDEN_PACKAGES, ["workflows.incident.models", "activities.kube.pods"]])
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, arg], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    found = json.loads(done.stdout)
    assert "workflows.incident.models" not in found
    assert "activities.kube.pods" in found and "kubernetes" in found["activities.kube.pods"]
    assert {"activities.kube.pods", "activities.http", "activities.slack"} <= set(FORBIDDEN)
    assert not any(m.endswith("_models") for m in FORBIDDEN)


def _registered() -> dict[str, typing.Callable]:
    """Every activity the worker serves: ours and those installed playbooks bring (their classes)."""
    from kubernetes import client as k8s

    from worker.worker import playbook_activities
    from workflows.incident.playbook import WorkerClients

    brought = tuple(
        type(f) for f in playbook_activities(WorkerClients(kube=k8s.ApiClient(), http=None, prometheus_url=None))
    )
    out = {}
    for family in FAMILIES + brought:
        for attr in vars(family).values():
            defn = getattr(attr, "__temporal_activity_definition", None)
            if defn is not None:
                out[defn.name] = attr
    return out


REGISTERED = _registered()
DECLARED = Cluster.declared()


def test_every_activity_is_declared_once_under_its_registered_name():
    names = [c.name for c in DECLARED]
    assert len(names) == len(set(names))
    assert set(names) <= set(REGISTERED), f"declared but not registered: {set(names) - set(REGISTERED)}"


@pytest.mark.parametrize("call", DECLARED, ids=[c.name for c in DECLARED])
def test_declaration_matches_the_activity(call):
    hints = typing.get_type_hints(REGISTERED[call.name])
    params = [v for k, v in hints.items() if k != "return"]
    assert params == [call.input], f"{call.name} takes {params}, declared {call.input}"
    assert hints["return"] == call.output, f"{call.name} returns {hints['return']}, declared {call.output}"


@pytest.mark.parametrize("call", DECLARED, ids=[c.name for c in DECLARED])
def test_writes_are_claimed_and_reads_are_not(call):
    """Coordination claims every write that changes an object's spec; reads never claim."""
    if isinstance(call, Read):
        assert call.name not in _WRITES
    else:
        assert isinstance(call, Write)
        # A round of evictions belongs to the drain its cordon already claimed (the node's hold);
        # a model warm-up is a POST to the model server: it changes no object.
        assert call.name in _WRITES or call.name in ("evict_node_pods", "warm_up_model")


def test_timeouts_are_the_api_call_or_the_wait_bound():
    from datetime import timedelta

    from activities.kube.deployments_models import RolloutWait
    from activities.kube.pods_models import PodQuery

    api = timedelta(seconds=60)
    assert Cluster.list_pods.timeouts(PodQuery(namespace="llm"), api) == (api, None)
    wait = RolloutWait(namespace="llm-d-system", name="llm-d-operator", timeout_seconds=180, poll_seconds=5)
    assert Cluster.wait_for_rollout.timeouts(wait, api) == (timedelta(seconds=240), api)
    assert Cluster.wait_for_rollout.summary(wait) == (
        "kubectl rollout status deployment/llm-d-operator -n llm-d-system --timeout=180s"
    )
