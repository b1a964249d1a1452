"""The in-order upload hash reads again exactly the chunks the parts were read in.

Parts of ``part_size_for`` bytes (an eighth of the file) are no multiple of the 1 MiB
chunk, so a part's last chunk is short. When the hash catches up over chunks it did not
hold (parts read out of order, more than its buffer ahead), a read across a part boundary
started where a short chunk had started and was taken for a change of the file: a false
"changed while it was being uploaded" that failed the case (seen as a flaky resume test).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gcbatch.api.uploads import MIB, SourceChangedError, _Source, plan_parts


def test_catching_up_across_a_short_last_chunk_is_not_a_change(tmp_path: Path) -> None:
    data = os.urandom(15 * MIB + 150)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    source = _Source(path)
    try:
        parts = plan_parts(source.size, 5 * MIB + 50)
        assert len(parts) == 3
        # parts 2 and 3 first (the hash holds 4 MiB of them), then part 1
        for spec in (parts[1], parts[2], parts[0]):
            for _ in source.chunks(spec, MIB, None):
                pass
        digest = source.sha256(MIB, [p.offset for p in parts])
    finally:
        source.close()
    assert digest == hashlib.sha256(data).hexdigest()


def test_a_real_change_is_still_caught_on_catching_up(tmp_path: Path) -> None:
    data = bytearray(os.urandom(15 * MIB + 150))
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(data))
    source = _Source(path)
    try:
        parts = plan_parts(source.size, 5 * MIB + 50)
        for spec in (parts[1], parts[2], parts[0]):
            for _ in source.chunks(spec, MIB, None):
                pass
        data[parts[1].offset + parts[1].length - 10] ^= 0xFF  # in part 2's short chunk
        path.write_bytes(bytes(data))
        with pytest.raises(SourceChangedError, match="changed while it was being uploaded"):
            source.sha256(MIB, [p.offset for p in parts])
    finally:
        source.close()
