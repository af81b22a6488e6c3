"""`runbooks drill high-latency:<cause>` one after another on one `runbooks dev` (which starts a real
Prometheus over the simulator): each runs to its outcome, as an SRE rehearses seed 001's runbook."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.helpers.fixtures_prometheus import needs_prometheus
from tests.helpers.dev_stack import cluster, drill

pytestmark = [pytest.mark.e2e, needs_prometheus, pytest.mark.timeout(900)]


def replicas(home, name: str) -> int:
    return client.AppsV1Api(cluster(home)).read_namespaced_deployment(name, "production").spec.replicas


def test_dev_stack_runs_a_prometheus(dev_stack):
    import json

    assert json.loads((dev_stack / "dev.json").read_text())["prometheus"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("scenario", "deployment", "after"),
    [
        ("high-latency:queue-depth", "llm-d-decode", 4),
        ("high-latency:gpu-exhaustion", "llm-d-prefill", 3),
        ("high-latency:cold-start", "llm-d-prefill", 2),
    ],
)
def test_high_latency_drill_heals(dev_stack, scenario, deployment, after):
    done = drill(dev_stack, scenario)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outcome: resolved" in done.stdout
    assert "# Incident report" in done.stdout
    assert replicas(dev_stack, deployment) == after  # each drill starts from the baseline's 2


def test_cache_misses_drill_ends_with_a_human_and_the_figures(dev_stack):
    done = drill(dev_stack, "high-latency:cache-misses")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "waiting for a human" in done.stdout
    assert "cache hit ratio" in done.stdout.lower()
    assert replicas(dev_stack, "llm-d-decode") == replicas(dev_stack, "llm-d-prefill") == 2  # nothing scaled
