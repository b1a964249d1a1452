"""``gcbatch lock merge``: shards' lockfiles (or colleagues' copies) folded into one.

Three ways to name what is merged:

- a manifest: its shard lockfiles, ``<stem>.shard-I-of-N.lock`` beside it (every shard
  of one N must be there), into the study's lockfile ``<stem>.lock``;
- lockfiles and ``--output``: those files into that one;
- git's merge driver (``git_driver``): ``%A`` and ``%B``, the result written to ``%A``;
  no journal is read and no OS lock is taken (git hands over plain copies).

Every input is read with its journal folded in (a shard that crashed is merged with what
its journal holds) under its OS lock, so a shard still running is refused, not merged
half-way; an existing output lockfile is an input too (nothing in it is lost). The
output is written atomically under its own OS lock, and its journal emptied (its events
are in the merged lockfile). Refusals (conflicts, other servers or algorithms, a missing
shard) write nothing. Nothing is sent to any server.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from gcbatch import lockfile as lockmod
from gcbatch.errors import ConfigError, LockfileError
from gcbatch.lockfile import FileLock, journal_path_for, lockfile_path_for, oslock_path_for
from gcbatch.lockfile.merge import Conflict, merge_lockfiles, pairs
from gcbatch.operations.study import Study

__all__ = ["MergeOutcome", "merge", "merge_shards", "refuse_unmerged_shards", "shard_lockfiles",
           "take_in_whole"]


@dataclass(frozen=True)
class MergeOutcome:
    """What a merge did (or refused to do: ``written`` False, ``conflicts`` say why)."""

    output: Path
    inputs: tuple[Path, ...]
    cases: int = 0
    jobs: int = 0
    in_doubt: int = 0
    #: cases found in more than one input (0 for shards: they are disjoint)
    shared: int = 0
    conflicts: tuple[Conflict, ...] = ()
    written: bool = False


def shard_lockfiles(manifest: Path, *, sandbox: bool = False) -> list[Path]:
    """The shard lockfiles beside ``manifest``: one N, every shard 0..N-1 (ConfigError
    naming what is missing or mixed, exit 2)."""
    plain = lockfile_path_for(manifest, sandbox=sandbox)
    suffix = plain.name[len(manifest.stem):]  # ".lock" / ".sandbox.lock"
    pattern = re.compile(re.escape(manifest.stem) + r"\.shard-(\d+)-of-(\d+)" + re.escape(suffix)
                         + "$")
    found: dict[int, dict[int, Path]] = {}
    for path in sorted(manifest.parent.iterdir()):
        match = pattern.match(path.name)
        if match is not None:
            index, count = int(match.group(1)), int(match.group(2))
            found.setdefault(count, {})[index] = path
    if not found:
        raise ConfigError(f"no shard lockfiles beside {manifest} (expected "
                          f"{manifest.stem}.shard-I-of-N{suffix}, written by "
                          "`gcbatch apply --shard I/N`)")
    if len(found) > 1:
        counts = ", ".join(f"{n} shards" for n in sorted(found))
        raise ConfigError(f"shard lockfiles of different splits beside {manifest} ({counts}); "
                          "name the lockfiles to merge with --output")
    count, shards = next(iter(found.items()))
    missing = [i for i in range(count) if i not in shards]
    if missing:
        listed = ", ".join(f"{i}/{count}" for i in missing)
        raise ConfigError(f"shard(s) {listed} of {manifest} have no lockfile (did every "
                          "`apply --shard` run?); nothing merged")
    return [shards[i] for i in range(count)]


def merge_shards(manifest: Path, *, sandbox: bool = False) -> MergeOutcome:
    """Every shard's lockfile of ``manifest`` into the study's own lockfile."""
    return merge(shard_lockfiles(manifest, sandbox=sandbox),
                 lockfile_path_for(manifest, sandbox=sandbox))


def merge(inputs: Sequence[Path], output: Path, *, git_driver: bool = False) -> MergeOutcome:
    """Fold ``inputs`` (and ``output`` when it exists) into ``output``. Raises
    :class:`LockfileError` / :class:`LockHeldError` (exit 2) before writing anything."""
    paths = _unique([*inputs, output] if not git_driver else inputs)
    with contextlib.ExitStack() as stack:
        if not git_driver:
            for path in sorted(paths, key=str):
                stack.enter_context(FileLock(oslock_path_for(path)))
        loaded = []
        for path in paths:
            lockfile = lockmod.load(path, replay_journal=not git_driver)
            if lockfile is None:
                if path == output:
                    continue  # no output yet: made here
                raise LockfileError(f"{path}: no such lockfile (nor journal)")
            loaded.append((str(path), lockfile))
        result = merge_lockfiles(loaded)
        merged = result.lockfile
        outcome = MergeOutcome(
            output=output, inputs=tuple(paths), cases=len(merged.cases),
            jobs=sum(1 for e in merged.cases.values() if e.job is not None),
            in_doubt=len(merged.in_doubt), shared=result.shared,
            conflicts=result.conflicts)
        if result.conflicts:
            return outcome
        lockmod.save(output, merged)
        if not git_driver:
            # its events are in the merged lockfile now; replaying them again on top of
            # it is what an emptied journal prevents
            with contextlib.suppress(FileNotFoundError):
                os.unlink(journal_path_for(output))
    return replace(outcome, written=True)


def _unique(paths: Sequence[Path]) -> list[Path]:
    seen: dict[str, Path] = {}
    for path in paths:
        key = os.path.normcase(os.path.abspath(path))
        seen.setdefault(key, path)
    return list(seen.values())


# --------------------------------------------------------------------------- shards and
# the whole study, kept from diverging (apply calls these before it opens its lockfile)


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def refuse_unmerged_shards(study: Study) -> None:
    """A whole-study apply while shard lockfiles hold jobs its lockfile does not know
    would submit those cases again: ConfigError (exit 2, nothing sent) until they are
    merged. Shard lockfiles older than the study's lockfile were merged already; a newer
    one is read, and passes when the study's lockfile knows all it holds."""
    whole = lockfile_path_for(study.path, sandbox=study.sandbox)
    if study.shard is not None or study.lockfile != whole:
        return
    pattern = re.compile(re.escape(study.path.stem) + r"\.shard-\d+-of-\d+"
                         + re.escape(whole.name[len(study.path.stem):]) + "$")
    whole_mtime = _mtime(whole)
    newer = sorted(p.name for p in study.path.parent.iterdir() if pattern.match(p.name)
                   and (whole_mtime is None or (_mtime(p) or 0) > whole_mtime
                        or (_mtime(journal_path_for(p)) or 0) > whole_mtime))
    if newer:
        known = lockmod.load(whole, server=study.server, algorithm=study.algorithm)
        newer = [name for name in newer
                 if not _knows(known, lockmod.load(study.path.parent / name,
                                                   server=study.server,
                                                   algorithm=study.algorithm))]
    if newer:
        raise ConfigError(
            f"{', '.join(newer[:4])}{' ...' if len(newer) > 4 else ''} beside {study.path} "
            f"hold jobs that {whole.name} may not know (written after it): merge them first "
            f"(`gcbatch lock merge {study.path}`), or go on with --shard I/N. Nothing sent")


