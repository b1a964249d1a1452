"""``gcbatch lock rebuild``: a lost lockfile written again from what the server holds.

The platform keeps no tag of ours on a job, so a case's job is found by the same exact
handles reconciliation uses (:mod:`gcbatch.engine.reconcile`), read off every job of the
algorithm (one read of the job list):

- a value (``value:``, ``json:``, an archive item's value): equal JSON (``true`` is not
  ``1``);
- an existing image (``image:``, an archive item's image): the same image pk;
- an uploaded file: its *name*. gcbatch names every upload ``<case tag>.gcb-<hash8><ext>``
  and the platform names the image it makes (and the file it stores) after the upload,
  so the name's tag says which case sent it (one GET per such image, for its name).

A job whose every input carries the case's handle, and has no other input, is the case's.
Per case: one such job → **adopted**; none → **no job** (apply will submit it); several →
if all but one ended Failed/Cancelled, the one that did not is adopted (the others go to
its history, as ``--retry-failed`` would have left them), else **ambiguous**: recorded
*in doubt* (apply sends it nowhere until ``gcbatch adopt`` picks one of the listed jobs).
A job matching several cases (two cases with the same values) makes each ambiguous.

What the rebuilt lockfile cannot know, and says: when a job was submitted, and whether an
uploaded file still holds the bytes its job got (it records the file's current digest,
so apply takes the case as unchanged). Value-only cases are told by their values alone:
another user's public job with the same values cannot be told apart from the case's own
(the platform's own duplicate check ignores the user too).

Nothing is written over an existing lockfile (or journal), and only GETs are sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gcbatch import lockfile as lockmod
from gcbatch.api.models import ArchiveItem, Job
from gcbatch.engine.ownership import handle_of, read_names
from gcbatch.engine.prepare import upload_name
from gcbatch.engine.reconcile import file_name_of
from gcbatch.errors import InputError
from gcbatch.hashing import FileHasher, canonical_json
from gcbatch.lockfile import (
    AlgorithmRef,
    CaseEntry,
    FileLock,
    Intent,
    JobRecord,
    Lockfile,
    journal_path_for,
    oslock_path_for,
    utc_now,
)
from gcbatch.operations.session import Session
from gcbatch.operations.study import Study
from gcbatch.preflight import require_algorithm
from gcbatch.sources import Case, expand
from gcbatch.statuses import is_failed, is_terminal

__all__ = ["RebuildOutcome", "rebuild"]

#: a socket's handle: ("v", canonical JSON) | ("i", image pk) | ("t", case tag) | ("?", "")
Handle = tuple[str, str]


@dataclass(frozen=True)
class RebuildOutcome:
    lockfile_path: Path
    #: (case id, job pk), sorted by case
    adopted: tuple[tuple[str, str], ...] = ()
    no_job: tuple[str, ...] = ()
    #: (case id, the jobs that carry its handles), recorded in doubt
    ambiguous: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: jobs of the algorithm read, and image names looked up
    jobs_read: int = 0
    names_read: int = 0
    written: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"lockfile": str(self.lockfile_path), "written": self.written,
                "adopted": [{"case": c, "job": j} for c, j in self.adopted],
                "no_job": list(self.no_job),
                "ambiguous": [{"case": c, "jobs": list(j)} for c, j in self.ambiguous],
                "jobs_read": self.jobs_read, "names_read": self.names_read}


def rebuild(study: Study, session: Session, *, hash_cache: bool = True) -> RebuildOutcome:
    """Write ``study.lockfile`` from the server's jobs (see the module docstring).
    InputError (exit 2) when a lockfile or journal is already there."""
    path = study.lockfile
    _refuse_existing(path)
    view = session.view
    algorithm = require_algorithm(view.algorithm(study.algorithm), study.algorithm)
    archive_items, items_by_pk = view.archive_items(study.archive_slugs)
    hasher = FileHasher(study.hash_cache if hash_cache else None)
    only = study.shard.contains if study.shard is not None else None
    expansion = expand(study.manifest, archive_items, hasher, only=only)
    hasher.save()
    cases = expansion.cases
    view.add_items([s.item_pk for c in cases for s in c.inputs
                    if s.kind == "archive_item" and s.item_pk], items_by_pk)
    sockets = algorithm.input_sockets()
    wanted = {c.id: _case_handles(c, items_by_pk, {k: v.super_kind for k, v in sockets.items()})
              for c in cases}
    jobs = tuple(view.all_jobs(algorithm.pk))
    # image names are read only for jobs that could be some case's (its sockets and the
    # values it has are a case's), one GET per image
    tagged = {socket for handles in wanted.values() for socket, h in handles.items()
              if h is not None and h[0] == "t"}
    shapes = {_shape(handles) for handles in wanted.values()}
    to_name = [v.image.rstrip("/").rsplit("/", 1)[-1] for job in jobs
               if frozenset(v.socket_slug for v in job.inputs) in {s for s, _ in shapes}
               for v in job.inputs if v.socket_slug in tagged and v.image]
    names = read_names(view, to_name, budget=len(to_name))
    by_key: dict[tuple[Any, ...], list[Job]] = {}
    partial: list[tuple[Job, tuple[Any, ...]]] = []  # still validating, uploads not attached
    for job in jobs:
        key = _job_key(job, tagged, names)
        if key is None:
            continue
        by_key.setdefault(key, []).append(job)
        if not is_terminal(job.status) and any(s not in dict(key) for s in tagged):
            partial.append((job, key))
    case_keys = {cid: _key(handles) for cid, handles in wanted.items()}
    key_owners: dict[tuple[Any, ...], list[str]] = {}
    for cid, key in case_keys.items():
        key_owners.setdefault(key, []).append(cid)
    entries: dict[str, CaseEntry] = {}
    adopted: list[tuple[str, str]] = []
    no_job: list[str] = []
    ambiguous: list[tuple[str, tuple[str, ...]]] = []
    for case in cases:
        key = case_keys[case.id]
        found = by_key.get(key, []) if all(h is not None for _, h in key) else []
        chosen = _choose(found) if found and len(key_owners[key]) == 1 else None
        if chosen is None:
            # a job still validating shows its upload inputs later: it may be this case's
            found = found + [j for j, k in partial if _could_be(k, key, tagged)]
        if not found:
            no_job.append(case.id)
            continue
        digests = case.digests()
        if chosen is None:
            pks = tuple(sorted(j.pk for j in found))
            ambiguous.append((case.id, pks))
            entries[case.id] = CaseEntry(
                fingerprint=case.fingerprint, inputs=digests,
                pending=Intent(fingerprint=case.fingerprint, started_at=utc_now(),
                               inputs=digests,
                               payload={"rebuilt": True, "candidates": list(pks)}))
            continue
        head, older = chosen
        adopted.append((case.id, head.pk))
        entries[case.id] = CaseEntry(
            fingerprint=case.fingerprint, inputs=digests, job=_record(head, case),
            history=tuple(_record(j, case) for j in sorted(older, key=lambda j: j.pk)))
    lockfile = Lockfile(server=study.server,
                        algorithm=AlgorithmRef(algorithm.slug, algorithm.pk, algorithm.api_url),
                        cases=entries)
    outcome = RebuildOutcome(path, tuple(adopted), tuple(no_job), tuple(ambiguous),
                             jobs_read=len(jobs), names_read=len(names))
    with FileLock(oslock_path_for(path)):
        _refuse_existing(path)  # again, under the lock: an apply may have started
        lockmod.save(path, lockfile)
    return replace(outcome, written=True)


def _refuse_existing(path: Path) -> None:
    """InputError when the lockfile is there, or its journal holds any case's event (a
    journal of "begin" alone, left by the lost lockfile's last run, holds nothing)."""
    journal = journal_path_for(path)
    events = lockmod.read_journal(journal)[0] if journal.exists() else []
    for existing, there in ((path, path.exists() or path.is_symlink()),
                            (journal, any(e.get("event") != "begin" for e in events))):
        if there:
            raise InputError(f"{existing} exists: rebuild only writes a lockfile that is "
                             "lost, never over one (its in-doubt records would be lost). "
                             "Move it away first, or write elsewhere with --lockfile PATH "
                             "and compare (`gcbatch lock merge` folds two lockfiles)")


