"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The bytes go to a part file in the target's folder (a rename is atomic only within one
file system), then ``os.replace`` puts it in place. ``durable`` also fsyncs the part file
before the rename and the folder after it, so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
    else:  # what open(part, "wb") does
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(part, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        raise
    if durable:
        fsync_dir(target.parent)
