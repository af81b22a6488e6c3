"""The simulated cluster's object store: Kubernetes objects as plain JSON dicts, in memory.

Both the API server (simulator/server.py) and the behaviour (simulator/cluster.py) read and
write through this one store, so a controller's change looks to kubectl exactly like one made
by a real controller: a new resourceVersion, a watch event, an updated generation.
"""

from __future__ import annotations

import builtins
import secrets
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from simulator import selectors


class NotFound(Exception):
    """The object does not exist."""


class Conflict(Exception):
    """The object already exists, or a write carried a stale resourceVersion."""


class Invalid(Exception):
    """The object is not acceptable (missing name, wrong kind, ...)."""


class Gone(Exception):
    """A watch asked for a resourceVersion older than the retained history."""


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" = core
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )
    subresources: tuple[str, ...] = ()
    singular: str = ""
    stored: bool = True  # metrics.k8s.io objects are computed on each request, never stored

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


_READ_ONLY = ("get", "list")
RBAC_RESOURCES = tuple(
    ResourceType("rbac.authorization.k8s.io", "v1", plural, kind, namespaced)
    for plural, kind, namespaced in (
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
    )
)
_NO_COLLECTION_DELETE = ("create", "delete", "get", "list", "patch", "update", "watch")

RESOURCES: dict[str, ResourceType] = {
    r.plural: r
    for r in (
        ResourceType("", "v1", "namespaces", "Namespace", False, ("ns",), _NO_COLLECTION_DELETE, ("status",)),
        ResourceType("", "v1", "nodes", "Node", False, ("no",), subresources=("status",)),
        ResourceType("", "v1", "pods", "Pod", True, ("po",), subresources=("status", "log", "eviction")),
        ResourceType("", "v1", "events", "Event", True, ("ev",)),
        ResourceType("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
        ResourceType("", "v1", "services", "Service", True, ("svc",), _NO_COLLECTION_DELETE, ("status",)),
        ResourceType(
            "", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), subresources=("status",)
        ),
        ResourceType("apps", "v1", "deployments", "Deployment", True, ("deploy",), subresources=("status", "scale")),
        ResourceType("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), subresources=("status", "scale")),
        ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), subresources=("status",)),
        ResourceType(
            "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), subresources=("status",)
        ),
        ResourceType("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), subresources=("status",)),
        # identity and RBAC, enforced for ServiceAccount tokens (simulator/rbac.py)
        ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), subresources=("token",)),
        ResourceType("", "v1", "secrets", "Secret", True),
        *RBAC_RESOURCES,
        ResourceType(
            "inference.llm-d.io",
            "v1alpha1",
            "llmdeployments",
            "LLMDeployment",
            True,
            ("llmd",),
            subresources=("status",),
        ),
        ResourceType(
            "serving.kserve.io",
            "v1beta1",
            "inferenceservices",
            "InferenceService",
            True,
            ("isvc",),
            subresources=("status",),
        ),
    )
}

# Computed on each request from the behaviour; listed in discovery but never stored.
METRICS_RESOURCES: dict[str, ResourceType] = {
    r.plural: r
    for r in (
        ResourceType("metrics.k8s.io", "v1beta1", "pods", "PodMetrics", True, (), _READ_ONLY, stored=False),
        ResourceType("metrics.k8s.io", "v1beta1", "nodes", "NodeMetrics", False, (), _READ_ONLY, stored=False),
    )
}

# Answered on each request from the caller's identity and RBAC (simulator/rbac.py); never stored.
REVIEW_RESOURCES: dict[str, ResourceType] = {
    r.plural: r
    for r in (
        ResourceType(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            False,
            (),
            ("create",),
            stored=False,
        ),
        ResourceType(
            "authorization.k8s.io",
            "v1",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            False,
            (),
            ("create",),
            stored=False,
        ),
        ResourceType(
            "authentication.k8s.io",
            "v1",
            "selfsubjectreviews",
            "SelfSubjectReview",
            False,
            (),
            ("create",),
            stored=False,
        ),
    )
}

_BY_KIND: dict[tuple[str, str], ResourceType] = {(r.api_version, r.kind): r for r in RESOURCES.values()}


def resource_for(api_version: str, kind: str) -> ResourceType:
    """The stored resource type of an object's apiVersion/kind; Invalid if none."""
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        raise Invalid(f"no resource of kind {kind!r} in {api_version!r}") from None


def now_iso() -> str:
    """Wall-clock RFC3339 timestamp with a Z suffix, as the apiserver writes them."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def copy_json(value: Any) -> Any:
    """Deep copy of JSON-shaped data; several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


