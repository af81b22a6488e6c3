"""The simulator's Kubernetes API, through the official client and raw HTTP.

The official client deserializes every answer into strict models, so each call here that
returns without a ValueError proves the simulator served schema-valid objects.
"""

from __future__ import annotations

import json
import time
import warnings

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.rest import ApiException

with warnings.catch_warnings():  # starlette nudges towards httpx2; httpx is what we have
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from simulator.api import KubeApi
from simulator.server import SimulatedCluster, inject_into
from simulator.store import Store

NS = "production"
MODEL = "llama-3-8b"


def _http(simulator: SimulatedCluster, token: str | None = "default") -> httpx.Client:
    headers = {} if token is None else {"Authorization": f"Bearer {simulator.token if token == 'default' else token}"}
    return httpx.Client(base_url=simulator.url, headers=headers, timeout=10)


def _status_of(exc: ApiException) -> dict:
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["code"] == exc.status
    return body


def _config_map(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


# ---- discovery ---------------------------------------------------------------------------


def test_discovery_names_groups_resources_and_subresources(simulator):
    with _http(simulator) as http:
        assert http.get("/version").json()["gitVersion"].startswith("v1.")
        assert http.get("/api").json()["versions"] == ["v1"]
        groups = {g["name"]: g for g in http.get("/apis").json()["groups"]}
        assert {
            "apps",
            "networking.k8s.io",
            "policy",
            "inference.llm-d.io",
            "serving.kserve.io",
            "metrics.k8s.io",
        } <= set(groups)
        assert groups["inference.llm-d.io"]["preferredVersion"]["groupVersion"] == "inference.llm-d.io/v1alpha1"
        core = {r["name"]: r for r in http.get("/api/v1").json()["resources"]}
        assert (
            core["pods/eviction"].items()
            >= {"group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}.items()
        )
        assert {"pods/log", "pods/status", "nodes/status"} <= set(core)
        assert core["pods"]["shortNames"] == ["po"] and core["pods"]["namespaced"] is True
        assert core["nodes"]["namespaced"] is False
        apps = http.get("/apis/apps/v1").json()
        assert apps["groupVersion"] == "apps/v1"
        apps_resources = {r["name"]: r for r in apps["resources"]}
        assert apps_resources["deployments/scale"]["kind"] == "Scale"
        assert apps_resources["deployments/scale"]["group"] == "autoscaling"
        assert {"deployments/status", "daemonsets/status"} <= set(apps_resources)
        llmd = {r["name"]: r for r in http.get("/apis/inference.llm-d.io/v1alpha1").json()["resources"]}
        assert llmd["llmdeployments"]["shortNames"] == ["llmd"]
        assert "llmdeployments/status" in llmd
        isvc = {r["name"]: r for r in http.get("/apis/serving.kserve.io/v1beta1").json()["resources"]}
        assert isvc["inferenceservices"]["shortNames"] == ["isvc"]
        metrics = {r["name"]: r for r in http.get("/apis/metrics.k8s.io/v1beta1").json()["resources"]}
        assert metrics["pods"]["kind"] == "PodMetrics" and metrics["nodes"]["kind"] == "NodeMetrics"


# ---- the official client reads every kind --------------------------------------------------


def test_official_client_lists_and_reads_every_kind(kube_api):
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    net, policy = client.NetworkingV1Api(kube_api), client.PolicyV1Api(kube_api)
    custom = client.CustomObjectsApi(kube_api)
    listings = {
        "namespaces": (core.list_namespace(), core.read_namespace),
        "nodes": (core.list_node(), core.read_node),
        "pods": (core.list_pod_for_all_namespaces(), core.read_namespaced_pod),
        "events": (core.list_event_for_all_namespaces(), core.read_namespaced_event),
        "configmaps": (core.list_config_map_for_all_namespaces(), core.read_namespaced_config_map),
        "services": (core.list_service_for_all_namespaces(), core.read_namespaced_service),
        "pvcs": (core.list_persistent_volume_claim_for_all_namespaces(), core.read_namespaced_persistent_volume_claim),
        "deployments": (apps.list_deployment_for_all_namespaces(), apps.read_namespaced_deployment),
        "replicasets": (apps.list_replica_set_for_all_namespaces(), apps.read_namespaced_replica_set),
        "daemonsets": (apps.list_daemon_set_for_all_namespaces(), apps.read_namespaced_daemon_set),
        "ingresses": (net.list_ingress_for_all_namespaces(), net.read_namespaced_ingress),
        "pdbs": (policy.list_pod_disruption_budget_for_all_namespaces(), policy.read_namespaced_pod_disruption_budget),
    }
    for kind, (listing, read) in listings.items():
        assert listing.metadata.resource_version, kind
        for item in listing.items:
            args = (
                (item.metadata.name,)
                if item.metadata.namespace is None
                else (item.metadata.name, item.metadata.namespace)
            )
            assert read(*args).metadata.uid == item.metadata.uid, kind
    for kind in ("namespaces", "nodes", "pods", "deployments"):
        assert listings[kind][0].items, f"the baseline has {kind}"

    for group, version, plural in (
        ("inference.llm-d.io", "v1alpha1", "llmdeployments"),
        ("serving.kserve.io", "v1beta1", "inferenceservices"),
    ):
        listing = custom.list_cluster_custom_object(group, version, plural)
        assert listing["kind"].endswith("List") and listing["items"], plural
        for item in listing["items"]:
            meta = item["metadata"]
            read = custom.get_namespaced_custom_object(group, version, meta["namespace"], plural, meta["name"])
            assert read["apiVersion"] == f"{group}/{version}" and read["kind"] == item["kind"]

    pod_metrics = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "pods")
    assert pod_metrics["kind"] == "PodMetricsList" and pod_metrics["items"]
    assert all(m["kind"] == "PodMetrics" for m in pod_metrics["items"])
    in_ns = custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", NS, "pods")
    assert in_ns["items"] and {m["metadata"]["namespace"] for m in in_ns["items"]} == {NS}
    node_metrics = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    assert node_metrics["kind"] == "NodeMetricsList" and node_metrics["items"]


# ---- create / read / replace / patch / delete -----------------------------------------------


def test_write_lifecycle_bumps_resource_version_and_rejects_stale_writes(kube_api):
    core = client.CoreV1Api(kube_api)
    created = core.create_namespaced_config_map(NS, _config_map("sop-settings"))
    assert created.metadata.uid and created.metadata.creation_timestamp
    first = int(created.metadata.resource_version)

    created.data = {"k": "changed"}
    replaced = core.replace_namespaced_config_map("sop-settings", NS, created)
    assert int(replaced.metadata.resource_version) > first

    created.data = {"k": "stale"}  # still carries the first resourceVersion
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_config_map("sop-settings", NS, created)
    assert stale.value.status == 409 and _status_of(stale.value)["reason"] == "Conflict"

    patched = core.patch_namespaced_config_map("sop-settings", NS, {"data": {"k2": "v2"}})
    assert patched.data == {"k": "changed", "k2": "v2"}
    assert int(patched.metadata.resource_version) > int(replaced.metadata.resource_version)

    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map(NS, _config_map("sop-settings"))
    assert exists.value.status == 409 and _status_of(exists.value)["reason"] == "AlreadyExists"

    core.delete_namespaced_config_map("sop-settings", NS)
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("sop-settings", NS)
    assert gone.value.status == 404
    assert _status_of(gone.value)["details"] == {"name": "sop-settings", "group": "", "kind": "configmaps"}


def test_dry_run_validates_but_never_stores(simulator, kube_api):
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    answer = core.create_namespaced_config_map(NS, _config_map("dry"), dry_run="All")
    assert answer.metadata.name == "dry"
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("dry", NS)
    assert missing.value.status == 404

    before = apps.read_namespaced_deployment(MODEL, NS)
    preview = apps.patch_namespaced_deployment(MODEL, NS, {"spec": {"replicas": 7}}, dry_run="All")
    assert preview.spec.replicas == 7
    after = apps.read_namespaced_deployment(MODEL, NS)
    assert after.spec.replicas == before.spec.replicas
    assert after.metadata.resource_version == before.metadata.resource_version

    with pytest.raises(ApiException) as bad:
        core.create_namespaced_config_map(NS, _config_map("Not_Valid"), dry_run="All")
    assert bad.value.status == 422
    with _http(simulator) as http:
        wrong = http.post(f"/api/v1/namespaces/{NS}/configmaps?dryRun=Some", json=_config_map("x"))
        assert wrong.status_code == 400 and wrong.json()["kind"] == "Status"
    dry = [e for e in simulator.audit() if e.dry_run]
    assert {(e.verb, e.resource, e.code) for e in dry} >= {("create", "configmaps", 201), ("patch", "deployments", 200)}


def test_generate_name_and_deletecollection_by_selector(kube_api):
    core = client.CoreV1Api(kube_api)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "drill-", "labels": {"drill": "yes"}}}
    names = {core.create_namespaced_config_map(NS, body).metadata.name for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("drill-") for n in names)
    core.create_namespaced_config_map(NS, _config_map("keep-me", drill="no"))
    core.delete_collection_namespaced_config_map(NS, label_selector="drill=yes")
    left = {c.metadata.name for c in core.list_namespaced_config_map(NS).items}
    assert not names & left and "keep-me" in left


