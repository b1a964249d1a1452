"""The settled stamp: a fully locked study re-applied without touching its cases.

Re-applying a study whose every case is locked and unchanged is the common case at scale
(a cron job, a SLURM array run again), and its answer depends only on things whose
*stat* says whether they changed. After an apply in which every case was settled from
cached digests (nothing sent, nothing in doubt, no case built), this module writes
``.gcbatch/<lockfile name>.settled.json`` holding:

- the key: gcbatch's version, the server, the algorithm, the manifest's sha256, the
  lockfile's and its journal's stat (size, mtime, inode);
- every directory a ``foreach`` glob lists, with its mtime (a file added, removed or
  renamed there changes it);
- every file the hash cache vouches for, with its size and mtime (the input files, and
  JSON value files, are among them: a settled case's digests all came from that cache);
- each case's job and last seen status (the summary's lines).

The next apply with the same options checks the key, a stat per directory and per file,
takes the lockfile's OS lock, asks the server for the algorithm (the one request) and
answers from the stamp: every case unchanged. Anything that differs (a file touched, a
directory changed, the lockfile written by another command, an archive generator, a
``--case``/``--retry-failed`` run) falls back to the full path, which is always right;
the stamp is a cache of its answer, never a source of truth. Nothing is stamped while a
file or directory is younger than the hash cache's racy window (its change may not show
in its mtime yet). ``status``/``wait``/``download`` rewrite the lockfile with new
statuses only: they carry the stamp over (:func:`carry`), with those statuses.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcbatch import __version__
from gcbatch.engine.outcomes import ApplySummary, CaseOutcome, Outcome
from gcbatch.files import atomic_write_bytes
from gcbatch.hashing import RACY_WINDOW_NS, FileHasher
from gcbatch.lockfile import AlgorithmRef, journal_path_for
from gcbatch.operations.study import Study
from gcbatch.perf import frozen_instance
from gcbatch.plan import unchanged_reason

__all__ = ["Stamp", "applies_to", "carry", "forget", "lock_key", "read_valid", "stamp_path",
           "write"]

STAMP_VERSION = 2


def stamp_path(study: Study) -> Path:
    return study.state_dir / f"{study.lockfile.name}.settled.json"


def lock_key(lockfile: Path) -> list[Any]:
    """The lockfile's and its journal's (size, mtime_ns, inode); None parts when absent."""
    out: list[Any] = []
    for path in (lockfile, journal_path_for(lockfile)):
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append([st.st_size, st.st_mtime_ns, st.st_ino])
    return out


def _manifest_sha(study: Study) -> str:
    try:
        return hashlib.sha256(study.path.read_bytes()).hexdigest()
    except OSError:
        return ""


def applies_to(study: Study, *, everything: bool, retry_failed: bool) -> bool:
    """Whether a run with these options may use (or write) a stamp."""
    return everything and not retry_failed and not study.archive_slugs


@dataclass(frozen=True)
class Stamp:
    algorithm: AlgorithmRef
    cases: Sequence[Sequence[str]]  # [case id, job pk, status]
    #: the lockfile's key it was made for (:func:`lock_key`)
    lock: list[Any]

    def summary(self, *, requests: int, elapsed: float) -> ApplySummary:
        return SettledSummary(outcomes=(), elapsed=elapsed, requests=requests,
                              rows=self.cases)


@dataclass(frozen=True)
class SettledSummary(ApplySummary):
    """Every case unchanged, as the stamp says: counted without 100,000 outcome objects
    (built only when asked for, by :meth:`of`; ``outcomes`` is left empty)."""

    rows: Sequence[Sequence[str]] = ()

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((kind.value for kind in Outcome), 0)
        counts[Outcome.UNCHANGED.value] = len(self.rows)
        return counts

    def of(self, *kinds: Outcome) -> tuple[CaseOutcome, ...]:
        if Outcome.UNCHANGED not in kinds:
            return ()
        unchanged = Outcome.UNCHANGED
        return tuple(frozen_instance(CaseOutcome, {
            "case": case, "kind": unchanged, "message": unchanged_reason(pk, status),
            "job_pk": pk}) for case, pk, status in self.rows)

    def as_json(self) -> dict[str, Any]:
        data = super().as_json()
        data["cases"] = [{"case": case, "outcome": Outcome.UNCHANGED.value,
                          "message": unchanged_reason(pk, status), "job": pk}
                         for case, pk, status in sorted(self.rows, key=lambda r: r[0])]
        return data


def read_valid(study: Study) -> Stamp | None:
    """The stamp, when everything it depends on is as it was; else None."""
    try:
        data = json.loads(stamp_path(study).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("v") != STAMP_VERSION:
        return None
    try:
        if (data["gcbatch"], data["server"], data["lockfile"], data["lock"]) != (
                __version__, study.server, str(study.lockfile), lock_key(study.lockfile)):
            return None
        if data["algorithm"]["slug"] != study.algorithm or data["manifest"] != \
                _manifest_sha(study):
            return None
        if not _unchanged(data["dirs"], data["files"]):
            return None
        algorithm = AlgorithmRef(**data["algorithm"])
        return Stamp(algorithm=algorithm, cases=data["cases"], lock=data["lock"])
    except (KeyError, TypeError, ValueError):
        return None


def _unchanged(dirs: Sequence[Sequence[Any]], files: dict[str, list[Any]]) -> bool:
    """Every folder's mtime and every file's (size, mtime) as recorded. ``files``:
    folder → [name, size, mtime_ns, name, size, mtime_ns, ...] (compact: 100,000 paths
    in full are most of a stamp's bytes)."""
    stat = os.stat
    try:
        for path, mtime in dirs:
            if stat(path).st_mtime_ns != mtime:
                return False
        for folder, flat in files.items():
            prefix = os.path.join(folder, "")
            for i in range(0, len(flat), 3):
                st = stat(prefix + flat[i])
                if st.st_size != flat[i + 1] or st.st_mtime_ns != flat[i + 2]:
                    return False
    except (OSError, IndexError):
        return False
    return True


def listed_dirs(study: Study) -> list[str] | None:
    """Every directory the manifest's ``foreach`` globs list (None: cannot tell). A glob
    whose first part is a wildcard lists the manifest's own folder, which gcbatch's lock
    files change on every run: such a study is never stamped (keep inputs in a folder)."""
    base = str(study.path.parent)
    out: set[str] = set()
    for spec in study.manifest.cases:
        if spec.foreach is None:
            continue
        if spec.foreach.kind != "glob":
            return None
        pattern = spec.foreach.pattern
        root = "" if os.path.isabs(pattern) else base
        parts = pattern.replace(os.sep, "/").split("/")
        current = [os.path.join(root, "/") if os.path.isabs(pattern) else root]
        if os.path.isabs(pattern):
            parts = parts[1:]
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if last or globlib.has_magic(part):
                # listed (or, for a last literal part, where a new match would appear);
                # a folder only passed through by a literal name is not: gcbatch's own
                # files beside the manifest change the manifest's folder on every run
                out.update(d for d in current if os.path.isdir(d))
            if part == "**":
                walked = []
                for d in current:
                    for top, subdirs, _ in os.walk(d):
                        walked.append(top)
                        out.update(os.path.join(top, s) for s in subdirs)
                current = walked
                continue
            if last:
                break
            nxt: list[str] = []
            for d in current:
                if globlib.has_magic(part):
                    nxt += [m for m in globlib.glob(os.path.join(globlib.escape(d), part))
                            if os.path.isdir(m)]
                elif os.path.isdir(os.path.join(d, part)):
                    nxt.append(os.path.join(d, part))
            current = nxt
    return sorted(out)


def write(study: Study, hasher: FileHasher, summary: ApplySummary,
          algorithm: AlgorithmRef, statuses: dict[str, tuple[str, str]]) -> bool:
    """Stamp this run's answer (see the module docstring); False when it cannot be."""
    dirs = listed_dirs(study)
    if dirs is None:
        return False
    now = time.time_ns()
    dir_stats = []
    for d in dirs:
        try:
            mtime = os.stat(d).st_mtime_ns
        except OSError:
            return False
        if now - mtime < RACY_WINDOW_NS:
            return False
        dir_stats.append([d, mtime])
    files: dict[str, list[Any]] = {}
    for path, size, mtime in hasher.fresh_entries():
        folder, name = os.path.split(path)
        files.setdefault(folder, []).extend((name, size, mtime))
    cases = []
    for outcome in summary.outcomes:
        pk, status = statuses.get(outcome.case, ("", ""))
        if outcome.kind != Outcome.UNCHANGED or not pk or pk != outcome.job_pk:
            return False
        cases.append([outcome.case, pk, status])
    data = {"v": STAMP_VERSION, "gcbatch": __version__, "server": study.server,
            "lockfile": str(study.lockfile), "lock": lock_key(study.lockfile),
            "algorithm": algorithm.as_json(), "manifest": _manifest_sha(study),
            "dirs": dir_stats, "files": files, "cases": cases}
    with contextlib.suppress(OSError):
        atomic_write_bytes(stamp_path(study), json.dumps(data, separators=(",", ":"))
                           .encode("utf-8"), durable=False)
        return True
    return False


def forget(study: Study) -> None:
    with contextlib.suppress(OSError):
        os.unlink(stamp_path(study))


def carry(study: Study, before: list[Any], updates: Iterable[tuple[str, str, str]]) -> None:
    """After a command rewrote the lockfile with new statuses only (``updates``: case,
    job pk, status): move a stamp that was valid for the lockfile as it was ``before`` to
    the lockfile as it is now. Any other stamp is left to fail its check."""
    path = stamp_path(study)
    try:
        data = json.loads(path.read_bytes())
        if data.get("lock") != before:
            return
        new = {(case, pk): status for case, pk, status in updates}
        for row in data["cases"]:
            status = new.get((row[0], row[1]))
            if status is not None:
                row[2] = status
        data["lock"] = lock_key(study.lockfile)
        atomic_write_bytes(path, json.dumps(data, separators=(",", ":")).encode("utf-8"),
                           durable=False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        forget(study)
