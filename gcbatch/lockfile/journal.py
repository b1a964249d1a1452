"""The journal: what gcbatch is about to do and what came of it, durable before it acts.

``study.lock.journal`` holds JSON lines, one event each (``json.dumps`` with sorted keys
and no spaces), appended and fsynced *before* the request it announces (an ``intent``)
and right after its answer (an outcome). Appending costs O(1) per event, where rewriting
a 100,000-case lockfile per event would not; a checkpoint folds the journal into the
lockfile and truncates it (:class:`~gcbatch.lockfile.store.LockfileStore`).

Every event carries ``"event"`` (an :class:`EventKind`), ``"at"`` and, except ``begin``,
``"case"``; what else each kind carries is in :class:`EventKind`. An ``intent`` with no
later outcome for its case leaves the case **in doubt** (its entry's ``pending`` is set).

Reading is forgiving only where a crash can leave a mark: a last line without its newline
is a torn write and is ignored; anything malformed before it is corruption and refused.
Folding (:func:`fold_case`, :func:`replay`) is pure and idempotent over a state that
already holds an event, so replaying after a crash between a checkpoint's save and its
truncation is harmless.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import IO, Any

from gcbatch.errors import LockfileError
from gcbatch.files import open_state, read_state
from gcbatch.jsonvalues import MAX_DEPTH, too_deep
from gcbatch.lockfile.records import (
    AlgorithmRef,
    CaseEntry,
    Intent,
    JobRecord,
    Lockfile,
    Malformed,
    check_belongs,
)


class EventKind(str, Enum):
    """The journal's vocabulary: the ``"event"`` of each line.

    A ``str`` Enum, so an event holding a member is written as the same JSON text as one
    holding the plain string, and events read back from the file (plain strings) compare
    equal to the members. There is no ``forget``: dropping a case is not journalled, it
    checkpoints at once (:meth:`~gcbatch.lockfile.store.LockfileStore.forget`).
    """

    #: ``server``, ``algorithm``: written first in every fresh journal, so a crash before
    #: the first checkpoint still leaves a usable record of whose lockfile this is.
    BEGIN = "begin"
    #: ``fingerprint``, ``inputs`` (socket → digest), ``uploads`` (filenames we chose),
    #: ``payload`` (inputs as sent, free JSON for reconciliation): before the job POST.
    INTENT = "intent"
    #: ``job`` (a :class:`JobRecord` in full): the server created it.
    SUBMITTED = "submitted"
    #: ``job``: reconciliation found the job an in-doubt intent had created.
    ADOPTED = "adopted"
    #: ``reason``: the server definitely created nothing.
    REJECTED = "rejected"
    #: ``job`` (pk) and ``status``: the last status seen.
    STATUS = "status"

    def __str__(self) -> str:
        # the JSON word in messages ("status event without a case id"), as StrEnum would
        # give; that needs Python 3.11, and gcbatch still runs on 3.10
        return self.value


# The words as plain strings for the comparisons made per event while folding (a journal
# may hold tens of thousands): looking a member up on an Enum class costs ~0.3 µs a time,
# which made replaying 75,000 events 12% slower; a module global costs next to nothing.
_BEGIN, _INTENT, _SUBMITTED, _ADOPTED, _REJECTED, _STATUS = (
    EventKind.BEGIN.value, EventKind.INTENT.value, EventKind.SUBMITTED.value,
    EventKind.ADOPTED.value, EventKind.REJECTED.value, EventKind.STATUS.value)


def read_journal(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The events in a journal and the byte length of its well-formed prefix.

    A last line without its newline is a write torn by a crash: it is ignored (the event
    it held never took effect as far as anyone knows). Anything malformed before the last
    line is corruption and refused, as is a journal that is a link, a folder or no
    regular file (:func:`gcbatch.files.read_state`).
    """
    try:
        data = read_state(path, "journal", in_place=True)
    except OSError as exc:
        raise LockfileError(f"{path}: cannot read the journal: {exc.strerror}") from None
    if data is None:
        return [], 0
    events: list[dict[str, Any]] = []
    good = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        last = number == len(lines)
        if last:
            break  # bytes after the final newline: empty, or a torn write
        try:
            event = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LockfileError(f"{path}:{number}: corrupt journal line") from None
        except RecursionError:
            event = None  # (nested beyond Python's own limit)
        # (only an intent's payload is free-form: every other field is checked by type)
        if event is None or (isinstance(event, dict) and event.get("event") == _INTENT
                             and too_deep(event.get("payload"))):
            raise LockfileError(f"{path}:{number}: journal line nested more than "
                                f"{MAX_DEPTH} levels deep; not one gcbatch wrote")
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            raise LockfileError(f"{path}:{number}: journal line is not an event")
        events.append(event)
        good += len(raw) + 1
    return events, good


