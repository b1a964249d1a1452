"""A case's files on the server: create uploads, journal them, send parts, complete.

Journal first: an attempt's intent is journalled before its first upload is created, and
again (with the upload pks and S3 upload ids) as soon as they exist and before any part
is sent — also when the run stops between two creations — so a run killed or stopped in
the middle resumes a half-sent upload from the parts the server holds (``list-parts``)
instead of sending it all again, and never makes a second upload for a file it has one
for. Uploads an earlier attempt made are looked up first: a completed one is reused, a
consumed or expired one (404) or an aborted one is made again under the same name.

Upload quotas are admission, not failure (:mod:`gcbatch.engine.admission`): "too many
uploads" (``POST uploads/``) and "Upload limit reached" (``generate-presigned-urls``, the
bytes of completed unused uploads) pause uploading for the whole run — one pause however
many threads were refused — and the refused upload is kept and resumed, never aborted.
While paused, one waiting thread counts the user's live uploads on the server; the
pause ends when that count goes down (our jobs consume uploads as their inputs are
validated). At most :data:`~gcbatch.engine.options.MAX_TRANSFERS` files are sent at once.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Literal

from gcbatch.api.models import Upload
from gcbatch.api.uploads import SourceChangedError, Uploader
from gcbatch.engine.admission import UploadQuota
from gcbatch.engine.context import RunContext
from gcbatch.engine.dicom import materialize
from gcbatch.engine.options import MAX_TRANSFERS
from gcbatch.engine.outcomes import Outcome
from gcbatch.engine.prepare import part_size_for
from gcbatch.engine.sent import Sent
from gcbatch.errors import (
    ApiError,
    NotFoundError,
    PermissionDeniedError,
    TooManyUploadsError,
    TransportError,
)
from gcbatch.events import UploadsPaused
from gcbatch.sources import Case
from gcbatch.sources.fingerprints import files_digest

__all__ = ["Uploading", "check_fingerprinted", "is_upload_limit", "journal_intent",
           "not_sent_reason"]

#: quota refusals one upload step sits out before it gives up (each waits for the pause)
_MAX_QUOTA_ROUNDS = 10_000
#: the platform's 403 at generate-presigned-urls when the size quota is reached
_UPLOAD_LIMIT = "upload limit reached"


def check_fingerprinted(case: Case, sent: Sent) -> None:
    """The files uploaded for each ``file``/``files`` source hash to the digest the case
    was fingerprinted with (apply's plan), else :class:`SourceChangedError`: the job
    would get other bytes than the lockfile records. Files whose upload an earlier run
    completed without recording a digest are not checked."""
    by_socket = {item.socket: item for item in sent.inputs}
    for source in case.inputs:
        item = by_socket.get(source.socket)
        if source.kind not in ("file", "files") or item is None or not item.files:
            continue
        if any(f.origin for f in item.files):
            # de-identified copies: each upload must be the copy planned (whose originals
            # were checked against the fingerprint when it was made)
            for f in item.files:
                if f.sha256 and f.sha256 != f.planned:
                    raise SourceChangedError(
                        f"{f.origin}: its de-identified copy changed while it was being "
                        "uploaded (the bytes uploaded are not the bytes planned); nothing "
                        "was submitted for this case: run apply again")
            continue
        digests = [f.sha256 for f in item.files]
        if not all(digests):
            continue
        if files_digest(digests) != source.digest:
            names = ", ".join(str(p) for p in source.paths)
            raise SourceChangedError(
                f"{names}: changed since apply fingerprinted it (the bytes uploaded are not "
                "the bytes planned); nothing was submitted for this case: run apply again")


def journal_intent(run: RunContext, case: Case, sent: Sent) -> None:
    """Append (and fsync) the intent of this attempt, as it stands now."""
    run.store.intent(case.id, case.fingerprint, inputs=case.digests(),
                     uploads=[f.name for f in sent.uploads], payload=sent.as_json())


def is_upload_limit(exc: BaseException) -> bool:
    """The size quota's refusal: 403 "Upload limit reached" (a presigned-URL request)."""
    return isinstance(exc, PermissionDeniedError) and _UPLOAD_LIMIT in str(exc).lower()


def not_sent_reason(run: RunContext) -> str:
    """Why a case that was not sent waits (for its outcome)."""
    if run.slots.stopped_uploading:
        return ("not submitted: the upload quota is full and none of this run's jobs will "
                "free it (uploads are freed when a job consumes them, or after a day); "
                "its finished uploads are kept for the next apply")
    if run.slots.stopped_by_credits:
        return "not submitted (out of credits)"
    if run.slots.stop_reason == "not_ready":
        # the platform's own words, so a script reading --json sees why
        return ("not submitted: the server answers 'Algorithm image is not ready to be "
                "used' for every job of this algorithm (until its editors make an image "
                "active)")
    return "not submitted (stopped)"


class Uploading:
    """Gets every file of an attempt uploaded and completed (thread-safe; one per run)."""

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self._transfers = threading.BoundedSemaphore(MAX_TRANSFERS)

    def ensure(self, case: Case, sent: Sent) -> Sent:
        """Every file of ``sent`` uploaded and completed; resumes what an earlier run began.
        Returns ``sent`` with the upload pks filled in."""
        run = self.run
        # DICOM to de-identify: the copies first (made again, the same, on a resume)
        sent = materialize(run, case, sent)
        files = [(item.socket, i, f) for item in sent.inputs for i, f in enumerate(item.files)]
        # 1. the state of uploads an earlier attempt created
        existing: dict[str, Upload | None] = {}
        resumable: set[str] = set()
        for _, _, f in files:
            if f.upload_pk:
                try:
                    found: Upload | None = run.client.get_upload(f.upload_pk)
                except NotFoundError:
                    found = None  # consumed or expired: make a new one
                if found is not None and found.status == Upload.ABORTED:
                    found = None
                existing[f.upload_pk] = found
                if found is not None and not found.is_completed:
                    resumable.add(f.upload_pk)
        # 2. create the missing uploads, then journal their pks BEFORE sending any part
        #    (and also when the run stops half-way: what exists is reused next time)
        created = False
        try:
            for socket, index, f in files:
                if f.upload_pk and existing.get(f.upload_pk) is not None:
                    continue
                upload = self._create(case, f.name)
                existing[upload.pk] = upload
                sent = sent.with_file(socket, index, replace(
                    f, upload_pk=upload.pk, s3_upload_id=upload.s3_upload_id))
                created = True
        finally:
            if created:
                journal_intent(run, case, sent)
        # 3. send parts (resuming what the server already holds) and complete, hashing
        # the bytes as they are sent
        for item in sent.inputs:
            for index, f in enumerate(item.files):
                current = existing.get(f.upload_pk)
                assert current is not None
                if current.is_completed:
                    continue
                if run.stopping:
                    raise run.stop_case(case.id, Outcome.WAITING, "stopped while uploading; "
                                        "apply resumes the upload next time")
                digest = self._transfer(case, current, Path(f.path), f.size,
                                        resume=f.upload_pk in resumable)
                sent = sent.with_file(item.socket, index, replace(f, sha256=digest))
        check_fingerprinted(case, sent)
        return sent

    # -- quota-aware steps -----------------------------------------------------------------------

    def _live_uploads(self) -> int | None:
        """The user's live uploads on the server (what the count quota counts)."""
        try:
            page = self.run.client.get_json("uploads/", {"limit": 1})
        except (ApiError, TransportError):
            return None
        count = page.get("count") if isinstance(page, dict) else None
        return count if isinstance(count, int) else None

    def _wait(self, case: Case, step: Literal["create", "send"]) -> bool:
        """Wait out an upload pause; True when this caller is the pause's trial."""
        go = self.run.slots.wait_uploads(self._live_uploads, step)
        if go == "stop":
            raise self.run.stop_case(case.id, Outcome.WAITING, not_sent_reason(self.run))
        return go == "trial"

    def _refused(self, quota: UploadQuota) -> None:
        if self.run.slots.uploads_refused(quota):
            self.run.emit(UploadsPaused(0.0, quota))

    def _create(self, case: Case, filename: str) -> Upload:
        run = self.run
        for _ in range(_MAX_QUOTA_ROUNDS):
            trial = self._wait(case, "create")
            asked = run.slots.now()
            try:
                upload = run.client.create_upload(filename)
            except TooManyUploadsError:
                self._refused("count")
                continue
            except BaseException:
                if trial:
                    run.slots.upload_failed()
                raise
            run.slots.uploads_accepted(asked, "create")
            return upload
        raise TooManyUploadsError(f"{filename}: the upload quota stayed full", status=400)

    def _transfer(self, case: Case, upload: Upload, path: Path, size: int, *,
                  resume: bool) -> str:
        """Send and complete one file, waiting out upload pauses; the ``sha256:<hex>`` of
        the bytes sent."""
        run = self.run
        tally = run.tally
        # the upload is never aborted for a quota: it is resumed when the pause ends
        uploader = Uploader(run.client, part_size=part_size_for(size), abort_on_failure=False)
        tally.add(to_upload=size)
        for _ in range(_MAX_QUOTA_ROUNDS):
            trial = self._wait(case, "send")
            asked = run.slots.now()
            # bounded: each transfer sends a few parts at once, in 1 MiB chunks
            with self._transfers:
                tally.add(uploading=1)
                try:
                    result = uploader.send(upload, path, resume=resume,
                                           progress=lambda n: tally.add(uploaded=n))
                except (KeyboardInterrupt, SystemExit):
                    raise  # leave the upload resumable
                except BaseException as exc:
                    if is_upload_limit(exc):
                        self._refused("size")
                        resume = True  # the parts already sent stay on the server
                        continue
                    if trial:
                        run.slots.upload_failed()
                    _abort(run, upload)
                    raise
                finally:
                    tally.add(uploading=-1)
            run.slots.uploads_accepted(asked, "send")
            return f"sha256:{result.sha256}" if result.sha256 else ""
        raise PermissionDeniedError(f"{upload.filename}: the upload quota stayed full",
                                    status=403)


def _abort(run: RunContext, upload: Upload) -> None:
    """Abort ``upload`` after a failure that is not a quota (best effort): the case
    fails, and the upload would only wait a day to expire."""
    try:
        run.client.abort_upload(upload)
    except Exception:  # best effort: the failure itself is what matters
        return
