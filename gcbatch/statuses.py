"""The one job-status vocabulary: the platform's status labels and what gcbatch adds.

Grand Challenge reports a job's state as a display string (``"Validating inputs"``,
``"Succeeded"``, ...), compared verbatim. Only three of them are final; every other
status, including one this module has never heard of, counts as "still running" (and as
holding one of the user's active-job slots), so that a new platform status can never make
``wait`` stop early or ``apply`` over-submit.

Statuses stay plain ``str`` values (the server may send a label we do not know, and it
must survive a round trip through the lockfile unchanged); :class:`JobStatus` names the
known ones so code never spells a label by hand, and the sets below are the only
definitions of "terminal" and "failed" in the package.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "FAILED_STATUSES",
    "MISSING",
    "NOT_SUBMITTED",
    "STATUS_ORDER",
    "TERMINAL_STATUSES",
    "JobStatus",
    "is_failed",
    "is_terminal",
]


class JobStatus:
    """The job status labels the platform uses (display strings, compared verbatim)."""

    VALIDATING_INPUTS: Final = "Validating inputs"
    QUEUED: Final = "Queued"
    STARTED: Final = "Started"
    RE_QUEUED: Final = "Re-Queued"
    PROVISIONING: Final = "Provisioning"
    PROVISIONED: Final = "Provisioned"
    EXECUTING: Final = "Executing"
    EXECUTED: Final = "Executed"
    PARSING_OUTPUTS: Final = "Parsing Outputs"
    EXECUTING_ALGORITHM: Final = "Executing Algorithm"
    EXTERNAL_EXECUTION_IN_PROGRESS: Final = "External Execution In Progress"
    SUCCEEDED: Final = "Succeeded"
    FAILED: Final = "Failed"
    CANCELLED: Final = "Cancelled"


#: A job in one of these has ended (an admin could still re-queue it, rarely). Every other
#: status counts against the user's active-jobs limit.
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

#: Ended without results: ``status`` exits 1 on these and ``apply --retry-failed``
#: resubmits them.
FAILED_STATUSES: frozenset[str] = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})

#: Pseudo-status of a case that has no job in the lockfile (never applied).
NOT_SUBMITTED: Final = "Not submitted"

#: Pseudo-status of a locked job the server no longer shows to this user (deleted,
#: another account's token, or a lockfile copied from elsewhere).
MISSING: Final = "Missing"

#: The order statuses are listed in summaries: a job's usual path through the platform,
#: then the endings. Statuses not listed here (new ones) follow, alphabetically.
STATUS_ORDER: tuple[str, ...] = (
    NOT_SUBMITTED,
    JobStatus.VALIDATING_INPUTS,
    JobStatus.QUEUED,
    JobStatus.RE_QUEUED,
    JobStatus.PROVISIONING,
    JobStatus.PROVISIONED,
    JobStatus.STARTED,
    JobStatus.EXECUTING,
    JobStatus.EXECUTING_ALGORITHM,
    JobStatus.EXTERNAL_EXECUTION_IN_PROGRESS,
    JobStatus.EXECUTED,
    JobStatus.PARSING_OUTPUTS,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
    MISSING,
)


def is_terminal(status: str | None) -> bool:
    """Ended: Succeeded, Failed or Cancelled. None and unknown statuses are not."""
    return status in TERMINAL_STATUSES


def is_failed(status: str | None) -> bool:
    """Ended without results (Failed, Cancelled)."""
    return status in FAILED_STATUSES
