"""Reconciliation: did an in-doubt job POST create a job, and which one?

A case is *in doubt* when the journal holds its ``intent`` but no outcome: the process
died, or the job POST got no definite answer (timeout, reset, 5xx after the server may
have committed). Grand Challenge has no idempotency key and no client tag on jobs, so we
find the job by what we sent:

- **values** compare equal (JSON, with ``true`` never equal to ``1``);
- **existing images** (``image:`` sources, archive-item images) by image pk;
- **uploaded images** by *name*: we name every upload ``<case-tag>.gcb-<hash8>.<ext>``
  (unique per submission attempt) and the platform names the image it makes from
  uploads after the uploaded file (a MetaImage pair after its header), so
  ``cases/images/?name=<that>`` finds the image and the job using it is ours;
- **uploaded files** (File sockets) by *file name*: the platform stores the value under
  the upload's filename (``…/<pk>/<upload filename>``), so the last segment of the job
  input's ``file`` URL must be our upload's name;
- **DICOM** (see :mod:`gcbatch.engine.dicom`): a DICOM Image Set's image by the
  ``image_name`` we sent (it carries our handle); a series on an Image socket, whose image
  the platform names ``<StudyInstanceUID>-<n>``, by its Series Instance UID
  (``cases/images/?series_instance_uid=``): our own per attempt for de-identified copies,
  the original's otherwise (less the images of that series seen before the POST).

Every kind of input has an exact handle, and a job is never adopted on a weaker rule:
a job whose upload inputs do not carry our names is not ours, whatever else it holds
(another study's job, a Cancelled one). Matching is by handle alone; claimed jobs (owned
by a case of the lockfile) are never matched.

The platform attaches upload-made inputs only after validation: the 201 and the job list
show a fresh job with its value inputs but *without* its upload inputs while it is
"Validating inputs". Such a *partial* job may be ours, so the verdict is "wait" (bounded)
rather than "no match".

Verdicts (:func:`decide`, pure): exactly one match → :class:`Adopt`; several →
:class:`Ambiguous` (left in doubt; the user decides: ``gcbatch adopt`` or
``--resubmit-in-doubt``); a partial job still validating → :class:`Wait`; otherwise
:class:`NoJob`. "No job" is evidence only once the answer window has closed (see
:mod:`gcbatch.engine.parking`): a gateway may have answered while the application still
works on the POST.

An intent records the stage it reached (:class:`~gcbatch.engine.sent.Sent`): ``upload``
(the job POST was never sent, so certainly no job) or ``post`` (the POST may have gone
out). The server is asked through :class:`~gcbatch.api.server_view.ServerView`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import unquote

from gcbatch.api.models import Job, SocketValue
from gcbatch.api.server_view import ServerView
from gcbatch.engine.sent import Sent, Stage
from gcbatch.statuses import TERMINAL_STATUSES

__all__ = [
    "Adopt",
    "Ambiguous",
    "Evidence",
    "Match",
    "NoJob",
    "Reconciler",
    "Verdict",
    "Wait",
    "choose_hint",
    "classify",
    "decide",
    "describe_jobs",
    "file_name_of",
    "find_existing",
    "json_equal",
]

#: how many of the newest jobs an in-run reconciliation reads
RECENT_JOBS = 1000


# --------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Adopt:
    job: Job
    reason: str


@dataclass(frozen=True)
class NoJob:
    reason: str


@dataclass(frozen=True)
class Ambiguous:
    jobs: tuple[Job, ...]
    reason: str


@dataclass(frozen=True)
class Wait:
    jobs: tuple[Job, ...]
    reason: str


Verdict = Adopt | NoJob | Ambiguous | Wait


@dataclass(frozen=True)
class Evidence:
    """What the server told us, gathered by :class:`Reconciler` (or a test).

    ``jobs``: the algorithm's jobs (all pages; other users' public ones included).
    ``named_images``: socket → pks of images named like one of our upload files there.
    ``uploads_gone``: upload pk → True when ``GET uploads/<pk>/`` is 404 (consumed or
    expired), False when it still lives. Missing pk → unknown.
    """

    jobs: tuple[Job, ...] = ()
    named_images: Mapping[str, frozenset[str]] = field(default_factory=dict)
    uploads_gone: Mapping[str, bool] = field(default_factory=dict)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality where ``true`` ≠ ``1`` and ``1`` == ``1.0`` (as JSON numbers are)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _pk_of(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


class Match(Enum):
    """How one job relates to what a case sent."""

    STRONG = "strong"      # every input present and matched by its handle
    PARTIAL = "partial"    # what it has matches; only upload inputs are missing (not attached)
    MISMATCH = "mismatch"


STRONG, PARTIAL, MISMATCH = Match.STRONG, Match.PARTIAL, Match.MISMATCH


def file_name_of(url: str) -> str:
    """The last path segment of a stored file's URL, %-decoded (``…/<pk>/x.json`` → x.json)."""
    path = url.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    return unquote(path.rsplit("/", 1)[-1])


