"""SOP-004's vocabulary: its input and timings, one failing deployment's case, its gates, escalation
policies and patch id, and the pure helpers the steps share. The steps themselves are in
workflows/playbooks/model_deploy_failure/playbook.py.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow

from workflows.incident import EscalationPolicy, IncidentInput, SopTimings
from workflows.playbooks.model_deploy_failure.diagnosis import SOP_RESOURCES, FailureClassification, FixPlan

with workflow.unsafe.imports_passed_through():
    from activities.kube.claims_models import ClaimEvidence
    from activities.kube.llmdeployments_models import CommonIssues, DeploymentDescription, LLMDeploymentSummary
    from activities.models import ClusterChange

# The alert label naming the LLMDeployment (the drill and the Prometheus rule set it).
DEPLOYMENT_LABEL = "llmdeployment"
ONE_AFFECTED = EscalationPolicy.of(15)  # SOP-004: 15 min, still failing after the resource adjustment
SEVERAL_AFFECTED = EscalationPolicy.of(15, 30)  # ... and 30 min when several deployments are affected

# Gate kinds (approvers are set per kind); the target is the claim or the LLMDeployment, so the
# decision names `recreate-claim:<claim>` / `reduce-resources:<name>`, as before kinds existed.
GATE_RECREATE_CLAIM = "recreate-claim"
GATE_REDUCE_RESOURCES = "reduce-resources"


def escalation_for(affected: int | None) -> EscalationPolicy:
    """The 30-minute mark only when several deployments fail (or the scope could not be read)."""
    return ONE_AFFECTED if affected is not None and affected <= 1 else SEVERAL_AFFECTED


class DeployFailureTimings(SopTimings):
    """SOP-004's waits; SOP values by default, shorter for drills and tests."""

    cluster_waits = (
        "recovery_timeout_seconds",
        "recovery_poll_seconds",
        "verification_timeout_seconds",
        "verification_poll_seconds",
        "claim_delete_wait_seconds",
    )

    model_config = ConfigDict(extra="forbid")

    recovery_timeout_seconds: float = Field(300, gt=0, description="kubectl wait --for=condition=ready --timeout=300s")
    recovery_poll_seconds: float = Field(5, gt=0)
    verification_timeout_seconds: float = Field(120, gt=0, description="phase Ready and health 2xx, bounded")
    verification_poll_seconds: float = Field(5, gt=0)
    health_timeout_seconds: float = Field(5, gt=0)
    claim_delete_wait_seconds: float = Field(60, gt=0)


class ModelDeploymentFailureInput(IncidentInput):
    """IncidentInput plus SOP-004's knobs, all defaulted: a plain IncidentInput starts it too."""

    deployment: str | None = Field(
        None, description=f"the LLMDeployment; default: the alert's `{DEPLOYMENT_LABEL}` label"
    )
    resources: dict[str, Any] = Field(default_factory=lambda: dict(SOP_RESOURCES), description="SOP-004's patch")
    events_limit: int = Field(20, ge=1)
    timings: DeployFailureTimings = Field(default_factory=DeployFailureTimings)


class DeploymentCase(BaseModel):
    """One failing LLMDeployment: what was found, what fits, what was changed, how it ended."""

    namespace: str
    name: str
    description: DeploymentDescription | None = None
    issues: CommonIssues | None = None
    classification: FailureClassification | None = None
    plan: FixPlan | None = None
    changes: list[ClusterChange] = Field(default_factory=list)
    restored: list[ClusterChange] = Field(default_factory=list)
    recovered: bool = False
    verdict: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def fixed(self) -> bool:
        return any(c.applied for c in self.changes)


def cause_of(case: DeploymentCase) -> str:
    """The diagnosis in one phrase, for the write it justifies: `oom: mixtral-8x7b OOMKilled at 16Gi`."""
    found = case.classification
    return f"{found.cause}: {found.summary}" if found else f"{case.ref} not Ready"


def failing_targets(
    named: str | None, namespace: str | None, scope: list[LLMDeploymentSummary] | None
) -> tuple[list[tuple[str, str]], str | None]:
    """Step 1's (namespace, name) targets: the LLMDeployment the alert names, else every not-Ready one in
    `scope` (the listing read at the start; None: it could not be read); and a note for the timeline."""
    if named:
        known = [d for d in scope or [] if d.name == named]
        namespace = namespace or (known[0].namespace if known else None)
        if namespace:
            return [(namespace, named)], None
        return [], f"LLMDeployment {named!r} not found in any namespace"
    if scope is None:
        return [], "the LLMDeployments could not be listed: no target"
    note = f"no `{DEPLOYMENT_LABEL}` label: every not-Ready LLMDeployment in {namespace or 'all namespaces'}"
    return [(d.namespace, d.name) for d in scope if not d.ready], note


