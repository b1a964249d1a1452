"""``gcbatch adopt MANIFEST CASE JOB``: resolve a case left in doubt by hand.

A case is in doubt when its job POST went out and gcbatch never learned whether it made
a job. ``apply`` settles most of them by itself (:mod:`gcbatch.engine.parking`,
:mod:`gcbatch.engine.reconcile`); it asks the user when several jobs carry the case's
handles, or when the one that may be its own cannot be told yet. Then the user picks
one of the listed jobs (``plan`` lists them, saying whose each one is), and this records it.

The order keeps the promise "never a wrong job, never a half-written lockfile":

1. the lockfile must exist and hold the case in doubt (nothing is created otherwise);
2. its OS lock is taken (:class:`~gcbatch.lockfile.LockfileStore`), so no apply can
   change the case meanwhile, and the state is read again under it;
3. the job must exist on the server, run this study's algorithm, not be another case's
   job in this lockfile, and carry what the case sent (:func:`~gcbatch.engine.ownership.relate`):
   a job made for another case, or with other values, is refused whatever is asked; one
   that cannot be told apart (uploads not attached yet, or named by another attempt) is
   taken only with ``force``;
4. an ``adopted`` event is journalled (fsynced), closing the intent; the lockfile is
   checkpointed when the store closes.

Only GETs are sent to the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gcbatch.api.models import Job
from gcbatch.engine.ownership import (
    Candidate,
    Relation,
    describe_candidate,
    image_pks,
    read_names,
    relate,
)
from gcbatch.engine.sent import Sent, Stage
from gcbatch.errors import InputError, NotFoundError
from gcbatch.lockfile import AlgorithmRef, CaseEntry, JobRecord, LockfileStore, utc_now
from gcbatch.operations.session import Session
from gcbatch.operations.study import Study
from gcbatch.preflight import require_algorithm

__all__ = ["AdoptResult", "adopt", "job_pk_of"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
_JOB_URL = re.compile(r"/algorithms/jobs/(?P<pk>[^/?#]+)/?(?:[?#].*)?$")


@dataclass(frozen=True)
class AdoptResult:
    """What was recorded: the case, its job now, how the job relates to what it sent."""

    case_id: str
    job: Job
    candidate: Candidate
    lockfile_path: Path
    #: the job was taken with ``force`` although it could not be told apart
    forced: bool = False
    #: the case's job before (now in its history), if it had one
    replaced: str | None = None

    def as_json(self) -> dict[str, object]:
        return {"case": self.case_id, "job": self.job.pk, "api_url": self.job.api_url,
                "status": self.job.status, "relation": self.candidate.relation.value,
                "description": describe_candidate(self.candidate), "forced": self.forced,
                "replaced": self.replaced, "lockfile": str(self.lockfile_path)}


def job_pk_of(text: str) -> str:
    """A job's pk from what the user typed: the pk, or the job's API URL (InputError
    for anything else: the pk goes into a request path, so it must look like one)."""
    value = text.strip()
    if "://" in value or value.startswith("/"):
        match = _JOB_URL.search(value)
        value = match.group("pk") if match else ""
    if not _UUID.match(value):
        raise InputError(f"{text!r} is not a job: give its pk (a uuid, as `gcbatch plan` "
                         "lists it) or its API URL (…/api/v1/algorithms/jobs/<pk>/)")
    return value.lower()


def _in_doubt_entry(entry: CaseEntry | None, case_id: str, path: Path) -> CaseEntry:
    """The case's entry if it is in doubt; InputError saying what it is otherwise."""
    if entry is None:
        raise InputError(f"case {case_id!r} is not in {path}: apply has never sent it, so "
                         "there is nothing to adopt")
    if entry.pending is None or not entry.pending.may_have_posted:
        if entry.job is not None:
            now = f"its job is {entry.job.pk} ({entry.job.status or 'status unknown'})"
        else:
            now = "it has no job yet, and none can exist (apply submits it)"
        raise InputError(f"case {case_id!r} is not in doubt: {now}; adopt is only for a "
                         "case whose job POST got no answer")
    return entry


