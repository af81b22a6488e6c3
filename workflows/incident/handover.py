"""Refusals that hand an incident over instead of failing it.

Some answers from a cluster mean "a human arranged this on purpose" rather than "automation broke":
a paused Deployment (kubectl refuses its restart and undo until someone resumes it) or a drain
that PodDisruptionBudgets block. Retrying cannot help and working around them would undo a human's
decision, so the playbook stops, says why in the cluster's words, and on-call decides.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

# ApplicationError types an activity raises (non-retryable) for such refusals.
HAND_OVER_ON = frozenset({"DeploymentPaused", "DrainBlocked"})


def refusal(err: BaseException) -> str | None:
    """The message of the refusal behind `err` (an ActivityError's cause chain), or None when `err`
    is an ordinary failure."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type in HAND_OVER_ON:
            return cause.message
        cause = getattr(cause, "cause", None)
    return None
