"""The `dev_stack` fixture: one `runbooks dev` per test module, in its own home, for the tests that drill
through the `runbooks` command; yields that home."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.dev_stack import running_dev


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("dev-home")
    with running_dev(home, clean_exit=True):
        yield home
