"""Content hashes of input files: streamed, and cached by (path, size, mtime_ns).

A study can hold terabytes; a no-op ``plan`` must not read them again. :class:`FileHasher`
keeps a cache (a JSON file, by default ``.gcbatch/hash-cache.json`` beside the manifest)
mapping an absolute path to ``[size, mtime_ns, digest]``; a file whose size and mtime are
unchanged is not opened. Files are read in fixed-size chunks, never whole.

The "racily clean" problem (git has it too): a file rewritten with the same size within the
filesystem's timestamp granularity after we hashed it would keep its old mtime and fool the
cache. So a file whose mtime is less than :data:`RACY_WINDOW_NS` before the moment we hashed
it is hashed but not cached; the next run hashes it again, and caches it then.

:class:`HashStats` counts what happened, so callers (and the benchmark) can show that a
warm run read no file contents.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gcbatch.files import atomic_write_bytes, read_state, refuse_link
from gcbatch.jsonvalues import too_deep
from gcbatch.perf import gc_paused

CHUNK_SIZE = 1024 * 1024
RACY_WINDOW_NS = 2_000_000_000
CACHE_VERSION = 1
#: JSON files up to this size have their value cached too (value sources are small)
JSON_CACHE_MAX = 4096
_SCALARS: dict[str, Any] = {"true": True, "false": False, "null": None}


def sha256_file(path: Path, chunk_size: int = CHUNK_SIZE) -> tuple[str, int]:
    """``("sha256:<hex>", bytes read)``, reading ``chunk_size`` bytes at a time."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    total = 0
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
            total += n
    return "sha256:" + digest.hexdigest(), total


@dataclass
class HashStats:
    """What a hasher did: cache hits, files hashed and the bytes read to hash them."""

    hits: int = 0
    misses: int = 0
    files_read: int = 0
    bytes_read: int = 0

    def as_json(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "files_read": self.files_read,
                "bytes_read": self.bytes_read}


class Hasher(Protocol):
    """What :func:`gcbatch.sources.expand` needs: a digest for a file."""

    def digest(self, path: Path) -> str: ...


class FileHasher:
    """Streaming sha256 with a stat cache. Thread-safe; call :meth:`save` to persist."""

    def __init__(self, cache_path: Path | None = None) -> None:
        self.cache_path = cache_path
        self.stats = HashStats()
        self._cache: dict[str, list[Any]] = {}
        #: small JSON files (``json:`` sources): path → [size, mtime_ns, value as JSON
        #: text, digest of {"value": value}]
        self._json: dict[str, list[Any]] = {}
        self._dirty = False
        self._lock = threading.Lock()
        if cache_path is not None:
            # its folder (``.gcbatch/``) and the file itself may come with a cloned study:
            # neither is written through a link (StateFileError, before anything else)
            refuse_link(cache_path.parent, "folder of gcbatch's local state")
            self._cache, self._json = _read_cache(cache_path)

    def cached_json(self, path: str) -> tuple[Any, str] | None:
        """``(value, digest)`` of a JSON file unchanged (size, mtime) since it was cached,
        else None (and the caller reads it). Saves opening 100,000 value files per run."""
        cached = _fresh(self._json, path)
        if cached is None:
            return None
        text = cached[2]
        try:
            value = _SCALARS[text] if text in _SCALARS else json.loads(text)
        except (TypeError, ValueError, RecursionError):
            return None
        if isinstance(value, (list, dict)) and too_deep(value):
            return None  # not a value we cached (the file itself decides)
        return value, str(cached[3])

    def cached_json_digest(self, path: str) -> str | None:
        """The digest :meth:`cached_json` would give, without parsing the value: what a
        case already locked needs (its fingerprint), 100,000 times per re-apply."""
        cached = _fresh(self._json, path)
        return None if cached is None else str(cached[3])

    def cached_digest(self, path: str) -> str | None:
        """The digest :meth:`digest` would give from its cache alone (a regular file
        unchanged since it was hashed), else None: never reads the file."""
        cached = _fresh(self._cache, path, regular=True)
        if cached is None:
            return None
        with self._lock:
            self.stats.hits += 1
        return str(cached[2])

    def remember_json(self, path: str, st: os.stat_result, value: Any, digest: str) -> None:
        """Cache a JSON file's value and digest, read after ``st`` was taken; not a file
        modified in the last :data:`RACY_WINDOW_NS`, nor a large value."""
        if time.time_ns() - st.st_mtime_ns < RACY_WINDOW_NS or st.st_size > JSON_CACHE_MAX:
            return
        # the value as JSON text in its own key order (the cache file sorts keys, and a
        # job must get the value exactly as the file had it)
        text = json.dumps(value, allow_nan=False)
        with self._lock:
            self._json[path] = [st.st_size, st.st_mtime_ns, text, digest]
            self._dirty = True

    def digest(self, path: Path) -> str:
        key = os.fspath(path)
        st = os.stat(key)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
                self.stats.hits += 1
                return str(cached[2])
            self.stats.misses += 1
        started = time.time_ns()
        digest, n = sha256_file(path)
        after = os.stat(key)
        with self._lock:
            self.stats.files_read += 1
            self.stats.bytes_read += n
            unchanged = (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
            if unchanged and started - st.st_mtime_ns >= RACY_WINDOW_NS:
                self._cache[key] = [st.st_size, st.st_mtime_ns, digest]
                self._dirty = True
        return digest

    def save(self) -> None:
        """Write the cache (atomically) if it changed; a cache we cannot write is skipped."""
        if self.cache_path is None or not self._dirty:
            return
        with self._lock:
            text = json.dumps({"version": CACHE_VERSION, "files": self._cache,
                               "json": self._json}, separators=(",", ":"), sort_keys=True)
            self._dirty = False
        with contextlib.suppress(OSError):  # a read-only checkout still works, only slower
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.cache_path, text.encode("utf-8"), state="hash cache")