# --------------------------------------------------------------------------- folding


def _job_from_event(event: Mapping[str, Any], source: str) -> JobRecord:
    try:
        return JobRecord.from_json(event.get("job"))
    except Malformed as exc:
        raise LockfileError(f"{source}: {event.get('event')} event: {exc}") from None


def apply_begin(lockfile: Lockfile | None, event: Mapping[str, Any], *, source: str) -> Lockfile:
    """A ``begin`` event: the lockfile it opens, or the one it continues (checked)."""
    server = str(event.get("server") or "")
    try:
        algorithm = AlgorithmRef.from_json(event.get("algorithm"))
    except Malformed as exc:
        raise LockfileError(f"{source}: begin event: {exc}") from None
    if lockfile is None:
        return Lockfile(server=server, algorithm=algorithm)
    check_belongs(lockfile, source=source, server=server, algorithm=algorithm.slug)
    if algorithm.pk and not lockfile.algorithm.pk:
        return replace(lockfile, algorithm=algorithm)
    return lockfile


def case_of(event: Mapping[str, Any], *, source: str) -> str:
    """The case id of a per-case event (refused when it has none)."""
    case = event.get("case")
    if not isinstance(case, str):
        raise LockfileError(f"{source}: {event.get('event')} event without a case id")
    return case


def fold_case(entry: CaseEntry | None, event: Mapping[str, Any], *, source: str) -> CaseEntry:
    """Fold one per-case journal event (anything but ``begin``) into that case's entry.

    Pure and O(1) in the number of cases: it sees one entry only (``None`` for a case the
    lockfile does not know yet), which is what lets :class:`LockfileStore` and
    :func:`replay` keep their state in one mutable dict instead of copying it per event.
    """
    kind = event.get("event")
    if entry is None:
        entry = CaseEntry()
    at = str(event.get("at") or "")
    if kind == _INTENT:
        try:
            intent = Intent.from_json({**event, "started_at": at})
        except Malformed as exc:
            raise LockfileError(f"{source}: intent event: {exc}") from None
        return replace(entry, pending=intent)
    if kind in (_SUBMITTED, _ADOPTED):
        job = _job_from_event(event, source)
        if any(old.pk == job.pk for old in entry.history):
            # an old event replayed over a state that already moved on (a crash between
            # checkpoint save and journal truncation): it only resolves its own intent
            pending = entry.pending
            if pending is not None and pending.fingerprint == job.fingerprint:
                pending = None
            return replace(entry, pending=pending)
        if not job.inputs and entry.pending is not None:
            job = replace(job, inputs=entry.pending.inputs)
        history = entry.history
        if entry.job is not None and entry.job.pk != job.pk:
            history = (*history, entry.job)
        return CaseEntry(fingerprint=job.fingerprint, inputs=job.inputs, job=job,
                         history=history, pending=None)
    if kind == _REJECTED:
        return replace(entry, pending=None)
    if kind == _STATUS:
        status = str(event.get("status") or "")
        pk = event.get("job")
        if entry.job is not None and (pk is None or pk == entry.job.pk):
            return replace(entry, job=replace(entry.job, status=status))
        history = tuple(replace(j, status=status) if j.pk == pk else j for j in entry.history)
        return replace(entry, history=history)
    raise LockfileError(f"{source}: unknown journal event {kind!r}")


