"""Node-health reads for the GPU hardware failure playbook (seed 002): what `kubectl describe node`
shows under Events, with the kernel's NVIDIA XID lines picked out.

Sync (the client blocks), run on the worker's thread pool like KubeActivities.
"""

from __future__ import annotations

from datetime import datetime, timezone

from kubernetes import client as k8s
from temporalio import activity

from activities.kube_api import on_call_errors
from activities.node_health_models import NodeEvent, NodeEvents, NodeEventsQuery


class NodeHealthActivities:
    """Reads about one node that the GPU reads (activities/gpu.py) do not cover."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api_client)

    @activity.defn
    def node_events(self, query: NodeEventsQuery) -> NodeEvents:
        """The node's events, newest first (`kubectl describe node NODE`'s Events). Errors: a missing
        permission (403) fails at once, non-retryable (`KubernetesForbidden`)."""
        selector = f"involvedObject.kind=Node,involvedObject.name={query.node}"
        if query.warnings_only:
            selector += ",type=Warning"
        with on_call_errors(f"list the events of node {query.node}"):
            items = self.core.list_event_for_all_namespaces(field_selector=selector).items
        events = [_event(e) for e in items]
        if query.since is not None:
            events = [e for e in events if e.last_seen is None or e.last_seen >= query.since]
        events.sort(key=lambda e: e.last_seen or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
        return NodeEvents(node=query.node, events=events)


def _event(e: k8s.CoreV1Event) -> NodeEvent:
    seen = e.last_timestamp or e.event_time or e.first_timestamp or (e.metadata.creation_timestamp if e.metadata else None)
    source = (e.source.component if e.source else None) or e.reporting_component or ""
    return NodeEvent(reason=e.reason or "", message=e.message or "", source=source, count=e.count or 1,
                     last_seen=seen)
