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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gcbatch import lockfile as lockmod
from gcbatch.errors import ConfigError, LockfileError
from gcbatch.lockfile import FileLock, journal_path_for, lockfile_path_for, oslock_path_for
from gcbatch.lockfile.merge import Conflict, merge_lockfiles

__all__ = ["MergeOutcome", "merge", "merge_shards", "shard_lockfiles"]


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
    return MergeOutcome(**{**outcome.__dict__, "written": True})


def _unique(paths: Sequence[Path]) -> list[Path]:
    seen: dict[str, Path] = {}
    for path in paths:
        key = os.path.normcase(os.path.abspath(path))
        seen.setdefault(key, path)
    return list(seen.values())


def _iter_paths(paths: Sequence[Path]) -> Iterator[Path]:  # pragma: no cover - helper
    yield from paths