def _claimed_by(store: LockfileStore) -> dict[str, str]:
    owners: dict[str, str] = {}
    for cid, entry in store.lockfile.cases.items():
        if entry.job is not None:
            owners[entry.job.pk] = cid
        for old in entry.history:
            owners.setdefault(old.pk, cid)
    return owners


def _refuse_unless_forced(candidate: Candidate, *, force: bool, case_id: str,
                          job: Job, manifest: Path) -> None:
    """Clear evidence against the job is always refused; doubt needs ``force``."""
    relation = candidate.relation
    text = describe_candidate(candidate)
    if relation in (Relation.DIFFERENT, Relation.OTHER_CASE):
        raise InputError(f"job {job.pk} is not case {case_id!r}'s: {text}. Nothing "
                         f"recorded; `gcbatch plan {manifest} --case {case_id}` lists the "
                         "jobs that may be its")
    if relation in (Relation.CANNOT_TELL, Relation.OTHER_ATTEMPT) and not force:
        raise InputError(f"job {job.pk} may or may not be case {case_id!r}'s: {text}. "
                         "Nothing recorded; adopt it anyway with --force if you know it "
                         "is (a job still validating shows its uploads within minutes)")


def adopt(study: Study, session: Session, case_id: str, job_ref: str, *,
          force: bool = False) -> AdoptResult:
    """Record job ``job_ref`` (a pk or API URL) as the job of in-doubt case ``case_id``.

    Raises InputError (exit 2, nothing recorded) when the case is not in doubt or the
    job is not its own (see the module docstring), LockHeldError while another gcbatch
    holds the lockfile, LockfileError for a lockfile of another server or algorithm.
    """
    pk = job_pk_of(job_ref)
    path = study.lockfile
    if not path.exists():
        raise InputError(f"{path} does not exist: nothing was ever sent for this study, "
                         "so no case is in doubt")
    with LockfileStore.open(path, server=study.server,
                            algorithm=AlgorithmRef(study.algorithm)) as store:
        entry = _in_doubt_entry(store.entry(case_id), case_id, path)
        intent = entry.pending
        assert intent is not None
        view = session.view
        algorithm = require_algorithm(view.algorithm(study.algorithm), study.algorithm)
        try:
            job = session.client.get_job(pk)
        except NotFoundError:
            raise InputError(f"no job {pk} on {study.server} (or your account may not see "
                             "it); nothing recorded") from None
        if job.algorithm and job.algorithm.rstrip("/").rsplit("/", 1)[-1] != algorithm.pk:
            raise InputError(f"job {pk} runs another algorithm ({job.algorithm}), not "
                             f"{algorithm.slug}; nothing recorded")
        owner = _claimed_by(store).get(job.pk)
        if owner is not None:
            whose = "this case's own earlier job" if owner == case_id else \
                f"case {owner!r}'s job"
            raise InputError(f"job {pk} is already {whose} in {path}; a job belongs to "
                             "one case only. Nothing recorded")
        try:
            sent: Sent | None = Sent.from_json(intent.payload)
        except ValueError:
            sent = None
        if sent is None or sent.stage != Stage.POST:
            # an intent gcbatch cannot read: what was sent is unknown
            candidate = Candidate(job, Relation.CANNOT_TELL,
                                  "this case's record of what it sent is unreadable")
        else:
            names = read_names(view, image_pks(sent, job), budget=len(job.inputs))
            candidate = relate(sent, job, names, case_id=case_id)
        if not job.algorithm and candidate.relation == Relation.OURS:
            candidate = Candidate(job, Relation.CANNOT_TELL,
                                  "the server did not say which algorithm the job ran")
        _refuse_unless_forced(candidate, force=force, case_id=case_id, job=job,
                              manifest=study.path)
        store.adopted(case_id, JobRecord(
            pk=job.pk, api_url=job.api_url, status=job.status, submitted_at=utc_now(),
            fingerprint=intent.fingerprint, inputs=dict(intent.inputs)))
    return AdoptResult(case_id=case_id, job=job, candidate=candidate, lockfile_path=path,
                       forced=candidate.relation != Relation.OURS,
                       replaced=entry.job.pk if entry.job is not None else None)
