"""Text for Slack's mrkdwn: what alerts and the cluster said stays text; our own formatting stays ours.

Slack reads `<…>` in message text as a control sequence (a link `<url|label>`, a mention `<@U…>`, a
broadcast `<!channel>`) and asks for exactly three characters to be escaped: `&` → `&amp;`,
`<` → `&lt;`, `>` → `&gt;` (nothing else; Slack decodes these three). Alert labels and annotations
(`<no value>` from a template, `R&D`, a model's `<|eot_id|>`, `<!channel>`) and API error messages
(`<nil>`) are such text. The Slack activities escape every text they are given (the thread text,
every mrkdwn object of the blocks a playbook built); the links we mean are added after, from their
parts (`link`). `*bold*`, `` `code` ``, `:emoji:` and a line-leading `&gt;` quote render as before.
"""

from __future__ import annotations

from typing import Any


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str, label: str) -> str:
    """`<url|label>`: a link we mean; neither part can end the sequence early (a `|` in the URL is %7C)."""
    return f"<{escape(url).replace('|', '%7C')}|{escape(label)}>"


def cut(text: str, limit: int) -> str:
    """`text[:limit]`, backed off so no `&amp;`-style entity is cut in two."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    amp = head.rfind("&", max(0, limit - 4))
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    return head


def escape_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of `blocks` with every mrkdwn text object's text escaped (plain_text needs none)."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
                out["text"] = escape(node["text"])
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(blocks)