def _record(job: Job, case: Case) -> JobRecord:
    # submitted_at is unknown (the job list has no creation time): left empty
    return JobRecord(pk=job.pk, api_url=job.api_url, status=job.status, submitted_at="",
                     fingerprint=case.fingerprint, inputs=case.digests())


def _choose(found: Sequence[Job]) -> tuple[Job, list[Job]] | None:
    """The case's job among several with its handles: the only one that did not fail
    (the others are earlier attempts); None when that is not so."""
    if len(found) == 1:
        return found[0], []
    standing = [j for j in found if not is_failed(j.status)]
    if len(standing) != 1:
        return None
    return standing[0], [j for j in found if j is not standing[0]]


def _tag(case_id: str, socket: str, filename: str) -> str:
    handle = handle_of(upload_name(case_id, socket, 0, filename, "rebuild")) or ("", "")
    return handle[0]


def _norm(value: Any) -> Any:
    """JSON as :func:`~gcbatch.engine.reconcile.json_equal` compares it: 1.0 is 1."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {str(k): _norm(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _value(value: Any) -> Handle:
    try:
        return ("v", canonical_json(_norm(value)))
    except (TypeError, ValueError):
        return ("?", "")


def _pk(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _case_handles(case: Case, items: Mapping[str, ArchiveItem],
                  kinds: Mapping[str, str]) -> dict[str, Handle | None]:
    """socket → the handle its job's input must carry (None: cannot be found)."""
    handles: dict[str, Handle | None] = {}
    for source in case.inputs:
        kind = source.kind
        if kind in ("value", "json"):
            handles[source.socket] = _value(source.value)
        elif kind == "image":
            handles[source.socket] = ("i", _pk(source.image_url or ""))
        elif kind in ("file", "files"):
            paths = [p for p in source.paths if not p.name.endswith(".raw")] or source.paths
            name = paths[0].name if paths else "file"
            handles[source.socket] = ("t", _tag(case.id, source.socket, name))
        else:  # archive_item
            item = items.get(source.item_pk or "")
            value = item.value_for(source.item_socket or source.socket) if item else None
            if value is None:
                handles[source.socket] = None
            elif kinds.get(source.socket) == "Image" or value.image:
                handles[source.socket] = ("i", _pk(value.image or ""))
            elif kinds.get(source.socket) == "File" or value.file:
                handles[source.socket] = ("t", _tag(case.id, source.socket,
                                                    file_name_of(value.file or "")))
            else:
                handles[source.socket] = _value(value.value)
    return handles


