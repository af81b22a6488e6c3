"""Retake the screenshots of docs/incident-commander.md from a running `runbooks dev`.

    runbooks dev --home H &
    runbooks drill service-outage --wait --auto-approve --home H   # resolved by automation
    runbooks drill gpu-hardware-failure --home H                   # waits at cordon-drain:gpu-node-2
    runbooks drill canary-rollback --no-reset --home H             # waits at canary-rollback (kserve-error-rate)
    python docs/screenshots.py --home H                            # within the gates' 10 minutes

Headless Chromium (Debian `chromium`) looks at the stack's Temporal Web UI through the DevTools
protocol, as tests/test_temporal_ui.py does, and writes docs/img/*.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file from the checkout: the tests' Chromium driver

from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

from tests.helpers.fixtures_ui import HeadlessChromium  # noqa: E402

IMAGES = ROOT / "docs" / "img"
AWAITING = 'IncidentStatus="awaiting-approval"'
# The UI's content without its sidebar and top bar, in CSS pixels: (x, y, width, height).
CONTENT = (256, 48, 1024, 0)


def region(height: int) -> tuple[int, int, int, int]:
    x, y, width, _ = CONTENT
    return x, y, width, height


async def run_ids(temporal: str, namespace: str) -> dict[str, str]:
    """Incident id -> its latest run id, for every incident on the stack."""
    client = await Client.connect(temporal, namespace=namespace, data_converter=pydantic_data_converter)
    return {wf.id: wf.run_id async for wf in client.list_workflows('Runbook IS NOT NULL')}


def take(ui: str, namespace: str, runs: dict[str, str], waiting: str, resolved: str) -> None:
    browser = HeadlessChromium()
    try:
        # Taller than the tests' viewport: an incident's current details run past 800 px.
        browser._call("Emulation.setDeviceMetricsOverride", width=1280, height=1400, deviceScaleFactor=1, mobile=False)
        workflows = f"{ui}/namespaces/{namespace}/workflows"
        browser.open(f"{workflows}?query={urllib.parse.quote(AWAITING)}")
        browser.wait_for(lambda t: waiting in t, f"{waiting} in the list")
        time.sleep(1.5)  # let the list settle
        browser.screenshot(IMAGES / "incidents-awaiting-approval.png", region(330))

        for incident, name, height in (
            (waiting, "incident-awaiting-approval.png", 940),
            (resolved, "incident-resolved.png", 720),
        ):
            browser.open(f"{workflows}/{incident}/{runs[incident]}/user-metadata")
            browser.wait_for(lambda t: "incident commander:" in t, f"{incident}'s current details")
            time.sleep(1.5)
            browser.screenshot(IMAGES / name, region(height))
    finally:
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="the `runbooks dev --home` folder")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--waiting", default="gpu-hardware-failure--node.gpu-node-2")
    parser.add_argument("--resolved", default="service-outage--cluster")
    args = parser.parse_args()
    dev = json.loads((args.home / "dev.json").read_text())
    runs = asyncio.run(run_ids(dev["temporal"], args.namespace))
    missing = [i for i in (args.waiting, args.resolved) if i not in runs]
    if missing:
        parser.error(f"no incident {', '.join(missing)} on {dev['temporal']}: run the drills above first")
    take(dev["ui"], args.namespace, runs, args.waiting, args.resolved)
    print(f"wrote {IMAGES}/incidents-awaiting-approval.png, incident-awaiting-approval.png, incident-resolved.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
