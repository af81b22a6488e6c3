"""Fuzzing both endpoints with hypothesis: at least 10,000 generated bodies in total.

Never a 5xx for a client's mistake, never a workflow from invalid input. The app runs
in-process against the real dev server, starting incidents on a queue of its own; the last
test compares what Temporal holds with what the webhook accepted.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import timezone
from typing import Any
from urllib.parse import urlencode

import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.fixtures_alertmanager import AUTH, in_process, slack_signed, triggers_settings
from triggers.payload import parse_notification

EXAMPLES = 2600  # x 4 generators > 10,000 bodies
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

SENT: Counter[str] = Counter()
ACCEPTED_FIRING: set[str] = set()  # incident ids the webhook said it started or absorbed
QUEUE = f"fuzz-{uuid.uuid4().hex[:10]}"

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


def _maybe(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly well-formed, sometimes anything: reaches the checks past the first field."""
    return st.one_of(valid, valid, json_values)


timestamps = st.one_of(
    st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00Z", "2024-05-01T10:00:00.123456789Z", "2024-05-01T10:00:00", "yesterday"]),
)
label_maps = st.dictionaries(
    st.sampled_from(["alertname", "severity", "namespace", "runbook", "instance"]) | st.text(max_size=8),
    st.text(max_size=20) | st.sampled_from(["LLMDServiceDown", "P0", "critical", "service-outage"]),
    max_size=5,
)
alerts = st.fixed_dictionaries(
    {},
    optional={
        "status": _maybe(st.sampled_from(["firing", "resolved", "pending"])),
        "labels": _maybe(label_maps),
        "annotations": _maybe(st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=3)),
        "startsAt": _maybe(timestamps),
        "endsAt": _maybe(timestamps),
        "generatorURL": _maybe(st.text(max_size=20)),
        "fingerprint": _maybe(st.text(max_size=20) | st.text(alphabet="0123456789abcdef", min_size=16, max_size=16)),
    },
)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "version": _maybe(st.sampled_from(["4", "1", "3", ""])),  # 1: Grafana
        "status": _maybe(st.sampled_from(["firing", "resolved"])),
        "alerts": _maybe(st.lists(alerts, max_size=4)),
        "receiver": _maybe(st.text(max_size=10)),
        "truncatedAlerts": _maybe(st.integers()),
        "groupLabels": json_values,
        # Grafana's own keys (version "1"); anything there must not change what is accepted
        "orgId": _maybe(st.integers()),
        "title": _maybe(st.text(max_size=20)),
        "state": _maybe(st.sampled_from(["alerting", "ok"])),
    },
)
raw_bodies = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fuzz_http(temporal_dev):
    s = triggers_settings(QUEUE, slack={"bot_token": None, "response_url_prefixes": ["http://127.0.0.1:9/never/"]})
    async with in_process(s, temporal_dev.client) as http:
        yield http


async def _post_alertmanager(http, content: bytes) -> None:
    SENT["alertmanager"] += 1
    resp = await http.post("/alertmanager", content=content, headers=AUTH | {"Content-Type": "application/json"})
    assert resp.status_code < 500, (content, resp.status_code, resp.text)
    if resp.status_code == 200:
        # Accepted, so it must really be a valid payload: remember what it may have started.
        for alert in parse_notification(content).alerts:
            if alert.status == "firing":
                ACCEPTED_FIRING.update(i["incident"] for i in resp.json()["incidents"])
    else:
        # 4xx only for input no Alertmanager or Grafana sends (they drop a 4xx for good)
        assert resp.status_code in (400, 422) and resp.json()["error"]


@FUZZ
@given(body=payloads)
async def test_fuzz_alertmanager_payload_shapes(fuzz_http, body: dict[str, Any]):
    await _post_alertmanager(fuzz_http, json.dumps(body).encode())


@FUZZ
@given(body=raw_bodies)
async def test_fuzz_alertmanager_raw_bodies(fuzz_http, body: bytes):
    await _post_alertmanager(fuzz_http, body)


slack_payloads = st.fixed_dictionaries(
    {},
    optional={
        "type": _maybe(st.sampled_from(["block_actions", "view_submission", "shortcut"])),
        "user": _maybe(st.fixed_dictionaries({"id": st.text(max_size=10)})),
        "actions": _maybe(
            st.lists(
                st.fixed_dictionaries(
                    {"action_id": _maybe(st.sampled_from(["approve", "reject", "open-ui"]))},
                    optional={
                        "value": _maybe(
                            st.text(max_size=30)
                            | st.builds(
                                lambda i, g: json.dumps({"incident": i, "gate": g}),
                                st.text(max_size=20),
                                st.text(max_size=10),
                            )
                        ),
                        "block_id": st.text(max_size=10),
                    },
                ),
                max_size=2,
            )
        ),
        "response_url": _maybe(st.text(max_size=20)),
        "channel": json_values,
        "message": json_values,
    },
)
slack_bodies = st.one_of(
    st.binary(max_size=200),
    slack_payloads.map(lambda p: urlencode({"payload": json.dumps(p)}).encode()),
    st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=3).map(lambda d: urlencode(d).encode()),
)


@FUZZ
@given(body=slack_bodies, signed=st.booleans(), age=st.sampled_from([0, 0, 0, 301, -400]))
async def test_fuzz_slack_interactions_signed_and_not(fuzz_http, body: bytes, signed: bool, age: int):
    SENT["slack"] += 1
    headers = slack_signed(body, timestamp=int(time.time()) - age) if signed else slack_signed(body, secret="guess")
    resp = await fuzz_http.post("/slack/interactions", content=body, headers=headers)
    assert resp.status_code < 500, (body, resp.status_code, resp.text)
    if not signed or age:
        assert resp.status_code == 401  # nothing in an unverified body is even parsed


@FUZZ
@given(
    headers=st.dictionaries(
        st.sampled_from(["X-Slack-Signature", "X-Slack-Request-Timestamp", "Content-Length", "Content-Type"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=70),
        max_size=4,
    ),
    body=st.binary(max_size=100),
)
async def test_fuzz_slack_headers(fuzz_http, headers: dict[str, str], body: bytes):
    SENT["slack"] += 1
    headers.pop("Content-Length", None)  # httpx sets the true one
    raw = {name: value.encode("latin-1") for name, value in headers.items()}  # any byte a client may send
    resp = await fuzz_http.post("/slack/interactions", content=body, headers=raw)
    assert resp.status_code in (401, 413), (headers, resp.status_code, resp.text)


async def test_fuzzing_sent_10000_bodies_and_started_nothing_it_did_not_accept(temporal_dev):
    """Runs after the generators above (file order)."""
    client = temporal_dev.client
    assert SENT["alertmanager"] + SENT["slack"] >= 10_000, SENT
    started = {wf.id async for wf in client.list_workflows(f'TaskQueue = "{QUEUE}"')}
    assert started <= ACCEPTED_FIRING
