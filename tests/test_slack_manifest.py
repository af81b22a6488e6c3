"""deploy/slack-app-manifest.yaml asks for exactly the bot scopes the code needs.

The code's Slack Web API calls are found by reading the product's source (every attribute that
is a Web API method of slack-sdk's AsyncWebClient), so a new call without its scope fails here.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import yaml
from slack_sdk.web.async_client import AsyncWebClient

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "slack-app-manifest.yaml"
PRODUCT = ("activities", "triggers", "worker", "workflows")

# Bot-token scopes of each Web API method the code calls (Slack's method reference). History
# scopes for both public and private channels: an incident channel may be either.
SCOPES_OF = {
    "chat.postMessage": {"chat:write"},
    "chat.update": {"chat:write"},
    "conversations.history": {"channels:history", "groups:history"},
    "conversations.replies": {"channels:history", "groups:history"},
    "conversations.list": {"channels:read", "groups:read"},
    "auth.test": set(),
}


def web_api_calls() -> dict[str, set[str]]:
    """Web API method ("chat.update") -> the product files that use it."""
    methods = {
        name
        for name, member in vars(AsyncWebClient).items()
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    }
    found: dict[str, set[str]] = {}
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Attribute) and node.attr in methods:
                    found.setdefault(node.attr.replace("_", "."), set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_manifest_asks_for_the_scopes_of_every_web_api_method_the_code_calls_and_no_more():
    manifest = yaml.safe_load(MANIFEST.read_text())
    calls = web_api_calls()
    assert {"chat.postMessage", "chat.update", "conversations.history"} <= set(calls), calls  # the scan works

    unknown = {m: files for m, files in calls.items() if m not in SCOPES_OF}
    assert not unknown, f"new Slack Web API calls {unknown}: add their scopes to the manifest and SCOPES_OF"
    needed = set().union(*(SCOPES_OF[m] for m in calls))
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == needed
    assert "user" not in manifest["oauth_config"]["scopes"]  # the app acts only as its bot


def test_the_manifest_sends_clicks_to_the_triggers_interactivity_endpoint():
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["display_information"]["name"] and manifest["features"]["bot_user"]["display_name"]
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["interactivity"]["request_url"].startswith("https://")
    assert settings["interactivity"]["request_url"].endswith("/slack/interactions")
    assert isinstance(settings["socket_mode_enabled"], bool)
    assert "event_subscriptions" not in settings  # clicks only: the Socket Mode receiver ignores events

    from triggers.app import OPENAPI

    assert "/slack/interactions" in OPENAPI["paths"]
