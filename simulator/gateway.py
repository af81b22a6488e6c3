"""The LiteLLM gateway as the simulator runs it: each pod reads its model_list when it starts.

The proxy loads `config.yaml` from the `litellm-config` ConfigMap of its namespace at start-up
(seed 004: "Restart LiteLLM to pick up config"), so a pod keeps routing each model to the
`api_base` it loaded until it restarts. Its log shows one request per model every period: 200 when
the upstream Service exists, else LiteLLM's connection error and a 500.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from simulator.store import Store

CONFIGMAP = "litellm-config"
_HOST = re.compile(r"^https?://([a-z0-9-]+)\.([a-z0-9-]+)(?:\.svc(?:\.cluster\.local)?)?(?::\d+)?(?:/|$)")


@dataclass(frozen=True)
class Route:
    model: str  # the model_name clients ask for
    namespace: str  # of the upstream Service its api_base names
    service: str


def load_routes(store: Store, namespace: str) -> tuple[Route, ...]:
    """The model_list of `namespace`'s litellm-config as a starting proxy reads it (no ConfigMap,
    or one it cannot parse: no routes)."""
    cm = store.get("configmaps", namespace, CONFIGMAP)
    try:
        config = yaml.safe_load(((cm or {}).get("data") or {}).get("config.yaml") or "") or {}
    except yaml.YAMLError:
        return ()
    routes = []
    for entry in config.get("model_list") or []:
        match = _HOST.match(str(((entry or {}).get("litellm_params") or {}).get("api_base") or ""))
        if match:
            routes.append(Route(str(entry.get("model_name")), match.group(2), match.group(1)))
    return tuple(routes)


def request_lines(
    store: Store, routes: tuple[Route, ...], start: datetime, elapsed: float, *, period: float = 10.0, most: int = 20
) -> list[str]:
    """The proxy's request log since `start` (the last `most` periods), one request per route each."""
    periods = int(elapsed // period)
    lines: list[str] = []
    for i in range(max(0, periods - most), periods):
        stamp = (start + timedelta(seconds=20 + i * period)).strftime("%H:%M:%S,%f")[:-3]
        for n, route in enumerate(routes):
            peer = f'INFO:     10.244.0.1:{41000 + (i * 7 + n) % 20000} - "POST /chat/completions HTTP/1.1"'
            if store.get("services", route.namespace, route.service) is not None:
                lines.append(f"{peer} 200 OK")
                continue
            lines += [
                f"{stamp} - LiteLLM Proxy:ERROR: proxy_server.py:3315 - litellm.proxy.proxy_server.chat_completion(): "
                f"Exception occured - litellm.APIConnectionError: OpenAIException - Connection error. "
                f"Received Model Group={route.model}",
                f"{peer} 500 Internal Server Error",
            ]
    return lines
