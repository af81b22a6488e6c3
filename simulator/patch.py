"""The three PATCH flavours the apiserver accepts: strategic merge, JSON merge (RFC 7386)
and JSON patch (RFC 6902). All raise PatchError for a patch that cannot apply."""

from __future__ import annotations

from typing import Any

import jsonpatch

from simulator.store import copy_json

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


class PatchError(ValueError):
    """The patch is well-formed JSON but cannot be applied to the object."""


# Lists merged element-by-element in a strategic merge patch, keyed by their patchMergeKey
# in the Kubernetes API types. Other lists are replaced whole, as the apiserver does.
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "taints": "key",
    "addresses": "type",
    "ownerReferences": "uid",
    "resourceClaims": "name",
}
# `ports` is keyed by containerPort in a container and by port in a Service.
_PORT_KEYS = ("containerPort", "port")


def apply_patch(obj: dict, patch: Any, content_type: str) -> dict:
    """The object after `patch` (already JSON-decoded) of the given Content-Type."""
    if content_type == JSON_PATCH:
        return json_patch(obj, patch)
    if content_type == MERGE:
        return merge_patch(obj, _require_object(patch))
    if content_type == STRATEGIC:
        return strategic_merge_patch(obj, _require_object(patch))
    raise PatchError(f"unsupported patch type {content_type!r}")


def _require_object(patch: Any) -> dict:
    if not isinstance(patch, dict):
        raise PatchError(f"a merge patch must be a JSON object, not {type(patch).__name__}")
    return patch


# ---- RFC 7386 --------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy_json(patch)
    result = copy_json(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---- RFC 6902 --------------------------------------------------------------------------


def json_patch(obj: dict, operations: Any) -> dict:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a JSON array of operations")
    try:
        result = jsonpatch.JsonPatch(operations).apply(copy_json(obj))
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
        TypeError,
        KeyError,
        IndexError,
        ValueError,
        AttributeError,
    ) as exc:
        raise PatchError(f"the JSON patch cannot be applied: {exc}") from None
    if not isinstance(result, dict):
        raise PatchError("the JSON patch must leave an object")
    return result


# ---- strategic merge -------------------------------------------------------------------


def strategic_merge_patch(obj: dict, patch: dict) -> dict:
    return _merge_map(copy_json(obj), patch)


def _merge_map(original: dict, patch: dict) -> dict:
    if patch.get("$patch") == "replace":
        return {k: copy_json(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return {}
    retain = patch.get("$retainKeys")
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError("$retainKeys must be a list of field names")
        original = {k: v for k, v in original.items() if k in retain}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue  # ordering hints from kubectl apply; order is not significant here
        if key.startswith("$deleteFromPrimitiveList/"):
            _delete_from_primitive_list(original, key.split("/", 1)[1], value)
            continue
        if value is None:
            original.pop(key, None)
        elif isinstance(value, dict) and isinstance(original.get(key), dict):
            original[key] = _merge_map(original[key], value)
        elif isinstance(value, dict):
            original[key] = _merge_map({}, value)
        elif isinstance(value, list) and isinstance(original.get(key), list):
            original[key] = _merge_list(key, original[key], value)
        elif isinstance(value, list):
            original[key] = _merge_list(key, [], value)
        else:
            original[key] = copy_json(value)
    return original


def _merge_list(field: str, original: list, patch: list) -> list:
    merge_key = _merge_key(field, original + patch)
    if merge_key is None:
        if any(isinstance(item, dict) and "$patch" in item for item in patch):
            raise PatchError(f"$patch directives need a list with a merge key; {field!r} has none")
        return [copy_json(item) for item in patch]
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy_json(item) for item in patch if item.get("$patch") != "replace"]
    merged = [copy_json(item) for item in original]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise PatchError(f"every element of {field!r} in a strategic merge patch needs its merge key {merge_key!r}")
        index = next(
            (i for i, cur in enumerate(merged) if isinstance(cur, dict) and cur.get(merge_key) == item[merge_key]), None
        )
        if item.get("$patch") == "delete":
            if index is not None:
                merged.pop(index)
        elif index is None:
            merged.append(_merge_map({}, item))
        else:
            merged[index] = _merge_map(merged[index], item)
    return merged


def _merge_key(field: str, items: list) -> str | None:
    if field == "ports":
        for key in _PORT_KEYS:
            if any(isinstance(item, dict) and key in item for item in items):
                return key
        return None
    return _MERGE_KEYS.get(field)


def _delete_from_primitive_list(original: dict, field: str, values: Any) -> None:
    if not isinstance(values, list):
        raise PatchError(f"$deleteFromPrimitiveList/{field} must be a list")
    if isinstance(original.get(field), list):
        original[field] = [v for v in original[field] if v not in values]
