"""What one attempt of a case will send: a :class:`~gcbatch.engine.sent.Sent`, named.

Every file is uploaded under a name of ours, ``<case tag>.gcb-<hash8><ext>``, unique per
attempt, socket and file: the platform names the image it makes from an upload (and the
file it stores for a File socket) after the uploaded file, which is how reconciliation
finds an in-doubt job again. Archive items resolve to what the server holds: an image is
linked by URL, a value copied, and a file (which cannot be linked) downloaded to re-upload.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import tempfile
from pathlib import Path

from gcbatch.engine.context import RunContext
from gcbatch.engine.sent import Sent, SentFile, SentInput, Stage
from gcbatch.errors import InputError
from gcbatch.sources import Case, Source, mhd_data_file, split_name

__all__ = ["build_sent", "mhd_data_file", "part_size_for", "upload_name"]

_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def upload_name(case_id: str, socket: str, index: int, filename: str, attempt: str) -> str:
    """``<case tag>.gcb-<hash8><ext>``: findable, unique per attempt, extension kept.

    The platform names an image made from an upload after the uploaded file (and detects
    the format from the extension, ``.nii.gz`` included), so the name must end like the
    original. ``hash8`` depends on the attempt, the socket and the file's position, so
    every file of every attempt has its own name. At most 128 characters (the API's limit).
    """
    _, ext = split_name(filename)
    ext = ext[:24]
    digest = hashlib.sha256(f"{attempt}/{socket}/{index}".encode()).hexdigest()[:8]
    room = 128 - len(ext) - len(".gcb-") - 8
    tag = _TAG_UNSAFE.sub("_", case_id)[: max(1, min(64, room))]
    return f"{tag}.gcb-{digest}{ext}"


def part_size_for(size: int) -> int:
    """Parts of 5-32 MiB, aiming at 8 or more parts so an interrupted upload resumes well.

    gcapi uses 32 MiB parts; for files under 256 MiB smaller parts mean less to send again
    after a crash, at the price of a few more requests.
    """
    mib = 1024 * 1024
    return max(5 * mib, min(32 * mib, -(-size // 8)))


def build_sent(run: RunContext, case: Case) -> Sent:
    """A fresh attempt for ``case`` (new upload names; nothing sent yet)."""
    attempt = secrets.token_hex(4)
    sockets = run.algorithm.input_sockets()
    inputs: list[SentInput] = []
    for source in case.inputs:
        socket = sockets.get(source.socket)
        super_kind = socket.super_kind if socket is not None else ""
        inputs.append(_sent_input(run, case, source, super_kind, attempt))
    return Sent(attempt=attempt, inputs=tuple(inputs), stage=Stage.UPLOAD)


def _sent_input(run: RunContext, case: Case, source: Source, super_kind: str,
                attempt: str) -> SentInput:
    kind = source.kind
    if kind in ("value", "json"):
        return SentInput(source.socket, "value", value=source.value)
    if kind == "image":
        return SentInput(source.socket, "image", image=source.image_url or "")
    if kind in ("file", "files"):
        # a MetaImage header names its data file (ElementDataFile = vol.raw), and the
        # platform imports the pair only if that upload keeps exactly this name: the data
        # file keeps it, the header carries the handle (the image is named after it)
        data_files = {name for p in source.paths for name in (mhd_data_file(p),) if name}
        files = tuple(
            SentFile(name=p.name if p.name in data_files
                     else upload_name(case.id, source.socket, i, p.name, attempt),
                     path=str(p), size=_size(p))
            for i, p in enumerate(source.paths)
        )
        return SentInput(source.socket, "upload" if super_kind == "File" else "uploads",
                         files=files)
    if kind == "archive_item":
        item = run.items.get(source.item_pk or "")
        value = item.value_for(source.item_socket or source.socket) if item else None
        if value is None:
            raise InputError(f"archive item {source.item_pk} has no value for "
                             f"{source.item_socket or source.socket}")
        if super_kind == "Image" or value.image:
            return SentInput(source.socket, "image", image=value.image or "")
        if super_kind == "File" or value.file:
            path = _download_item_file(run, case, value.file or "")
            name = upload_name(case.id, source.socket, 0, path.name, attempt)
            return SentInput(source.socket, "upload",
                             files=(SentFile(name=name, path=str(path), size=_size(path)),))
        return SentInput(source.socket, "value", value=value.value)
    raise InputError(f"unknown source kind {kind!r}")


def _download_item_file(run: RunContext, case: Case, url: str) -> Path:
    """A File value cannot be linked to a job: download it, to re-upload it."""
    base = run.scratch or Path(tempfile.gettempdir())
    target_dir = base / "archive-files" / case.id
    target_dir.mkdir(parents=True, exist_ok=True)
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "file"
    target = target_dir / name
    if not target.exists():
        run.client.download(url, target)
    return target


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