def test_validation_rejects_bad_objects_with_422_and_stores_nothing(kube_api, simulator):
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    template = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    cases = {
        "no-selector": {"replicas": 1, "template": template},
        "mismatch": {"replicas": 1, "selector": {"matchLabels": {"app": "y"}}, "template": template},
        "no-containers": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": []}},
        },
    }
    for name, spec in cases.items():
        body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}
        # raw HTTP: the client's own models would refuse to send these
        with _http(simulator) as http:
            invalid = http.post(f"/apis/apps/v1/namespaces/{NS}/deployments", json=body)
        status = invalid.json()
        assert invalid.status_code == 422 and status["reason"] == "Invalid", name
        assert status["kind"] == "Status" and status["details"]["causes"], name
    assert not {d.metadata.name for d in apps.list_namespaced_deployment(NS).items} & set(cases)

    with pytest.raises(ApiException) as bad_name:
        core.create_namespaced_config_map(NS, _config_map("UPPER_case"))
    assert bad_name.value.status == 422
    with pytest.raises(ApiException) as no_ns:
        core.create_namespaced_config_map("no-such-namespace", _config_map("x"))
    assert no_ns.value.status == 404
    assert _status_of(no_ns.value)["details"]["kind"] == "namespaces"
    with _http(simulator) as http:
        wrong_kind = http.post(
            f"/api/v1/namespaces/{NS}/configmaps",
            json={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
        )
        assert wrong_kind.status_code == 400 and wrong_kind.json()["reason"] == "BadRequest"
        wrong_ns = http.post(
            f"/api/v1/namespaces/{NS}/configmaps",
            json=_config_map("x") | {"metadata": {"name": "x", "namespace": "other"}},
        )
        assert wrong_ns.status_code == 400


# ---- selectors ---------------------------------------------------------------------------


def test_label_and_field_selectors(kube_api):
    core = client.CoreV1Api(kube_api)
    for name, labels in (
        ("sel-a", {"tier": "gold", "drill": "1"}),
        ("sel-b", {"tier": "silver", "drill": "1"}),
        ("sel-c", {"drill": "1"}),
    ):
        core.create_namespaced_config_map(NS, _config_map(name, **labels))

    def names(selector: str) -> set[str]:
        found = core.list_namespaced_config_map(NS, label_selector=f"drill=1,{selector}")
        return {c.metadata.name for c in found.items}

    assert names("tier=gold") == names("tier==gold") == {"sel-a"}
    assert names("tier!=gold") == {"sel-b", "sel-c"}
    assert names("tier in (gold, silver)") == {"sel-a", "sel-b"}
    assert names("tier notin (gold)") == {"sel-b", "sel-c"}
    assert names("tier") == {"sel-a", "sel-b"}
    assert names("!tier") == {"sel-c"}

    everywhere = core.list_pod_for_all_namespaces().items
    node = next(p.spec.node_name for p in everywhere if p.spec.node_name)
    on_node = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}").items
    assert on_node and all(p.spec.node_name == node for p in on_node)
    not_running = core.list_pod_for_all_namespaces(field_selector="status.phase!=Running").items
    assert {p.metadata.uid for p in not_running} == {p.metadata.uid for p in everywhere if p.status.phase != "Running"}
    one = core.list_namespaced_pod(NS, field_selector=f"metadata.name={on_node[0].metadata.name}")
    assert [p.metadata.name for p in one.items] == [on_node[0].metadata.name] or on_node[0].metadata.namespace != NS

    with pytest.raises(ApiException) as unknown:
        core.list_pod_for_all_namespaces(field_selector="spec.color=blue")
    assert unknown.value.status == 400 and "spec.color" in _status_of(unknown.value)["message"]
    with pytest.raises(ApiException) as malformed:
        core.list_pod_for_all_namespaces(label_selector="app in gold")
    assert malformed.value.status == 400


