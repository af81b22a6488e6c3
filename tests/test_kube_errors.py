"""Kubernetes errors as on-call reads them: an API server that answers 503 (overloaded, as during an
etcd leader election) makes the incident fail with the API server's reason and message, and the
raw client exception (HTTP response headers, audit ids) appears nowhere: not in the failure, not in
Slack. Real dev server, the worker in process, a stand-in API server that answers every request
503 with the Status body and headers a real one sends."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from kubernetes import client as k8s

from standins.slack import SlackStandIn
from tests.helpers.incident_queries import settled
from tests.helpers.service_down import CHANNEL, down_input, start
from worker.worker import build_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

OVERLOADED = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "the server is currently unable to handle the request",
    "reason": "ServiceUnavailable",
    "details": {"causes": [{"reason": "UnexpectedServerResponse", "message": "etcdserver: leader changed"}]},
    "code": 503,
}
AUDIT_ID = "5b0a0e7c-3f55-4b38-9b5e-6a3c5d1f0e42"


class _Overloaded(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = json.dumps(OVERLOADED).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Audit-Id", AUDIT_ID)
        self.send_header("X-Kubernetes-Pf-Flowschema-Uid", "b1f6e0a2-1c1d-4f0e-9a55-3d2c5e7f9a10")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def overloaded_api() -> Iterator[k8s.ApiClient]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Overloaded)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    configuration = k8s.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    api = k8s.ApiClient(configuration)
    try:
        yield api
    finally:
        api.close()
        server.shutdown()


async def test_an_overloaded_api_server_fails_the_incident_in_its_own_words_without_raw_headers(
    temporal_dev, task_queue: str, overloaded_api: k8s.ApiClient, slack_standin: SlackStandIn, slack_client
):
    client = temporal_dev.client
    async with httpx.AsyncClient() as http:
        async with build_worker(client, overloaded_api, slack_client, http, task_queue, slack_channel=CHANNEL):
            handle = await start(client, down_input(), task_queue)
            state = await settled(handle, 90)
            await handle.terminate("test over")

    assert state.status == "failed" and state.failure, state
    assert "the Kubernetes API server answered 503 ServiceUnavailable" in state.failure
    assert "the server is currently unable to handle the request" in state.failure
    posted = "\n".join(m.get("text") or "" for m in slack_standin.messages(CHANNEL))
    for raw in ("HTTP response headers", "HTTPHeaderDict", AUDIT_ID, "Flowschema"):
        assert raw not in state.failure and raw not in posted, raw
    assert "503 ServiceUnavailable" in posted, "on-call is told in the API server's words"
