"""Live progress of ``apply``: a redrawn status line on a terminal, plain lines elsewhere.

Both renderers take :class:`gcbatch.executor.Snapshot` values (cases submitted, in
flight, waiting for a slot, bytes uploaded) and free-form log lines (a case failed, the
credits ran out, an in-doubt POST was reconciled). Everything goes to stderr: stdout is
for results (``--json``).

- On a TTY: a ``rich`` live line, redrawn a few times a second; log lines scroll above it.
  ``NO_COLOR`` (any value) turns colours off, as https://no-color.org asks.
- Elsewhere (CI logs, pipes, files): one plain line when something changed, at most every
  ``interval`` seconds, and every log line as it happens; no control characters.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from gcbatch.executor import Snapshot

__all__ = ["PlainProgress", "RichProgress", "describe", "make_progress"]


def _mib(n: int) -> str:
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    if n < 1024**3:
        return f"{n / (1024 * 1024):.1f} MiB"
    return f"{n / 1024**3:.2f} GiB"


def describe(s: Snapshot) -> str:
    """One human line for a snapshot."""
    parts = [f"{s.done}/{s.total} cases done", f"{s.submitted} submitted"]
    if s.adopted:
        parts.append(f"{s.adopted} adopted")
    parts.append(f"{s.posting} in flight")
    parts.append(f"{s.waiting_for_slot} waiting for a slot")
    limit = "" if s.slot_limit is None else f"/{s.slot_limit}"  # None: no limit known
    parts.append(f"{s.active_jobs}{limit} active jobs")
    if s.bytes_total or s.uploading:
        parts.append(f"{_mib(s.bytes_uploaded)} uploaded ({s.uploading} uploading)")
    if s.failed:
        parts.append(f"{s.failed} failed")
    if s.in_doubt:
        parts.append(f"{s.in_doubt} in doubt")
    line = " · ".join(parts)
    if s.stopped_by_credits:
        line += " · out of credits: finishing"
    elif s.stopping:
        line += " · stopping: finishing what is in flight"
    return line


class PlainProgress:
    """Plain lines for logs: a status line when it changed (rate-limited), log lines now."""

    def __init__(self, stream: IO[str], *, interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._last_line = ""
        self._last_time = -1e9
        self._lock = threading.Lock()

    def update(self, snapshot: Snapshot) -> None:
        if snapshot.total == 0:
            return  # nothing to submit: the summary says it all
        line = describe(snapshot)
        now = self._clock()
        with self._lock:
            if line == self._last_line:
                return
            final = snapshot.total and snapshot.done == snapshot.total
            if now - self._last_time < self._interval and not final:
                return
            self._last_line, self._last_time = line, now
            self._write(f"apply: {line}")

    def log(self, message: str) -> None:
        with self._lock:
            self._write(message)

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # a closed pipe must not break the run
            pass

    def close(self) -> None:
        pass


class RichProgress:
    """A live status line on a terminal (``rich``); colours off under ``NO_COLOR``."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self._text_cls = Text
        self._console = Console(file=stream, no_color="NO_COLOR" in os.environ,
                                highlight=False, soft_wrap=True)
        self._live = Live(Text(""), console=self._console, refresh_per_second=8,
                          transient=True)
        self._live.start()
        self._last: Snapshot | None = None
        self._lock = threading.Lock()

    def update(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._last = snapshot
            style = "yellow" if snapshot.stopping or snapshot.stopped_by_credits else "cyan"
            self._live.update(self._text_cls(describe(snapshot), style=style))

    def log(self, message: str) -> None:
        with self._lock:
            self._console.print(message, markup=False, highlight=False)

    def close(self) -> None:
        with self._lock:
            self._live.stop()
            if self._last is not None:
                self._console.print(f"apply: {describe(self._last)}", markup=False,
                                    highlight=False)


def make_progress(stream: IO[str] | None = None, *, force_plain: bool = False) -> Any:
    """The right renderer for ``stream`` (stderr by default)."""
    out = stream if stream is not None else sys.stderr
    is_tty = False
    try:
        is_tty = out.isatty()
    except (AttributeError, ValueError):
        is_tty = False
    if is_tty and not force_plain and os.environ.get("TERM") != "dumb":
        return RichProgress(out)
    return PlainProgress(out)
