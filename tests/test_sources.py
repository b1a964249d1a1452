"""Expansion into cases: sorted, stable ids, defaults, placeholders, file-system findings,
fingerprints that change exactly when the inputs do."""

from __future__ import annotations

import os
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gcbatch.errors import ManifestError
from gcbatch.hashing import FileHasher
from gcbatch.manifest import load_manifest
from gcbatch.sources import expand, glob_placeholders, split_name

HEAD = "version: 1\nalgorithm: lung-nodule-detector\n"


@dataclass(frozen=True)
class Item:
    pk: str
    title: str = ""


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    past = time.time() - 3600
    os.utime(path, (past, past))
    return path


def manifest(tmp_path: Path, body: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEAD + textwrap.dedent(body))
    return path


@pytest.fixture
def study(tmp_path: Path) -> Path:
    write(tmp_path / "scans/b.mha", b"bbb")
    write(tmp_path / "scans/a.nii.gz", b"aaa")
    write(tmp_path / "scans/p001/1.dcm", b"1")
    write(tmp_path / "scans/p001/2.dcm", b"2")
    write(tmp_path / "meta/p001.json", '{"smoker": true, "age": 61}')
    return manifest(tmp_path, """\
        defaults:
          lung-volume: {value: 42}
        cases:
          - foreach: {glob: "scans/*.*"}
            id: "scan-{stem}"
            inputs:
              ct-image: {file: "{path}"}
          - id: patient-001
            inputs:
              ct-image: {files: "scans/p001/*.dcm"}
              clinical-info: {json: meta/p001.json}
              lung-volume: null
          - foreach: {archive: lung-archive}
            id: "item-{item.pk}"
            inputs:
              ct-image: {archive_item: "{item.pk}"}
              clinical-info: {value: {"title": 1}}
        """)


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


def test_placeholders_of_a_glob_match() -> None:
    assert glob_placeholders("scans/p001/ct.nii.gz") == {
        "path": "scans/p001/ct.nii.gz", "name": "ct.nii.gz", "stem": "ct", "ext": ".nii.gz",
        "parent": "p001", "dir": "scans/p001"}
    assert glob_placeholders("p2/")["name"] == "p2"
    assert split_name("README") == ("README", "") and split_name(".gz") == (".gz", "")
    assert split_name("a.b.mha") == ("a.b", ".mha")


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


# --------------------------------------------------------------------------- settled cases


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


@given(st.text(alphabet="ab.gzGZ/ -", max_size=12))
def test_split_name_is_splitext_unless_compressed(name: str) -> None:
    import os.path

    stem, ext = split_name(name)
    assert stem + ext == name
    if not name.lower().endswith((".gz", ".bz2", ".xz", ".zst")):
        assert (stem, ext) == os.path.splitext(name)


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
