"""The OS lock: a second gcbatch is refused and told who holds the lockfile
(gcbatch.lockfile.oslock)."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from gcbatch import lockfile as lf
from gcbatch.errors import LockHeldError

from .samples import ALG, SERVER


def _try_lock(path: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        lf.FileLock(Path(path)).acquire()
        queue.put("acquired")
    except LockHeldError as exc:
        queue.put(str(exc))


def test_os_lock_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    with lf.LockfileStore.open(path, server=SERVER, algorithm=ALG):
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        proc = ctx.Process(target=_try_lock, args=(str(lf.oslock_path_for(path)), queue))
        proc.start()
        message = queue.get(timeout=20)
        proc.join(timeout=20)
        assert f"pid {os.getpid()}" in message and "held by another gcbatch" in message
        with pytest.raises(LockHeldError):  # a second open in the same process, too
            lf.LockfileStore.open(path, server=SERVER, algorithm=ALG)
    lf.FileLock(lf.oslock_path_for(path)).acquire()  # released on close


def test_the_holder_file_lives_as_long_as_the_lock(tmp_path: Path) -> None:
    lock = lf.FileLock(tmp_path / "study.lock.lck")
    holder = tmp_path / "study.lock.lck.holder"
    holder.write_text('{"pid": 1, "host": "gone", "started_at": "then"}\n')  # a crash's
    with lock:
        info = json.loads(holder.read_text())
        assert info["pid"] == os.getpid() and info["host"] != "gone"
        with pytest.raises(LockHeldError, match=f"pid {os.getpid()} on "):
            lf.FileLock(tmp_path / "study.lock.lck").acquire()
    assert not holder.exists()
    lock.release()  # idempotent


def test_a_holder_that_cannot_be_read_is_unknown(tmp_path: Path) -> None:
    with lf.FileLock(tmp_path / "study.lock.lck"):
        (tmp_path / "study.lock.lck.holder").unlink()
        with pytest.raises(LockHeldError, match=r"\(holder unknown\)"):
            lf.FileLock(tmp_path / "study.lock.lck").acquire()


def test_a_device_as_holder_file_is_not_read(tmp_path: Path) -> None:
    with lf.FileLock(tmp_path / "study.lock.lck"):
        holder = tmp_path / "study.lock.lck.holder"
        holder.unlink()
        holder.symlink_to("/dev/zero")
        with pytest.raises(LockHeldError, match=r"\(holder unknown\)"):
            lf.FileLock(tmp_path / "study.lock.lck").acquire()
