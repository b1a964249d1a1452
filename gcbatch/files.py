"""Files gcbatch writes: atomically, and never through a link.

Atomic writes: a reader sees the old file or the new one, never half of either. The bytes
go to a part file in the target's folder (a rename is atomic only within one file system),
then ``os.replace`` puts it in place. ``durable`` also fsyncs the part file before the
rename and the folder after it, so the rename itself survives a power cut.

State files (the lockfile, its journal and OS lock, a download folder's record, the hash
cache) sit at fixed names in folders that may come from someone else: a cloned study, a
shared results folder. A symbolic link planted at such a name would make gcbatch truncate
or append to whatever it points at, and a hard link would do the same to its other name.
So state files are opened with ``O_NOFOLLOW`` and checked (:func:`open_state`,
:func:`read_state`), a part file is created afresh (``O_EXCL``: never an existing file or
link), and a target that is a link is refused (``state=`` of :func:`atomic_write_bytes`):
each a :class:`~gcbatch.errors.StateFileError` naming the file, before it is touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from pathlib import Path

from gcbatch.errors import StateFileError

__all__ = ["atomic_write_bytes", "fsync_dir", "open_state", "read_state", "refuse_link",
           "replace"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
#: Windows refuses to replace a file that another process has open (a `plan` reading the
#: lockfile, a virus scanner); such a refusal passes within moments, so it is retried there
REPLACE_RETRIES: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0) if os.name == "nt" else ()
#: Windows only: a file opened without it translates line ends (tempfile adds it too)
_O_BINARY: int = getattr(os, "O_BINARY", 0)



def _link_error(path: Path, what: str) -> StateFileError:
    try:
        where = f" (to {os.readlink(path)})"
    except OSError:
        where = ""
    return StateFileError(
        f"{path}: the {what} is a symbolic link{where}; gcbatch never writes its state "
        "through a link, which would change the file it points to. Remove the link (if you "
        "made it on purpose, put the file itself there)")


def refuse_link(path: Path, what: str) -> None:
    """StateFileError when ``path`` is a symbolic link (a missing path is fine)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _link_error(path, what)


def _checked(fd: int, path: Path, what: str, *, written: bool) -> int:
    """``fd`` if it is a regular file (with no other name, when it is ``written`` in
    place), else close it and refuse."""
    st = os.fstat(fd)
    problem = ""
    if stat.S_ISDIR(st.st_mode):
        problem = "is a folder, not a file"
    elif not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file (a FIFO, a socket or a device?)"
    elif written and st.st_nlink > 1:
        problem = ("is a hard link (the same file has another name); gcbatch never writes "
                   "its state into a file shared with another name")
    if problem:
        os.close(fd)
        raise StateFileError(f"{path}: the {what} {problem}. Remove it or move it away")
    return fd


def open_state(path: Path, flags: int, what: str, mode: int = 0o644, *,
               in_place: bool = False) -> int:
    """``os.open`` for a state file: never through a symbolic link, only a regular file,
    with no other name when it is opened for writing or ``in_place`` (a file gcbatch
    changes in place, even if this open only reads it). ``what`` names it in messages."""
    if not _NOFOLLOW:  # (Windows) no O_NOFOLLOW: a link is looked for by its name instead
        refuse_link(path, what)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (not _NOFOLLOW and os.path.islink(path)):
            raise _link_error(path, what) from None
        if exc.errno == errno.EISDIR:
            raise StateFileError(f"{path}: the {what} is a folder, not a file. Remove it "
                                 "or move it away") from None
        raise
    if not _NOFOLLOW:
        # and again after the open: a link planted between the look and the open is caught
        # (what was opened is not what the name now is)
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except OSError:
            same = False
        if not same:
            os.close(fd)
            raise _link_error(path, what)
    if _NONBLOCK:
        os.set_blocking(fd, True)
    return _checked(fd, path, what,
                    written=in_place or bool(flags & (os.O_WRONLY | os.O_RDWR)))


def read_state(path: Path, what: str, *, in_place: bool = False) -> bytes | None:
    """The bytes of a state file (None when there is none), read as :func:`open_state`
    allows: never through a link, never a FIFO (which would block) or a device."""
    try:
        fd = open_state(path, os.O_RDONLY, what, in_place=in_place)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


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
                       durable: bool = True, state: str | None = None) -> None:
    """Write ``data`` to ``target`` through a part file and a rename.

    ``part``: the part file's path (in ``target``'s folder), created afresh (whatever was
    there, a leftover or a link, is removed first, never written through); None makes a
    unique one that only its owner may read (``tempfile.mkstemp``: mode 0600), so
    concurrent writers never share it. ``state`` names a state file: a ``target`` that is
    a symbolic link is then refused (:class:`StateFileError`) instead of replaced.
    """
    if state is not None:
        refuse_link(target, state)
    if part is None:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                    dir=target.parent)
        part = Path(name)
    else:  # never through a link planted at the part's name; O_BINARY: Windows would
        # write \n as \r\n
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _O_BINARY,
                     0o666)
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
