"""``gcbatch apply``: lock, look, plan, pre-flight, then run the engine.

The order is the promise "bad input never half-sends": the lockfile is locked (and
checked: corrupt, another server or algorithm) and the manifest's cases are expanded
(every file found and hashed, every JSON value read) before the first request, so a second
concurrent apply, a wrong lockfile or a missing input fails having sent nothing at all;
the algorithm and every case about to be sent are checked (pre-flight, ``image:`` URLs
included) before the first upload; only then does the engine
(:class:`~gcbatch.engine.executor.Executor`) create anything. Cases of archive generators
(and, with ``--retry-failed``, those whose jobs the server now says failed) are built once
the server answered. Before the engine starts, one job POST that can make no job asks
whether the platform would refuse every job now (:func:`~gcbatch.readiness.probe_readiness`:
an image that is not ready, no credits left): then nothing is uploaded or submitted, and
the cases wait (exit 1 for the image, 4 for the credits).

A re-apply costs what changed: cases whose locked job still stands are recognised from
cached digests without being built (``settled``), pre-flight covers only what will be
sent (the duplicate-values check still sees every case), and job statuses are read only
when something is sent (earlier jobs still active hold slots) or ``--retry-failed`` asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from gcbatch.api.server_view import ServerView
from gcbatch.engine.options import ApplyOptions
from gcbatch.engine.outcomes import ApplySummary, CaseOutcome, Outcome
from gcbatch.events import CreditsExhausted, Hook, PatientData, ignore
from gcbatch.hashing import FileHasher
from gcbatch.lockfile import AlgorithmRef, FileLock, LockfileStore, oslock_path_for
from gcbatch.operations import lock_merge, settled_stamp
from gcbatch.operations.session import Session
from gcbatch.operations.study import Study
from gcbatch.perf import gc_frozen, gc_paused
from gcbatch.plan import SENDING_KINDS, ActionKind, ServerFacts, make_plan, settled_fingerprints
from gcbatch.preflight import (
    blocked_cases,
    dicom_patient_data,
    image_urls,
    image_verdicts,
    probe_readiness,
    require_algorithm,
    run_preflight,
)
from gcbatch.sources import Case, expand
from gcbatch.statuses import TERMINAL_STATUSES

if TYPE_CHECKING:
    from gcbatch.engine.executor import Executor

__all__ = ["apply", "explicit_item_pks", "may_upload", "refresh_open_jobs"]


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
    # shards and the whole study never diverge into submitting a case twice
    lock_merge.refuse_unmerged_shards(study)
    lock_merge.take_in_whole(study)
    use_stamp = settled_stamp.applies_to(study, everything=options.targeting.everything,
                                         retry_failed=options.retry_failed)
    if use_stamp:
        stamped = _from_stamp(study, session)
        if stamped is not None:
            return stamped
    store = LockfileStore.open(study.lockfile, server=study.server,
                               algorithm=AlgorithmRef(manifest.algorithm),
                               checkpoint_every=options.checkpoint_every)
    stampable = False
    jobs: dict[str, tuple[str, str]] = {}
    try:
        # Everything local is checked before the first request (the promise of exit 2,
        # "nothing was sent"): the lockfile above, and here the manifest's cases, their
        # files and JSON values. Only archive generators wait for the server's items.
        hasher = FileHasher(study.hash_cache)
        settled_before = settled_fingerprints(store.lockfile,
                                              retry_failed=options.retry_failed)
        only = study.shard.contains if study.shard is not None else None
        with gc_paused():  # 100,000 cases: see gcbatch.perf
            expansion = expand(manifest, archive_items=None, hasher=hasher,
                               settled=settled_before, only=only)
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
                                   settled=settled_now, only=only)
            hasher.save()
            targeting = options.targeting.within(study.shard)
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
            blocked: dict[str, str] = {}
            images = image_verdicts(session.client, image_urls(to_send))
            if options.keep_going:
                # cases that do not fit the algorithm are left out (and reported); the
                # rest must still pass the whole pre-flight
                blocked = blocked_cases(to_send, algorithm, items_by_pk, images)
                to_send = [c for c in to_send if c.id not in blocked]
                targeted = [c for c in targeted if c.id not in blocked]
                plan = replace(plan, actions=tuple(a for a in plan.actions
                                                   if a.case_id not in blocked))
            run_preflight(to_send, algorithm, manifest.algorithm, items=items_by_pk,
                          all_cases=targeted, locked=store.lockfile.cases, images=images)
            # what the platform would refuse every job for (its image, the credits): asked
            # with one job POST that can make no job, before the first upload (value-only
            # cases upload nothing: their first POST asks the same at no extra cost)
            fresh = [by_id[a.case_id] for a in plan.actions
                     if a.kind in (ActionKind.SUBMIT, ActionKind.RETRY_FAILED)
                     or (a.kind == ActionKind.RESUBMIT and options.replace)]
            readiness = probe_readiness(session.client, algorithm) if may_upload(fresh) else None
            for warning in dicom_patient_data(to_send, algorithm):  # before any upload
                on_event(PatientData(warning))
            if to_send and not options.retry_failed:
                # which earlier jobs still hold active-job slots (nothing to send: no need)
                refresh_open_jobs(view, store, algorithm.pk)
        # imported here: a re-apply answered by the settled stamp never needs the engine
        from gcbatch.engine.executor import Executor
        from gcbatch.engine.neighbours import Neighbours

        executor = Executor(session.client, store, algorithm, options, items=items_by_pk,
                            on_event=on_event, scratch_dir=study.scratch)
        if readiness is not None and readiness.blocks:
            # nothing is uploaded or POSTed; cases in doubt are still looked for (GETs)
            executor.run_context.slots.refuse_all(
                "credits" if readiness.kind == "no_credits" else "not_ready")
            if readiness.kind == "no_credits":
                on_event(CreditsExhausted())
        if on_executor is not None:
            on_executor(executor)
        # other applies against this server on this machine: probe when they free slots
        neighbours = Neighbours.for_server(study.server)
        executor.run_context.slots.join_neighbours(neighbours)
        try:
            with gc_frozen():  # the planned cases stay alive: see gcbatch.perf
                summary = executor.run(targeted, plan)
        finally:
            neighbours.close()
        if blocked:
            left_out = tuple(CaseOutcome(cid, Outcome.BLOCKED, f"not sent: {why}")
                             for cid, why in sorted(blocked.items()))
            summary = replace(summary, outcomes=summary.outcomes + left_out)
        stampable = (use_stamp and not blocked and not expansion.cases
                     and summary.exit_code == 0
                     and all(a.kind == ActionKind.UNCHANGED for a in plan.actions))
        if stampable:
            jobs = {cid: (e.job.pk, e.job.status) for cid, e in store.lockfile.cases.items()
                    if e.job is not None and e.pending is None}
    finally:
        store.close()
    if stampable:
        settled_stamp.write(study, hasher, summary, store.lockfile.algorithm, jobs)
    else:
        settled_stamp.forget(study)
    return summary


def _from_stamp(study: Study, session: Session) -> ApplySummary | None:
    """A fully locked study's answer from its settled stamp (see
    :mod:`gcbatch.operations.settled_stamp`), or None: take the full path."""
    started = time.monotonic()
    stamp = settled_stamp.read_valid(study)
    if stamp is None:
        return None
    # under the lockfile's OS lock, as any apply (a running one refuses us the same way)
    with FileLock(oslock_path_for(study.lockfile)):
        if settled_stamp.lock_key(study.lockfile) != stamp.lock:
            return None  # written meanwhile
        algorithm = require_algorithm(session.view.algorithm(study.algorithm), study.algorithm)
        if (algorithm.pk, algorithm.api_url) != (stamp.algorithm.pk, stamp.algorithm.api_url):
            return None
        return stamp.summary(requests=session.client.requests_sent,
                             elapsed=time.monotonic() - started)


def may_upload(cases: Iterable[Case]) -> bool:
    """Some of these cases may upload files (a source that is no value or image URL)."""
    return any(s.kind not in ("value", "json", "image") for case in cases for s in case.inputs)


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
