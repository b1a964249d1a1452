"""``gcbatch download``: every output of every Succeeded job, under ``DIR/<case id>/``.

Layout, as gcapi lays out a job's outputs (``<dir>/<socket relative_path>``):

- a Value output → ``DIR/<case>/<relative_path>`` holding the value as JSON
  (2-space indent, trailing newline; written only when the bytes differ);
- a File output → ``DIR/<case>/<relative_path>``, the stored bytes;
- an Image output → ``DIR/<case>/<relative_path>/<file name>`` for each of the image's
  files (an ``.mha``, or ``.mhd`` + ``.zraw``, or a ``.tif``...); ``relative_path`` of an
  image socket is a directory (``images/<name>``).
A socket with an empty ``relative_path`` falls back to ``<slug>.json`` (values),
``<slug>`` (files) and ``images/<slug>`` (images). Paths from the server are checked
(relative, no ``..``) before anything is written: a server cannot make us write outside
``DIR``; nor can the folder itself: a file is never written or deleted below a folder of
``DIR`` that is a symbolic link (a shared results folder may hold ``case-1 -> ~``), and
the record of completed downloads is read like a server's answer (see
:mod:`gcbatch.engine.download_record`).

Missing outputs: a Succeeded job must have every output its interface declares (the
algorithm's interface whose inputs are the job's); one that is absent, or a file or image
output without its file or image, is listed by case (:func:`missing_outputs`) and makes
the command fail, instead of a silent gap in the results.

Atomic and resumable. The client streams each file into a temporary file beside its
target, fsyncs it and renames it over the target (:meth:`GrandChallengeClient.download`);
only then is the file hashed and recorded in ``DIR/.gcbatch-downloads.jsonl`` (one JSON
line per completed file or image, appended and flushed: O(1) per file however many there
are). Value files are written through ``.<name>.gcbatch-part`` and a rename too. A
file counts as *complete* when that record exists for the same source URL and the file on
disk still has the recorded size and mtime (if only the mtime moved, its sha256 is compared
to the recorded one). So after a crash, even ``kill -9``, a re-run finds every complete
file and fetches the rest, after deleting the temporary files the dead run left beside
them. An Image output whose record lists all its files complete is skipped without even
asking the server for the image, so a second ``download`` makes no requests beyond the
status list. When a case's job changed (resubmitted), the files recorded for its old
image are deleted before the new image's files (other names) arrive; files the user put
there are never touched. The record file is compacted (rewritten atomically, sorted) at
the end of every run.

The token: files answer with a 302 to a storage host. The client's ``download`` follows
that redirect without the ``Authorization`` header (see :mod:`gcbatch.api.client`); this
module never builds a request itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from gcbatch import files
from gcbatch.api.models import Algorithm, Image, Job, SocketValue
from gcbatch.engine.download_record import (
    DownloadState,
    FileRecord,
    ImageRecord,
    is_plain_relative,
    link_on_the_way,
    size_and_sha256,
)
from gcbatch.errors import GcbatchError
from gcbatch.events import BytesReceived, DownloadPlanned, FileDone, Hook, ignore
from gcbatch.manifest.semantics import reserved_id_problem

PART_SUFFIX = ".gcbatch-part"


class DownloadClient(Protocol):
    """What downloading needs from :class:`gcbatch.api.client.GrandChallengeClient`."""

    def get_image(self, url: str) -> Image: ...

    def download(
        self, url: str, dest: str | os.PathLike[str], *,
        progress: Callable[[int], None] | None = None,
    ) -> int: ...


class UnsafePathError(GcbatchError):
    """A server-provided name would escape the output directory."""


# --------------------------------------------------------------------------- pure parts


def safe_relative(text: str, *, what: str) -> PurePosixPath:
    """``text`` as a relative POSIX path that stays inside its parent, or UnsafePathError."""
    if not is_plain_relative(text):
        raise UnsafePathError(f"refusing to write {what} {text!r}: not a plain relative path")
    return PurePosixPath(text)


def checked_target(out_dir: Path, relative: PurePosixPath) -> Path:
    """``out_dir / relative``, or UnsafePathError when a folder on the way there is a
    symbolic link (writing would land outside ``out_dir``)."""
    link = link_on_the_way(out_dir, relative)
    if link is not None:
        raise UnsafePathError(
            f"refusing to write {relative}: {out_dir / link} is a symbolic link or not a "
            "folder; gcbatch writes results only into real folders under --out")
    return out_dir / relative


def url_key(url: str) -> str:
    """A stored file's identity: its URL without query string (presigned URLs vary)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def value_bytes(value: Any) -> bytes:
    """How a Value output is stored: JSON, 2-space indent, trailing newline."""
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


