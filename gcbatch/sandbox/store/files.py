"""Stored bytes: a folder beside the database (``<db>.storage/``).

Upload parts, completed uploads, and the files and images made from uploads live here —
never in memory, because uploads may be large. Seed images stay where the seed put them
(their paths are absolute) and are served from there.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path


class FileStore:
    """The storage folder (a part of the store)."""

    storage: Path

    def path(self, relative: str) -> Path:
        """The absolute path of a stored object (``relative`` may already be absolute)."""
        p = Path(relative)
        return p if p.is_absolute() else self.storage / p

    def write_bytes(self, relative: str, data: bytes) -> Path:
        target = self.storage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}-{threading.get_ident()}")
        with tmp.open("wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
        return target

    def remove_tree(self, relative: str) -> None:
        shutil.rmtree(self.storage / relative, ignore_errors=True)
