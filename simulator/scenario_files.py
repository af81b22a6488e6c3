"""A fault staged from a YAML file: a team stages its own scenario without writing simulator code.

The file's shape (every key but `name` optional; unknown keys are refused)::

    name: team-x-bad-config            # required
    description: what it breaks and what heals it
    namespace: team-x                  # where namespaced entries without one go (default "default")
    create:                            # Kubernetes objects, exactly as `kubectl apply -f` takes them
      - apiVersion: apps/v1            # optional: the served kind's own
        kind: Deployment
        metadata: {name: broken-router}   # namespace defaults as above
        spec: {...}
    patch:                             # changes to objects that exist (or that `create` makes)
      - kind: Deployment               # apiVersion optional, as above
        namespace: production          # optional, as above; ignored for cluster-scoped kinds
        name: llm-d-decode
        type: merge                    # merge (RFC 7386, the default) | strategic | json (RFC 6902)
        patch: {spec: {replicas: 0}}
    delete:                            # objects removed, with what they own (not Namespaces)
      - {kind: ConfigMap, namespace: production, name: router-config}

Kinds are those the simulator serves (simulator/store.py RESOURCES). No `metrics:` section: the
simulator has no generic knob for a service's error fraction or latency (only the Python faults'
hooks, simulator/scenarios.py `Fault`), so traffic-shaping faults are still written in Python.

All or nothing: under the store's lock every entry is checked and dry-run in order (creates,
then patches, then deletes, each seeing the ones before) with the apiserver's own rules (the
patch flavours of simulator/patch.py, the checks of simulator/validation.py, its create
defaults); any problem raises ScenarioFileError naming the file, each entry (`create[1]`,
`patch[0]`) and what is wrong, and nothing is written. Only then is the result written.

A reset to the baseline (ClusterBehaviour.reset) deletes every workload object and seeds the
baseline again, which undoes a file's creates, patches and deletes of those kinds; for the kinds a
reset keeps (scenarios.KEPT_ON_RESET: namespaces, ServiceAccounts, Secrets, RBAC) this module
records each object's state before the file (`ClusterBehaviour.kept_changes`) so reset puts it back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pydantic
import yaml

from simulator import patch as patches
from simulator.api import _default as apiserver_defaults
from simulator.api import _reset_status_on_create as reset_status_on_create
from simulator.scenarios import KEPT_ON_RESET
from simulator.store import RESOURCES, ResourceType, Store, copy_json
from simulator.validation import ValidationError, validate

if TYPE_CHECKING:
    from simulator.cluster import ClusterBehaviour

_PATCH_TYPES = {"merge": patches.MERGE, "strategic": patches.STRATEGIC, "json": patches.JSON_PATCH}
_CUSTOM_GROUPS = {"inference.llm-d.io", "serving.kserve.io"}  # no strategic merge, as on the apiserver
_Key = tuple[str, str, str]  # (plural, namespace or "", name)


class ScenarioFileError(ValueError):
    """The file is refused and nothing was applied; `problems` are (entry, what is wrong) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source, self.problems = source, problems
        super().__init__(f"{source}: " + "; ".join(f"{where}: {what}" for where, what in problems))


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class ObjectRef(_Strict):
    """One `delete:` entry; a `patch:` entry adds `patch` and `type`."""

    api_version: str | None = pydantic.Field(None, alias="apiVersion")
    kind: str
    namespace: str | None = None
    name: str = pydantic.Field(min_length=1)


class PatchEntry(ObjectRef):
    patch: dict | list
    type: Literal["merge", "strategic", "json"] = "merge"


class ScenarioFile(_Strict):
    name: str = pydantic.Field(min_length=1)
    description: str = ""
    namespace: str = "default"
    create: list[dict[str, Any]] = []
    patch: list[PatchEntry] = []
    delete: list[ObjectRef] = []


