"""``gcbatch apply``: lock, look, plan, pre-flight, then run the engine.

The order is the promise "bad input never half-sends": the lockfile is locked (and
checked: corrupt, another server or algorithm) and the manifest's cases are expanded
(every file found and hashed, every JSON value read) before the first request, so a second
concurrent apply, a wrong lockfile or a missing input fails having sent nothing at all;
the algorithm and every case about to be sent are checked (pre-flight) before the first
upload; only then does the engine (:class:`~gcbatch.engine.executor.Executor`) create
anything. Cases of archive generators (and, with ``--retry-failed``, those whose jobs the
server now says failed) are built once the server answered.

A re-apply costs what changed: cases whose locked job still stands are recognised from
cached digests without being built (``settled``), pre-flight covers only what will be
sent (the duplicate-values check still sees every case), and job statuses are read only
when something is sent (earlier jobs still active hold slots) or ``--retry-failed`` asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gcbatch.api.server_view import ServerView
from gcbatch.engine.executor import Executor
from gcbatch.engine.options import ApplyOptions
from gcbatch.engine.outcomes import ApplySummary
from gcbatch.events import Hook, ignore
from gcbatch.hashing import FileHasher
from gcbatch.lockfile import AlgorithmRef, LockfileStore
from gcbatch.operations.session import Session
from gcbatch.operations.study import Study
from gcbatch.perf import gc_frozen, gc_paused
from gcbatch.plan import SENDING_KINDS, ActionKind, ServerFacts, make_plan, settled_fingerprints
from gcbatch.preflight import require_algorithm, run_preflight
from gcbatch.sources import Case, expand
from gcbatch.statuses import TERMINAL_STATUSES

__all__ = ["apply", "explicit_item_pks", "refresh_open_jobs"]


def apply(
    study: Study,
    session: Session,
    options: ApplyOptions,
    *,
    on_event: Hook = ignore,
    on_executor: Callable[[Executor], None] | None = None,
) -> ApplySummary:
    """Carry every targeted case of ``study`` to a job, exactly once. Raises
    GcbatchErrors (exit 2 ones before anything is sent); ``on_executor`` receives the
    engine before it runs (the CLI wires Ctrl-C to its ``request_stop``)."""
    manifest = study.manifest
    view = session.view
    store = LockfileStore.open(study.lockfile, server=study.server,
                               algorithm=AlgorithmRef(manifest.algorithm),
                               checkpoint_every=options.checkpoint_every)
    try:
        # Everything local is checked before the first request (the promise of exit 2,
        # "nothing was sent"): the lockfile above, and here the manifest's cases, their
        # files and JSON values. Only archive generators wait for the server's items.
        hasher = FileHasher(study.hash_cache)
        settled_before = settled_fingerprints(store.lockfile,
                                              retry_failed=options.retry_failed)
        with gc_paused():  # 100,000 cases: see gcbatch.perf
            expansion = expand(manifest, archive_items=None, hasher=hasher,
                               settled=settled_before)
        algorithm = require_algorithm(view.algorithm(manifest.algorithm), manifest.algorithm)
        if (store.lockfile.algorithm.pk, store.lockfile.algorithm.api_url) != (
                algorithm.pk, algorithm.api_url):
            store.set_algorithm(AlgorithmRef(slug=algorithm.slug, pk=algorithm.pk,
                                             api_url=algorithm.api_url))
        # 100,000 cases: expansion, preflight and plan hold millions of live objects;
        # the cyclic GC would walk them all again and again (see gcbatch.perf)
        with gc_paused():
            archive_items, items_by_pk = view.archive_items(study.archive_slugs)
            settled_now = settled_before
            if options.retry_failed:  # which jobs failed is the server's news
                refresh_open_jobs(view, store, algorithm.pk)
                settled_now = settled_fingerprints(store.lockfile, retry_failed=True)
            if study.archive_slugs or settled_now != settled_before:
                # again, for the cases that needed the server's answers (archive items,
                # newly failed jobs); locked ones still come back as ids only (`settled`)
                expansion = expand(manifest, archive_items=archive_items, hasher=hasher,
                                   settled=settled_now)
            hasher.save()
            targeting = options.targeting
            targeting.check_known(expansion.case_ids)
            targeted = [c for c in expansion.cases if targeting.matches(c.id)]
            settled = [cid for cid in expansion.settled if targeting.matches(cid)]
            # no interfaces in the facts: a locked job stays valid when the algorithm's
            # interfaces change later; what will be sent is checked by the preflight below
            plan = make_plan(targeted, store.lockfile, ServerFacts(), settled=settled,
                             algorithm=algorithm.slug, retry_failed=options.retry_failed)
            # Pre-flight (and explicit archive items) only for the cases apply will send: a
            # locked case is not sent again, and checking 100,000 of them on every re-apply
            # would be most of its time. The duplicate-values check still sees every case.
            by_id = {c.id: c for c in targeted}
            to_send = [by_id[a.case_id] for a in plan.actions
                       if a.kind in SENDING_KINDS
                       or (a.kind == ActionKind.RESUBMIT and options.replace)]
            view.add_items(explicit_item_pks(to_send), items_by_pk)
            run_preflight(to_send, algorithm, manifest.algorithm, items=items_by_pk,
                          all_cases=targeted, locked=store.lockfile.cases)
            if to_send and not options.retry_failed:
                # which earlier jobs still hold active-job slots (nothing to send: no need)
                refresh_open_jobs(view, store, algorithm.pk)
        executor = Executor(session.client, store, algorithm, options, items=items_by_pk,
                            on_event=on_event, scratch_dir=study.scratch)
        if on_executor is not None:
            on_executor(executor)
        with gc_frozen():  # the planned cases stay alive: see gcbatch.perf
            return executor.run(targeted, plan)
    finally:
        store.close()


def refresh_open_jobs(view: ServerView, store: LockfileStore, algorithm_pk: str) -> int:
    """Bring the statuses of locked jobs not known to have ended up to date (GETs only;
    one journal write for all of them). A finished study costs nothing. Returns the
    number of status changes recorded."""
    lockfile = store.lockfile
    open_jobs = {e.job.pk: cid for cid, e in lockfile.cases.items()
                 if e.job is not None and e.job.status not in TERMINAL_STATUSES}
    if not open_jobs:
        return 0
    updates: list[tuple[str, str, str]] = []
    for pk, job in view.jobs(algorithm_pk, open_jobs).items():
        case_id = open_jobs[pk]
        entry = lockfile.cases.get(case_id)
        if entry is not None and entry.job is not None and entry.job.status != job.status:
            updates.append((case_id, pk, job.status))
    if updates:
        store.statuses(updates)
    return len(updates)


def explicit_item_pks(cases: Iterable[Case]) -> list[str]:
    """Archive items named by pk (``archive_item: <pk>``) in these cases' sources."""
    return [source.item_pk for case in cases for source in case.inputs
            if source.kind == "archive_item" and source.item_pk]