def classify(sent: Sent, job: Job, named_images: Mapping[str, frozenset[str]]) -> Match:
    """How ``job`` relates to ``sent`` (pure)."""
    by_socket: dict[str, SocketValue] = {}
    for value in job.inputs:
        if value.socket_slug in by_socket:
            return MISMATCH
        by_socket[value.socket_slug] = value
    wanted = {i.socket: i for i in sent.inputs}
    if set(by_socket) - set(wanted):
        return MISMATCH
    verdict = STRONG
    for socket, item in wanted.items():
        have = by_socket.get(socket)
        if have is None:
            if not item.is_upload:
                return MISMATCH  # value/image inputs are attached when the job is created
            verdict = PARTIAL
            continue
        if item.kind == "value":
            if not json_equal(have.value, item.value):
                return MISMATCH
        elif item.kind == "image":
            if not have.image or _pk_of(have.image) != _pk_of(item.image):
                return MISMATCH
        elif item.kind == "uploads":
            # the image is named after one of our uploads (exactly), or it is not ours
            if not have.image or _pk_of(have.image) not in named_images.get(socket, ()):
                return MISMATCH
        else:  # "upload": a File socket; the value is stored under the upload's filename
            if not have.file or file_name_of(have.file) not in {f.name for f in item.files}:
                return MISMATCH
    return verdict


def decide(sent: Sent, evidence: Evidence, claimed: frozenset[str] | set[str]) -> Verdict:
    """The verdict for one in-doubt intent (pure). ``claimed``: job pks owned by cases."""
    if sent.stage != Stage.POST:
        return NoJob("the job POST was never sent (the run stopped while uploading)")
    groups: dict[Match, list[Job]] = {STRONG: [], PARTIAL: []}
    for job in evidence.jobs:
        if job.pk in claimed:
            continue
        kind = classify(sent, job, evidence.named_images)
        if kind in groups:
            groups[kind].append(job)
    strong, partial = groups[STRONG], groups[PARTIAL]
    if len(strong) == 1:
        return Adopt(strong[0], "its inputs carry what this case sent")
    if len(strong) > 1:
        return Ambiguous(tuple(strong), f"{len(strong)} unclaimed jobs have exactly these inputs")
    validating = [j for j in partial if j.status not in TERMINAL_STATUSES]
    if validating:
        return Wait(tuple(validating),
                    f"{len(validating)} job(s) still validating could be this case's")
    recorded = [f.upload_pk for f in sent.uploads if f.upload_pk]
    gone = [pk for pk in recorded if evidence.uploads_gone.get(pk) is True]
    if sent.has_image_set and gone:
        # the platform deletes a DICOM image set's uploads when its import starts and
        # names the image only when the import ends, minutes later: "not yet", never "no job"
        return Wait((), "its DICOM image set's uploads were taken and its image does not "
                        "exist yet (the platform imports it: minutes)")
    if recorded and len(gone) == len(recorded):
        return NoJob("no job carries this case's upload names (its uploads are gone: "
                     "expired, or consumed by a job that is not ours to see)")
    return NoJob("no job has these inputs")


def find_existing(
    sent: Sent, jobs: Iterable[Job], claimed: Mapping[str, str]
) -> tuple[list[Job], list[tuple[Job, str]]]:
    """After "a result for these inputs already exists": the jobs with these inputs.

    Returns (unclaimed matches, [(claimed match, owning case)]). Only value/existing-image
    sends are deduplicated by the server, so matches must be strong.
    """
    free: list[Job] = []
    owned: list[tuple[Job, str]] = []
    for job in jobs:
        if classify(sent, job, {}) != STRONG:
            continue
        owner = claimed.get(job.pk)
        if owner is None:
            free.append(job)
        else:
            owned.append((job, owner))
    return free, owned


# --------------------------------------------------------------------------- I/O


