"""Folding lockfiles of one study into one (PURE): shards, or two colleagues' copies.

A merge never invents or drops a job. For each case the entries of every lockfile that
has it are folded:

- the same current job in each (or none in some): kept, with the most advanced status
  seen (an ended status wins over a running one);
- different current jobs, one of which the other lockfile keeps in the case's history:
  the newer one (``apply --replace``/``--retry-failed`` made it) is current, the older in
  the history;
- different current jobs that neither knows: a **conflict** (one case, two jobs). Nothing
  is written; the report names the case, both jobs and the files they come from;
- an in-doubt intent (``pending``) is never dropped: kept beside a job another lockfile
  knows (the next ``apply`` reconciles it, and the known job is claimed, so it is not
  adopted twice). Two different intents for one case are a conflict.

The lockfiles must belong to one server and one algorithm (:func:`check_belongs`'s rule).
The result does not depend on the order of the inputs, and its bytes are the usual
deterministic ones, so merging again gives the same file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from gcbatch.errors import LockfileError
from gcbatch.lockfile.records import (
    AlgorithmRef,
    CaseEntry,
    Intent,
    JobRecord,
    Lockfile,
    normalize_server,
)
from gcbatch.statuses import TERMINAL_STATUSES

__all__ = ["Conflict", "MergeResult", "merge_lockfiles"]


@dataclass(frozen=True)
class Conflict:
    """One case that the lockfiles give two different jobs (or two different intents)."""

    case_id: str
    #: (job pk or intent's started_at, the file that says so), one per side, sorted
    sides: tuple[tuple[str, str], tuple[str, str]]
    kind: str = "job"  # "job" | "intent"

    def describe(self) -> str:
        (a, a_src), (b, b_src) = self.sides
        if self.kind == "intent":
            return (f"case {self.case_id!r}: two different in-doubt submissions, started "
                    f"{a} ({a_src}) and {b} ({b_src})")
        return f"case {self.case_id!r}: job {a} ({a_src}) and job {b} ({b_src})"


@dataclass(frozen=True)
class MergeResult:
    lockfile: Lockfile
    conflicts: tuple[Conflict, ...] = ()
    #: cases found in more than one input (shards' lockfiles share none)
    shared: int = 0


def merge_lockfiles(sources: Sequence[tuple[str, Lockfile]]) -> MergeResult:
    """Fold ``sources`` ((name for messages, lockfile), at least one) into one lockfile.
    :class:`LockfileError` when they belong to different servers or algorithms; conflicts
    are returned (the caller refuses to write)."""
    if not sources:
        raise LockfileError("nothing to merge: no lockfile given")
    server = _one_server(sources)
    algorithm = _one_algorithm(sources)
    by_case: dict[str, list[tuple[str, CaseEntry]]] = {}
    for name, lockfile in sources:
        for case_id, entry in lockfile.cases.items():
            by_case.setdefault(case_id, []).append((name, entry))
    cases: dict[str, CaseEntry] = {}
    conflicts: list[Conflict] = []
    shared = 0
    for case_id in sorted(by_case):
        entries = by_case[case_id]
        if len(entries) > 1:
            shared += 1
        merged, conflict = _fold(case_id, entries)
        if conflict is not None:
            conflicts.append(conflict)
        elif merged is not None:
            cases[case_id] = merged
    return MergeResult(Lockfile(server=server, algorithm=algorithm, cases=cases),
                       tuple(conflicts), shared)


def _one_server(sources: Sequence[tuple[str, Lockfile]]) -> str:
    servers = {normalize_server(lf.server): (name, lf.server) for name, lf in sources}
    if len(servers) > 1:
        listed = "; ".join(f"{name}: {url}" for name, url in sorted(servers.values()))
        raise LockfileError(f"these lockfiles belong to different servers ({listed}); job pks "
                            "only mean something on the server that made them, so they "
                            "cannot be merged (`gcbatch lock move` moves one to another URL "
                            "of the same server first)")
    return normalize_server(min(lf.server for _, lf in sources))


def _one_algorithm(sources: Sequence[tuple[str, Lockfile]]) -> AlgorithmRef:
    slugs = {lf.algorithm.slug for _, lf in sources}
    pks = {lf.algorithm.pk for _, lf in sources if lf.algorithm.pk}
    if len(slugs) > 1 or len(pks) > 1:
        listed = "; ".join(f"{name}: {lf.algorithm.slug} {lf.algorithm.pk}".rstrip()
                           for name, lf in sources)
        raise LockfileError(f"these lockfiles belong to different algorithms ({listed}); "
                            "they cannot be merged")
    known = [lf.algorithm for _, lf in sources if lf.algorithm.pk]
    if known:
        return min(known, key=lambda a: (a.api_url, a.pk))
    return sources[0][1].algorithm


def _status_rank(status: str) -> tuple[int, str]:
    return (1 if status in TERMINAL_STATUSES else 0, status)


def _fold(case_id: str, entries: Sequence[tuple[str, CaseEntry]]
          ) -> tuple[CaseEntry | None, Conflict | None]:
    # every job any side knows for this case, one record per pk (the most advanced status)
    records: dict[str, JobRecord] = {}
    for _, entry in entries:
        for job in (entry.job, *entry.history):
            if job is None:
                continue
            known = records.get(job.pk)
            if known is None or _status_rank(job.status) > _status_rank(known.status):
                records[job.pk] = job
    current: dict[str, str] = {}  # job pk → the file that has it current
    older: set[str] = set()
    for name, entry in entries:
        if entry.job is not None:
            current.setdefault(entry.job.pk, name)
        older.update(job.pk for job in entry.history)
    heads = sorted(pk for pk in current if pk not in older)
    if len(heads) > 1:
        a, b = heads[0], heads[1]
        return None, Conflict(case_id, ((a, current[a]), (b, current[b])))
    pending, conflict = _one_intent(case_id, entries)
    if conflict is not None:
        return None, conflict
    if heads:
        head = heads[0]
        # the entry that describes the head job (its fingerprint and inputs are that job's)
        base = next(e for _, e in entries if e.job is not None and e.job.pk == head)
        assert base.job is not None
        job = replace(base.job, status=records[head].status)
        if pending is not None and _resolved(pending, job, entries):
            pending = None
    elif current:  # every current job is someone's history: a cycle, which no run writes
        pk = sorted(current)[0]
        other = sorted(current)[-1]
        return None, Conflict(case_id, ((pk, current[pk]), (other, current[other])))
    else:
        base = entries[0][1]
        job = None
        with_intent = [e for _, e in entries if e.pending is not None]
        if with_intent:
            base = with_intent[0]
    history = tuple(sorted((r for pk, r in records.items() if job is None or pk != job.pk),
                           key=lambda r: (r.submitted_at, r.pk)))
    if job is None and not history and pending is None:
        # nobody ever got a job or started one: whatever the entries say, one of them
        base = min((e for _, e in entries), key=lambda e: (e.fingerprint, sorted(e.inputs)))
    return CaseEntry(fingerprint=base.fingerprint, inputs=base.inputs, job=job,
                     history=history, pending=pending), None


def _one_intent(case_id: str, entries: Sequence[tuple[str, CaseEntry]]
                ) -> tuple[Intent | None, Conflict | None]:
    intents: dict[str, tuple[Intent, str]] = {}
    for name, entry in entries:
        if entry.pending is not None:
            key = _intent_key(entry.pending)
            intents.setdefault(key, (entry.pending, name))
    if len(intents) > 1:
        (a, a_src), (b, b_src) = sorted(intents.values(), key=lambda v: _intent_key(v[0]))[:2]
        return None, Conflict(case_id, ((a.started_at or "?", a_src),
                                        (b.started_at or "?", b_src)), kind="intent")
    if intents:
        return next(iter(intents.values()))[0], None
    return None, None


def _resolved(pending: Intent, job: JobRecord,
              entries: Sequence[tuple[str, CaseEntry]]) -> bool:
    """Whether a lockfile that went on from the intent recorded its outcome: one without
    the intent has, as current, a job for the same inputs submitted after the intent was
    started (its run settled the intent: that job is what it made, or was adopted). Any
    doubt keeps the intent (the next apply reconciles it)."""
    if job.fingerprint != pending.fingerprint or not job.submitted_at or not pending.started_at:
        return False
    return any(entry.pending is None and entry.job is not None and entry.job.pk == job.pk
               and entry.job.submitted_at >= pending.started_at for _, entry in entries)


def _intent_key(intent: Intent) -> str:
    return json.dumps(intent.as_json(), sort_keys=True, default=str)


def pairs(lockfile: Lockfile) -> Mapping[str, str]:
    """case id → current job pk (what a merge must keep): for reports and tests."""
    return {cid: e.job.pk for cid, e in lockfile.cases.items() if e.job is not None}