@dataclass(frozen=True)
class ValueTask:
    case_id: str
    target: PurePosixPath  # relative to the output dir
    data: bytes


@dataclass(frozen=True)
class FileTask:
    case_id: str
    target: PurePosixPath
    url: str


@dataclass(frozen=True)
class ImageTask:
    case_id: str
    directory: PurePosixPath
    url: str  # the image's api URL


Task = ValueTask | FileTask | ImageTask


def _relative_path(output: SocketValue, kind: str) -> str:
    relative = output.socket.relative_path if output.socket is not None else ""
    if relative:
        return relative
    slug = output.socket_slug
    return {"value": f"{slug}.json", "file": slug, "image": f"images/{slug}"}[kind]


def output_kind(output: SocketValue) -> str | None:
    """``"value"``, ``"file"``, ``"image"``, or None when the output holds nothing."""
    super_kind = output.socket.super_kind if output.socket is not None else ""
    if output.image or super_kind == "Image":
        return "image" if output.image else None
    if output.file or super_kind == "File":
        return "file" if output.file else None
    return "value"


def plan_tasks(jobs: Mapping[str, Job]) -> list[Task]:
    """What to fetch/write for each case's Succeeded job, in a stable order.

    Raises UnsafePathError for a bad case id or relative path, and when two outputs of a
    case would land on the same path.
    """
    tasks: list[Task] = []
    for case_id in sorted(jobs):
        job = jobs[case_id]
        if not job.succeeded:
            continue
        case_dir = safe_relative(case_id, what="case id")
        reserved = reserved_id_problem(case_id)
        if reserved is not None:  # (a lockfile edited by hand: the manifest refuses it)
            raise UnsafePathError(f"refusing to write case {case_id!r}: {reserved}")
        # keyed case-folded: on a case-insensitive file system (macOS, Windows) paths
        # that differ only in letter case are one file, and the second would overwrite it
        used: dict[str, tuple[str, PurePosixPath]] = {}
        for output in sorted(job.outputs, key=lambda o: o.socket_slug):
            kind = output_kind(output)
            if kind is None:
                continue
            rel = case_dir / safe_relative(_relative_path(output, kind), what="relative path")
            key = str(rel).casefold()
            if key in used:
                slug, first = used[key]
                where = str(rel) if first == rel else f"{first} and {rel}, one file where " \
                    "letter case does not count (macOS, Windows)"
                raise UnsafePathError(
                    f"case {case_id}: outputs {slug!r} and {output.socket_slug!r} "
                    f"would both be written to {where}"
                )
            used[key] = (output.socket_slug, rel)
            if kind == "value":
                tasks.append(ValueTask(case_id, rel, value_bytes(output.value)))
            elif kind == "file":
                assert output.file is not None
                tasks.append(FileTask(case_id, rel, output.file))
            else:
                assert output.image is not None
                tasks.append(ImageTask(case_id, rel, output.image))
    return tasks


def missing_outputs(jobs: Mapping[str, Job], algorithm: Algorithm | None
                    ) -> list[tuple[str, str]]:
    """``(case id, socket)`` for each output a Succeeded job should have and has not:
    absent from its outputs, or a file/image output without its file/image. What it
    should have is the outputs of the algorithm's interface whose inputs are the job's;
    a job no interface fits (the algorithm changed since) is not judged."""
    if algorithm is None:
        return []
    missing: list[tuple[str, str]] = []
    for case_id in sorted(jobs):
        job = jobs[case_id]
        if not job.succeeded:
            continue
        interface = algorithm.interface_for(frozenset(v.socket_slug for v in job.inputs))
        if interface is None:
            continue
        present = {o.socket_slug for o in job.outputs if output_kind(o) is not None}
        missing += [(case_id, slug) for slug in sorted(s.slug for s in interface.outputs)
                    if slug not in present]
    return missing


