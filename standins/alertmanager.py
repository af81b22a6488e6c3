"""Alertmanager's side, for tests and benchmarks: webhook payloads as Alertmanager 0.25 sends them,
alerts as Prometheus posts them, and a real Alertmanager process (Debian `prometheus-alertmanager`)
sending every group to a webhook URL. The pytest fixtures that use them are in
tests/helpers/fixtures_alertmanager.py.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fingerprint() -> str:
    return uuid.uuid4().hex[:16]


def am_alert(
    alertname: str = "LLMDServiceDown",
    *,
    status: str = "firing",
    fp: str | None = None,
    starts_at: datetime | None = None,
    ends_at: str = "0001-01-01T00:00:00Z",
    **labels: str,
) -> dict[str, Any]:
    """One alert as Alertmanager 0.25 sends it: nanosecond timestamps, Go zero endsAt while firing."""
    starts = (starts_at or datetime.now(timezone.utc) - timedelta(minutes=2)).astimezone(timezone.utc)
    return {
        "status": status,
        "labels": {"alertname": alertname, "service": "llm-d", "namespace": "llm-d", **labels},
        "annotations": {"summary": f"{alertname} in tests", "runbook_url": "https://runbooks.example/x"},
        "startsAt": starts.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z",
        "endsAt": ends_at,
        "generatorURL": "http://prometheus.example/graph?g0.expr=up",
        "fingerprint": fp or fingerprint(),
    }


def am_payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "receiver": "runbooks",
        "status": "firing" if firing else "resolved",
        "alerts": list(alerts),
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "version": "4",
        "groupKey": '{}:{alertname="x"}',
        "truncatedAlerts": 0,
    }


ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"


class Alertmanager:
    """A real Alertmanager (Debian 0.25), clustering off, sending every group to our webhook with a bearer `token`."""

    def __init__(self, workdir: Path, webhook_url: str, *, token: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = workdir / f"am-{self.port}"
        self._dir.mkdir(parents=True)
        # Short intervals so repeats come within a test; every alert its own group.
        config = {
            "route": {
                "receiver": "runbooks",
                "group_by": ["alertname", "fingerprint_label"],
                "group_wait": "500ms",
                "group_interval": "1s",
                "repeat_interval": "2s",
            },
            "receivers": [
                {
                    "name": "runbooks",
                    "webhook_configs": [
                        {
                            "url": webhook_url,
                            "send_resolved": True,
                            "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                        }
                    ],
                }
            ],
        }
        (self._dir / "am.yml").write_text(yaml.safe_dump(config))
        self._proc: subprocess.Popen | None = None

    def start(self) -> Alertmanager:
        self._proc = subprocess.Popen(
            [
                ALERTMANAGER_BIN,
                f"--config.file={self._dir / 'am.yml'}",
                f"--storage.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=(self._dir / "am.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {(self._dir / 'am.log').read_text()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("alertmanager did not become ready in 20 s")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    async def post(self, *alerts: dict[str, Any]) -> None:
        """POST /api/v2/alerts, as Prometheus would."""
        async with httpx.AsyncClient() as http:
            resp = await http.post(f"{self.url}/api/v2/alerts", json=list(alerts), timeout=5)
            resp.raise_for_status()

    async def alerts(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            resp = await http.get(f"{self.url}/api/v2/alerts", timeout=5)
            resp.raise_for_status()
            return resp.json()


def prometheus_alert(
    alertname: str, starts_at: datetime, *, ends_at: datetime | None = None, **labels: str
) -> dict[str, Any]:
    """An alert as Prometheus posts it to Alertmanager's API."""
    alert: dict[str, Any] = {
        "labels": {"alertname": alertname, "fingerprint_label": uuid.uuid4().hex[:8], **labels},
        "annotations": {"summary": f"{alertname} (e2e)"},
        "startsAt": starts_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
        "generatorURL": "http://prometheus.example/graph",
    }
    if ends_at is not None:
        alert["endsAt"] = ends_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return alert
