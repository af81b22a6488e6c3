"""Prometheus metrics of the triggers process, in a registry of its own.

Its own registry, so several apps in one process (tests, `runbooks dev`) never collide
and /metrics shows only what the triggers did.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest


class TriggerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.alerts_received = Counter(
            "runbooks_alerts_received",
            "Alerts received from Alertmanager, by the alert's status",
            ["status"],
            registry=self.registry,
        )
        self.alerts_routed = Counter(
            "runbooks_alerts_routed",
            "Firing alerts that started an incident, by playbook",
            ["runbook"],
            registry=self.registry,
        )
        self.alerts_deduplicated = Counter(
            "runbooks_alerts_deduplicated",
            "Alerts absorbed by an existing incident (running: repeat recorded; finished: ignored)",
            ["incident"],
            registry=self.registry,
        )
        self.alerts_resolved = Counter(
            "runbooks_alerts_resolved",
            "Resolved alerts, by whether a running incident was told",
            ["delivered"],
            registry=self.registry,
        )
        self.alerts_rejected = Counter(
            "runbooks_alerts_rejected",
            "Webhook requests refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.approvals = Counter(
            "runbooks_approvals",
            "Slack approval clicks, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.pagerduty_webhooks = Counter(
            "runbooks_pagerduty_webhooks",
            "PagerDuty webhook deliveries, by outcome (applied, ignored, repeat, forged, ...)",
            ["outcome"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "runbooks_request_latency_seconds",
            "Time to answer an HTTP request, by route and status code",
            ["path", "status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
