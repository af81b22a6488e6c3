"""The discovery documents kubectl and client libraries read before anything else."""

from __future__ import annotations

from simulator.store import METRICS_RESOURCES, RESOURCES, REVIEW_RESOURCES, ResourceType

SERVER_VERSION = {
    "major": "1",
    "minor": "36",
    "gitVersion": "v1.36.0+llmd-simulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_CATEGORY_ALL = {"pods", "services", "deployments", "replicasets", "daemonsets"}


def _all_types() -> list[ResourceType]:
    return list(RESOURCES.values()) + list(METRICS_RESOURCES.values()) + list(REVIEW_RESOURCES.values())


def group_versions() -> dict[tuple[str, str], dict[str, ResourceType]]:
    """(group, version) -> {plural: type}."""
    found: dict[tuple[str, str], dict[str, ResourceType]] = {}
    for rtype in _all_types():
        found.setdefault((rtype.group, rtype.version), {})[rtype.plural] = rtype
    return found


def api_versions() -> dict:
    return {
        "kind": "APIVersions",
        "apiVersion": "v1",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }


def api_group(group: str) -> dict | None:
    versions = [v for (g, v) in group_versions() if g == group]
    if not group or not versions:
        return None
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": entries, "preferredVersion": entries[0]}


def api_group_list() -> dict:
    groups = sorted({g for (g, _) in group_versions() if g})
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{k: v for k, v in (api_group(g) or {}).items() if k not in ("kind", "apiVersion")} for g in groups],
    }


def api_resource_list(group: str, version: str) -> dict | None:
    types = group_versions().get((group, version))
    if types is None:
        return None
    resources: list[dict] = []
    for rtype in types.values():
        resources.append(_resource_entry(rtype))
        resources.extend(_subresource_entry(rtype, sub) for sub in rtype.subresources)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _resource_entry(rtype: ResourceType) -> dict:
    entry = {
        "name": rtype.plural,
        "singularName": rtype.singular_name,
        "namespaced": rtype.namespaced,
        "kind": rtype.kind,
        "verbs": list(rtype.verbs),
    }
    if rtype.short_names:
        entry["shortNames"] = list(rtype.short_names)
    if rtype.plural in _CATEGORY_ALL and rtype.stored:
        entry["categories"] = ["all"]
    return entry


def _subresource_entry(rtype: ResourceType, sub: str) -> dict:
    entry = {
        "name": f"{rtype.plural}/{sub}",
        "singularName": "",
        "namespaced": rtype.namespaced,
        "kind": rtype.kind,
        "verbs": ["get", "patch", "update"],
    }
    if sub == "scale":
        entry.update(group="autoscaling", version="v1", kind="Scale")
    elif sub == "eviction":
        entry.update(group="policy", version="v1", kind="Eviction", verbs=["create"])
    elif sub == "log":
        entry["verbs"] = ["get"]
    elif sub == "token":
        entry.update(group="authentication.k8s.io", version="v1", kind="TokenRequest", verbs=["create"])
    return entry


# ---- OpenAPI v3 ------------------------------------------------------------------------------
# kubectl apply/create ask /openapi/v3 whether the server validates fields itself (the
# fieldValidation query parameter on PATCH). Saying yes spares kubectl a client-side schema.


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_index() -> dict:
    return {
        "paths": {
            _gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash={SERVER_VERSION['gitVersion']}"}
            for (g, v) in group_versions()
        }
    }


def openapi_v3_document(gv_path: str) -> dict | None:
    types = next((t for (g, v), t in group_versions().items() if _gv_path(g, v) == gv_path), None)
    if types is None:
        return None
    paths: dict[str, dict] = {}
    field_validation = {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
    for rtype in types.values():
        if not rtype.stored:
            continue
        gvk = {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}
        base = (
            f"/{gv_path}/namespaces/{{namespace}}/{rtype.plural}" if rtype.namespaced else f"/{gv_path}/{rtype.plural}"
        )
        operation = {
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [field_validation],
            "responses": {"200": {"description": "OK"}},
        }
        paths[base] = {"post": {**operation, "x-kubernetes-action": "post"}}
        paths[f"{base}/{{name}}"] = {
            "patch": {**operation, "x-kubernetes-action": "patch"},
            "put": {**operation, "x-kubernetes-action": "put"},
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (llm-d simulator)", "version": SERVER_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }
