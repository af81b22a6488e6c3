"""Whether each served cluster has a worker, and telling on-call when one has none.

A cluster's incidents run on its task queue (settings/clusters.py). When every worker of that
cluster is gone (the Deployment scaled to zero, the cluster unreachable), Temporal keeps its
incidents, durably, until a worker polls again; nothing breaks, but nothing acts either, and no
incident can say so itself. The triggers run once for all clusters, so they watch: every
`clusters.watch_seconds` they ask Temporal to describe each served cluster's workflow task queue.
Its `pollers` list each worker identity with the last time it polled; a live worker, idle or
busy, polls again at least once a long-poll interval (a minute on Temporal's defaults). No poller
seen within `clusters.worker_silence_seconds`: the cluster has no worker. On-call hears it once, in
the default incident channel, with the incidents that wait; and again when a worker is back.

`runbooks_cluster_worker_up{cluster}` (1 or 0) says the same to Prometheus.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from prometheus_client import CollectorRegistry, Gauge
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from settings import Settings
from workflows.incident import search

log = logging.getLogger(__name__)

_LISTED = 10  # waiting incidents named in the message; the rest are counted


@dataclass
class ClusterHealth:
    """What the watch last saw of one cluster's queue."""

    cluster: str
    task_queue: str
    up: bool | None = None  # None: not looked at yet, or Temporal did not answer
    last_poll: datetime | None = None
    told_gone: bool = False


class ClusterWatch:
    """Looks at every served cluster's task queue; `check()` once, `run()` on the interval."""

    def __init__(
        self,
        settings: Settings,
        client: Callable[[], Awaitable[Client]],
        slack: AsyncWebClient | None,
        registry: CollectorRegistry,
    ) -> None:
        self._settings = settings
        self._client = client
        self._slack = slack
        self._silence = timedelta(seconds=settings.clusters.worker_silence_seconds)
        self._started = datetime.now(timezone.utc)
        self.clusters = {
            name: ClusterHealth(name, settings.cluster_task_queue(name)) for name in settings.clusters.names()
        }
        self._gauge = Gauge(
            "runbooks_cluster_worker_up",
            "1 while a worker polls the cluster's task queue, 0 when none has for clusters.worker_silence_seconds",
            ["cluster"],
            registry=registry,
        )

    async def run(self) -> None:
        """Check every `clusters.watch_seconds` until cancelled; a failed check is logged, never raised."""
        every = self._settings.clusters.watch_seconds
        while True:
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - the watch must outlive a bad minute of Temporal or Slack
                log.exception("could not check the clusters' workers")
            await asyncio.sleep(every)

    async def check(self) -> dict[str, bool | None]:
        """Each cluster: True (a worker polls), False (none within the silence), None (Temporal did not say)."""
        client = await self._client()
        now = datetime.now(timezone.utc)
        for health in self.clusters.values():
            try:
                health.last_poll = await self._last_poll(client, health.task_queue)
            except RPCError as err:
                log.warning("cannot describe task queue %s of cluster %s: %s", health.task_queue, health.cluster, err)
                health.up = None
                continue
            was = health.up
            seen = health.last_poll or self._started  # never polled: count the silence from our start
            health.up = now - seen < self._silence
            self._gauge.labels(health.cluster).set(1 if health.up else 0)
            if not health.up and not health.told_gone:
                health.told_gone = True
                await self._tell(client, health, gone=True)
            elif health.up and health.told_gone:
                health.told_gone = False
                await self._tell(client, health, gone=False)
            elif was is not None and was != health.up:
                log.info("cluster %s: worker %s", health.cluster, "up" if health.up else "gone")
        return {name: h.up for name, h in self.clusters.items()}

    async def _last_poll(self, client: Client, task_queue: str) -> datetime | None:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=timedelta(seconds=self._settings.temporal.rpc_timeout_seconds),
        )
        polls = [p.last_access_time.ToDatetime(tzinfo=timezone.utc) for p in response.pollers if p.last_access_time]
        return max(polls, default=None)

    async def _tell(self, client: Client, health: ClusterHealth, *, gone: bool) -> None:
        waiting = await self._waiting(client, health.cluster)
        listed = ", ".join(f"`{i}`" for i in waiting[:_LISTED]) + (
            f" and {len(waiting) - _LISTED} more" if len(waiting) > _LISTED else ""
        )
        since = f"since {health.last_poll:%H:%M:%S} UTC" if health.last_poll else "since the triggers started"
        if gone:
            text = (
                f":warning: *No worker serves cluster `{health.cluster}`*: nothing has polled its task queue "
                f"`{health.task_queue}` {since}. Its incidents wait, durably, and run when a worker is back; "
                f"nothing acts on `{health.cluster}` meanwhile. Check the worker Deployment in that cluster."
                + (f"\nWaiting: {listed}" if waiting else "")
            )
            log.warning(
                "cluster %s has no worker polling %s (%s); %d incident(s) wait",
                health.cluster,
                health.task_queue,
                since,
                len(waiting),
            )
        else:
            text = f":white_check_mark: *A worker serves cluster `{health.cluster}` again*; its incidents run." + (
                f"\nOpen: {listed}" if waiting else ""
            )
            log.info("cluster %s has a worker again", health.cluster)
        await self._post(f"[{health.cluster}] {text}")

    async def _waiting(self, client: Client, cluster: str) -> list[str]:
        query = f"ExecutionStatus = 'Running' AND {search.CLUSTER.name} = '{cluster}' AND Runbook IS NOT NULL"
        try:
            return [wf.id async for wf in client.list_workflows(query, limit=100)]
        except RPCError as err:
            log.warning("cannot list cluster %s's incidents: %s", cluster, err)
            return []

    async def _post(self, text: str) -> None:
        channel = self._settings.slack.channel_for(None)
        if self._slack is None:
            print(f"[slack {channel}] {text}", flush=True)
            return
        try:
            await self._slack.chat_postMessage(channel=channel, text=text)
        except SlackApiError as err:  # on-call still has the log line and the metric
            log.error("could not tell Slack about the cluster's worker: %s", err.response.get("error"))
