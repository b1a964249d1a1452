"""DICOM inputs of one attempt: what is uploaded, under which handles, and the copies.

Two kinds of socket take DICOM files:

- a **DICOM Image Set** socket: the job POST carries ``image_name`` with the uploads, and
  the platform names the image after it. gcbatch sends ``<image_name>.gcb-<hash8>``
  (new per attempt), so an in-doubt case is found by name, like an upload;
- an **Image** socket given DICOM files: the platform builds one image per series and
  names it ``<StudyInstanceUID>-<n>``, never after an upload. The handle is the Series
  Instance UID it stores on the image (``cases/images/?series_instance_uid=``): a
  de-identified copy gets one of its own per attempt (:func:`gcbatch.dicom.deid.attempt_uid`),
  as exact as an upload name. Files sent as they are keep the original UID; images of
  that series seen before the job POST are then set aside (``known_images``).

De-identification (on unless the source says ``deidentify: false``) happens on this
machine, into ``<scratch>/dicom/<attempt>/<socket>/<n>.dcm``, right before the upload
(:func:`materialize`): the fingerprint stays over the original files, the upload is checked
against the copy's digest (``planned``), and a resumed upload makes the same copy again
(deterministic for one attempt) if the first is gone.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from gcbatch.api.models import Socket
from gcbatch.api.uploads import SourceChangedError
from gcbatch.dicom import IMAGE_SET_KIND, DicomReadError, is_dicom, read_header
from gcbatch.dicom.deid import attempt_uid, deidentify_file, make_deidentifier
from gcbatch.engine.context import RunContext
from gcbatch.engine.sent import Sent, SentFile, SentInput
from gcbatch.errors import InputError
from gcbatch.hashing import sha256_file
from gcbatch.sources import Case, Source
from gcbatch.sources.fingerprints import files_digest

__all__ = ["discard_copies", "image_set_name", "is_image_set_socket", "materialize",
           "plan_dicom_input"]


def is_image_set_socket(socket: Socket | None) -> bool:
    """A DICOM Image Set socket (the API's kind name, or its code)."""
    return socket is not None and socket.kind in (IMAGE_SET_KIND, "DCMIS")


def image_set_name(name: str, socket: str, attempt: str) -> str:
    """``<name>.gcb-<hash8>``: the image name sent, unique per attempt and socket."""
    digest = hashlib.sha256(f"{attempt}/{socket}/image_name".encode()).hexdigest()[:8]
    return f"{name}.gcb-{digest}"


def _copies_dir(run: RunContext, attempt: str, socket: str) -> Path:
    base = run.scratch or Path(tempfile.gettempdir()) / "gcbatch-scratch"
    return base / "dicom" / attempt / socket


def plan_dicom_input(run: RunContext, source: Source, socket: Socket | None, attempt: str,
                     names: list[str]) -> SentInput | None:
    """The input for DICOM files (None: not a DICOM input). ``names``: the upload names.

    Reads the first file's header (standard library only); no copy is made yet."""
    image_set = is_image_set_socket(socket)
    if not image_set and (socket is None or socket.super_kind != "Image"
                          or not source.paths or not all(is_dicom(p) for p in source.paths)):
        return None
    try:
        original_series = read_header(source.paths[0]).series_instance_uid
    except DicomReadError as exc:
        raise InputError(f"{source.paths[0]}: {exc}") from None
    deidentify = source.deidentify is not False
    copies = _copies_dir(run, attempt, source.socket)
    files = tuple(
        SentFile(name=name, path=str(copies / f"{i:05d}.dcm"), origin=str(path))
        if deidentify else SentFile(name=name, path=str(path), size=_size(path))
        for i, (name, path) in enumerate(zip(names, source.paths, strict=True)))
    return SentInput(
        source.socket, "uploads", files=files,
        image_name=image_set_name(source.image_name or "", source.socket, attempt)
        if image_set else "",
        series_uid=attempt_uid(attempt, original_series) if deidentify else original_series,
        deidentified=deidentify)


def materialize(run: RunContext, case: Case, sent: Sent) -> Sent:
    """Every de-identified copy of ``sent`` on disk, as planned (made the first time,
    made again the same way when gone). :class:`SourceChangedError` when the originals
    changed since they were fingerprinted or a copy would differ from the planned one."""
    by_socket = {s.socket: s for s in case.inputs}
    for item in sent.inputs:
        if not item.deidentified or not any(f.origin for f in item.files):
            continue
        pending = [f for f in item.files if f.origin and not _is_planned_copy(f)]
        if not pending:
            continue
        source = by_socket.get(item.socket)
        deidentifier = make_deidentifier(sent.attempt, unique=item.is_image_set)
        originals: list[str] = []
        made: list[SentFile] = []
        for f in item.files:
            target = Path(f.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            originals.append(sha256_file(Path(f.origin))[0])
            # every file goes through the de-identifier, in order: it checks that the
            # identifying tags agree across them, as the platform does for an image set
            deidentify_file(Path(f.origin), target, deidentifier)
            digest = sha256_file(target)[0]
            if f.planned and digest != f.planned:
                raise SourceChangedError(
                    f"{f.origin}: its de-identified copy differs from the one planned (the "
                    "file or the de-identification packages changed since); nothing was "
                    "submitted for this case: run apply again")
            made.append(replace(f, size=target.stat().st_size, planned=digest))
        if source is not None and source.digest and files_digest(originals) != source.digest:
            raise SourceChangedError(
                f"{', '.join(str(p) for p in source.paths)}: changed since apply "
                "fingerprinted it; nothing was submitted for this case: run apply again")
        for index, f in enumerate(made):
            sent = sent.with_file(item.socket, index, f)
    return sent


def discard_copies(run: RunContext, sent: Sent) -> None:
    """Remove an attempt's de-identified copies (its job exists: never needed again)."""
    if any(item.deidentified and any(f.origin for f in item.files) for item in sent.inputs):
        # the attempt's folder holds only this attempt's copies
        shutil.rmtree(_copies_dir(run, sent.attempt, "-").parent, ignore_errors=True)


def _is_planned_copy(f: SentFile) -> bool:
    if not f.planned:
        return False
    path = Path(f.path)
    try:
        return path.stat().st_size == f.size and sha256_file(path)[0] == f.planned
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