# --------------------------------------------------------------------------- file writing


def part_path(target: Path) -> Path:
    """Where ``target`` is written before the rename (same folder: rename is atomic)."""
    return target.with_name(f".{target.name}{PART_SUFFIX}")


def atomic_write_bytes(target: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``target`` via a part file and a rename (readers never see half).

    ``durable`` also fsyncs the part and the folder. Value outputs skip that: they are
    compared byte for byte on every run and rewritten when different, so even an OS crash
    that loses one heals on the next ``download``, and 10,000 fsyncs would cost minutes.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write_bytes(target, data, part=part_path(target), durable=durable)


def remove_stale_parts(target: Path) -> int:
    """Delete temporary files a killed run left beside ``target``; how many were removed.

    Our own value writes use ``.<name>.gcbatch-part``; the client's downloads use
    ``.<name>.<random>.part``. Only called before any download of this run has started.
    """
    removed = 0
    with contextlib.suppress(OSError):
        for stale in target.parent.glob(f".{target.name}.*part"):
            if stale.name.endswith((PART_SUFFIX, ".part")) and stale.is_file():
                with contextlib.suppress(OSError):
                    stale.unlink()
                    removed += 1
    return removed


# --------------------------------------------------------------------------- the run


@dataclass
class DownloadSummary:
    """What a download run did (counts of files; bytes fetched over the network)."""

    files_downloaded: int = 0
    bytes_downloaded: int = 0
    files_skipped: int = 0
    values_written: int = 0
    values_unchanged: int = 0
    images_resolved: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: (case id, socket) of outputs a Succeeded job lacks (see :func:`missing_outputs`)
    missing: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "files_downloaded": self.files_downloaded,
            "bytes_downloaded": self.bytes_downloaded,
            "files_skipped": self.files_skipped,
            "values_written": self.values_written,
            "values_unchanged": self.values_unchanged,
            "images_resolved": self.images_resolved,
            "failures": [{"path": p, "error": e} for p, e in self.failures],
            "missing_outputs": [{"case": c, "socket": o} for c, o in self.missing],
        }


def download_outputs(
    client: DownloadClient,
    jobs: Mapping[str, Job],
    out_dir: Path,
    *,
    workers: int = 8,
    on_event: Hook = ignore,
    algorithm: Algorithm | None = None,
) -> DownloadSummary:
    """Download every output of the Succeeded jobs in ``jobs`` (case id → job) to ``out_dir``.

    ``algorithm``: what the jobs should have produced; outputs they lack are listed in
    the summary's ``missing`` (:func:`missing_outputs`).

    A failure of one file (HTTP error, transport error, disk error) is recorded in the
    summary's ``failures`` and does not stop the others; the caller decides the exit code.
    Ctrl-C stops promptly: files already renamed are recorded, parts are left to be
    overwritten by the next run.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = plan_tasks(jobs)
    state = DownloadState(out_dir)
    summary = DownloadSummary(missing=missing_outputs(jobs, algorithm))
    lock = threading.Lock()

    def fail(path: str, exc: BaseException) -> None:
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt/SystemExit in a worker: stop, do not tally
        with lock:
            summary.failures.append((path, str(exc) or type(exc).__name__))

    try:
        # values: local, cheap, no network
        file_tasks: list[FileTask] = []
        image_tasks: list[ImageTask] = []
        for task in tasks:
            if isinstance(task, ValueTask):
                _write_value(task, out_dir, summary, fail)
            elif isinstance(task, FileTask):
                file_tasks.append(task)
            else:
                image_tasks.append(task)
        pending_images: list[ImageTask] = []
        skipped_images: list[ImageTask] = []
        for t in image_tasks:
            complete = state.image_complete(t.directory, url_key(t.url))
            (skipped_images if complete else pending_images).append(t)
        for t in pending_images:
            # a new job (resubmitted case) has a new image whose files have other names:
            # remove the files we downloaded for the old one, or both would sit side by side
            state.drop_image(t.directory, keep_source=url_key(t.url))
        for t in skipped_images:
            for path in state.images[str(t.directory)].files:
                summary.files_skipped += 1
                on_event(DownloadPlanned(1))
                on_event(FileDone(path, state.files[path].size, True))

        with ThreadPoolExecutor(max_workers=max(1, workers),
                                thread_name_prefix="gcbatch-download") as pool:
            # resolve images (one GET each) so we know their files
            resolved: dict[ImageTask, Image] = {}
            futures_img = {pool.submit(client.get_image, t.url): t for t in pending_images}
            _drain(futures_img)
            for image_future, t in futures_img.items():
                image_error = image_future.exception()
                if image_error is not None:
                    fail(str(t.directory), image_error)
                else:
                    resolved[t] = image_future.result()
            summary.images_resolved = len(resolved)

            image_files: dict[ImageTask, list[FileTask]] = {}
            for t, image in resolved.items():
                names: list[FileTask] = []
                try:
                    for f in sorted(image.files, key=lambda f: f.filename):
                        name = safe_relative(unquote(f.filename), what="image file name")
                        if len(name.parts) != 1:
                            raise UnsafePathError(f"image file name {f.filename!r} has a '/'")
                        names.append(FileTask(t.case_id, t.directory / name, f.file))
                except UnsafePathError as exc:
                    fail(str(t.directory), exc)
                    continue
                image_files[t] = names
            all_files = file_tasks + [f for fs in image_files.values() for f in fs]
            on_event(DownloadPlanned(len(all_files)))
            for file_task in all_files:
                if (not state.file_complete(file_task.target, url_key(file_task.url))
                        and link_on_the_way(out_dir, file_task.target) is None):
                    remove_stale_parts(out_dir / file_task.target)

            def fetch(task: FileTask) -> None:
                source = url_key(task.url)
                if state.file_complete(task.target, source):
                    with lock:
                        summary.files_skipped += 1
                    on_event(FileDone(str(task.target), state.files[str(task.target)].size,
                                      True))
                    return
                target = checked_target(out_dir, task.target)
                target.parent.mkdir(parents=True, exist_ok=True)
                # the client streams to a temp file beside target, fsyncs, renames
                client.download(task.url, target,
                                progress=lambda n: on_event(BytesReceived(n)))
                size, sha = size_and_sha256(target)
                stat = target.stat()
                state.record_file(FileRecord(str(task.target), source, size, stat.st_mtime_ns, sha))
                with lock:
                    summary.files_downloaded += 1
                    summary.bytes_downloaded += size
                on_event(FileDone(str(task.target), size, False))

            futures = {pool.submit(fetch, t): t for t in all_files}
            _drain(futures)
            failed_targets: set[PurePosixPath] = set()
            for file_future, file_task in futures.items():
                file_error = file_future.exception()
                if file_error is not None:
                    failed_targets.add(file_task.target)
                    fail(str(file_task.target), file_error)
            for t, fs in image_files.items():
                if not any(f.target in failed_targets for f in fs):
                    state.record_image(ImageRecord(str(t.directory), url_key(t.url),
                                                   tuple(str(f.target) for f in fs)))
        state.compact()
    finally:
        state.close()
    return summary


def _drain(futures: Iterable[Future[Any]]) -> None:
    """Wait for every future; on Ctrl-C cancel what has not started and re-raise."""
    pending = list(futures)
    try:
        wait(pending)
    except KeyboardInterrupt:
        for future in pending:
            future.cancel()
        raise


def _write_value(
    task: ValueTask,
    out_dir: Path,
    summary: DownloadSummary,
    fail: Callable[[str, BaseException], None],
) -> None:
    try:
        target = checked_target(out_dir, task.target)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            if target.read_bytes() == task.data:
                summary.values_unchanged += 1
                return
        atomic_write_bytes(target, task.data, durable=False)
        summary.values_written += 1
    except (OSError, UnsafePathError) as exc:
        fail(str(task.target), exc)
