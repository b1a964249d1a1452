"""Streamed, parallel, resumable S3-style multipart uploads to Grand Challenge.

The protocol (the platform's S3-style multipart uploads): ``POST uploads/`` creates an
upload → ``generate-presigned-urls`` for part numbers → ``PUT`` each part's bytes to its
presigned URL (never with the token) → ``complete-multipart-upload`` with the ETags.

How gcbatch uses it::

    uploader = Uploader(client)                         # part_size 32 MiB, 4 parts at once
    upload = uploader.create("p001.gcb-1a2b3c4d.mha")   # 1. create
    journal.intent(..., upload.pk, upload.s3_upload_id) # 2. the CALLER persists the ref
    result = uploader.send(upload, path)                # 3. parts + complete
    ...after a crash, with the ref from the journal:
    result = uploader.send(ref, path, resume=True)      # list-parts, send only the rest
    # -> UploadGoneError if the upload no longer exists: create a new one

Memory stays bounded whatever the file size: a part is never held in memory; its body is
a generator reading ``chunk_size`` bytes at a time from the file at the part's offset
(``os.pread`` on one shared descriptor; a guarded seek and read where there is no pread), so memory is about ``max_workers * chunk_size``.
A retried PUT re-reads its part from disk.

Resume trusts a part the server already holds only if its size matches and, when the
ETag is a plain MD5 (S3 without KMS, and the sandbox), the MD5 of our bytes at that offset
matches too; otherwise that part is sent again (S3 lets a part number be overwritten).

On failure (retries exhausted, a rejected part) the upload is aborted when
``abort_on_failure`` (default; frees the user's upload quota) — except when the failure
is an interruption (KeyboardInterrupt/SystemExit), which leaves it resumable.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from gcbatch.api.client import GrandChallengeClient
from gcbatch.api.models import Upload, UploadPart
from gcbatch.errors import ApiError, GcbatchError, InputError, NotFoundError, PermissionDeniedError

__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_FILENAME_LENGTH",
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "PartSpec",
    "SourceChangedError",
    "UploadGoneError",
    "UploadResult",
    "Uploader",
    "check_upload_filename",
    "plan_parts",
]

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3: every part but the last
DEFAULT_PART_SIZE = 32 * MIB  # as gcapi
MAX_PARTS = 10_000  # S3 and the API (part numbers 1..10000)
MAX_FILENAME_LENGTH = 128
DEFAULT_CHUNK = 1 * MIB
#: presigned URLs are requested for this many parts at a time (they expire after ~1 h,
#: so asking for all 10,000 up front could leave late parts with dead URLs)
PRESIGN_BATCH = 16
#: bytes read ahead of the in-order hash that are held for it; chunks beyond are read
#: again when the hash reaches them (and must not have changed). Small on purpose: an
#: upload streams in 1 MiB chunks whatever the file's size, and a second read of a chunk
#: costs less than holding parts of several parallel PUTs in memory.
HASH_BUFFER = 4 * MIB

ProgressFn = Callable[[int], None]


class UploadGoneError(GcbatchError):
    """The upload to resume no longer exists (consumed, expired or aborted): start anew."""


class SourceChangedError(GcbatchError):
    """The file changed while it was being uploaded, or since it was fingerprinted."""


# ---------------------------------------------------------------------------------------
# pure helpers


@dataclass(frozen=True)
class PartSpec:
    """Part ``number`` (1-based) covers ``length`` bytes of the file from ``offset``."""

    number: int
    offset: int
    length: int


def plan_parts(size: int, part_size: int = DEFAULT_PART_SIZE) -> tuple[PartSpec, ...]:
    """Split ``size`` bytes into parts of ``part_size`` (the last one shorter).

    Grows the part size (in whole MiB) if the file would need more than 10,000 parts; an
    empty file is one empty part (S3 accepts a single part below the minimum).
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    if part_size < MIN_PART_SIZE:
        raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
    if size == 0:
        return (PartSpec(1, 0, 0),)
    if math.ceil(size / part_size) > MAX_PARTS:
        part_size = math.ceil(size / MAX_PARTS / MIB) * MIB
    count = math.ceil(size / part_size)
    return tuple(
        PartSpec(n + 1, n * part_size, min(part_size, size - n * part_size)) for n in range(count)
    )


