"""The run's admission state, shared by its threads: who may upload, who may POST, when.

:mod:`gcbatch.engine.admission` decides (pure transitions of a frozen
:class:`~gcbatch.engine.admission.AdmissionState`); :class:`Slots` holds that state under a
condition variable and lets worker threads wait on it: a worker about to upload waits for
:meth:`Slots.acquire_prepare` (uploads allowed, and a slot free or about to be: uploads
expire and count against a quota, so they are made shortly before a slot frees), a worker
about to POST waits for :meth:`Slots.reserve`, and the events that change the state
(a job created or ended, a refusal, the credits gone) wake whoever waits.

Every wait also ends on ``stop`` (Ctrl-C, or a case failing without ``--keep-going``):
:meth:`Slots.wake` is called when it is set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from gcbatch.engine import admission as adm

__all__ = ["Slots"]


class Slots:
    """Thread-safe holder of the admission state (one per apply run)."""

    def __init__(self, *, max_active: int | None, lookahead: int, stop: threading.Event,
                 clock: Callable[[], float]) -> None:
        self._cond = threading.Condition()
        self._state = adm.AdmissionState(max_active=max_active)
        self._lookahead = lookahead
        self._stop = stop
        self._clock = clock
        #: cases uploading ahead of a slot (bounded by free slots + lookahead)
        self._preparing = 0
        #: workers waiting in :meth:`reserve` (the slot monitor polls only while > 0)
        self.waiters = 0

    # -- reading ----------------------------------------------------------------------------

    @property
    def state(self) -> adm.AdmissionState:
        with self._cond:
            return self._state

    @property
    def stopped_by_credits(self) -> bool:
        return self.state.stopped

    def active(self) -> frozenset[str]:
        with self._cond:
            return self._state.active

    def limit(self) -> int | None:
        with self._cond:
            return adm.slot_limit(self._state, self._clock())

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
        """Wait until a case may start uploading; False when the run stops first."""
        with self._cond:
            rounds = 0
            while True:
                if self._halted():
                    return False
                now = self._clock()
                room = adm.free_slots(self._state, now) + self._lookahead
                if adm.may_upload(self._state, now) and self._preparing < room:
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
                        self._state = adm.reserve(self._state, now)
                        return True
                    rounds += 1
                    self._cond.wait(timeout=0.1 if rounds < 100 else 0.5)
            finally:
                self.waiters -= 1

    def wait_upload_allowed(self) -> bool:
        """After "too many uploads": wait out the pause; False when the run stops first."""
        with self._cond:
            for _ in range(100_000):
                if self._halted():
                    return False
                if adm.may_upload(self._state, self._clock()):
                    return True
                self._cond.wait(timeout=0.2)
        return False

    # -- events ------------------------------------------------------------------------------

    def _apply(self, change: Callable[[adm.AdmissionState], adm.AdmissionState]) -> None:
        with self._cond:
            self._state = change(self._state)
            self._cond.notify_all()

    def released(self) -> None:
        """The reserved POST was refused for a reason that is not a quota."""
        self._apply(adm.post_rejected)

    def created(self, job_pk: str) -> None:
        self._apply(lambda s: adm.job_created(s, job_pk))

    def refused_too_many_active(self) -> None:
        self._apply(lambda s: adm.refused_too_many_active(s, self._clock()))

    def credits_exhausted(self) -> bool:
        """Stop every POST; True for the first refusal of the run (to report it once)."""
        with self._cond:
            first = not self._state.stopped
            self._state = adm.credits_exhausted(self._state)
            self._cond.notify_all()
        return first

    def in_doubt(self, case_id: str) -> None:
        self._apply(lambda s: adm.post_in_doubt(s, case_id))

    def resolved(self, case_id: str, job_pk: str | None, *, job_active: bool = True) -> None:
        self._apply(lambda s: adm.resolve_in_doubt(s, case_id, job_pk, job_active=job_active))

    def track_active(self, job_pks: Iterable[str]) -> None:
        pks = frozenset(job_pks)
        if pks:
            self._apply(lambda s: adm.track_active(s, pks))

    def ended(self, job_pks: Iterable[str]) -> None:
        pks = frozenset(job_pks)
        self._apply(lambda s: adm.jobs_ended(s, pks))

    def uploads_refused(self) -> float:
        """"Too many uploads": pause new uploads; returns the pause in seconds."""
        with self._cond:
            self._state = adm.uploads_refused(self._state, self._clock())
            return self._state.upload_pause

    def uploads_succeeded(self) -> None:
        with self._cond:
            self._state = adm.uploads_succeeded(self._state)
