"""The apply engine: every targeted case carried to a job, exactly once, crash-safe.

:class:`Executor` runs a plan (:mod:`gcbatch.plan`) over an open lockfile store. Its
parts, each in its own module over one shared :class:`~gcbatch.engine.context.RunContext`:

- workers (``concurrency`` threads), each carrying one case from its uploads
  (:mod:`~gcbatch.engine.uploading`) to its job (:mod:`~gcbatch.engine.posting`), or
  first reconciling an in-doubt case from an earlier run;
- admission (:mod:`~gcbatch.engine.slots` over :mod:`~gcbatch.engine.admission`): when
  a case may upload and when it may POST, under the active-jobs limit and the quotas;
- the slot monitor (:mod:`~gcbatch.engine.monitor`): frees a slot the moment a job ends;
- the parking lot (:mod:`~gcbatch.engine.parking`): in-doubt cases wait out the answer
  window there, holding no worker, and come back to one to be sent again;
- the tally (:mod:`~gcbatch.engine.tally`): outcomes and counters, for the summary and
  the progress events.

The exactly-once protocol is in ``docs/architecture.md`` and the modules named; here is
only the run: start, wait (responsive to Ctrl-C), checkpoint every
``checkpoint_seconds``, and stop. Ctrl-C (:meth:`Executor.request_stop`): no new case
starts, cases waiting for a slot give up waiting, in-flight requests finish, the lockfile
is checkpointed. Nothing is ever lost by a harder stop either: the journal already holds
every intent.

Every thread is guarded: an unexpected error in a worker fails its case (and stops the
run unless ``--keep-going``); one in the slot monitor or the parking lot stops the run
at once, and :meth:`Executor.run` then raises :class:`EngineError` (exit 1) after the
lockfile was checkpointed: never a hang.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gcbatch.api.client import GrandChallengeClient
from gcbatch.api.models import Algorithm, ArchiveItem
from gcbatch.api.server_view import ServerView
from gcbatch.engine.context import CaseParked, CaseStopped, RunContext
from gcbatch.engine.monitor import SlotMonitor
from gcbatch.engine.options import ApplyOptions
from gcbatch.engine.outcomes import ApplySummary, CaseOutcome, Outcome
from gcbatch.engine.parking import Parked, Parking
from gcbatch.engine.posting import Posting
from gcbatch.engine.prepare import build_sent
from gcbatch.engine.sent import Sent, Stage
from gcbatch.engine.slots import Slots
from gcbatch.engine.tally import Tally
from gcbatch.engine.uploading import Uploading
from gcbatch.errors import GcbatchError
from gcbatch.events import ApplyProgress, Hook, ignore
from gcbatch.lockfile import CaseEntry, LockfileStore
from gcbatch.perf import frozen_instance
from gcbatch.plan import ActionKind, Plan
from gcbatch.sources import Case
from gcbatch.statuses import TERMINAL_STATUSES

__all__ = ["EngineError", "Executor"]


class EngineError(GcbatchError):
    """A part of the apply engine broke (a bug, or an answer nothing could make sense
    of); the run was stopped and its lockfile saved (exit 1)."""

#: The display needs no more than this many progress events a second.
_PROGRESS_INTERVAL = 0.1


@dataclass(frozen=True)
class _Work:
    case: Case
    action: ActionKind  # submit | resubmit | retry_failed | in_doubt


class Executor:
    """Runs one apply over an open :class:`LockfileStore`. Thread-safe where it must be."""

    def __init__(
        self,
        client: GrandChallengeClient,
        store: LockfileStore,
        algorithm: Algorithm,
        options: ApplyOptions,
        *,
        items: Mapping[str, ArchiveItem] | None = None,
        on_event: Hook = ignore,
        scratch_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        stop = threading.Event()
        self.run_context = RunContext(
            client=client, view=ServerView(client), store=store, algorithm=algorithm,
            options=options,
            slots=Slots(max_active=options.max_active, lookahead=options.lookahead, stop=stop,
                        clock=clock),
            tally=Tally(), emit=on_event, stop=stop, clock=clock, sleep=sleep,
            items=dict(items or {}), scratch=scratch_dir)
        self._uploading = Uploading(self.run_context)
        self._posting = Posting(self.run_context, self._uploading)
        self._parking = Parking(self.run_context, self._posting.reconciler,
                                resend=self._resend, finished=self.run_context.tally.finish)
        self._posting.parking = self._parking
        self._pool: ThreadPoolExecutor | None = None
        self._done = threading.Event()
        self._total = 0

    # -- control -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First Ctrl-C: start no new case, stop waiting for slots, finish what is in flight."""
        self.run_context.request_stop()

    @property
    def stopping(self) -> bool:
        return self.run_context.stopping

    def progress(self) -> ApplyProgress:
        """The counters now (an O(1) snapshot)."""
        run = self.run_context
        tally, slots = run.tally, run.slots
        return ApplyProgress(
            total=self._total,
            submitted=tally.count(Outcome.SUBMITTED),
            adopted=tally.count(Outcome.ADOPTED),
            failed=tally.count(Outcome.FAILED),
            in_doubt=tally.count(Outcome.IN_DOUBT),
            uploading=tally.uploading,
            waiting_for_slot=slots.waiters,
            posting=tally.posting,
            active_jobs=len(slots.active()),
            slot_limit=slots.limit(),
            bytes_uploaded=tally.bytes_uploaded,
            bytes_total=tally.bytes_total,
            stopped_by_credits=slots.stopped_by_credits,
            stopping=run.stopping,
        )

    # -- the run -----------------------------------------------------------------------------

    def run(self, cases: Sequence[Case], plan: Plan) -> ApplySummary:
        """Execute ``plan`` for the targeted ``cases`` (already preflighted)."""
        run = self.run_context
        started = run.clock()
        work = self._work(cases, plan)
        self._total = len(work)
        self._prime_active()
        monitor = SlotMonitor(run, self._done)
        monitor.start()
        self._parking.start()
        try:
            self._run_work(work)
        finally:
            self._done.set()
            run.slots.wake()
            self._parking.close()
            monitor.join(timeout=30)
            run.store.checkpoint()
            run.emit(self.progress())
        if run.broken:
            counts = run.tally.outcomes()
            done = sum(1 for o in counts if o.kind in (Outcome.SUBMITTED, Outcome.ADOPTED))
            raise EngineError(
                f"apply stopped: {'; '.join(run.broken)}. {done} case(s) got their job "
                f"before the stop; {run.store.path.name} is saved: run apply again")
        return ApplySummary(
            outcomes=run.tally.outcomes(),
            stopped_by_credits=run.slots.stopped_by_credits,
            interrupted=run.stopping and not run.slots.stopped_by_credits
            and not run.failed_hard,
            elapsed=run.clock() - started,
            bytes_uploaded=run.tally.bytes_uploaded,
            requests=run.client.requests_sent,
        )

    def _work(self, cases: Sequence[Case], plan: Plan) -> list[_Work]:
        """The cases to carry, from the plan; the others' outcomes are known now."""
        run = self.run_context
        by_id = {c.id: c for c in cases}
        targeting = run.options.targeting
        everything = targeting.everything
        work: list[_Work] = []
        unchanged: list[CaseOutcome] = []
        for action in plan.actions:
            if action.kind == ActionKind.UNCHANGED:  # settled cases have no Case: see expand
                if everything or targeting.matches(action.case_id):
                    # (built directly: a locked re-apply makes one per case, 100,000 of them)
                    unchanged.append(frozen_instance(CaseOutcome, {
                        "case": action.case_id, "kind": Outcome.UNCHANGED,
                        "message": action.reason, "job_pk": action.job_pk}))
                continue
            case = by_id.get(action.case_id)
            if case is None or not targeting.matches(case.id):
                continue
            if action.kind in (ActionKind.SUBMIT, ActionKind.RETRY_FAILED,
                               ActionKind.IN_DOUBT):
                work.append(_Work(case, action.kind))
            elif action.kind == ActionKind.RESUBMIT:
                if run.options.replace:
                    work.append(_Work(case, action.kind))
                else:
                    run.outcome(case.id, Outcome.SKIPPED, action.reason, action.job_pk)
            elif action.kind == ActionKind.BLOCKED:
                run.outcome(case.id, Outcome.FAILED, action.reason)
        run.tally.record_many(unchanged)
        return work

    def _run_work(self, work: list[_Work]) -> None:
        if not work:
            return
        run = self.run_context
        pool = ThreadPoolExecutor(max_workers=run.options.concurrency,
                                  thread_name_prefix="gcbatch-worker")
        self._pool = pool
        try:
            for w in work:
                pool.submit(self._process_safely, w)
            last_checkpoint = run.clock()
            last_update = -1e9
            # wait in short slices so the main thread stays responsive to Ctrl-C; workers
            # notify on every case, but the display needs no more than ~10 updates a second
            while not run.tally.wait_finished(len(work), timeout=_PROGRESS_INTERVAL):
                if run.clock() - last_update < _PROGRESS_INTERVAL:
                    continue
                last_update = run.clock()
                run.emit(self.progress())
                if run.clock() - last_checkpoint >= run.options.checkpoint_seconds:
                    run.store.checkpoint()
                    last_checkpoint = run.clock()
        finally:
            pool.shutdown(wait=True, cancel_futures=False)

    def _process_safely(self, work: _Work) -> None:
        self._guarded(work.case, lambda: self._process(work))

    def _resend(self, parked: Parked) -> None:
        """From the parking lot: a case whose answer window closed without a job goes
        back to a worker (a pool task) to be sent again."""
        pool = self._pool
        assert pool is not None
        pool.submit(self._guarded, parked.case, lambda: self._posting.resend(parked))

    def _guarded(self, case: Case, step: Callable[[], None]) -> None:
        run = self.run_context
        parked = False
        try:
            step()
        except CaseStopped:
            pass
        except CaseParked:
            parked = True  # the parking lot finishes it
        except GcbatchError as exc:
            run.outcome(case.id, Outcome.FAILED, str(exc))
            run.fail_hard()
        except Exception as exc:  # a bug: keep the others going, but say so loudly
            run.outcome(case.id, Outcome.FAILED, f"internal error: {type(exc).__name__}: {exc}")
            run.fail_hard()
        finally:
            if not parked:
                run.tally.finish(case.id)

    def _process(self, work: _Work) -> None:
        run = self.run_context
        case = work.case
        if run.stopping:
            raise run.stop_case(case.id, Outcome.WAITING, "not started (stopping)")
        entry = run.store.entry(case.id) or CaseEntry()
        prior: Sent | None = None  # an earlier attempt to finish (its uploads are reused)
        if work.action == ActionKind.IN_DOUBT:
            prior = self._posting.reconcile_pending(case, entry)
            if prior is None:
                return  # adopted, or left in doubt
        elif entry.pending is not None:
            prior = _unsent(entry)  # stopped during its uploads: resume them
        if prior is not None and prior.attempt and entry.pending is not None \
                and entry.pending.fingerprint != case.fingerprint:
            prior = None  # the inputs changed since: a fresh attempt with the new inputs
        sent = prior if prior is not None else build_sent(run, case)
        self._posting.submit(case, sent, retrying=work.action == ActionKind.RETRY_FAILED)

    def _prime_active(self) -> None:
        """Jobs of earlier runs that are still active hold slots too."""
        run = self.run_context
        active: set[str] = set()
        for cid, entry in run.store.lockfile.cases.items():
            if entry.job is not None and entry.job.status not in TERMINAL_STATUSES:
                active.add(entry.job.pk)
                run.job_case[entry.job.pk] = cid
        run.slots.track_active(active)


def _unsent(entry: CaseEntry) -> Sent | None:
    """The attempt of an intent whose job POST never went out (stage ``upload``)."""
    assert entry.pending is not None
    try:
        sent = Sent.from_json(entry.pending.payload)
    except ValueError:
        return None
    return sent if sent.stage == Stage.UPLOAD else None
