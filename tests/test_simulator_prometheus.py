"""A real Prometheus (Debian `prometheus`) scraping the simulator and evaluating the seeds'
alert rules fires LLMDServiceDown under service-outage and nothing of the kind on the baseline."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.helpers.fixtures_prometheus import needs_prometheus, query as _query
from tests.helpers.waiting import wait_for

pytestmark = [pytest.mark.e2e, needs_prometheus]


def _alerts(url: str) -> list[dict]:
    return httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]


@pytest.mark.scenario("service-outage")
def test_service_down_fires_under_service_outage(prometheus):
    models = {"production/llama-3-8b", "production/mistral-7b", "mlops-serving/codellama-13b"}

    def service_down_firing() -> list[dict]:
        firing = [
            a for a in _alerts(prometheus) if a["labels"]["alertname"] == "LLMDServiceDown" and a["state"] == "firing"
        ]
        return firing if models <= {a["labels"]["instance"] for a in firing} else []

    firing = wait_for(service_down_firing, "LLMDServiceDown to fire for every LLMDeployment", 45)

    down = {a["labels"]["instance"] for a in firing}
    assert "production/llm-d-decode" not in down  # not an LLMDeployment; the operator does not touch it
    assert all(a["labels"]["severity"] == "critical" for a in firing)


def test_baseline_fires_no_service_alert(prometheus):
    # every service target up, and the rules have had time past their `for:`
    wait_for(lambda: len(_query(prometheus, 'up{job="llm-d-service"} == 1')) >= 6, "every service target up", 30)
    wait_for(lambda: _query(prometheus, "sum(rate(llm_d_requests_total[5m]))"), "request rates", 30)
    time.sleep(8)

    names = {a["labels"]["alertname"] for a in _alerts(prometheus)}
    assert not names & {
        "LLMDServiceDown",
        "LLMDHighErrorRate",
        "LLMDHighLatency",
        "LLMDMemoryPressure",
        "LLMDGPUCapacityLost",
        "LLMDeploymentNotReady",
        "LLMDGPUHardwareError",
    }
    assert _query(prometheus, 'up{job="llm-d-service"} == 0') == []


@pytest.mark.scenario("canary-rollback")
def test_model_serving_error_rate_names_the_inference_service_it_scopes(prometheus):
    """ModelServingHighErrorRate carries `inferenceservice` (from the predictor's service), so a real
    alert opens the incident of that InferenceService, not one without a target."""

    def firing() -> list[dict]:
        return [a for a in _alerts(prometheus) if a["labels"]["alertname"] == "ModelServingHighErrorRate"]

    alerts = wait_for(firing, "ModelServingHighErrorRate under the failing canary", 60)
    assert {(a["labels"]["namespace"], a["labels"]["inferenceservice"]) for a in alerts} == {
        ("mlops-serving", "mistral-7b")
    }
