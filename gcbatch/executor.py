"""``apply``: upload and submit every case exactly once, crash-safe and quota-aware.

The protocol (see ``shared/design-notes.md``, "Exactly-once submission"):

1. **Journal first.** Before any request that creates something (an upload, a job), an
   ``intent`` for the case is appended to the journal and fsynced. It names what will be
   sent (:class:`gcbatch.reconcile.Sent`): values, image URLs, and the upload filenames
   we chose, ``<case id>.gcb-<hash8>.<ext>`` (unique per attempt; the platform names the
   image it makes from an upload after the file, which is how reconciliation finds an
   in-doubt job). Upload pks and S3 upload ids are journalled as soon as the uploads
   exist and before any part is sent, so a re-run resumes a half-sent upload from the
   parts the server holds. The intent's *stage* becomes ``post`` only right before the
   job POST: an intent still at ``upload`` proves no job was requested.
2. **Never blind-retry a job POST.** The client raises :class:`InDoubtError` when a POST
   has no definite answer; the case is then reconciled (:mod:`gcbatch.reconcile`) before
   anything is resent: one unclaimed match is adopted, none means resubmit, several leave
   the case in doubt for the user.
3. **Quota-aware admission** (:mod:`gcbatch.admission`): by default no limit of our own
   (the server's "too many active jobs" refusal creates nothing and teaches us its cap);
   with ``max_active`` at most that many of our jobs active; a slot is refilled the moment a monitor thread sees a job end; "too many
   active jobs" waits; "out of credits" stops submitting (exit 4, "N submitted, M wait");
   "too many uploads" pauses uploads. A case's files are uploaded only when a slot is
   free or about to be (``lookahead``), because uploads expire and count against a quota.
4. **Checkpoints.** Every event is O(1) (a journal line); the lockfile is rewritten
   atomically every ``checkpoint_every`` events and at the end.

Threads: ``concurrency`` workers each carry one case from uploads to job POST; one
monitor polls the status of our active jobs (fast while a worker waits for a slot, slow
otherwise). Ctrl-C (:meth:`Executor.request_stop`): no new case starts, cases waiting for
a slot give up their slot wait, in-flight requests finish, the lockfile is checkpointed.
Nothing is ever lost by a harder stop either: the journal already holds every intent.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from gcbatch import admission as adm
from gcbatch.errors import (
    ApiError,
    DuplicateJobError,
    GcbatchError,
    InDoubtError,
    NotFoundError,
    OutOfCreditsError,
    RateLimitedError,
    RequestRejectedError,
    TooManyActiveJobsError,
    TooManyUploadsError,
    TransportError,
)
from gcbatch.lockfile import (
    TERMINAL_STATUSES,
    AlgorithmRef,
    CaseEntry,
    JobRecord,
    LockfileStore,
    utc_now,
)
from gcbatch.models import Algorithm, ArchiveItem, Job, Upload
from gcbatch.options import Targeting
from gcbatch.perf import frozen_instance
from gcbatch.plan import Plan
from gcbatch.reconcile import (
    STAGE_POST,
    STAGE_UPLOAD,
    Adopt,
    Ambiguous,
    NoJob,
    Reconciler,
    Sent,
    SentFile,
    SentInput,
    Wait,
    describe_jobs,
    find_existing,
)
from gcbatch.sources import Case, Source, split_name

__all__ = [
    "DEFAULT_CONCURRENCY",
    "ApplyOptions",
    "ApplySummary",
    "CaseOutcome",
    "Executor",
    "Progress",
    "Snapshot",
    "upload_name",
]

#: Workers carrying cases. At 20 ms per request, 16 POSTs in flight already keep a client
#: core busy (1,000 value-only jobs: CPU-bound, not latency-bound); 32 measured ~8 %
#: slower, the connection pool's per-request bookkeeping growing with its connections.
#: The platform runs 16 active jobs per user anyway; uploads are bounded separately.
DEFAULT_CONCURRENCY = 16
#: Files sent at the same time (each with a few parts in flight): bounds memory and
#: sockets whatever ``--concurrency`` is.
_MAX_TRANSFERS = 8
#: Cases whose files may be uploaded ahead of a free slot.
DEFAULT_LOOKAHEAD = 2
#: Poll up to this many active jobs with one GET each (in parallel); more, with the list.
_POLL_EACH_MAX = 32
#: The fastest status polling goes (for jobs that end within a second or so).
_POLL_FLOOR = 0.01
#: Until a first job of ours has ended (duration unknown), polls back off only to this.
_POLL_UNKNOWN_MAX = 2.0
#: How often a definitely-unsent job POST (429, connection refused) is tried again.
_MAX_UNSENT_RETRIES = 8


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class ApplyOptions:
    concurrency: int = DEFAULT_CONCURRENCY
    #: None: "auto" (learn the server's limit from its refusals); else never more of ours
    max_active: int | None = None
    targeting: Targeting = field(default_factory=Targeting)
    replace: bool = False
    keep_going: bool = False
    retry_failed: bool = False
    resubmit_in_doubt: bool = False
    #: seconds to wait for a validating job that may be an in-doubt case's
    reconcile_wait: float = 60.0
    #: status polling while a worker waits for a slot (grows to ``poll_max`` when idle)
    poll_min: float = 0.2
    poll_max: float = 5.0
    lookahead: int = DEFAULT_LOOKAHEAD
    #: the lockfile is rewritten after this many events, and at least every
    #: ``checkpoint_seconds`` while events happen (a rewrite is O(cases); events are O(1))
    checkpoint_every: int = 5000
    checkpoint_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        if self.max_active is not None and self.max_active < 1:
            raise ValueError("--max-active must be at least 1")


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one targeted case in this run.

    ``kind``: submitted | adopted | unchanged | failed | in_doubt | waiting | skipped.
    """

    case: str
    kind: str
    message: str = ""
    job_pk: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"case": self.case, "outcome": self.kind, "message": self.message,
                "job": self.job_pk}


@dataclass(frozen=True)
class Snapshot:
    """Progress counters at one moment (for the live display)."""

    total: int
    submitted: int
    adopted: int
    failed: int
    in_doubt: int
    uploading: int
    waiting_for_slot: int
    posting: int
    active_jobs: int
    #: None: no limit known (auto admission before any refusal)
    slot_limit: int | None
    bytes_uploaded: int
    bytes_total: int
    stopped_by_credits: bool
    stopping: bool

    @property
    def done(self) -> int:
        return self.submitted + self.adopted + self.failed + self.in_doubt


