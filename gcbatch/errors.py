"""The gcbatch exception tree.

Every error a user can meet is one of these; the CLI maps them to exit codes in one place
(``gcbatch.cli``) using :attr:`GcbatchError.exit_code`. Anything else that escapes is a bug
and is reported as such (exit 1, with a short message, never the token).

::

    GcbatchError (1)
    ├── InputError (2)                  bad input: nothing was sent to the server
    │   ├── ManifestError               one or more findings, each with file:line:col
    │   ├── LockfileError               corrupt, foreign format version or other server
    │   ├── LockHeldError               another gcbatch holds the lockfile's lock
    │   ├── ConfigError                 missing token, http:// to a non-loopback host, bad flag
    │   ├── StateFileError              a state file is a link, a folder, not a regular file
    │   └── PreflightError              cases do not fit the algorithm's interfaces/sockets
    ├── ApiError (1)                    the server answered with an error status
    │   ├── AuthenticationError         401
    │   ├── PermissionDeniedError       403
    │   ├── NotFoundError               404
    │   ├── RequestRejectedError        400 (the body's messages are kept)
    │   │   ├── TooManyActiveJobsError  "You have too many active jobs, ..."
    │   │   ├── OutOfCreditsError       "You have run out of algorithm credits"
    │   │   ├── TooManyUploadsError     "You have created too many uploads. ..."
    │   │   └── DuplicateJobError       "A result for these inputs ... already exists."
    │   ├── RateLimitedError            429 (after retries; a job POST is never retried)
    │   └── ServerError                 5xx (after retries, where retrying is allowed)
    ├── TransportError (1)              no answer: connection refused/reset, timeout
    ├── InDoubtError (1)                a job POST got no definite answer
    ├── QuotaStopError (4)              stopped cleanly on a quota (credits)
    ├── WaitTimeoutError (5)            `wait --timeout` passed before every job ended
    └── InterruptedByUser (130)         Ctrl-C
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2
EXIT_CHANGES = 3
EXIT_QUOTA = 4
EXIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Finding:
    """One problem in a user's file, located as precisely as we can.

    ``line`` and ``col`` are 1-based; ``path`` is the JSON-pointer-like path of the
    offending node inside the document (``cases/3/inputs/ct-image``), empty when unknown.
    """

    file: str
    message: str
    line: int | None = None
    col: int | None = None
    path: str = ""

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        return f"{where}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "path": self.path,
            "message": self.message,
        }


class GcbatchError(Exception):
    """Base of every error gcbatch reports to the user."""

    exit_code: int = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(GcbatchError):
    """The user's input is wrong; nothing that changes state was sent."""

    exit_code = EXIT_INVALID


class ManifestError(InputError):
    """A manifest (or another user file) has one or more problems."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = tuple(findings)
        super().__init__("\n".join(f.render() for f in self.findings))


class LockfileError(InputError):
    """The lockfile cannot be used: corrupt, another format version, another server."""


class LockHeldError(InputError):
    """Another gcbatch process holds the lockfile."""


class ConfigError(InputError):
    """Bad settings: missing token, unsafe server URL, contradictory flags."""


class StateFileError(InputError):
    """A file gcbatch keeps its state in (lockfile, journal, OS lock, download record,
    hash cache) is not one it may use: a symbolic or hard link (writing would change
    another file), a folder, a FIFO or a device."""


class PreflightError(InputError):
    """The cases do not fit what the server says about the algorithm."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class ApiError(GcbatchError):
    """The server answered with an error status. ``body`` is the decoded body."""

    def __init__(self, message: str, *, status: int, body: Any = None, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.url = url


class AuthenticationError(ApiError):
    """401: no token, or the server does not know it."""


class PermissionDeniedError(ApiError):
    """403."""


class NotFoundError(ApiError):
    """404."""


class RequestRejectedError(ApiError):
    """400: the server refused the request and created nothing."""


class TooManyActiveJobsError(RequestRejectedError):
    """The user already has the maximum number of active jobs."""


class OutOfCreditsError(RequestRejectedError):
    """The user has no algorithm credits left for this period."""


class TooManyUploadsError(RequestRejectedError):
    """The user has too many live uploads."""


class DuplicateJobError(RequestRejectedError):
    """A job with exactly these (existing) inputs already exists."""


class RateLimitedError(ApiError):
    """429 from the server or the infrastructure in front of it; nothing was done.

    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    """

    retry_after: float | None = None


class ServerError(ApiError):
    """5xx (after retrying where that is safe)."""


class TransportError(GcbatchError):
    """No answer from the server at all."""


class InDoubtError(GcbatchError):
    """A job POST may or may not have created a job; reconcile before resubmitting."""


class QuotaStopError(GcbatchError):
    """gcbatch stopped submitting because a quota (credits) ran out."""

    exit_code = EXIT_QUOTA


class WaitTimeoutError(GcbatchError):
    """``gcbatch wait`` gave up: the timeout passed while some jobs were still running.

    Distinct from a failure (exit 1) so a script can tell "still running, wait again"
    from "something failed"; the statuses seen so far were recorded in the lockfile.
    """

    exit_code = EXIT_TIMEOUT


class InterruptedByUser(GcbatchError):
    """The user pressed Ctrl-C; work in flight was checkpointed."""

    exit_code = EXIT_INTERRUPTED
