"""One writer per lockfile: an exclusive OS lock on ``study.lock.lck``, on every platform.

Two applies folding their journals into one lockfile would each believe the other's
in-flight cases unknown and submit them again, so the second one is refused, told who is
in the way.

The lock itself is the ``filelock`` package's (what pip's own ecosystem uses): ``flock``
on POSIX, ``msvcrt.locking`` on Windows. Both are dropped by the operating system when the
process dies, so a crash never leaves a stale lock. Who holds it (pid, host, start) is
written beside it, in ``study.lock.lck.holder``, not inside the lock file: a contender's
open truncates the lock file before it finds the lock taken, and on Windows the locked
byte cannot be read by anyone else. The holder file is for the message only; the holder
removes it when it lets go, and a stale one (after a crash) is overwritten by the next
holder at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import warnings
from pathlib import Path
from typing import Any

from gcbatch.errors import LockHeldError
from gcbatch.files import atomic_write_bytes, open_state
from gcbatch.lockfile.records import utc_now

__all__ = ["FileLock", "holder_path_for"]


def holder_path_for(lock_path: Path) -> Path:
    """``study.lock.lck`` → ``study.lock.lck.holder`` (who holds the lock, as JSON)."""
    return lock_path.with_name(lock_path.name + ".holder")


def _filelock() -> Any:
    # Imported here: filelock warns at import time on a POSIX system without fcntl (it
    # then falls back to a lock file's existence), which is no news to show a user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import filelock
    return filelock


class FileLock:
    """An exclusive OS lock on ``<lockfile>.lck`` whose holder a second gcbatch can name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.holder_path = holder_path_for(path)
        self._lock: Any = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LockHeldError` naming its holder (no waiting)."""
        # never through a link planted at its name (filelock's own open truncates the file
        # it names, which would empty a link's target): an existing one is checked first.
        # Not created here: where there is no OS lock (no fcntl) filelock falls back to a
        # lock file's existence, which a file made here would hold forever
        with contextlib.suppress(FileNotFoundError):
            os.close(open_state(self.path, os.O_RDWR, "lockfile's OS lock"))
        filelock = _filelock()
        # thread_local=False: the store may be closed by another thread than the opener's
        lock = filelock.FileLock(str(self.path), thread_local=False)
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            raise LockHeldError(
                f"{self.path} is held by another gcbatch ({_read_holder(self.holder_path)}); "
                "wait for it to finish"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": utc_now()}
        try:
            atomic_write_bytes(self.holder_path,
                               (json.dumps(info, sort_keys=True) + "\n").encode(),
                               durable=False)
        except OSError:
            # only the message needs it (Windows refuses to replace a file that a
            # contender is reading at that moment): "holder unknown" then
            pass
        except BaseException:
            lock.release()
            raise
        self._lock = lock

    def release(self) -> None:
        """Let go (idempotent); the holder's details are removed first."""
        if self._lock is None:
            return
        lock, self._lock = self._lock, None
        with contextlib.suppress(OSError):
            os.unlink(self.holder_path)
        lock.release()

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(path: Path) -> str:
    try:
        if not path.is_file():  # never a device or a pipe planted under its name
            return "holder unknown"
        with path.open("rb") as fh:
            info = json.loads(fh.read(4096) or b"{}")
        return f"pid {info['pid']} on {info['host']}, since {info['started_at']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
