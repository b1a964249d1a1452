"""The run's admission state, shared by its threads: who may upload, who may POST, when.

:mod:`gcbatch.engine.admission` decides (pure transitions of a frozen
:class:`~gcbatch.engine.admission.AdmissionState`); :class:`Slots` holds that state under a
condition variable and lets worker threads wait on it: a worker about to upload waits for
:meth:`Slots.acquire_prepare` (uploads allowed, and a slot free or about to be: uploads
expire and count against quotas, so they are made shortly before a slot frees), a worker
whose upload met a quota waits in :meth:`Slots.wait_uploads` (one of them watches the
server's count of live uploads, or makes the single trial), a worker about to POST waits
for :meth:`Slots.reserve`, and the events that change the state (a job created or ended,
a refusal, the credits gone, our jobs looked at) wake whoever waits.

Every wait also ends on ``stop`` (Ctrl-C, or a case failing without ``--keep-going``):
:meth:`Slots.wake` is called when it is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Literal

from gcbatch.engine import admission as adm
from gcbatch.engine.neighbours import Neighbours

__all__ = ["Slots", "UploadGo"]

#: what :meth:`Slots.wait_uploads` says: go on, go on as the pause's single trial, stop
UploadGo = Literal["go", "trial", "stop"]

#: How often the upload-quota watcher counts the server's live uploads.
UPLOAD_WATCH_INTERVAL = 0.25
#: Seconds an upload pause may see nothing freed, with nothing of ours pending, before
#: uploading stops for the run (the quota cannot free itself).
UPLOAD_PATIENCE = 60.0


class Slots:
    """Thread-safe holder of the admission state (one per apply run)."""

    def __init__(self, *, max_active: int | None, lookahead: int, stop: threading.Event,
                 clock: Callable[[], float], upload_patience: float = UPLOAD_PATIENCE) -> None:
        self._cond = threading.Condition()
        self._state = adm.AdmissionState.start(max_active)
        self._lookahead = lookahead
        self._stop = stop
        self._clock = clock
        self._patience = upload_patience
        #: cases uploading ahead of a slot (bounded by expected slots + lookahead)
        self._preparing = 0
        #: cases whose uploads are complete and whose POST has not been answered yet
        self._holding = 0
        #: when this run created each of its jobs still active (durations; recent jobs
        #: may still consume uploads)
        self._created: dict[str, float] = {}
        self._watching = False
        self._watched_at = float("-inf")
        #: the live-upload count when uploading stopped (for the message)
        self.uploads_stuck_at: int | None = None
        #: workers waiting in :meth:`reserve` (the slot monitor polls only while > 0)
        self.waiters = 0
        #: other applies against the same server on this machine (a wake-up signal)
        self._neighbours: Neighbours | None = None
        #: what the POST each worker thread reserved is (answered on the same thread:
        #: see :mod:`gcbatch.engine.posting`)
        self._kinds: dict[int, adm.PostKind] = {}

    def join_neighbours(self, neighbours: Neighbours) -> None:
        """Tell other applies on this machine what we hold, and probe at once when they
        free slots (see :mod:`gcbatch.engine.neighbours`)."""
        with self._cond:
            self._neighbours = neighbours
            neighbours.publish(self._state.held, force=True)

    # -- reading ----------------------------------------------------------------------------

    @property
    def state(self) -> adm.AdmissionState:
        with self._cond:
            return self._state

    @property
    def stopped_by_credits(self) -> bool:
        return self.state.stop_reason == "credits"

    @property
    def stop_reason(self) -> str:
        """Why the run stopped sending before its work was done: "credits", "not_ready",
        "uploads" (an upload quota that cannot free itself); "" when it did not."""
        state = self.state
        if state.stopped:
            return state.stop_reason
        return "uploads" if state.uploads_halted else ""

    @property
    def stopped_uploading(self) -> bool:
        """The upload quota could not free itself: no more uploads in this run."""
        return self.state.uploads_halted

    def active(self) -> frozenset[str]:
        with self._cond:
            return self._state.active

    def limit(self) -> int | None:
        with self._cond:
            return adm.slot_limit(self._state)

    def wake(self) -> None:
        """Wake every waiter (stop was requested, or the run is over)."""
        with self._cond:
            self._cond.notify_all()

    def wait_for_waiters(self, done: threading.Event, timeout: float) -> frozenset[str] | None:
        """For the slot monitor: the active jobs to poll when a worker waits for a slot and
        some of our jobs are active; else sleep up to ``timeout`` and return None."""
        with self._cond:
            if done.is_set():
                return None
            if self.waiters == 0 or not self._state.active:
                self._cond.wait(timeout=timeout)
                return None
            return self._state.active

    # -- waiting -----------------------------------------------------------------------------

    def _halted(self) -> bool:
        return self._stop.is_set() or self._state.stopped

    def acquire_prepare(self) -> bool:
        """Wait until a case may start uploading; False when the run (or uploading) stops
        first."""
        with self._cond:
            rounds = 0
            while True:
                if self._halted() or self._state.uploads_halted:
                    return False
                state = self._state
                room = max(0, adm.expected_slots(state) - state.in_use) + self._lookahead
                if adm.may_upload(state) and self._preparing < room:
                    self._preparing += 1
                    return True
                rounds += 1
                self._cond.wait(timeout=0.1 if rounds < 100 else 0.5)

    def release_prepare(self) -> None:
        with self._cond:
            self._preparing = max(0, self._preparing - 1)
            self._cond.notify_all()

    def reserve(self) -> bool:
        """Wait for a slot and take it for a job POST; False when the run stops first."""
        with self._cond:
            self.waiters += 1
            self._cond.notify_all()  # wakes the monitor: someone needs a slot
            try:
                rounds = 0
                while True:
                    if self._halted():
                        return False
                    now = self._clock()
                    if adm.may_submit(self._state, now):
                        self._kinds[threading.get_ident()] = adm.post_kind(self._state)
                        self._state = adm.reserve(self._state, now)
                        return True
                    if self._neighbours is not None:
                        self._neighbours.publish(self._state.held)  # (a heartbeat)
                        if self._neighbours.freed():
                            self._state = adm.neighbour_freed(self._state, now)
                            continue
                    rounds += 1
                    self._cond.wait(timeout=0.05 if rounds < 100 else 0.25)
            finally:
                self.waiters -= 1

    def wait_uploads(self, live_uploads: Callable[[], int | None],
                     step: Literal["create", "send"] = "create") -> UploadGo:
        """Before creating an upload or asking for its URLs: wait while an upload quota
        pauses uploading. "go": no pause (any more); "trial": this caller makes the
        pause's single trial and must report with :meth:`uploads_accepted`,
        :meth:`uploads_refused` or :meth:`upload_failed`; "stop": the run stops, or the
        quota cannot free itself.

        While paused, one waiting thread at a time calls ``live_uploads`` (the server's
        count of the user's live uploads, None when it could not be read) every
        :data:`UPLOAD_WATCH_INTERVAL` seconds, outside the lock: a lower count ends the
        pause for everyone.
        """
        with self._cond:
            while True:
                if self._halted() or self._state.uploads_halted:
                    return "stop"
                if not adm.upload_blocked(self._state, step):
                    return "go"
                now = self._clock()
                trial = adm.upload_trial(self._state, now)
                if trial is not None:
                    self._state = trial
                    return "trial"
                if adm.uploads_stalled(self._state, now, patience=self._patience,
                                       pending=self._pending(now)):
                    self.uploads_stuck_at = (self._state.upload_pause.seen
                                             if self._state.upload_pause else None)
                    self._state = adm.uploads_stopped(self._state)
                    self._cond.notify_all()
                    return "stop"
                since = now - self._watched_at
                if self._watching or since < UPLOAD_WATCH_INTERVAL:
                    self._cond.wait(timeout=max(0.01, UPLOAD_WATCH_INTERVAL - since))
                    continue
                self._watching = True
                self._watched_at = now
                self._cond.release()
                try:
                    count = live_uploads()
                finally:
                    self._cond.acquire()
                    self._watching = False
                if count is not None:
                    self._state = adm.upload_count_seen(self._state, count, self._clock())
                self._cond.notify_all()

    def _pending(self, now: float) -> bool:
        """Something of ours is on its way to consume uploads (lock held): a POST in
        flight, a case holding finished uploads, or a job made within the patience."""
        if self._state.reserved or self._holding:
            return True
        return any(now - t < self._patience for t in self._created.values())

    # -- events ------------------------------------------------------------------------------

    def _apply(self, change: Callable[[adm.AdmissionState], adm.AdmissionState]) -> None:
        with self._cond:
            self._state = change(self._state)
            self._told()
            self._cond.notify_all()

    def _told(self) -> None:
        """(lock held) Our count changed: the neighbours may want to know."""
        if self._neighbours is not None:
            self._neighbours.publish(self._state.held)

    def _kind(self) -> adm.PostKind:
        """(lock held) What this thread's reserved POST, now answered, was."""
        return self._kinds.pop(threading.get_ident(), "within")

    def released(self) -> None:
        """The reserved POST was refused for a reason that is not a quota."""
        self._apply(lambda s: adm.post_rejected(s, kind=self._kind()))

    def created(self, job_pk: str) -> None:
        with self._cond:
            now = self._clock()
            self._created[job_pk] = now
            self._state = adm.job_created(self._state, job_pk, now, kind=self._kind())
            self._told()
            self._cond.notify_all()

    def refused_too_many_active(self) -> None:
        self._apply(lambda s: adm.refused_too_many_active(s, self._clock(),
                                                          kind=self._kind()))

    def credits_exhausted(self) -> bool:
        """Stop every POST; True for the first refusal of the run (to report it once)."""
        with self._cond:
            first = not self._state.stopped
            self._state = adm.credits_exhausted(self._state, kind=self._kind())
            self._cond.notify_all()
        return first

    def image_not_ready(self) -> bool:
        """Stop every POST (the algorithm's image stopped being ready); True the first time."""
        with self._cond:
            first = not self._state.stopped
            self._state = adm.image_not_ready(self._state, kind=self._kind())
            self._cond.notify_all()
        return first

    def refuse_all(self, reason: str) -> None:
        """Send nothing in this run: the server refuses every job (pre-flight heard why)."""
        self._apply(lambda s: adm.refuse_all(s, reason))

    def in_doubt(self, case_id: str) -> None:
        self._apply(lambda s: adm.post_in_doubt(s, case_id, kind=self._kind()))

    def resolved(self, case_id: str, job_pk: str | None, *, job_active: bool = True) -> None:
        self._apply(lambda s: adm.resolve_in_doubt(s, case_id, job_pk, job_active=job_active))

    def track_active(self, job_pks: Iterable[str]) -> None:
        pks = frozenset(job_pks)
        if pks:
            self._apply(lambda s: adm.track_active(s, pks))

    def ended(self, job_pks: Iterable[str], *, looked: float | None = None) -> None:
        """These jobs of ours ended. ``looked``: the slot monitor read every active job's
        status, in a poll begun then (on this run's clock)."""
        pks = frozenset(job_pks)
        with self._cond:
            now = self._clock()
            durations = tuple(now - self._created.pop(pk) for pk in pks if pk in self._created)
            self._state = adm.jobs_ended(self._state, pks, durations, looked=looked)
            self._told()
            self._cond.notify_all()

    def holding_uploads(self, delta: int) -> None:
        """A case's uploads are complete (+1) / its POST was answered or abandoned (-1)."""
        with self._cond:
            self._holding = max(0, self._holding + delta)

    def uploads_refused(self, quota: adm.UploadQuota) -> bool:
        """An upload was refused for ``quota``; True when this starts a pause (to report
        it once)."""
        with self._cond:
            first = self._state.upload_pause is None
            self._state = adm.uploads_refused(self._state, quota, self._clock())
            self._cond.notify_all()
            return first

    def now(self) -> float:
        return self._clock()

    def uploads_accepted(self, asked: float, step: Literal["create", "send"]) -> None:
        """An upload was created, or its URLs granted, for a request sent at ``asked``
        (:meth:`now`): see :func:`~gcbatch.engine.admission.uploads_accepted`."""
        with self._cond:
            if self._state.upload_pause is not None:
                self._state = adm.uploads_accepted(self._state, asked, step)
                self._cond.notify_all()

    def upload_failed(self) -> None:
        """The caller's trial ended with another error: let another try later."""
        self._apply(lambda s: adm.upload_trial_ended(s, self._clock()))
