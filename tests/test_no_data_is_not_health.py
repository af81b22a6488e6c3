"""No data is not health: the high-latency runbook against a real Prometheus that cannot tell.

- behind a Thanos-like querier that answers `success` with a partial response (a `warnings`
  entry, one metric's series missing): the playbook does not say "nothing wrong found"; it says
  what it could not check in the querier's words, writes nothing and pages;
- a namespace Prometheus has no series for: "could not tell (no series)", not a healthy p95;
- an overloaded Prometheus (503 `errorType: timeout` for ~20 s) is waited out, not given up on
  after seconds;
- the llm-d error-rate runbook whose request counters did not answer: could not tell, not "0 % 5xx".
Real dev server, the worker in process, the simulated cluster, real Prometheus scraping it, the
Slack stand-in; the proxy in front of Prometheus is ours, the answers it passes on are Prometheus'.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from temporalio.client import WorkflowHandle

from standins.slack import SlackStandIn
from tests.helpers.audit import writes
from tests.helpers.fixtures_prometheus import needs_prometheus
from tests.helpers.high_latency import CHANNEL, NS, latency_input, run_incident, shows
from tests.helpers.incident_queries import settled
from worker.worker import build_worker
from workflows.incident.models import UPDATE_HUMAN_ACTION, Alert, HumanAction
from workflows.playbooks.llmd_error_rate.models import ErrorRateTimings, LLMDErrorRateInput
from workflows.playbooks.llmd_error_rate.playbook import LLMDHighErrorRate

pytestmark = [pytest.mark.integration, needs_prometheus, pytest.mark.timeout(150)]

PARTIAL = "partial response: store 10.0.4.17:10901 (prometheus-replica-b) did not respond: rpc error: DeadlineExceeded"
TIMEOUT = {"status": "error", "errorType": "timeout", "error": "query timed out in expression evaluation"}


class Querier:
    """A querier in front of a real Prometheus: `drop` empties the result of queries that mention
    it and adds PARTIAL to `warnings` (a store that did not answer); `overloaded_until` answers 503
    timeout until then (time.monotonic())."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.drop, self.overloaded_until, self.refused = upstream, "", 0.0, 0
        querier = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if time.monotonic() < querier.overloaded_until:
                    querier.refused += 1
                    return self._send(503, TIMEOUT)
                try:
                    with urllib.request.urlopen(querier.upstream + self.path, timeout=15) as answer:
                        code, body = answer.status, json.load(answer)
                except urllib.error.HTTPError as err:
                    code, body = err.code, json.load(err)
                if querier.drop and querier.drop in urllib.request.unquote(self.path) and code == 200:
                    body["data"]["result"] = []
                    body["warnings"] = [*body.get("warnings", []), PARTIAL]
                self._send(code, body)

            def _send(self, code: int, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def querier(prometheus: str) -> Iterator[Querier]:
    q = Querier(prometheus)
    threading.Thread(target=q.server.serve_forever, daemon=True).start()
    try:
        yield q
    finally:
        q.server.shutdown()


async def _scraped(prometheus: str) -> None:
    await shows(prometheus, 'llm_d_queue_depth{service="llm-d-decode"}', "the queue depth series")
    await shows(
        prometheus, f'sum(rate(llm_d_request_duration_seconds_count{{namespace="{NS}"}}[10s])) > 0', "request rates"
    )


async def _settle_then_resolve(handle: WorkflowHandle) -> None:
    await settled(handle)
    await handle.execute_update(UPDATE_HUMAN_ACTION, HumanAction(action="resolve", by="bob", note="checked"))


async def test_a_partial_response_with_warnings_is_could_not_tell_never_nothing_wrong(
    temporal_dev, task_queue, simulator, kube_api, prometheus, querier, slack_standin: SlackStandIn, slack_client
):
    await _scraped(prometheus)
    querier.drop = "llm_d_queue_depth"
    _report, state, _timeline = await run_incident(
        temporal_dev.client, kube_api, slack_client, querier.url, task_queue, latency_input(), _settle_then_resolve
    )
    assert state.nothing_found is None, "a partial response is no evidence of health"
    assert state.could_not_tell and any(PARTIAL in why for why in state.could_not_tell), state.could_not_tell
    assert any("llm_d_queue_depth" in why and "no series" in why for why in state.could_not_tell)
    assert state.changes == [] and writes(simulator, dry_runs=True) == []
    assert state.escalation_level >= 1 and "could not tell" in state.escalations[-1].reason
    posted = [m["text"] for m in slack_standin.messages(CHANNEL) if "Could not tell" in m["text"]]
    assert posted and PARTIAL in posted[0], "on-call reads the querier's own words"
    assert not [m for m in slack_standin.messages(CHANNEL) if "Nothing wrong found" in m["text"]]


async def test_a_namespace_without_series_is_could_not_tell_not_a_healthy_p95(
    temporal_dev, task_queue, simulator, kube_api, prometheus, slack_standin: SlackStandIn, slack_client
):
    await _scraped(prometheus)
    inp = latency_input().model_copy(update={"serving_namespace": "staging-not-scraped"})
    _report, state, _timeline = await run_incident(
        temporal_dev.client, kube_api, slack_client, prometheus, task_queue, inp, _settle_then_resolve
    )
    assert state.nothing_found is None and state.changes == []
    assert any("no series" in why and "staging-not-scraped" in why for why in state.could_not_tell), state


async def test_an_overloaded_prometheus_is_waited_out_for_minutes_not_seconds(
    temporal_dev, task_queue, simulator, kube_api, prometheus, querier, slack_client
):
    await _scraped(prometheus)
    querier.overloaded_until = time.monotonic() + 20  # longer than the old ~15 s of retries
    _report, state, _timeline = await run_incident(
        temporal_dev.client, kube_api, slack_client, querier.url, task_queue, latency_input(), _settle_then_resolve
    )
    assert querier.refused > 0, "the querier did answer 503 at first"
    assert state.failure is None, state.failure
    assert state.nothing_found and "p95 latency" in state.nothing_found, "the evidence came once it recovered"


async def test_an_error_rate_prometheus_cannot_tell_is_could_not_tell_not_zero_errors(
    temporal_dev, task_queue, simulator, kube_api, prometheus, querier, slack_standin: SlackStandIn, slack_client
):
    await _scraped(prometheus)
    querier.drop = "llm_d_requests_total"  # the store holding the request counters did not answer
    alert = Alert(
        alertname="LLMDHighErrorRate",
        fingerprint=uuid.uuid4().hex[:16],
        starts_at=datetime.now(timezone.utc),
        labels={"alertname": "LLMDHighErrorRate", "severity": "critical", "service": "llm-d"},
        annotations={"summary": "High error rate detected"},
    )
    inp = LLMDErrorRateInput(
        alert=alert,
        runbook="llmd-high-error-rate",
        incident_commander="alice",
        slack_channel=CHANNEL,
        timings=ErrorRateTimings(rate_window_seconds=10, kube_call_timeout_seconds=10),
    )
    async with httpx.AsyncClient() as http:
        async with build_worker(
            temporal_dev.client,
            kube_api,
            slack_client,
            http,
            task_queue,
            slack_channel=CHANNEL,
            prometheus_url=querier.url,
        ):
            handle = await temporal_dev.client.start_workflow(
                LLMDHighErrorRate.run, inp, id=f"llmd-error-rate-{alert.fingerprint}", task_queue=task_queue
            )
            state = await settled(handle)
            await handle.terminate("test over")
    assert state.nothing_found is None and state.changes == [] and writes(simulator, dry_runs=True) == []
    assert any(PARTIAL in why for why in state.could_not_tell), state.could_not_tell
    assert state.escalation_level >= 1