_BAD_FILENAME = re.compile(r"[/\\\x00-\x1f]")


def check_upload_filename(filename: str) -> str:
    """The server's rule: a bare file name (no path), 1..128 characters."""
    if not filename or filename in (".", ".."):
        raise InputError("an upload's file name must not be empty")
    if _BAD_FILENAME.search(filename):
        raise InputError(f"{filename!r} is not a valid upload file name (no paths)")
    if len(filename) > MAX_FILENAME_LENGTH:
        raise InputError(
            f"upload file name {filename[:40]!r}... is longer than {MAX_FILENAME_LENGTH} characters"
        )
    return filename


_PLAIN_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')


# ---------------------------------------------------------------------------------------
# byte sources


#: os.pread is POSIX-only
_HAS_PREAD = hasattr(os, "pread")


class _Source:
    """Random-access bytes of a file (read with pread: parts are read in parallel), and
    the sha256 of exactly the bytes read for sending.

    Bytes sent = bytes hashed: every chunk's first read feeds an in-order sha256 (chunks
    read ahead of the hash's position are held, up to :data:`HASH_BUFFER` bytes, or read
    again later); a chunk read a second time (a retried PUT, the hash catching up) must
    give the same bytes as its first read (a blake2b digest per chunk), or the file
    changed under us: :class:`SourceChangedError`.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self.size = os.fstat(self._fd).st_size
        self._lock = threading.Lock()
        self._seen: dict[int, bytes] = {}  # chunk offset → blake2b of its first read
        self._sha = hashlib.sha256()
        self._hashed = 0  # the in-order hash covers [0, _hashed)
        self._held: dict[int, bytes] = {}
        self._held_bytes = 0
        self._seek_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def _read_at(self, fd: int, n: int, offset: int) -> bytes:
        if _HAS_PREAD:
            return os.pread(fd, n, offset)
        # Windows has no pread: the shared descriptor's position is guarded instead
        with self._seek_lock:
            os.lseek(fd, offset, os.SEEK_SET)
            return os.read(fd, n)

    def current_size(self) -> int:
        if self._fd is None:
            return self.size
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _pread(self, offset: int, length: int) -> bytes:
        assert self._fd is not None
        out = b""
        while len(out) < length:
            chunk = self._read_at(self._fd, length - len(out), offset + len(out))
            if not chunk:
                raise SourceChangedError(f"{self._path} became shorter while it was being uploaded")
            out += chunk
        return out

    def read(self, offset: int, length: int) -> bytes:
        data = self._pread(offset, length)
        digest = hashlib.blake2b(data, digest_size=16).digest()
        with self._lock:
            first = self._seen.setdefault(offset, digest)
            if first != digest:
                raise SourceChangedError(
                    f"{self._path} changed while it was being uploaded (bytes at offset "
                    f"{offset} differ from the first read)")
            if offset >= self._hashed and offset not in self._held:
                if offset == self._hashed:
                    self._advance(data)
                elif self._held_bytes + len(data) <= HASH_BUFFER:
                    self._held[offset] = data
                    self._held_bytes += len(data)
        return data

    def _advance(self, data: bytes) -> None:
        """(under the lock) ``data`` is the chunk at the hash's position."""
        self._sha.update(data)
        self._hashed += len(data)
        while self._hashed in self._held:
            held = self._held.pop(self._hashed)
            self._held_bytes -= len(held)
            self._sha.update(held)
            self._hashed += len(held)

    def sha256(self, chunk_size: int, part_offsets: Sequence[int] = ()) -> str:
        """The sha256 of the whole file as read for sending (chunks the hash did not see
        yet are read once more, and must not have changed).

        The chunks read again are the very chunks the parts were read in: a part's last
        chunk is short when the part size is no multiple of the chunk size, so a read
        across a part boundary (``part_offsets``) would start where a short chunk did and
        be compared with it as if the file had changed."""
        while True:
            with self._lock:
                position = self._hashed
            if position >= self.size:
                break
            end = min(position + chunk_size, self.size)
            following = bisect.bisect_right(part_offsets, position)
            if following < len(part_offsets):
                end = min(end, part_offsets[following])
            self.read(position, end - position)
        return self._sha.hexdigest()

    def chunks(
        self, part: PartSpec, chunk_size: int, progress: ProgressFn | None
    ) -> Iterator[bytes]:
        done = 0
        while done < part.length:
            n = min(chunk_size, part.length - done)
            data = self.read(part.offset + done, n)
            done += n
            if progress is not None:
                progress(n)
            yield data

    def md5(self, part: PartSpec, chunk_size: int) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        for chunk in self.chunks(part, chunk_size, None):
            digest.update(chunk)
        return digest.hexdigest()


# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadResult:
    """A completed upload and what it took."""

    upload: Upload
    size: int
    parts_total: int
    parts_sent: int
    parts_reused: int
    bytes_sent: int
    #: sha256 of the bytes the server holds ("" when an earlier run completed it)
    sha256: str = ""


class _Presigner:
    """Hands out presigned URLs per part, fetching them in batches, refreshing on demand."""

    def __init__(self, client: GrandChallengeClient, upload: Upload, numbers: Sequence[int]):
        self._client = client
        self._upload = upload
        self._pending = list(numbers)
        self._urls: dict[int, str] = {}
        self._lock = threading.Lock()

    def url(self, number: int, *, fresh: bool = False) -> str:
        with self._lock:
            if fresh:
                self._urls.pop(number, None)
            if number not in self._urls:
                others = [n for n in self._pending if n != number and n not in self._urls]
                batch = [number, *others[: PRESIGN_BATCH - 1]]
                answer = self._client.generate_presigned_urls(self._upload, sorted(batch))
                self._urls.update(answer.presigned_urls)
                if number not in self._urls:
                    raise ApiError(
                        f"the server gave no presigned URL for part {number}",
                        status=200,
                    )
            with contextlib.suppress(ValueError):
                self._pending.remove(number)
            return self._urls[number]