def test_event_field_selectors(simulator, kube_api):
    core = client.CoreV1Api(kube_api)
    pod = core.list_namespaced_pod(NS).items[0]
    involved = simulator.store.get("pods", NS, pod.metadata.name)
    simulator.store.add_event(involved, "Warning", "DrillWarning", "drill")
    simulator.store.add_event(involved, "Warning", "DrillWarning", "drill")
    found = core.list_namespaced_event(
        NS, field_selector=f"involvedObject.name={pod.metadata.name},reason=DrillWarning,type=Warning"
    ).items
    assert len(found) == 1 and found[0].count == 2
    assert found[0].involved_object.uid == pod.metadata.uid


# ---- patch flavours ------------------------------------------------------------------------


def test_strategic_merge_patch_merges_lists_by_name(kube_api):
    apps = client.AppsV1Api(kube_api)
    before = apps.read_namespaced_deployment(MODEL, NS)
    container = before.spec.template.spec.containers[0].name
    patched = apps.patch_namespaced_deployment(
        MODEL,
        NS,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": container, "env": [{"name": "DRILL", "value": "1"}]}]}}
            }
        },
    )
    containers = patched.spec.template.spec.containers
    assert [c.name for c in containers] == [c.name for c in before.spec.template.spec.containers]
    assert containers[0].image == before.spec.template.spec.containers[0].image
    env = {e.name: e.value for e in containers[0].env}
    assert env["DRILL"] == "1"
    assert {e.name for e in before.spec.template.spec.containers[0].env or []} <= set(env)
    assert patched.metadata.generation == before.metadata.generation + 1

    removed = apps.patch_namespaced_deployment(
        MODEL,
        NS,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": container, "env": [{"name": "DRILL", "$patch": "delete"}]}]}
                }
            }
        },
    )
    assert "DRILL" not in {e.name for e in removed.spec.template.spec.containers[0].env or []}


