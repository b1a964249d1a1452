"""Hold Ctrl-C over a short critical section, and deliver it right after.

``status`` and ``wait`` stop on Ctrl-C by letting :class:`KeyboardInterrupt` unwind. One
that strikes while the lockfile store holds its lock (between taking it and entering the
block that would release it, which Python cannot make atomic) would leave the lock taken,
and closing the store would then wait forever. Recording a batch of statuses takes
milliseconds, so it runs with SIGINT held: the interrupt is raised as soon as the
section is over, with everything written. Outside the main thread (where signal handlers
cannot be set) the section runs as it is.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["STOP_SIGNALS", "uninterrupted"]

#: The signals that ask gcbatch to stop, as far as the platform has them: Ctrl-C
#: everywhere, SIGTERM (POSIX's ``kill``; Windows knows the name), Ctrl-Break on Windows.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name)
)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Run the block with SIGINT held; a Ctrl-C meanwhile is raised when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
