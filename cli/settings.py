"""The CLI's side of the configuration (settings/): command-line flags on top, the Temporal client,
`runbooks dev`'s state file. The worker's connection settings are derived in settings/process.py."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from temporalio.client import Client

from settings import Settings
from settings import load_settings as _load_file_and_env
from settings.temporal import TemporalConnectError, connect_temporal

DEV_STATE = "dev.json"  # written by `runbooks dev` so drills and the CLI find the running stack


def load_settings(
    path: str | Path | None,
    *,
    temporal_address: str | None = None,
    temporal_namespace: str | None = None,
) -> Settings:
    """File, then RUNBOOKS_* variables, then command-line flags."""
    settings = _load_file_and_env(path)
    updates = {k: v for k, v in (("address", temporal_address), ("namespace", temporal_namespace)) if v}
    if not updates:
        return settings
    return settings.model_copy(update={"temporal": settings.temporal.model_copy(update=updates)})


async def connect(settings: Settings) -> Client:
    """The configured Temporal (settings/temporal.py); ConfigError with one line when it cannot be used."""
    try:
        return await connect_temporal(settings.temporal)
    except TemporalConnectError as exc:
        if not exc.unreachable:
            raise
        raise TemporalConnectError(f"{exc}. Is `runbooks dev` (or your server) running?", unreachable=True) from None


def read_dev_state(home: Path) -> dict | None:
    path = Path(home) / DEV_STATE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_dev_state(home: Path, state: dict) -> Path:
    """dev.json, replaced whole (a temporary file in `home`, then os.replace) so a drill or command
    reading it meanwhile never sees half of it; mode 0600 from the start: it holds the webhook token."""
    path = Path(home) / DEV_STATE
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{DEV_STATE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(state, indent=2))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