@dataclass
class Staged:
    """What a file did: "Kind namespace/name" (or "Kind name") per object."""

    name: str
    created: list[str] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def parse_scenario(document: str | bytes | dict, source: str = "<scenario>") -> ScenarioFile:
    """The file's model; ScenarioFileError for YAML that does not parse or does not fit the shape."""
    if isinstance(document, (str, bytes)):
        try:
            document = yaml.safe_load(document)
        except yaml.YAMLError as exc:
            raise ScenarioFileError(source, [("file", f"not valid YAML: {exc}")]) from None
    if not isinstance(document, dict):
        raise ScenarioFileError(source, [("file", "must be a mapping with at least `name:`")])
    try:
        return ScenarioFile.model_validate(document)
    except pydantic.ValidationError as exc:
        raise ScenarioFileError(source, [(_where(err["loc"]), err["msg"]) for err in exc.errors()]) from None


def stage_scenario(
    sim: ClusterBehaviour | Store, document: str | bytes | dict | ScenarioFile, source: str = "<scenario>"
) -> Staged:
    """Stage a scenario file (its YAML text, the parsed dict, or its model) on a running cluster:
    all of it, or nothing and ScenarioFileError. `source` names the file in messages. Given a bare
    Store (no behaviour), nothing is recorded for a reset."""
    scenario = document if isinstance(document, ScenarioFile) else parse_scenario(document, source)
    store = sim if isinstance(sim, Store) else sim.store
    with store.lock:
        plan = _Plan(store, scenario.namespace)
        for i, obj in enumerate(scenario.create):
            plan.run(f"create[{i}]", lambda obj=obj: plan.create(obj))
        for i, entry in enumerate(scenario.patch):
            plan.run(f"patch[{i}]", lambda entry=entry: plan.patch(entry))
        for i, ref in enumerate(scenario.delete):
            plan.run(f"delete[{i}]", lambda ref=ref: plan.delete(ref))
        if plan.problems:
            raise ScenarioFileError(source, plan.problems)
        changes = getattr(sim, "kept_changes", None)
        for key, before in plan.originals.items():
            after = plan.objects[key]
            if key[0] in KEPT_ON_RESET and changes is not None and after != before:
                changes.append((key, copy_json(before)))
            if after is None and before is not None:
                store.delete_with_dependents(key[0], key[1] or None, key[2])
            elif after is not None and before is None:
                store.create(after)
            elif after is not None and after != before:
                store.update(after)
        return Staged(scenario.name, plan.created, plan.patched, plan.deleted)


def restore_kept(store: Store, changes: list[tuple[_Key, dict | None]]) -> None:
    """Undo, newest first, what scenario files did to the kinds a reset keeps (ClusterBehaviour.reset)."""
    for (plural, namespace, name), before in reversed(changes):
        if before is None:
            store.delete(plural, namespace or None, name)
            if plural == "namespaces":  # and whatever was put in the namespace the file made
                for other in RESOURCES.values():
                    for child in store.list(other.plural, name) if other.namespaced else ():
                        store.delete(other.plural, name, child["metadata"]["name"])
        elif store.get(plural, namespace or None, name) is not None:
            store.update(before)
        else:
            store.create(before)


class _Problem(Exception):
    pass


