"""State files are never written through links, and what they hold is checked like a
server's answer (issue 14, "Build" 3; review F2, F3).

A cloned study or a shared results folder may hold a symbolic link (or a hard link) at
the name of a file gcbatch keeps its state in. Before, the OS lock truncated the link's
target and the journal and the download record appended to theirs; a crafted download
record made ``download`` delete any file the user could write.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hostile import Run, assert_clean_failure, cli_env, run_cli, value_study, write

from gcbatch.engine.download_record import STATE_NAME
from gcbatch.sandbox import RunningSandbox, SandboxConfig

pytestmark = pytest.mark.slow

VICTIM_TEXT = "the user's precious file\n"
INSTANT = {"validating_seconds": 0.0, "queued_seconds": 0.0, "provisioned_seconds": 0.0,
           "executing_seconds": 0.0, "executed_seconds": 0.0}


def _victim(folder: Path, name: str = "precious.txt") -> Path:
    return write(folder / "elsewhere" / name, VICTIM_TEXT)


def _api_requests(sb: RunningSandbox) -> list[str]:
    return [e["path"] for e in sb.admin.requests()["requests"]
            if not e["path"].startswith("/_sandbox")]


def _apply(sb: RunningSandbox, study: Path, home: Path, *more: str) -> Run:
    return run_cli(["apply", str(study), "--server", sb.api_url, *more], study.parent,
                   cli_env(token=sb.token("demo"), home=home))


@pytest.mark.parametrize(("planted", "what"), [
    ("study.lock.lck", "lockfile's OS lock"),
    ("study.lock.journal", "journal"),
    ("study.lock", "lockfile"),
    (".gcbatch/hash-cache.json", "hash cache"),
])
def test_a_link_at_a_state_files_name_is_refused_not_followed(
    tmp_path: Path, home: Path, sandbox_server: RunningSandbox, planted: str, what: str
) -> None:
    victim = _victim(tmp_path)
    study = value_study(tmp_path / "study")
    link = tmp_path / "study" / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim, link)
    run = _apply(sandbox_server, study, home)
    assert_clean_failure(run, 2, str(link), f"the {what} is a symbolic link",
                         "Remove the link")
    assert victim.read_text() == VICTIM_TEXT  # not truncated, not appended to
    assert os.path.islink(link)
    assert _api_requests(sandbox_server) == []  # refused before any request


def test_a_state_folder_that_is_a_link_is_refused(
    tmp_path: Path, home: Path, sandbox_server: RunningSandbox
) -> None:
    victim = _victim(tmp_path)
    study = value_study(tmp_path / "study")
    os.symlink(victim.parent, tmp_path / "study" / ".gcbatch")
    run = _apply(sandbox_server, study, home)
    assert_clean_failure(run, 2, "folder of gcbatch's local state is a symbolic link")
    assert sorted(p.name for p in victim.parent.iterdir()) == ["precious.txt"]
    assert _api_requests(sandbox_server) == []


def test_a_hard_link_at_the_journals_name_is_refused(
    tmp_path: Path, home: Path, sandbox_server: RunningSandbox
) -> None:
    victim = _victim(tmp_path)
    study = value_study(tmp_path / "study")
    os.link(victim, tmp_path / "study" / "study.lock.journal")
    run = _apply(sandbox_server, study, home)
    assert_clean_failure(run, 2, "the journal is a hard link")
    assert victim.read_text() == VICTIM_TEXT


# --------------------------------------------------------------------------- downloads


@pytest.fixture
def downloaded(tmp_path: Path, home: Path, make_sandbox: Any) -> tuple[RunningSandbox, Path]:
    """A study applied and downloaded once into ``study/out`` (jobs end at once)."""
    sb = make_sandbox(config=SandboxConfig(**INSTANT))
    study = value_study(tmp_path / "study")
    assert _apply(sb, study, home).code == 0
    run = _download(sb, study, home)
    assert run.code == 0, run.err
    return sb, study


def _download(sb: RunningSandbox, study: Path, home: Path) -> Run:
    return run_cli(["download", str(study), "--server", sb.api_url, "--out", "out"],
                   study.parent, cli_env(token=sb.token("demo"), home=home))


def test_a_link_at_the_download_records_name_is_refused(
    tmp_path: Path, home: Path, downloaded: tuple[RunningSandbox, Path]
) -> None:
    sb, study = downloaded
    victim = _victim(tmp_path)
    record = study.parent / "out" / STATE_NAME
    record.unlink()
    os.symlink(victim, record)
    run = _download(sb, study, home)
    assert_clean_failure(run, 2, "the download record is a symbolic link")
    assert victim.read_text() == VICTIM_TEXT


def test_a_crafted_download_record_cannot_delete_a_file_outside_the_folder(
    tmp_path: Path, home: Path, downloaded: tuple[RunningSandbox, Path]
) -> None:
    sb, study = downloaded
    out = study.parent / "out"
    victim = _victim(tmp_path)
    escape = os.path.relpath(victim, out / "case-47" / "images" / "heatmap")
    assert (out / "case-47" / "images" / "heatmap").is_dir()
    crafted = {"type": "image", "path": "case-47/images/heatmap",
               "source": "http://elsewhere/image/",  # not the job's image: "replaced"
               "files": [f"case-47/images/heatmap/{escape}"]}
    with (out / STATE_NAME).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(crafted) + "\n")
    run = _download(sb, study, home)
    assert run.code == 0, run.err
    assert victim.read_text() == VICTIM_TEXT  # the record's path was not believed


def test_a_case_folder_that_is_a_link_is_not_written_through(
    tmp_path: Path, home: Path, downloaded: tuple[RunningSandbox, Path]
) -> None:
    sb, study = downloaded
    out = study.parent / "out"
    victim = _victim(tmp_path, "malignancy-risk.json")
    shutil.rmtree(out / "case-47")
    os.symlink(victim.parent, out / "case-47")
    run = _download(sb, study, home)
    assert_clean_failure(run, 1, "case-47 is a symbolic link")
    assert victim.read_text() == VICTIM_TEXT
    assert sorted(p.name for p in victim.parent.iterdir()) == ["malignancy-risk.json"]
