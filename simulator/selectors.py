"""Label and field selectors, with the apiserver's grammar and its supported fields."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[dict], bool]


class SelectorError(ValueError):
    """A selector that cannot be parsed, or names a field the resource cannot be selected by."""


# Fields the real apiserver accepts per resource (metadata.name/namespace work everywhere).
_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
_FIELDS: dict[str, tuple[str, ...]] = {
    "pods": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "events": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "nodes": ("spec.unschedulable",),
    "namespaces": ("status.phase",),
    "replicasets": ("status.replicas",),
}

_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")


def compile_selectors(resource: str, label_selector: str | None, field_selector: str | None) -> Matcher:
    """One predicate for both selectors; raises SelectorError on a bad selector."""
    labels = parse_label_selector(label_selector or "")
    fields = parse_field_selector(resource, field_selector or "")
    return lambda obj: labels(obj) and fields(obj)


# ---- label selectors -------------------------------------------------------------------


def parse_label_selector(text: str) -> Matcher:
    """`a=b,c!=d,e in (f,g),h notin (i),j,!k` -> predicate over an object's labels."""
    tokens = _tokenize(text)
    requirements: list[Callable[[dict[str, str]], bool]] = []
    pos = 0
    while pos < len(tokens):
        requirement, pos = _parse_requirement(tokens, pos)
        requirements.append(requirement)
        if pos < len(tokens):
            if tokens[pos] != ",":
                raise SelectorError(f"invalid label selector {text!r}: expected ',' before {tokens[pos]!r}")
            pos += 1
            if pos == len(tokens):
                raise SelectorError(f"invalid label selector {text!r}: trailing ','")

    def match(obj: dict) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(req(labels) for req in requirements)

    return match


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SelectorError(f"invalid selector {text!r}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


def _parse_requirement(tokens: list[str], pos: int) -> tuple[Callable[[dict], bool], int]:
    if tokens[pos] == "!":
        key = _label_key(tokens, pos + 1)
        return (lambda labels: key not in labels), pos + 2
    key = _label_key(tokens, pos)
    pos += 1
    op = tokens[pos] if pos < len(tokens) else ","
    if op == ",":
        return (lambda labels: key in labels), pos
    if op in ("=", "==", "!="):
        value = tokens[pos + 1] if pos + 1 < len(tokens) and tokens[pos + 1] != "," else ""
        _check_value(value)
        step = 2 if value else 1
        if op == "!=":
            return (lambda labels: labels.get(key) != value), pos + step
        return (lambda labels: key in labels and labels[key] == value), pos + step
    if op in ("in", "notin"):
        values, pos = _value_set(tokens, pos + 1)
        if op == "in":
            return (lambda labels: labels.get(key) in values), pos
        return (lambda labels: labels.get(key) not in values), pos
    raise SelectorError(f"invalid label selector: unexpected {op!r} after key {key!r}")


def _label_key(tokens: list[str], pos: int) -> str:
    if pos >= len(tokens) or not _LABEL_KEY.match(tokens[pos]):
        found = tokens[pos] if pos < len(tokens) else "end of selector"
        raise SelectorError(f"invalid label selector: {found!r} is not a valid label key")
    return tokens[pos]


def _check_value(value: str) -> None:
    if not _LABEL_VALUE.match(value):
        raise SelectorError(f"invalid label selector: {value!r} is not a valid label value")


def _value_set(tokens: list[str], pos: int) -> tuple[frozenset[str], int]:
    if pos >= len(tokens) or tokens[pos] != "(":
        raise SelectorError("invalid label selector: expected '(' after in/notin")
    values: set[str] = set()
    pos += 1
    while pos < len(tokens) and tokens[pos] != ")":
        if tokens[pos] != ",":
            _check_value(tokens[pos])
            values.add(tokens[pos])
        pos += 1
    if pos >= len(tokens):
        raise SelectorError("invalid label selector: missing ')'")
    if not values:
        raise SelectorError("invalid label selector: in/notin needs at least one value")
    return frozenset(values), pos + 1


# ---- field selectors -------------------------------------------------------------------


def parse_field_selector(resource: str, text: str) -> Matcher:
    """`spec.nodeName=n1,status.phase!=Failed` -> predicate; only the resource's fields."""
    checks: list[Callable[[dict], bool]] = []
    allowed = _COMMON_FIELDS + _FIELDS.get(resource, ())
    for term in _split_unescaped(text):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^([A-Za-z.]+)\s*(!=|==|=)\s*(.*)$", term)
        if m is None:
            raise SelectorError(f"invalid field selector term {term!r}")
        field, op, value = m.group(1), m.group(2), _unescape(m.group(3))
        if field not in allowed:
            raise SelectorError(f'field label not supported: "{field}" (for {resource}: {", ".join(allowed)})')
        checks.append(_field_check(field, op, value))
    return lambda obj: all(check(obj) for check in checks)


def _field_check(field: str, op: str, value: str) -> Callable[[dict], bool]:
    path = field.split(".")
    if op == "!=":
        return lambda obj: _field_value(obj, path) != value
    return lambda obj: _field_value(obj, path) == value


def _field_value(obj: dict, path: list[str]) -> str:
    current: Any = obj
    for part in path:
        current = current.get(part) if isinstance(current, dict) else None
    if path == ["source"] and isinstance(current, dict):
        current = current.get("component")
    if isinstance(current, bool):
        return "true" if current else "false"
    return "" if current is None or isinstance(current, dict) else str(current)


def _split_unescaped(text: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)