class Reconciler:
    """Gathers :class:`Evidence` from the server and decides, waiting (bounded) on "wait".

    ``list_jobs()`` returns the algorithm's jobs; ``list_images(name)`` images with that
    name; ``get_upload(pk)`` raises :class:`NotFoundError` once an upload is gone. They are
    the client's methods in production (see :meth:`for_client`) and fakes in tests.
    """

    def __init__(
        self,
        *,
        list_jobs: Callable[[], Iterable[Job]],
        list_image_pks: Callable[[str], Iterable[str]],
        upload_exists: Callable[[str], bool],
        list_recent_jobs: Callable[[], Iterable[Job]] | None = None,
        list_series_image_pks: Callable[[str], Iterable[str]] | None = None,
        wait_timeout: float = 60.0,
        poll_interval: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._list_jobs = list_jobs
        self._list_recent = list_recent_jobs
        self._list_image_pks = list_image_pks
        self._upload_exists = upload_exists
        self._list_series_image_pks = list_series_image_pks
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock
        self._jobs_cache: tuple[Job, ...] | None = None
        #: one full read at a time, shared: see :meth:`jobs`
        self._read_lock = threading.Lock()
        self._read_started = 0
        self._asks = itertools.count(1)

    @classmethod
    def for_view(cls, view: ServerView, algorithm_pk: str, **kwargs: Any) -> Reconciler:
        """A reconciler that asks the server through ``view``."""
        return cls(
            list_jobs=lambda: view.all_jobs(algorithm_pk),
            list_image_pks=view.image_pks_named,
            upload_exists=view.upload_exists,
            # the list is oldest first: right after our own POST, read only its tail,
            # where a job it made must be (a full listing of a busy algorithm is many pages)
            list_recent_jobs=lambda: view.recent_jobs(algorithm_pk, RECENT_JOBS),
            list_series_image_pks=view.image_pks_of_series,
            **kwargs,
        )

    def jobs(self, *, refresh: bool = False) -> tuple[Job, ...]:
        """Every job of the algorithm: read once and shared by the workers. ``refresh``
        wants a read that began after it asked: a worker that asks while another's read
        is under way waits for the next one, and every worker waiting then shares that
        one (three cases in doubt read the list once, not three or nine times)."""
        asked = next(self._asks)
        with self._read_lock:
            if self._jobs_cache is not None and (not refresh or self._read_started > asked):
                return self._jobs_cache
            self._read_started = next(self._asks)
            self._jobs_cache = tuple(self._list_jobs())
            return self._jobs_cache

    def recent_jobs(self) -> tuple[Job, ...]:
        """The newest jobs of the algorithm (where a job made minutes ago must be)."""
        if self._list_recent is not None:
            return tuple(self._list_recent())
        return self.jobs(refresh=True)

    def evidence(self, sent: Sent, *, refresh: bool = False, recent: bool = False,
                 jobs: tuple[Job, ...] | None = None) -> Evidence:
        """Ask in this order: jobs, then image names, then uploads. Inputs only ever get
        attached (never detached), so a job listed without its image is seen as partial
        ("wait"), and a job listed with it has an image the later name query finds.

        ``recent``: only the newest jobs (right after our own POST, the job it may have
        made is among them); otherwise every job of the algorithm (cached until refresh).
        """
        # ``jobs`` given: read once for several cases (the parking lot's rounds)
        if jobs is None and recent and self._list_recent is not None:
            jobs = tuple(self._list_recent())
        elif jobs is None:
            jobs = self.jobs(refresh=refresh)
        named: dict[str, frozenset[str]] = {}
        for item in sent.inputs:
            if item.kind == "uploads":
                pks: set[str] = set()
                if item.image_name:  # a DICOM image set: named after what we sent
                    pks.update(self._list_image_pks(item.image_name))
                elif item.series_uid:  # DICOM on an Image socket: by its series
                    if self._list_series_image_pks is not None:
                        pks.update(self._list_series_image_pks(item.series_uid))
                    pks.difference_update(item.known_images)
                else:
                    for f in item.files:
                        if ".gcb-" in f.name:  # our handles (a MetaImage data file keeps
                            pks.update(self._list_image_pks(f.name))  # its own name)
                named[item.socket] = frozenset(pks)
        gone: dict[str, bool] = {}
        if sent.stage == Stage.POST:
            for f in sent.uploads:
                if f.upload_pk:
                    gone[f.upload_pk] = not self._upload_exists(f.upload_pk)
        return Evidence(jobs=jobs, named_images=named, uploads_gone=gone)

    def reconcile(
        self,
        sent: Sent,
        claimed: Callable[[], frozenset[str]],
        *,
        refresh: bool = False,
        recent: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
        wait_timeout: float | None = None,
    ) -> Verdict:
        """Decide for one intent, re-asking the server while the verdict is :class:`Wait`.

        ``claimed`` is called each round (other cases may claim jobs meanwhile). After
        ``wait_timeout`` seconds of waiting the last :class:`Wait` is returned (the case
        stays in doubt; a later run looks again).
        """
        if sent.stage != Stage.POST:
            return decide(sent, Evidence(), claimed())
        deadline = self._clock() + (self.wait_timeout if wait_timeout is None else wait_timeout)
        verdict = decide(sent, self.evidence(sent, refresh=refresh, recent=recent), claimed())
        rounds = 0
        while isinstance(verdict, Wait) and rounds < 10_000:
            rounds += 1
            if self._clock() >= deadline or should_stop():
                return verdict
            self._sleep(self.poll_interval)
            verdict = decide(sent, self.evidence(sent, refresh=True, recent=recent), claimed())
        return verdict


def describe_jobs(jobs: Sequence[Job]) -> str:
    """``"3f2c… (Queued), 9a1b… (Succeeded)"`` for messages."""
    return ", ".join(f"{j.pk} ({j.status})" for j in jobs)


def choose_hint(case_id: str) -> str:
    """What the user does with an ambiguous case (the end of its in-doubt message)."""
    return (f"`gcbatch plan MANIFEST --case {case_id}` says whose each job is; record one "
            f"with `gcbatch adopt MANIFEST {case_id} JOB`, or send it again with "
            "apply --resubmit-in-doubt")
