"""The Temporal Web UI for tests: a dev server with its UI, and headless Chromium to look at it.

Chromium is driven over the DevTools protocol (websocket-client, already installed with the
`kubernetes` client) rather than `--dump-dom`: the workflow page keeps a long poll open, so
`--virtual-time-budget` never runs out, and the UI renders current details inside an iframe,
which `--dump-dom` leaves out.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websocket
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.helpers.fixtures_temporal import installed_binary
from workflows.incident.search import SEARCH_ATTRIBUTES

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = (1280, 800)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--hide-scrollbars",
]
# The page's own text plus the text of its same-origin iframes (current details render in one).
_VISIBLE_TEXT = """
[document.body ? document.body.innerText : ''].concat(
  Array.from(document.querySelectorAll('iframe')).map(f => {
    try { return (f.contentDocument && f.contentDocument.body) ? f.contentDocument.body.innerText : ''; }
    catch (e) { return ''; }
  })
).join('\\n')
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TemporalWithUI:
    env: WorkflowEnvironment
    ui_url: str  # e.g. http://127.0.0.1:PORT

    def workflows_url(self, namespace: str = "default") -> str:
        return f"{self.ui_url}/namespaces/{namespace}/workflows"


class BrowserError(AssertionError):
    """Chromium did not show what was expected; the message carries what it showed instead."""


class HeadlessChromium:
    """One headless Chromium tab, driven over the DevTools protocol. Blocking: call it from a thread."""

    def __init__(self, executable: str = CHROMIUM) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
        self._proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._ids = itertools.count(1)
        self._ws = websocket.create_connection(self._page_socket(), timeout=30, suppress_origin=True)
        self._call("Page.enable")
        # --window-size includes the (invisible) window frame: fix the page's own viewport instead.
        self._call(
            "Emulation.setDeviceMetricsOverride",
            width=VIEWPORT[0],
            height=VIEWPORT[1],
            deviceScaleFactor=1,
            mobile=False,
        )

    def _page_socket(self, timeout: float = 20.0) -> str:
        """Chromium writes its DevTools port into the profile once it listens."""
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self._proc.returncode}")
            if port_file.exists() and port_file.read_text().strip():
                port = port_file.read_text().split()[0]
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
                    pages = [t for t in json.load(resp) if t["type"] == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.05)
        raise BrowserError(f"chromium's DevTools endpoint did not come up within {timeout:.0f} s")

    def _call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # events arrive interleaved with answers; only our answer matters
            message = json.loads(self._ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str) -> None:
        self._call("Page.navigate", url=url)

    def visible_text(self) -> str:
        result = self._call("Runtime.evaluate", expression=_VISIBLE_TEXT, returnByValue=True)
        return result.get("result", {}).get("value") or ""

    def wait_for(self, shown: Callable[[str], bool], what: str, timeout: float = 20.0) -> str:
        """The page's visible text once `shown(text)` holds; BrowserError with the last text otherwise."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.visible_text()
            if shown(text):
                return text
            time.sleep(0.25)
        raise BrowserError(f"the page never showed {what} within {timeout:.0f} s; it showed:\n{text[:3000]}")

    def screenshot(self, path: Path, region: tuple[int, int, int, int] | None = None) -> Path:
        """A PNG of the viewport, or of `region` (x, y, width, height in CSS pixels) of it."""
        params: dict[str, Any] = {"format": "png"}
        if region:
            x, y, width, height = region
            params["clip"] = {"x": x, "y": y, "width": width, "height": height, "scale": 1}
        data = self._call("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Ask Chromium to quit (it then stops its helper processes), kill it if it won't."""
        try:
            self._call("Browser.close")
        except (BrowserError, OSError, websocket.WebSocketException):
            pass
        self._ws.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._profile.cleanup()


async def _wait_for_ui(url: str, timeout: float = 30.0) -> None:
    """The dev server answers gRPC before its UI serves pages."""
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the Temporal Web UI at {url} did not answer within {timeout:.0f} s")
            await asyncio.sleep(0.2)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_ui() -> AsyncIterator[TemporalWithUI]:
    """`temporal server start-dev` with its Web UI on a free port and the incident search attributes."""
    ui_port = free_port()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=installed_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=[key for key, _ in SEARCH_ATTRIBUTES],
        ui=True,
        ui_port=ui_port,
        dev_server_log_level="error",
    )
    ui = TemporalWithUI(env=env, ui_url=f"http://127.0.0.1:{ui_port}")
    try:
        await _wait_for_ui(ui.ui_url)
        yield ui
    finally:
        await env.shutdown()


needs_chromium = pytest.mark.skipif(
    not shutil.which(CHROMIUM),
    reason=f"headless Chromium not installed at {CHROMIUM} (Debian: apt-get install chromium)",
)


@pytest.fixture
def chromium() -> Iterator[HeadlessChromium]:
    browser = HeadlessChromium()
    try:
        yield browser
    finally:
        browser.close()