def test_merge_and_json_patch(simulator, kube_api):
    apps = client.AppsV1Api(kube_api)
    custom = client.CustomObjectsApi(kube_api)
    llmd = custom.patch_namespaced_custom_object(
        "inference.llm-d.io", "v1alpha1", NS, "llmdeployments", MODEL, {"metadata": {"labels": {"drill": "merge"}}}
    )
    assert llmd["metadata"]["labels"]["drill"] == "merge"
    scaled = apps.patch_namespaced_deployment(MODEL, NS, [{"op": "replace", "path": "/spec/replicas", "value": 3}])
    assert scaled.spec.replicas == 3
    with _http(simulator) as http:
        path = f"/apis/apps/v1/namespaces/{NS}/deployments/{MODEL}"
        merge = http.patch(
            path,
            content=b'{"metadata":{"annotations":{"sre":"x"}}}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert merge.status_code == 200 and merge.json()["metadata"]["annotations"]["sre"] == "x"
        failing_test = http.patch(
            path,
            content=json.dumps([{"op": "test", "path": "/spec/replicas", "value": 99}]),
            headers={"Content-Type": "application/json-patch+json"},
        )
        assert failing_test.status_code == 422 and failing_test.json()["kind"] == "Status"
        assert apps.read_namespaced_deployment(MODEL, NS).spec.replicas == 3


def test_malformed_and_unsupported_patches_are_client_errors(simulator):
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/{MODEL}"
    with _http(simulator) as http:
        before = http.get(path).json()["metadata"]["resourceVersion"]
        for content_type, body, code in (
            ("application/merge-patch+json", b"{not json", 400),
            ("application/json-patch+json", b'{"op": "add"}', 422),
            ("application/json-patch+json", b'[{"op": "remove", "path": "/nope"}]', 422),
            (
                "application/strategic-merge-patch+json",
                b'{"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}}',
                422,
            ),
            ("text/plain", b"{}", 415),
        ):
            answer = http.patch(path, content=body, headers={"Content-Type": content_type})
            assert answer.status_code == code, (content_type, body, answer.text)
            assert answer.json()["kind"] == "Status" and answer.json()["code"] == code
        llmd = http.patch(
            f"/apis/inference.llm-d.io/v1alpha1/namespaces/{NS}/llmdeployments/{MODEL}",
            content=b'{"spec":{"replicas":1}}',
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
        assert llmd.status_code == 415
        assert http.get(path).json()["metadata"]["resourceVersion"] == before


# ---- subresources --------------------------------------------------------------------------


def test_scale_subresource(kube_api):
    apps = client.AppsV1Api(kube_api)
    scale = apps.read_namespaced_deployment_scale(MODEL, NS)
    assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1"
    assert f"app={MODEL}" in scale.status.selector
    patched = apps.patch_namespaced_deployment_scale(MODEL, NS, {"spec": {"replicas": 4}})
    assert patched.spec.replicas == 4
    assert apps.read_namespaced_deployment(MODEL, NS).spec.replicas == 4
    with pytest.raises(ApiException) as negative:
        apps.patch_namespaced_deployment_scale(MODEL, NS, {"spec": {"replicas": -1}})
    assert negative.value.status == 422


def test_status_subresource_is_separate_from_spec(kube_api):
    custom = client.CustomObjectsApi(kube_api)
    args = ("inference.llm-d.io", "v1alpha1", NS, "llmdeployments", MODEL)
    before = custom.get_namespaced_custom_object(*args)
    ignored = custom.patch_namespaced_custom_object(*args, {"status": {"phase": "Bogus"}})
    assert ignored["status"] == before["status"]
    written = custom.patch_namespaced_custom_object_status(*args, {"status": {"message": "set by a test"}})
    assert written["status"]["message"] == "set by a test"
    assert written["spec"] == before["spec"]
    assert written["metadata"]["generation"] == before["metadata"]["generation"]


def test_eviction_deletes_the_pod_and_is_audited(simulator, kube_api):
    core = client.CoreV1Api(kube_api)
    pod = core.list_namespaced_pod(NS, label_selector=f"app={MODEL}").items[0]
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=NS))
    core.create_namespaced_pod_eviction(pod.metadata.name, NS, body)
    remaining = {p.metadata.uid for p in core.list_namespaced_pod(NS).items}
    assert pod.metadata.uid not in remaining
    evictions = [e for e in simulator.audit() if e.verb == "evict"]
    assert [(e.name, e.subresource, e.code) for e in evictions] == [(pod.metadata.name, "eviction", 201)]
    with pytest.raises(ApiException) as missing:
        core.create_namespaced_pod_eviction("no-such-pod", NS, body)
    assert missing.value.status in (400, 404)


