"""Slack channel names to ids, looked up once per worker (conversations.list) and kept.

Configuration names channels (`#incidents-critical`); Slack wants ids for everything but
chat.postMessage: conversations.history / .replies and chat.update answer `channel_not_found` to a
name. So every Slack activity turns a name into its id first. The listing pages by cursor
(`response_metadata.next_cursor`), asks for public and private channels (private ones are listed
only when the bot is in them) and leaves archived ones out (nothing can be posted there).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from temporalio.exceptions import ApplicationError

# Conversation ids: C… (channels, private ones too), G… (older private channels), D… (DMs).
_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_PAGE = 200  # Slack: at most 1000, fewer recommended; it may answer fewer per page anyway


def is_channel_id(channel: str) -> bool:
    return bool(_ID.match(channel))


class ChannelNotFound(ApplicationError):
    """A configured channel name Slack does not know (or the bot cannot see): retrying cannot help."""

    def __init__(self, name: str, listed: int) -> None:
        super().__init__(
            f"Slack channel {name!r} not found: conversations.list shows no channel by that name among the "
            f"{listed} public and private (not archived) channels this bot can see. Create it, invite the bot "
            "to it if it is private, or configure its id (C…) instead of its name.",
            type="SlackChannelNotFound",
            non_retryable=True,
        )


class ChannelDirectory:
    """Name -> id for one Slack client; `call` runs a Web API method with the activity's error handling."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self._ids: dict[str, str] | None = None
        self._lock = asyncio.Lock()

    async def channel_id(self, channel: str, call: Any) -> str:
        """`channel` as Slack's id: an id as it is, a name (`#x` or `x`) from the cached listing."""
        if is_channel_id(channel):
            return channel
        name = channel.removeprefix("#")
        async with self._lock:  # concurrent activities of one worker list once
            if self._ids is None or name not in self._ids:
                # First use, or a channel created since the listing: list again (a miss is rare: it fails the post).
                self._ids = await self._list(call)
            found = self._ids.get(name)
        if found is None:
            raise ChannelNotFound(channel, len(self._ids))
        return found

    def describe(self, channel: Any) -> str:
        """`'#incidents' (C0123…)` for an id this directory listed, else the value as given."""
        name = next((n for n, i in (self._ids or {}).items() if i == channel), None)
        return f"'#{name}' ({channel})" if name else repr(channel)

    async def _list(self, call: Any) -> dict[str, str]:
        ids: dict[str, str] = {}
        cursor: str | None = None
        while True:
            resp = await call(
                self._client.conversations_list,
                types="public_channel,private_channel",
                exclude_archived=True,
                limit=_PAGE,
                cursor=cursor,
            )
            for conv in resp.get("channels", []):
                ids[conv["name"]] = conv["id"]
            cursor = (resp.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return ids
