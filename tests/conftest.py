"""Fixtures live in per-area plugin modules so each area owns its own."""

pytest_plugins = [
    "tests.fixtures_temporal",
    "tests.fixtures_simulator",
    "tests.fixtures_slack",
    "tests.fixtures_alertmanager",
    "tests.fixtures_ui",
    "tests.fixtures_prometheus",
]
