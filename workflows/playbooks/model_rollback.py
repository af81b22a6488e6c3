"""Seed 002's model rollback, as a part a playbook composes (no base class):

    self.models = ModelRollback(self.incident, self.cluster, window_minutes=60, rollout_timeout_seconds=300, ...)
    change = await self.models.find(summary, alert_starts_at)     # a model version change in the window?
    if change and await self.models.offer(change, finding="5xx 48 % of production/llama-3-1-8b"):
        ...                                                        # the playbook verifies its own figures
    await self.models.rollback(req.why)                            # on request: the recorded versions back

Seed 002 "Rollback Procedures": `kubectl patch llmdeployment NAME -n NS --type=merge -p
'{"spec":{"model":{"version":"previous-stable-tag"}}}'`, then `kubectl rollout status deployment/NAME`.
"Model Versioning and Rollback Strategies": `spec.model` is `{modelUri, version, ...}` and
`spec.rollback.previousVersions` lists the last known good version first; its autoRollback triggers
(error rate > 1 %, p95 > 1000 ms) are why the error-rate and latency playbooks offer it.

What the seed leaves to judgement is decided so: a *model version change in the window* is a
ReplicaSet of the LLMDeployment's Deployment (the operator names it after the LLMDeployment) whose pod
template label `llm-d.io/model-version` differs from the one before it, created within
`window_minutes` before the alert started. The version to go back to is the declared last good one
(`previousVersions[0]`) when the spec has one, else the version the Deployment served before the
change; the question names both when they differ. The patch asks a human first (gate
`model-rollback`, target `namespace/name`); a rollback on request patches the recorded `before` back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow

from workflows.incident import Cluster, Incident

with workflow.unsafe.imports_passed_through():
    from activities.kube.deployments_models import DeploymentRef, RolloutHistory, RolloutWait
    from activities.kube.llmdeployments_models import (
        MODEL_VERSION_LABEL,
        LLMDeploymentPatch,
        LLMDeploymentQuery,
        LLMDeploymentSummary,
    )
    from activities.models import ClusterChange


GATE_MODEL_ROLLBACK = "model-rollback"


@dataclass(frozen=True)
class ModelChange:
    """A model version change of one LLMDeployment: `before` served until `changed_at`, `now` since."""

    namespace: str
    name: str
    before: str
    now: str
    changed_at: datetime
    revision: int
    declared_good: str | None = None  # spec.rollback.previousVersions[0]

    @property
    def target(self) -> str:
        """The version a rollback goes back to: the declared last good one, else the one before."""
        return self.declared_good or self.before

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return (
            f"llmdeployment {self.ref} changed model version {self.before} → {self.now} at "
            f"{self.changed_at:%H:%M:%S} UTC (revision {self.revision})"
        )


def model_change(history: RolloutHistory, summary: LLMDeploymentSummary, since: datetime) -> ModelChange | None:
    """The newest model version change in `history` at or after `since`; None when there is none (or the
    Deployment's ReplicaSets carry no `llm-d.io/model-version`)."""
    revisions = [r for r in history.revisions if r.labels.get(MODEL_VERSION_LABEL)]
    current = history.revision(history.current)
    now = (current.labels.get(MODEL_VERSION_LABEL) if current else None) or summary.model_version
    if not revisions or not now:
        return None
    before = [
        r
        for r in revisions
        if r.labels[MODEL_VERSION_LABEL] != now and (history.current is None or r.revision < history.current)
    ]
    if not before:
        return None
    last_other = before[-1]
    first_now = next((r for r in revisions if r.revision > last_other.revision), None)
    if first_now is None or first_now.created is None or first_now.created < since:
        return None
    declared = summary.previous_versions[0] if summary.previous_versions else None
    return ModelChange(
        namespace=summary.namespace,
        name=summary.name,
        before=last_other.labels[MODEL_VERSION_LABEL],
        now=now,
        changed_at=first_now.created,
        revision=first_now.revision,
        declared_good=declared if declared and declared != now else None,
    )


class ModelRollback:
    """Find a model version change, offer its rollback (gate), patch, wait, verify; undo on request.

    `window_minutes`: how long before the alert a change counts as "in the window"; rollout waits in
    seconds (already scaled for drills); `approval_timeout`: the gate's (None: the incident's default)."""

    def __init__(
        self,
        incident: Incident,
        cluster: Cluster,
        *,
        window_minutes: float = 60,
        rollout_timeout_seconds: float = 300,
        rollout_poll_seconds: float = 5,
        approval_timeout: timedelta | None = None,
    ) -> None:
        self.incident, self.cluster = incident, cluster
        self.window = timedelta(minutes=window_minutes)
        self.rollout_timeout_seconds, self.rollout_poll_seconds = rollout_timeout_seconds, rollout_poll_seconds
        self.approval_timeout = approval_timeout
        self.done: list[tuple[ModelChange, ClusterChange]] = []

    async def find(self, summary: LLMDeploymentSummary, alert_starts_at: datetime) -> ModelChange | None:
        """`kubectl rollout history deployment/NAME`: a model version change of this LLMDeployment in the
        window before the alert; None for seed 001's plain `spec.model` string (no version to go back to)."""
        if summary.model_version is None:
            return None
        history = await self.cluster.rollout_history(DeploymentRef(namespace=summary.namespace, name=summary.name))
        return model_change(history, summary, alert_starts_at - self.window)

    async def find_in(self, namespace: str | None, alert_starts_at: datetime) -> list[ModelChange]:
        """`find` for every LLMDeployment of `namespace` (None: all); each change found goes on the timeline."""
        found = []
        for summary in await self.cluster.list_llm_deployments(LLMDeploymentQuery(namespace=namespace)):
            change = await self.find(summary, alert_starts_at)
            if change:
                found.append(change)
                self.incident.record("check", "model version change in the window", outcome=str(change))
        return found

    def question(self, change: ModelChange, finding: str) -> str:
        declared = (
            f" (spec.rollback.previousVersions names {change.declared_good} the last known good version)"
            if change.declared_good and change.declared_good != change.before
            else ""
        )
        return (
            f"{finding}. {change}{declared}. Roll the model back to {change.target} (seed 002: `kubectl patch "
            f"llmdeployment {change.name} -n {change.namespace} --type=merge -p "
            f"'{{\"spec\":{{\"model\":{{\"version\":\"{change.target}\"}}}}}}'`)?"
        )

    async def offer(self, change: ModelChange, *, finding: str) -> bool:
        """Gate `model-rollback`, then the patch, `kubectl rollout status` and a look at the LLMDeployment.
        True when the version is back and the rollout completed; False (recorded why) otherwise."""
        inc = self.incident
        async with inc.step(f"Model rollback: {change.ref}") as entry:
            entry.note(str(change))
            approved = await inc.approval(
                GATE_MODEL_ROLLBACK,
                self.question(change, finding),
                target=change.ref,
                destructive=True,
                timeout=self.approval_timeout,
            )
            if not approved:
                entry.outcome = f"not rolled back (not approved): {change.ref} stays at {change.now}"
                return False
            patched = await self.cluster.patch_llm_deployment(
                LLMDeploymentPatch(
                    namespace=change.namespace, name=change.name, spec={"model": {"version": change.target}}
                ),
                finding=f"{finding}; {change}",
            )
            if patched is None:
                entry.outcome = "stopped: automation may not act"
                return False
            self.done.append((change, patched))
            status = await self.cluster.wait_for_rollout(
                RolloutWait(
                    namespace=change.namespace,
                    name=change.name,
                    timeout_seconds=self.rollout_timeout_seconds,
                    poll_seconds=self.rollout_poll_seconds,
                )
            )
            now = await self._summary(change)
            back = now is not None and now.model_version == change.target
            entry.outcome = f"model version {change.now} → {change.target}: rollout {status.message}; " + (
                f"LLMDeployment {now.phase}, serving {now.model}" if now else "LLMDeployment not found"
            )
            await inc.say(
                f":leftwards_arrow_with_hook: *Model rollback* {change.ref}: {entry.outcome}", purpose="model-rollback"
            )
            return back and status.complete

    async def rollback(self, why: str) -> int:
        """On request: each patched LLMDeployment back to its recorded `before` (the version it had).
        Returns how many were restored."""
        restored = 0
        for change, patched in reversed(self.done):
            if not patched.applied or not isinstance(patched.before, dict):
                continue
            again = await self.cluster.patch_llm_deployment(
                LLMDeploymentPatch(namespace=change.namespace, name=change.name, spec=patched.before),
                finding=f"rollback {why}",
            )
            if again is None:
                break
            restored += 1
        return restored

    async def _summary(self, change: ModelChange) -> LLMDeploymentSummary | None:
        found = await self.cluster.list_llm_deployments(LLMDeploymentQuery(namespace=change.namespace))
        return next((s for s in found if s.name == change.name), None)
