"""Neighbours: applies on this machine tell each other what they hold (a wake-up signal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gcbatch.engine import neighbours as nb
from gcbatch.engine.neighbours import Neighbours


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_runs_see_each_others_counts_and_when_they_free_slots(tmp_path: Path) -> None:
    clock = Clock()
    ours = Neighbours(tmp_path, clock=clock, pid=os.getpid())
    # a second live process stands for the other study
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = Neighbours(tmp_path, clock=clock, pid=other.pid)
        theirs.publish(3, force=True)
        assert not ours.freed()  # the first look only learns the count
        assert ours.others() is None  # read a moment ago: nothing new
        clock.now += 1
        assert ours.others() == 3
        clock.now += 1
        theirs.publish(1, force=True)
        assert ours.freed()  # they hold fewer: worth a probe now
        clock.now += 1
        assert not ours.freed()
        # a file not rewritten for long is ignored
        clock.now += nb.STALE_AFTER + 1
        assert ours.others() == 0
    finally:
        other.kill()
        other.wait()


def test_writes_are_rate_limited_and_files_of_dead_runs_ignored(tmp_path: Path) -> None:
    clock = Clock()
    ours = Neighbours(tmp_path, clock=clock, pid=os.getpid())
    ours.publish(2)
    path = tmp_path / f"{os.getpid()}.json"
    assert json.loads(path.read_text())["held"] == 2
    ours.publish(5)  # too soon after the last write
    assert json.loads(path.read_text())["held"] == 2
    clock.now += 2 * nb.WRITE_EVERY
    ours.publish(5)
    assert json.loads(path.read_text())["held"] == 5
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"{dead.pid}.json").write_text(
        json.dumps({"pid": dead.pid, "held": 7, "at": clock.now}))
    (tmp_path / "junk.json").write_text("{not json")
    reader = Neighbours(tmp_path, clock=clock, pid=1)  # sees ours, not the dead one's
    assert reader.others() == 5
    ours.close()
    assert not path.exists()
    ours.close()  # twice is fine


def test_a_directory_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    ours = Neighbours(blocked / "sub", clock=Clock())
    ours.publish(1, force=True)
    assert ours.others() is None and not ours.freed()


def test_one_directory_per_server(tmp_path: Path) -> None:
    a = Neighbours.for_server("https://a.example/api/v1/", root=tmp_path)
    b = Neighbours.for_server("https://b.example/api/v1/", root=tmp_path)
    assert a.directory != b.directory and a.directory.parent == tmp_path
