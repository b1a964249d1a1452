"""From locked jobs to results: status refresh, recording, result tables, retry selection.

This is the I/O edge behind ``gcbatch status``, ``wait`` and ``download`` (the pure parts
are :mod:`gcbatch.status`, :mod:`gcbatch.wait`, :mod:`gcbatch.tables`; the file transfer
is :mod:`gcbatch.download`), and what ``apply --retry-failed`` asks which cases to redo.

Refreshing N jobs costs ``ceil(N_algorithm / 1000)`` requests, not N: the job list filtered
by ``algorithm_image__algorithm`` with ``limit=1000`` returns every job of the algorithm the
user can see, and we pick ours by pk (others' public jobs are in that list too, so we
stop paging as soon as every job we look for was seen). When only a few jobs are still
unseen and more pages remain than jobs missing, those few are fetched one by one instead
(``--case one-case`` on an algorithm with 100k public jobs is 2 requests, not 100).

Recording: statuses that changed are written to the lockfile as journal ``status`` events
through :class:`gcbatch.lockfile.LockfileStore` (under its OS lock) and checkpointed. When
another gcbatch holds the lock (an ``apply`` still running), the refresh still reports
what it saw and says it did not record it; the next refresh will.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gcbatch import lockfile as lockmod
from gcbatch.download import atomic_write_bytes
from gcbatch.errors import ApiError, LockHeldError, NotFoundError
from gcbatch.lockfile import AlgorithmRef, Lockfile
from gcbatch.models import Job, MalformedResponse
from gcbatch.status import PROBLEM_STATUSES, StatusReport, build_report
from gcbatch.tables import ResultRow, ResultTable, build_table, to_csv, to_json, value_outputs

PAGE_LIMIT = 1000
#: at most this many jobs are looked up one by one rather than through the list
DIRECT_LOOKUP_MAX = 2

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"


class JobSource(Protocol):
    """The two client calls a refresh uses (GrandChallengeClient has both)."""

    def get_json(self, path_or_url: str, params: Mapping[str, object] | None = None) -> object: ...

    def get_job(self, pk_or_url: str) -> Job: ...


# --------------------------------------------------------------------------- fetching


def fetch_jobs(client: JobSource, algorithm_pk: str, wanted: Iterable[str]) -> dict[str, Job]:
    """The jobs among ``wanted`` (pks) the server shows, by pk; absent ones are left out."""
    missing = set(wanted)
    found: dict[str, Job] = {}
    if not missing:
        return found
    if len(missing) <= DIRECT_LOOKUP_MAX:
        return _fetch_one_by_one(client, missing)
    offset = 0
    while missing:
        page = client.get_json(
            "algorithms/jobs/",
            {"algorithm_image__algorithm": algorithm_pk, "limit": PAGE_LIMIT, "offset": offset},
        )
        results, count = _page(page)
        for item in results:
            pk = item.get("pk") if isinstance(item, dict) else None
            if pk in missing:
                found[pk] = _parse_job(item)
                missing.discard(pk)
        # advance by what came back: a server whose max_limit is below ours sends less
        offset += len(results)
        if not results or offset >= count:
            break
        pages_left = math.ceil((count - offset) / len(results))
        if missing and len(missing) < pages_left:
            found.update(_fetch_one_by_one(client, missing))
            break
    return found


def _page(page: object) -> tuple[list[object], int]:
    if not isinstance(page, dict) or not isinstance(page.get("results"), list):
        raise ApiError("unexpected answer to the job list: not a paginated list", status=200)
    count = page.get("count")
    results: list[object] = page["results"]
    return results, count if isinstance(count, int) else len(results)


def _parse_job(item: object) -> Job:
    try:
        return Job.from_json(item)
    except MalformedResponse as exc:
        raise ApiError(f"unexpected job in the job list: {exc}", status=200) from None


def _fetch_one_by_one(client: JobSource, pks: Iterable[str]) -> dict[str, Job]:
    found: dict[str, Job] = {}
    for pk in sorted(pks):
        try:
            found[pk] = client.get_job(pk)
        except NotFoundError:
            continue
    return found


# --------------------------------------------------------------------------- refreshing


@dataclass(frozen=True)
class Refresh:
    """One refresh: the report, the jobs by case id, and whether it was recorded."""

    report: StatusReport
    jobs: Mapping[str, Job]
    recorded: bool
    lock_holder: str = ""  # the LockHeldError message when not recorded for that reason


def lockfile_records(
    lockfile: Lockfile | None, case_ids: Iterable[str]
) -> dict[str, tuple[str | None, str | None]]:
    """case id → (current job pk or None, recorded status or None), for ``case_ids``."""
    records: dict[str, tuple[str | None, str | None]] = {}
    for case_id in case_ids:
        entry = lockfile.cases.get(case_id) if lockfile is not None else None
        job = entry.job if entry is not None else None
        records[case_id] = (job.pk, job.status or None) if job is not None else (None, None)
    return records


def refresh(
    client: JobSource,
    lockfile_path: Path,
    *,
    server: str,
    algorithm_slug: str,
    case_ids: Sequence[str] | None,
    algorithm_pk: Callable[[], str] | None = None,
    record: bool = True,
) -> Refresh:
    """Refresh the jobs of ``case_ids`` (None: every case in the lockfile).

    ``algorithm_pk`` is asked only if the lockfile does not know the pk yet (it knows it
    once anything was submitted). Changed statuses are recorded when ``record`` is set.
    """
    current = lockmod.load(lockfile_path, server=server, algorithm=algorithm_slug)
    ids = sorted(case_ids) if case_ids is not None else sorted(current.cases if current else ())
    records = lockfile_records(current, ids)
    wanted = {pk for pk, _ in records.values() if pk is not None}
    jobs_by_pk: dict[str, Job] = {}
    if wanted:
        pk = current.algorithm.pk if current is not None else ""
        if not pk and algorithm_pk is not None:
            pk = algorithm_pk()
        jobs_by_pk = fetch_jobs(client, pk, wanted)
    report = build_report(
        records,
        {pk: (job.status, _seconds(job)) for pk, job in jobs_by_pk.items()},
    )
    jobs = {
        case_id: jobs_by_pk[pk]
        for case_id, (pk, _) in records.items()
        if pk is not None and pk in jobs_by_pk
    }
    changed = changed_statuses(report)
    if not record or not changed or current is None:
        return Refresh(report, jobs, recorded=not changed)
    try:
        record_statuses(lockfile_path, server=server, algorithm=current.algorithm,
                        updates=changed)
    except LockHeldError as exc:
        return Refresh(report, jobs, recorded=False, lock_holder=str(exc))
    return Refresh(report, jobs, recorded=True)


def changed_statuses(report: StatusReport) -> list[tuple[str, str, str]]:
    """(case id, job pk, status) for every row whose status differs from the lockfile's.

    For a caller that already holds a :class:`~gcbatch.lockfile.LockfileStore` (the
    executor): ``refresh(..., record=False)`` then ``store.statuses(updates)`` (one fsync),
    instead of letting :func:`refresh` open the store a second time (which the OS lock
    would refuse).
    """
    return [(row.case_id, row.job_pk, row.status)
            for row in report.rows if row.changed and row.job_pk is not None]


def _seconds(job: Job) -> float | None:
    return None if job.exec_duration is None else job.exec_duration.total_seconds()


def record_statuses(
    lockfile_path: Path,
    *,
    server: str,
    algorithm: AlgorithmRef,
    updates: Sequence[tuple[str, str, str]],
) -> None:
    """Journal (one fsync) and checkpoint (case, job pk, status) updates under the OS lock.

    Raises LockHeldError when another gcbatch holds the lock (nothing is written then).
    An update for a case whose current job is no longer ``job pk`` (an apply replaced it
    meanwhile) lands on that old job in the history, which is what it describes.
    """
    # no intermediate checkpoints: the batch is checkpointed once, on close
    with lockmod.LockfileStore.open(lockfile_path, server=server, algorithm=algorithm,
                                    checkpoint_every=1_000_000_000) as store:
        known = store.lockfile.cases
        # one journal write and one fsync for the whole batch, then the checkpoint on close
        store.statuses(u for u in updates if u[0] in known)


# --------------------------------------------------------------------------- retry-failed


def cases_to_retry(lockfile: Lockfile | None, case_ids: Iterable[str] | None = None) -> list[str]:
    """Case ids whose current job ended Failed or Cancelled, sorted (for ``--retry-failed``).

    Uses the statuses recorded in the lockfile; callers that want fresh statuses run
    :func:`refresh` first (``apply --retry-failed`` does). Cases without a job, with a job
    still running, or in doubt (a submission pending) are not retried here.
    """
    if lockfile is None:
        return []
    ids = sorted(lockfile.cases) if case_ids is None else sorted(set(case_ids))
    out = []
    for case_id in ids:
        entry = lockfile.cases.get(case_id)
        if entry is None or entry.job is None or entry.pending is not None:
            continue
        if entry.job.status in PROBLEM_STATUSES:
            out.append(case_id)
    return out


# --------------------------------------------------------------------------- tables


def result_table(
    report: StatusReport,
    jobs: Mapping[str, Job],
    input_summaries: Mapping[str, Mapping[str, str]],
    *,
    output_sockets: Iterable[str] = (),
) -> ResultTable:
    """One row per case in ``report``: its inputs' summaries and its Value outputs."""
    rows = [
        ResultRow(
            case_id=row.case_id,
            job_pk=row.job_pk,
            status=row.status,
            inputs=dict(input_summaries.get(row.case_id, {})),
            values=value_outputs(jobs.get(row.case_id)),
        )
        for row in report.rows
    ]
    return build_table(rows, output_sockets=output_sockets)


def write_tables(out_dir: Path, table: ResultTable) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``results.json`` into ``out_dir`` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / RESULTS_CSV, out_dir / RESULTS_JSON
    atomic_write_bytes(csv_path, to_csv(table))
    atomic_write_bytes(json_path, to_json(table))
    return csv_path, json_path
