"""``gcbatch wait``: refresh until every targeted job has ended, or the timeout passes.

The timing rules (back off while nothing changes, never sleep past the deadline, survive
a few failed polls) are :func:`gcbatch.polling.wait_for_jobs`'s; this is the use case
around them. After the first poll only jobs that have not ended are asked about: when a
few stragglers remain, that is a few direct GETs instead of the whole list. Statuses are
recorded at every poll, so Ctrl-C (or the timeout, :class:`~gcbatch.polling.WaitTimedOut`
with the last report) loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gcbatch.events import Hook, PollFailed, WaitProgress, ignore
from gcbatch.operations.refresh import refresh, scope
from gcbatch.operations.session import Session
from gcbatch.operations.study import Study
from gcbatch.polling import PollSchedule, WaitOutcome, wait_for_jobs
from gcbatch.status import StatusReport
from gcbatch.targeting import Targeting

__all__ = ["wait"]


def wait(
    study: Study,
    session: Session,
    targeting: Targeting,
    *,
    timeout: float | None,
    schedule: PollSchedule,
    on_event: Hook = ignore,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitOutcome:
    """Poll until every targeted job ended; WaitTimedOut (exit 5) at ``timeout``."""
    cases = scope(study, targeting)
    seen: list[StatusReport] = []

    def poll() -> StatusReport:
        if not seen:
            seen.append(refresh(study, session, cases.targeted, on_event=on_event).report)
        else:
            newer = refresh(study, session, seen[0].unsettled(), on_event=on_event).report
            seen[0] = seen[0].merged(newer)
        return seen[0]

    def progress(report: StatusReport) -> None:
        jobs = report.jobs
        on_event(WaitProgress(ended=len(jobs) - len(report.running()), total=len(jobs),
                              counts=report.counts()))

    return wait_for_jobs(poll, timeout=timeout, schedule=schedule, clock=clock, sleep=sleep,
                         on_report=progress, on_error=lambda exc: on_event(PollFailed(str(exc))))
