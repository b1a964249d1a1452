"""Settled cases: a case whose fingerprint, from cached digests alone, is the locked one
comes back as an id; anything the quick way cannot tell is expanded in full."""

from __future__ import annotations

from pathlib import Path

import pytest
from studies import Item, manifest, write

from gcbatch.errors import ManifestError
from gcbatch.hashing import FileHasher
from gcbatch.manifest import load_manifest
from gcbatch.sources import expand


def _mixed_study(tmp_path: Path) -> Path:
    for i in range(4):
        write(tmp_path / f"values/v{i}.json", str(1000 + i))
        write(tmp_path / f"scans/s{i}.mha", f"scan {i}")
    write(tmp_path / "scans/s0.json", '{"a": 1}')
    return manifest(tmp_path, """\
        defaults:
          age: {value: 64}
        cases:
          - foreach: {glob: "values/*.json"}
            id: "v-{stem}"
            inputs:
              lung-volume: {json: "{path}"}
          - foreach: {glob: "scans/*.mha"}
            id: "s-{stem}"
            inputs:
              ct-image: {file: "{path}"}
              report: {files: "scans/{stem}.*"}
          - foreach: {archive: some-archive}
            id: "item-{item.pk}"
            inputs:
              ct-image: {archive_item: "{item.pk}", socket: ct}
              flag: {image: "https://x/api/v1/cases/images/{item.pk}/"}
          - foreach: {glob: "scans/*.json"}
            id: "j-{stem}"
            inputs:
              lab: {file: "{path}"}
          - id: explicit
            inputs:
              lung-volume: {value: 2.5}
              lab: {file: scans/s0.json}
        """)


ITEMS = {"some-archive": [Item("p1"), Item("p2")]}


def _full(path: Path, hasher: FileHasher) -> dict[str, str]:
    return {c.id: c.fingerprint for c in expand(load_manifest(path), ITEMS, hasher).cases}


def test_settled_cases_come_back_as_ids_with_the_full_fingerprints(tmp_path: Path) -> None:
    path = _mixed_study(tmp_path)
    hasher = FileHasher(tmp_path / "cache.json")
    full = _full(path, hasher)  # fills the hash cache
    assert len(full) == 12
    quick = expand(load_manifest(path), ITEMS, hasher, settled=full)
    # everything that can be told from cached digests is settled: json values, archive
    # items, images, literal values and sources without placeholders (made once, in
    # full); `files:` globs and a .json `file:` with placeholders are expanded in full
    # (it must be checked to parse), and come out unchanged
    assert set(quick.settled) == {"v-v0", "v-v1", "v-v2", "v-v3", "item-p1", "item-p2",
                                  "explicit"}
    assert list(quick.settled) == sorted(quick.settled)
    assert {c.id for c in quick.cases} == {"s-s0", "s-s1", "s-s2", "s-s3", "j-s0"}
    assert quick.case_ids and set(quick.case_ids) == set(full)
    assert all(full[c.id] == c.fingerprint for c in quick.cases)


def test_a_settled_fingerprint_that_no_longer_matches_builds_the_case(tmp_path: Path) -> None:
    path = _mixed_study(tmp_path)
    hasher = FileHasher(tmp_path / "cache.json")
    full = _full(path, hasher)
    write(tmp_path / "values/v1.json", "7")  # changed contents (and mtime)
    write(tmp_path / "values/v2.json", "{broken")  # the full path reports it
    wrong = dict(full, **{"v-v3": "sha256:" + "0" * 64})
    with pytest.raises(ManifestError, match=r"v2\.json: not valid JSON"):
        expand(load_manifest(path), ITEMS, hasher, settled=wrong)
    write(tmp_path / "values/v2.json", "1002")
    quick = expand(load_manifest(path), ITEMS, hasher, settled=wrong)
    built = {c.id: c.fingerprint for c in quick.cases}
    assert {"v-v1", "v-v2", "v-v3"} <= set(built)
    assert "v-v0" in quick.settled
    assert built["v-v1"] != full["v-v1"] and built["v-v3"] == full["v-v3"]
    # without a hash cache, only what needs no file: every case with a file is built
    cold = expand(load_manifest(path), ITEMS, FileHasher(None), settled=full)
    assert set(cold.settled) == {"explicit", "item-p1", "item-p2"}  # (explicit: made once)
    assert len(cold.cases) == 9
    # no hasher (validate/plan offline without fingerprints): `settled` is ignored
    assert not expand(load_manifest(path), ITEMS, None, settled=full).settled


def test_a_settled_case_still_counts_for_duplicate_ids(tmp_path: Path) -> None:
    write(tmp_path / "a/x.json", "1")
    write(tmp_path / "b/x.json", "2")
    path = manifest(tmp_path, """\
        cases:
          - foreach: {glob: "a/*.json"}
            id: "{stem}"
            inputs: {age: {json: "{path}"}}
          - foreach: {glob: "b/*.json"}
            id: "{stem}"
            inputs: {age: {json: "{path}"}}
        """)
    hasher = FileHasher(tmp_path / "cache.json")
    findings = expand(load_manifest(path), hasher=hasher, collect=True).findings
    assert [f.message for f in findings] and "already used" in findings[0].message
    first = expand(load_manifest(path), hasher=hasher, collect=True).cases[0]
    again = expand(load_manifest(path), hasher=hasher, collect=True,
                   settled={"x": first.fingerprint})
    assert again.settled == ("x",) and not again.cases
    assert [f.message for f in again.findings] == [f.message for f in findings]


def test_a_settled_case_whose_default_has_a_finding_is_reported_not_settled(
        tmp_path: Path) -> None:
    write(tmp_path / "values/v1.json", "1")
    write(tmp_path / "meta.json", "2")
    path = manifest(tmp_path, """\
        defaults:
          age: {json: meta.json}
        cases:
          - foreach: {glob: "values/*.json"}
            id: "v-{stem}"
            inputs: {lung-volume: {json: "{path}"}}
        """)
    hasher = FileHasher(tmp_path / "cache.json")
    full = _full(path, hasher)
    (tmp_path / "meta.json").unlink()
    with pytest.raises(ManifestError, match=r"meta\.json: no such file"):
        expand(load_manifest(path), hasher=hasher, settled=full)
