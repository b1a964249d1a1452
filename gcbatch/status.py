"""Job statuses of locked cases, aggregated: one :class:`CaseStatus` row per case.

Pure: (lockfile job records, jobs the server returned) → a :class:`StatusReport`. The
vocabulary is :mod:`gcbatch.statuses`'; the refresh that feeds this (one list request per
1,000 jobs, not one per job) is :mod:`gcbatch.operations.refresh`; the text is
:mod:`gcbatch.views.text`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gcbatch.statuses import (
    MISSING,
    NOT_SUBMITTED,
    STATUS_ORDER,
    JobStatus,
    is_failed,
    is_terminal,
)


def is_problem(status: str | None) -> bool:
    """True for statuses a user must look at: Failed, Cancelled, or a missing job."""
    return is_failed(status) or status == MISSING


def status_sort_key(status: str) -> tuple[int, str]:
    """Sort key putting statuses in :data:`STATUS_ORDER`, unknown ones last."""
    try:
        return (STATUS_ORDER.index(status), "")
    except ValueError:
        return (len(STATUS_ORDER), status)


def format_duration(seconds: float | None) -> str:
    """Short human text for a duration: ``"45s"``, ``"12m17s"``, ``"2h03m"``, ``"3d04h"``."""
    if seconds is None or math.isnan(seconds):
        return "-"
    total = round(seconds)
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours:02d}h"
    if hours:
        return f"{sign}{hours}h{minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m{secs:02d}s"
    return f"{sign}{secs}s"


@dataclass(frozen=True)
class CaseStatus:
    """One case's job as last seen.

    ``status`` is the platform's status, or :data:`NOT_SUBMITTED` / :data:`MISSING`.
    ``duration_s`` is the job's execution time (``exec_duration``) when the server has it.
    ``previous`` is the status the lockfile held before this refresh (None if none), so a
    caller can tell what changed.
    """

    case_id: str
    job_pk: str | None
    status: str
    duration_s: float | None = None
    previous: str | None = None

    @property
    def terminal(self) -> bool:
        return is_terminal(self.status)

    @property
    def problem(self) -> bool:
        return is_problem(self.status)

    @property
    def changed(self) -> bool:
        return self.job_pk is not None and self.status != MISSING and self.status != self.previous

    def as_json(self) -> dict[str, Any]:
        return {
            "case": self.case_id,
            "job": self.job_pk,
            "status": self.status,
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True)
class StatusReport:
    """Every targeted case's status, sorted by case id."""

    rows: tuple[CaseStatus, ...]

    def counts(self) -> dict[str, int]:
        """Number of cases per status, in :data:`STATUS_ORDER` order."""
        tally: dict[str, int] = {}
        for row in self.rows:
            tally[row.status] = tally.get(row.status, 0) + 1
        return {status: tally[status] for status in sorted(tally, key=status_sort_key)}

    @property
    def jobs(self) -> tuple[CaseStatus, ...]:
        """The rows that have a job (everything but never-submitted cases)."""
        return tuple(row for row in self.rows if row.job_pk is not None)

    @property
    def all_terminal(self) -> bool:
        """True when no job can still change by itself (missing jobs count as ended)."""
        return all(row.terminal or row.status == MISSING for row in self.jobs)

    @property
    def any_problem(self) -> bool:
        return any(row.problem for row in self.rows)

    @property
    def all_succeeded(self) -> bool:
        return all(row.status == JobStatus.SUCCEEDED for row in self.jobs)

    def running(self) -> tuple[CaseStatus, ...]:
        return tuple(row for row in self.jobs if not row.terminal and row.status != MISSING)

    def merged(self, newer: StatusReport) -> StatusReport:
        """This report with the rows of ``newer`` replacing the same cases' rows."""
        rows = {row.case_id: row for row in self.rows}
        rows.update((row.case_id, row) for row in newer.rows)
        return StatusReport(tuple(rows[cid] for cid in sorted(rows)))

    def unsettled(self) -> tuple[str, ...]:
        """Case ids worth asking the server about again: jobs not known to have ended."""
        return tuple(row.case_id for row in self.rows
                     if row.job_pk is not None and not row.terminal)

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": {"total": len(self.rows), "counts": self.counts()},
            "cases": [row.as_json() for row in self.rows],
        }


def build_report(
    records: Mapping[str, tuple[str | None, str | None]],
    server_jobs: Mapping[str, tuple[str, float | None]],
) -> StatusReport:
    """Combine lockfile records with what the server said.

    ``records`` maps case id → (job pk or None, status recorded in the lockfile or None).
    ``server_jobs`` maps job pk → (status, exec duration in seconds or None) for every job
    the server returned. A locked job absent from ``server_jobs`` is :data:`MISSING`.
    """
    rows: list[CaseStatus] = []
    for case_id in sorted(records):
        job_pk, previous = records[case_id]
        if job_pk is None:
            rows.append(CaseStatus(case_id, None, NOT_SUBMITTED, None, previous))
            continue
        seen = server_jobs.get(job_pk)
        if seen is None:
            rows.append(CaseStatus(case_id, job_pk, MISSING, None, previous))
            continue
        status, duration = seen
        rows.append(CaseStatus(case_id, job_pk, status, duration, previous))
    return StatusReport(tuple(rows))
