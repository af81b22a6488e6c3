"""The Slack stand-in's workspace: its channels as Slack lists them, and mrkdwn as a reader sees it.

Channels have ids (`C…`, private ones too) and names; Slack's methods differ in what they take
(standins/slack.py says which). `conversations.list` pages with an opaque cursor
(`response_metadata.next_cursor`, "" on the last page), lists only `public_channel` unless `types`
says otherwise, and keeps archived channels unless `exclude_archived`.

`render_mrkdwn` reads message text the way Slack's clients do: `<…>` is a control sequence (a user
mention `<@U…>`, a channel `<#C…>`, a broadcast or date `<!…>`, otherwise a link `<url|label>`),
and `&amp;` `&lt;` `&gt;` are the only entities. Tests use it to see whether alert text stayed text.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Channel:
    id: str
    name: str
    is_private: bool = False
    is_archived: bool = False
    is_member: bool = True  # the bot was invited

    def view(self) -> dict[str, Any]:
        """A conversation object as conversations.list answers it (the fields a client reads)."""
        return {
            "id": self.id,
            "name": self.name,
            "name_normalized": self.name,
            "is_channel": not self.is_private,
            "is_group": self.is_private,
            "is_im": False,
            "is_mpim": False,
            "is_private": self.is_private,
            "is_archived": self.is_archived,
            "is_member": self.is_member,
            "created": 1_700_000_000,
        }


def channel_id(channel: str) -> str:
    """'#incidents' / 'incidents' -> the stand-in's stable id for that name; ids (C…, D…, G…) stay."""
    name = channel.removeprefix("#")
    if looks_like_id(name):
        return name
    return "C" + hashlib.sha1(name.encode()).hexdigest()[:10].upper()


def looks_like_id(channel: str) -> bool:
    return channel[:1] in ("C", "D", "G") and channel[1:].isalnum() and channel.isupper()


def find_channel(channels: dict[str, Channel], channel: str, *, names: bool) -> Channel | None:
    """The channel `channel` names: an id always; a name (`#x` or `x`) only where the method takes names."""
    if channel in channels:
        return channels[channel]
    if not names:
        return None
    name = channel.removeprefix("#")
    return next((c for c in channels.values() if c.name == name), None)


_LIST_TYPES = {"public_channel", "private_channel", "mpim", "im"}


def list_conversations(channels: dict[str, Channel], body: dict[str, Any]) -> dict[str, Any]:
    """conversations.list: one page (`limit`, default 100, at most 1000) from `cursor`."""
    types = {t.strip() for t in str(body.get("types") or "public_channel").split(",") if t.strip()}
    if not types <= _LIST_TYPES:
        return {"ok": False, "error": "invalid_types"}
    try:
        limit = int(body.get("limit") or 100)
    except ValueError:
        return {"ok": False, "error": "invalid_limit"}
    if not 1 <= limit <= 1000:
        return {"ok": False, "error": "invalid_limit"}
    start = 0
    if body.get("cursor"):
        try:
            start = int(base64.b64decode(str(body["cursor"]), validate=True).decode().removeprefix("offset:"))
        except ValueError:
            return {"ok": False, "error": "invalid_cursor"}
    archived_too = body.get("exclude_archived") not in (True, 1, "1", "true", "True")
    wanted = [
        c
        for c in channels.values()
        if ("private_channel" if c.is_private else "public_channel") in types and (archived_too or not c.is_archived)
    ]
    page = wanted[start : start + limit]
    more = start + limit < len(wanted)
    cursor = base64.b64encode(f"offset:{start + limit}".encode()).decode() if more else ""
    return {"ok": True, "channels": [c.view() for c in page], "response_metadata": {"next_cursor": cursor}}


@dataclass
class Rendered:
    """What a reader sees of one mrkdwn text, and what in it Slack acts on."""

    text: str  # entities decoded, links shown by their label (or URL)
    links: list[str] = field(default_factory=list)  # URLs
    mentions: list[str] = field(default_factory=list)  # user and channel ids: `<@U1>` -> "@U1", `<#C1>` -> "#C1"
    broadcasts: list[str] = field(default_factory=list)  # `<!channel>` -> "channel", `<!here>`, `<!date^…>`


_CONTROL = re.compile(r"<([^<>]*)>")


def _decode(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render_mrkdwn(text: str) -> Rendered:
    out = Rendered(text="")
    shown: list[str] = []
    last = 0
    for match in _CONTROL.finditer(text):
        shown.append(_decode(text[last : match.start()]))
        target, _, label = match.group(1).partition("|")
        if target.startswith(("@", "#")):
            out.mentions.append(target)
            shown.append(_decode(label) or target)
        elif target.startswith("!"):
            out.broadcasts.append(target[1:])
            shown.append("@" + target[1:])
        else:
            out.links.append(_decode(target))
            shown.append(_decode(label or target))
        last = match.end()
    shown.append(_decode(text[last:]))
    out.text = "".join(shown)
    return out


def mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    """Every mrkdwn text of a message: its `text` and each mrkdwn text object in its blocks."""
    found = [message.get("text", "")]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.get("blocks", []))
    return found
