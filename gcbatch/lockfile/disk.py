"""The lockfile on disk: read it with its journal folded in, write it atomically.

:func:`load` is the read-only view (``plan``, ``status``, results commands): the journal a
crashed run left is folded in memory, not checkpointed, so looking never writes.
:func:`save` replaces the file atomically (part file, fsync, rename, fsync of the folder),
so a reader, or a run after a power cut, sees the old lockfile or the new one, never half.
"""

from __future__ import annotations

from pathlib import Path

from gcbatch.errors import LockfileError
from gcbatch.files import atomic_write_bytes, read_state
from gcbatch.jsonvalues import MAX_DEPTH, too_deep
from gcbatch.lockfile.decode import parse
from gcbatch.lockfile.encode import dumps
from gcbatch.lockfile.journal import read_journal, replay
from gcbatch.lockfile.paths import journal_path_for
from gcbatch.lockfile.records import Lockfile, check_belongs


def load(
    path: Path,
    *,
    server: str | None = None,
    algorithm: str | None = None,
    replay_journal: bool = True,
) -> Lockfile | None:
    """Read ``path`` (and fold its journal in). ``None`` when neither exists.

    With ``server``/``algorithm`` given, a lockfile for anything else is refused.
    Read-only: the journal is folded in memory, not checkpointed.
    """
    return load_as_on_disk(path, server=server, algorithm=algorithm,
                           replay_journal=replay_journal)[0]


def load_as_on_disk(
    path: Path,
    *,
    server: str | None = None,
    algorithm: str | None = None,
    replay_journal: bool = True,
) -> tuple[Lockfile | None, bool]:
    """:func:`load`, and whether the result is exactly what the file holds (it exists and
    no journal event was folded in): then there is nothing to write back (the store's
    open of a fully locked 100,000-case study rewrites nothing)."""
    lockfile: Lockfile | None = None
    try:
        data = read_state(path, "lockfile")
    except OSError as exc:
        raise LockfileError(f"{path}: cannot read lockfile: {exc.strerror}") from None
    if data is not None:
        lockfile = _parse(data, path)
    as_on_disk = lockfile is not None
    if replay_journal:
        events, _ = read_journal(journal_path_for(path))
        folded = replay(lockfile, events, source=str(journal_path_for(path)))
        if folded is not lockfile:  # (a journal of "begin" alone changes nothing)
            as_on_disk = False
            lockfile = folded
    if lockfile is not None:
        check_belongs(lockfile, source=str(path), server=server, algorithm=algorithm)
    return lockfile, as_on_disk


def _parse(data: bytes, path: Path) -> Lockfile:
    """The lockfile in ``data``, read like any input: not UTF-8, nested beyond reason
    (Python's decoder would overflow its stack) or with an in-doubt intent whose payload
    could not be written back is a :class:`LockfileError` naming the place."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise LockfileError(f"{path}:{line}:{col}: not UTF-8 text; a lockfile is what "
                            "gcbatch wrote, UTF-8 JSON (was it edited or replaced?)") from None
    try:
        lockfile = parse(text, source=str(path))
    except RecursionError:
        lockfile = None
    if lockfile is None or any(entry.pending is not None and too_deep(entry.pending.payload)
                               for entry in lockfile.cases.values()):
        raise LockfileError(f"{path}: nested more than {MAX_DEPTH} levels deep; not a "
                            "lockfile gcbatch wrote")
    return lockfile


def save(path: Path, lockfile: Lockfile) -> None:
    """Atomically write the lockfile's deterministic text to ``path`` (never through a
    symbolic link planted at its name)."""
    atomic_write_bytes(path, dumps(lockfile).encode("utf-8"), state="lockfile")
