"""Typed progress events: what happens during a command, as values, never as prose.

Operations, the engine and the client report through one callback, a :data:`Hook`
(``Callable[[Event], None]``), and never build text for a person: a view
(:mod:`gcbatch.views`) turns each event into a human line or a JSON line. So ``--json``
carries progress too, and the wording lives in one place.

Every event is a frozen dataclass with a ``kind`` (its name in JSON) and plain fields
(str, int, float, bool, tuples, mappings of those), so any view can render any event and
:func:`as_json` needs no per-event code. Hooks may be called from worker threads: a view
serialises its own output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "ApplyProgress",
    "BytesReceived",
    "CaseProblem",
    "CreditsExhausted",
    "DownloadPlanned",
    "Event",
    "FileDone",
    "Hook",
    "LookingForJob",
    "PollFailed",
    "RequestRetried",
    "Resending",
    "StatusesNotRecorded",
    "UploadsPaused",
    "WaitProgress",
    "as_json",
    "ignore",
]


# --------------------------------------------------------------------------- apply


@dataclass(frozen=True)
class ApplyProgress:
    """Counters of one apply at one moment (sent a few times a second at most)."""

    kind: ClassVar[str] = "progress"

    total: int
    submitted: int
    adopted: int
    failed: int
    in_doubt: int
    uploading: int
    waiting_for_slot: int
    posting: int
    active_jobs: int
    #: None: no limit known (auto admission before any refusal)
    slot_limit: int | None
    bytes_uploaded: int
    bytes_total: int
    stopped_by_credits: bool
    stopping: bool

    @property
    def done(self) -> int:
        return self.submitted + self.adopted + self.failed + self.in_doubt


@dataclass(frozen=True)
class CaseProblem:
    """A case ended failed or in doubt (``outcome`` is the outcome kind's value)."""

    kind: ClassVar[str] = "case_problem"

    case: str
    outcome: str
    message: str


@dataclass(frozen=True)
class LookingForJob:
    """A job POST got no definite answer: the case is being looked up on the server."""

    kind: ClassVar[str] = "looking_for_job"

    case: str
    why: str


@dataclass(frozen=True)
class Resending:
    """An earlier or in-doubt submission made no job (or the user chose to resend)."""

    kind: ClassVar[str] = "resending"

    case: str
    reason: str
    #: True when sent again only because of ``--resubmit-in-doubt``
    forced: bool = False


@dataclass(frozen=True)
class PatientData:
    """Before any upload: DICOM to be sent as it is (``deidentify: false``) holds
    patient data; ``message`` names the case, the socket and the tags."""

    kind: ClassVar[str] = "patient_data"

    message: str


@dataclass(frozen=True)
class UploadsPaused:
    """The server refused an upload for a quota: uploading pauses until uploads are freed
    (``seconds``: the wait before a single trial, when nothing is seen freed sooner).
    ``quota``: "count" (too many live uploads) or "size" (the bytes of unused ones)."""

    kind: ClassVar[str] = "uploads_paused"

    seconds: float
    quota: str = "count"


@dataclass(frozen=True)
class CreditsExhausted:
    """The server said the user ran out of algorithm credits: no more job POSTs."""

    kind: ClassVar[str] = "credits_exhausted"


# --------------------------------------------------------------------------- client


@dataclass(frozen=True)
class RequestRetried:
    """A request is sent again after ``delay`` seconds (``url`` is safe to show)."""

    kind: ClassVar[str] = "request_retried"

    method: str
    url: str
    reason: str
    delay: float


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class StatusesNotRecorded:
    """Statuses were read but not written to the lockfile (another gcbatch holds it)."""

    kind: ClassVar[str] = "statuses_not_recorded"

    holder: str


@dataclass(frozen=True)
class WaitProgress:
    """One poll of ``wait``: how many jobs ended, and the count per status."""

    kind: ClassVar[str] = "wait_progress"

    ended: int
    total: int
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PollFailed:
    """A poll of ``wait`` failed; it is tried again at the next poll."""

    kind: ClassVar[str] = "poll_failed"

    message: str


@dataclass(frozen=True)
class DownloadPlanned:
    """``files`` more files will be fetched."""

    kind: ClassVar[str] = "download_planned"

    files: int


@dataclass(frozen=True)
class FileDone:
    """One output file is in place (``skipped``: it was already complete)."""

    kind: ClassVar[str] = "file_done"

    path: str
    size: int
    skipped: bool


@dataclass(frozen=True)
class BytesReceived:
    """``count`` more bytes of output arrived (many small events: views aggregate)."""

    kind: ClassVar[str] = "bytes_received"

    count: int


Event = (
    ApplyProgress | CaseProblem | LookingForJob | Resending | UploadsPaused | PatientData
    | CreditsExhausted | RequestRetried | StatusesNotRecorded | WaitProgress | PollFailed
    | DownloadPlanned | FileDone | BytesReceived
)

#: Where events go. Called from any thread.
Hook = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The hook of a caller that shows nothing (tests, library use)."""


def as_json(event: Event) -> dict[str, Any]:
    """``{"event": <kind>, <fields>...}``: one JSON line of the machine-readable view."""
    data: dict[str, Any] = {"event": event.kind}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        data[f.name] = dict(value) if isinstance(value, Mapping) else value
    return data