class _Plan:
    """The store as the file would leave it, built entry by entry without writing."""

    def __init__(self, store: Store, namespace: str):
        self.store, self.namespace = store, namespace
        self.objects: dict[_Key, dict | None] = {}  # planned state of each touched object
        self.originals: dict[_Key, dict | None] = {}  # its state in the store now
        self.problems: list[tuple[str, str]] = []
        self.created: list[str] = []
        self.patched: list[str] = []
        self.deleted: list[str] = []

    def run(self, where: str, step: Any) -> None:
        try:
            step()
        except _Problem as exc:
            self.problems.append((where, str(exc)))

    def create(self, obj: dict) -> None:
        obj = copy_json(obj)
        rtype = _served(obj.get("apiVersion"), obj.get("kind"))
        obj.setdefault("apiVersion", rtype.api_version)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict) or not meta.get("name"):
            raise _Problem(f"{rtype.kind}: metadata.name is required")
        if rtype.namespaced:
            meta.setdefault("namespace", self.namespace)
            self._need_namespace(meta["namespace"])
        else:
            meta.pop("namespace", None)
        reset_status_on_create(rtype, obj)
        apiserver_defaults(obj)
        key = self._key(rtype, meta.get("namespace"), meta["name"])
        if self._get(key) is not None:
            raise _Problem(f"{_label(rtype, key)} already exists")
        _validate(rtype, obj)
        self.objects[key] = obj
        self.created.append(_label(rtype, key))

    def patch(self, entry: PatchEntry) -> None:
        rtype = _served(entry.api_version, entry.kind)
        key = self._key(rtype, entry.namespace or self.namespace, entry.name)
        old = self._get(key)
        if old is None:
            raise _Problem(
                f"{_label(rtype, key)} does not exist (patch needs an object the cluster has or the file creates)"
            )
        if entry.type == "strategic" and rtype.group in _CUSTOM_GROUPS:
            raise _Problem(f"{rtype.kind} is a custom resource: strategic merge is not supported, use type: merge")
        try:
            new = patches.apply_patch(old, entry.patch, _PATCH_TYPES[entry.type])
        except patches.PatchError as exc:
            raise _Problem(str(exc)) from None
        for path in ("apiVersion", "kind"):
            if new.get(path) != old[path]:
                raise _Problem(f"{path} cannot be changed from {old[path]!r}")
        for path in ("name", "namespace"):
            if not isinstance(new.get("metadata"), dict) or new["metadata"].get(path) != old["metadata"].get(path):
                raise _Problem(f"metadata.{path} cannot be changed")
        if "status" in rtype.subresources:  # status is the controllers', as through the API
            new["status"] = copy_json(old.get("status"))
            if new["status"] is None:
                new.pop("status")
        _validate(rtype, new)
        self.objects[key] = new
        if _label(rtype, key) not in self.created + self.patched:
            self.patched.append(_label(rtype, key))

    def delete(self, ref: ObjectRef) -> None:
        rtype = _served(ref.api_version, ref.kind)
        if rtype.plural == "namespaces":
            raise _Problem("deleting a Namespace is not supported (a reset could not bring back what it held)")
        key = self._key(rtype, ref.namespace or self.namespace, ref.name)
        if self._get(key) is None:
            raise _Problem(f"{_label(rtype, key)} does not exist")
        self.objects[key] = None
        self.deleted.append(_label(rtype, key))

    def _need_namespace(self, name: str) -> None:
        if self._get(("namespaces", "", name)) is None:
            raise _Problem(f"namespace {name!r} does not exist (create it first in the same file)")

    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> _Key:
        return (rtype.plural, (namespace or "") if rtype.namespaced else "", name)

    def _get(self, key: _Key) -> dict | None:
        if key not in self.objects:
            self.originals[key] = self.objects[key] = self.store.get(key[0], key[1] or None, key[2])
        return self.objects[key]


def _served(api_version: Any, kind: Any) -> ResourceType:
    """The served resource of a kind (and apiVersion, when given)."""
    if not kind:
        raise _Problem("kind is required")
    matches = [r for r in RESOURCES.values() if r.kind == kind and api_version in (None, r.api_version)]
    if not matches:
        known = sorted({r.kind for r in RESOURCES.values()} - {"Event"})
        wanted = f"{kind!r}" + (f" in {api_version!r}" if api_version else "")
        raise _Problem(f"kind {wanted} is not served by the simulator; it serves {', '.join(known)}")
    return matches[0]


def _validate(rtype: ResourceType, obj: dict) -> None:
    try:
        validate(rtype, obj)
    except ValidationError as exc:
        raise _Problem(str(exc)) from None


def _label(rtype: ResourceType, key: _Key) -> str:
    return f"{rtype.kind} {key[1]}/{key[2]}" if key[1] else f"{rtype.kind} {key[2]}"


def _where(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "file"
