"""How automation stops short of a recovery, and says so: nothing wrong found, could not tell,
handed over, or the alert's cluster not served here.

Refusals hand an incident over instead of failing it: some answers from a cluster mean "a human
arranged this on purpose" rather than "automation broke": a paused Deployment (kubectl refuses its
restart and undo until someone resumes it). A drain that PodDisruptionBudgets block hands over from
the playbook itself (gpu_nodes/drain.py), naming the pods and budgets. Retrying
cannot help and working around them would undo a human's decision, so the playbook stops, says why
in the cluster's words, and on-call decides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio.exceptions import ApplicationError

from workflows.incident.state import IncidentState, StatusBoard, unserved_sentence
from workflows.incident.slack import IncidentSlack
from workflows.incident.timeline import Journal

# ApplicationError types an activity raises (non-retryable) for such refusals.
HAND_OVER_ON = frozenset({"DeploymentPaused"})


def refusal(err: BaseException) -> str | None:
    """The message of the refusal behind `err` (an ActivityError's cause chain), or None when `err`
    is an ordinary failure."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type in HAND_OVER_ON:
            return cause.message
        cause = getattr(cause, "cause", None)
    return None


class Endings:
    """The incident's ways to stop short of a recovery, each recorded, shown and posted; the incident
    then waits for the alerts to resolve or a human, as any incident whose automation is done."""

    def __init__(
        self,
        state: IncidentState,
        alertname: str,
        journal: Journal,
        board: StatusBoard,
        slack: IncidentSlack,
        escalate: Callable[[str], Awaitable[None]],
    ) -> None:
        self.state, self.alertname, self.record, self.board = state, alertname, journal.record, board
        self.slack, self.escalate = slack, escalate

    async def _post(self, text: str, purpose: str) -> None:
        await self.slack.post(text, purpose=purpose)

    async def nothing_wrong_found(self, checked: str) -> None:
        """The playbook's findings show no fault to act on: no write, a note to on-call.

        `checked` says what was looked at and how it was ("24/24 GPUs visible, device plugin pods
        Ready"): evidence, every part of it established. What could not be established is
        `could_not_tell`'s, never this. The body should return after this.
        """
        self.state.nothing_found = checked
        self.record("status", "nothing wrong found: no change made", outcome=checked)
        self.board.publish()
        await self._post(
            f":mag: *Nothing wrong found* — {checked}. Automation made no change; on-call, please check "
            f"why `{self.alertname}` fired.",
            "nothing-found",
        )

    async def could_not_tell(self, what: list[str], *, checked: str = "") -> None:
        """The playbook could not establish what it needed (`what`: each gap in the source's own words:
        an empty result, a warning, a partial response, a timeout, a refusal): no write on that basis,
        and on-call is paged, told what could not be checked. `checked`: what it did establish."""
        self.state.could_not_tell = list(what)
        self.record("status", "could not tell: no change made", outcome="; ".join(what))
        self.board.publish()
        await self._post(
            ":grey_question: *Could not tell* — automation could not check everything this runbook needs, so "
            "it made no change and does not call this healthy:\n"
            + "\n".join(f"• {w}" for w in what)
            + (f"\nWhat it could establish: {checked}." if checked else "")
            + f"\nOn-call, please check `{self.alertname}` by hand.",
            "could-not-tell",
        )
        await self.escalate("could not tell: " + "; ".join(what))

    async def hand_over(self, why: str, *, to: str, advice: str = "") -> None:
        """Automation stops acting on this incident (no write starts from now on) and pages the next
        level; `why` is what stopped it, in the source's words, `advice` what a human may do next."""
        self.state.handed_over_to = to  # the guard stops every write from here on
        self.record("status", f"handed over to {to}", outcome=why)
        await self._post(
            f":handshake: *Handed over to {to}* — {why}.{' ' + advice if advice else ''} "
            "Automation will not change anything in this incident from now on.",
            "handed-over",
        )
        await self.escalate(f"handed over: {why}")
        # last: whoever sees "handed-over" finds the page and the post already made
        self.board.set_status("handed-over")

    async def cluster_not_served(self) -> None:
        """The alert named a cluster no worker serves: the playbook does not run here (this worker's
        cluster is another), nothing is written anywhere; on-call hears which cluster it named."""
        unserved = self.state.unserved_cluster
        assert unserved is not None
        why = unserved_sentence(unserved)
        self.record("status", "not run: the alert's cluster is not served", outcome=why)
        self.board.publish()
        await self._post(
            f":no_entry: *Not acting* — {why}. Automation made no change on any cluster; on-call, please "
            f"handle `{self.alertname}` on `{unserved.cluster}` by hand, or deploy a worker for it "
            f"(`worker.cluster: {unserved.cluster}`, and add it to `clusters.served`).",
            "cluster-not-served",
        )
