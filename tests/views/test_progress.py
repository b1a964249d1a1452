"""Progress: plain lines off a terminal (rate-limited), a live line on one, NO_COLOR."""

from __future__ import annotations

import io

import pytest

from gcbatch.events import ApplyProgress
from gcbatch.views.progress import PlainProgress, RichProgress, describe, make_progress


def snap(**changes: object) -> ApplyProgress:
    base: dict[str, object] = dict(
        total=10, submitted=3, adopted=0, failed=0, in_doubt=0, uploading=1,
        waiting_for_slot=4, posting=2, active_jobs=16, slot_limit=16,
        bytes_uploaded=3 * 1024 * 1024, bytes_total=8 * 1024 * 1024,
        stopped_by_credits=False, stopping=False)
    base.update(changes)
    return ApplyProgress(**base)  # type: ignore[arg-type]


def test_describe_names_the_counts() -> None:
    line = describe(snap())
    for part in ("3/10 cases done", "3 submitted", "2 in flight", "4 waiting for a slot",
                 "16 of 16 job slots in use", "3.0 MiB uploaded"):
        assert part in line
    assert "out of credits" in describe(snap(stopped_by_credits=True))
    assert "stopping" in describe(snap(stopping=True))


def test_nothing_submitted_says_no_active_jobs() -> None:
    line = describe(snap(submitted=0, active_jobs=0, slot_limit=None, waiting_for_slot=0))
    assert "active" not in line and "slots" not in line and "waiting" not in line


@pytest.mark.parametrize("width", [20, 40, 60, 80, 200])
def test_the_line_fits_the_terminal_and_cuts_no_word(width: int) -> None:
    whole = describe(snap(failed=2, in_doubt=1))
    line = describe(snap(failed=2, in_doubt=1), width)
    assert len(line) < width
    assert whole.startswith(line)
    assert line == whole or whole[len(line):].startswith(" · ")  # whole parts only
    assert "6/10 cases done" in line


def test_plain_progress_is_rate_limited_and_plain() -> None:
    out = io.StringIO()
    now = [0.0]
    progress = PlainProgress(out, interval=2.0, clock=lambda: now[0])
    progress.update(snap())
    progress.update(snap(submitted=4))  # too soon: dropped
    now[0] = 2.5
    progress.update(snap(submitted=4))
    progress.update(snap(submitted=4))  # unchanged: dropped
    progress.log("failed: p1: refused")
    progress.update(snap(submitted=10, waiting_for_slot=0, posting=0))  # final: always shown
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[2] == "failed: p1: refused"
    assert "\x1b" not in out.getvalue()


def test_rich_progress_honours_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    progress = RichProgress(out)
    progress.update(snap())
    progress.log("a message")
    progress.close()
    text = out.getvalue()
    assert "a message" in text and "3 submitted" in text
    assert "\x1b[3" not in text  # no colour codes


def test_make_progress_plain_off_a_terminal() -> None:
    assert isinstance(make_progress(io.StringIO()), PlainProgress)
