"""``gcbatch lock move MANIFEST --server URL``: the study's lockfile to another URL of the
same server (a proxy, a new host name), every job and every in-doubt intent kept.

Job pks are the server's own, so they stay valid at another URL of the *same* server,
and nothing else may change. Sameness is proven before anything is written, with GETs
only, at the new URL:

- the algorithm the lockfile names exists there with the same pk;
- every job the lockfile holds (current and earlier ones) is found there, on that
  algorithm (a job pk exists on one server only: finding all of them is the proof).
  A job that is not found refuses the move (it would make the case look never sent).

Then, under the lockfile's OS lock (not while an apply runs), the lockfile is rewritten:
the new server URL, the algorithm's and jobs' API URLs as the new URL gives them, and
every in-doubt intent unchanged (its upload pks and image pks are the same server's, and
the next apply reconciles it at the new URL). The journal a crashed run left is folded
in first, so none of its events is lost.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from gcbatch import lockfile as lockmod
from gcbatch.api.models import Job
from gcbatch.errors import InputError
from gcbatch.lockfile import (
    AlgorithmRef,
    FileLock,
    JobRecord,
    Lockfile,
    journal_path_for,
    normalize_server,
    oslock_path_for,
)
from gcbatch.operations.session import Session
from gcbatch.operations.study import Study
from gcbatch.preflight import require_algorithm

__all__ = ["MoveOutcome", "move", "read_for_move"]


@dataclass(frozen=True)
class MoveOutcome:
    lockfile_path: Path
    old_server: str
    new_server: str
    jobs: int = 0
    in_doubt: int = 0
    written: bool = False
    #: the manifest names the old server (``server:``): it must be changed too
    manifest_names_old: bool = False


def read_for_move(study: Study) -> Lockfile:
    """The study's lockfile (journal folded in), whatever server it names (InputError
    when there is none)."""
    lockfile = lockmod.load(study.lockfile, algorithm=study.algorithm)
    if lockfile is None:
        raise InputError(f"{study.lockfile} does not exist: there is nothing to move (a "
                         "study never applied needs no move; if it was lost, "
                         "`gcbatch lock rebuild` finds its jobs)")
    return lockfile


def move(study: Study, session: Session) -> MoveOutcome:
    """Move ``study.lockfile`` to ``study.server`` (the ``--server`` given), proving first
    that the new URL reaches the server the lockfile's jobs live on."""
    path = study.lockfile
    with FileLock(oslock_path_for(path)):
        lockfile = read_for_move(study)
        old, new = lockfile.server, study.server
        names_old = bool(study.manifest.server) and \
            normalize_server(study.manifest.server or "") == normalize_server(old)
        if normalize_server(old) == normalize_server(new):
            return MoveOutcome(path, old, new, written=False, manifest_names_old=names_old)
        algorithm = require_algorithm(session.view.algorithm(study.algorithm), study.algorithm)
        if lockfile.algorithm.pk and algorithm.pk != lockfile.algorithm.pk:
            raise InputError(
                f"{new} is not the server of {path}: its algorithm {study.algorithm!r} has "
                f"pk {algorithm.pk}, the lockfile's has {lockfile.algorithm.pk}. Nothing "
                "changed")
        records = {job.pk for e in lockfile.cases.values()
                   for job in (e.job, *e.history) if job is not None}
        found = session.view.jobs(algorithm.pk, records) if records else {}
        missing = sorted(records - set(found))
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more"
                                             if len(missing) > 5 else "")
            raise InputError(
                f"{new} does not show {len(missing)} of the {len(records)} jobs in {path} "
                f"({shown}): not the same server (or not the same account). Nothing "
                "changed; the lockfile still belongs to " + old)
        moved = _moved(lockfile, new, algorithm.pk, algorithm.api_url, algorithm.slug, found)
        lockmod.save(path, moved)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(journal_path_for(path))  # folded into the lockfile just saved
    return MoveOutcome(path, old, new, jobs=len(records), in_doubt=len(moved.in_doubt),
                       written=True, manifest_names_old=names_old)


def _moved(lockfile: Lockfile, server: str, pk: str, api_url: str, slug: str,
           found: dict[str, Job]) -> Lockfile:
    def moved_job(job: JobRecord | None) -> JobRecord | None:
        if job is None:
            return None
        there = found.get(job.pk)
        return replace(job, api_url=there.api_url) if there is not None else job

    cases = {cid: replace(e, job=moved_job(e.job),
                          history=tuple(j for j in map(moved_job, e.history) if j is not None))
             for cid, e in lockfile.cases.items()}
    return Lockfile(server=server, algorithm=AlgorithmRef(slug, pk, api_url), cases=cases)
