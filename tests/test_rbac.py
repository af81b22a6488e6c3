"""Least privilege, proven by running: deploy/'s RBAC applied to the simulated cluster,
which enforces RBAC for ServiceAccount tokens (simulator/rbac.py), and the playbooks run with the
worker logged in as the shipped ServiceAccount (`kubectl create token`).

- `kubectl auth can-i [--list]` as the worker answers from the shipped roles;
- every playbook does its whole job under the role, and every verb the role grants was used;
- for EACH rule of the shipped roles, removing it makes the playbook that needs it fail with a
  403 that the incident reports ("Permission denied while trying to ...: ... is forbidden").

Opt-in: only this module runs playbooks under RBAC (the `worker_as_service_account` fixture); the
other integration tests keep the simulator's admin kubeconfig.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from kubernetes import client as k8s
from kubernetes import config as kconfig
from kubernetes.client.exceptions import ApiException
from temporalio.client import Client, WorkflowHandle

from simulator.rbac import Attributes
from tests.helpers.incident_queries import approving_everything, state_of, timeline_of
from tests.helpers.kube_deploy import NAMESPACE, WORKER_ACCOUNT, apply, kubectl, render, service_account_kubeconfig
from tests.helpers.playbook_cases import CASES, automation_done
from tests.helpers.waiting import wait_for_async
from worker.worker import build_worker
from workflows.playbooks import catalog
from workflows.incident.state import IncidentState
from workflows.incident.models import UPDATE_HUMAN_ACTION, HumanAction
from workflows.incident.timeline import TimelineEntry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WORKER_USER = f"system:serviceaccount:{NAMESPACE}:{WORKER_ACCOUNT}"


@dataclass(frozen=True)
class Drive:
    """A playbook run on a staged fault, every gate approved (as `runbooks drill --auto-approve`)."""

    scenario: str
    case: str  # the playbook's entry in tests/helpers/playbook_cases.py CASES (its input, run in act mode)


DRIVES = {
    "service-outage": Drive("service-outage", "service-outage"),
    "high-memory": Drive("high-memory", "high-memory"),
    "gpu-device-plugin": Drive("gpu-unavailable", "gpu-unavailable"),
    "gpu-drain": Drive("gpu-hardware-failure", "gpu-unavailable"),
    "model-oom": Drive("model-deploy-failure:oom", "model-deploy-failure"),
    "model-pvc": Drive("model-deploy-failure:pvc-pending", "model-deploy-failure"),
    "triage": Drive("baseline", "triage"),
    "service-down": Drive("service-down:bad-rollout", "service-down"),
    "gpu-hardware": Drive("gpu-hardware-failure", "gpu-hardware-failure"),
    "kserve-canary": Drive("canary-rollback", "kserve-error-rate"),
    "kserve-redeploy": Drive("high-error-rate:model-corrupted", "kserve-error-rate"),
    "kserve-model-not-loading": Drive("model-not-loading:access-denied", "kserve-model-not-loading"),
    "kserve-gpu-pending": Drive("kserve-gpu-pending", "kserve-gpu-pending"),
}

# Which drive needs each rule; a rule added to deploy/ without a drive here fails the test below.
RULE_DRIVES = {
    "ClusterRole/llm-runbooks-worker: get,list pods": "service-outage",
    "ClusterRole/llm-runbooks-worker: get pods/log": "service-outage",
    "ClusterRole/llm-runbooks-worker: delete pods": "high-memory",
    "ClusterRole/llm-runbooks-worker: create pods/eviction": "gpu-drain",
    "ClusterRole/llm-runbooks-worker: get,list nodes": "gpu-drain",
    "ClusterRole/llm-runbooks-worker: patch nodes": "gpu-drain",
    "ClusterRole/llm-runbooks-worker: list events": "model-oom",
    "ClusterRole/llm-runbooks-worker: get,list services": "service-outage",
    "ClusterRole/llm-runbooks-worker: get,list persistentvolumeclaims": "model-oom",
    "ClusterRole/llm-runbooks-worker: create,delete persistentvolumeclaims": "model-pvc",
    "ClusterRole/llm-runbooks-worker: get,list,patch deployments.apps": "service-outage",
    "ClusterRole/llm-runbooks-worker: list ingresses.networking.k8s.io": "service-down",
    "ClusterRole/llm-runbooks-worker: list replicasets.apps": "service-outage",
    "ClusterRole/llm-runbooks-worker: get,list,patch llmdeployments.inference.llm-d.io": "model-oom",
    "ClusterRole/llm-runbooks-worker: list pods.metrics.k8s.io": "high-memory",
    "ClusterRole/llm-runbooks-worker: get,patch inferenceservices.serving.kserve.io": "kserve-canary",
    "ClusterRole/llm-runbooks-worker: create,delete inferenceservices.serving.kserve.io": "kserve-redeploy",
    "Role/kube-system/llm-runbooks-gpu: create pods": "gpu-drain",
    "Role/kube-system/llm-runbooks-gpu: get,patch daemonsets.apps[nvidia-device-plugin-daemonset]": "gpu-device-plugin",
    "Role/default/llm-runbooks-maintenance-page: create ingresses.networking.k8s.io": "service-outage",
    "Role/default/llm-runbooks-maintenance-page: get,update,delete ingresses.networking.k8s.io[maintenance-mode]": "service-outage",
}
# Granted but not reached by a drive, and why it is still needed.
UNREACHED = {
    # the maintenance page already exists with another spec (a human made it): replaced, not created
    ("update", "networking.k8s.io", "ingresses"),
}


def rule_id(role: dict, rule: dict) -> str:
    meta = role["metadata"]
    where = f"{role['kind']}/{meta['namespace'] + '/' if meta.get('namespace') else ''}{meta['name']}"
    groups = [g for g in rule["apiGroups"] if g]
    what = ",".join(r + (f".{groups[0]}" if groups else "") for r in rule["resources"])
    names = f"[{','.join(rule['resourceNames'])}]" if rule.get("resourceNames") else ""
    return f"{where}: {','.join(rule['verbs'])} {what}{names}"


def roles(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Role", "ClusterRole")]


RENDERED = render()
RULES = {rule_id(role, rule): (i, j) for i, role in enumerate(roles(RENDERED)) for j, rule in enumerate(role["rules"])}


def without_rule(objects: list[dict], rule: str) -> list[dict]:
    i, j = RULES[rule]
    changed = copy.deepcopy(objects)
    del roles(changed)[i]["rules"][j]
    return changed


# ---- the fixture: the worker logged in as the shipped ServiceAccount -----------------------------------


@dataclass
class RbacStack:
    simulator: object
    home: Path
    kubeconfig: Path  # the ServiceAccount's
    api: k8s.ApiClient

    def denials(self) -> list[Attributes]:
        return [a for user, a in self.simulator.api.rbac.denials if user.name == WORKER_USER]

    def granted(self) -> set[tuple[str, str, str]]:
        return {
            (a.verb, a.api_group, a.resource_and_sub)
            for user, a in self.simulator.api.rbac.granted
            if user.name == WORKER_USER
        }


def deploy_as_worker(simulator, tmp_path: Path, objects: list[dict]) -> RbacStack:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    apply(objects, simulator.kubeconfig_path, home)
    kubeconfig = service_account_kubeconfig(simulator.kubeconfig_path, tmp_path / "worker.kubeconfig", home)
    return RbacStack(simulator, home, kubeconfig, kconfig.new_client_from_config(config_file=str(kubeconfig)))


@pytest_asyncio.fixture(loop_scope="session")
async def worker_as_service_account(simulator, tmp_path: Path) -> AsyncIterator[RbacStack]:
    """deploy/ applied with the admin kubeconfig; the worker's client authenticated as its ServiceAccount."""
    stack = deploy_as_worker(simulator, tmp_path, RENDERED)
    try:
        yield stack
    finally:
        stack.api.close()


