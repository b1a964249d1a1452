"""Job statuses of locked cases: the vocabulary, the aggregation and its rendering.

Grand Challenge reports a job's state as a display string (``"Validating inputs"``,
``"Succeeded"``, ...). Only three of them are final; everything else, including a status
this module has never heard of, counts as "still running" so that a new platform status
can never make ``wait`` stop early.

The pure half of this module turns (lockfile job records, jobs the server returned) into
:class:`CaseStatus` rows and a :class:`StatusReport`, and renders those as text or JSON.
The refresh itself (one list request per 1000 jobs instead of one request per job) lives
in :mod:`gcbatch.results`, which is the only part that talks to the network.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SUCCEEDED = "Succeeded"
FAILED = "Failed"
CANCELLED = "Cancelled"

#: Statuses after which the platform does nothing more with a job on its own.
TERMINAL_STATUSES = frozenset({SUCCEEDED, FAILED, CANCELLED})

#: Terminal statuses that mean "no results": ``status`` exits 1 on these and
#: ``apply --retry-failed`` resubmits them.
PROBLEM_STATUSES = frozenset({FAILED, CANCELLED})

#: Pseudo-status of a case that has no job in the lockfile (never applied).
NOT_SUBMITTED = "Not submitted"

#: Pseudo-status of a locked job the server no longer shows to this user (deleted,
#: another account's token, or a lockfile copied from elsewhere). Counted as a problem.
MISSING = "Missing"

#: The order statuses are listed in summaries: a job's usual path through the platform,
#: then the endings. Statuses not listed here (new ones) follow, alphabetically.
STATUS_ORDER: tuple[str, ...] = (
    NOT_SUBMITTED,
    "Validating inputs",
    "Queued",
    "Re-Queued",
    "Provisioning",
    "Provisioned",
    "Started",
    "Executing",
    "Executing Algorithm",
    "External Execution In Progress",
    "Executed",
    "Parsing Outputs",
    SUCCEEDED,
    FAILED,
    CANCELLED,
    MISSING,
)


def is_terminal(status: str | None) -> bool:
    """True when the platform will not change ``status`` by itself any more."""
    return status in TERMINAL_STATUSES


def is_problem(status: str | None) -> bool:
    """True for statuses a user must look at: Failed, Cancelled, or a missing job."""
    return status in PROBLEM_STATUSES or status == MISSING


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
        return all(row.status == SUCCEEDED for row in self.jobs)

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


def render_summary(report: StatusReport) -> str:
    """One line: ``"12 cases: 3 Queued, 8 Succeeded, 1 Failed"``."""
    counts = report.counts()
    noun = "case" if len(report.rows) == 1 else "cases"
    if not counts:
        return f"0 {noun}"
    body = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"{len(report.rows)} {noun}: {body}"


def render_table(rows: Iterable[CaseStatus]) -> str:
    """A plain, aligned text table (case, job, status, duration); stable for piping."""
    header = ("CASE", "JOB", "STATUS", "DURATION")
    lines = [header] + [
        (row.case_id, row.job_pk or "-", row.status, format_duration(row.duration_s))
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"
