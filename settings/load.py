"""Reading the configuration: the YAML file, then RUNBOOKS_<SECTION>__<FIELD> variables on top, then
Temporal's own client configuration (TEMPORAL_* variables, its profile file) under what they leave unset
in `temporal:` (settings/temporal.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from settings.pagerduty import refuse_file_secrets, with_secrets_file
from settings.sections import ConfigError, Settings
from settings.temporal import FILE_FORBIDDEN, with_temporal_profile

ENV_PREFIX = "RUNBOOKS_"
CONFIG_ENV = "RUNBOOKS_CONFIG"


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The file (if any), then RUNBOOKS_<SECTION>__<FIELD> variables, then Temporal's own configuration
    where `temporal:` leaves a field unset; raises ConfigError."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV)
    data = _read_file(Path(path)) if path else {}
    _refuse_secrets(data, path)
    for keys, value in _env_overrides(environ):
        _set_nested(data, keys, value)
    if isinstance(data.get("pagerduty"), dict):
        data["pagerduty"] = with_secrets_file(data["pagerduty"])
    data["temporal"] = with_temporal_profile(data.get("temporal") or {}, environ)
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        source = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{source}:\n" + _describe(err)) from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read configuration file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"configuration file {path} is not valid YAML: {err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping of sections, not {type(loaded).__name__}")
    return loaded


def _refuse_secrets(data: dict[str, Any], path: str | Path | None) -> None:
    """A secret written into the file would be in every copy of it (a ConfigMap, a repository)."""
    refuse_file_secrets(data.get("pagerduty"), path)
    temporal = data.get("temporal")
    for key, instead in FILE_FORBIDDEN.items():
        if isinstance(temporal, dict) and temporal.get(key) is not None:
            raise ConfigError(f"temporal.{key} in {path}: secrets do not belong in the configuration file; {instead}")


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[list[str], Any]]:
    overrides = []
    for name, raw in environ.items():
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_ENV or "__" not in name:
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
        overrides.append((keys, _env_value(name, raw)))
    return overrides


def _env_value(name: str, raw: str) -> Any:
    """Lists and mappings come as JSON/YAML flow; everything else stays the string pydantic coerces."""
    if raw.lstrip()[:1] in ("[", "{"):
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"{name}: not a valid list/mapping: {err}") from None
    return raw


def _set_nested(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors(include_url=False):
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)