async def drive(
    stack: RbacStack, name: str, temporal_dev, task_queue: str, slack_client
) -> tuple[IncidentState, list[TimelineEntry]]:
    scenario, run, make_input, _ = CASES[DRIVES[name].case]
    inp = make_input().model_copy(update={"mode": "act"})
    client: Client = temporal_dev.client
    async with httpx.AsyncClient() as http:
        async with build_worker(client, stack.api, slack_client, http, task_queue, slack_channel="#incidents-rbac"):
            handle: WorkflowHandle = await client.start_workflow(
                run, inp, id=f"{task_queue}.{name}", task_queue=task_queue
            )
            async with approving_everything(handle):
                done = await wait_for_async(lambda: automation_done(handle), f"{name} to do all it can", 90)
            timeline = await timeline_of(handle)
            if done.status not in ("resolved", "failed"):
                await handle.execute_update(
                    UPDATE_HUMAN_ACTION,
                    HumanAction(action="resolve", by="alice", note="rbac test over"),
                    result_type=str,
                )
            state = await state_of(handle)
    return state, timeline


# ---- kubectl auth can-i, as the worker ------------------------------------------------------------------


@pytest.mark.scenario("baseline")
def test_kubectl_auth_can_i_answers_from_the_shipped_roles(worker_as_service_account: RbacStack):
    stack = worker_as_service_account

    def can_i(*args: str) -> bool:
        done = kubectl("auth", "can-i", *args, kubeconfig=stack.kubeconfig, home=stack.home, check=False)
        assert done.stdout.strip() in ("yes", "no"), done.stderr
        return done.stdout.strip() == "yes"

    assert kubectl("auth", "whoami", "-o", "json", kubeconfig=stack.kubeconfig, home=stack.home).stdout.count(
        WORKER_USER
    )
    assert can_i("create", "pods", "--subresource=eviction", "-n", "production")
    assert can_i("get", "pods", "--subresource=log", "-n", "llm-d-system")
    assert not can_i("create", "pods", "--subresource=exec", "-n", "production")
    assert can_i("patch", "nodes")
    assert can_i("list", "pods.metrics.k8s.io", "-A")
    assert can_i("patch", "daemonsets/nvidia-device-plugin-daemonset", "-n", "kube-system")
    assert not can_i("patch", "daemonsets/kube-proxy", "-n", "kube-system")  # resourceNames
    assert can_i("create", "pods", "-n", "kube-system") and not can_i("create", "pods", "-n", "production")
    assert not can_i("delete", "deployments", "-n", "production")
    assert not can_i("get", "secrets", "-n", NAMESPACE)
    assert not can_i("create", "clusterrolebindings")
    # the admin kubeconfig keeps full access
    assert (
        kubectl(
            "auth", "can-i", "delete", "deployments", "-A", kubeconfig=stack.simulator.kubeconfig_path, home=stack.home
        ).stdout.strip()
        == "yes"
    )

    listed = kubectl(
        "auth", "can-i", "--list", "-n", "kube-system", kubeconfig=stack.kubeconfig, home=stack.home
    ).stdout
    print(listed)  # what an SRE reviews: the worker's whole access in kube-system
    lines = {" ".join(line.split()) for line in listed.splitlines()}
    assert "pods/eviction [] [] [create]" in lines, listed
    assert "daemonsets.apps [] [nvidia-device-plugin-daemonset] [get patch]" in lines, listed
    assert "pods.metrics.k8s.io [] [] [list]" in lines, listed
    assert "selfsubjectaccessreviews.authorization.k8s.io [] [] [create]" in lines, listed
    assert not any(line.startswith("*.") or "secrets" in line for line in lines), listed
    in_production = kubectl(
        "auth", "can-i", "--list", "-n", "production", kubeconfig=stack.kubeconfig, home=stack.home
    ).stdout
    assert "daemonsets.apps" not in in_production
    # outside default's maintenance page, Ingresses are only listed (service-down's scope read)
    ingress_lines = [" ".join(line.split()) for line in in_production.splitlines() if "ingresses" in line]
    assert ingress_lines == ["ingresses.networking.k8s.io [] [] [list]"], in_production


