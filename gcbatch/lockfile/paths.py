"""Where a study's lockfile, journal and OS lock live: one decision, made here.

All three sit beside the manifest and share its stem, so a study folder carries its own
memory and two studies in one folder never share one. The sandbox gets its own lockfile
name: an experiment against the emulator never touches the lockfile of the real server.
"""

from __future__ import annotations

from pathlib import Path


def lockfile_path_for(manifest: Path, *, sandbox: bool = False, shard: str = "") -> Path:
    """``study.yaml`` → ``study.lock`` (``study.sandbox.lock`` for the sandbox); a shard's
    own: ``study.shard-0-of-4.lock`` (``shard`` is its label), so the processes of N
    shards never share a lockfile, a journal or an OS lock."""
    suffix = ".sandbox.lock" if sandbox else ".lock"
    if shard:
        suffix = f".{shard}{suffix}"
    return manifest.with_name(manifest.stem + suffix)


def journal_path_for(lockfile: Path) -> Path:
    """``study.lock`` → ``study.lock.journal`` (named after the lockfile it feeds)."""
    return lockfile.with_name(lockfile.name + ".journal")


def oslock_path_for(lockfile: Path) -> Path:
    """``study.lock`` → ``study.lock.lck`` (named after the lockfile it guards)."""
    return lockfile.with_name(lockfile.name + ".lck")
