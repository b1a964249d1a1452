"""Shell completion (click's own: ``_GCBATCH_COMPLETE``): commands, options, and
``--case`` ids read from the manifest, as the README's lines for bash/zsh/fish use it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def complete(words: str, cwd: Path, shell: str = "bash") -> list[str]:
    env = {**os.environ, "_GCBATCH_COMPLETE": f"{shell}_complete",
           "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    done = subprocess.run([sys.executable, "-m", "gcbatch"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [line for line in done.stdout.splitlines() if line]


@pytest.mark.slow
def test_commands_options_and_case_ids(tmp_path: Path) -> None:
    (tmp_path / "scans").mkdir()
    for name in ("p001", "p002", "q003"):
        (tmp_path / "scans" / f"{name}.mha").write_bytes(b"x")
    (tmp_path / "study.yaml").write_text(
        "version: 1\nalgorithm: lung-nodule-detector\ncases:\n"
        "  - foreach: {glob: scans/*.mha}\n    id: 'scan-{stem}'\n"
        "    inputs:\n      ct-image: {file: '{path}'}\n"
        "  - id: extra-1\n    inputs:\n      ct-image: {file: scans/p001.mha}\n",
        encoding="utf-8")
    assert complete("gcbatch in", tmp_path) == ["plain,init"]
    assert "plain,--algorithm" in complete("gcbatch schema --al", tmp_path)
    assert complete("gcbatch status study.yaml --case scan-p", tmp_path) == [
        "plain,scan-p001", "plain,scan-p002"]
    assert complete("gcbatch plan --case ex", tmp_path) == []  # no manifest yet: nothing
    (tmp_path / "broken.yaml").write_text("cases: [", encoding="utf-8")
    assert complete("gcbatch apply broken.yaml --case x", tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_readme_scripts_are_made(shell: str, tmp_path: Path) -> None:
    env = {**os.environ, "_GCBATCH_COMPLETE": f"{shell}_source"}
    done = subprocess.run([sys.executable, "-m", "gcbatch"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "_GCBATCH_COMPLETE" in done.stdout
