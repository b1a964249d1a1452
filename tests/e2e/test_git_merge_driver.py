"""The documented git merge driver: two branches that each locked other cases merge
into one lockfile with both, and a real conflict stays a conflict."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gcbatch import lockfile as lockmod
from gcbatch.lockfile import AlgorithmRef, CaseEntry, JobRecord, Lockfile

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

SERVER = "https://gc.example/api/v1/"
ROOT = Path(__file__).resolve().parents[2]


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          timeout=60)


def _save(path: Path, jobs: dict[str, str]) -> None:
    cases = {case: CaseEntry("sha256:f", job=JobRecord(
        pk, f"{SERVER}algorithms/jobs/{pk}/", "Succeeded", "2026-12-04T10:00:00Z",
        "sha256:f")) for case, pk in jobs.items()}
    lockmod.save(path, Lockfile(SERVER, AlgorithmRef("alg", "a", ""), cases))


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.org")
    _git(repo, "config", "user.name", "t")
    (repo / ".gitattributes").write_text("*.lock merge=gcbatch-lock\n")
    driver = f"{shlex.quote(sys.executable)} -m gcbatch lock merge --git %A %B"
    _git(repo, "config", "merge.gcbatch-lock.name", "gcbatch lockfile merge")
    _git(repo, "config", "merge.gcbatch-lock.driver", driver)
    _save(repo / "study.lock", {"p1": "j1"})
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    return repo


def _branches(repo: Path, ours: dict[str, str], theirs: dict[str, str]) -> None:
    _git(repo, "checkout", "-qb", "colleague")
    _save(repo / "study.lock", theirs)
    _git(repo, "commit", "-qam", "theirs")
    _git(repo, "checkout", "-q", "main")
    _save(repo / "study.lock", ours)
    _git(repo, "commit", "-qam", "ours")


def test_branches_locking_other_cases_merge_cleanly(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _branches(repo, {"p1": "j1", "p2": "j2"}, {"p1": "j1", "p3": "j3"})
    merged = subprocess.run(["git", "-C", str(repo), "merge", "-q", "colleague", "-m", "m"],
                            capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert merged.returncode == 0, merged.stderr + merged.stdout
    locked = lockmod.load(repo / "study.lock")
    assert locked is not None
    assert {c: e.job.pk for c, e in locked.cases.items() if e.job} == {
        "p1": "j1", "p2": "j2", "p3": "j3"}


def test_one_case_two_jobs_stays_a_conflict(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _branches(repo, {"p1": "j1", "p2": "job-ours"}, {"p1": "j1", "p2": "job-theirs"})
    merged = subprocess.run(["git", "-C", str(repo), "merge", "colleague", "-m", "m"],
                            capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert merged.returncode != 0
    assert "job-ours" in merged.stderr + merged.stdout or "CONFLICT" in merged.stdout