def _could_be(job_key: tuple[Any, ...], case_key: tuple[Any, ...], tagged: set[str]) -> bool:
    """A job without some upload-made inputs whose other inputs are the case's."""
    have, want = dict(job_key), dict(case_key)
    missing = set(want) - set(have)
    return (bool(missing) and missing <= tagged and not set(have) - set(want)
            and all(want[s] == h for s, h in have.items()))


def _shape(handles: Mapping[str, Handle | None]) -> tuple[frozenset[str], int]:
    return frozenset(handles), len(handles)


def _key(handles: Mapping[str, Handle | None]) -> tuple[Any, ...]:
    return tuple((socket, handles[socket]) for socket in sorted(handles))


def _job_key(job: Job, tagged: set[str], names: Mapping[str, str]) -> tuple[Any, ...] | None:
    """The job's inputs as handles, in :func:`_key`'s form; None when it has a socket
    twice (no case's)."""
    handles: dict[str, Handle | None] = {}
    for value in job.inputs:
        socket = value.socket_slug
        if socket in handles:
            return None
        if socket in tagged and (value.image or value.file):
            name = names.get(_pk(value.image)) if value.image else file_name_of(value.file or "")
            handle = handle_of(name) if name else None
            handles[socket] = ("t", handle[0]) if handle else ("?", "")
        elif value.image:
            handles[socket] = ("i", _pk(value.image))
        elif value.file:
            handles[socket] = ("t", (handle_of(file_name_of(value.file)) or ("?", ""))[0])
        else:
            handles[socket] = _value(value.value)
    return _key(handles)
