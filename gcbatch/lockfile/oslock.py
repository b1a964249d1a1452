"""One writer per lockfile: an exclusive OS lock on ``study.lock.lck``.

Two applies folding their journals into one lockfile would each believe the other's
in-flight cases unknown and submit them again, so the second one is refused, told who is
in the way. The kernel drops an ``fcntl.flock`` when the process dies: a crash never
leaves a stale lock, and the holder's pid/host/start in the file are for the message only.
(``fcntl`` is POSIX-only and imported inside the methods, so importing this module, and
the package, needs no ``fcntl``.)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from gcbatch.errors import LockHeldError
from gcbatch.files import open_state
from gcbatch.lockfile.records import utc_now


class FileLock:
    """An exclusive ``fcntl.flock`` on ``<lockfile>.lck`` naming its holder.

    The kernel drops the lock when the process dies, so a crash never leaves a stale lock;
    the pid/host/start inside the file are only there to tell a second gcbatch who holds it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LockHeldError` naming its holder (no waiting)."""
        import fcntl

        # never through a link planted at its name: truncating it would empty the target
        fd = open_state(self.path, os.O_RDWR | os.O_CREAT, "lockfile's OS lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeldError(
                f"{self.path} is held by another gcbatch ({holder}); wait for it to finish"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": utc_now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info, sort_keys=True) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Let go (idempotent); the holder's details are cleared first."""
        if self._fd is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, since {info['started_at']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
