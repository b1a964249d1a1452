"""Live progress on stderr: a redrawn line (or bar) on a terminal, plain lines elsewhere.

- On a TTY: ``rich`` redraws one status line (apply) or a bar (wait, download) a few times
  a second; messages scroll above it. ``NO_COLOR`` (any value) turns colours off, as
  https://no-color.org asks.
- Elsewhere (CI logs, pipes, files): one plain line when something changed, at most every
  ``interval`` seconds, and every message as it happens; no control characters.

Displays take typed events' values (:mod:`gcbatch.events`); which event goes where is
:class:`gcbatch.views.human.HumanView`'s business. Everything goes to stderr: stdout is
for results.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

from gcbatch.events import ApplyProgress, WaitProgress
from gcbatch.views.text import human_bytes, mib

__all__ = [
    "ApplyDisplay",
    "DownloadDisplay",
    "PlainProgress",
    "RichProgress",
    "WaitDisplay",
    "describe",
    "is_terminal",
    "make_progress",
]


def describe(s: ApplyProgress) -> str:
    """One human line for an apply's counters."""
    parts = [f"{s.done}/{s.total} cases done", f"{s.submitted} submitted"]
    if s.adopted:
        parts.append(f"{s.adopted} adopted")
    parts.append(f"{s.posting} in flight")
    parts.append(f"{s.waiting_for_slot} waiting for a slot")
    limit = "" if s.slot_limit is None else f"/{s.slot_limit}"  # None: no limit known
    parts.append(f"{s.active_jobs}{limit} active jobs")
    if s.bytes_total or s.uploading:
        parts.append(f"{mib(s.bytes_uploaded)} uploaded ({s.uploading} uploading)")
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


def is_terminal(stream: IO[str]) -> bool:
    """A terminal that can redraw a line (not ``TERM=dumb``)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM") != "dumb"


class ApplyDisplay(Protocol):
    def update(self, snapshot: ApplyProgress) -> None: ...

    def log(self, message: str) -> None: ...

    def close(self) -> None: ...


class PlainProgress:
    """Plain lines for logs: a status line when it changed (rate-limited), messages now."""

    def __init__(self, stream: IO[str], *, interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._last_line = ""
        self._last_time = -1e9
        self._lock = threading.Lock()

    def update(self, snapshot: ApplyProgress) -> None:
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
        self._last: ApplyProgress | None = None
        self._lock = threading.Lock()

    def update(self, snapshot: ApplyProgress) -> None:
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


def make_progress(stream: IO[str], *, force_plain: bool = False) -> ApplyDisplay:
    """The right apply display for ``stream``."""
    if is_terminal(stream) and not force_plain:
        return RichProgress(stream)
    return PlainProgress(stream)


def _bar(stream: IO[str], label: str, detail: str) -> Any:
    """A started transient ``rich`` bar: label, bar, done/total, ``detail``, time."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=stream, highlight=False, no_color="NO_COLOR" in os.environ)
    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn(detail),
                        TimeElapsedColumn(), console=console, transient=True)
    progress.start()
    return progress


class WaitDisplay:
    """``wait``: a bar of ended jobs on a terminal, a stamped line per change otherwise."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._last = ""
        self._progress: Any = None
        self._task: Any = None
        if is_terminal(stream):
            self._progress = _bar(stream, "waiting", "{task.description}")
            self._task = self._progress.add_task("", total=None)

    def update(self, event: WaitProgress) -> None:
        counts = ", ".join(f"{n} {s}" for s, n in event.counts.items())
        if self._progress is not None:
            self._progress.update(self._task, total=event.total, completed=event.ended,
                                  description=counts)
            return
        line = f"{event.ended}/{event.total} ended: {counts}"
        if line != self._last:
            self._last = line
            self._stream.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
            self._stream.flush()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


class DownloadDisplay:
    """``download``: files done/total and bytes received on a terminal; nothing per file
    otherwise (the summary line follows either way)."""

    def __init__(self, stream: IO[str]) -> None:
        self._progress: Any = None
        self._task: Any = None
        self._received = 0
        self._total = 0
        self._lock = threading.Lock()
        if is_terminal(stream):
            self._progress = _bar(stream, "downloading", "files · {task.fields[received]}")
            self._task = self._progress.add_task("", total=0, received="0 B")

    def planned(self, files: int) -> None:
        with self._lock:
            self._total += files
            if self._progress is not None:
                self._progress.update(self._task, total=self._total)

    def file_done(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def received(self, count: int) -> None:
        with self._lock:
            self._received += count  # called from worker threads
            if self._progress is not None:
                self._progress.update(self._task, received=human_bytes(self._received))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
