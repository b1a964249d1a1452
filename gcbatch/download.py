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
``DIR``.

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
that redirect without the ``Authorization`` header (see :mod:`gcbatch.client`); this
module never builds a request itself.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from gcbatch.errors import GcbatchError
from gcbatch.models import Image, Job, SocketValue

STATE_NAME = ".gcbatch-downloads.jsonl"
PART_SUFFIX = ".gcbatch-part"
STATE_VERSION = 1


class DownloadClient(Protocol):
    """What downloading needs from :class:`gcbatch.client.GrandChallengeClient`."""

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
    path = PurePosixPath(text)
    if (
        not text
        or "\\" in text
        or "\x00" in text
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in text.split("/"))
    ):
        raise UnsafePathError(f"refusing to write {what} {text!r}: not a plain relative path")
    return path


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
        used: dict[PurePosixPath, str] = {}
        for output in sorted(job.outputs, key=lambda o: o.socket_slug):
            kind = output_kind(output)
            if kind is None:
                continue
            rel = case_dir / safe_relative(_relative_path(output, kind), what="relative path")
            if rel in used:
                raise UnsafePathError(
                    f"case {case_id}: outputs {used[rel]!r} and {output.socket_slug!r} "
                    f"would both be written to {rel}"
                )
            used[rel] = output.socket_slug
            if kind == "value":
                tasks.append(ValueTask(case_id, rel, value_bytes(output.value)))
            elif kind == "file":
                assert output.file is not None
                tasks.append(FileTask(case_id, rel, output.file))
            else:
                assert output.image is not None
                tasks.append(ImageTask(case_id, rel, output.image))
    return tasks


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class FileRecord:
    path: str  # relative to the output dir, POSIX
    source: str  # url_key of what it was downloaded from
    size: int
    mtime_ns: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {"type": "file", "path": self.path, "source": self.source, "size": self.size,
                "mtime_ns": self.mtime_ns, "sha256": self.sha256}


@dataclass(frozen=True)
class ImageRecord:
    directory: str
    source: str  # url_key of the image's api URL
    files: tuple[str, ...]  # paths relative to the output dir

    def as_json(self) -> dict[str, Any]:
        return {"type": "image", "path": self.directory, "source": self.source,
                "files": list(self.files)}


class DownloadState:
    """The completed-downloads record of one output directory (thread-safe)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / STATE_NAME
        self.files: dict[str, FileRecord] = {}
        self.images: dict[str, ImageRecord] = {}
        self._mutex = threading.Lock()
        self._load()
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        if self._fh.tell() and not self._ends_with_newline():
            # a torn line from a crash must not swallow the first new record
            self._fh.write(b"\n")
            self._fh.flush()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for raw in data.split(b"\n"):
            # a torn last line (crash mid-append) or anything unreadable is just not a
            # record: the worst case is downloading that file again
            try:
                entry = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(entry, dict):
                continue
            try:
                if entry.get("type") == "file":
                    record = FileRecord(str(entry["path"]), str(entry["source"]),
                                        int(entry["size"]), int(entry["mtime_ns"]),
                                        str(entry["sha256"]))
                    self.files[record.path] = record
                elif entry.get("type") == "image":
                    image = ImageRecord(str(entry["path"]), str(entry["source"]),
                                        tuple(str(f) for f in entry["files"]))
                    self.images[image.directory] = image
            except (KeyError, TypeError, ValueError):
                continue

    def _append(self, entry: Mapping[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        with self._mutex:
            # flushed, not fsynced: a killed process loses nothing (the OS has the bytes);
            # an OS crash can lose a record, which only means downloading that file again.
            # The file itself was fsynced before it got its name, so a record never vouches
            # for bytes that are not on disk.
            self._fh.write(line.encode("utf-8") + b"\n")
            self._fh.flush()

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def file_complete(self, target: PurePosixPath, source: str) -> bool:
        """True when ``target`` was downloaded from ``source`` and is unchanged on disk."""
        record = self.files.get(str(target))
        if record is None or record.source != source:
            return False
        try:
            stat = (self.root / target).stat()
        except OSError:
            return False
        if stat.st_size != record.size:
            return False
        if stat.st_mtime_ns == record.mtime_ns:
            return True
        # touched but maybe not changed: the content decides (and we remember the new mtime)
        if size_and_sha256(self.root / target)[1] != record.sha256:
            return False
        self.record_file(FileRecord(record.path, record.source, record.size,
                                    stat.st_mtime_ns, record.sha256))
        return True

    def image_complete(self, directory: PurePosixPath, source: str) -> bool:
        record = self.images.get(str(directory))
        if record is None or record.source != source:
            return False
        return all(
            (rec := self.files.get(path)) is not None
            and self.file_complete(PurePosixPath(path), rec.source)
            for path in record.files
        )

    def drop_image(self, directory: PurePosixPath, *, keep_source: str) -> None:
        """Delete the files of the image recorded at ``directory`` if it is not ``keep_source``.

        Only files this record lists are touched (never anything the user put there). The
        records are dropped from memory; the compaction at the end of the run drops them
        from the file (until then a stale record only points at missing files).
        """
        with self._mutex:
            record = self.images.get(str(directory))
            if record is None or record.source == keep_source:
                return
            del self.images[str(directory)]
            stale = [path for path in record.files if path.startswith(f"{directory}/")]
            for path in stale:
                self.files.pop(path, None)
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                (self.root / path).unlink()

    def record_file(self, record: FileRecord) -> None:
        self._append(record.as_json())
        with self._mutex:
            self.files[record.path] = record

    def record_image(self, record: ImageRecord) -> None:
        self._append(record.as_json())
        with self._mutex:
            self.images[record.directory] = record

    def compact(self) -> None:
        """Rewrite the record sorted, one line per live entry (atomic)."""
        with self._mutex:
            lines = [r.as_json() for _, r in sorted(self.files.items())]
            lines += [r.as_json() for _, r in sorted(self.images.items())]
            text = "".join(
                json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
                for x in lines
            )
            self._fh.close()
            atomic_write_bytes(self.path, text.encode("utf-8"))
            self._fh = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        with self._mutex:
            self._fh.close()


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


def size_and_sha256(path: Path) -> tuple[int, str]:
    """(bytes, ``"sha256:<hex>"``) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, "sha256:" + digest.hexdigest()


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

    def as_json(self) -> dict[str, Any]:
        return {
            "files_downloaded": self.files_downloaded,
            "bytes_downloaded": self.bytes_downloaded,
            "files_skipped": self.files_skipped,
            "values_written": self.values_written,
            "values_unchanged": self.values_unchanged,
            "images_resolved": self.images_resolved,
            "failures": [{"path": p, "error": e} for p, e in self.failures],
        }


