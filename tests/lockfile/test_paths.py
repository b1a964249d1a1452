"""Where the lockfile, its journal and its OS lock live (gcbatch.lockfile.paths)."""

from __future__ import annotations

from pathlib import Path

from gcbatch import lockfile as lf


def test_paths_beside_the_manifest(tmp_path: Path) -> None:
    m = tmp_path / "study.yaml"
    assert lf.lockfile_path_for(m) == tmp_path / "study.lock"
    assert lf.lockfile_path_for(m, sandbox=True) == tmp_path / "study.sandbox.lock"
    assert lf.journal_path_for(tmp_path / "study.lock").name == "study.lock.journal"
    assert lf.oslock_path_for(tmp_path / "study.lock").name == "study.lock.lck"
