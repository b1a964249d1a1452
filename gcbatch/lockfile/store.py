"""The lockfile, its journal and its OS lock, tied together for one run (an apply, or a
results command recording the statuses it saw).

Opening takes the OS lock, loads the lockfile, replays the journal a crashed run left and
checkpoints, so every run starts from a clean lockfile and a fresh journal. From then on
each event is journalled (fsynced before the call returns, so the caller may act on it)
and folded into a mutable dict of frozen entries: O(1) per event, however many cases. A
checkpoint writes the folded state atomically and truncates the journal.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from gcbatch.lockfile.disk import load_as_on_disk, save
from gcbatch.lockfile.journal import EventKind, Journal, apply_begin, case_of, fold_case
from gcbatch.lockfile.oslock import FileLock
from gcbatch.lockfile.paths import journal_path_for, oslock_path_for
from gcbatch.lockfile.records import AlgorithmRef, CaseEntry, JobRecord, Lockfile, utc_now


class LockfileStore:
    """Lockfile + journal + OS lock for one run; thread-safe. The executor's interface.

    ::

        with LockfileStore.open(path, server=url, algorithm=AlgorithmRef(slug, pk, api)) as st:
            st.lockfile                      # folded state (journal replayed on open)
            st.entry("case-1")               # one case, O(1) (st.lockfile copies all)
            st.intent("case-1", fingerprint, inputs={...}, uploads=[...], payload=...)
            st.submitted("case-1", JobRecord(...))   # or st.rejected("case-1", "reason")
            st.status("case-1", job_pk, "Succeeded")
            st.checkpoint()                  # atomic save + truncate journal

    Opening takes the OS lock (:class:`LockHeldError` if taken), loads and checks the
    lockfile (:class:`LockfileError` on another server/algorithm/format), replays the journal
    and checkpoints, so every run starts from a clean lockfile and an empty journal.
    Every event is fsynced to the journal before the method returns; ``checkpoint`` runs
    every ``max(checkpoint_every, cases/4)`` events (a checkpoint rewrites every case, so
    its cost stays O(1) per event) and on close. Each event costs O(1): the state is a
    mutable dict of frozen entries, folded with :func:`fold_case`.
    """

    def __init__(
        self,
        path: Path,
        lockfile: Lockfile,
        journal: Journal,
        oslock: FileLock,
        checkpoint_every: int,
    ) -> None:
        self.path = path
        # The state, kept mutable so an event costs O(1), not a copy of 100,000 entries:
        # ``_header`` holds server/algorithm (its ``cases`` is not used), ``_cases`` the
        # entries (each still a frozen CaseEntry, replaced whole per event).
        self._header = lockfile
        self._cases: dict[str, CaseEntry] = dict(lockfile.cases)
        #: the immutable Lockfile of the current state, built on demand; None once stale
        self._snapshot: Lockfile | None = lockfile
        #: whether the state differs from what the lockfile file holds
        self._dirty = True
        self._journal = journal
        self._oslock = oslock
        self._mutex = threading.Lock()
        self._since_checkpoint = 0
        self._checkpoint_every = checkpoint_every

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        server: str,
        algorithm: AlgorithmRef,
        checkpoint_every: int = 500,
    ) -> LockfileStore:
        """Lock, load, replay, checkpoint (see the class docstring); the caller closes.

        The OS lock is released again if anything after taking it fails, so a refused
        open (another server, a corrupt journal) leaves nothing held.
        """
        oslock = FileLock(oslock_path_for(path))
        oslock.acquire()
        try:
            existing, as_on_disk = load_as_on_disk(path, server=server, algorithm=algorithm.slug)
            if existing is None:
                existing = Lockfile(server=server, algorithm=algorithm)
            elif algorithm.pk and existing.algorithm.pk != algorithm.pk:
                existing = replace(existing, algorithm=algorithm)
                as_on_disk = False
            if not as_on_disk:
                # a re-apply of a fully locked 100,000-case study writes nothing here
                save(path, existing)
            journal = Journal(journal_path_for(path))
            journal.truncate()
            journal.append({"event": EventKind.BEGIN, "server": existing.server,
                            "algorithm": existing.algorithm.as_json(), "at": utc_now()})
        except BaseException:
            oslock.release()
            raise
        store = cls(path, existing, journal, oslock, checkpoint_every)
        store._dirty = False  # the file holds exactly ``existing`` now
        return store

    @property
    def lockfile(self) -> Lockfile:
        """The current state as an immutable :class:`Lockfile`.

        Built (one O(cases) copy) on the first read after an event and cached until the
        next one, so read it once per pass, not per case: :meth:`entry` is the O(1) way
        to look at one case.
        """
        with self._mutex:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> Lockfile:
        if self._snapshot is None:
            self._snapshot = replace(self._header, cases=dict(self._cases))
        return self._snapshot

    def entry(self, case_id: str) -> CaseEntry | None:
        """What the lockfile holds for ``case_id`` now (``None`` if nothing); O(1)."""
        with self._mutex:
            return self._cases.get(case_id)

    def _threshold(self) -> int:
        # Every checkpoint rewrites the whole file, O(cases): checkpointing at most once
        # per max(checkpoint_every, cases/4) events keeps its cost O(1) per event however
        # large the lockfile, and the journal (what a crash replays) within cases/4 events.
        # (The executor also checkpoints on a timer, and every run ends with one.)
        return max(self._checkpoint_every, len(self._cases) // 4)

    def record(self, event: Mapping[str, Any], *, durable: bool = True) -> CaseEntry | None:
        """Journal one event (fsynced), fold it in; O(1) in the number of cases.

        Returns the event's case entry as it is now (``None`` for a ``begin``); read
        :attr:`lockfile` for the whole state.

        ``durable=False`` (outcomes only): written and flushed to the OS, so it survives
        the process being killed, but not waited on to reach the disk; the next event's
        fsync carries it. Losing it in a machine crash only leaves its intent in doubt,
        which the next run reconciles. Intents must always be durable.
        """
        event = {"at": utc_now(), **event}
        source = str(self._journal.path)
        with self._mutex:
            result: CaseEntry | None = None
            if event.get("event") == EventKind.BEGIN:
                # only server/algorithm matter to a begin: the header is enough
                header = apply_begin(self._header, event, source=source)
                seq = self._journal.write(event)
                if header is not self._header:
                    self._header = header
                    self._snapshot = None
            else:
                case = case_of(event, source=source)
                result = fold_case(self._cases.get(case), event, source=source)
                seq = self._journal.write(event)
                self._cases[case] = result
                self._snapshot = None
            self._dirty = True
            self._since_checkpoint += 1
            if self._since_checkpoint >= self._threshold():
                self._checkpoint_locked()
        # fsync outside the mutex (group commit): concurrent events share one fsync; the
        # caller acts on the event only after this returns, so it is durable by then
        if durable:
            self._journal.sync(seq)
        return result

    def record_many(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Journal several events with one fsync and fold them in, all or none.

        For batches of independent events, e.g. the statuses one job-list refresh found
        (``gcbatch status`` on 2000 jobs: one fsync instead of 2000).
        """
        at = utc_now()
        source = str(self._journal.path)
        with self._mutex:
            # fold into an overlay first: a bad event leaves state and journal untouched
            header = self._header
            changed: dict[str, CaseEntry] = {}
            stamped = []
            for raw in events:
                event = {"at": at, **raw}
                stamped.append(event)
                if event.get("event") == EventKind.BEGIN:
                    header = apply_begin(header, event, source=source)
                    continue
                case = case_of(event, source=source)
                previous = changed[case] if case in changed else self._cases.get(case)
                changed[case] = fold_case(previous, event, source=source)
            if not stamped:
                return
            self._journal.append_many(stamped)
            self._header = header
            self._cases.update(changed)
            self._snapshot = None
            self._dirty = True
            self._since_checkpoint += len(stamped)
            if self._since_checkpoint >= self._threshold():
                self._checkpoint_locked()

    def intent(
        self,
        case: str,
        fingerprint: str,
        *,
        inputs: Mapping[str, str],
        uploads: tuple[str, ...] | list[str] = (),
        payload: Any = None,
    ) -> None:
        """Before the job POST: from here until an outcome, the case is in doubt."""
        self.record({"event": EventKind.INTENT, "case": case, "fingerprint": fingerprint,
                     "inputs": dict(inputs), "uploads": list(uploads), "payload": payload})

    def submitted(self, case: str, job: JobRecord, *, durable: bool = True) -> None:
        """The job POST answered with ``job``: it becomes the case's job (the one before
        goes to its history) and the intent is resolved. ``durable``: see :meth:`record`."""
        self.record({"event": EventKind.SUBMITTED, "case": case, "job": job.as_json()},
                    durable=durable)

    def adopted(self, case: str, job: JobRecord, *, durable: bool = True) -> None:
        """Reconciliation found ``job``, made by the case's in-doubt intent: folded as
        :meth:`submitted`, journalled under its own kind (the journal shows it was adopted)."""
        self.record({"event": EventKind.ADOPTED, "case": case, "job": job.as_json()},
                    durable=durable)

    def rejected(self, case: str, reason: str, *, durable: bool = True) -> None:
        """The server definitely created nothing: the intent is resolved, the case is no
        longer in doubt and keeps whatever job it had."""
        self.record({"event": EventKind.REJECTED, "case": case, "reason": reason},
                    durable=durable)

    def status(self, case: str, job_pk: str, status: str) -> None:
        """The last status seen of the case's job ``job_pk`` (or of one in its history)."""
        self.record({"event": EventKind.STATUS, "case": case, "job": job_pk, "status": status})

    def statuses(self, updates: Iterable[tuple[str, str, str]]) -> None:
        """Many ``(case, job pk, status)`` at once (one fsync): see :meth:`record_many`."""
        self.record_many({"event": EventKind.STATUS, "case": case, "job": pk, "status": status}
                         for case, pk, status in updates)

    def set_algorithm(self, algorithm: AlgorithmRef) -> None:
        """Record the algorithm's pk/api_url once the server told us (checkpoints)."""
        with self._mutex:
            self._header = replace(self._header, algorithm=algorithm)
            self._snapshot = None
            self._dirty = True
            self._checkpoint_locked()

    def forget(self, case: str) -> None:
        """Drop a case from the lockfile (checkpoints; not journalled)."""
        with self._mutex:
            if self._cases.pop(case, None) is not None:
                self._snapshot = None
                self._dirty = True
            self._checkpoint_locked()

    def checkpoint(self) -> None:
        """Save the folded state and truncate the journal; nothing if nothing happened."""
        with self._mutex:
            self._checkpoint_locked()

    def _checkpoint_locked(self) -> None:
        # save first, then truncate: a crash in between replays events already folded,
        # which is harmless because every event's fold is idempotent on the saved state
        if not self._dirty and self._since_checkpoint == 0:
            return  # nothing happened since the file was written (or read): keep both
        if self._dirty:
            save(self.path, self._snapshot_locked())
            self._dirty = False
        self._journal.truncate()
        self._journal.append({"event": EventKind.BEGIN, "server": self._header.server,
                              "algorithm": self._header.algorithm.as_json(),
                              "at": utc_now()})
        self._since_checkpoint = 0

    def close(self) -> None:
        """Checkpoint and let go; the OS lock is released even if the checkpoint fails."""
        try:
            with self._mutex:
                self._checkpoint_locked()
                self._journal.close()
        finally:
            self._oslock.release()

    def __enter__(self) -> LockfileStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

