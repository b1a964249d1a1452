"""--shard I/N: a stable partition of the case ids, its own lockfile, clear refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gcbatch.errors import ConfigError
from gcbatch.lockfile import lockfile_path_for
from gcbatch.targeting import Shard, Targeting, parse_shard, shard_of

ROOT = Path(__file__).resolve().parents[1]


def test_every_case_is_in_exactly_one_shard_and_the_split_is_even() -> None:
    ids = [f"case-{i:05d}" for i in range(4000)]
    shards = [Shard(i, 4) for i in range(4)]
    owners = [[s.index for s in shards if s.contains(cid)] for cid in ids]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(1 for o in owners if o == [i]) for i in range(4)]
    assert min(sizes) > 900 and max(sizes) < 1100


def test_the_hash_is_stable_and_adding_cases_moves_none() -> None:
    # fixed values: the same on every host, Python and run (no PYTHONHASHSEED)
    assert [shard_of(f"p{i}", 4) for i in range(8)] == [shard_of(f"p{i}", 4) for i in range(8)]
    assert shard_of("case-00001", 4) == int.from_bytes(
        __import__("hashlib").sha256(b"case-00001").digest()[:8], "big") % 4
    before = {f"p{i}": shard_of(f"p{i}", 7) for i in range(100)}
    after = {f"p{i}": shard_of(f"p{i}", 7) for i in range(200)}
    assert all(after[k] == v for k, v in before.items())


def test_parse_and_refuse() -> None:
    assert parse_shard(" 2 / 4 ") == Shard(2, 4)
    for bad in ("4/4", "-1/4", "1/0", "a/b", "1", "1/2/3"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def test_targeting_within_a_shard_and_its_lockfile_name() -> None:
    shard = Shard(1, 3)
    t = Targeting().within(shard)
    assert not t.everything and "--shard 1/3" in t.describe()
    assert t.filter([f"c{i}" for i in range(30)]) == [f"c{i}" for i in range(30)
                                                      if shard.contains(f"c{i}")]
    both = Targeting(select=("c1*",)).within(shard)
    assert both.filter(["c1", "c10", "c2"]) == [c for c in ["c1", "c10"] if shard.contains(c)]
    assert lockfile_path_for(Path("s/study.yaml"), shard=shard.label) == \
        Path("s/study.shard-1-of-3.lock")
    assert lockfile_path_for(Path("study.yaml"), sandbox=True, shard=shard.label) == \
        Path("study.shard-1-of-3.sandbox.lock")


def test_a_bad_shard_flag_exits_2_before_anything(tmp_path: Path) -> None:
    manifest = tmp_path / "study.yaml"
    manifest.write_text("version: 1\nalgorithm: a\ncases:\n  - id: p1\n    inputs:\n"
                        "      age: {value: 1}\n")
    result = subprocess.run([sys.executable, "-m", "gcbatch", "plan", str(manifest),
                             "--shard", "4/4"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert result.returncode == 2 and "0 <= I < N" in result.stderr


def test_a_case_of_another_shard_is_named_with_its_shard() -> None:
    cid = next(f"p{i}" for i in range(100) if shard_of(f"p{i}", 4) != 0)
    with pytest.raises(ConfigError, match=f"in shard {shard_of(cid, 4)}/4"):
        Targeting(case_ids=(cid,)).within(Shard(0, 4)).check_known([])
