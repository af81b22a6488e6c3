"""Who is calling and what they may do: Kubernetes authentication and RBAC for the simulator.

Two kinds of caller. The admin token of the kubeconfig `SimulatedCluster` writes is in
`system:masters` and may do anything, as a cluster admin's certificate would. A ServiceAccount
token, minted by the TokenRequest subresource (`kubectl create token SA -n NS`), authenticates as
`system:serviceaccount:NS:SA` in the groups `system:serviceaccounts`,
`system:serviceaccounts:NS` and `system:authenticated`, and is authorized by the Roles,
ClusterRoles and bindings stored in the cluster, with the apiserver's semantics:

- a ClusterRoleBinding grants its ClusterRole's rules in every namespace and on cluster-scoped
  objects; a RoleBinding grants its Role's (or a ClusterRole's) rules in its namespace only;
- a rule matches on `verbs`, `apiGroups`, `resources` (`pods/eviction` names a subresource,
  `*` and `*/scale` / `pods/*` wildcards) and `resourceNames` (which never match a request
  without a name: list, watch, create, deletecollection); `nonResourceURLs` (a trailing `*` is
  a prefix) for paths such as `/version`;
- the bootstrap policy every cluster ships: any authenticated caller may read discovery
  (`system:discovery`, `system:public-info-viewer`) and ask what it may do
  (`system:basic-user`: SelfSubjectAccessReview, SelfSubjectRulesReview, SelfSubjectReview).

Everything else is denied with the apiserver's 403 message (`pods "x" is forbidden: User
"system:serviceaccount:..." cannot create resource "pods/eviction" in API group "" in the
namespace "default"`); each denial is kept in `denials` for tests. Aggregated ClusterRoles
are not supported (no aggregationRule).
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from simulator.store import Store, now_iso

ADMIN = "system:admin"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
_RBAC_GROUP = "rbac.authorization.k8s.io"
_DISCOVERY_URLS = (
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/openapi",
    "/openapi/*",
    "/version",
    "/version/",
    "/healthz",
    "/livez",
    "/readyz",
)
# system:basic-user / system:discovery / system:public-info-viewer, bound to system:authenticated
BOOTSTRAP_RULES: tuple[dict, ...] = (
    {
        "verbs": ["create"],
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    },
    {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
    {"verbs": ["get"], "nonResourceURLs": list(_DISCOVERY_URLS)},
)
_READ_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
TOKEN_SECONDS = 3600


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]
    uid: str = ""

    @property
    def admin(self) -> bool:
        return MASTERS in self.groups


@dataclass(frozen=True)
class Attributes:
    """One request as the authorizer sees it (k8s.io/apiserver's RequestInfo)."""

    verb: str
    path: str
    resource_request: bool = True
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def resource_and_sub(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def describe(self) -> str:
        """`create pods/eviction in namespace "default"`: the verb and what it is on, for messages."""
        where = f' in namespace "{self.namespace}"' if self.namespace else ""
        group = f".{self.api_group}" if self.api_group else ""
        return f"{self.verb} {self.resource_and_sub}{group}{where}"


@dataclass
class Rbac:
    """Authentication and authorization over the cluster's store."""

    store: Store
    admin_token: str
    denials: list[tuple[User, Attributes]] = field(default_factory=list)
    granted: list[tuple[User, Attributes]] = field(default_factory=list)  # ServiceAccounts' allowed requests
    _tokens: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # token -> (ns, sa, uid)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- authentication ----------------------------------------------------------------

    def authenticate(self, authorization: str) -> User | None:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return User(ADMIN, (MASTERS, AUTHENTICATED))
        with self._lock:
            bound = self._tokens.get(token)
        if bound is None:
            return None
        namespace, name, uid = bound
        account = self.store.get("serviceaccounts", namespace, name)
        if account is None or account["metadata"].get("uid") != uid:
            return None  # a bound token dies with its ServiceAccount
        return User(
            f"system:serviceaccount:{namespace}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
            uid,
        )

    def request_token(self, namespace: str, name: str, body: Any) -> dict | None:
        """TokenRequest (`POST .../serviceaccounts/NAME/token`): None when the account is missing."""
        account = self.store.get("serviceaccounts", namespace, name)
        if account is None:
            return None
        spec = (body or {}).get("spec") or {} if isinstance(body, dict) else {}
        seconds = spec.get("expirationSeconds") or TOKEN_SECONDS
        token = "sim-sa." + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = (namespace, name, account["metadata"]["uid"])
        expires = datetime.now(timezone.utc) + timedelta(seconds=int(seconds))
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": now_iso()},
            "spec": {
                "audiences": spec.get("audiences") or ["https://kubernetes.default.svc"],
                "expirationSeconds": int(seconds),
                "boundObjectRef": spec.get("boundObjectRef"),
            },
            "status": {"token": token, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")},
        }

    # ---- authorization -----------------------------------------------------------------

    def authorize(self, user: User, attrs: Attributes) -> bool:
        if user.admin:
            return True
        if any(_rule_matches(rule, attrs) for rule in self.rules_for(user, attrs.namespace)):
            with self._lock:
                self.granted.append((user, attrs))
            return True
        with self._lock:
            self.denials.append((user, attrs))
        return False

    def rules_for(self, user: User, namespace: str) -> list[dict]:
        """Every rule that applies to `user` in `namespace` ("" = cluster scope only)."""
        if user.admin:
            return [
                {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                {"verbs": ["*"], "nonResourceURLs": ["*"]},
            ]
        rules = list(BOOTSTRAP_RULES)
        for binding in self.store.list("clusterrolebindings"):
            if _binds(binding, user):
                rules += self._role_rules(binding.get("roleRef") or {}, None)
        if namespace:
            for binding in self.store.list("rolebindings", namespace):
                if _binds(binding, user):
                    rules += self._role_rules(binding.get("roleRef") or {}, namespace)
        return rules

    def _role_rules(self, ref: dict, namespace: str | None) -> list[dict]:
        if ref.get("apiGroup", _RBAC_GROUP) != _RBAC_GROUP:
            return []
        if ref.get("kind") == "ClusterRole":
            role = self.store.get("clusterroles", None, ref.get("name", ""))
        elif ref.get("kind") == "Role" and namespace:
            role = self.store.get("roles", namespace, ref.get("name", ""))
        else:
            role = None
        return [r for r in (role or {}).get("rules") or [] if isinstance(r, dict)]

    def forbidden_message(self, user: User, attrs: Attributes) -> str:
        """The apiserver's wording, which kubectl and the client show as is."""
        if not attrs.resource_request:
            return f'forbidden: User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
        what = attrs.resource + (f".{attrs.api_group}" if attrs.api_group else "")
        if attrs.name:
            what += f' "{attrs.name}"'
        where = f' in the namespace "{attrs.namespace}"' if attrs.namespace else " at the cluster scope"
        return (
            f'{what} is forbidden: User "{user.name}" cannot {attrs.verb} resource "{attrs.resource_and_sub}" in API group '
            f'"{attrs.api_group}"{where}'
        )

    # ---- the review APIs ---------------------------------------------------------------

    def access_review(self, user: User, body: Any) -> dict:
        """SelfSubjectAccessReview (`kubectl auth can-i VERB RESOURCE`)."""
        spec = body.get("spec") if isinstance(body, dict) else None
        spec = spec if isinstance(spec, dict) else {}
        resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if isinstance(resource, dict):
            attrs = Attributes(
                verb=resource.get("verb", ""),
                path="",
                api_group=resource.get("group", ""),
                resource=resource.get("resource", ""),
                subresource=resource.get("subresource", ""),
                namespace=resource.get("namespace", ""),
                name=resource.get("name", ""),
            )
        elif isinstance(non_resource, dict):
            attrs = Attributes(
                verb=non_resource.get("verb", ""), path=non_resource.get("path", ""), resource_request=False
            )
        else:
            raise ValueError("spec.resourceAttributes or spec.nonResourceAttributes is required")
        rules = self.rules_for(user, attrs.namespace)
        allowed = user.admin or any(_rule_matches(rule, attrs) for rule in rules)
        status: dict[str, Any] = {"allowed": allowed}
        if allowed and not user.admin:
            status["reason"] = "RBAC: allowed by the bindings of " + user.name
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }

    def rules_review(self, user: User, body: Any) -> dict:
        """SelfSubjectRulesReview (`kubectl auth can-i --list -n NS`)."""
        spec = body.get("spec") if isinstance(body, dict) else None
        namespace = (spec or {}).get("namespace", "") if isinstance(spec, dict) else ""
        resource_rules, non_resource_rules = [], []
        for rule in self.rules_for(user, namespace):
            if rule.get("nonResourceURLs"):
                non_resource_rules.append(
                    {"verbs": list(rule.get("verbs") or []), "nonResourceURLs": list(rule["nonResourceURLs"])}
                )
            else:
                entry = {
                    "verbs": list(rule.get("verbs") or []),
                    "apiGroups": list(rule.get("apiGroups") or []),
                    "resources": list(rule.get("resources") or []),
                }
                if rule.get("resourceNames"):
                    entry["resourceNames"] = list(rule["resourceNames"])
                resource_rules.append(entry)
        return {
            "kind": "SelfSubjectRulesReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": {"namespace": namespace},
            "status": {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": False},
        }

    def self_review(self, user: User) -> dict:
        """SelfSubjectReview (`kubectl auth whoami`)."""
        info: dict[str, Any] = {"username": user.name, "groups": list(user.groups)}
        if user.uid:
            info["uid"] = user.uid
        return {
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "status": {"userInfo": info},
        }


def request_attributes(method: str, path: str, query: Any) -> Attributes:
    """The authorizer's view of an HTTP request (verb from the method, resource from the path)."""
    segments = [s for s in path.split("/") if s]
    verb = _READ_VERBS.get(method, method.lower())
    if segments[:2] == ["api", "v1"]:
        group, rest = "", segments[2:]
    elif segments[:1] == ["apis"] and len(segments) >= 4:
        group, rest = segments[1], segments[3:]
    else:
        return Attributes(verb=verb, path=path if path.startswith("/") else "/" + path, resource_request=False)
    if not rest:
        return Attributes(verb=verb, path=path, resource_request=False)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    elif rest[0] == "namespaces" and len(rest) == 2:
        namespace = rest[1]  # the Namespace object itself is "in" its namespace for RBAC
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if not name:
        if method in ("GET", "HEAD"):
            verb = "watch" if query.get("watch") in ("true", "1") else "list"
        elif method == "DELETE":
            verb = "deletecollection"
    elif method in ("GET", "HEAD") and query.get("watch") in ("true", "1"):
        verb = "watch"
    return Attributes(
        verb=verb,
        path=path,
        api_group=group,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
    )


def _binds(binding: dict, user: User) -> bool:
    for subject in binding.get("subjects") or []:
        if not isinstance(subject, dict):
            continue
        kind, name = subject.get("kind"), subject.get("name")
        if kind == "ServiceAccount":
            if user.name == f"system:serviceaccount:{subject.get('namespace', '')}:{name}":
                return True
        elif kind == "User" and name == user.name:
            return True
        elif kind == "Group" and name in user.groups:
            return True
    return False


def _rule_matches(rule: dict, attrs: Attributes) -> bool:
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if not attrs.resource_request:
        return any(
            url == "*" or url == attrs.path or (url.endswith("*") and attrs.path.startswith(url[:-1]))
            for url in rule.get("nonResourceURLs") or []
        )
    if rule.get("nonResourceURLs") and not rule.get("resources"):
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs.api_group not in groups:
        return False
    if not _resource_matches(rule.get("resources") or [], attrs):
        return False
    names = rule.get("resourceNames") or []
    return not names or (bool(attrs.name) and attrs.name in names)


def _resource_matches(resources: list[str], attrs: Attributes) -> bool:
    wanted = attrs.resource_and_sub
    for resource in resources:
        if resource in ("*", wanted):
            return True
        if attrs.subresource and resource in (f"*/{attrs.subresource}", f"{attrs.resource}/*"):
            return True
    return False


# ---- protobuf request bodies ----------------------------------------------------------------
# kubectl's typed clients (`auth can-i`, `create token`) send protobuf. The simulator answers in
# JSON (they accept it) and reads the few fields these requests carry from the wire format:
# the "k8s\0" magic, a runtime.Unknown {1: TypeMeta, 2: raw}, then the object's own message.

_PROTOBUF_MAGIC = b"k8s\x00"
# field numbers of the messages read (k8s.io/api/authorization/v1, authentication/v1 generated.proto)
_RESOURCE_ATTRIBUTES = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource", 6: "subresource", 7: "name"}
_NON_RESOURCE_ATTRIBUTES = {1: "path", 2: "verb"}


def decode_protobuf(raw: bytes) -> dict:
    """A JSON-shaped SelfSubjectAccessReview, SelfSubjectRulesReview or TokenRequest from protobuf.

    Raises ValueError for anything else (the caller answers 415: send JSON instead).
    """
    if not raw.startswith(_PROTOBUF_MAGIC):
        raise ValueError("not a Kubernetes protobuf body")
    unknown = _fields(raw[len(_PROTOBUF_MAGIC) :])
    type_meta = _fields(unknown.get(1, [b""])[0])
    kind = type_meta.get(2, [b""])[0].decode()
    obj = _fields(unknown.get(2, [b""])[0])
    spec = _fields(obj.get(2, [b""])[0])
    if kind == "SelfSubjectAccessReview":
        out: dict[str, Any] = {}
        if 1 in spec:
            out["resourceAttributes"] = _strings(spec[1][0], _RESOURCE_ATTRIBUTES)
        if 2 in spec:
            out["nonResourceAttributes"] = _strings(spec[2][0], _NON_RESOURCE_ATTRIBUTES)
        return {"kind": kind, "spec": out}
    if kind == "SelfSubjectRulesReview":
        return {"kind": kind, "spec": _strings(obj.get(2, [b""])[0], {1: "namespace"})}
    if kind == "TokenRequest":
        found: dict[str, Any] = {"audiences": [a.decode() for a in spec.get(1, [])]}
        if 4 in spec:
            found["expirationSeconds"] = spec[4][0]
        return {"kind": kind, "spec": found}
    if kind == "SelfSubjectReview":
        return {"kind": kind}
    raise ValueError(f"protobuf {kind or 'bodies'} not supported")


def _strings(raw: bytes, names: dict[int, str]) -> dict[str, str]:
    fields = _fields(raw)
    return {
        name: fields[number][0].decode()
        for number, name in names.items()
        if number in fields and isinstance(fields[number][0], bytes)
    }


def _fields(raw: bytes) -> dict[int, list[Any]]:
    """Protobuf wire format: field number -> values (bytes for length-delimited, int for varints)."""
    found: dict[int, list[Any]] = {}
    i = 0
    value: int | bytes
    while i < len(raw):
        key, i = _varint(raw, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(raw, i)
        elif wire == 2:
            size, i = _varint(raw, i)
            value, i = raw[i : i + size], i + size
        elif wire == 1:
            value, i = raw[i : i + 8], i + 8
        elif wire == 5:
            value, i = raw[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        found.setdefault(number, []).append(value)
    return found


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(raw):
            raise ValueError("truncated protobuf")
        byte = raw[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i
