"""Expansion into cases: sorted, stable ids, defaults, placeholders, file-system findings."""

from __future__ import annotations

from pathlib import Path

import pytest
from studies import Item, manifest, write

from gcbatch.errors import ManifestError
from gcbatch.hashing import FileHasher
from gcbatch.manifest import load_manifest
from gcbatch.sources import expand


def test_expansion_is_sorted_with_defaults_and_needs_server(study: Path) -> None:
    exp = expand(load_manifest(study), hasher=FileHasher())
    assert [c.id for c in exp.cases] == ["patient-001", "scan-a", "scan-b"]
    by_id = exp.by_id()
    assert by_id["scan-a"].sockets == ("ct-image", "lung-volume")
    assert by_id["patient-001"].sockets == ("clinical-info", "ct-image")  # null drops default
    p1 = by_id["patient-001"].inputs
    assert p1[0].value == {"smoker": True, "age": 61} and p1[0].kind == "json"
    assert [p.name for p in p1[1].paths] == ["1.dcm", "2.dcm"]
    assert all(p.is_absolute() for p in p1[1].paths)
    assert p1[1].summary == "files scans/p001/*.dcm (2 files)"
    assert by_id["scan-a"].inputs[0].summary == "file scans/a.nii.gz"
    assert [g.archive for g in exp.needs_server] == ["lung-archive"]
    assert all(c.fingerprint.startswith("sha256:") for c in exp.cases)


def test_archive_generator_with_items(study: Path) -> None:
    items = {"lung-archive": [Item("u2", "two"), Item("u1", "one")]}
    exp = expand(load_manifest(study), items, hasher=FileHasher())
    assert exp.needs_server == ()
    item = exp.by_id()["item-u1"]
    ct = item.inputs[1]
    assert (ct.kind, ct.archive, ct.item_pk, ct.item_socket) == (
        "archive_item", "lung-archive", "u1", "ct-image")
    assert [c.id for c in exp.cases][:2] == ["item-u1", "item-u2"]


def test_expansion_is_deterministic(study: Path) -> None:
    one = expand(load_manifest(study), hasher=FileHasher())
    two = expand(load_manifest(study), hasher=FileHasher())
    assert one == two


def test_folders_as_cases_and_glob_metacharacters_in_names(tmp_path: Path) -> None:
    write(tmp_path / "patients/p[1]/1.dcm", b"1")
    write(tmp_path / "patients/p2/1.dcm", b"2")
    write(tmp_path / "patients/p2/2.dcm", b"3")
    m = manifest(tmp_path, """\
        cases:
          - foreach: {glob: "patients/*/"}
            id: "{name}"
            inputs:
              ct-image: {files: "{path}/*.dcm"}
        """)
    exp = expand(load_manifest(m), collect=True)
    # "p[1]" is not a valid id, but its files were found through an escaped glob
    assert [c.id for c in exp.cases] == ["p2"]
    assert len(exp.cases[0].inputs[0].paths) == 2
    assert len(exp.findings) == 1 and "'p[1]' made from patients/p[1]" in exp.findings[0].message


def findings_of(m: Path, items: dict[str, list[Item]] | None = None) -> list[str]:
    with pytest.raises(ManifestError) as info:
        expand(load_manifest(m), items)
    return [f.render().replace(f"{m.parent}/", "") for f in info.value.findings]


def test_file_system_findings_are_all_collected(tmp_path: Path) -> None:
    write(tmp_path / "scans/a.mha", b"a")
    write(tmp_path / "scans/a.nii", b"a")
    write(tmp_path / "bad.json", "{oops")
    write(tmp_path / "report.json", "not json")
    m = manifest(tmp_path, """\
        cases:
          - id: c1
            inputs:
              ct-image: {file: "missing.mha"}
          - id: c2
            inputs:
              ct-image: {files: "nothing/*.dcm"}
          - id: c3
            inputs:
              clinical-info: {json: bad.json}
          - id: c4
            inputs:
              clinical-info: {json: nope.json}
          - id: c5
            inputs:
              ct-image: {file: "scans/*"}
          - foreach: {glob: "scans/*"}
            id: "s-{stem}"
            inputs:
              ct-image: {file: "{path}"}
          - foreach: {glob: "none/*.mha"}
            id: "n-{stem}"
            inputs:
              ct-image: {file: "{path}"}
          - id: c6
            inputs:
              lab-report: {file: report.json}
        """)
    assert findings_of(m) == [
        "study.yaml:6:24: cases[0].inputs.ct-image: missing.mha: no such file",
        "study.yaml:9:25: cases[1].inputs.ct-image: nothing/*.dcm: the glob matches nothing",
        "study.yaml:12:29: cases[2].inputs.clinical-info: bad.json: not valid JSON "
        "(line 1, column 2: Expecting property name enclosed in double quotes)",
        "study.yaml:15:29: cases[3].inputs.clinical-info: nope.json: no such file",
        "study.yaml:18:24: cases[4].inputs.ct-image: scans/*: matches 2 files; `file` takes "
        "exactly one (use `files` for several)",
        "study.yaml:20:9: cases[5].id: case id 's-a' (cases[5]: scans/a.nii) is already used "
        "by cases[5]: scans/a.mha (line 19)",
        "study.yaml:23:21: cases[6].foreach.glob: none/*.mha: the glob matches nothing",
        "study.yaml:29:26: cases[7].inputs.lab-report: report.json: a .json file that is not "
        "valid JSON (Expecting value: line 1 column 1 (char 0))",
    ]


def test_generated_id_clashing_with_explicit_and_bad_archive_title(tmp_path: Path) -> None:
    write(tmp_path / "x.mha", b"x")
    m = manifest(tmp_path, """\
        cases:
          - id: case-x
            inputs: {ct-image: {file: x.mha}}
          - foreach: {glob: "*.mha"}
            id: "case-{stem}"
            inputs: {ct-image: {file: "{path}"}}
          - foreach: {archive: lung-archive}
            id: "{item.title}"
            inputs: {ct-image: {archive_item: "{item.pk}"}}
        """)
    assert findings_of(m, {"lung-archive": [Item("u1", "has space")]}) == [
        "study.yaml:7:9: cases[1].id: case id 'case-x' (cases[1]: x.mha) is already used by "
        "cases[0] (line 4)",
        "study.yaml:10:9: cases[2].id: 'has space' made from archive item u1 is not a valid "
        "case id (1-128 letters, digits, '.', '_' or '-', starting with a letter or digit)",
    ]


def test_source_kinds_are_the_plain_strings(study: Path) -> None:
    """``Source.kind`` is typed (a Literal) but stays a str: ``kind == "file"`` elsewhere."""
    exp = expand(load_manifest(study), {"lung-archive": [Item("u1")]}, hasher=None)
    kinds = {s.kind for c in exp.cases for s in c.inputs}
    assert kinds == {"archive_item", "file", "files", "json", "value"}
    assert {type(k) for k in kinds} == {str}