def test_pod_log_honours_tail_lines(kube_api):
    core = client.CoreV1Api(kube_api)
    pod = core.list_namespaced_pod(NS, label_selector=f"app={MODEL}").items[0]
    # The log grows by a line every 10 s of the simulated clock, so a read can straddle a new
    # line: the tail must be two consecutive lines of the later full read, ending no earlier
    # than the earlier one did.
    before = core.read_namespaced_pod_log(pod.metadata.name, NS).splitlines()
    tail = core.read_namespaced_pod_log(pod.metadata.name, NS, tail_lines=2).splitlines()
    after = core.read_namespaced_pod_log(pod.metadata.name, NS).splitlines()
    assert before and len(tail) == 2
    ends = [i + 2 for i in range(len(after) - 1) if after[i : i + 2] == tail]
    assert ends and len(before) <= ends[-1] <= len(after)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod_log("no-such-pod", NS)
    assert missing.value.status == 404


def test_deleting_a_deployment_collects_what_it_owns(kube_api):
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    owner = apps.read_namespaced_deployment(MODEL, NS).metadata.uid
    owned = [
        r.metadata.uid
        for r in apps.list_namespaced_replica_set(NS).items
        if any(ref.uid == owner for ref in r.metadata.owner_references or [])
    ]
    apps.delete_namespaced_deployment(MODEL, NS)
    left = {r.metadata.uid for r in apps.list_namespaced_replica_set(NS).items}
    assert not set(owned) & left
    pods = core.list_namespaced_pod(NS, label_selector=f"app={MODEL}").items
    assert all(ref.uid not in owned for p in pods for ref in p.metadata.owner_references or [])


# ---- watch ---------------------------------------------------------------------------------


def test_watch_streams_changes_after_a_list(simulator, kube_api):
    core = client.CoreV1Api(kube_api)
    listed = core.list_namespaced_config_map(NS)
    with (
        _http(simulator) as http,
        http.stream(
            "GET",
            f"/api/v1/namespaces/{NS}/configmaps",
            params={"watch": "true", "resourceVersion": listed.metadata.resource_version, "timeoutSeconds": "5"},
        ) as stream,
    ):
        core.create_namespaced_config_map(NS, _config_map("watched"))
        core.patch_namespaced_config_map("watched", NS, {"data": {"k": "v2"}})
        events = []
        for line in stream.iter_lines():
            events.append(json.loads(line))
            if len(events) == 2:
                break
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "watched"),
        ("MODIFIED", "watched"),
    ]


# ---- bad requests --------------------------------------------------------------------------


