"""The run's bookkeeping, shared by its threads: outcomes so far and work in flight.

Workers record each case's outcome here and count what they are doing (uploading,
POSTing, bytes sent); the executor's main thread waits here for every case to finish and
reads the counters a few times a second for the progress display. Snapshots are O(1):
outcomes are counted per kind as they are recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from gcbatch.engine.outcomes import CaseOutcome, Outcome

__all__ = ["Tally"]


class Tally:
    """Thread-safe outcomes and activity counters of one apply run."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._outcomes: dict[str, CaseOutcome] = {}
        self._counts: dict[Outcome, int] = {}
        self.uploading = 0
        self.posting = 0
        self.bytes_uploaded = 0
        self.bytes_total = 0
        #: cases done with (whatever the outcome)
        self.finished = 0

    # -- outcomes -----------------------------------------------------------------------------

    def record(self, outcome: CaseOutcome) -> None:
        with self._cond:
            self._set(outcome)

    def record_many(self, outcomes: Iterable[CaseOutcome]) -> None:
        """Outcomes known before any worker runs (unchanged cases: one per case)."""
        with self._cond:
            for outcome in outcomes:
                self._set(outcome)

    def _set(self, outcome: CaseOutcome) -> None:
        old = self._outcomes.get(outcome.case)
        if old is not None:
            self._counts[old.kind] -= 1
        self._outcomes[outcome.case] = outcome
        self._counts[outcome.kind] = self._counts.get(outcome.kind, 0) + 1

    def count(self, kind: Outcome) -> int:
        with self._cond:
            return self._counts.get(kind, 0)

    def finish(self, case_id: str) -> None:
        """A worker is done with ``case_id``; a case it left without outcome waits."""
        with self._cond:
            if case_id not in self._outcomes:
                self._set(CaseOutcome(case_id, Outcome.WAITING, "not submitted"))
            self.finished += 1
            self._cond.notify_all()

    def wait_finished(self, total: int, timeout: float) -> bool:
        """True when ``total`` cases are finished; else wait up to ``timeout`` (False)."""
        with self._cond:
            if self.finished >= total:
                return True
            self._cond.wait(timeout=timeout)
            return self.finished >= total

    def outcomes(self) -> tuple[CaseOutcome, ...]:
        with self._cond:
            return tuple(self._outcomes[c] for c in sorted(self._outcomes))

    # -- activity -----------------------------------------------------------------------------

    @contextmanager
    def posting_one(self) -> Iterator[None]:
        """Counts a job POST as in flight while the block runs, however it ends."""
        self.add(posting=1)
        try:
            yield
        finally:
            self.add(posting=-1)

    def add(self, *, uploading: int = 0, posting: int = 0, uploaded: int = 0,
            to_upload: int = 0) -> None:
        with self._cond:
            self.uploading += uploading
            self.posting += posting
            self.bytes_uploaded += uploaded
            self.bytes_total += to_upload
