"""The lockfile, its journal and its OS lock: gcbatch's memory of what it submitted.

Three files live beside the manifest (``study.yaml`` → ``study.lock``; against the
sandbox ``study.sandbox.lock``):

``study.lock``
    JSON, deterministic bytes (sorted keys, 2-space indent, trailing newline), so it diffs
    and merges well in git. Written atomically (temp file in the same folder, fsync,
    ``os.replace``, fsync of the folder). It never holds the token.
    ``format_version`` 2 leaves out what the reader fills in (a 100,000-case lockfile:
    59 MB instead of 96): an entry's ``history`` when empty, ``pending`` when none, and its
    job's ``fingerprint``/``inputs`` when they equal the entry's own (the usual case: the
    entry describes what its job got); other jobs and history records are in full, as in
    journal events. Format 1 (everything in full) is still read. ::

        {"algorithm": {"api_url": "...", "pk": "...", "slug": "..."},
         "cases": {"<case id>": {"fingerprint": "sha256:…",
                                 "history": [<older job records, in full>],
                                 "inputs": {"<socket slug>": "sha256:…"},
                                 "job": {"api_url": "...", "pk": "...", "status": "Queued",
                                         "submitted_at": "2026-11-27T14:00:00Z"} | null,
                                 "pending": {"fingerprint", "inputs", "payload",
                                             "started_at", "uploads"}}},
         "format_version": 2,
         "server": "https://grand-challenge.org/api/v1/"}

``study.lock.journal``
    JSON lines, one event each, appended and fsynced *before* we act on it (intent) and
    right after (outcome). Appending is O(1) per event, where rewriting a 100k-case
    lockfile per event would not be. :func:`replay` folds events into a :class:`Lockfile`;
    a :meth:`LockfileStore.checkpoint` saves the folded lockfile and truncates the journal.
``study.lock.lck``
    Held with an OS lock for the whole run (the ``filelock`` package: ``flock`` on POSIX,
    ``msvcrt.locking`` on Windows); ``study.lock.lck.holder`` beside it holds ``{"pid",
    "host", "started_at"}`` so a second gcbatch can say who is in the way.

Journal events (every one carries ``"event"``, ``"case"`` (except ``begin``) and ``"at"``;
the vocabulary is :class:`~gcbatch.lockfile.journal.EventKind`):

``begin``      ``server``, ``algorithm`` — written first in every fresh journal, so a
               crash before the first checkpoint still leaves a usable record.
``intent``     ``fingerprint``, ``inputs`` (socket → digest), ``uploads`` (filenames we
               chose), ``payload`` (inputs as sent, free JSON for reconciliation).
``submitted``  ``job`` (a :class:`JobRecord` as JSON): the server created it.
``rejected``   ``reason``: the server definitely created nothing.
``status``     ``job`` (pk) and ``status``: the last status seen.
``adopted``    ``job``: reconciliation found the job an in-doubt intent had created.

An ``intent`` with no later outcome for its case means the case is **in doubt**
(:attr:`CaseEntry.pending` is set after replay).

The executor should use :class:`LockfileStore`, which ties the three together and is
thread-safe; the free functions are its parts (and what ``plan`` uses read-only).

The package, one concern per module; each imports only modules above it in this list
so there is no cycle::

    paths     where the three files live, beside the manifest
    records   the frozen values and their JSON forms; which server a lockfile belongs to
    encode    Lockfile → deterministic text (format 2), the fast writer
    decode    text (format 1 or 2) → Lockfile, the fast reader
    journal   the event vocabulary, the append-only journal, folding events (replay)
    oslock    the OS lock that keeps a second gcbatch out
    disk      load (with the journal folded in, read-only) and atomic save
    store     LockfileStore: lock → load → replay → journal-first events → checkpoints

This module is the package's face: import from here (``from gcbatch.lockfile import
LockfileStore``); the submodules are its rooms.
"""

from __future__ import annotations

from gcbatch.lockfile.decode import READ_FORMAT_VERSIONS, parse
from gcbatch.lockfile.disk import load, save
from gcbatch.lockfile.encode import dumps, indented_json
from gcbatch.lockfile.journal import EventKind, Journal, fold_case, read_journal, replay
from gcbatch.lockfile.oslock import FileLock
from gcbatch.lockfile.paths import journal_path_for, lockfile_path_for, oslock_path_for
from gcbatch.lockfile.records import (
    FORMAT_VERSION,
    AlgorithmRef,
    CaseEntry,
    Intent,
    JobRecord,
    Lockfile,
    check_belongs,
    normalize_server,
    utc_now,
)
from gcbatch.lockfile.store import LockfileStore

__all__ = [
    "FORMAT_VERSION",
    "READ_FORMAT_VERSIONS",
    "AlgorithmRef",
    "CaseEntry",
    "EventKind",
    "FileLock",
    "Intent",
    "JobRecord",
    "Journal",
    "Lockfile",
    "LockfileStore",
    "check_belongs",
    "dumps",
    "fold_case",
    "indented_json",
    "journal_path_for",
    "load",
    "lockfile_path_for",
    "normalize_server",
    "oslock_path_for",
    "parse",
    "read_journal",
    "replay",
    "save",
    "utc_now",
]