class Progress(Protocol):
    """Where the executor reports (``gcbatch.progress`` renders it)."""

    def update(self, snapshot: Snapshot) -> None: ...

    def log(self, message: str) -> None: ...


class _NullProgress:
    def update(self, snapshot: Snapshot) -> None:
        pass

    def log(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class ApplySummary:
    outcomes: tuple[CaseOutcome, ...]
    stopped_by_credits: bool = False
    interrupted: bool = False
    elapsed: float = 0.0
    bytes_uploaded: int = 0
    requests: int = 0

    def of(self, *kinds: str) -> tuple[CaseOutcome, ...]:
        return tuple(o for o in self.outcomes if o.kind in kinds)

    def counts(self) -> dict[str, int]:
        kinds = ("submitted", "adopted", "unchanged", "failed", "in_doubt", "waiting",
                 "skipped")
        counted = Counter(o.kind for o in self.outcomes)
        return {k: counted[k] for k in kinds}

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.stopped_by_credits:
            return 4
        if self.of("failed", "in_doubt"):
            return 1
        return 0

    def render(self) -> str:
        c = self.counts()
        parts = [f"{c['submitted']} submitted"]
        if c["adopted"]:
            parts.append(f"{c['adopted']} adopted (found on the server)")
        parts.append(f"{c['unchanged']} unchanged")
        if c["waiting"]:
            parts.append(f"{c['waiting']} wait")
        if c["skipped"]:
            parts.append(f"{c['skipped']} changed but kept (use --replace)")
        if c["failed"]:
            parts.append(f"{c['failed']} failed")
        if c["in_doubt"]:
            parts.append(f"{c['in_doubt']} in doubt")
        lines = [", ".join(parts) + f" ({self.elapsed:.1f} s)"]
        if self.stopped_by_credits:
            lines.append(
                f"stopped: you have run out of algorithm credits; {c['submitted']} submitted, "
                f"{c['waiting']} wait. Run apply again when credits are available: it "
                "submits exactly the cases that wait."
            )
        if self.interrupted:
            lines.append(f"interrupted: {c['waiting']} case(s) not submitted; "
                         "run apply again to continue")
        for outcome in self.of("failed", "in_doubt"):
            lines.append(f"  {outcome.kind.replace('_', ' ')}: {outcome.case}: {outcome.message}")
        skipped = self.of("skipped")
        for outcome in skipped[:20]:
            lines.append(f"  kept: {outcome.case}: {outcome.message}")
        if len(skipped) > 20:
            lines.append(f"  ... and {len(skipped) - 20} more changed case(s)")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": self.counts(),
            "stopped_by_credits": self.stopped_by_credits,
            "interrupted": self.interrupted,
            "elapsed_seconds": round(self.elapsed, 3),
            "bytes_uploaded": self.bytes_uploaded,
            "requests": self.requests,
            "exit_code": self.exit_code,
            "cases": [o.as_json() for o in sorted(self.outcomes, key=lambda o: o.case)],
        }


# --------------------------------------------------------------------------- helpers


_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def upload_name(case_id: str, socket: str, index: int, filename: str, attempt: str) -> str:
    """``<case tag>.gcb-<hash8><ext>``: findable, unique per attempt, extension kept.

    The platform names an image made from an upload after the uploaded file (and detects
    the format from the extension, ``.nii.gz`` included), so the name must end like the
    original. ``hash8`` depends on the attempt, the socket and the file's position, so
    every file of every attempt has its own name. At most 128 characters (the API's limit).
    """
    _, ext = split_name(filename)
    ext = ext[:24]
    digest = hashlib.sha256(f"{attempt}/{socket}/{index}".encode()).hexdigest()[:8]
    room = 128 - len(ext) - len(".gcb-") - 8
    tag = _TAG_UNSAFE.sub("_", case_id)[: max(1, min(64, room))]
    return f"{tag}.gcb-{digest}{ext}"


def _short(pk: str) -> str:
    return pk[:8] + "…" if len(pk) > 9 else pk


@dataclass(frozen=True)
class _Work:
    case: Case
    action: str  # submit | resubmit | retry_failed | in_doubt


class _StopCase(Exception):
    """Internal: this case ends now with the given outcome (already recorded)."""


# --------------------------------------------------------------------------- executor