_Key = tuple[str, str]  # (namespace or "", name)
_WATCH_HISTORY = 20_000


class Store:
    """Thread-safe in-memory object store. Every read returns a deep copy."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._objects: dict[str, dict[_Key, dict]] = {plural: {} for plural in RESOURCES}
        self._rv = 0
        self._changes = 0
        # (resourceVersion, plural, event type, object) for watches
        self._history: deque[tuple[int, str, str, dict]] = deque(maxlen=_WATCH_HISTORY)
        self._written = threading.Condition(self.lock)
        # (namespace, involved object, type, reason, message) -> event key, so a repeat
        # bumps the existing event's count without scanning every event
        self._event_index: dict[tuple, _Key] = {}

    # ---- reads -------------------------------------------------------------------------

    def get(self, resource: str, namespace: str | None, name: str) -> dict | None:
        with self.lock:
            obj = self._table(resource).get(_key(resource, namespace, name))
            return copy_json(obj) if obj is not None else None

    def require(self, resource: str, namespace: str | None, name: str) -> dict:
        """`get` of an object the caller knows is there (the baseline's, or one it just listed or made);
        KeyError naming it when it is not: a simulator bug, not a cluster state."""
        obj = self.get(resource, namespace, name)
        if obj is None:
            raise KeyError(f"{resource} {namespace}/{name}: not in the store")
        return obj

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict]:
        """Objects of one resource, in one namespace or all (None), sorted by namespace/name.

        Raises selectors.SelectorError for a malformed or unsupported selector.
        """
        match = selectors.compile_selectors(resource, label_selector, field_selector)
        with self.lock:
            table = self._table(resource)
            found = [
                copy_json(obj)
                for (ns, _), obj in sorted(table.items())
                if (namespace is None or ns == namespace) and match(obj)
            ]
        return found

    def resource_version(self) -> str:
        """The store's current resourceVersion (a list's metadata.resourceVersion)."""
        with self.lock:
            return str(self._rv)

    def changed(self) -> int:
        """A counter bumped on each write, so controllers can skip idle ticks."""
        with self.lock:
            return self._changes

    # ---- writes ------------------------------------------------------------------------

    def create(self, obj: dict) -> dict:
        rtype = resource_for(obj.get("apiVersion", ""), obj.get("kind", ""))
        obj = copy_json(obj)
        meta = obj.setdefault("metadata", {})
        with self.lock:
            if not meta.get("name"):
                prefix = meta.get("generateName")
                if not prefix:
                    raise Invalid("metadata.name or metadata.generateName is required")
                meta["name"] = self._generate_name(rtype.plural, meta.get("namespace"), prefix)
            if not rtype.namespaced:
                meta.pop("namespace", None)
            elif not meta.get("namespace"):
                raise Invalid(f"{rtype.kind} {meta['name']!r}: metadata.namespace is required")
            key = _key(rtype.plural, meta.get("namespace"), meta["name"])
            table = self._objects[rtype.plural]
            if key in table:
                raise Conflict(f'{rtype.plural} "{meta["name"]}" already exists')
            meta["uid"] = str(uuid.uuid4())
            meta.setdefault("creationTimestamp", now_iso())
            meta["generation"] = 1
            meta.pop("deletionTimestamp", None)
            self._stamp(meta)
            table[key] = obj
            self._record(rtype.plural, "ADDED", obj)
            return copy_json(obj)

    def update(self, obj: dict, *, check_version: bool = False) -> dict:
        rtype = resource_for(obj.get("apiVersion", ""), obj.get("kind", ""))
        obj = copy_json(obj)
        meta = obj.setdefault("metadata", {})
        with self.lock:
            key = _key(rtype.plural, meta.get("namespace"), meta.get("name", ""))
            table = self._objects[rtype.plural]
            old = table.get(key)
            if old is None:
                raise NotFound(f'{rtype.plural} "{meta.get("name", "")}" not found')
            old_meta = old["metadata"]
            if check_version and meta.get("resourceVersion") not in (None, "", old_meta["resourceVersion"]):
                raise Conflict(
                    f'Operation cannot be fulfilled on {rtype.plural} "{meta["name"]}": the '
                    "object has been modified; please apply your changes to the latest version "
                    "and try again"
                )
            # identity and server-owned fields survive a replace, as on a real apiserver
            for field in ("uid", "creationTimestamp", "generation"):
                meta[field] = old_meta[field]
            if not rtype.namespaced:
                meta.pop("namespace", None)
            if obj.get("spec") != old.get("spec"):
                meta["generation"] = old_meta["generation"] + 1
            self._stamp(meta)
            table[key] = obj
            self._record(rtype.plural, "MODIFIED", obj)
            return copy_json(obj)

    def delete(self, resource: str, namespace: str | None, name: str) -> dict | None:
        """Remove an object at once (no finalizers); returns it, or None if it did not exist."""
        with self.lock:
            obj = self._table(resource).pop(_key(resource, namespace, name), None)
            if obj is None:
                return None
            obj["metadata"]["deletionTimestamp"] = now_iso()
            self._stamp(obj["metadata"])
            self._record(resource, "DELETED", obj)
            return copy_json(obj)

    def delete_with_dependents(self, resource: str, namespace: str | None, name: str) -> dict | None:
        """Delete an object and, transitively, every object it owns (the garbage collector's job)."""
        with self.lock:
            deleted = self.delete(resource, namespace, name)
            if deleted is not None:
                self._delete_owned_by(deleted["metadata"]["uid"])
            return deleted

    def _delete_owned_by(self, owner_uid: str) -> None:
        for plural in RESOURCES:
            for child in self.list(plural):
                if any(ref.get("uid") == owner_uid for ref in child["metadata"].get("ownerReferences") or []):
                    meta = child["metadata"]
                    self.delete_with_dependents(plural, meta.get("namespace"), meta["name"])

    def add_event(self, involved: dict, type_: str, reason: str, message: str, component: str = "simulator") -> dict:
        """Record a core/v1 Event about `involved`; a repeat bumps count and lastTimestamp."""
        meta = involved.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        ref = {
            "apiVersion": involved.get("apiVersion", "v1"),
            "kind": involved.get("kind", ""),
            "name": meta.get("name", ""),
            "namespace": namespace,
            "uid": meta.get("uid", ""),
        }
        dedupe = (namespace, tuple(sorted(ref.items())), type_, reason, message)
        with self.lock:
            existing = self._event_index.get(dedupe)
            event = self._objects["events"].get(existing) if existing else None
            if event is not None:
                event = copy_json(event)
                event["count"] = event.get("count", 1) + 1
                event["lastTimestamp"] = now_iso()
                return self.update(event)
            stamp = now_iso()
            created = self.create(
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {
                        "name": f"{ref['name']}.{secrets.token_hex(8)}",
                        "namespace": namespace,
                    },
                    "involvedObject": ref,
                    "type": type_,
                    "reason": reason,
                    "message": message,
                    "source": {"component": component},
                    "reportingComponent": component,
                    "reportingInstance": "",
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "eventTime": None,
                    "count": 1,
                }
            )
            self._event_index[dedupe] = (namespace, created["metadata"]["name"])
            return created

    # ---- watch -------------------------------------------------------------------------

    def events_since(
        self, resource: str, resource_version: int, timeout: float = 0.0
    ) -> tuple[int, builtins.list[tuple[str, dict]]]:
        """Watch events of `resource` written after `resource_version`.

        Waits up to `timeout` seconds for the first one. Returns (latest resourceVersion seen,
        [(type, object)]); raises Gone when the history no longer reaches back that far.
        """
        with self.lock:
            if self._rv <= resource_version and timeout > 0:
                self._written.wait(timeout)
            if self._history and resource_version < self._history[0][0] - 1:
                raise Gone(f"too old resource version: {resource_version} ({self._history[0][0] - 1})")
            events = [
                (etype, copy_json(obj))
                for rv, plural, etype, obj in self._history
                if rv > resource_version and plural == resource
            ]
            return self._rv, events

    # ---- internals ---------------------------------------------------------------------

    def _table(self, resource: str) -> dict[_Key, dict]:
        try:
            return self._objects[resource]
        except KeyError:
            raise NotFound(f"unknown resource {resource!r}") from None

    def _stamp(self, meta: dict) -> None:
        self._rv += 1
        self._changes += 1
        meta["resourceVersion"] = str(self._rv)

    def _record(self, plural: str, etype: str, obj: dict) -> None:
        self._history.append((self._rv, plural, etype, copy_json(obj)))
        self._written.notify_all()

    def _generate_name(self, plural: str, namespace: str | None, prefix: str) -> str:
        alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's: no vowels, no 0/1/3
        while True:
            name = prefix + "".join(secrets.choice(alphabet) for _ in range(5))
            if _key(plural, namespace, name) not in self._objects[plural]:
                return name


def _key(resource: str, namespace: str | None, name: str) -> _Key:
    rtype = RESOURCES.get(resource)
    if rtype is not None and not rtype.namespaced:
        return ("", name)
    return (namespace or "", name)
