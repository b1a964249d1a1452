"""What every part of one apply run shares: the wiring, made once by the executor.

The engine's parts (:mod:`~gcbatch.engine.prepare`, :mod:`~gcbatch.engine.uploading`,
:mod:`~gcbatch.engine.posting`, :mod:`~gcbatch.engine.monitor`) are small objects over one
:class:`RunContext`: the server (client and read-only view), the lockfile store, the
algorithm, the options, the two shared states (:class:`~gcbatch.engine.slots.Slots`,
:class:`~gcbatch.engine.tally.Tally`), the event hook, the clock and the stop flag.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gcbatch.api.client import GrandChallengeClient
from gcbatch.api.models import Algorithm, ArchiveItem, Job
from gcbatch.api.server_view import ServerView
from gcbatch.engine.options import ApplyOptions
from gcbatch.engine.outcomes import CaseOutcome, Outcome
from gcbatch.engine.slots import Slots
from gcbatch.engine.tally import Tally
from gcbatch.events import CaseProblem, Hook
from gcbatch.lockfile import JobRecord, LockfileStore, utc_now

__all__ = ["CaseParked", "CaseStopped", "RunContext"]


class CaseStopped(Exception):
    """This case ends now with the outcome already recorded (a control-flow signal)."""


class CaseParked(Exception):
    """This case waits in the parking lot (:mod:`gcbatch.engine.parking`), which finishes
    it later; its worker goes on with another case (a control-flow signal)."""


@dataclass
class RunContext:
    """The shared wiring of one run (its fields are set once; the states are thread-safe)."""

    client: GrandChallengeClient
    view: ServerView
    store: LockfileStore
    algorithm: Algorithm
    options: ApplyOptions
    slots: Slots
    tally: Tally
    emit: Hook
    stop: threading.Event
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    items: Mapping[str, ArchiveItem] = field(default_factory=dict)
    scratch: Path | None = None
    #: job pk → case id of the jobs this run knows (for status updates)
    job_case: dict[str, str] = field(default_factory=dict)
    #: job pk → when this run created it (for the monitor's durations)
    started: dict[str, float] = field(default_factory=dict)
    #: jobs this run created (where the job list ends: the monitor reads its tail)
    created: int = 0
    #: a case failed without --keep-going: the run stops, and is not "interrupted"
    failed_hard: bool = False
    #: why a part of the engine itself broke (an unexpected error in a thread): the run
    #: stops whatever --keep-going says, and apply ends with this message (exit 1)
    broken: list[str] = field(default_factory=list)
    #: job POSTs resent after an unanswered one, this run (bounded by max_resends)
    resends: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def request_stop(self) -> None:
        self.stop.set()
        self.slots.wake()

    def fail_hard(self) -> None:
        """A case failed: stop the run unless ``--keep-going``."""
        if not self.options.keep_going:
            self.failed_hard = True
            self.request_stop()

    def broke(self, message: str) -> None:
        """A part of the engine failed unexpectedly: stop the run now (exit 1)."""
        with self._lock:
            self.broken.append(message)
        self.failed_hard = True
        self.request_stop()

    def take_resend(self) -> bool:
        """One more resend allowed by the run's bound (False: the bound is reached)."""
        with self._lock:
            if self.resends >= self.options.max_resends:
                return False
            self.resends += 1
            return True

    # -- outcomes and records ----------------------------------------------------------------

    def outcome(self, case: str, kind: Outcome, message: str = "",
                job_pk: str | None = None) -> None:
        self.tally.record(CaseOutcome(case, kind, message, job_pk))
        if kind in (Outcome.FAILED, Outcome.IN_DOUBT):
            self.emit(CaseProblem(case, kind.value, message))

    def stop_case(self, case: str, kind: Outcome, message: str) -> CaseStopped:
        """Record the outcome; the caller raises what this returns."""
        self.outcome(case, kind, message)
        return CaseStopped()

    def record_job(self, case_id: str, job: Job, fingerprint: str,
                   inputs: Mapping[str, str], *, adopted: bool) -> None:
        record = JobRecord(pk=job.pk, api_url=job.api_url, status=job.status,
                           submitted_at=utc_now(), fingerprint=fingerprint, inputs=dict(inputs))
        # outcomes need not wait for the disk: lost only in a machine crash, the intent
        # they close is then reconciled by the next run (intents are always durable)
        if adopted:
            self.store.adopted(case_id, record, durable=False)
        else:
            self.store.submitted(case_id, record, durable=False)
        with self._lock:
            self.job_case[job.pk] = case_id

    def job_created(self, pk: str) -> None:
        with self._lock:
            self.started[pk] = self.clock()
            self.created += 1

    def job_ended(self, pk: str) -> float | None:
        """When this run created the job ``pk`` (None: not by this run); forgets it."""
        with self._lock:
            return self.started.pop(pk, None)

    def start_times(self, pks: frozenset[str]) -> list[float]:
        with self._lock:
            return [self.started[pk] for pk in pks if pk in self.started]

    def case_of(self, pk: str) -> str | None:
        with self._lock:
            return self.job_case.get(pk)

    def claimed(self) -> frozenset[str]:
        """Every job pk some case of the lockfile owns (current or in its history)."""
        return frozenset(self.claimed_by())

    def claimed_by(self) -> dict[str, str]:
        owners: dict[str, str] = {}
        for cid, entry in self.store.lockfile.cases.items():
            if entry.job is not None:
                owners[entry.job.pk] = cid
            for old in entry.history:
                owners.setdefault(old.pk, cid)
        return owners
