"""Quota-aware admission: when may the next job POST go out? (pure; no I/O, no clock)

Grand Challenge lets a user have a limited number of *active* jobs (16 by default; every
status but Succeeded/Failed/Cancelled counts, "Validating inputs" and "Queued" included),
gives each user a budget of algorithm credits, and caps live uploads at 2000. The ideal
makespan for N jobs of duration d under a limit L is ``ceil(N/L) * d``: keep exactly L
jobs in flight and refill a slot the moment one ends. This module decides that, as a
frozen :class:`AdmissionState` and pure transition functions; the executor holds the
state under a lock, feeds it events and sleeps when it says "wait".

Why the state counts *our* jobs and learns a cap: the API cannot tell us how many active
jobs the user has across all algorithms (the job list has no creator filter and shows
other users' public jobs). We count the jobs we know are active (ours, in this
algorithm), plus POSTs in flight, plus in-doubt POSTs (they may have created a job that
holds a slot), and never go above ``max_active`` when the user sets one. By default
(``max_active=None``, "auto") there is no proactive limit: the server's limit differs per
deployment (16 by default, none at all on some), and its refusal is definite and free
(400 "too many active jobs": nothing was created). When the server refuses, we *learn*
a cap equal to what we held at that moment (jobs, POSTs in flight and in doubt; each
further refusal can only lower it) and wait for one of ours to end. The cap is lifted
again after ``probe_after`` seconds (the limit or the invisible jobs of other tools may
have changed; a refused POST costs nothing but one round trip).

Credits: the first "run out of algorithm credits" stops all submitting for this run
(nothing will succeed until the rolling month frees credits). Uploads: "too many uploads"
pauses new uploads for a while (backing off), since completed jobs consume uploads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = [
    "DEFAULT_MAX_ACTIVE",
    "AdmissionState",
    "Forecast",
    "credits_exhausted",
    "forecast",
    "free_slots",
    "job_created",
    "jobs_ended",
    "may_submit",
    "may_upload",
    "post_in_doubt",
    "post_rejected",
    "refused_too_many_active",
    "reserve",
    "resolve_in_doubt",
    "slot_limit",
    "track_active",
    "uploads_refused",
    "uploads_succeeded",
]

#: Grand Challenge's default per-user active-jobs limit (the plan's forecast assumes it).
DEFAULT_MAX_ACTIVE = 16
#: ``free_slots`` when nothing limits us (no ``max_active``, no fresh learned cap).
UNLIMITED = 1 << 30
#: After a "too many active jobs" refusal, try above the learned cap again after this long.
DEFAULT_PROBE_AFTER = 15.0
#: First pause after "too many uploads"; doubles on each further refusal, up to the max.
UPLOAD_PAUSE_FIRST = 5.0
UPLOAD_PAUSE_MAX = 120.0


@dataclass(frozen=True)
class AdmissionState:
    """Everything admission knows. Times are seconds on the caller's monotonic clock.

    ``active``: pks of our jobs believed active. ``doubtful``: case ids whose job POST got
    no definite answer and is not yet reconciled (each may hold a slot). ``reserved``: job
    POSTs in flight right now.
    """

    #: never more than this many of ours (the user's ``--max-active``); None: "auto", only
    #: the server's refusals limit us (through the learned ``cap``)
    max_active: int | None = None
    active: frozenset[str] = frozenset()
    doubtful: frozenset[str] = frozenset()
    reserved: int = 0
    #: learned from a refusal: at most this many of *our* slots are usable (None: no cap)
    cap: int | None = None
    cap_since: float = 0.0
    probe_after: float = DEFAULT_PROBE_AFTER
    #: credits ran out: submit nothing more in this run
    stopped: bool = False
    uploads_paused_until: float = 0.0
    upload_pause: float = 0.0

    def __post_init__(self) -> None:
        if self.max_active is not None and self.max_active < 1:
            raise ValueError("max_active must be at least 1")

    @property
    def in_use(self) -> int:
        """Slots we hold or may hold: active jobs + POSTs in flight + unreconciled doubts."""
        return len(self.active) + len(self.doubtful) + self.reserved


def slot_limit(state: AdmissionState, now: float) -> int | None:
    """How many slots we may use at ``now``: ``max_active``, or the learned cap while fresh
    (whichever is lower); None when nothing limits us."""
    if state.cap is not None and now - state.cap_since < state.probe_after:
        return state.cap if state.max_active is None else min(state.max_active, state.cap)
    return state.max_active


def free_slots(state: AdmissionState, now: float) -> int:
    """Slots free at ``now`` (:data:`UNLIMITED` when nothing limits us)."""
    limit = slot_limit(state, now)
    if limit is None:
        return UNLIMITED
    return max(0, limit - state.in_use)


def may_submit(state: AdmissionState, now: float) -> bool:
    """A job POST may go out now (take it with :func:`reserve`)."""
    return not state.stopped and free_slots(state, now) > 0


def reserve(state: AdmissionState, now: float) -> AdmissionState:
    """Take one slot for a POST about to be sent. Only valid when :func:`may_submit`."""
    if not may_submit(state, now):
        raise ValueError("no free slot to reserve")
    return replace(state, reserved=state.reserved + 1)


def _release(state: AdmissionState) -> AdmissionState:
    if state.reserved < 1:
        raise ValueError("no reserved slot to release")
    return replace(state, reserved=state.reserved - 1)


def job_created(state: AdmissionState, job_pk: str) -> AdmissionState:
    """The POST created a job: its reserved slot becomes an active job.

    A probe above the learned cap that succeeds (we now hold more than the cap) means the
    invisible jobs have ended or the limit grew, so the cap is dropped (a later refusal
    teaches it again). A POST sent under the cap (or already counted when the cap was
    learned) proves nothing: the cap stays, or "auto" would burst into refusals after
    every job created.
    """
    released = _release(state)
    active = released.active | {job_pk}
    grown = replace(released, active=active)
    if state.cap is not None and grown.in_use > state.cap:
        return replace(grown, cap=None)
    return grown


def post_rejected(state: AdmissionState) -> AdmissionState:
    """The POST was refused for a reason that is not a quota: the slot is free again."""
    return _release(state)


def refused_too_many_active(state: AdmissionState, now: float) -> AdmissionState:
    """The server said "too many active jobs": cap our slots at what we hold without it.

    What we hold counts POSTs still in flight: they may have been created before this one
    was refused. While the cap is fresh a further refusal can only lower it (a burst of
    POSTs sent before the first refusal comes back one refusal at a time).
    """
    released = _release(state)
    cap = released.in_use
    if released.cap is not None and now - released.cap_since < released.probe_after:
        cap = min(cap, released.cap)
    return replace(released, cap=cap, cap_since=now)


def credits_exhausted(state: AdmissionState) -> AdmissionState:
    """The server said "run out of algorithm credits": stop submitting for this run."""
    return replace(_release(state), stopped=True)


def post_in_doubt(state: AdmissionState, case_id: str) -> AdmissionState:
    """No definite answer: until reconciled, the case may hold a slot."""
    released = _release(state)
    return replace(released, doubtful=released.doubtful | {case_id})


def resolve_in_doubt(
    state: AdmissionState, case_id: str, job_pk: str | None, *, job_active: bool = True
) -> AdmissionState:
    """Reconciliation ended for ``case_id``: ``job_pk`` adopted (or None: no job exists)."""
    active = state.active
    if job_pk is not None and job_active:
        active = active | {job_pk}
    return replace(state, doubtful=state.doubtful - {case_id}, active=active)


def track_active(state: AdmissionState, job_pks: frozenset[str] | set[str]) -> AdmissionState:
    """Jobs found active at start (from an earlier run) hold slots too."""
    return replace(state, active=state.active | frozenset(job_pks))


def jobs_ended(state: AdmissionState, job_pks: frozenset[str] | set[str]) -> AdmissionState:
    """These jobs reached a terminal status: their slots are free the moment we know it.

    A learned cap stays as it is: it counts the jobs we held when the server refused, and
    each job of ours that ends frees exactly one slot under it.
    """
    ended = state.active & frozenset(job_pks)
    if not ended:
        return state
    return replace(state, active=state.active - ended)


def may_upload(state: AdmissionState, now: float) -> bool:
    """New uploads may be created now (not stopped by credits, not paused by the quota)."""
    return not state.stopped and now >= state.uploads_paused_until


def uploads_refused(state: AdmissionState, now: float) -> AdmissionState:
    """"Too many uploads": pause new uploads, backing off exponentially."""
    pause = UPLOAD_PAUSE_FIRST if state.upload_pause <= 0 else state.upload_pause * 2
    pause = min(pause, UPLOAD_PAUSE_MAX)
    return replace(state, upload_pause=pause, uploads_paused_until=now + pause)


def uploads_succeeded(state: AdmissionState) -> AdmissionState:
    """An upload was accepted: the back-off starts from the beginning next time."""
    if state.upload_pause == 0.0:
        return state
    return replace(state, upload_pause=0.0)


@dataclass(frozen=True)
class Forecast:
    """What a batch will take, as far as the server lets us know in advance."""

    jobs: int
    #: the active-jobs limit assumed (Grand Challenge's default unless the user set one)
    limit: int
    already_active: int
    #: ceil(jobs / limit) "waves"; None when nothing to do
    waves: int
    #: seconds, from the algorithm's average duration; None when the server has none
    makespan: float | None
    #: credits are not visible through the API: the forecast can only warn
    note: str


def forecast(
    jobs: int,
    *,
    max_active: int = DEFAULT_MAX_ACTIVE,
    already_active: int = 0,
    average_duration: float | None = None,
) -> Forecast:
    """The ideal schedule: keep ``max_active`` jobs in flight, refill each slot at once.

    Jobs already active hold slots until they end; we count them as one partial wave
    (a conservative, simple estimate).
    """
    limit = max(1, max_active)
    waves = math.ceil((jobs + min(already_active, limit)) / limit) if jobs else 0
    makespan = waves * average_duration if average_duration is not None and jobs else None
    note = (
        "each job costs algorithm credits (the API does not show your balance; "
        "apply stops cleanly with exit 4 when they run out)"
    )
    return Forecast(jobs=jobs, limit=limit, already_active=already_active, waves=waves,
                    makespan=makespan, note=note)