def _fresh(table: dict[str, list[Any]], path: str, *, regular: bool = False
           ) -> list[Any] | None:
    """``table[path]`` (``[size, mtime_ns, ...]``) when the file still has that size and
    mtime (and is a regular file, with ``regular``), else None."""
    cached = table.get(path)
    if cached is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    if cached[0] != st.st_size or cached[1] != st.st_mtime_ns:
        return None
    if regular and not stat.S_ISREG(st.st_mode):
        return None
    return cached


def _read_cache(path: Path) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """(file digests, JSON values). A missing, unreadable or foreign cache is an empty one
    (it is only a cache); an older one without JSON values is fine. A link is refused
    (:class:`~gcbatch.errors.StateFileError`); a value too deep to parse is re-read from
    its file (:meth:`FileHasher.cached_json`)."""
    try:
        raw = read_state(path, "hash cache")
        if raw is None:
            return {}, {}
        with gc_paused():
            data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}, {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}, {}
    files = data.get("files")
    if not isinstance(files, dict):
        return {}, {}
    values = data.get("json")
    # (the shape only: an entry is believed only for a file whose size and mtime_ns are
    # exactly its own, which a cache that came from elsewhere cannot know; a digest of
    # the wrong shape only makes a fingerprint differ)
    return {
        k: v for k, v in files.items()
        if isinstance(v, list) and len(v) == 3 and isinstance(v[2], str)
    }, {
        k: v for k, v in (values.items() if isinstance(values, dict) else ())
        if isinstance(v, list) and len(v) == 4 and isinstance(v[2], str)
        and isinstance(v[3], str)
    }


def default_cache_path(manifest: Path) -> Path:
    """``.gcbatch/hash-cache.json`` beside the manifest (``.gcbatch/`` is gcbatch's state)."""
    return manifest.parent / ".gcbatch" / "hash-cache.json"


#: one encoder for every call: ``json.dumps`` with options builds a new one each time,
#: which costs more than encoding a small value (fingerprints encode several per case)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a value: sorted keys, no spaces, UTF-8, no NaN."""
    return _CANONICAL(value)


def sha256_text(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
