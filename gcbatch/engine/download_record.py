"""The record of completed downloads in an output folder: ``DIR/.gcbatch-downloads.jsonl``.

One JSON line per completed file or image, appended and flushed (O(1) per file however
many there are): a file counts as *complete* when its record exists for the same source
URL and the file on disk still has the recorded size and mtime (if only the mtime moved,
its sha256 is compared to the recorded one). An image is complete when all the files its
record lists are. The record is compacted (rewritten atomically, sorted) at the end of
every run. See :mod:`gcbatch.engine.downloads` for how it is used.

The record is input like a server's answer: the folder may have been shared, the file
edited. It is never opened through a link planted at its name
(:func:`gcbatch.files.open_state`), and a line is taken only when its paths are plain
relative paths inside the folder (an image's files inside its directory), its size and
mtime integers: anything else is dropped, so a crafted record can at worst make a file be
downloaded again, never make ``download`` delete or overwrite a file elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from gcbatch import files

__all__ = [
    "STATE_NAME",
    "DownloadState",
    "FileRecord",
    "ImageRecord",
    "is_plain_relative",
    "link_on_the_way",
    "size_and_sha256",
]

STATE_NAME = ".gcbatch-downloads.jsonl"
_WHAT = "download record"


def is_plain_relative(text: str) -> bool:
    """A relative POSIX path that stays inside its folder: no ``..``, ``.``, empty parts,
    backslash or NUL, not absolute."""
    return (bool(text) and "\\" not in text and "\x00" not in text
            and not text.startswith("/")
            and not any(part in ("", ".", "..") for part in text.split("/")))


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
        self._fh = self._open()
        if self._fh.tell() and not self._ends_with_newline():
            # a torn line from a crash must not swallow the first new record
            self._fh.write(b"\n")
            self._fh.flush()

    def _open(self) -> IO[bytes]:
        fd = files.open_state(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, _WHAT)
        return os.fdopen(fd, "ab")

    def _load(self) -> None:
        data = files.read_state(self.path, _WHAT, in_place=True)
        if data is None:
            return
        for raw in data.split(b"\n"):
            # a torn last line (crash mid-append) or anything unreadable is just not a
            # record: the worst case is downloading that file again
            try:
                entry = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                continue
            if not isinstance(entry, dict):
                continue
            if entry.get("type") == "file":
                record = _file_record(entry)
                if record is not None:
                    self.files[record.path] = record
            elif entry.get("type") == "image":
                image = _image_record(entry)
                if image is not None:
                    self.images[image.directory] = image

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
        fd = files.open_state(self.path, os.O_RDONLY, _WHAT)
        with os.fdopen(fd, "rb") as fh:
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
            if link_on_the_way(self.root, PurePosixPath(path)) is not None:
                continue  # a folder on the way is a link: that file is not ours to delete
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
            files.atomic_write_bytes(self.path, text.encode("utf-8"), state=_WHAT)
            self._fh = self._open()

    def close(self) -> None:
        with self._mutex:
            self._fh.close()


def link_on_the_way(root: Path, relative: PurePosixPath) -> str | None:
    """The first folder between ``root`` and ``relative``'s file that is a symbolic link
    (or no folder at all), else None: writing or deleting there would reach outside
    ``root`` (a shared results folder may hold such a link, e.g. ``case-1 -> ~``)."""
    here = root
    for part in relative.parts[:-1]:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            return None  # (made by us from here on, as a real folder)
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            return str(PurePosixPath(*here.relative_to(root).parts))
    return None


def _file_record(entry: Mapping[str, Any]) -> FileRecord | None:
    """A ``file`` line as a record, or None when any field is not what we write."""
    path, source, size = entry.get("path"), entry.get("source"), entry.get("size")
    mtime, sha = entry.get("mtime_ns"), entry.get("sha256")
    if not (isinstance(path, str) and is_plain_relative(path) and "/" in path
            and isinstance(source, str) and type(size) is int and size >= 0
            and type(mtime) is int and isinstance(sha, str)):
        return None
    return FileRecord(path, source, size, mtime, sha)


def _image_record(entry: Mapping[str, Any]) -> ImageRecord | None:
    """An ``image`` line as a record, or None unless its files are plain names directly
    inside its directory (the only files ``drop_image`` may delete)."""
    directory, source, names = entry.get("path"), entry.get("source"), entry.get("files")
    if not (isinstance(directory, str) and is_plain_relative(directory)
            and isinstance(source, str) and isinstance(names, list)):
        return None
    prefix = directory + "/"
    for name in names:
        if not (isinstance(name, str) and name.startswith(prefix)
                and is_plain_relative(name) and "/" not in name[len(prefix):]):
            return None
    return ImageRecord(directory, source, tuple(names))


def size_and_sha256(path: Path) -> tuple[int, str]:
    """(bytes, ``"sha256:<hex>"``) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, "sha256:" + digest.hexdigest()
