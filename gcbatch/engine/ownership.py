"""Which job is whose: how a job on the server relates to a case left in doubt.

Reconciliation (:mod:`gcbatch.engine.reconcile`) adopts a job by itself only when every
input carries the case's handle and no other job does. Otherwise the user decides
(``gcbatch adopt``), and needs to be told which of the jobs that look alike is whose.
gcbatch's upload names say it where anything can: ``<case tag>.gcb-<hash8><ext>`` names
the case an upload was made for, and the hash names the attempt. So for a job whose
values and linked images equal what the case sent, :func:`relate` says (a
:class:`Relation`):

``ours``           every upload-made input carries this attempt's names (or, with no
                   uploads, every input is equal)
``cannot_tell``    its upload inputs are not attached (still validating, or it ended
                   without them), or their names are not gcbatch's
``other_attempt``  named for a case with this id by another attempt: an older attempt of
                   this case, or another study's case with the same id
``other_case``     named for another case (its tag): another study's job, or an older
                   attempt of another case
``claimed``        the job of a case of this lockfile
``different``      a value, a linked image or the set of sockets differs: not this case's

:func:`listing` ranks the jobs that look alike (everything but ``different``) for the
in-doubt listing of ``plan``; :func:`examine` gathers what it needs from the server
(GETs only) together with the verdict apply would reach now. ``gcbatch adopt`` checks
its one job with :func:`relate`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from gcbatch.api.models import Job, SocketValue
from gcbatch.api.server_view import ServerView
from gcbatch.engine.reconcile import (
    Adopt,
    Ambiguous,
    NoJob,
    Reconciler,
    Verdict,
    decide,
    file_name_of,
    json_equal,
)
from gcbatch.engine.sent import Sent, SentInput
from gcbatch.errors import ApiError, NotFoundError, TransportError
from gcbatch.statuses import FAILED_STATUSES, TERMINAL_STATUSES

__all__ = [
    "Candidate",
    "Examination",
    "Outlook",
    "Relation",
    "describe_candidate",
    "examine",
    "handle_of",
    "image_pks",
    "listing",
    "relate",
]

#: ``<tag>.gcb-<hash8><ext>``: the names gcbatch gives its uploads (engine/prepare.py)
_HANDLE = re.compile(r"^(?P<tag>.+)\.gcb-(?P<hash>[0-9a-f]{8})(?P<ext>(\..*)?)$")
#: how many candidates the listing shows (the rest are counted)
LISTED = 10
#: how many image names :func:`examine` reads to tell other cases' jobs apart
NAME_LOOKUPS = 20


class Relation(str, Enum):
    """How one job relates to what an in-doubt case sent (see the module docstring)."""

    OURS = "ours"
    CANNOT_TELL = "cannot_tell"
    OTHER_ATTEMPT = "other_attempt"
    CLAIMED = "claimed"
    OTHER_CASE = "other_case"
    DIFFERENT = "different"


#: the listing's order, and which evidence wins when inputs disagree (higher wins)
_RANK = {Relation.OURS: 0, Relation.CANNOT_TELL: 1, Relation.OTHER_ATTEMPT: 2,
         Relation.CLAIMED: 3, Relation.OTHER_CASE: 4, Relation.DIFFERENT: 5}


@dataclass(frozen=True)
class Candidate:
    """One job and how it relates to the case. ``detail``: what says so (an upload
    name, a socket, the owning case); ``tag``: the case an upload was named for."""

    job: Job
    relation: Relation
    detail: str = ""
    tag: str = ""
    #: the image names this relation could not read (only :func:`examine` leaves any)
    unread: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"job": self.job.pk, "status": self.job.status,
                "relation": self.relation.value, "detail": self.detail,
                "tag": self.tag or None, "description": describe_candidate(self)}


def handle_of(name: str) -> tuple[str, str] | None:
    """(case tag, attempt hash) of a gcbatch upload name; None for any other name."""
    match = _HANDLE.match(name)
    return (match.group("tag"), match.group("hash")) if match else None


def _own_tag(sent: Sent) -> str:
    for f in sent.uploads:
        handle = handle_of(f.name)
        if handle is not None:
            return handle[0]
    return ""


def _short(value: Any, limit: int = 30) -> str:
    """A value as JSON, shortened (``true``, not Python's ``True``)."""
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pk_of(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def image_pks(sent: Sent, job: Job) -> list[str]:
    """The pks of ``job``'s images on the sockets where ``sent`` made an image from uploads
    (the names :func:`relate` wants to read)."""
    sockets = {i.socket for i in sent.inputs if i.kind == "uploads"}
    return [_pk_of(v.image) for v in job.inputs if v.socket_slug in sockets and v.image]


def _upload_relation(item: SentInput, have: SocketValue, names: Mapping[str, str],
                     own_tag: str) -> tuple[Relation, str, str, bool]:
    """(relation, detail, tag, unread) for one upload-made input that is attached."""
    if item.kind == "uploads":
        if not have.image:
            return Relation.DIFFERENT, f"its {item.socket} is not an image", "", False
        name = names.get(_pk_of(have.image))
        if name is None:
            return Relation.CANNOT_TELL, f"the name of its {item.socket} was not read", "", True
    else:
        if not have.file:
            return Relation.DIFFERENT, f"its {item.socket} is not a file", "", False
        name = file_name_of(have.file)
    ours = {f.name for f in item.files if handle_of(f.name) is not None}
    if name in ours:
        return Relation.OURS, name, "", False
    handle = handle_of(name)
    if handle is None:
        return Relation.CANNOT_TELL, f"its {item.socket} ({name}) was not uploaded by " \
                                     "gcbatch", "", False
    if handle[0] == own_tag:
        return Relation.OTHER_ATTEMPT, name, handle[0], False
    return Relation.OTHER_CASE, name, handle[0], False


def relate(sent: Sent, job: Job, names: Mapping[str, str], *, case_id: str,
           owner: str | None = None) -> Candidate:
    """How ``job`` relates to ``sent``, the in-doubt attempt of ``case_id`` (pure).

    ``names``: image pk → name for the images of ``job``'s upload-made inputs (see
    :func:`image_pks`); a missing one makes that input ``cannot_tell`` (``unread``).
    ``owner``: the case of this lockfile whose job it is, if any.
    """
    by_socket: dict[str, SocketValue] = {}
    for value in job.inputs:
        if value.socket_slug in by_socket:
            return Candidate(job, Relation.DIFFERENT, f"it has {value.socket_slug} twice")
        by_socket[value.socket_slug] = value
    wanted = {i.socket: i for i in sent.inputs}
    extra = sorted(set(by_socket) - set(wanted))
    if extra:
        return Candidate(job, Relation.DIFFERENT,
                         f"it has inputs this case did not send: {', '.join(extra)}")
    own_tag = _own_tag(sent)
    best = Candidate(job, Relation.OURS, "" if sent.has_uploads else "its inputs are equal")
    missing: list[str] = []
    for socket, item in sorted(wanted.items()):
        have = by_socket.get(socket)
        if have is None:
            if not item.is_upload:  # values and linked images attach when the job is made
                return Candidate(job, Relation.DIFFERENT, f"it has no {socket}")
            missing.append(socket)
            continue
        if item.kind == "value":
            if not json_equal(have.value, item.value):
                return Candidate(job, Relation.DIFFERENT,
                                 f"its {socket} is {_short(have.value)}, this case sent "
                                 f"{_short(item.value)}")
            continue
        if item.kind == "image":
            if not have.image or _pk_of(have.image) != _pk_of(item.image):
                return Candidate(job, Relation.DIFFERENT,
                                 f"its {socket} is another image than this case's")
            continue
        relation, detail, tag, unread = _upload_relation(item, have, names, own_tag)
        if relation == Relation.DIFFERENT:
            return Candidate(job, relation, detail)
        if _RANK[relation] > _RANK[best.relation]:
            best = Candidate(job, relation, detail, tag, unread)
        elif relation == Relation.OURS and best.relation == Relation.OURS and not best.detail:
            best = Candidate(job, relation, detail)
    if missing and best.relation == Relation.OURS:
        ended = job.status in TERMINAL_STATUSES
        why = (f"it ended {job.status} without its {', '.join(missing)}" if ended
               else f"its {', '.join(missing)} is not attached yet ({job.status})")
        best = Candidate(job, Relation.CANNOT_TELL, why)
    if owner is not None:
        # "" when the job is this very case's (an earlier job, kept in its history)
        return Candidate(job, Relation.CLAIMED, "" if owner == case_id else owner)
    return best


def describe_candidate(candidate: Candidate) -> str:
    """One line: how the job relates to the case, for listings and messages."""
    relation, detail = candidate.relation, candidate.detail
    if relation == Relation.OURS:
        text = f"carries this case's upload names ({detail})" if ".gcb-" in detail \
            else "has exactly this case's inputs"
    elif relation == Relation.CLAIMED:
        text = f"case {detail}'s job in this lockfile" if detail \
            else "this case's own earlier job in this lockfile"
    elif relation == Relation.OTHER_CASE:
        text = (f"made for case {candidate.tag} (another study's, or an older attempt): "
                f"{detail}")
    elif relation == Relation.OTHER_ATTEMPT:
        text = (f"made for a case with this id by another attempt (an older one, or "
                f"another study's case with the same id): {detail}")
    elif relation == Relation.CANNOT_TELL:
        text = f"cannot tell: {detail}"
    else:
        text = f"not this case's: {detail}"
    status = candidate.job.status
    if status in FAILED_STATUSES and "ended" not in text:
        text += f"; it ended {status}"
    return text


def listing(sent: Sent, jobs: Iterable[Job], names: Mapping[str, str], *, case_id: str,
            claimed_by: Mapping[str, str], limit: int = LISTED
            ) -> tuple[tuple[Candidate, ...], int]:
    """The jobs that look like ``case_id``'s, best first (newest first within a kind), at
    most ``limit`` of them, and how many more were left out (pure).

    A job of another case of this lockfile is listed (``claimed``) only where it could be
    mistaken for this case's: with no uploads, or with uploads not attached or not
    named for another case; one whose uploads carry its own case's names is simply that
    case's job, and left out. So are jobs whose image names were not read.
    """
    found: list[tuple[int, int, Candidate]] = []
    more = 0
    for position, job in enumerate(jobs):
        base = relate(sent, job, names, case_id=case_id)
        if base.relation == Relation.DIFFERENT:
            continue
        owner = claimed_by.get(job.pk)
        if owner is not None:
            if base.relation == Relation.OTHER_CASE:
                continue
            base = relate(sent, job, names, case_id=case_id, owner=owner)
        elif base.unread:
            more += 1
            continue
        found.append((_RANK[base.relation], -position, base))
    found.sort(key=lambda t: (t[0], t[1]))
    shown = tuple(c for _, _, c in found[:limit])
    return shown, more + max(0, len(found) - limit)


# --------------------------------------------------------------------------- I/O

#: what apply would do with an in-doubt case, as things stand (``plan --json``'s word)
Outlook = Literal["adopt", "ambiguous", "wait", "resend"]


@dataclass(frozen=True)
class Examination:
    """An in-doubt case looked at now: what apply would decide (ignoring the answer
    window, which only apply can tell) and the jobs that look like its own."""

    case_id: str
    verdict: Verdict
    candidates: tuple[Candidate, ...]
    #: jobs that also look alike and are not listed
    more: int = 0

    @property
    def outlook(self) -> Outlook:
        verdict = self.verdict
        if isinstance(verdict, Adopt):
            return "adopt"
        if isinstance(verdict, Ambiguous):
            return "ambiguous"
        if isinstance(verdict, NoJob):
            return "resend"
        return "wait"

    def as_json(self) -> dict[str, Any]:
        verdict = self.verdict
        return {"case": self.case_id, "apply_would": self.outlook, "reason": verdict.reason,
                "job": verdict.job.pk if isinstance(verdict, Adopt) else None,
                "candidates": [c.as_json() for c in self.candidates], "more": self.more}


def read_names(view: ServerView, pks: Iterable[str], *, budget: int) -> dict[str, str]:
    """pk → name of up to ``budget`` images (GETs); one that is gone is left out."""
    names: dict[str, str] = {}
    for pk in pks:
        if pk in names:
            continue
        if budget <= 0:
            break
        budget -= 1
        try:
            names[pk] = view.client.get_image(pk).name
        except NotFoundError:
            continue
    return names


def examine(view: ServerView, algorithm_pk: str, sent: Sent, jobs: Sequence[Job], *,
            case_id: str, claimed_by: Mapping[str, str],
            known_names: dict[str, str] | None = None,
            lookups: int = NAME_LOOKUPS) -> Examination:
    """The verdict and the listing for one in-doubt attempt (GETs only: image names, the
    case's uploads). ``jobs``: the algorithm's jobs, read once for every case;
    ``known_names``: image names read for earlier cases (updated), so no image is asked
    for twice."""
    reconciler = Reconciler.for_view(view, algorithm_pk)
    evidence = reconciler.evidence(sent, jobs=tuple(jobs))
    verdict = decide(sent, evidence, frozenset(claimed_by))
    cache = known_names if known_names is not None else {}
    names: dict[str, str] = dict(cache)
    ours = {f.name for f in sent.uploads}
    for socket, pks in evidence.named_images.items():
        item = next(i for i in sent.inputs if i.socket == socket)
        mine = next((f.name for f in item.files if f.name in ours and handle_of(f.name)), "")
        names.update({pk: mine for pk in pks})
    # the names of look-alike jobs' other images, newest first, within the budget
    unknown: list[str] = []
    for job in reversed(jobs):
        if job.pk in claimed_by:
            continue
        unread = [pk for pk in image_pks(sent, job) if pk not in names]
        if unread and relate(sent, job, {}, case_id=case_id).relation != Relation.DIFFERENT:
            unknown += unread
    # a name that cannot be read leaves its job out of the listing (counted in ``more``)
    with contextlib.suppress(ApiError, TransportError):
        read = read_names(view, unknown, budget=lookups)
        names.update(read)
        cache.update(read)
    shown, more = listing(sent, jobs, names, case_id=case_id, claimed_by=claimed_by)
    return Examination(case_id, verdict, shown, more)