def _knows(whole: lockmod.Lockfile | None, shard: lockmod.Lockfile | None) -> bool:
    """Whether ``whole`` already has every job and in-doubt case ``shard`` has."""
    if shard is None or not shard.cases:
        return True
    if whole is None:
        return False
    result = merge_lockfiles([("whole", whole), ("shard", shard)])
    return (not result.conflicts and pairs(result.lockfile) == pairs(whole)
            and result.lockfile.in_doubt == whole.in_doubt)


def take_in_whole(study: Study) -> int:
    """Before a shard's apply: fold into its lockfile what the study's own lockfile
    knows of the shard's cases, when that lockfile was written after the shard's (a
    merge, or a whole-study run that submitted new cases) and knows a job or a case in
    doubt the shard's does not: the shard then never submits a case the whole study
    already has a job for. Returns the cases taken in. A
    conflict (one case, two jobs) is a LockfileError, nothing written."""
    shard = study.shard
    whole = lockfile_path_for(study.path, sandbox=study.sandbox)
    if shard is None or study.lockfile == whole:
        return 0
    whole_mtime = _mtime(whole)
    if whole_mtime is None:
        return 0
    own_mtime = max(_mtime(study.lockfile) or 0, _mtime(journal_path_for(study.lockfile)) or 0)
    if own_mtime > whole_mtime:
        return 0
    with FileLock(oslock_path_for(study.lockfile)):
        theirs = lockmod.load(whole, server=study.server, algorithm=study.algorithm)
        if theirs is None:
            return 0
        subset = replace(theirs, cases={c: e for c, e in theirs.cases.items()
                                        if shard.contains(c)})
        ours = lockmod.load(study.lockfile, server=study.server, algorithm=study.algorithm)
        sources = [(str(whole), subset)] + ([(str(study.lockfile), ours)] if ours else [])
        result = merge_lockfiles(sources)
        if result.conflicts:
            listed = "; ".join(c.describe() for c in result.conflicts[:5])
            raise LockfileError(f"{study.lockfile} and {whole} disagree: {listed}. Nothing "
                                "sent; see README 'Merging lockfiles'")
        merged = result.lockfile
        if ours is not None and pairs(merged) == pairs(ours) \
                and merged.in_doubt == ours.in_doubt:
            return 0  # nothing new for this shard
        lockmod.save(study.lockfile, merged)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(journal_path_for(study.lockfile))
    return len(subset.cases)