@pytest.mark.scenario("baseline")
def test_a_request_the_role_does_not_grant_gets_the_apiservers_403(worker_as_service_account: RbacStack):
    core = k8s.CoreV1Api(worker_as_service_account.api)
    with pytest.raises(ApiException) as denied:
        core.list_namespaced_secret(NAMESPACE)
    assert denied.value.status == 403
    assert json.loads(denied.value.body)["message"] == (
        f'secrets is forbidden: User "{WORKER_USER}" cannot list resource "secrets" in API group "" '
        f'in the namespace "{NAMESPACE}"'
    )
    assert core.list_node().items  # and what it grants works
    # a token dies with its ServiceAccount
    kubectl(
        "delete",
        "serviceaccount",
        WORKER_ACCOUNT,
        "-n",
        NAMESPACE,
        kubeconfig=worker_as_service_account.simulator.kubeconfig_path,
        home=worker_as_service_account.home,
    )
    with pytest.raises(ApiException) as unauthorized:
        core.list_node()
    assert unauthorized.value.status == 401


def access(can_i: str) -> tuple[str, str, str]:
    """ "patch deployments.apps" -> ("patch", "apps", "deployments"), as the simulator's RBAC records it."""
    verb, what = can_i.split(" ")
    resource, _, group = what.partition(".")
    if "/" in group:  # pods/log has no group; a subresource of a grouped kind keeps it after the dot
        group, _, sub = group.partition("/")
        resource = f"{resource}/{sub}"
    return verb, group, resource


