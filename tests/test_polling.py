"""gcbatch.polling: duration parsing, the poll schedule and the loop, on a fake clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gcbatch.errors import EXIT_TIMEOUT, ServerError, TransportError
from gcbatch.polling import PollSchedule, WaitTimedOut, parse_duration, wait_for_jobs
from gcbatch.status import StatusReport, build_report


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400),
     ("500ms", 0.5), ("1d", 86400), (" 2H ", 7200), ("0", 0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "-5s", "5x", "5 s", "2h30", "s5", "1e3"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_schedule_grows_to_its_bound_and_resets_on_progress() -> None:
    schedule = PollSchedule(initial=1.0, factor=2.0, maximum=5.0)
    seen = [schedule.first()]
    for _ in range(5):
        seen.append(schedule.next(seen[-1], progressed=False))
    assert seen == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert schedule.next(5.0, progressed=True) == 1.0
    assert PollSchedule(initial=10, maximum=3).first() == 3
    with pytest.raises(ValueError):
        PollSchedule(initial=0)


class FakeTime:
    """A clock that only moves when the loop sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def _jobs_ending_at(ends: dict[str, float], time: FakeTime) -> Callable[[], StatusReport]:
    """A refresh: job X is Queued until fake time ends[X] (relative to start), then done."""
    start = time.now

    def refresh() -> StatusReport:
        elapsed = time.now - start
        server = {
            f"j-{case}": ("Succeeded" if elapsed >= end else "Queued", None)
            for case, end in ends.items()
        }
        return build_report({case: (f"j-{case}", None) for case in ends}, server)

    return refresh


def test_returns_within_one_max_interval_of_the_last_job_ending() -> None:
    time = FakeTime()
    schedule = PollSchedule(initial=1.0, factor=2.0, maximum=8.0)
    ends = {"a": 3.0, "b": 61.0}
    outcome = wait_for_jobs(_jobs_ending_at(ends, time), timeout=None, schedule=schedule,
                            clock=time.clock, sleep=time.sleep)
    assert outcome.report.all_succeeded
    assert 61.0 <= outcome.elapsed <= 61.0 + schedule.maximum
    assert max(time.sleeps) <= schedule.maximum


def test_already_finished_returns_after_one_poll_without_sleeping() -> None:
    time = FakeTime()
    outcome = wait_for_jobs(_jobs_ending_at({"a": 0.0}, time), timeout=10, schedule=PollSchedule(),
                            clock=time.clock, sleep=time.sleep)
    assert outcome.polls == 1 and time.sleeps == []


def test_timeout_polls_at_the_deadline_then_raises() -> None:
    time = FakeTime()
    calls: list[float] = []
    refresh = _jobs_ending_at({"a": 1.0, "b": 500.0}, time)

    def counting() -> StatusReport:
        calls.append(time.now)
        return refresh()

    with pytest.raises(WaitTimedOut) as info:
        wait_for_jobs(counting, timeout=30, schedule=PollSchedule(initial=4, maximum=8),
                      clock=time.clock, sleep=time.sleep)
    assert info.value.exit_code == EXIT_TIMEOUT
    assert "1 job(s) still running" in str(info.value)
    assert info.value.report.counts() == {"Queued": 1, "Succeeded": 1}
    # never slept past the deadline, and the last poll happened exactly at it
    assert calls[-1] == pytest.approx(1030.0)
    assert sum(time.sleeps) == pytest.approx(30.0)


def test_a_job_ending_just_before_the_deadline_is_seen() -> None:
    time = FakeTime()
    outcome = wait_for_jobs(_jobs_ending_at({"a": 29.5}, time), timeout=30,
                            schedule=PollSchedule(initial=25, maximum=25),
                            clock=time.clock, sleep=time.sleep)
    assert outcome.report.all_terminal and outcome.elapsed == pytest.approx(30.0)


def test_progress_resets_the_interval() -> None:
    time = FakeTime()
    schedule = PollSchedule(initial=1.0, factor=2.0, maximum=16.0)
    wait_for_jobs(_jobs_ending_at({"a": 20.0, "b": 100.0}, time), timeout=None,
                  schedule=schedule, clock=time.clock, sleep=time.sleep)
    # after "a" ended (first poll past t=20) the next sleep is back at the initial interval
    elapsed = 0.0
    for index, pause in enumerate(time.sleeps):
        elapsed += pause
        if elapsed >= 20.0:
            assert time.sleeps[index + 1] == 1.0
            break
    else:
        pytest.fail("never polled after job a ended")


def test_transient_errors_are_survived_but_not_forever() -> None:
    time = FakeTime()
    inner = _jobs_ending_at({"a": 5.0}, time)
    failures = iter([TransportError("reset"), ServerError("502", status=502)])
    seen: list[Exception] = []

    def flaky() -> StatusReport:
        error = next(failures, None)
        if error is not None:
            raise error
        return inner()

    outcome = wait_for_jobs(flaky, timeout=None, schedule=PollSchedule(initial=1, maximum=2),
                            clock=time.clock, sleep=time.sleep, on_error=seen.append)
    assert outcome.report.all_terminal and len(seen) == 2

    def broken() -> StatusReport:
        raise TransportError("down")

    with pytest.raises(TransportError):
        wait_for_jobs(broken, timeout=None, schedule=PollSchedule(initial=1, maximum=2),
                      clock=time.clock, sleep=time.sleep, max_consecutive_errors=3)


def test_reports_every_poll() -> None:
    time = FakeTime()
    reports: list[StatusReport] = []
    outcome = wait_for_jobs(_jobs_ending_at({"a": 3.0}, time), timeout=None,
                            schedule=PollSchedule(initial=1, factor=1, maximum=1),
                            clock=time.clock, sleep=time.sleep, on_report=reports.append)
    assert len(reports) == outcome.polls == 4
