"""Other ``gcbatch apply`` runs against the same server on this machine: a wake-up signal.

Two studies applied at the same time by one user share the user's active-jobs limit, and
neither can see the other's jobs (they may run other algorithms). Each learns its level
from the server's refusals (:mod:`gcbatch.engine.admission`), and a study that holds few
slots must probe to learn when the other frees some — after a wait, so as not to hammer
the server. When both runs are on this machine they can do better: each writes how many
slots it holds to a small file, and a run that sees the others hold fewer than before
probes at once, so a slot the other study leaves is taken within a fraction of a second
instead of after the probe's wait.

Only a hint: it never holds a run back (the server stays the only judge of the limit),
so a wrong neighbour — another user of the same server under this OS account, a file
left by a killed run — costs at most one refused probe. The files hold a pid, a count
and a time; nothing about the user or the token. They live in
``$XDG_CACHE_HOME/gcbatch/applies/<hash of the server URL>/`` (``~/.cache`` when unset),
one per running apply, removed when it ends; a file whose pid is gone or that was not
rewritten for :data:`STALE_AFTER` seconds is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["STALE_AFTER", "Neighbours", "default_root"]

#: A neighbour file not rewritten for this long is ignored (runs rewrite it at least
#: every :data:`HEARTBEAT` seconds while they wait for slots).
STALE_AFTER = 120.0
HEARTBEAT = 30.0
#: Our count is written at most this often (a value-only run changes it per job).
WRITE_EVERY = 0.05
#: The others' counts are read at most this often.
READ_EVERY = 0.1


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gcbatch" / "applies"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Neighbours:
    """This run's file and a view of the others' (thread-safe; all I/O best effort)."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time,
                 pid: int | None = None) -> None:
        self.directory = directory
        self._clock = clock
        self._pid = os.getpid() if pid is None else pid
        self._path = directory / f"{self._pid}.json"
        self._lock = threading.Lock()
        self._held: int | None = None
        self._written = -1e18
        self._written_held: int | None = None
        self._read_at = -1e18
        self._others: int | None = None

    @classmethod
    def for_server(cls, server: str, root: Path | None = None) -> Neighbours:
        key = hashlib.sha256(server.encode("utf-8")).hexdigest()[:16]
        return cls((root or default_root()) / key)

    # -- ours ------------------------------------------------------------------------------

    def publish(self, held: int, *, force: bool = False) -> None:
        """How many slots this run holds (written at most every :data:`WRITE_EVERY` s,
        and at least every :data:`HEARTBEAT` s when called)."""
        with self._lock:
            self._held = held
            now = self._clock()
            due = now - self._written >= (WRITE_EVERY if held != self._written_held
                                          else HEARTBEAT)
            if not (force or due):
                return
            self._written, self._written_held = now, held
        body = json.dumps({"pid": self._pid, "held": held, "at": now})
        with contextlib.suppress(OSError):
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(body, encoding="utf-8")
            os.replace(tmp, self._path)

    def close(self) -> None:
        """This run ends: its file goes."""
        with contextlib.suppress(OSError):
            self._path.unlink()

    # -- theirs ------------------------------------------------------------------------------

    def others(self) -> int | None:
        """Slots the other live runs hold (their last counts); None when it was read less
        than :data:`READ_EVERY` s ago (nothing new) or cannot be read."""
        now = self._clock()
        with self._lock:
            if now - self._read_at < READ_EVERY:
                return None
            self._read_at = now
        total = 0
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return None
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name == self._path.name:
                continue
            try:
                data = json.loads(Path(entry.path).read_text(encoding="utf-8"))
                pid, held, at = int(data["pid"]), int(data["held"]), float(data["at"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if now - at > STALE_AFTER or not _alive(pid):
                continue
            total += max(0, held)
        return total

    def freed(self) -> bool:
        """The others hold fewer slots than at the last look (one of them ended jobs, or
        ended): worth a probe now."""
        current = self.others()
        if current is None:
            return False
        with self._lock:
            before, self._others = self._others, current
        return before is not None and current < before
