"""``gcbatch wait``: poll until every targeted job has ended, or a deadline passes.

The loop is written against three injected callables (refresh, clock, sleep) so its
timing rules are tested without a server or real time:

- Polls back off geometrically while nothing changes (the platform's jobs take minutes;
  asking every second for an hour is rude), but never wait longer than ``max_interval``
  between polls, and drop back to the first interval as soon as any job changed status
  (jobs tend to end in bursts). So the loop notices the last job ending within one
  ``max_interval``.
- A sleep never goes past the deadline: when the timeout comes, the loop polls one last
  time exactly at the deadline and then gives up with :class:`WaitTimeoutError`.
- Every refresh records what it saw before the next sleep (the refresh callable does
  that), so Ctrl-C at any moment loses nothing but the current sleep.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from gcbatch.errors import ServerError, TransportError, WaitTimeoutError
from gcbatch.status import StatusReport, format_duration

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in a human duration: ``90``, ``90s``, ``1.5h``, ``2h30m``, ``500ms``, ``1d``.

    A bare number is seconds. Raises ValueError (with the accepted forms) otherwise;
    negative durations are refused.
    """
    raw = text.strip().lower()
    if not raw:
        raise ValueError("empty duration")
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        return float(raw)
    pos = 0
    total = 0.0
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or pos == 0:
        raise ValueError(
            f"{text!r} is not a duration (use e.g. 90, 90s, 15m, 2h, 1h30m, 1d)"
        )
    return total


@dataclass(frozen=True)
class PollSchedule:
    """When to poll next: ``initial``, growing by ``factor`` up to ``maximum`` seconds."""

    initial: float = 2.0
    factor: float = 1.5
    maximum: float = 30.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum <= 0 or self.factor < 1:
            raise ValueError("poll intervals must be positive and factor >= 1")

    def first(self) -> float:
        return min(self.initial, self.maximum)

    def next(self, current: float, progressed: bool) -> float:
        """The interval after one of ``current`` seconds; reset when jobs progressed."""
        if progressed:
            return self.first()
        return min(current * self.factor, self.maximum)


class WaitTimedOut(WaitTimeoutError):
    """The timeout passed; ``report`` is the last status seen (already recorded)."""

    def __init__(self, message: str, report: StatusReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class WaitOutcome:
    """How a wait ended: the last report, how many polls it took, seconds elapsed."""

    report: StatusReport
    polls: int
    elapsed: float


def _signature(report: StatusReport) -> tuple[tuple[str, str], ...]:
    return tuple((row.case_id, row.status) for row in report.rows)


def wait_for_jobs(
    refresh: Callable[[], StatusReport],
    *,
    timeout: float | None,
    schedule: PollSchedule,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    on_report: Callable[[StatusReport], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    max_consecutive_errors: int = 5,
) -> WaitOutcome:
    """Poll ``refresh`` until ``report.all_terminal``; raise WaitTimedOut at the deadline.

    ``timeout`` None means no deadline. ``on_report`` sees every report (progress display).
    A refresh that fails with a transport or 5xx error (after the client's own retries) is
    reported to ``on_error`` and retried at the next poll: an hours-long wait should not die
    of one network blip. More than ``max_consecutive_errors`` in a row re-raise the error.
    """
    start = clock()
    deadline = None if timeout is None else start + timeout
    interval = schedule.first()
    polls = 0
    errors_in_a_row = 0
    last: tuple[tuple[str, str], ...] | None = None
    report: StatusReport | None = None
    while True:
        polls += 1
        try:
            fresh = refresh()
        except (TransportError, ServerError) as exc:
            errors_in_a_row += 1
            if errors_in_a_row > max_consecutive_errors:
                raise
            if on_error is not None:
                on_error(exc)
            fresh = None
        if fresh is not None:
            errors_in_a_row = 0
            report = fresh
            if on_report is not None:
                on_report(report)
            if report.all_terminal:
                return WaitOutcome(report, polls, clock() - start)
            signature = _signature(report)
            if last is not None:
                interval = schedule.next(interval, progressed=signature != last)
            last = signature
        now = clock()
        if deadline is not None and now >= deadline:
            running = len(report.running()) if report is not None else 0
            raise WaitTimedOut(
                f"timed out after {format_duration(now - start)} with {running} job(s) "
                "still running; run `gcbatch wait` again to keep waiting",
                report if report is not None else StatusReport(()),
            )
        pause = interval if deadline is None else min(interval, deadline - now)
        sleep(max(pause, 0.0))
