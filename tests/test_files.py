"""files.py: atomic writes, and state files never opened or replaced through a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gcbatch.errors import StateFileError
from gcbatch.files import atomic_write_bytes, open_state, read_state, refuse_link


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_text("precious")
    return path


def test_open_state_refuses_a_symbolic_link(tmp_path: Path, victim: Path) -> None:
    link = tmp_path / "study.lock.lck"
    link.symlink_to(victim)
    with pytest.raises(StateFileError, match=r"the lock is a symbolic link \(to .*victim"):
        open_state(link, os.O_RDWR | os.O_CREAT, "lock")
    assert victim.read_text() == "precious"


def test_a_hard_link_is_refused_when_the_file_is_changed_in_place(
    tmp_path: Path, victim: Path
) -> None:
    link = tmp_path / "journal"
    os.link(victim, link)
    with pytest.raises(StateFileError, match="is a hard link"):
        open_state(link, os.O_WRONLY | os.O_APPEND, "journal")
    with pytest.raises(StateFileError, match="is a hard link"):
        read_state(link, "journal", in_place=True)
    assert read_state(link, "lockfile") == b"precious"  # replaced by rename: harmless


def test_folders_and_fifos_are_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(StateFileError, match="the journal is a folder"):
        read_state(tmp_path / "folder", "journal")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(StateFileError, match="not a regular file"):
        read_state(tmp_path / "fifo", "lockfile")  # (would block forever if opened plainly)
    assert read_state(tmp_path / "missing", "lockfile") is None


def test_an_atomic_write_never_writes_through_a_planted_part_or_target(
    tmp_path: Path, victim: Path
) -> None:
    target = tmp_path / "result.json"
    part = tmp_path / ".result.json.part"
    part.symlink_to(victim)
    atomic_write_bytes(target, b"new", part=part)
    assert target.read_bytes() == b"new" and not part.exists()
    assert victim.read_text() == "precious"
    state = tmp_path / "study.lock"
    state.symlink_to(victim)
    with pytest.raises(StateFileError, match="the lockfile is a symbolic link"):
        atomic_write_bytes(state, b"{}", state="lockfile")
    assert victim.read_text() == "precious"
    refuse_link(tmp_path / "absent", "lockfile")  # nothing there: fine
