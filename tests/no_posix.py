"""Run gcbatch as it runs where POSIX's extras are missing (Windows): `.ci/run`'s no-POSIX step.

``GCBATCH_TEST_NO_POSIX=1 pytest ...``: ``tests/conftest.py`` calls :func:`install` before
anything of gcbatch is imported, so a POSIX-only import or call in gcbatch fails here as it
would on Windows, instead of on a user's laptop. What is taken away:

- the POSIX-only modules (``fcntl``, ``termios``, ``pwd``, ...): importing one raises
  ``ImportError`` (already imported copies are dropped from ``sys.modules`` first);
- the POSIX-only ``os`` functions and flags gcbatch could reach for (``os.pread``,
  ``os.pwrite``, ``os.O_NOFOLLOW``, ...).

It cannot make the file system case-insensitive or change ``os.sep``; those are covered
by tests of their own. Also usable from a child process: ``python -c "import no_posix;
no_posix.install(); ..."`` with this folder on ``sys.path``.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from collections.abc import Sequence
from types import ModuleType

#: modules Windows does not have (and that gcbatch must not need)
BLOCKED_MODULES = ("fcntl", "termios", "tty", "pty", "pwd", "grp", "resource", "syslog")
#: ``os`` names Windows does not have
REMOVED_OS_NAMES = ("pread", "pwrite", "O_NOFOLLOW", "O_DIRECTORY", "sync", "fchown")

ENV_SWITCH = "GCBATCH_TEST_NO_POSIX"


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> None:
        if fullname.partition(".")[0] in BLOCKED_MODULES:
            raise ImportError(f"No module named {fullname!r} (blocked: {ENV_SWITCH})",
                              name=fullname)
        return None


def install() -> None:
    """Take the POSIX-only parts away for the rest of this process (idempotent)."""
    if active():
        return
    for name in list(sys.modules):
        if name.partition(".")[0] in BLOCKED_MODULES:
            del sys.modules[name]
    sys.meta_path.insert(0, _Blocker())
    for name in REMOVED_OS_NAMES:
        if hasattr(os, name):
            delattr(os, name)


def active() -> bool:
    return any(isinstance(f, _Blocker) for f in sys.meta_path)


def requested() -> bool:
    return os.environ.get(ENV_SWITCH, "") not in ("", "0")
