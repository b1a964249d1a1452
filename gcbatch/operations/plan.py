"""``gcbatch plan``: what apply would do, case by case, with the reason. Never sends a change.

Offline (no session) it reads the manifest, the input files (hashes come from the stat
cache) and the lockfile: archive generators show as "needs server" and job statuses are
the lockfile's last seen ones. Online (a session) it also asks the server, with GETs
only: the algorithm, the archives' items, the current status of the locked jobs, every
case checked against the algorithm's interfaces and socket kinds (failures show as
``! blocked``), and a quota forecast. Both go through the same pure
:func:`~gcbatch.plan.make_plan`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from gcbatch import lockfile as lockmod
from gcbatch.api.models import ArchiveItem, Job
from gcbatch.engine.admission import DEFAULT_MAX_ACTIVE, Forecast, forecast
from gcbatch.engine.ownership import Examination, examine
from gcbatch.engine.sent import Sent, Stage
from gcbatch.hashing import FileHasher, HashStats
from gcbatch.operations.apply import explicit_item_pks
from gcbatch.operations.session import Session
from gcbatch.operations.study import Study
from gcbatch.plan import ActionKind, Plan, ServerFacts, make_plan, settled_fingerprints
from gcbatch.preflight import blocked_cases, require_algorithm
from gcbatch.sources import expand
from gcbatch.statuses import TERMINAL_STATUSES
from gcbatch.targeting import Targeting

__all__ = ["PlanResult", "plan"]


@dataclass(frozen=True)
class PlanResult:
    plan: Plan
    lockfile_path: Path
    hash_stats: HashStats
    #: the server was asked (with its URL); None offline
    server: str | None = None
    #: online only: what the batch will take under the active-jobs limit
    forecast: Forecast | None = None
    #: online only: each in-doubt case looked at on the server (the jobs that may be its)
    in_doubt: tuple[Examination, ...] = ()
    #: the manifest (for the commands a view suggests)
    manifest: Path | None = None


def plan(
    study: Study,
    *,
    targeting: Targeting,
    session: Session | None = None,
    retry_failed: bool = False,
    hash_cache: bool = True,
) -> PlanResult:
    """The plan for ``study``; online when a ``session`` is given. Raises ManifestError /
    LockfileError (exit 2) before any request, PreflightError when the algorithm is not
    there."""
    manifest = study.manifest
    # a corrupt or foreign lockfile stops us before the first request
    lockfile = lockmod.load(study.lockfile, server=study.server, algorithm=manifest.algorithm)
    whole = lockfile  # before targeting: every case's jobs are claimed, targeted or not
    facts: ServerFacts | None = None
    archive_items: Mapping[str, Sequence[ArchiveItem]] | None = None
    items_by_pk: dict[str, ArchiveItem] = {}
    active = 0
    algorithm = None
    if session is not None:
        view = session.view
        algorithm = require_algorithm(view.algorithm(manifest.algorithm), manifest.algorithm)
        archive_items, items_by_pk = view.archive_items(study.archive_slugs)
        locked = [e.job.pk for e in lockfile.cases.values() if e.job] if lockfile else []
        statuses = {pk: job.status for pk, job in view.jobs(algorithm.pk, locked).items()}
        active = sum(1 for s in statuses.values() if s not in TERMINAL_STATUSES)
        facts = ServerFacts(interfaces=algorithm.input_sets, job_status=statuses)
    hasher = FileHasher(study.hash_cache if hash_cache else None)
    # cases still locked as they are come back as ids only (see expand's `settled`)
    settled = settled_fingerprints(lockfile, retry_failed=retry_failed,
                                   job_status=facts.job_status if facts is not None else None)
    expansion = expand(manifest, archive_items, hasher, settled=settled)
    hasher.save()
    cases = expansion.cases
    settled_ids: Sequence[str] = expansion.settled
    if not targeting.everything:
        targeting.check_known(expansion.case_ids)
        cases = tuple(c for c in cases if targeting.matches(c.id))
        settled_ids = [cid for cid in settled_ids if targeting.matches(cid)]
        if lockfile is not None:
            lockfile = replace(lockfile, cases={k: v for k, v in lockfile.cases.items()
                                                if targeting.matches(k)})
    if facts is not None and algorithm is not None and session is not None:
        # settled cases (unchanged, so never blocked) have no Case to check
        session.view.add_items(explicit_item_pks(cases), items_by_pk)
        facts = replace(facts, blocked=blocked_cases(cases, algorithm, items_by_pk))
    result = make_plan(cases, lockfile, facts, algorithm=manifest.algorithm,
                       needs_server=expansion.needs_server, retry_failed=retry_failed,
                       settled=settled_ids)
    outlook = None
    examined: tuple[Examination, ...] = ()
    if algorithm is not None and session is not None and whole is not None:
        examined = _examine_in_doubt(session, algorithm.pk, result, whole)
    if algorithm is not None:
        counts = result.count()
        jobs = sum(counts[k.value] for k in (ActionKind.SUBMIT, ActionKind.RETRY_FAILED,
                                              ActionKind.IN_DOUBT))
        outlook = forecast(jobs, max_active=DEFAULT_MAX_ACTIVE, already_active=active,
                           average_duration=algorithm.average_duration)
    return PlanResult(result, study.lockfile, hasher.stats,
                      server=study.server if session is not None else None, forecast=outlook,
                      in_doubt=examined, manifest=study.path)


def _examine_in_doubt(session: Session, algorithm_pk: str, result: Plan,
                      lockfile: lockmod.Lockfile) -> tuple[Examination, ...]:
    """Each in-doubt case's verdict and look-alike jobs (GETs only; the job list is read
    once, and only when some case is in doubt)."""
    jobs: tuple[Job, ...] | None = None
    claimed_by: dict[str, str] = {}
    names: dict[str, str] = {}  # image names read, shared by the cases
    examined = []
    for action in result.actions:
        if action.kind != ActionKind.IN_DOUBT:
            continue
        entry = lockfile.cases.get(action.case_id)
        if entry is None or entry.pending is None:
            continue
        try:
            sent = Sent.from_json(entry.pending.payload)
        except ValueError:
            continue  # a record gcbatch cannot read: the action's reason says so
        if sent.stage != Stage.POST:
            continue
        if jobs is None:
            jobs = tuple(session.view.all_jobs(algorithm_pk))
            for cid, other in lockfile.cases.items():
                for job in (other.job, *other.history):
                    if job is not None:
                        claimed_by.setdefault(job.pk, cid)
        examined.append(examine(session.view, algorithm_pk, sent, jobs,
                                case_id=action.case_id, claimed_by=claimed_by,
                                known_names=names))
    return tuple(examined)
