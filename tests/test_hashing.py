"""Streaming hashes with a stat cache: hits skip reading, changes are noticed, racy files
are not cached, a broken cache is just an empty one."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from gcbatch import hashing
from gcbatch.hashing import FileHasher


def aged(path: Path, data: bytes, seconds: float = 3600) -> Path:
    """Write ``data`` with an mtime in the past (out of the racy window)."""
    path.write_bytes(data)
    past = time.time() - seconds
    os.utime(path, (past, past))
    return path


def test_streams_in_chunks_and_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 + 17)
    path = aged(tmp_path / "f", data)
    digest, n = hashing.sha256_file(path, chunk_size=1024)
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest() and n == len(data)


def test_warm_cache_reads_nothing(tmp_path: Path) -> None:
    cache = tmp_path / ".gcbatch" / "hash-cache.json"
    files = [aged(tmp_path / f"{i}.mha", bytes([i]) * 100) for i in range(5)]
    cold = FileHasher(cache)
    digests = [cold.digest(f) for f in files]
    assert cold.stats.files_read == 5 and cold.stats.bytes_read == 500
    cold.save()
    warm = FileHasher(cache)
    assert [warm.digest(f) for f in files] == digests
    assert warm.stats.as_json() == {"hits": 5, "misses": 0, "files_read": 0, "bytes_read": 0}


def test_changed_size_or_mtime_rehashes(tmp_path: Path) -> None:
    cache = tmp_path / "c.json"
    f = aged(tmp_path / "f", b"one")
    h = FileHasher(cache)
    first = h.digest(f)
    h.save()
    aged(f, b"two", seconds=7200)  # same size, other mtime
    h2 = FileHasher(cache)
    assert h2.digest(f) != first and h2.stats.files_read == 1


def test_racy_files_are_hashed_but_not_cached(tmp_path: Path) -> None:
    f = tmp_path / "fresh"
    f.write_bytes(b"just written")
    h = FileHasher(tmp_path / "c.json")
    h.digest(f)
    h.digest(f)
    assert h.stats.files_read == 2  # a file younger than the racy window is never trusted


@pytest.mark.parametrize("content", ["{not json", '{"version": 99, "files": {}}', "[]"])
def test_broken_cache_is_empty(tmp_path: Path, content: str) -> None:
    cache = tmp_path / "c.json"
    cache.write_text(content)
    f = aged(tmp_path / "f", b"x")
    h = FileHasher(cache)
    h.digest(f)
    assert h.stats.misses == 1
    h.save()
    assert FileHasher(cache).digest(f) == h.digest(f)


def test_canonical_json_is_order_free_and_refuses_nan() -> None:
    assert hashing.canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'
    with pytest.raises(ValueError):
        hashing.canonical_json(float("nan"))


def test_two_processes_saving_one_cache_keep_each_others_digests(tmp_path: Path) -> None:
    """Shards of one study hash their own files and save one cache: neither loses the
    other's entries."""
    cache = tmp_path / ".gcbatch" / "hash-cache.json"
    files = []
    for name in ("a.bin", "b.bin"):
        path = tmp_path / name
        path.write_bytes(name.encode() * 100)
        past = time.time() - 3600
        os.utime(path, (past, past))
        files.append(path)
    first, second = FileHasher(cache), FileHasher(cache)  # both read an empty cache
    first.digest(files[0])
    second.digest(files[1])
    first.save()
    second.save()
    again = FileHasher(cache)
    assert again.cached_digest(str(files[0])) is not None
    assert again.cached_digest(str(files[1])) is not None
