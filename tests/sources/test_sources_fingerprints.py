"""Fingerprints change exactly when the inputs do: contents, not names; values, not where
they are written."""

from __future__ import annotations

from pathlib import Path

from studies import manifest, write

from gcbatch.hashing import FileHasher
from gcbatch.manifest import load_manifest
from gcbatch.sources import expand


def test_fingerprints_change_exactly_with_inputs(study: Path, tmp_path: Path) -> None:
    before = {c.id: c for c in expand(load_manifest(study), hasher=FileHasher()).cases}
    write(tmp_path / "scans/b.mha", b"changed")
    after = {c.id: c for c in expand(load_manifest(study), hasher=FileHasher()).cases}
    assert before["scan-a"].fingerprint == after["scan-a"].fingerprint
    assert before["patient-001"].fingerprint == after["patient-001"].fingerprint
    assert before["scan-b"].fingerprint != after["scan-b"].fingerprint
    assert before["scan-b"].digests()["lung-volume"] == after["scan-b"].digests()["lung-volume"]
    assert before["scan-b"].digests()["ct-image"] != after["scan-b"].digests()["ct-image"]


def test_algorithm_is_part_of_the_fingerprint(study: Path) -> None:
    one = expand(load_manifest(study), hasher=FileHasher()).cases[0]
    study.write_text(study.read_text().replace("lung-nodule-detector", "other-alg"))
    two = expand(load_manifest(study), hasher=FileHasher()).cases[0]
    assert one.digests() == two.digests() and one.fingerprint != two.fingerprint


def test_value_and_json_of_same_value_are_the_same_input(tmp_path: Path) -> None:
    write(tmp_path / "v.json", "[1, 2]")
    m = manifest(tmp_path, """\
        cases:
          - {id: a, inputs: {x: {value: [1, 2]}}}
          - {id: b, inputs: {x: {json: v.json}}}
        """)
    a, b = expand(load_manifest(m), hasher=FileHasher()).cases
    assert a.fingerprint == b.fingerprint


def test_file_and_files_of_one_file_are_equal_names_do_not_count(tmp_path: Path) -> None:
    write(tmp_path / "x.mha", b"same")
    write(tmp_path / "y.mha", b"same")
    m = manifest(tmp_path, """\
        cases:
          - {id: a, inputs: {ct-image: {file: x.mha}}}
          - {id: b, inputs: {ct-image: {files: "y.*"}}}
        """)
    a, b = expand(load_manifest(m), hasher=FileHasher()).cases
    assert a.fingerprint == b.fingerprint


def test_without_hasher_nothing_is_fingerprinted(study: Path) -> None:
    exp = expand(load_manifest(study), hasher=None)
    assert {c.fingerprint for c in exp.cases} == {""}
