"""Every command reads its manifest once: a :class:`~gcbatch.operations.study.Study` is
opened once per command and handed on (no module-level parse cache hides a second read)."""

from __future__ import annotations

import builtins
import io
import os
import pathlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gcbatch.cli import main

MANIFEST = """\
version: 1
algorithm: risk-calculator
cases:
  - id: patient-001
    inputs:
      age: {value: 61}
      lung-volume: {value: 4.2}
  - id: patient-002
    inputs:
      age: {json: age.json}
      lung-volume: {value: 5.1}
"""


@pytest.fixture
def reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], int]]:
    """Counts every opening of the manifest file, however it is opened (a read through
    ``Path.read_bytes`` opens through ``Path.open`` and ``open``: one read, counted once)."""
    manifest = (tmp_path / "study.yaml").resolve()
    count = [0]
    inside = threading.local()

    def counted(real: Callable[..., Any], path_of: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if getattr(inside, "depth", 0):
                return real(*args, **kwargs)
            try:
                target = Path(os.fsdecode(path_of(*args))).resolve()
            except (TypeError, ValueError, OSError):
                target = None
            if target == manifest:
                count[0] += 1
            inside.depth = 1
            try:
                return real(*args, **kwargs)
            finally:
                inside.depth = 0
        return wrapper

    for name in ("read_bytes", "read_text", "open"):
        monkeypatch.setattr(pathlib.Path, name,
                            counted(getattr(pathlib.Path, name), lambda self, *a: self))
    monkeypatch.setattr(builtins, "open", counted(builtins.open, lambda file, *a, **k: file))
    monkeypatch.setattr(io, "open", builtins.open)

    def taken() -> int:
        seen, count[0] = count[0], 0
        return seen

    yield taken


def run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(args)
    code = info.value.code
    return code if isinstance(code, int) else 1


@pytest.mark.parametrize("command", [
    ["validate"],
    ["plan", "--offline"],
    ["plan", "--sandbox"],
    ["apply", "--sandbox"],
    ["status", "--sandbox"],
    ["wait", "--sandbox", "--timeout", "30s", "--poll-interval", "0.2s"],
    ["download", "--sandbox", "--out", "results"],
])
def test_a_command_reads_its_manifest_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            reads: Callable[[], int],
                                            command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "age.json").write_text("47\n")
    (tmp_path / "study.yaml").write_text(MANIFEST)
    if command[0] in ("status", "wait", "download"):
        assert run(["apply", "study.yaml", "--sandbox"]) == 0
    reads()  # what the set-up read does not count
    code = run([command[0], "study.yaml", *command[1:]])
    assert code in (0, 1), code  # (wait/download may see jobs still running)
    assert reads() == 1
