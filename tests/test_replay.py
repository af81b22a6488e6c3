"""Histories saved from integration runs must replay under the current workflow code.

The histories were saved under release 1.0.0's code. A change to a released workflow that would break
an incident already running fails here: guard it with `workflow.patched(...)` (or a new workflow type)
and add a history saved under the new code, keeping the old ones. `RUNBOOKS_SAVE_HISTORIES=1` makes
the integration tests that save histories (see `save_history` in tests/helpers/histories.py) write them again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker.worker import PLAYBOOK_SANDBOX, WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay():
    assert HISTORIES, "no saved histories: run the integration tests with RUNBOOKS_SAVE_HISTORIES=1"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_under_current_code(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=PLAYBOOK_SANDBOX)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"