class Executor:
    """Runs one apply over an open :class:`LockfileStore`. Thread-safe where it must be."""

    def __init__(
        self,
        client: Any,
        store: LockfileStore,
        algorithm: Algorithm,
        options: ApplyOptions,
        *,
        items: Mapping[str, ArchiveItem] | None = None,
        progress: Progress | None = None,
        uploader: Callable[..., Upload] | None = None,
        scratch_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.store = store
        self.algorithm = algorithm
        self.options = options
        self.items = dict(items or {})
        self.progress: Progress = progress or _NullProgress()
        self._uploader = uploader
        self._scratch = scratch_dir
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._state = adm.AdmissionState(max_active=options.max_active)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._outcomes: dict[str, CaseOutcome] = {}
        #: outcome kind -> number of cases (kept with _outcomes: snapshots are O(1))
        self._kind_counts: dict[str, int] = {}
        self._job_case: dict[str, str] = {}
        self._slot_waiters = 0
        self._preparing = 0
        self._uploading = 0
        self._posting = 0
        self._bytes_uploaded = 0
        self._bytes_total = 0
        self._total = 0
        self._failed_hard = False
        self._finished = 0  # cases done with (whatever the outcome)
        self._last_poll = 0.0
        #: when each job we created was created, and how long ended ones took (polling)
        self._started: dict[str, float] = {}
        self._durations: list[float] = []
        self._pollers: ThreadPoolExecutor | None = None
        self._transfers = threading.BoundedSemaphore(_MAX_TRANSFERS)
        #: the job list's length when last read, and jobs we created since (tail reads)
        self._list_count = 0
        self._created_since_count = 0
        self._reconciler = Reconciler.for_client(
            client, algorithm.pk, wait_timeout=options.reconcile_wait,
            poll_interval=min(1.0, max(0.1, options.reconcile_wait / 30)), sleep=sleep,
            clock=clock,
        )

    # -- control -----------------------------------------------------------------------

    def request_stop(self) -> None:
        """First Ctrl-C: start no new case, stop waiting for slots, finish what is in flight."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- bookkeeping ---------------------------------------------------------------------

    def _outcome(self, case: str, kind: str, message: str = "", job_pk: str | None = None) -> None:
        with self._cond:
            self._set_outcome(CaseOutcome(case, kind, message, job_pk))
        if kind in ("failed", "in_doubt"):
            self.progress.log(f"{kind.replace('_', ' ')}: {case}: {message}")

    def _set_outcome(self, outcome: CaseOutcome) -> None:
        """Record ``outcome`` (caller holds ``_cond``), keeping the per-kind counts."""
        old = self._outcomes.get(outcome.case)
        if old is not None:
            self._kind_counts[old.kind] -= 1
        self._outcomes[outcome.case] = outcome
        self._kind_counts[outcome.kind] = self._kind_counts.get(outcome.kind, 0) + 1

    def snapshot(self) -> Snapshot:
        with self._cond:
            kinds = self._kind_counts
            now = self._clock()
            return Snapshot(
                total=self._total,
                submitted=kinds.get("submitted", 0),
                adopted=kinds.get("adopted", 0),
                failed=kinds.get("failed", 0),
                in_doubt=kinds.get("in_doubt", 0),
                uploading=self._uploading,
                waiting_for_slot=self._slot_waiters,
                posting=self._posting,
                active_jobs=len(self._state.active),
                slot_limit=adm.slot_limit(self._state, now),
                bytes_uploaded=self._bytes_uploaded,
                bytes_total=self._bytes_total,
                stopped_by_credits=self._state.stopped,
                stopping=self._stop.is_set(),
            )

    def _claimed(self) -> frozenset[str]:
        lockfile = self.store.lockfile
        pks: set[str] = set()
        for entry in lockfile.cases.values():
            if entry.job is not None:
                pks.add(entry.job.pk)
            pks.update(j.pk for j in entry.history)
        return frozenset(pks)

    def _claimed_by(self) -> dict[str, str]:
        owners: dict[str, str] = {}
        for cid, entry in self.store.lockfile.cases.items():
            if entry.job is not None:
                owners[entry.job.pk] = cid
            for old in entry.history:
                owners.setdefault(old.pk, cid)
        return owners

    def _record_job(self, case_id: str, job: Job, fingerprint: str, inputs: Mapping[str, str],
                    *, adopted: bool) -> None:
        record = JobRecord(pk=job.pk, api_url=job.api_url, status=job.status,
                           submitted_at=utc_now(), fingerprint=fingerprint, inputs=dict(inputs))
        # outcomes need not wait for the disk: lost only in a machine crash, the intent
        # they close is then reconciled by the next run (intents are always durable)
        if adopted:
            self.store.adopted(case_id, record, durable=False)
        else:
            self.store.submitted(case_id, record, durable=False)
        with self._cond:
            self._job_case[job.pk] = case_id

    # -- the run -------------------------------------------------------------------------

    def run(self, cases: Sequence[Case], plan: Plan) -> ApplySummary:
        """Execute ``plan`` for the targeted ``cases`` (already preflighted)."""
        started = self._clock()
        by_id = {c.id: c for c in cases}
        targeting = self.options.targeting
        work: list[_Work] = []
        unchanged: dict[str, CaseOutcome] = {}
        everything = targeting.everything
        for action in plan.actions:
            if action.kind == "unchanged":  # settled cases have no Case: see expand
                if everything or targeting.matches(action.case_id):
                    unchanged[action.case_id] = frozen_instance(CaseOutcome, {
                        "case": action.case_id, "kind": "unchanged", "message": action.reason,
                        "job_pk": action.job_pk})
                continue
            case = by_id.get(action.case_id)
            if case is None or not targeting.matches(case.id):
                continue
            if action.kind == "submit":
                work.append(_Work(case, "submit"))
            elif action.kind == "resubmit":
                if self.options.replace:
                    work.append(_Work(case, "resubmit"))
                else:
                    self._outcome(case.id, "skipped", action.reason, action.job_pk)
            elif action.kind == "retry_failed":
                work.append(_Work(case, "retry_failed"))
            elif action.kind == "in_doubt":
                work.append(_Work(case, "in_doubt"))
            elif action.kind == "blocked":
                self._outcome(case.id, "failed", action.reason)
        with self._cond:  # (no worker runs yet; the lock keeps the outcome map's rule)
            # what _set_outcome does, at once (one action per case: no id seen before)
            self._outcomes.update(unchanged)
            self._kind_counts["unchanged"] = \
                self._kind_counts.get("unchanged", 0) + len(unchanged)
        self._total = len(work)
        self._prime_active()
        monitor = threading.Thread(target=self._monitor, name="gcbatch-monitor", daemon=True)
        monitor.start()
        try:
            self._run_work(work)
        finally:
            self._done.set()
            with self._cond:
                self._cond.notify_all()
            monitor.join(timeout=30)
            if self._pollers is not None:
                self._pollers.shutdown(wait=True)
            self.store.checkpoint()
            self.progress.update(self.snapshot())
        outcomes = tuple(self._outcomes[c] for c in sorted(self._outcomes))
        return ApplySummary(
            outcomes=outcomes,
            stopped_by_credits=self._state.stopped,
            interrupted=self._stop.is_set() and not self._state.stopped
            and not self._failed_hard,
            elapsed=self._clock() - started,
            bytes_uploaded=self._bytes_uploaded,
            requests=int(getattr(self.client, "requests_sent", 0)),
        )

    def _run_work(self, work: list[_Work]) -> None:
        if not work:
            return
        pool = ThreadPoolExecutor(max_workers=self.options.concurrency,
                                  thread_name_prefix="gcbatch-worker")
        try:
            for w in work:
                pool.submit(self._process_safely, w)
            last_checkpoint = self._clock()
            last_update = -1e9
            # wait in short slices so the main thread stays responsive to Ctrl-C; workers
            # notify on every event, but the display needs no more than ~10 updates a second
            while True:
                with self._cond:
                    if self._finished >= len(work):
                        break
                    self._cond.wait(timeout=0.1)
                if self._clock() - last_update < 0.1:
                    continue
                last_update = self._clock()
                self.progress.update(self.snapshot())
                if self._clock() - last_checkpoint >= self.options.checkpoint_seconds:
                    self.store.checkpoint()
                    last_checkpoint = self._clock()
        finally:
            pool.shutdown(wait=True, cancel_futures=False)

    def _process_safely(self, work: _Work) -> None:
        case = work.case
        try:
            self._process(work)
        except _StopCase:
            pass
        except GcbatchError as exc:
            self._outcome(case.id, "failed", str(exc))
            self._after_failure()
        except Exception as exc:  # a bug: keep the others going, but say so loudly
            self._outcome(case.id, "failed", f"internal error: {type(exc).__name__}: {exc}")
            self._after_failure()
        finally:
            with self._cond:
                if case.id not in self._outcomes:
                    self._set_outcome(CaseOutcome(case.id, "waiting", "not submitted"))
                self._finished += 1
                self._cond.notify_all()

    def _after_failure(self) -> None:
        if not self.options.keep_going:
            self._failed_hard = True
            self.request_stop()

    # -- start-up: jobs of earlier runs that still hold slots ------------------------------

    def _prime_active(self) -> None:
        active: set[str] = set()
        for cid, entry in self.store.lockfile.cases.items():
            if entry.job is not None and entry.job.status not in TERMINAL_STATUSES:
                active.add(entry.job.pk)
                self._job_case[entry.job.pk] = cid
        if active:
            with self._cond:
                self._state = adm.track_active(self._state, active)

    # -- monitor -------------------------------------------------------------------------

    def _monitor(self) -> None:
        """Poll our active jobs while a worker waits for a slot; back off while none ends.

        Nobody waiting → no polling at all (statuses are ``status``'s business; apply only
        needs them to refill slots). The pace follows the jobs' observed duration: a 20th
        of it, between ``_POLL_FLOOR`` and ``poll_max`` (jobs of seconds are refilled
        within a few tens of milliseconds; jobs of minutes cost a GET per job every few
        seconds), growing by half while nothing ends.
        """
        interval = self.options.poll_min
        for _ in range(100_000_000):
            with self._cond:
                if self._done.is_set():
                    return
                if self._slot_waiters == 0 or not self._state.active:
                    # sleep until a worker starts waiting for a slot (it notifies)
                    self._cond.wait(timeout=0.5)
                    continue
                active = sorted(self._state.active)
            wait = self._last_poll + interval - self._clock()
            if wait > 0:
                self._done.wait(min(wait, self.options.poll_max))
                continue
            self._last_poll = self._clock()
            ended = self._poll(active)
            interval = self._next_interval(ended, interval)

    def _median_duration(self, quantile: float = 0.5) -> float | None:
        """How long our jobs take, as observed (else the server's average, else None).

        Observed durations run from the POST to the poll that saw the end, so they are
        never shorter than the truth; a low quantile tracks it from above (the due-time
        prediction uses 0.1, or slow polling would keep predicting slow jobs)."""
        with self._cond:
            seen = sorted(self._durations[-50:])
        if seen:
            return seen[min(len(seen) - 1, int(len(seen) * quantile))]
        return self.algorithm.average_duration or None

    def _next_interval(self, ended: int, interval: float) -> float:
        """Sleep until the oldest active job is due to end, then poll briskly (backing off
        while it is overdue). Without any duration yet: start fast and grow gently, up to
        ``_POLL_UNKNOWN_MAX``."""
        median = self._median_duration()
        if median is None:
            if ended:
                return self.options.poll_min
            return min(_POLL_UNKNOWN_MAX, self.options.poll_max, interval * 1.25)
        low, high = self._poll_bounds()
        with self._cond:
            starts = [self._started[pk] for pk in self._state.active if pk in self._started]
        if starts:
            quick = self._median_duration(0.1) or median
            until_due = min(starts) + quick - self._clock()
            if until_due > 0:
                return max(low, min(self.options.poll_max, until_due))
        return low if ended else min(high, max(low, interval * 1.5))

    def _statuses(self, pks: list[str]) -> dict[str, str]:
        """Statuses of ``pks``: one request for the tail of the algorithm's job list
        (oldest first, so the jobs we just made are at its end), then one GET per job the
        tail did not hold (jobs from an earlier run), in parallel."""
        statuses = self._tail_statuses(set(pks))
        missing = [pk for pk in pks if pk not in statuses]
        if len(missing) > _POLL_EACH_MAX:
            wanted = set(missing)
            with contextlib.suppress(ApiError, TransportError):
                for job in self.client.list_jobs(self.algorithm.pk):
                    if job.pk in wanted:
                        statuses[job.pk] = job.status
            return statuses
        if missing:

            def one(pk: str) -> tuple[str, str | None]:
                try:
                    return pk, self.client.get_job(pk).status
                except (ApiError, TransportError):
                    return pk, None

            statuses.update(
                {pk: st for pk, st in self._poll_pool().map(one, missing) if st is not None})
        return statuses

    def _tail_statuses(self, wanted: set[str]) -> dict[str, str]:
        limit = min(1000, max(32, 2 * len(wanted)))
        params = {"algorithm_image__algorithm": self.algorithm.pk, "limit": limit}
        found: dict[str, str] = {}
        for _ in range(2):  # a second try when our estimate of the list's length was off
            with self._cond:
                estimate = self._list_count + self._created_since_count
            offset = max(0, estimate - limit)
            try:
                page = self.client.get_json("algorithms/jobs/", {**params, "offset": offset})
            except (ApiError, TransportError):
                return found
            if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                return found
            count = int(page.get("count") or 0)
            with self._cond:
                self._list_count = count
                self._created_since_count = 0
            for item in page["results"]:
                if isinstance(item, dict) and item.get("pk") in wanted:
                    found[str(item["pk"])] = str(item.get("status") or "")
            if len(found) == len(wanted) or offset + len(page["results"]) >= count:
                return found  # all found, or this was the tail: the rest are older
        return found

    def _poll_pool(self) -> ThreadPoolExecutor:
        if self._pollers is None:
            self._pollers = ThreadPoolExecutor(max_workers=_POLL_EACH_MAX,
                                               thread_name_prefix="gcbatch-poll")
        return self._pollers

    def _poll_bounds(self) -> tuple[float, float]:
        """(interval while jobs are due, the most it backs off to while they are overdue):
        a 40th and a 20th of the jobs' duration, within [_POLL_FLOOR, poll_max]."""
        median = self._median_duration()
        if median is None:
            return self.options.poll_min, self.options.poll_max
        low = max(_POLL_FLOOR, min(self.options.poll_min, median / 40))
        return low, max(low, min(self.options.poll_max, median / 20))

    def _poll(self, pks: list[str]) -> int:
        """Refresh our active jobs' statuses; free the slots of those that ended."""
        statuses = self._statuses(pks)
        updates: list[tuple[str, str, str]] = []
        ended: set[str] = set()
        lockfile = self.store.lockfile
        for pk, status in statuses.items():
            case_id = self._job_case.get(pk)
            entry = lockfile.cases.get(case_id) if case_id is not None else None
            if case_id is not None and entry is not None and entry.job is not None \
                    and entry.job.pk == pk and entry.job.status != status:
                updates.append((case_id, pk, status))
            if status in TERMINAL_STATUSES:
                ended.add(pk)
        if updates:
            self.store.statuses(updates)
        if ended:
            now = self._clock()
            with self._cond:
                self._state = adm.jobs_ended(self._state, ended)
                for pk in ended:
                    started = self._started.pop(pk, None)
                    if started is not None:
                        self._durations.append(now - started)
                self._cond.notify_all()
        return len(ended)

    # -- one case ------------------------------------------------------------------------

    def _process(self, work: _Work) -> None:
        case = work.case
        if self.stopping:
            raise self._stop_case(case, "waiting", "not started (stopping)")
        entry = self.store.entry(case.id) or CaseEntry()
        prior: Sent | None = None  # an earlier attempt to finish (its uploads are reused)
        if work.action == "in_doubt":
            prior = self._reconcile_pending(case, entry)
            if prior is None:
                return  # adopted, or left in doubt
        if prior is not None and prior.attempt and entry.pending is not None \
                and entry.pending.fingerprint != case.fingerprint:
            prior = None  # the inputs changed since: a fresh attempt with the new inputs
        sent = prior if prior is not None else self._build_sent(case)
        self._submit(case, sent, retrying=work.action == "retry_failed")

    def _stop_case(self, case: Case, kind: str, message: str) -> _StopCase:
        self._outcome(case.id, kind, message)
        return _StopCase()

    def _reconcile_pending(self, case: Case, entry: CaseEntry) -> Sent | None:
        """A case in doubt from an earlier run: adopt its job, or return what to resend."""
        intent = entry.pending
        assert intent is not None
        try:
            sent = Sent.from_json(intent.payload)
        except ValueError:
            sent = None
        if sent is None:
            # an intent we cannot read (another tool/version): never guess
            if self.options.resubmit_in_doubt:
                return self._build_sent(case)
            self._outcome(case.id, "in_doubt", "an earlier submission's record is "
                          "unreadable; check the server, then use --resubmit-in-doubt")
            return None
        verdict = self._reconciler.reconcile(sent, self._claimed, should_stop=lambda: self.stopping)
        if isinstance(verdict, Adopt):
            self._record_job(case.id, verdict.job, intent.fingerprint, intent.inputs,
                             adopted=True)
            if verdict.job.status not in TERMINAL_STATUSES:
                with self._cond:
                    self._state = adm.track_active(self._state, {verdict.job.pk})
            self._outcome(case.id, "adopted", f"job {verdict.job.pk}: {verdict.reason}",
                          verdict.job.pk)
            return None
        if isinstance(verdict, NoJob):
            self.progress.log(f"{case.id}: earlier submission made no job ({verdict.reason}); "
                              "sending it again")
            return sent
        if self.options.resubmit_in_doubt:
            self.progress.log(f"{case.id}: still in doubt ({verdict.reason}); resubmitting "
                              "because of --resubmit-in-doubt")
            return self._build_sent(case)
        jobs = verdict.jobs if isinstance(verdict, (Ambiguous, Wait)) else ()
        self._outcome(case.id, "in_doubt",
                      f"{verdict.reason}: {describe_jobs(jobs)}; decide, then run apply with "
                      "--resubmit-in-doubt to send it again")
        return None

    # -- building what to send -----------------------------------------------------------

    def _build_sent(self, case: Case) -> Sent:
        attempt = secrets.token_hex(4)
        sockets = {s.slug: s for i in self.algorithm.interfaces for s in i.inputs}
        inputs: list[SentInput] = []
        for source in case.inputs:
            socket = sockets.get(source.socket)
            super_kind = socket.super_kind if socket is not None else ""
            inputs.append(self._sent_input(case, source, super_kind, attempt))
        return Sent(attempt=attempt, inputs=tuple(inputs), stage=STAGE_UPLOAD)

    def _sent_input(self, case: Case, source: Source, super_kind: str, attempt: str) -> SentInput:
        kind = source.kind
        if kind in ("value", "json"):
            return SentInput(source.socket, "value", value=source.value)
        if kind == "image":
            return SentInput(source.socket, "image", image=source.image_url or "")
        if kind in ("file", "files"):
            files = tuple(
                SentFile(name=upload_name(case.id, source.socket, i, p.name, attempt),
                         path=str(p), size=_size(p))
                for i, p in enumerate(source.paths)
            )
            return SentInput(source.socket, "upload" if super_kind == "File" else "uploads",
                             files=files)
        if kind == "archive_item":
            item = self.items.get(source.item_pk or "")
            value = item.value_for(source.item_socket or source.socket) if item else None
            if value is None:
                raise RequestRejectedError(
                    f"archive item {source.item_pk} has no value for "
                    f"{source.item_socket or source.socket}", status=0)
            if super_kind == "Image" or value.image:
                return SentInput(source.socket, "image", image=value.image or "")
            if super_kind == "File" or value.file:
                path = self._download_item_file(case, value.file or "")
                name = upload_name(case.id, source.socket, 0, path.name, attempt)
                return SentInput(source.socket, "upload",
                                 files=(SentFile(name=name, path=str(path), size=_size(path)),))
            return SentInput(source.socket, "value", value=value.value)
        raise RequestRejectedError(f"unknown source kind {kind!r}", status=0)

    def _download_item_file(self, case: Case, url: str) -> Path:
        """A File value cannot be linked to a job: download it, to re-upload it."""
        base = self._scratch or Path(tempfile.gettempdir())
        target_dir = base / "archive-files" / case.id
        target_dir.mkdir(parents=True, exist_ok=True)
        name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "file"
        target = target_dir / name
        if not target.exists():
            self.client.download(url, target)
        return target

    # -- uploads -------------------------------------------------------------------------

    def _acquire_prepare(self) -> bool:
        """Wait until a case may start uploading: uploads allowed, and a slot free or soon."""
        with self._cond:
            rounds = 0
            while True:
                if self._stop.is_set() or self._state.stopped:
                    return False
                now = self._clock()
                room = adm.free_slots(self._state, now) + self.options.lookahead
                if adm.may_upload(self._state, now) and self._preparing < room:
                    self._preparing += 1
                    return True
                rounds += 1
                self._cond.wait(timeout=0.1 if rounds < 100 else 0.5)

    def _release_prepare(self) -> None:
        with self._cond:
            self._preparing = max(0, self._preparing - 1)
            self._cond.notify_all()

    def _journal_intent(self, case: Case, sent: Sent) -> None:
        self.store.intent(
            case.id, case.fingerprint, inputs=case.digests(),
            uploads=[f.name for f in sent.uploads], payload=sent.as_json(),
        )

    def _ensure_uploads(self, case: Case, sent: Sent) -> Sent:
        """Every file of ``sent`` uploaded and completed; resumes what an earlier run began."""
        files = [(item.socket, i, f) for item in sent.inputs for i, f in enumerate(item.files)]
        # 1. the state of uploads an earlier attempt created
        existing: dict[str, Upload | None] = {}
        resumable: set[str] = set()
        for _, _, f in files:
            if f.upload_pk:
                try:
                    found = self.client.get_upload(f.upload_pk)
                except NotFoundError:
                    found = None  # consumed or expired: make a new one
                if found is not None and found.status == Upload.ABORTED:
                    found = None
                existing[f.upload_pk] = found
                if found is not None and not found.is_completed:
                    resumable.add(f.upload_pk)
        # 2. create the missing uploads, then journal their pks BEFORE sending any part
        created = False
        for socket, index, f in files:
            if f.upload_pk and existing.get(f.upload_pk) is not None:
                continue
            created_upload = self._create_upload(f.name)
            existing[created_upload.pk] = created_upload
            upload = created_upload
            sent = sent.with_file(socket, index, replace(
                f, upload_pk=upload.pk, s3_upload_id=upload.s3_upload_id))
            created = True
        if created:
            self._journal_intent(case, sent)
        # 3. send parts (resuming what the server already holds) and complete
        for item in sent.inputs:
            for f in item.files:
                current = existing.get(f.upload_pk)
                assert current is not None
                if current.is_completed:
                    continue
                if self.stopping:
                    raise self._stop_case(case, "waiting", "stopped while uploading; "
                                          "apply resumes the upload next time")
                self._transfer(current, Path(f.path), f.size,
                               resume=f.upload_pk in resumable)
        return sent

    def _create_upload(self, filename: str) -> Upload:
        rounds = 0
        while True:
            rounds += 1
            try:
                upload: Upload = self.client.create_upload(filename)
            except TooManyUploadsError:
                with self._cond:
                    self._state = adm.uploads_refused(self._state, self._clock())
                    pause = self._state.upload_pause
                self.progress.log(f"too many uploads on the server; pausing uploads {pause:.0f} s")
                if rounds > 50 or not self._wait_upload_allowed():
                    raise
                continue
            with self._cond:
                self._state = adm.uploads_succeeded(self._state)
            return upload

    def _wait_upload_allowed(self) -> bool:
        with self._cond:
            for _ in range(100_000):
                if self._stop.is_set() or self._state.stopped:
                    return False
                if adm.may_upload(self._state, self._clock()):
                    return True
                self._cond.wait(timeout=0.2)
        return False

    def _transfer(self, upload: Upload, path: Path, size: int, *, resume: bool) -> None:
        # bounded: each transfer sends a few parts at once, each streamed in 1 MiB chunks
        with self._transfers:
            self._transfer_now(upload, path, size, resume=resume)

    def _transfer_now(self, upload: Upload, path: Path, size: int, *, resume: bool) -> None:
        with self._cond:
            self._uploading += 1
            self._bytes_total += size

        def on_bytes(n: int) -> None:
            with self._cond:
                self._bytes_uploaded += n

        try:
            if self._uploader is not None:
                self._uploader(self.client, upload, path, resume=resume, progress=on_bytes)
            else:
                from gcbatch.uploads import Uploader

                uploader = Uploader(self.client, part_size=part_size_for(size))
                uploader.send(upload, path, resume=resume, progress=on_bytes)
        finally:
            with self._cond:
                self._uploading -= 1

    # -- the job POST ----------------------------------------------------------------------

    def _job_inputs(self, sent: Sent) -> list[dict[str, Any]]:
        body: list[dict[str, Any]] = []
        for item in sent.inputs:
            if item.kind == "value":
                body.append({"interface": item.socket, "value": item.value})
            elif item.kind == "image":
                body.append({"interface": item.socket, "image": item.image})
            elif item.kind == "uploads":
                body.append({"interface": item.socket, "user_uploads": [
                    self.client.url(f"uploads/{f.upload_pk}/") for f in item.files]})
            else:
                body.append({"interface": item.socket,
                             "user_upload": self.client.url(f"uploads/{item.files[0].upload_pk}/")})
        return body

    def _reserve_slot(self) -> bool:
        with self._cond:
            self._slot_waiters += 1
            self._cond.notify_all()  # wakes the monitor: someone needs a slot
            try:
                rounds = 0
                while True:
                    if self._stop.is_set() or self._state.stopped:
                        return False
                    now = self._clock()
                    if adm.may_submit(self._state, now):
                        self._state = adm.reserve(self._state, now)
                        return True
                    rounds += 1
                    self._cond.wait(timeout=0.1 if rounds < 100 else 0.5)
            finally:
                self._slot_waiters -= 1

    def _submit(self, case: Case, sent: Sent, *, retrying: bool) -> None:
        # prepared[0]: this case holds an "uploading ahead of a slot" token
        prepared = [False]
        try:
            if sent.has_uploads:
                if not self._acquire_prepare():
                    raise self._stop_case(case, "waiting", "not submitted (stopped)")
                prepared[0] = True
                self._journal_intent(case, sent.at_stage(STAGE_UPLOAD))
                sent = self._ensure_uploads(case, sent)
            self._post_until_done(case, sent, retrying=retrying, prepared=prepared)
        finally:
            if prepared[0]:
                self._release_prepare()

    def _post_until_done(self, case: Case, sent: Sent, *, retrying: bool,
                         prepared: list[bool]) -> None:
        unsent_retries = 0
        for _ in range(10_000):
            if not self._reserve_slot():
                if self._state.stopped and sent.has_uploads:
                    # credits come back in weeks, uploads expire in a day: let them go
                    self.store.rejected(case.id, "out of algorithm credits")
                # on Ctrl-C the intent stays (stage "upload": certainly no job), so the
                # next run reuses these uploads without asking the server anything
                raise self._stop_case(case, "waiting", "not submitted ("
                                      + ("out of credits" if self._state.stopped else "stopped")
                                      + ")")
            if prepared[0]:
                # the slot is ours now: this case no longer counts as "uploaded ahead"
                self._release_prepare()
                prepared[0] = False
            posting = sent.at_stage(STAGE_POST)
            self._journal_intent(case, posting)
            with self._cond:
                self._posting += 1
            try:
                job = self.client.create_job(self.algorithm.api_url, self._job_inputs(posting))
            except TooManyActiveJobsError:
                self._count_posting(-1)
                with self._cond:
                    self._state = adm.refused_too_many_active(self._state, self._clock())
                    self._cond.notify_all()
                continue
            except OutOfCreditsError:
                self._count_posting(-1)
                with self._cond:
                    first = not self._state.stopped
                    self._state = adm.credits_exhausted(self._state)
                    self._cond.notify_all()
                self.store.rejected(case.id, "out of algorithm credits")
                if first:
                    self.progress.log("out of algorithm credits: no more jobs will be submitted")
                raise self._stop_case(case, "waiting", "not submitted (out of credits)") from None
            except (RateLimitedError, TransportError) as exc:
                # definitely not created: try again after a pause, a few times
                self._count_posting(-1)
                self._release_slot()
                unsent_retries += 1
                if unsent_retries > _MAX_UNSENT_RETRIES:
                    self.store.rejected(case.id, str(exc))
                    raise
                delay = getattr(exc, "retry_after", None) or min(30.0, 0.5 * 2 ** unsent_retries)
                self._sleep(delay)
                continue
            except DuplicateJobError:
                self._count_posting(-1)
                self._release_slot()
                self._adopt_duplicate(case, posting, retrying=retrying)
                return
            except InDoubtError as exc:
                self._count_posting(-1)
                with self._cond:
                    self._state = adm.post_in_doubt(self._state, case.id)
                outcome = self._reconcile_now(case, posting, str(exc))
                if outcome is None:
                    return
                sent = outcome
                continue
            except (RequestRejectedError, ApiError) as exc:
                self._count_posting(-1)
                self._release_slot()
                self.store.rejected(case.id, str(exc))
                raise
            self._count_posting(-1)
            with self._cond:
                self._state = adm.job_created(self._state, job.pk)
                self._started[job.pk] = self._clock()
                self._created_since_count += 1
                self._cond.notify_all()
            self._record_job(case.id, job, case.fingerprint, case.digests(), adopted=False)
            self._outcome(case.id, "submitted", f"job {job.pk}", job.pk)
            return
        raise RequestRejectedError(f"{case.id}: gave up submitting", status=0)

    def _count_posting(self, delta: int) -> None:
        with self._cond:
            self._posting += delta

    def _release_slot(self) -> None:
        with self._cond:
            self._state = adm.post_rejected(self._state)
            self._cond.notify_all()

    def _reconcile_now(self, case: Case, sent: Sent, why: str) -> Sent | None:
        """In this run, right after a POST without a definite answer."""
        self.progress.log(f"{case.id}: {why}; looking for the job on the server")
        # a request the server is still processing may commit a moment later
        self._sleep(0.5)
        try:
            verdict = self._reconciler.reconcile(sent, self._claimed, refresh=True,
                                                 recent=True, should_stop=lambda: False)
        except (ApiError, TransportError) as exc:
            with self._cond:
                self._state = adm.resolve_in_doubt(self._state, case.id, None)
                self._cond.notify_all()
            self._outcome(case.id, "in_doubt", f"{why}; the server could not be asked ({exc}); "
                          "the next apply reconciles it")
            return None
        if isinstance(verdict, Adopt):
            job = verdict.job
            self._record_job(case.id, job, case.fingerprint, case.digests(), adopted=True)
            with self._cond:
                self._state = adm.resolve_in_doubt(
                    self._state, case.id, job.pk, job_active=job.status not in TERMINAL_STATUSES)
                self._cond.notify_all()
            self._outcome(case.id, "submitted", f"job {job.pk} (found after: {why})", job.pk)
            return None
        with self._cond:
            self._state = adm.resolve_in_doubt(self._state, case.id, None)
            self._cond.notify_all()
        if isinstance(verdict, NoJob):
            self.progress.log(f"{case.id}: no job was made ({verdict.reason}); sending again")
            if sent.has_uploads:
                return self._ensure_uploads(case, sent)
            return sent
        if self.options.resubmit_in_doubt:
            return self._ensure_uploads(case, self._build_sent(case))
        jobs = verdict.jobs if isinstance(verdict, (Ambiguous, Wait)) else ()
        self._outcome(case.id, "in_doubt",
                      f"{verdict.reason}: {describe_jobs(jobs)}; run apply again later, or "
                      "decide and use --resubmit-in-doubt")
        return None

    def _adopt_duplicate(self, case: Case, sent: Sent, *, retrying: bool) -> None:
        """"A result for these inputs already exists": find that job; never a second one."""
        jobs = self._reconciler.jobs(refresh=True)
        free, owned = find_existing(sent, jobs, self._claimed_by())
        entry = self.store.entry(case.id)
        current = entry.job.pk if entry is not None and entry.job is not None else None
        if len(free) == 1:
            job = free[0]
            self._record_job(case.id, job, case.fingerprint, case.digests(), adopted=True)
            self._outcome(case.id, "adopted", f"job {job.pk} already had these inputs", job.pk)
            return
        own = [j for j, owner in owned if owner == case.id]
        if own and not retrying and not (len(own) == 1 and own[0].pk == current):
            job = own[-1]
            self._record_job(case.id, job, case.fingerprint, case.digests(), adopted=True)
            self._outcome(case.id, "adopted",
                          f"job {job.pk} from this case's history had these inputs", job.pk)
            return
        if retrying and own:
            message = ("the server refuses to run identical value inputs again (it keeps one "
                       f"job per set of inputs, even a failed one: {_short(own[-1].pk)})")
        elif owned:
            others = ", ".join(sorted({owner for _, owner in owned}))
            message = f"the server already has a job with exactly these inputs, owned by {others}"
        elif free:
            message = f"several jobs already have these inputs: {describe_jobs(free)}"
        else:
            message = ("the server says a job with these inputs exists, but it is not visible "
                       "to you (another user's?)")
        self.store.rejected(case.id, message)
        self._outcome(case.id, "failed", message)
        self._after_failure()


def part_size_for(size: int) -> int:
    """Parts of 5-32 MiB, aiming at 8 or more parts so an interrupted upload resumes well.

    gcapi uses 32 MiB parts; for files under 256 MiB smaller parts mean less to send again
    after a crash, at the price of a few more requests.
    """
    mib = 1024 * 1024
    return max(5 * mib, min(32 * mib, -(-size // 8)))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def iter_targeted(cases: Iterable[Case], targeting: Targeting) -> list[Case]:
    return [c for c in cases if targeting.matches(c.id)]


def algorithm_ref(algorithm: Algorithm) -> AlgorithmRef:
    return AlgorithmRef(slug=algorithm.slug, pk=algorithm.pk, api_url=algorithm.api_url)



# --------------------------------------------------------------------------- entry point


#: Plan actions after which apply sends something (``resubmit`` too, with ``--replace``).
_SENDING = frozenset({"submit", "retry_failed", "in_doubt"})


def refresh_locked_statuses(client: Any, store: LockfileStore, algorithm_pk: str) -> int:
    """Bring the lockfile's job statuses up to date with one paginated list (GETs only).

    Only when some locked job is not known to have ended: a finished study costs nothing.
    Returns the number of status changes journalled.
    """
    lockfile = store.lockfile
    open_jobs = {e.job.pk: cid for cid, e in lockfile.cases.items()
                 if e.job is not None and e.job.status not in TERMINAL_STATUSES}
    if not open_jobs:
        return 0
    updates: list[tuple[str, str, str]] = []
    for job in client.list_jobs(algorithm_pk):
        case_id = open_jobs.get(job.pk)
        if case_id is None:
            continue
        entry = lockfile.cases.get(case_id)
        if entry is not None and entry.job is not None and entry.job.status != job.status:
            updates.append((case_id, job.pk, job.status))
    if updates:
        store.statuses(updates)  # one journal write and one fsync for all of them
    return len(updates)


def apply_manifest(
    manifest_path: Path,
    session: Any,
    options: ApplyOptions,
    *,
    progress: Progress | None = None,
    on_executor: Callable[[Executor], None] | None = None,
    manifest: Any = None,
) -> ApplySummary:
    """``gcbatch apply``: load, lock, pre-flight, plan, execute. Raises GcbatchErrors.

    The lockfile is locked (and checked: corrupt, foreign server or algorithm) before the
    first request, so a second concurrent apply or a wrong lockfile fails having sent
    nothing. Pre-flight problems fail before the first upload. ``on_executor`` receives
    the executor before it runs (the CLI wires Ctrl-C to :meth:`Executor.request_stop`).
    ``manifest``: the loaded manifest, when the caller has it (loading is not free).
    """
    from gcbatch.hashing import FileHasher, default_cache_path
    from gcbatch.manifest import load_manifest
    from gcbatch.perf import gc_frozen, gc_paused
    from gcbatch.plan import ServerView, make_plan, settled_fingerprints
    from gcbatch.preflight import run_preflight
    from gcbatch.sources import expand

    if manifest is None:  # the CLI passes the one it loaded already (for its server:)
        manifest = load_manifest(manifest_path)
    store = LockfileStore.open(session.lockfile, server=session.server,
                               algorithm=AlgorithmRef(manifest.algorithm),
                               checkpoint_every=options.checkpoint_every)
    try:
        try:
            algorithm: Algorithm | None = session.client.get_algorithm(manifest.algorithm)
        except NotFoundError:
            algorithm = None
        if algorithm is None:
            run_preflight((), None, manifest.algorithm)
            raise AssertionError("unreachable: preflight raises for a missing algorithm")
        if (store.lockfile.algorithm.pk, store.lockfile.algorithm.api_url) != (
                algorithm.pk, algorithm.api_url):
            store.set_algorithm(algorithm_ref(algorithm))
        # 100,000 cases: expansion, preflight and plan hold millions of live objects;
        # the cyclic GC would walk them all again and again (see gcbatch.perf)
        with gc_paused():
            archive_items, items_by_pk = fetch_archive_items(session.client, manifest)
            if options.retry_failed:  # which jobs failed is the server's news
                refresh_locked_statuses(session.client, store, algorithm.pk)
            hasher = FileHasher(default_cache_path(manifest.path))
            # cases still locked as they are come back as ids only: see expand's `settled`
            expansion = expand(manifest, archive_items=archive_items, hasher=hasher,
                               settled=settled_fingerprints(
                                   store.lockfile, retry_failed=options.retry_failed))
            hasher.save()
            targeting = options.targeting
            targeting.check_known(expansion.case_ids)
            targeted = iter_targeted(expansion.cases, targeting)
            settled = [cid for cid in expansion.settled if targeting.matches(cid)]
            # no interfaces in the view: a locked job stays valid when the algorithm's
            # interfaces change later; what will be sent is checked by the preflight below
            plan = make_plan(targeted, store.lockfile, ServerView(), settled=settled,
                             algorithm=algorithm.slug, retry_failed=options.retry_failed)
            # Pre-flight (and explicit archive items) only for the cases apply will send: a
            # locked case is not sent again, and checking 100,000 of them on every re-apply
            # would be most of its time. The duplicate-values check still sees every case.
            by_id = {c.id: c for c in targeted}
            to_send = [by_id[a.case_id] for a in plan.actions
                       if a.kind in _SENDING or (a.kind == "resubmit" and options.replace)]
            fetch_item_sources(session.client, to_send, items_by_pk)
            run_preflight(to_send, algorithm, manifest.algorithm, items=items_by_pk,
                          all_cases=targeted, locked=store.lockfile.cases)
            if to_send and not options.retry_failed:
                # which earlier jobs still hold active-job slots (nothing to send: no need)
                refresh_locked_statuses(session.client, store, algorithm.pk)
        scratch = manifest.path.parent / ".gcbatch" / "tmp"
        executor = Executor(session.client, store, algorithm, options, items=items_by_pk,
                            progress=progress, scratch_dir=scratch)
        if on_executor is not None:
            on_executor(executor)
        with gc_frozen():  # the planned cases stay alive: see gcbatch.perf
            return executor.run(targeted, plan)
    finally:
        store.close()


def fetch_archive_items(
    client: Any, manifest: Any
) -> tuple[dict[str, list[ArchiveItem]], dict[str, ArchiveItem]]:
    """Items of every archive a ``foreach: {archive: ...}`` generator names (GETs)."""
    by_slug: dict[str, list[ArchiveItem]] = {}
    by_pk: dict[str, ArchiveItem] = {}
    for spec in manifest.cases:
        if spec.foreach is None or spec.foreach.kind != "archive":
            continue
        slug = spec.foreach.pattern
        if slug in by_slug:
            continue
        archive = client.get_archive(slug)
        items = list(client.list_archive_items(archive.pk))
        by_slug[slug] = items
        by_pk.update({item.pk: item for item in items})
    return by_slug, by_pk


def fetch_item_sources(client: Any, cases: Iterable[Case], by_pk: dict[str, ArchiveItem]) -> None:
    """Archive items named explicitly (``archive_item: <pk>``) that no generator listed."""
    for case in cases:
        for source in case.inputs:
            if source.kind != "archive_item" or not source.item_pk or source.item_pk in by_pk:
                continue
            try:
                by_pk[source.item_pk] = client.get_archive_item(source.item_pk)
            except NotFoundError:
                continue  # preflight reports it, naming the case and socket