def all_ready_text(cases: list[DeploymentCase], namespace: str | None, scope: list[LLMDeploymentSummary] | None) -> str:
    """Why nothing is wrong: the alert's LLMDeployments Ready, or none not Ready in the scope read."""
    ready = "; ".join(
        f"{c.ref} {c.description.phase} ({c.description.ready_replicas}/{c.description.replicas} replicas Ready)"
        for c in cases
        if c.description
    )
    where = namespace or "all namespaces"
    return (
        f"LLMDeployment {ready}" if ready else f"no LLMDeployment in {where} is not Ready ({len(scope or [])} listed)"
    )


def diagnosis_text(case: DeploymentCase) -> str:
    """Step 2's Slack message for one case: cause, evidence (8 lines at most) and the fix that fits."""
    found, plan = case.classification, case.plan
    assert found is not None and plan is not None
    if plan.cannot_fix:
        fix = f"no standard fix fits — {plan.cannot_fix}"
    elif found.cause == "none":
        fix = "nothing to fix"
    else:
        parts = []
        if plan.recreate_claims:
            parts.append("recreate " + ", ".join(f"pvc/{c.name}" for c in plan.recreate_claims) + " (after approval)")
        if plan.delete_failed_pods:
            parts.append(f"delete {len(plan.delete_failed_pods)} failed pod(s)")
        if plan.adjust_resources:
            parts.append(f"SOP resource adjustment: {plan.resources_why} (after approval)")
        fix = "; ".join(parts)
    evidence = "\n".join(f"• {line}" for line in found.evidence[:8])
    return (
        f"*Diagnosis* `{case.ref}`: *{found.cause}* — {found.summary}\n"
        + (f"```{evidence}```\n" if evidence else "")
        + f"*Fix:* {fix}"
    )


def claim_question(case: DeploymentCase, claim: ClaimEvidence) -> str:
    """The `recreate-claim` gate's question for one never-bound claim of `case`."""
    return (
        f"Claim {case.namespace}/{claim.name} is {claim.phase} and was never bound "
        f"(storage class {claim.storage_class!r}). Delete and recreate it on the cluster's default "
        f"storage class so {case.name} can schedule?"
    )


def resources_question(case: DeploymentCase, resources: dict[str, Any]) -> str:
    """The `reduce-resources` gate's question: the SOP's patch (`resources`) against what `case` runs with."""
    assert case.plan is not None and case.description is not None
    now, wanted = case.description.resources, resources.get("resources", {})
    return (
        f"Apply SOP-004's resource adjustment to LLMDeployment {case.ref} ({case.plan.resources_why})? "
        f"requests {wanted.get('requests')}, limits {wanted.get('limits')}; now requests "
        f"{now.get('requests')}, limits {now.get('limits')}. The original is recorded and restored on rollback."
    )


def original_spec(case: DeploymentCase, change: ClusterChange, resources: dict[str, Any]) -> dict[str, Any]:
    """What the rollback patches back: the patch's `before` when it wrote; the diagnosis' reading when a
    retry found it already written (`resources`: the SOP's patch, whose keys say what to read)."""
    if change.applied and isinstance(change.before, dict):
        return change.before
    return _pick(
        case.description.resources if case.description else {}, resources.get("resources", {}), key="resources"
    )


def rolled_back_text(why: str, cases: list[DeploymentCase]) -> str:
    """The rollback's Slack message: per case, each restored object and the value it is back to."""
    return f":leftwards_arrow_with_hook: Rolled back ({why}): " + "; ".join(
        f"`{c.ref}` {', '.join(f'{r.kind} {r.name} {r.field} → {r.after}' for r in c.restored)}" for c in cases
    )


def _pick(current: dict[str, Any], shape: dict[str, Any], *, key: str) -> dict[str, Any]:
    """{key: the values of `current` at the keys `shape` names}; absent ones as None (merge-patch delete)."""

    def pick(now: Any, want: dict[str, Any]) -> dict[str, Any]:
        now = now if isinstance(now, dict) else {}
        return {
            k: pick(now.get(k), v) if isinstance(v, dict) and isinstance(now.get(k), dict) else now.get(k)
            for k, v in want.items()
        }

    return {key: pick(current, shape)}
