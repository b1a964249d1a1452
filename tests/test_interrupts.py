"""A Ctrl-C during a held section is delivered right after it, not inside it."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from gcbatch.interrupts import uninterrupted


def test_ctrl_c_inside_is_raised_after_the_section_ends() -> None:
    done: list[str] = []
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), uninterrupted():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("the rest of the section ran")
    assert done == ["the rest of the section ran"]
    assert signal.getsignal(signal.SIGINT) is before  # put back as it was


def test_without_ctrl_c_nothing_is_raised_and_other_threads_just_run() -> None:
    with uninterrupted():
        pass
    seen: list[BaseException] = []

    def worker() -> None:
        try:
            with uninterrupted():
                pass
        except BaseException as exc:  # pragma: no cover - would fail the assertion
            seen.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == []
