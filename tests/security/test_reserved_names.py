"""Case ids cannot clash with gcbatch's own files (issue 14, "Build" 6; review F11).

``download`` writes ``results.csv`` and ``results.json`` beside the case folders (and
dot-files, which no case id can be: ids start with a letter or a digit). ``id:
results.csv`` used to pass ``validate`` and crash ``download``. Ids that differ only in
letter case share one folder on macOS and Windows: a warning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hostile import assert_clean_failure, cli_env, run_cli, value_study, write

from gcbatch.sandbox import SandboxConfig

pytestmark = pytest.mark.slow

INSTANT = {"validating_seconds": 0.0, "queued_seconds": 0.0, "provisioned_seconds": 0.0,
           "executing_seconds": 0.0, "executed_seconds": 0.0}


def test_reserved_ids_are_refused_in_any_letter_case(tmp_path: Path, home: Path) -> None:
    study = value_study(tmp_path, extra_case=(
        "  - id: results.csv\n    inputs:\n      age: {value: 1}\n"
        "  - id: Results.JSON\n    inputs:\n      age: {value: 2}\n"))
    run = run_cli(["validate", str(study)], tmp_path, cli_env(home=home))
    assert run.code == 2
    assert f"{study}:10:9: cases[1].id: case id 'results.csv' is reserved" in run.out
    assert f"{study}:13:9: cases[2].id: case id 'Results.JSON' is reserved" in run.out


def test_a_generated_reserved_id_is_refused(tmp_path: Path, home: Path) -> None:
    write(tmp_path / "scans" / "results.csv.json", "1")
    write(tmp_path / "scans" / "ok.json", "2")
    study = write(tmp_path / "study.yaml",
                  "version: 1\nalgorithm: risk-calculator\ncases:\n"
                  "  - foreach: {glob: \"scans/*.json\"}\n    id: \"{stem}\"\n"
                  "    inputs:\n      age: {json: \"{path}\"}\n      lung-volume: {value: 4}\n")
    run = run_cli(["validate", str(study)], tmp_path, cli_env(home=home))
    assert run.code == 2
    assert "made from scans/results.csv.json: case id 'results.csv' is reserved" in run.out


def test_ids_differing_only_in_letter_case_are_a_warning(tmp_path: Path, home: Path) -> None:
    study = value_study(tmp_path, extra_case=(
        "  - id: Case-61\n    inputs:\n      age: {value: 1}\n"))
    run = run_cli(["validate", str(study)], tmp_path, cli_env(home=home))
    assert run.code == 0, run.out  # a warning, not a problem
    assert ("warning: " in run.err and "case id 'case-61'" in run.err
            and "differs from 'Case-61' only in letter case" in run.err), run.err


def test_a_lockfile_edited_to_a_reserved_id_cannot_clash_at_download(
    tmp_path: Path, home: Path, make_sandbox: Any
) -> None:
    sb = make_sandbox(config=SandboxConfig(**INSTANT))
    study = value_study(tmp_path)
    env = cli_env(token=sb.token("demo"), home=home)
    assert run_cli(["apply", str(study), "--server", sb.api_url], tmp_path, env).code == 0
    lockfile = tmp_path / "study.lock"
    data = json.loads(lockfile.read_text())
    data["cases"]["results.json"] = data["cases"].pop("case-47")
    lockfile.write_text(json.dumps(data))
    run = run_cli(["download", str(study), "--server", sb.api_url, "--out", "out"],
                  tmp_path, env)
    assert_clean_failure(run, 1, "refusing to write case 'results.json'", "is reserved")
    assert not (tmp_path / "out" / "results.json").is_dir()
