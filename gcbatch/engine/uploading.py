"""A case's files on the server: create uploads, journal them, send parts, complete.

Journal first: an attempt's intent is journalled before its first upload is created, and
again (with the upload pks and S3 upload ids) as soon as they exist and before any part
is sent, so a run killed in the middle resumes a half-sent upload from the parts the
server holds (``list-parts``) instead of sending it all again. Uploads an earlier attempt
made are looked up first: a completed one is reused, a consumed or expired one (404) or
an aborted one is made again under the same name.

"Too many uploads" (the platform's cap on live uploads) pauses new uploads for the whole
run (:meth:`~gcbatch.engine.slots.Slots.uploads_refused`) rather than failing the case.
At most :data:`~gcbatch.engine.options.MAX_TRANSFERS` files are sent at once.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from gcbatch.api.models import Upload
from gcbatch.api.uploads import SourceChangedError, Uploader
from gcbatch.engine.context import RunContext
from gcbatch.engine.options import MAX_TRANSFERS
from gcbatch.engine.outcomes import Outcome
from gcbatch.engine.prepare import part_size_for
from gcbatch.engine.sent import Sent
from gcbatch.errors import NotFoundError, TooManyUploadsError
from gcbatch.events import UploadsPaused
from gcbatch.sources import Case
from gcbatch.sources.fingerprints import files_digest

__all__ = ["Uploading", "check_fingerprinted", "journal_intent"]

#: "too many uploads" refusals one upload tolerates (each waits out the run's pause)
_MAX_UPLOAD_REFUSALS = 50


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


class Uploading:
    """Gets every file of an attempt uploaded and completed (thread-safe; one per run)."""

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self._transfers = threading.BoundedSemaphore(MAX_TRANSFERS)

    def ensure(self, case: Case, sent: Sent) -> Sent:
        """Every file of ``sent`` uploaded and completed; resumes what an earlier run began.
        Returns ``sent`` with the upload pks filled in."""
        run = self.run
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
        created = False
        for socket, index, f in files:
            if f.upload_pk and existing.get(f.upload_pk) is not None:
                continue
            upload = self._create(f.name)
            existing[upload.pk] = upload
            sent = sent.with_file(socket, index, replace(
                f, upload_pk=upload.pk, s3_upload_id=upload.s3_upload_id))
            created = True
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
                digest = self._transfer(current, Path(f.path), f.size,
                                        resume=f.upload_pk in resumable)
                sent = sent.with_file(item.socket, index, replace(f, sha256=digest))
        check_fingerprinted(case, sent)
        return sent

    def _create(self, filename: str) -> Upload:
        run = self.run
        rounds = 0
        while True:
            rounds += 1
            try:
                upload = run.client.create_upload(filename)
            except TooManyUploadsError:
                pause = run.slots.uploads_refused()
                run.emit(UploadsPaused(pause))
                if rounds > _MAX_UPLOAD_REFUSALS or not run.slots.wait_upload_allowed():
                    raise
                continue
            run.slots.uploads_succeeded()
            return upload

    def _transfer(self, upload: Upload, path: Path, size: int, *, resume: bool) -> str:
        """Send and complete one file; the ``sha256:<hex>`` of the bytes sent."""
        # bounded: each transfer sends a few parts at once, each streamed in 1 MiB chunks
        with self._transfers:
            tally = self.run.tally
            tally.add(uploading=1, to_upload=size)
            try:
                uploader = Uploader(self.run.client, part_size=part_size_for(size))
                result = uploader.send(upload, path, resume=resume,
                                       progress=lambda n: tally.add(uploaded=n))
                return f"sha256:{result.sha256}" if result.sha256 else ""
            finally:
                tally.add(uploading=-1)