class Progress(Protocol):
    """Progress hooks (a TTY display, plain lines, or nothing)."""

    def add_total(self, files: int) -> None: ...

    def file_done(self, path: str, size: int, skipped: bool) -> None: ...

    def bytes_received(self, count: int) -> None: ...


class _NoProgress:
    def add_total(self, files: int) -> None:
        pass

    def file_done(self, path: str, size: int, skipped: bool) -> None:
        pass

    def bytes_received(self, count: int) -> None:
        pass


def download_outputs(
    client: DownloadClient,
    jobs: Mapping[str, Job],
    out_dir: Path,
    *,
    workers: int = 8,
    progress: Progress | None = None,
) -> DownloadSummary:
    """Download every output of the Succeeded jobs in ``jobs`` (case id → job) to ``out_dir``.

    A failure of one file (HTTP error, transport error, disk error) is recorded in the
    summary's ``failures`` and does not stop the others; the caller decides the exit code.
    Ctrl-C stops promptly: files already renamed are recorded, parts are left to be
    overwritten by the next run.
    """
    progress = progress or _NoProgress()
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = plan_tasks(jobs)
    state = DownloadState(out_dir)
    summary = DownloadSummary()
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
                progress.add_total(1)
                progress.file_done(path, state.files[path].size, True)

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
            progress.add_total(len(all_files))
            for file_task in all_files:
                if not state.file_complete(file_task.target, url_key(file_task.url)):
                    remove_stale_parts(out_dir / file_task.target)

            def fetch(task: FileTask) -> None:
                source = url_key(task.url)
                if state.file_complete(task.target, source):
                    with lock:
                        summary.files_skipped += 1
                    progress.file_done(str(task.target), state.files[str(task.target)].size, True)
                    return
                target = out_dir / task.target
                target.parent.mkdir(parents=True, exist_ok=True)
                # the client streams to a temp file beside target, fsyncs, renames
                client.download(task.url, target, progress=progress.bytes_received)
                size, sha = size_and_sha256(target)
                stat = target.stat()
                state.record_file(FileRecord(str(task.target), source, size, stat.st_mtime_ns, sha))
                with lock:
                    summary.files_downloaded += 1
                    summary.bytes_downloaded += size
                progress.file_done(str(task.target), size, False)

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
    target = out_dir / task.target
    try:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            if target.read_bytes() == task.data:
                summary.values_unchanged += 1
                return
        atomic_write_bytes(target, task.data, durable=False)
        summary.values_written += 1
    except OSError as exc:
        fail(str(task.target), exc)
