"""Saving the histories tests/test_replay.py replays: `RUNBOOKS_SAVE_HISTORIES=1` makes the integration
tests that call `save_history` (re)write tests/histories/<name>.json from their run."""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.client import WorkflowHandle

HISTORIES = Path(__file__).resolve().parents[1] / "histories"


async def save_history(handle: WorkflowHandle, name: str) -> None:
    """Write the finished workflow's history as tests/histories/`name`.json, when saving is asked for."""
    if os.environ.get("RUNBOOKS_SAVE_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{name}.json").write_text((await handle.fetch_history()).to_json())
