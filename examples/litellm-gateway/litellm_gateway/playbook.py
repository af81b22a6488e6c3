"""LiteLLM gateway errors: a team's runbook for what seed 004 leaves to humans.

Read `respond()` next to seed 004:
1. "Check if specific requests are failing": `kubectl logs deployment/litellm | grep -i "500\\|502\\|503"`;
   which models fail (LiteLLM names the "Model Group" in each error).
2. The model_list in `litellm-config`: each failing model's api_base, and whether that Service exists.
3. The blue-green switch's last step, "Restart LiteLLM to pick up config": when the ConfigMap
   routes every failing model to a Service that exists, the running proxies hold an older
   model_list; with approval, `kubectl rollout restart deployment/litellm`, wait for the rollout,
   and watch the log until the failing models answer again.
Anything else (a route to a Service that does not exist, a model the config does not list, a log
without 5xx, a ConfigMap that cannot be read) is a human's: the incident says what it saw and pages.
Scope: one gateway Deployment (`namespace`/`deployment` labels).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from temporalio import workflow

from workflows.incident import Alert, Cluster, Drill, Incident, Playbook, PlaybookPolicy, Read, Scope, WorkerClients

with workflow.unsafe.imports_passed_through():
    from activities.kube.deployments_models import RestartRequest, RolloutWait
    from activities.kube.pods_models import LogQuery, PodLog
    from litellm_gateway.models import GATE_RESTART, GatewayIncidentInput, GatewayRoutes, RoutesQuery, Upstream

POLICY = PlaybookPolicy(
    runbook="litellm-gateway-errors",
    title="LiteLLM gateway errors",
    default_severity="P1",  # seed 004: High Error Rate (> 1%) is P1
    gates=(GATE_RESTART,),
    impact="requests through the LiteLLM gateway fail for some models",
)

_FAILED = re.compile(r'" (5\d\d) ')
_MODEL_GROUP = re.compile(r"Model Group=([\w.:/-]+)")


class Gateway(Cluster):
    """The engine's Kubernetes calls plus this playbook's own read (named as its activity is registered)."""

    litellm_gateway_routes = Read(
        RoutesQuery, GatewayRoutes, lambda q: f"kubectl get configmap {q.configmap} -n {q.namespace} -o yaml"
    )


@workflow.defn
class LiteLLMGatewayErrors:
    """Find the failing models, compare the model_list, restart the gateway when only its pods are stale."""

    @workflow.init
    def __init__(self, inp: GatewayIncidentInput) -> None:
        self.inp = inp
        self.t = inp.timings.for_time_scale(inp.time_scale)
        self.incident = Incident(inp, POLICY)
        self.cluster = Gateway(self.incident, self.t)
        self.namespace, self.deployment = inp.target()

    @workflow.run
    async def run(self, inp: GatewayIncidentInput) -> str:
        return await self.incident.run(self.respond)

    async def respond(self) -> None:
        inc = self.incident
        async with inc.step("1. Check which requests are failing") as entry:
            log = await self.cluster.pod_logs(self._log_query())
            failing, errors = failing_models(log.text)
            entry.note(f"{log.pod}: {errors} 5xx in the last {self.inp.log_tail_lines} lines")
            entry.outcome = (
                f"failing: {', '.join(sorted(failing))}"
                if failing
                else f"{errors} 5xx, no model named"
                if errors
                else "no 5xx in the log"
            )
        if not failing:
            # No 5xx seen is not health: the alert says otherwise, so a human looks.
            why = (
                "the gateway's log names no model in its errors"
                if errors
                else f"the alert fired, yet the last {self.inp.log_tail_lines} lines of {log.pod} show no 5xx"
            )
            await self._hand_over(f"could not tell: {why}")
            return
        async with inc.step("2. Compare the model_list with its upstreams") as entry:
            routes = await self.cluster.litellm_gateway_routes(
                RoutesQuery(namespace=self.namespace, configmap=self.inp.configmap)
            )
            for upstream in routes.upstreams:
                entry.note(upstream.line())
            broken = [u for u in routes.upstreams if u.model in failing and u.exists is not True]
            unlisted = sorted(failing - {u.model for u in routes.upstreams})
            entry.outcome = (
                routes.why
                if not routes.found
                else f"{len(broken)} failing model(s) routed to no existing Service; {len(unlisted)} unlisted"
            )
        if not routes.found:
            await self._hand_over(f"could not tell: {routes.why}")
            return
        if broken or unlisted:
            await self._hand_over(
                "the model_list itself is wrong: "
                + "; ".join([u.line() for u in broken] + [f"{m} is not in {self.inp.configmap}" for m in unlisted])
            )
            return
        await self.restart(failing, routes.upstreams)

    async def restart(self, failing: set[str], upstreams: list[Upstream]) -> None:
        """Seed 004 blue-green step 4, gated: the config is right, the running proxies are not."""
        inc = self.incident
        ref = f"{self.namespace}/{self.deployment}"
        routed = "; ".join(u.line() for u in upstreams if u.model in failing)
        async with inc.step("3. Restart LiteLLM to pick up config") as entry:
            question = (
                f"Restart deployment/{self.deployment} -n {self.namespace}? {', '.join(sorted(failing))} "
                f"fail through the gateway, yet {self.inp.configmap} routes them to Services that exist "
                f"({routed}): the running pods hold an older model_list."
            )
            if not await inc.approval(GATE_RESTART, question, target=ref, timeout=self.t.approval_timeout):
                entry.outcome = "not restarted (not approved)"
                return
            change = await self.cluster.restart_deployment(
                RestartRequest(
                    namespace=self.namespace,
                    name=self.deployment,
                    restarted_at=workflow.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                    restarted_by=f"{workflow.info().workflow_id}/restart-gateway",
                ),
                finding=f"{', '.join(sorted(failing))} answer 5xx through {ref}; {routed}",
            )
            if change is None:
                entry.outcome = "stopped: automation may not act"
                return
            status = await self.cluster.wait_for_rollout(
                RolloutWait(
                    namespace=self.namespace, name=self.deployment, timeout_seconds=self.t.rollout_timeout_seconds
                )
            )
            entry.outcome = f"restarted; rollout: {status.message}"
        await self.verify(failing)

    async def verify(self, failing: set[str]) -> None:
        """The restarted pods' log, until the failing models stop answering 5xx."""
        inc = self.incident
        async with inc.step("Verification") as entry:

            def still_failing(log: PodLog) -> set[str]:
                return failing_models(log.text)[0] & failing

            log = await inc.poll_until(
                lambda: self.cluster.pod_logs(self._log_query()),
                lambda log: not still_failing(log),
                deadline=workflow.now() + timedelta(seconds=self.t.verification_timeout_seconds),
                every=timedelta(seconds=self.t.verification_poll_seconds),
                stop=lambda: inc.stop_waiting,
                summary="next log look",
                to_deadline=False,
                shortest=None,
            )
            still = still_failing(log)
            entry.outcome = (
                f"still failing: {', '.join(sorted(still))} ({log.pod})"
                if still
                else f"{log.pod}: no 5xx for {', '.join(sorted(failing))}"
            )
        if still:
            await self._hand_over(f"after the restart {', '.join(sorted(still))} still fail")
        else:
            inc.resolve(f"gateway restarted; {entry.outcome}")

    def _log_query(self) -> LogQuery:
        return LogQuery(namespace=self.namespace, deployment=self.deployment, tail_lines=self.inp.log_tail_lines)

    async def _hand_over(self, why: str) -> None:
        await self.incident.say(
            f":wrench: *LiteLLM gateway {self.namespace}/{self.deployment}* — {why}. "
            f"Next: `kubectl logs deployment/{self.deployment} -n {self.namespace} | "
            f"grep -i \"500\\|502\\|503\"` and `kubectl get configmap {self.inp.configmap} "
            f"-n {self.namespace} -o yaml`.",
            purpose="hand-over",
        )
        self.incident.record("action", "handed to a human", outcome=why[:500])
        await self.incident.escalate_now(f"LiteLLM gateway errors: {why}")


def failing_models(log: str) -> tuple[set[str], int]:
    """(models LiteLLM names in its errors, count of 5xx responses) in a proxy log."""
    return set(_MODEL_GROUP.findall(log)), len(_FAILED.findall(log))


def _activities(clients: WorkerClients) -> list[object]:
    from litellm_gateway.activities import LiteLLMGateway

    return [LiteLLMGateway(clients.kube)]


PLAYBOOK = Playbook(
    policy=POLICY,
    workflow=LiteLLMGatewayErrors,
    scope=Scope.object("namespace", "deployment"),
    alerts={"LiteLLMGatewayErrors": Alert("P1", "seed 004 High Error Rate (> 1%): P1")},
    drills=(
        Drill(
            "litellm-stale-routes",
            "LiteLLMGatewayErrors",
            "LiteLLM gateway answers 5xx for some models",
            {"namespace": "litellm", "deployment": "litellm"},
            file=Path(__file__).with_name("faults") / "stale-routes.yaml",
        ),
    ),
    kube_access=(
        "get pods",
        "list pods",
        "get pods/log",
        "get configmaps",
        "get services",
        "get deployments.apps",
        "patch deployments.apps",
        "list replicasets.apps",
    ),
    activities=_activities,
)
