"""Fixtures live in per-area plugin modules under tests/helpers/ so each area owns its own; pytest rewrites
the assertions of every helper module, as of the tests, so a failing one shows its values."""

import pytest

pytest.register_assert_rewrite("tests.helpers")

pytest_plugins = [
    "tests.helpers.fixtures_temporal",
    "tests.helpers.fixtures_simulator",
    "tests.helpers.fixtures_slack",
    "tests.helpers.fixtures_alertmanager",
    "tests.helpers.fixtures_slack_clicks",
    "tests.helpers.fixtures_ui",
    "tests.helpers.fixtures_prometheus",
    "tests.helpers.fixtures_dev",
    "tests.helpers.fixtures_tls",
    "tests.helpers.fixtures_pagerduty",
]
