"""What ``status``, ``wait`` and ``download`` share: the cases in scope, their jobs now.

All three start the same way: take the cases of the manifest and of the lockfile (a
locked case the manifest no longer has is still shown), apply ``--case``/``--select``, and
refresh the jobs' statuses through :meth:`~gcbatch.api.server_view.ServerView.jobs` (a
page of the job list per 1,000 jobs, not a request per job), recording what changed.

Recording: changed statuses become journal ``status`` events through
:class:`~gcbatch.lockfile.LockfileStore` (under its OS lock, one fsync per batch) and are
checkpointed. When another gcbatch holds the lock (an ``apply`` still running), the
refresh still reports what it saw and says it did not record it; the next one will.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gcbatch import lockfile as lockmod
from gcbatch.api.models import ArchiveItem, Job
from gcbatch.errors import LockHeldError
from gcbatch.events import Hook, StatusesNotRecorded, ignore
from gcbatch.interrupts import uninterrupted
from gcbatch.lockfile import AlgorithmRef, Lockfile
from gcbatch.operations import settled_stamp
from gcbatch.operations.session import Session
from gcbatch.operations.study import Study
from gcbatch.sources import expand
from gcbatch.status import StatusReport, build_report
from gcbatch.targeting import Targeting

__all__ = ["Refresh", "Scope", "refresh", "scope"]


@dataclass(frozen=True)
class Scope:
    """The cases a command works on, and what the manifest says about their inputs."""

    all_ids: tuple[str, ...]  # in the manifest or the lockfile, sorted
    targeted: tuple[str, ...]
    summaries: Mapping[str, Mapping[str, str]]  # case id → input socket → source summary


def scope(study: Study, targeting: Targeting, *,
          archive_items: Mapping[str, Sequence[ArchiveItem]] | None = None) -> Scope:
    """Cases and input summaries; no file is read (ids and summaries need no contents).
    Archive generators expand only with ``archive_items`` (``download`` fetches them for
    the table; ``status``/``wait`` know those cases from the lockfile once applied)."""
    targeting = targeting.within(study.shard)
    expansion = expand(study.manifest, archive_items=archive_items, hasher=None,
                       only=study.shard.contains if study.shard is not None else None)
    locked = lockmod.load(study.lockfile, server=study.server, algorithm=study.algorithm)
    locked_ids = set(locked.cases) if locked is not None else set()
    all_ids = tuple(sorted({case.id for case in expansion.cases} | locked_ids))
    targeting.check_known(all_ids)
    summaries = {case.id: {source.socket: source.summary for source in case.inputs}
                 for case in expansion.cases}
    return Scope(all_ids, tuple(targeting.filter(all_ids)), summaries)


@dataclass(frozen=True)
class Refresh:
    """One refresh: the report, the jobs by case id, and whether it was recorded."""

    report: StatusReport
    jobs: Mapping[str, Job]
    recorded: bool
    lock_holder: str = ""  # the LockHeldError message when not recorded for that reason


def refresh(study: Study, session: Session, case_ids: Sequence[str], *,
            on_event: Hook = ignore, record: bool = True) -> Refresh:
    """Refresh the jobs of ``case_ids``; record changed statuses when ``record``."""
    current = lockmod.load(study.lockfile, server=study.server, algorithm=study.algorithm)
    records = _records(current, sorted(case_ids))
    wanted = {pk for pk, _ in records.values() if pk is not None}
    jobs_by_pk: dict[str, Job] = {}
    if wanted:
        # the lockfile knows the algorithm's pk once anything was submitted
        pk = current.algorithm.pk if current is not None else ""
        if not pk:
            pk = session.client.get_algorithm(study.algorithm).pk
        jobs_by_pk = session.view.jobs(pk, wanted)
    report = build_report(records, {pk: (job.status, _seconds(job))
                                    for pk, job in jobs_by_pk.items()})
    jobs = {case_id: jobs_by_pk[pk] for case_id, (pk, _) in records.items()
            if pk is not None and pk in jobs_by_pk}
    changed = [(row.case_id, row.job_pk, row.status)
               for row in report.rows if row.changed and row.job_pk is not None]
    if not record or not changed or current is None:
        return Refresh(report, jobs, recorded=not changed)
    try:
        _record(study, current.algorithm, changed)
    except LockHeldError as exc:
        on_event(StatusesNotRecorded(str(exc)))
        return Refresh(report, jobs, recorded=False, lock_holder=str(exc))
    return Refresh(report, jobs, recorded=True)


def _records(lockfile: Lockfile | None,
             case_ids: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
    """case id → (current job pk or None, recorded status or None)."""
    records: dict[str, tuple[str | None, str | None]] = {}
    for case_id in case_ids:
        entry = lockfile.cases.get(case_id) if lockfile is not None else None
        job = entry.job if entry is not None else None
        records[case_id] = (job.pk, job.status or None) if job is not None else (None, None)
    return records


def _seconds(job: Job) -> float | None:
    return None if job.exec_duration is None else job.exec_duration.total_seconds()


def _record(study: Study, algorithm: AlgorithmRef,
            updates: Sequence[tuple[str, str, str]]) -> None:
    """Journal (one fsync) and checkpoint (case, job pk, status) updates under the OS
    lock; LockHeldError when another gcbatch holds it (nothing is written then). An
    update for a case whose current job is no longer that job (an apply replaced it
    meanwhile) lands on the old job in the history, which is what it describes."""
    # no intermediate checkpoints: the batch is checkpointed once, on close; Ctrl-C waits
    # for the store to be closed (a KeyboardInterrupt inside it could leave its lock taken)
    before = settled_stamp.lock_key(study.lockfile)
    with uninterrupted():
        with lockmod.LockfileStore.open(
                study.lockfile, server=study.server, algorithm=algorithm,
                checkpoint_every=1_000_000_000) as store:
            known = store.lockfile.cases
            store.statuses(u for u in updates if u[0] in known)
        # statuses only: a settled stamp of the lockfile as it was stays true
        settled_stamp.carry(study, before, updates)
