"""Reading a manifest file into values: defaults, anchors, every finding at once, the good
parts kept."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gcbatch.errors import ManifestError
from gcbatch.manifest import load_manifest, parse_manifest


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_manifest_values(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        algorithm: lung-nodule-detector
        server: https://grand-challenge.org/api/v1/
        defaults:
          lung-volume: {value: 42}
        cases:
          - id: p1
            inputs:
              ct-image: {files: ["a/*.dcm", "b/*.dcm"]}
              clinical-info: {value: {date: 2024-01-02, flag: no}}
              lung-volume: null
          - foreach: {archive: lung-archive}
            id: "item-{item.pk}"
            inputs:
              ct-image: {archive_item: "{item.pk}"}
        """)
    m = load_manifest(path)
    assert (m.algorithm, m.server, m.base_dir) == (
        "lung-nodule-detector", "https://grand-challenge.org/api/v1/", tmp_path)
    p1, gen = m.cases
    assert [s.socket for s in p1.inputs] == ["clinical-info", "ct-image", "lung-volume"]
    assert p1.inputs[0].value == {"date": "2024-01-02", "flag": False}  # dates stay strings
    assert p1.inputs[1].args == ("a/*.dcm", "b/*.dcm") and p1.inputs[1].line == 9
    assert [s.socket for s in p1.effective_inputs(m.defaults)] == ["clinical-info", "ct-image"]
    assert gen.foreach is not None and gen.foreach.kind == "archive"
    assert gen.inputs[0].item_socket == "ct-image"  # defaults to the input's socket
    assert [s.socket for s in gen.effective_inputs(m.defaults)] == ["ct-image", "lung-volume"]


def test_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        algorithm: a
        cases:
          - id: p1
            inputs: &common
              lung-volume: {value: 1}
          - id: p2
            inputs:
              <<: *common
              age: {value: 3}
        """)
    m = load_manifest(path)
    assert [s.socket for s in m.cases[1].inputs] == ["age", "lung-volume"]


def test_all_findings_at_once_sorted_by_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 3
        algorithm: a
        cases:
          - id: "bad id"
          - id: ok
            inputs: {x: {value: 1, json: y.json}}
          - foreach: {glob: "*.mha"}
            id: "{nope}"
            inputs: {x: {file: "{path}"}}
        """)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    lines = [(f.line, f.message.split(":")[0]) for f in info.value.findings]
    assert lines == [(1, "version"), (4, "cases[0].id"), (6, "cases[1].inputs.x"),
                     (8, "cases[2].id")]
    assert info.value.exit_code == 2


def test_partial_manifest_keeps_good_cases(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        algorithm: a
        cases:
          - id: good
            inputs: {x: {value: 1}}
          - id: bad
            inputs: {x: {value: 1, file: z}}
        """)
    m, findings = parse_manifest(path)
    assert m is not None and [c.id for c in m.cases] == ["good"] and len(findings) == 1


def test_missing_file_is_a_finding(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        load_manifest(tmp_path / "nope.yaml")


def test_each_parse_reads_the_file_again(tmp_path: Path) -> None:
    """No hidden cache: a command that needs the manifest twice loads it once itself."""
    path = write(tmp_path, """\
        version: 1
        algorithm: a
        cases: [{id: p1, inputs: {x: {value: 1}}}]
        """)
    first = load_manifest(path)
    again = load_manifest(path)
    assert again == first and again is not first
    path.write_text(path.read_text().replace("algorithm: a", "algorithm: b"))
    assert load_manifest(path).algorithm == "b"


def test_vocabularies_are_the_plain_strings(tmp_path: Path) -> None:
    from gcbatch.manifest import SOURCE_KINDS

    assert SOURCE_KINDS == ("value", "json", "file", "files", "archive_item", "image")
    path = write(tmp_path, """\
        version: 1
        algorithm: a
        cases:
          - foreach: {glob: "*.mha"}
            id: "{stem}"
            inputs: {x: {file: "{path}"}, y: null}
        """)
    case = load_manifest(path).cases[0]
    assert case.foreach is not None and type(case.foreach.kind) is str
    assert [type(s.kind) for s in case.inputs] == [str, str]
    assert [s.kind for s in case.inputs] == ["file", "none"]
