"""Types every activity module shares: the base of every request model, and the record of a write."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio.exceptions import ApplicationError

# The failure type of an activity that made writes before it failed: its details are those writes.
WRITES_BEFORE_FAILURE = "WritesBeforeFailure"


class Request(BaseModel):
    """The base of an activity's request model: an unknown field is an error (a typo in a playbook
    fails its first attempt instead of being ignored)."""

    model_config = ConfigDict(extra="forbid")


class ClusterChange(BaseModel):
    """One write to the cluster, with the value it replaced, so rollback can restore it exactly."""

    action: str = Field(description="what was done, in the SRE's words: 'restart deployment'")
    kind: str
    namespace: str | None = None
    name: str
    field: str = Field(description="the path that changed, e.g. spec.replicas")
    before: Any = None
    after: Any = None
    applied: bool = Field(True, description="False when the cluster already had the value (a retry)")
    dry_run: bool = False
    # The finding of the same run that justified the write (set by the incident, not the activity).
    finding: str | None = None


@contextmanager
def writes_kept_on_failure(writes: list[ClusterChange], doing: str) -> Iterator[None]:
    """For an activity that makes several writes: if it fails after some of them, it fails with
    those writes as the failure's details (type WritesBeforeFailure) so the incident records what
    did change, and not retried (a blind retry could not tell its own earlier writes): the playbook
    and a human take it from the recorded state. A failure before any write is raised as it was."""
    try:
        yield
    except Exception as err:
        made = [c for c in writes if c.applied]
        if not made:
            raise
        reason = err.message if isinstance(err, ApplicationError) else str(err) or type(err).__name__
        raise ApplicationError(
            f"{doing} failed after {len(made)} write(s): {reason}",
            *[c.model_dump(mode="json") for c in made],
            type=WRITES_BEFORE_FAILURE,
            non_retryable=True,
        ) from err


def writes_before_failure(err: BaseException) -> list[ClusterChange]:
    """The writes a failed activity had made (from an ActivityError's WritesBeforeFailure cause)."""
    cause = getattr(err, "cause", None)
    if not isinstance(cause, ApplicationError) or cause.type != WRITES_BEFORE_FAILURE:
        return []
    return [ClusterChange.model_validate(d) for d in cause.details if isinstance(d, dict)]