def test_requests_without_the_token_get_401_status(simulator):
    for token in (None, "wrong-token"):
        with _http(simulator, token) as http:
            for path in ("/api/v1/pods", "/apis", "/admin/audit"):
                answer = http.get(path)
                assert answer.status_code == 401
                assert answer.json().items() >= {"kind": "Status", "reason": "Unauthorized", "code": 401}.items()
    with httpx.Client(base_url=simulator.url) as anonymous:  # Prometheus scrapes without one
        assert anonymous.get("/metrics").status_code == 200
        assert anonymous.get(f"/simulated/metrics/{NS}/{MODEL}").status_code == 200
        assert anonymous.get(f"/simulated/health/{NS}/{MODEL}").status_code == 200


def test_unknown_resources_and_methods_get_status_objects(simulator):
    with _http(simulator) as http:
        for path in (
            "/api/v1/widgets",
            "/apis/nope.io/v1",
            "/apis/apps/v1/namespaces/x/foo",
            "/api/v2/pods",
            "/api/v1/namespaces/x/nodes/n",
            "/apis/apps/v1/deployments/d",
        ):
            answer = http.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["kind"] == "Status" and answer.json()["reason"] == "NotFound"
        assert http.post("/api/v1/namespaces/x/pods/p/log", json={}).status_code in (404, 405)
        assert (
            http.post(
                f"/api/v1/namespaces/{NS}/configmaps", content=b"[1,2]", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
        assert (
            http.post(
                f"/api/v1/namespaces/{NS}/configmaps", content=b"{oops", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )


def test_inject_into_reaches_the_running_simulator(simulator):
    with pytest.raises(ValueError, match="no-such-fault"):
        inject_into(simulator.kubeconfig_path, "no-such-fault")
    assert inject_into(simulator.kubeconfig_path, "service-outage") == {"injected": "service-outage"}


def test_api_is_served_over_tls_with_the_kubeconfig_ca(simulator, kube_api):
    assert simulator.api_url.startswith("https://")
    assert kube_api.configuration.host == simulator.api_url
    assert client.VersionApi(kube_api).get_code().git_version.startswith("v1.")


# ---- fuzzing: junk never causes a 500 -------------------------------------------------------


@pytest.fixture(scope="module")
def bare_api():
    store = Store()
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    store.create(_config_map("cm") | {"metadata": {"name": "cm", "namespace": NS}})
    api = KubeApi(store, None, "t")
    with TestClient(api.app, raise_server_exceptions=False) as test_client:
        yield test_client


_segments = st.sampled_from(
    [
        "api",
        "apis",
        "v1",
        "apps",
        "namespaces",
        NS,
        "pods",
        "configmaps",
        "cm",
        "status",
        "scale",
        "log",
        "eviction",
        "deployments",
        "nodes",
        "metrics.k8s.io",
        "v1beta1",
        "%00",
        "..",
        "llmdeployments",
        "inference.llm-d.io",
        "v1alpha1",
    ]
)
_bodies = st.one_of(
    st.binary(max_size=64),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "apiVersion",
                        "kind",
                        "metadata",
                        "name",
                        "spec",
                        "op",
                        "path",
                        "value",
                        "$patch",
                        "replicas",
                        "labels",
                        "data",
                    ]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    path=st.lists(_segments, min_size=1, max_size=6),
    body=_bodies,
    content_type=st.sampled_from(
        [
            "application/json",
            "application/merge-patch+json",
            "application/json-patch+json",
            "application/yaml",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
            "text/plain",
        ]
    ),
    query=st.sampled_from(
        [
            "",
            "?dryRun=All",
            "?labelSelector=a%20in",
            "?fieldSelector=x",
            "?tailLines=-1",
            "?fieldManager=f",
            "?dryRun=x",
        ]
    ),
)
def test_junk_requests_never_cause_a_server_error(bare_api, method, path, body, content_type, query):
    answer = bare_api.request(
        method,
        "/" + "/".join(path) + query,
        content=body,
        headers={"Authorization": "Bearer t", "Content-Type": content_type},
    )
    assert answer.status_code < 500, (method, path, body, answer.text)
    if answer.status_code >= 400:
        assert answer.json()["kind"] == "Status"


def test_list_stays_fast_with_hundreds_of_objects():
    store = Store()
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for i in range(500):
        store.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{i}", "namespace": NS, "labels": {"app": f"a{i % 10}"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            }
        )
    started = time.perf_counter()
    for _ in range(20):
        assert len(store.list("pods", NS, label_selector="app=a1")) == 50
    assert (time.perf_counter() - started) / 20 < 0.05
