"""`runbooks drill model-rollback` on one `runbooks dev` (its real Prometheus over the simulator): the
LLMDHighErrorRate alert, the model version change found, the rollback approved (--auto-approve), the
LLMDeployment back at v1.2.0 and the incident resolved, as an SRE rehearses seed 002's rollback."""

from __future__ import annotations

import pytest
from kubernetes import client

from simulator.scenarios import SCENARIOS  # noqa: F401 - registers the model-rollback fault first
from simulator.scenarios_models import GOOD_VERSION, MODEL
from tests.helpers.fixtures_prometheus import needs_prometheus
from tests.helpers.dev_stack import cluster, drill

pytestmark = [pytest.mark.e2e, needs_prometheus, pytest.mark.timeout(600)]


def test_model_rollback_drill_rolls_the_model_back(dev_stack):
    done = drill(dev_stack, "model-rollback")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outcome: resolved" in done.stdout, done.stdout
    assert f"auto-approved gate 'model-rollback:{MODEL[0]}/{MODEL[1]}'" in done.stdout, done.stdout
    assert "v1.2.0 → v1.3.0" in done.stdout, done.stdout
    llmd = client.CustomObjectsApi(cluster(dev_stack)).get_namespaced_custom_object(
        "inference.llm-d.io", "v1alpha1", MODEL[0], "llmdeployments", MODEL[1]
    )
    assert llmd["spec"]["model"]["version"] == GOOD_VERSION
