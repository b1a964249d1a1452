"""The parking lot: in-doubt cases wait out the answer window while the others go on.

A job POST without a definite answer (a gateway's 504, a dropped connection, a timeout)
may still be committed by the application long after the client gave up (design notes,
point 5), so "no job on the server" proves nothing until a window longer than the
platform's own request time limit has passed since the POST
(:attr:`~gcbatch.engine.options.ApplyOptions.answer_window`). Until then the case is
*parked*: it holds no worker (others upload and POST meanwhile) and keeps its slot (its
job may exist and count against the active-jobs limit).

One thread looks parked cases up again, with backoff (half a second, doubling, at most
:data:`MAX_LOOK_INTERVAL`; the last look exactly when the window closes), reading the
newest jobs once per round for every case due:

- a job carries the case's handles → adopt it at once (``submitted``);
- the window has closed and nothing matches → hand the attempt back to be resent
  (``resend``), unless the case's uploads were consumed by a job we cannot find (a resend
  answered "Invalid hyperlink"): then it stays in doubt;
- a job that may be ours is still validating → keep looking, up to ``reconcile_wait``
  beyond the window;
- several jobs match, or the run stops → in doubt (the next apply looks again).

Every unexpected error in this thread stops the run cleanly (see :meth:`Parking.failure`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from gcbatch.api.models import Job
from gcbatch.engine.context import RunContext
from gcbatch.engine.outcomes import Outcome
from gcbatch.engine.reconcile import (
    Adopt,
    Ambiguous,
    NoJob,
    Reconciler,
    Verdict,
    Wait,
    choose_hint,
    decide,
    describe_jobs,
)
from gcbatch.engine.sent import Sent
from gcbatch.errors import ApiError, TransportError
from gcbatch.sources import Case
from gcbatch.statuses import TERMINAL_STATUSES

__all__ = ["MAX_LOOK_INTERVAL", "Parked", "Parking"]

#: The longest pause between two looks at a parked case.
MAX_LOOK_INTERVAL = 10.0
_FIRST_LOOK = 0.5


@dataclass(frozen=True)
class Parked:
    """One in-doubt attempt waiting for its answer window to close."""

    case: Case
    sent: Sent
    #: when its last job POST went out (the run's clock)
    posted_at: float
    why: str
    #: unanswered job POSTs of this case in this run so far
    posts: int = 0
    #: a resend was answered "Invalid hyperlink" for our own upload: a job consumed it
    consumed: bool = False
    #: the run's clock when it is due to be looked up again
    next_look: float = 0.0
    looks: int = 0
    #: a job of the earlier run (adopted → outcome "adopted" rather than "submitted")
    earlier: bool = False
    #: the fingerprint and digests the intent was made for (earlier runs: the intent's)
    fingerprint: str = ""
    digests: tuple[tuple[str, str], ...] = ()
    #: sent by --retry-failed (the duplicate check's message depends on it)
    retrying: bool = False


class Parking:
    """The parked cases and the thread that looks them up (one per run; thread-safe).

    ``resend(parked)`` is called (from this thread) when a case's window closed without
    a job: the executor gives it back to a worker. ``finished(case_id)`` is called for a
    case settled here (adopted or left in doubt).
    """

    def __init__(self, run: RunContext, reconciler: Reconciler, *,
                 resend: Callable[[Parked], None],
                 finished: Callable[[str], None]) -> None:
        self.run = run
        self._reconciler = reconciler
        self._resend = resend
        self._finished = finished
        self._cond = threading.Condition()
        self._parked: dict[str, Parked] = {}
        self._closed = False
        #: the unexpected error that stopped this thread (None: none)
        self.failure: str | None = None
        self._thread = threading.Thread(target=self._guarded, name="gcbatch-parking",
                                        daemon=True)

    # -- the executor's side --------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def park(self, parked: Parked) -> None:
        """Park ``parked`` (the caller's worker is then free); looked up first soon."""
        run = self.run
        first = min(parked.posted_at + run.options.answer_window, run.clock() + _FIRST_LOOK)
        with self._cond:
            if self._closed or self.failure is not None:
                stopped = True
            else:
                stopped = False
                self._parked[parked.case.id] = replace(parked, next_look=first)
                self._cond.notify_all()
        if stopped:
            self._leave_in_doubt(parked, "the run stopped before its answer window closed")

    @property
    def count(self) -> int:
        with self._cond:
            return len(self._parked)

    # -- the thread ---------------------------------------------------------------------------

    def _guarded(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug must stop the run, never hang it
            self.failure = f"{type(exc).__name__}: {exc}"
            self.run.broke(f"the in-doubt lookup stopped: {self.failure}")
            with self._cond:
                left = list(self._parked.values())
                self._parked.clear()
            for parked in left:
                self._leave_in_doubt(parked, f"the lookup stopped ({self.failure})")

    def _loop(self) -> None:
        run = self.run
        while True:
            with self._cond:
                while True:
                    if self._closed and not self._parked:
                        return
                    if run.stopping and self._parked:
                        left = list(self._parked.values())
                        self._parked.clear()
                        break
                    now = run.clock()
                    due = [p for p in self._parked.values() if p.next_look <= now]
                    if due:
                        left = []
                        break
                    wait = min((p.next_look for p in self._parked.values()), default=now + 1)
                    self._cond.wait(timeout=max(0.01, min(1.0, wait - now)))
            if left:
                for parked in left:
                    self._leave_in_doubt(parked, "the run stopped before its answer window "
                                         "closed; the next apply looks for its job again")
                continue
            self._look(due)

    def _look(self, due: list[Parked]) -> None:
        """One round: the newest jobs read once, then each due case decided."""
        run = self.run
        try:
            jobs: tuple[Job, ...] | None = self._reconciler.recent_jobs()
        except (ApiError, TransportError):
            jobs = None
        for parked in due:
            verdict: Verdict | None = None
            if jobs is not None:
                try:
                    evidence = self._reconciler.evidence(parked.sent, jobs=jobs)
                    verdict = decide(parked.sent, evidence, run.claimed())
                except (ApiError, TransportError):
                    verdict = None
            self._settle(parked, verdict)

    def _settle(self, parked: Parked, verdict: Verdict | None) -> None:
        run = self.run
        now = run.clock()
        window_end = parked.posted_at + run.options.answer_window
        if isinstance(verdict, Adopt):
            self._drop(parked)
            self._adopt(parked, verdict.job)
            return
        if isinstance(verdict, Ambiguous):
            self._drop(parked)
            self._leave_in_doubt(parked, f"{verdict.reason}: {describe_jobs(verdict.jobs)}; "
                                 f"{choose_hint(parked.case.id)}")
            return
        closed = now >= window_end
        if closed and isinstance(verdict, NoJob):
            self._drop(parked)
            if parked.consumed:
                self._leave_in_doubt(parked, "a job consumed this case's upload but cannot "
                                     "be found; check the server, then use "
                                     "--resubmit-in-doubt")
                return
            run.slots.resolved(parked.case.id, None)
            self._resend(parked)
            return
        give_up = window_end + run.options.reconcile_wait
        if now >= give_up:
            self._drop(parked)
            if isinstance(verdict, Wait):
                why = f"{verdict.reason}: {describe_jobs(verdict.jobs)}"
            else:
                why = "the server could not be asked"
            self._leave_in_doubt(parked, f"{parked.why}; {why}; the next apply looks again")
            return
        looks = parked.looks + 1
        interval = min(MAX_LOOK_INTERVAL, _FIRST_LOOK * 2 ** looks)
        following = now + interval
        if not closed:
            following = min(following, window_end)  # look once more right as it closes
        with self._cond:
            if parked.case.id in self._parked:
                self._parked[parked.case.id] = replace(parked, next_look=following,
                                                       looks=looks)

    # -- outcomes ---------------------------------------------------------------------------

    def _drop(self, parked: Parked) -> None:
        with self._cond:
            self._parked.pop(parked.case.id, None)

    def _adopt(self, parked: Parked, job: Job) -> None:
        run = self.run
        case = parked.case
        fingerprint = parked.fingerprint or case.fingerprint
        digests = dict(parked.digests) if parked.digests else case.digests()
        run.record_job(case.id, job, fingerprint, digests, adopted=True)
        run.slots.resolved(case.id, job.pk, job_active=job.status not in TERMINAL_STATUSES)
        if parked.earlier:
            run.outcome(case.id, Outcome.ADOPTED, f"job {job.pk} (found after: {parked.why})",
                        job.pk)
        else:
            run.outcome(case.id, Outcome.SUBMITTED, f"job {job.pk} (found after: {parked.why})",
                        job.pk)
        self._finished(case.id)

    def _leave_in_doubt(self, parked: Parked, why: str) -> None:
        run = self.run
        run.slots.resolved(parked.case.id, None)
        run.outcome(parked.case.id, Outcome.IN_DOUBT, f"{parked.why}; {why}")
        self._finished(parked.case.id)