class Uploader:
    """Uploads files through a :class:`GrandChallengeClient` (thread-safe; share it)."""

    def __init__(
        self,
        client: GrandChallengeClient,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        max_workers: int = 4,
        chunk_size: int = DEFAULT_CHUNK,
        abort_on_failure: bool = True,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        if max_workers < 1 or chunk_size < 1:
            raise ValueError("max_workers and chunk_size must be positive")
        self.client = client
        self.part_size = part_size
        self.max_workers = max_workers
        self.chunk_size = chunk_size
        self.abort_on_failure = abort_on_failure

    # -- the steps --------------------------------------------------------------------------

    def create(self, filename: str) -> Upload:
        """Create an upload (step 1). Persist ``pk``/``s3_upload_id`` before :meth:`send`."""
        return self.client.create_upload(check_upload_filename(filename))

    def send(
        self,
        upload: Upload,
        path: str | os.PathLike[str],
        *,
        resume: bool = False,
        progress: ProgressFn | None = None,
        expect_sha256: str | None = None,
    ) -> UploadResult:
        """Send the file's parts (only the missing ones if ``resume``) and complete.

        ``expect_sha256``: the digest the file had when it was fingerprinted; if the bytes
        sent hash otherwise, the upload is aborted before completion
        (:class:`SourceChangedError`) so no job can ever use it."""
        source = _Source(Path(path))
        try:
            return self._send(upload, source, resume=resume, progress=progress,
                              expect_sha256=expect_sha256)
        finally:
            source.close()

    # -- the work -------------------------------------------------------------------------------

    def _existing_parts(self, upload: Upload) -> tuple[Upload | None, tuple[UploadPart, ...]]:
        """(completed upload or None, parts the server holds) for a resume."""
        try:
            current = self.client.get_upload(upload.pk)
        except NotFoundError:
            raise UploadGoneError(
                f"upload {upload.filename!r} ({upload.pk}) no longer exists "
                "(used by a job, expired or deleted)"
            ) from None
        if current.s3_upload_id and current.s3_upload_id != upload.s3_upload_id:
            raise UploadGoneError(f"upload {upload.pk} has another s3_upload_id")
        if current.is_completed:
            return current, ()
        if current.status == Upload.ABORTED:
            raise UploadGoneError(f"upload {upload.filename!r} ({upload.pk}) was aborted")
        try:
            return None, self.client.list_parts(upload)
        except NotFoundError:
            raise UploadGoneError(
                f"upload {upload.filename!r} ({upload.pk}) no longer exists"
            ) from None

    def _reusable(self, source: _Source, spec: PartSpec, held: UploadPart) -> bool:
        if held.size is not None and held.size != spec.length:
            return False
        match = _PLAIN_MD5_ETAG.match(held.etag)
        if match is None:
            return held.size == spec.length  # multipart/KMS ETag: size is all we can check
        return source.md5(spec, self.chunk_size) == match.group(1).lower()

    def _send(
        self,
        upload: Upload,
        source: _Source,
        *,
        resume: bool,
        progress: ProgressFn | None,
        expect_sha256: str | None = None,
    ) -> UploadResult:
        specs = plan_parts(source.size, self.part_size)
        etags: dict[int, str] = {}
        if resume:
            completed, held = self._existing_parts(upload)
            if completed is not None:
                return UploadResult(completed, source.size, len(specs), 0, len(specs), 0)
            by_number = {p.part_number: p for p in held}
            for spec in specs:
                part = by_number.get(spec.number)
                if part is not None and self._reusable(source, spec, part):
                    etags[spec.number] = part.etag
        todo = [s for s in specs if s.number not in etags]
        reused = len(specs) - len(todo)
        sent_bytes = 0
        sent_lock = threading.Lock()

        def count(n: int) -> None:
            nonlocal sent_bytes
            with sent_lock:
                sent_bytes += n
            if progress is not None:
                progress(n)

        presigner = _Presigner(self.client, upload, [s.number for s in todo])

        def put(spec: PartSpec) -> tuple[int, str]:
            def body() -> Iterator[bytes]:
                return source.chunks(spec, self.chunk_size, count)

            url = presigner.url(spec.number)
            try:
                etag = self.client.put_part(url, body, spec.length)
            except PermissionDeniedError:
                # an expired presigned URL answers 403: get a fresh one, once
                etag = self.client.put_part(
                    presigner.url(spec.number, fresh=True), body, spec.length
                )
            return spec.number, etag

        try:
            self._run_parallel(put, todo, etags)
            if source.current_size() != source.size:
                raise SourceChangedError("the file changed size while it was being uploaded")
            sha256 = source.sha256(self.chunk_size, [s.offset for s in specs])
            if expect_sha256 is not None and sha256 != expect_sha256:
                raise SourceChangedError(
                    f"{source.path}: the file changed since it was fingerprinted (the bytes "
                    "read for sending are not the bytes planned)")
            done = self.client.complete_upload(upload, sorted(etags.items()))
        except (KeyboardInterrupt, SystemExit):
            raise  # leave the upload resumable
        except BaseException:
            if self.abort_on_failure:
                with contextlib.suppress(Exception):
                    self.client.abort_upload(upload)
            raise
        return UploadResult(done, source.size, len(specs), len(todo), reused, sent_bytes,
                            sha256)

    def _run_parallel(
        self,
        put: Callable[[PartSpec], tuple[int, str]],
        todo: Sequence[PartSpec],
        etags: dict[int, str],
    ) -> None:
        if not todo:
            return
        if len(todo) == 1 or self.max_workers == 1:
            for spec in todo:
                number, etag = put(spec)
                etags[number] = etag
            return
        pool = ThreadPoolExecutor(
            max_workers=min(self.max_workers, len(todo)), thread_name_prefix="gcbatch-part"
        )
        try:
            futures: list[Future[tuple[int, str]]] = [pool.submit(put, s) for s in todo]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in finished if f.exception() is not None), None)
            if failed is not None:
                exc = failed.exception()
                assert exc is not None
                raise exc
            for f in futures:
                number, etag = f.result()
                etags[number] = etag
        finally:
            # parts not started are dropped; parts in flight finish (bounded by one part
            # each), so an interrupted upload leaves whole parts the server can list
            pool.shutdown(wait=True, cancel_futures=True)
