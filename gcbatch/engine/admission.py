"""Quota-aware admission: when may the next job POST, and the next upload, go out?
(pure; no I/O, no clock: times are passed in)

Grand Challenge lets a user have a limited number of *active* jobs (16 by default; every
status but Succeeded/Failed/Cancelled counts, "Validating inputs" and "Queued" included),
gives each user a budget of algorithm credits, and limits uploads (2,000 live ones; the
bytes of completed, unused ones). The ideal makespan for N jobs of duration d under a
limit L is ``ceil(N/L) * d``: keep exactly L jobs in flight and refill a slot the moment
one ends. This module decides that, as a frozen :class:`AdmissionState` and pure
transition functions; :mod:`gcbatch.engine.slots` holds the state under a lock, feeds it
events and lets threads wait on it.

**The active-jobs limit.** The API does not say how many active jobs the user has in all
(other algorithms, other tools, another study running at the same time are invisible),
and the platform checks its limit *without a lock*: POSTs that arrive together all see
the count from before any of them, so together they overshoot (limit 2 → 4 active on the
real application). What we held when a refusal came is therefore an upper bound on
nothing if our POSTs were racing. So admission keeps a **level** — the slots we may fill
with POSTs in parallel — and sends anything beyond it as a **probe**, in three phases:

- **ramp** (a run's start, "auto"): every POST is a probe and goes alone (nothing else of
  ours in flight), so the server's count at its check is exact; each one admitted adds
  a slot. A lower limit is never overshot; the first refusal ends the ramp with the
  level at what we hold. Reaching the documented default (16) ends it too: 16 round trips,
  once;
- **growth** (the default reached, no refusal yet): POSTs fill the level in parallel; above
  it, probes go in a growing window (one more for each one admitted, as TCP's slow
  start), so a server without a limit is found in a few round trips. This is the only
  place gcbatch may go above the default: on the server's own evidence, and a higher
  limit checked without a lock is overshot by at most the window;
- **steady** (after a refusal, or with ``--max-active``): POSTs fill the level in parallel;
  a probe goes alone, and only after a wait — briefly when the level is below the
  default (others' jobs hold slots and end: a quarter of our jobs' duration, backing off
  to a whole one), long at the default (15 s, doubling to 5 min) — and after a fresh look
  at our jobs. One request, never a burst. A probe admitted raises the level to what we
  then hold, and the next may go at once; a refusal of a POST among others can only
  lower the level.

In every phase, what a probe (or a refusal) taught counts in full only once a look begun
after it confirms it: a job of ours that had ended unseen made the server's count lower
than ours, so until then every job seen ended takes one slot off the level, in the same
step that frees its slot (the next probe wins back any taken off for nothing). Slots are
refilled only when ends are seen, so a level taught from a stale count is corrected
before POSTs could fill it in parallel.

Two studies of one user, applied at the same time, thus share the limit: each learns its
level from clean refusals, refills its own slots as its jobs end, and probes for the
slots the other frees when it finishes — at once when the other runs on this machine
and says so (:mod:`gcbatch.engine.neighbours`).

**Credits**: the first "run out of algorithm credits" stops all submitting and uploading
for this run (the rolling month frees credits in days, not minutes); so does "Algorithm
image is not ready to be used" (pre-flight asks before the run; this is the image
changing during it).

**Uploads**: "too many uploads" (at ``POST uploads/``) and "Upload limit reached" (at
``generate-presigned-urls``) start one shared :class:`UploadPause`. It ends as soon as
the server's live-upload count goes down (our jobs consume uploads when their inputs are
validated; the caller watches the count), or else when a single trial upload succeeds
(the first after a second, backing off to a minute). Only creating uploads waits for the
count quota; sending the parts of an upload that exists waits for the size quota only.
A pause that sees no upload freed for ``patience`` seconds while nothing of ours could
free one (no POST in flight, no case holding finished uploads, no recent job of ours)
cannot end by itself: uploads stop and the run says so (exit 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "DEFAULT_MAX_ACTIVE",
    "UNLIMITED",
    "AdmissionState",
    "Forecast",
    "PostKind",
    "UploadPause",
    "UploadQuota",
    "credits_exhausted",
    "expected_slots",
    "forecast",
    "free_slots",
    "image_not_ready",
    "job_created",
    "jobs_ended",
    "may_probe",
    "may_submit",
    "may_upload",
    "neighbour_freed",
    "phase",
    "polled",
    "post_in_doubt",
    "post_kind",
    "post_rejected",
    "refuse_all",
    "refused_too_many_active",
    "reserve",
    "resolve_in_doubt",
    "slot_limit",
    "track_active",
    "upload_blocked",
    "upload_count_seen",
    "upload_trial",
    "upload_trial_ended",
    "uploads_accepted",
    "uploads_refused",
    "uploads_stalled",
    "uploads_stopped",
]

#: Grand Challenge's documented per-user active-jobs limit (and the plan's forecast).
DEFAULT_MAX_ACTIVE = 16
#: ``free_slots`` when nothing limits us.
UNLIMITED = 1 << 30
#: After a refusal below the default: the first wait before a probe when no job of ours
#: has ended yet (then a quarter of their duration), and the factor it backs off to.
PROBE_BELOW_DEFAULT = 2.0
PROBE_BELOW_BACKOFF = 4.0
#: After a refusal at or above the default: the first wait, doubling up to the last.
PROBE_AT_DEFAULT_FIRST = 15.0
PROBE_AT_DEFAULT_MAX = 300.0
#: Upload pause: the first trial after this long, doubling up to the max.
UPLOAD_TRIAL_FIRST = 1.0
UPLOAD_TRIAL_MAX = 60.0

#: "count": too many live uploads (400 at POST uploads/); "size": the bytes of completed,
#: unused uploads (403 "Upload limit reached" at generate-presigned-urls)
UploadQuota = Literal["count", "size"]


@dataclass(frozen=True)
class UploadPause:
    """Uploading waits: the server refused an upload for a quota."""

    quota: UploadQuota
    since: float
    #: a single trial upload may go at this time, if nothing ended the pause before
    retry_at: float
    interval: float = UPLOAD_TRIAL_FIRST
    #: the trial is out (nobody else tries meanwhile)
    trial: bool = False
    #: the user's live uploads on the server when last counted (None: not yet)
    seen: int | None = None
    #: when the pause began (what "nothing freed for so long" counts from)
    last_change: float = 0.0


@dataclass(frozen=True)
class AdmissionState:
    """Everything admission knows. Times are seconds on the caller's monotonic clock.

    ``active``: pks of our jobs believed active. ``doubtful``: case ids whose job POST got
    no definite answer and is not yet reconciled (each may hold a slot). ``reserved``: job
    POSTs in flight right now, ``probing`` of them probes. Every transition for an answer
    takes ``kind``: what the POST answered was (:func:`post_kind` at reserve time).
    """

    #: never more than this many of ours (the user's ``--max-active``); None: "auto"
    max_active: int | None = None
    active: frozenset[str] = frozenset()
    doubtful: frozenset[str] = frozenset()
    reserved: int = 0
    #: probes among the POSTs in flight
    probing: int = 0
    #: growth phase: how many probes may be in flight together (one more per admission)
    window: int = 1
    #: slots proven usable (or given by --max-active): POSTs go in parallel below it
    level: int = 0
    #: the server has refused us since the run began (the level was learned, not assumed)
    refused: bool = False
    #: the next probe above the level may go at this time
    probe_due: float = 0.0
    #: the next probe must wait for a look at our jobs begun after ``probe_due``
    probe_needs_look: bool = False
    #: the current wait between probes (0: none yet)
    probe_wait: float = 0.0
    #: when our active jobs' statuses were last read (a poll that began then)
    looked_at: float = -1.0
    #: when each probe was answered, until a look begun after it confirms what it taught
    #: (a job of ours that had ended unseen made the server's count lower than ours)
    unconfirmed: tuple[float, ...] = ()
    #: how long a job of ours takes, as seen (None: none ended yet)
    job_duration: float | None = None
    #: the server refuses every job for now: submit and upload nothing more in this run
    stopped: bool = False
    #: why: "credits" (run out of algorithm credits), "not_ready" (the algorithm's image)
    stop_reason: str = ""
    upload_pause: UploadPause | None = None
    #: an upload quota that could not free itself: upload nothing more in this run
    uploads_halted: bool = False

    def __post_init__(self) -> None:
        if self.max_active is not None and self.max_active < 1:
            raise ValueError("max_active must be at least 1")

    @classmethod
    def start(cls, max_active: int | None = None) -> AdmissionState:
        """A run's first state: ``--max-active`` is trusted as the level; "auto" proves
        its level one probe at a time."""
        return cls(max_active=max_active, level=max_active or 0)

    @property
    def held(self) -> int:
        """Slots our jobs hold or may hold: active jobs + unreconciled doubts."""
        return len(self.active) + len(self.doubtful)

    @property
    def in_use(self) -> int:
        """Slots we hold or may hold, POSTs in flight included."""
        return self.held + self.reserved

    @property
    def ceiling(self) -> int:
        return UNLIMITED if self.max_active is None else self.max_active


# -- the active-jobs limit -------------------------------------------------------------------


Phase = Literal["ramp", "growth", "steady"]


def phase(state: AdmissionState) -> Phase:
    """Where the run is in learning the limit (see the module docstring)."""
    if state.refused or state.max_active is not None:
        return "steady"
    return "ramp" if state.level < DEFAULT_MAX_ACTIVE else "growth"


def slot_limit(state: AdmissionState) -> int | None:
    """The slots we may fill in parallel now (for display); None: not known yet."""
    if phase(state) != "steady":
        return None
    return min(state.level, state.ceiling)


def free_slots(state: AdmissionState) -> int:
    """Slots a POST may take in parallel now (probes aside)."""
    if phase(state) == "ramp":
        return 0
    return max(0, min(state.level, state.ceiling) - state.in_use)


def expected_slots(state: AdmissionState) -> int:
    """How many slots we expect to use: what cases may upload for ahead of a POST.

    The level; before any refusal at least the documented default (uploads are made a
    little ahead of their slot, and the ramp to the default is quick)."""
    expected = state.level if state.refused else max(state.level, DEFAULT_MAX_ACTIVE)
    return min(expected, state.ceiling)


def may_probe(state: AdmissionState, now: float) -> bool:
    """A POST beyond the level may go now (see the phases in the module docstring)."""
    if state.stopped or state.in_use >= state.ceiling:
        return False
    current = phase(state)
    if current == "ramp":
        return state.reserved == 0
    if state.in_use < state.level:
        return False
    if current == "growth":
        return state.probing < state.window
    if state.reserved or now < state.probe_due:
        return False
    return not (state.probe_needs_look and state.active and state.looked_at < state.probe_due)


def may_submit(state: AdmissionState, now: float) -> bool:
    """A job POST may go out now (take it with :func:`reserve`)."""
    return not state.stopped and (free_slots(state) > 0 or may_probe(state, now))


#: what a reserved POST is: within the level, a probe of the growth window, a probe alone
PostKind = Literal["within", "window", "alone"]


def post_kind(state: AdmissionState) -> PostKind:
    """What the POST :func:`reserve` would take now is (pass it with its answer)."""
    if free_slots(state) > 0:
        return "within"
    return "window" if phase(state) == "growth" else "alone"


def reserve(state: AdmissionState, now: float) -> AdmissionState:
    """Take a slot for a POST about to be sent. Only valid when :func:`may_submit`."""
    if state.stopped:
        raise ValueError("no free slot to reserve")
    if free_slots(state) > 0:
        return replace(state, reserved=state.reserved + 1)
    if may_probe(state, now):
        return replace(state, reserved=state.reserved + 1, probing=state.probing + 1)
    raise ValueError("no free slot to reserve")


def _release(state: AdmissionState, kind: PostKind = "within") -> AdmissionState:
    probe = kind != "within"
    if state.reserved < 1 or (probe and state.probing < 1):
        raise ValueError("no reserved slot to release")
    return replace(state, reserved=state.reserved - 1,
                   probing=state.probing - 1 if probe else state.probing)


def job_created(state: AdmissionState, job_pk: str, now: float = 0.0, *,
                kind: PostKind = "within") -> AdmissionState:
    """The POST created a job: its reserved slot becomes an active job.

    A probe the server admitted adds a slot (ramp), widens the window too (growth), or
    raises the level to what we now hold and lets the next probe go at once (steady). A
    POST within the level proves nothing new, nor does a probe of the growth window
    answered after a refusal ended the growth (it did not go alone).
    """
    current = phase(state)
    released = _release(state, kind)
    grown = replace(released, active=released.active | {job_pk})
    if kind == "alone" and current == "ramp":
        return replace(grown, level=grown.level + 1, unconfirmed=(*grown.unconfirmed, now))
    if kind == "window" and current == "growth":
        return replace(grown, level=grown.level + 1, window=grown.window + 1,
                       unconfirmed=(*grown.unconfirmed, now))
    if kind == "alone" and current == "steady":
        level = min(max(grown.level, grown.held), grown.ceiling)
        return replace(grown, level=level, probe_due=now, probe_needs_look=False,
                       probe_wait=0.0, unconfirmed=(*grown.unconfirmed, now))
    return grown


def neighbour_freed(state: AdmissionState, now: float) -> AdmissionState:
    """Another apply on this machine holds fewer slots than before: a slot may be free
    now, so the next probe need not wait (:mod:`gcbatch.engine.neighbours`)."""
    if state.probe_due <= now:
        return state
    return replace(state, probe_due=now, probe_wait=0.0)


def post_rejected(state: AdmissionState, *, kind: PostKind = "within") -> AdmissionState:
    """The POST was refused for a reason that is not a quota: the slot is free again."""
    return _release(state, kind)


def _probe_wait(state: AdmissionState, level: int) -> float:
    """How long until the next probe, after a refusal at ``level``."""
    if level < DEFAULT_MAX_ACTIVE:
        first = (max(0.25, min(30.0, state.job_duration / 4))
                 if state.job_duration is not None else PROBE_BELOW_DEFAULT)
        if state.probe_wait <= 0:
            return first
        return min(state.probe_wait * 2, first * PROBE_BELOW_BACKOFF)
    if state.probe_wait <= 0:
        return PROBE_AT_DEFAULT_FIRST
    return min(max(state.probe_wait * 2, PROBE_AT_DEFAULT_FIRST), PROBE_AT_DEFAULT_MAX)


def refused_too_many_active(state: AdmissionState, now: float, *,
                            kind: PostKind = "within") -> AdmissionState:
    """The server said "too many active jobs".

    A probe that went alone: exact, the level is what we hold. Any other POST: the level
    can only go down, to what we hold without the POSTs still in flight (they may have
    been created before this one was refused; a refusal with POSTs racing proves no
    more). Either way the run is now steady, and the next probe waits.
    """
    released = _release(state, kind)
    held = released.held
    level = held if kind == "alone" else min(released.level, held)
    wait = _probe_wait(released, level)
    # the level set from our count is judged by the ends seen next, as a probe's is
    return replace(released, level=level, refused=True, probe_due=now + wait,
                   probe_wait=wait, probe_needs_look=True,
                   unconfirmed=(*released.unconfirmed, now), window=1)


def credits_exhausted(state: AdmissionState, *, kind: PostKind = "within") -> AdmissionState:
    """The server said "run out of algorithm credits": stop submitting and uploading."""
    return replace(_release(state, kind), stopped=True,
                   stop_reason=state.stop_reason or "credits")


def image_not_ready(state: AdmissionState, *, kind: PostKind = "within") -> AdmissionState:
    """The server said "Algorithm image is not ready to be used" (it was ready when the
    run began): no job can be made now; stop submitting and uploading."""
    return replace(_release(state, kind), stopped=True,
                   stop_reason=state.stop_reason or "not_ready")


def refuse_all(state: AdmissionState, reason: str) -> AdmissionState:
    """Pre-flight heard that the server refuses every job now (``reason``: "credits" or
    "not_ready"): the run sends nothing, and says why."""
    return replace(state, stopped=True, stop_reason=state.stop_reason or reason)


def post_in_doubt(state: AdmissionState, case_id: str, *,
                  kind: PostKind = "within") -> AdmissionState:
    """No definite answer: until reconciled, the case may hold a slot (a probe in doubt
    taught nothing)."""
    released = _release(state, kind)
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
    """Jobs found active at start (from an earlier run) hold slots too; the server admitted
    them, so they prove their slots."""
    active = state.active | frozenset(job_pks)
    level = max(state.level, min(len(active), state.ceiling))
    return replace(state, active=active, level=level)


def jobs_ended(state: AdmissionState, job_pks: frozenset[str] | set[str],
               durations: tuple[float, ...] = (), *,
               looked: float | None = None) -> AdmissionState:
    """These jobs reached a terminal status: their slots are free the moment we know it.
    ``durations``: how long those of this run took. ``looked``: every active job of ours
    was looked at, by a poll that began then.

    What a probe taught is judged by the ends we see after it: a job last seen active
    before the probe was answered (at the last complete look, or since) may have ended
    on the server before the probe's check, while we still counted it; the server's
    count was then lower than ours and the level one too high. So each end seen while a
    probe answered after that look is unconfirmed takes one slot off the level, in the
    same step that frees its slot (no POST goes out in between), and a probe may win
    back at once what was taken off for nothing. A probe is confirmed by a complete look
    begun after its answer: a job that had ended before it is seen ended by then."""
    ended = state.active & frozenset(job_pks)
    if not ended and not durations and looked is None:
        return state
    duration = state.job_duration
    for d in durations:
        duration = d if duration is None else 0.8 * duration + 0.2 * d
    after = replace(state, active=state.active - ended, job_duration=duration)
    if ended and any(t > state.looked_at for t in state.unconfirmed):
        # maybe taught from a stale count: take those slots off (one POST at a time wins
        # them back, at once)
        due = state.probe_due if looked is None else min(state.probe_due, looked)
        after = replace(after, level=max(0, state.level - len(ended)), probe_due=due,
                        probe_needs_look=False, probe_wait=0.0)
    return after if looked is None else polled(after, looked)


def polled(state: AdmissionState, started: float) -> AdmissionState:
    """Every active job of ours was looked at, by a poll that began at ``started`` (the
    jobs it saw ended already given to :func:`jobs_ended`): the probes answered before
    it began are confirmed."""
    return replace(state, looked_at=max(state.looked_at, started),
                   unconfirmed=tuple(t for t in state.unconfirmed if t >= started))


# -- uploads -------------------------------------------------------------------------------


def may_upload(state: AdmissionState) -> bool:
    """A case may start uploading (nothing stopped, no quota pause)."""
    return not state.stopped and not state.uploads_halted and state.upload_pause is None


def upload_blocked(state: AdmissionState, step: Literal["create", "send"]) -> bool:
    """Whether a pause holds this step back: creating uploads waits for either quota;
    sending an existing upload's parts waits for the size quota only (it makes no new
    upload, and finishing it lets a job consume it)."""
    pause = state.upload_pause
    return pause is not None and (step == "create" or pause.quota == "size")


def uploads_refused(state: AdmissionState, quota: UploadQuota, now: float) -> AdmissionState:
    """An upload was refused for a quota: pause (one pause, however many were refused);
    a refused trial backs off the next one."""
    pause = state.upload_pause
    if pause is None:
        return replace(state, upload_pause=UploadPause(
            quota=quota, since=now, retry_at=now + UPLOAD_TRIAL_FIRST, last_change=now))
    if pause.trial:
        interval = min(pause.interval * 2, UPLOAD_TRIAL_MAX)
        return replace(state, upload_pause=replace(
            pause, quota=quota, trial=False, interval=interval, retry_at=now + interval))
    return state


def uploads_accepted(state: AdmissionState, asked: float,
                     step: Literal["create", "send"] = "create") -> AdmissionState:
    """An upload was created ("create") or its URLs granted ("send") for a request sent
    at ``asked``. That ends a pause that began before the request and that this step
    would have met: a new upload passes both quotas, URLs only the size quota. (A pause
    that began while the request was on its way stays: the server may have said yes just
    before it said no to another.)"""
    pause = state.upload_pause
    if pause is None or asked < pause.since or (step == "send" and pause.quota != "size"):
        return state
    return replace(state, upload_pause=None)


def upload_trial(state: AdmissionState, now: float) -> AdmissionState | None:
    """The state with a trial taken, when one may go now (else None)."""
    pause = state.upload_pause
    if pause is None or pause.trial or now < pause.retry_at or state.uploads_halted:
        return None
    return replace(state, upload_pause=replace(pause, trial=True))


def upload_trial_ended(state: AdmissionState, now: float) -> AdmissionState:
    """The trial ended without an answer about the quota (another error)."""
    pause = state.upload_pause
    if pause is None or not pause.trial:
        return state
    return replace(state, upload_pause=replace(pause, trial=False,
                                               retry_at=now + pause.interval))


def upload_count_seen(state: AdmissionState, count: int, now: float) -> AdmissionState:
    """The server lists ``count`` live uploads of the user: fewer than at the last look
    means some were consumed (or expired), so the pause ends."""
    pause = state.upload_pause
    if pause is None:
        return state
    if pause.seen is not None and count < pause.seen:
        return replace(state, upload_pause=None)
    return replace(state, upload_pause=replace(pause, seen=count))


def uploads_stalled(state: AdmissionState, now: float, *, patience: float,
                    pending: bool) -> bool:
    """The pause cannot end by itself: nothing freed for ``patience`` seconds, and nothing
    of ours (``pending``) is on its way to consume an upload."""
    pause = state.upload_pause
    return pause is not None and not pending and now - pause.last_change >= patience


def uploads_stopped(state: AdmissionState) -> AdmissionState:
    """Give up uploading for this run (the quota cannot free itself)."""
    return replace(state, uploads_halted=True)


# -- the forecast ------------------------------------------------------------------------------


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