def replay(
    lockfile: Lockfile | None, events: list[dict[str, Any]], *, source: str = "<journal>"
) -> Lockfile | None:
    """Fold journal events, in order, into ``lockfile`` (pure; O(cases + events)).

    ``cases`` is copied once, on the first per-case event, and folded in place; a journal
    of ``begin`` events alone returns ``lockfile`` itself (callers use that identity).
    """
    cases: dict[str, CaseEntry] | None = None  # our own copy, once a case event came
    for event in events:
        if event.get("event") == _BEGIN:
            # the header only; the final replace() below puts ``cases`` back in
            lockfile = apply_begin(lockfile, event, source=source)
            continue
        if lockfile is None:
            raise LockfileError(f"{source}: journal does not start with a begin event")
        case = case_of(event, source=source)
        if cases is None:
            cases = dict(lockfile.cases)
        cases[case] = fold_case(cases.get(case), event, source=source)
    if cases is not None and lockfile is not None:
        lockfile = replace(lockfile, cases=cases)
    return lockfile


# --------------------------------------------------------------------------- writing


def _line(event: Mapping[str, Any]) -> bytes:
    """One event as its journal line (sorted keys, no spaces, UTF-8, newline)."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8") + b"\n"


class Journal:
    """An append-only, fsync-per-event JSON-lines file.

    Group commit: :meth:`write` appends and flushes (callers serialise writes, e.g. under
    the store's mutex) and returns a sequence number; :meth:`sync` makes everything up to
    it durable, and ONE fsync covers every write made before it, so threads journalling
    at the same time share fsyncs instead of queueing for one each (with 32 workers and a
    1-3 ms fsync that is the difference between ~300 and ~10,000 events/s). Nobody acts
    on an event before its ``sync`` returned, so the write-ahead rule holds.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        _, good = read_journal(path)
        # cut a torn tail so the next event starts on its own line; never through a link
        # planted at its name (appending would write into the file it points to)
        fd = open_state(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, "journal")
        self._fh: IO[bytes] = os.fdopen(fd, "ab")
        if self._fh.tell() != good:
            self._fh.truncate(good)
            self._fh.seek(good)
        self._written = 0  # sequence number of the last write (flushed to the OS)
        self._synced = 0  # every write up to this one is on disk
        self._sync_lock = threading.Lock()

    def write(self, event: Mapping[str, Any]) -> int:
        """Append and flush one event (not yet durable); return its sequence number."""
        self._fh.write(_line(event))
        self._fh.flush()
        self._written += 1
        return self._written

    def sync(self, upto: int) -> None:
        """Return once write number ``upto`` is durable (sharing an fsync if one runs)."""
        if self._synced >= upto:
            return
        with self._sync_lock:
            if self._synced >= upto:
                return  # another thread's fsync covered it while we waited
            target = self._written
            os.fsync(self._fh.fileno())
            self._synced = max(self._synced, target)

    def append(self, event: Mapping[str, Any]) -> None:
        """Append one event and return once it is durable."""
        self.sync(self.write(event))

    def append_many(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Append several events with ONE write and ONE fsync (a refresh of 2000 statuses
        must not cost 2000 fsyncs). A crash mid-write leaves a prefix of whole lines plus
        at most one torn line, which :func:`read_journal` ignores."""
        data = b"".join(_line(e) for e in events)
        if not data:
            return
        self._fh.write(data)
        self._fh.flush()
        self._written += 1  # one write, made durable by one (possibly shared) fsync
        self.sync(self._written)

    def truncate(self) -> None:
        """Empty the journal durably (its events are in the checkpointed lockfile now)."""
        self._fh.truncate(0)
        self._fh.seek(0)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        # what was written before is in the checkpointed lockfile now: nothing to wait for
        self._synced = self._written

    def close(self) -> None:
        self._fh.close()
