"""The record of completed downloads in an output folder: ``DIR/.gcbatch-downloads.jsonl``.

One JSON line per completed file or image, appended and flushed (O(1) per file however
many there are): a file counts as *complete* when its record exists for the same source
URL and the file on disk still has the recorded size and mtime (if only the mtime moved,
its sha256 is compared to the recorded one). An image is complete when all the files its
record lists are. The record is compacted (rewritten atomically, sorted) at the end of
every run. See :mod:`gcbatch.engine.downloads` for how it is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gcbatch import files

__all__ = ["STATE_NAME", "DownloadState", "FileRecord", "ImageRecord", "size_and_sha256"]

STATE_NAME = ".gcbatch-downloads.jsonl"


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
            files.atomic_write_bytes(self.path, text.encode("utf-8"))
            self._fh = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        with self._mutex:
            self._fh.close()


def size_and_sha256(path: Path) -> tuple[int, str]:
    """(bytes, ``"sha256:<hex>"``) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, "sha256:" + digest.hexdigest()
