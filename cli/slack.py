"""`runbooks slack test-click URL --incident ID --gate G --as USER`: a button click as Slack sends it.

Checks an HTTP Slack actions URL end to end without Slack: the body is a block_actions
interaction (form-encoded `payload=<json>`) for the incident's Approve (or, with `--reject`,
Reject) button, signed with the app's signing secret the way Slack signs
(`v0=HMAC-SHA256(secret, "v0:{timestamp}:{body}")`, slack-sdk's `SignatureVerifier`). The
triggers verify it like any click and pass it to the incident, whose approver check applies:
`--as` must be an approver of the gate. The answer (200 acknowledged, 401 bad signature, 503
interactivity not configured) is printed; the decision itself runs after it, so `--wait N`
follows the incident through Temporal for up to N seconds and prints the gate's outcome.

Kept apart from cli/main.py, which only registers the subcommand; heavy imports stay inside
the functions so `runbooks --help` stays instant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode


def add_parser(sub: Any, add_temporal_args: Callable[[argparse.ArgumentParser], None]) -> None:
    slack = sub.add_parser("slack", help="Slack helpers: send a correctly signed test click to a Slack actions URL")
    slack_sub = slack.add_subparsers(dest="slack_command", required=True)
    click = slack_sub.add_parser("test-click", help="click an incident's Approve/Reject button as Slack would")
    add_temporal_args(click)
    click.add_argument("url", help="the Slack actions URL `runbooks dev` prints (…/slack/interactions)")
    click.add_argument("--incident", required=True, help="incident (workflow) id")
    click.add_argument("--gate", required=True, help="the gate to decide (kind or kind:target)")
    click.add_argument("--as", dest="user", required=True, help="Slack user id who clicks (U…); must be an approver")
    click.add_argument("--reject", action="store_true", help="click Reject instead of Approve")
    click.add_argument(
        "--signing-secret",
        default=None,
        help="default: slack.signing_secret of the configuration (RUNBOOKS_SLACK__SIGNING_SECRET)",
    )
    click.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="then follow the incident (through Temporal) until the gate is decided",
    )


def click_body(incident: str, gate: str, user: str, *, approve: bool) -> bytes:
    """A block_actions interaction for one approval button, form-encoded as Slack posts it."""
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "api_app_id": "A0TESTCLICK",
        "team": {"id": "T0TESTCLICK"},
        "trigger_id": "test-click",
        "actions": [
            {
                "type": "button",
                "action_id": "approve" if approve else "reject",
                "block_id": f"approval:{gate}"[:255],
                "value": json.dumps({"incident": incident, "gate": gate}, separators=(",", ":")),
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    from slack_sdk.signature import SignatureVerifier

    ts = str(timestamp)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body) or "",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def run(args: argparse.Namespace, settings: Any) -> int:
    """Send the click; 0 when acknowledged (and, with --wait, decided as asked), else 1."""
    import httpx

    configured = settings.slack.signing_secret
    secret = args.signing_secret or (configured.get_secret_value() if configured else None)
    if not secret:
        raise SystemExit(
            "runbooks slack test-click: no signing secret: pass --signing-secret or set "
            "slack.signing_secret (RUNBOOKS_SLACK__SIGNING_SECRET) as the triggers have it"
        )
    body = click_body(args.incident, args.gate, args.user, approve=not args.reject)
    try:
        resp = httpx.post(args.url, content=body, headers=signed_headers(secret, body, int(time.time())), timeout=10)
    except httpx.HTTPError as err:
        raise SystemExit(f"runbooks slack test-click: cannot reach {args.url}: {err}") from None
    print(f"{resp.status_code} {resp.reason_phrase}: {resp.text.strip() or 'click acknowledged'}")
    if resp.status_code != 200:
        return 1
    if args.wait <= 0:
        print(f"the decision runs after the answer: `runbooks show {args.incident}` shows the gate")
        return 0
    return asyncio.run(_follow(settings, args.incident, args.gate, not args.reject, args.wait))


async def _follow(settings: Any, incident: str, gate: str, approve: bool, timeout: float) -> int:
    from cli.settings import connect
    from workflows.incident.models import QUERY_STATE

    handle = (await connect(settings)).get_workflow_handle(incident)
    deadline = time.monotonic() + timeout
    while True:
        state = await handle.query(QUERY_STATE)
        asked = [g for g in state.get("approvals", []) if gate in (g.get("gate"), g.get("kind"))]
        decided = [g for g in asked if g.get("decision")]
        if decided:
            d = decided[-1]["decision"]
            print(
                f"gate {decided[-1]['gate']}: {'approved' if d['approved'] else 'rejected'} by {d['by']} "
                f"via {d.get('via')}"
            )
            return 0 if d["approved"] == approve else 1
        if time.monotonic() > deadline:
            print(
                f"gate {gate} not decided after {timeout:.0f} s: the click was refused (not an approver, unknown or "
                "closed gate; the triggers' log says which — a test click has no Slack user to tell)"
            )
            return 1
        await asyncio.sleep(0.3)
