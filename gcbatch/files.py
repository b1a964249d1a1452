"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The bytes go to a part file in the target's folder (a rename is atomic only within one
file system), then ``os.replace`` puts it in place. ``durable`` also fsyncs the part file
before the rename and the folder after it, so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

#: Windows refuses to replace a file that another process has open (a `plan` reading the
#: lockfile, a virus scanner); such a refusal passes within moments, so it is retried there
REPLACE_RETRIES: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0) if os.name == "nt" else ()
#: Windows only: a file opened without it translates line ends (tempfile adds it too)
_O_BINARY: int = getattr(os, "O_BINARY", 0)


def replace(part: Path | str, target: Path | str) -> None:
    """``os.replace``, retried a few times on Windows' PermissionError (see above)."""
    for delay in REPLACE_RETRIES:
        try:
            os.replace(part, target)
            return
        except PermissionError:
            time.sleep(delay)
    os.replace(part, target)


def fsync_dir(directory: Path) -> None:
    """fsync a folder (what makes a rename in it durable); skipped where not possible."""
    if os.name == "nt":  # Windows cannot open a folder as a file: nothing to fsync there
        return
    with contextlib.suppress(OSError):  # not every filesystem lets us open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(target: Path, data: bytes, *, part: Path | None = None,
                       durable: bool = True) -> None:
    """Write ``data`` to ``target`` through a part file and a rename.

    ``part``: the part file's path (in ``target``'s folder); None makes a unique one that
    only its owner may read (``tempfile.mkstemp``: mode 0600), so concurrent writers never
    share it.
    """
    if part is None:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                    dir=target.parent)
        part = Path(name)
    else:  # what open(part, "wb") does (O_BINARY: Windows would write \n as \r\n)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_BINARY, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        replace(part, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        raise
    if durable:
        fsync_dir(target.parent)