def declared_access(runbook: str) -> set[tuple[str, str, str]]:
    return {access(a) for a in catalog.playbook(runbook).kube_access}


def test_the_roles_grant_what_the_playbooks_declare_and_nothing_else():
    """Each playbook names what it asks of Kubernetes (`Playbook.kube_access`); deploy/'s roles grant
    that union (namespaces and resourceNames narrow it further there)."""
    granted = {
        (verb, group, resource)
        for role in roles(RENDERED)
        for rule in role["rules"]
        for verb in rule["verbs"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    declared = set().union(*(declared_access(p.name) for p in catalog.BUILT_IN))
    assert sorted(declared - granted) == [], "declared by a playbook, not granted by deploy/"
    assert sorted(granted - declared) == [], "granted by deploy/, declared by no playbook"


def test_every_rule_of_the_shipped_roles_has_a_playbook_that_needs_it():
    assert set(RULES) == set(RULE_DRIVES), "a rule of deploy/ without a drive that proves it (or a stale entry)"
    for role in roles(RENDERED):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule_id(role, rule)
            assert not {"secrets", "roles", "rolebindings", "clusterroles", "clusterrolebindings"} & set(
                rule["resources"]
            )
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


# ---- the playbooks under the shipped role ----------------------------------------------------------------

_USED: dict[str, set[tuple[str, str, str]]] = {}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.scenario(d.scenario)) for n, d in DRIVES.items()])
async def test_every_playbook_does_its_job_as_the_service_account(
    name: str,
    worker_as_service_account: RbacStack,
    temporal_dev,
    task_queue: str,
    slack_client,
):
    stack = worker_as_service_account
    state, timeline = await drive(stack, name, temporal_dev, task_queue, slack_client)
    assert state.failure is None and state.status != "failed", state.failure
    assert stack.denials() == [], [a.describe() for a in stack.denials()]
    _USED[name] = stack.granted()
    undeclared = _USED[name] - declared_access(DRIVES[name].case)
    assert not undeclared, f"{DRIVES[name].case} asked Kubernetes for what it does not declare: {sorted(undeclared)}"
    if name == "gpu-device-plugin":
        assert ("patch", "apps", "daemonsets") in _USED[name], "the drive did not restart the device plugin"
    if name == "model-pvc":
        assert ("create", "", "persistentvolumeclaims") in _USED[name], "the drive did not recreate the claim"


def test_the_roles_grant_no_verb_the_playbooks_did_not_use():
    """Runs after the drives above (file order); every verb on every resource granted was used by one."""
    if set(_USED) != set(DRIVES):
        pytest.skip("needs every drive of test_every_playbook_does_its_job_as_the_service_account in this session")
    used = set().union(*_USED.values())
    granted = {
        (verb, group, resource)
        for role in roles(RENDERED)
        for rule in role["rules"]
        for verb in rule["verbs"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted - used == UNREACHED, sorted(granted - used)


# ---- remove one rule: the playbook that needs it fails, and says why -------------------------------------


@pytest.mark.parametrize(
    "rule", [pytest.param(r, marks=pytest.mark.scenario(DRIVES[d].scenario), id=r) for r, d in RULE_DRIVES.items()]
)
async def test_without_any_one_rule_a_playbook_fails_with_a_clear_403(
    rule: str,
    simulator,
    tmp_path: Path,
    temporal_dev,
    task_queue: str,
    slack_client,
):
    stack = deploy_as_worker(simulator, tmp_path, without_rule(RENDERED, rule))
    try:
        state, timeline = await drive(stack, RULE_DRIVES[rule], temporal_dev, task_queue, slack_client)
    finally:
        stack.api.close()
    denied = stack.denials()
    assert denied, f"nothing was refused without {rule}"
    verbs, resources = rule.split(": ", 1)[1].split(" ", 1)
    assert any(a.verb in verbs.split(",") and a.resource_and_sub in resources for a in denied), [
        a.describe() for a in denied
    ]
    # the incident says so: the failure (or the step that met it) carries the API server's 403
    told = [state.failure or ""] + [f"{e.title}: {e.outcome} {' '.join(e.details)}" for e in timeline]
    clear = [t for t in told if "Permission denied" in t and "is forbidden" in t and WORKER_USER in t]
    assert clear, f"no clear 403 in the incident: status {state.status}, failure {state.failure!r}\n" + "\n".join(told)
    # ... and a check that could not run is never taken for a clean one (a staged fault is there)
    assert not state.nothing_found, f"refused, yet 'nothing wrong found': {state.nothing_found}"
    print(f"{rule}: {state.status}: {clear[0][:300]}")
