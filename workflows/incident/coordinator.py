"""The coordinator: one long-running workflow that every incident asks before it writes.

It holds three things (workflows/incident/coordination_models.py): which open incident holds which
object, the writes granted in the caps' windows, and the alert ledger. Holds and ledger entries
expire lazily, on the next update (no timers, so an idle coordinator adds nothing to its history).
It continues as new every `continue_as_new_after` updates and signals, carrying its state, so
its history stays small however long it runs. Why a workflow (and not Lease objects): the design
doc's "Coordination across incidents".
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.incident.coordination_models import (
    QUERY_ALERT_VERDICT,
    QUERY_COORDINATOR_STATE,
    SIGNAL_ALERTS_CLOSED,
    SIGNAL_RELEASE,
    SIGNAL_ALERT_RESOLVED_EARLY,
    SIGNAL_COORDINATION_NOTE,
    UPDATE_ALERT_VERDICT,
    UPDATE_ALERTS_CLOSED,
    UPDATE_CLAIM,
    UPDATE_RELEASE,
    AlertKey,
    AlertResolvedEarly,
    AlertsClosed,
    AlertVerdict,
    Caps,
    ClaimAnswer,
    CoordinationNote,
    CoordinatorInput,
    CoordinatorState,
    CountedWrite,
    Hold,
    LedgerEntry,
    ReleaseRequest,
    WriteClaim,
)

HOUR = timedelta(hours=1)


@workflow.defn(name="Coordinator")
class Coordinator:
    """Holds, caps and the alert ledger for every incident on one task queue (id `runbooks-coordinator`)."""

    @workflow.init
    def __init__(self, inp: CoordinatorInput) -> None:
        self.input = inp
        self.state = inp.state or CoordinatorState()
        self.events = 0  # updates and signals handled in this run

    @workflow.run
    async def run(self, inp: CoordinatorInput) -> None:
        await workflow.wait_condition(
            lambda: self.events >= inp.continue_as_new_after or workflow.info().is_continue_as_new_suggested()
        )
        # An update still waiting on a holder's signal must finish in this run, or its caller hangs.
        await workflow.wait_condition(workflow.all_handlers_finished)
        now = workflow.now()
        self._expire_holds(now)
        self._prune_writes(now)
        self._prune_ledger(now)
        workflow.continue_as_new(self.input.model_copy(update={"state": self.state}))

    # -- holds and caps ---------------------------------------------------------------------

    @workflow.update(name=UPDATE_CLAIM)
    async def claim(self, claim: WriteClaim) -> ClaimAnswer:
        """Grant a write, or say who holds the object or which cap it would pass.

        Granted when the object is free or held by the same incident, and no cap is passed (or
        `override_cap`); a granted write is counted and (re)holds the object for `hold_seconds`.
        Held by another open incident: not granted, `held_by` set, and the holder gets a
        `coordination_note` signal once per waiting incident. A holder that can no longer be
        signalled (closed, gone) loses its holds and the claim is judged again.
        """
        self.events += 1
        key = str(claim.object)
        while True:
            now = workflow.now()
            self._expire_holds(now)
            self._prune_writes(now)
            if claim.claim_id and (done := self._counted(claim.claim_id)):  # a retry of a granted claim
                if done.object != key:
                    raise ApplicationError(
                        f"claim id {claim.claim_id!r} was already used for {done.object}",
                        type="ClaimIdReused",
                        non_retryable=True,
                    )
                return ClaimAnswer(granted=True)
            hold = self.state.holds.get(key)
            if hold is None or hold.incident_id == claim.incident_id:
                break
            if claim.incident_id in hold.waiters:
                return _held(hold)
            hold.waiters.append(claim.incident_id)
            note = CoordinationNote(
                holder=hold.incident_id,
                object=claim.object,
                write=claim.write,
                waiting_incident=claim.incident_id,
                waiting_runbook=claim.runbook,
                at=now,
            )
            try:
                await workflow.get_external_workflow_handle(hold.incident_id).signal(SIGNAL_COORDINATION_NOTE, note)
            except ApplicationError:
                # The holder is closed or gone: an incident that ended without releasing holds nothing.
                self._drop_holds(hold.incident_id)
                continue
            return _held(hold)
        caps = claim.caps or self.input.caps
        capped = None if claim.override_cap else self._cap_passed(claim, caps, now)
        if capped:
            return ClaimAnswer(granted=False, capped=capped)
        self.state.writes.append(
            CountedWrite(
                object=key,
                write=claim.write,
                at=now,
                incident_id=claim.incident_id,
                claim_id=claim.claim_id,
                replicas_removed=claim.replicas_removed,
                override_cap=claim.override_cap,
            )
        )
        expires = now + timedelta(seconds=claim.hold_seconds)
        held = self.state.holds.get(key)
        if held is None:
            self.state.holds[key] = Hold(
                incident_id=claim.incident_id, runbook=claim.runbook, write=claim.write, since=now, expires_at=expires
            )
        else:
            held.write, held.expires_at = claim.write, max(held.expires_at, expires)
        return ClaimAnswer(granted=True)

    @workflow.update(name=UPDATE_RELEASE)
    def release(self, request: ReleaseRequest) -> int:
        """Drop the incident's holds (all, or the named objects); returns how many were dropped."""
        return self._release(request)

    def _release(self, request: ReleaseRequest) -> int:
        self.events += 1
        if request.objects is None:
            return self._drop_holds(request.incident_id)
        dropped = 0
        for obj in request.objects:
            hold = self.state.holds.get(str(obj))
            if hold is not None and hold.incident_id == request.incident_id:
                del self.state.holds[str(obj)]
                dropped += 1
        return dropped

    @workflow.signal(name=SIGNAL_RELEASE)
    def release_signalled(self, request: ReleaseRequest) -> None:
        """`release` without an answer: what a closing incident sends (no limit on how many at once)."""
        self._release(request)

    def _cap_passed(self, claim: WriteClaim, caps: Caps, now: datetime) -> str | None:
        key = str(claim.object)
        recent = [w for w in self.state.writes if w.object == key and now - w.at < HOUR]
        if claim.write == "restart":
            restarts = sum(1 for w in recent if w.write == "restart")
            if restarts >= caps.restarts_per_object_per_hour:
                return (
                    f"{_plural(restarts, 'restart')} of {key} in the last hour "
                    f"(cap {caps.restarts_per_object_per_hour})"
                )
        if claim.write == "cordon":
            cordoned = self._cordoned(caps, now)
            if len(cordoned) >= caps.cordons_without_approval:
                which = ", ".join(cordoned) or "none"
                return (
                    f"{_plural(len(cordoned), 'node')} already cordoned by automation ({which}); "
                    f"cap {caps.cordons_without_approval} without approval"
                )
        if claim.replicas_removed and claim.replicas_total:
            before = sum(w.replicas_removed for w in recent)
            share = (before + claim.replicas_removed) / claim.replicas_total
            if share > caps.max_replica_share_removed:
                already = f" ({before} already in the last hour)" if before else ""
                return (
                    f"removing {claim.replicas_removed} of {claim.replicas_total} replicas of {key}{already} "
                    f"is {share:.0%}, over the cap of {caps.max_replica_share_removed:.0%}"
                )
        return None

    def _cordoned(self, caps: Caps, now: datetime) -> list[str]:
        """Nodes cordoned by automation and not uncordoned since (within cordon_counts_for_hours)."""
        window = timedelta(hours=caps.cordon_counts_for_hours)
        nodes: dict[str, None] = {}
        for w in self.state.writes:
            if now - w.at >= window:
                continue
            if w.write == "cordon":
                nodes[w.object] = None
            elif w.write == "uncordon":
                nodes.pop(w.object, None)
        return [n.removeprefix("Node ") for n in nodes]

    def _counted(self, claim_id: str) -> CountedWrite | None:
        return next((w for w in self.state.writes if w.claim_id == claim_id), None)

    def _drop_holds(self, incident_id: str) -> int:
        mine = [k for k, h in self.state.holds.items() if h.incident_id == incident_id]
        for k in mine:
            del self.state.holds[k]
        return len(mine)

    def _expire_holds(self, now: datetime) -> None:
        for k in [k for k, h in self.state.holds.items() if h.expires_at <= now]:
            del self.state.holds[k]

    def _prune_writes(self, now: datetime) -> None:
        # Keep what any window may still count: the hour, or a cordon's longer memory.
        keep = max(HOUR, timedelta(hours=self.input.caps.cordon_counts_for_hours))
        self.state.writes = [w for w in self.state.writes if now - w.at < keep]

    # -- the alert ledger -------------------------------------------------------------------

    @workflow.update(name=UPDATE_ALERTS_CLOSED)
    def alerts_closed(self, closed: AlertsClosed) -> int:
        """Record that these alerts' incident closed; returns the ledger's size."""
        return self._alerts_closed(closed)

    def _alerts_closed(self, closed: AlertsClosed) -> int:
        self.events += 1
        now = workflow.now()
        for key in closed.keys:
            self._remember(str(key), LedgerEntry(closed_by=closed.incident_id, at=now))
        self._prune_ledger(now)
        return len(self.state.ledger)

    @workflow.signal(name=SIGNAL_ALERTS_CLOSED)
    def alerts_closed_signalled(self, closed: AlertsClosed) -> None:
        """`alerts_closed` without an answer: what a closing incident sends (no limit on how many at once)."""
        self._alerts_closed(closed)

    @workflow.signal(name=SIGNAL_ALERT_RESOLVED_EARLY)
    def alert_resolved_early(self, early: AlertResolvedEarly) -> None:
        """A resolved notification with no incident: its firing, if it ever arrives, starts nothing."""
        self.events += 1
        now = workflow.now()
        if str(early.key) not in self.state.ledger:  # a closed incident's record says more
            self._remember(str(early.key), LedgerEntry(closed_by=None, at=now))
        self._prune_ledger(now)

    @workflow.update(name=UPDATE_ALERT_VERDICT)
    async def alert_verdict(self, key: AlertKey) -> AlertVerdict:
        """ "new", "closed-by:<incident>" or "resolved-before-firing" (entries older than retention are new).

        Workers since issue 13 ask the query below instead (no history event, and no limit on how
        many wait at once: the server allows 10 updates in flight per workflow); kept for incidents
        and workers of older code."""
        self.events += 1
        # A signal that arrived with the same workflow task (signal-with-start by the webhook, then
        # this update) may be scheduled after this handler: let it land first.
        await asyncio.sleep(0)
        self._prune_ledger(workflow.now())
        return self.verdict_of(key)

    @workflow.query(name=QUERY_ALERT_VERDICT)
    def verdict_of(self, key: AlertKey) -> AlertVerdict:
        """The ledger's word on one alert, as the update gives it, without changing anything. The
        server answers a query after the events that arrived before it (a resolved-early signal)."""
        entry = self.state.ledger.get(str(key))
        retention = timedelta(days=self.input.ledger_retention_days)
        if entry is None or workflow.now() - entry.at >= retention:
            return AlertVerdict(verdict="new")
        if entry.closed_by is None:
            return AlertVerdict(verdict="resolved-before-firing", recorded_at=entry.at)
        return AlertVerdict(verdict=f"closed-by:{entry.closed_by}", closed_by=entry.closed_by, recorded_at=entry.at)

    def _remember(self, key: str, entry: LedgerEntry) -> None:
        self.state.ledger.pop(key, None)  # re-insert: the dict stays in recording order, oldest first
        self.state.ledger[key] = entry

    def _prune_ledger(self, now: datetime) -> None:
        ledger = self.state.ledger
        retention = timedelta(days=self.input.ledger_retention_days)
        for k in [k for k, e in ledger.items() if now - e.at >= retention]:
            del ledger[k]
        while len(ledger) > self.input.ledger_max_entries:
            del ledger[next(iter(ledger))]

    @workflow.query(name=QUERY_COORDINATOR_STATE)
    def current_state(self) -> CoordinatorState:
        return self.state


def _held(hold: Hold) -> ClaimAnswer:
    return ClaimAnswer(granted=False, held_by=hold.incident_id, held_by_runbook=hold.runbook, held_since=hold.since)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
