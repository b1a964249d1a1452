"""Manifest loading: safe YAML with locations, schema shipped in the package, the Manifest
values, templates, and that everything wrong is reported at once."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest

from gcbatch.errors import ManifestError
from gcbatch.manifest import (
    TemplateError,
    load_manifest,
    parse_manifest,
    read_yaml,
    render_template,
    schema,
    template_names,
)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_schema_copies_are_identical_and_valid_draft7() -> None:
    top = json.loads((ROOT / "schemas/manifest.schema.json").read_text())
    assert top == json.loads((ROOT / "gcbatch/schemas/manifest.schema.json").read_text())
    assert (ROOT / "schemas/manifest.schema.json").read_bytes() == (
        ROOT / "gcbatch/schemas/manifest.schema.json").read_bytes()
    assert schema() == top  # what importlib.resources loads
    jsonschema.Draft7Validator.check_schema(top)
    assert top["$id"] and top["$schema"] == "http://json-schema.org/draft-07/schema#"


def _walk_properties(node: object, path: str = "") -> list[str]:
    missing = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            described = "title" in sub and "description" in sub
            if not (isinstance(sub, dict) and (described or "$ref" in sub)):
                missing.append(f"{path}/{name}")
        for key, sub in node.items():
            missing += _walk_properties(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            missing += _walk_properties(sub, f"{path}/{i}")
    return missing


def test_every_schema_property_has_title_and_description() -> None:
    assert _walk_properties(schema()) == []


def test_examples_in_schema_validate_against_their_definitions() -> None:
    s = schema()
    for name in ("case", "source", "foreach", "inputs"):
        sub = {**s["definitions"][name], "definitions": s["definitions"]}
        for example in sub.get("examples", []):
            jsonschema.Draft7Validator(sub).validate(example)


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


def test_yaml_locations_for_keys_and_values() -> None:
    doc, findings = read_yaml("a:\n  b: [1, {c: 2}]\n", "x")
    assert doc is not None and not findings
    assert doc.where(("a", "b", 1, "c")) == (2, 14)
    assert doc.where(("a", "b", 1, "c"), key=True) == (2, 11)
    assert doc.where(("a", "missing", 3)) == (2, 3)  # nearest known ancestor


def test_recursive_alias_is_a_finding() -> None:
    doc, findings = read_yaml("a: &x [1, *x]\n", "x")
    assert doc is not None
    assert [f.message for f in findings] == ["a[1]: a YAML alias refers to itself"]


def test_templates() -> None:
    assert template_names("scan-{stem}{{x}}-{ item.pk }") == ["stem", "item.pk"]
    assert render_template("{{a}}-{stem}", {"stem": "p[1]"}) == "{a}-p[1]"
    assert render_template("{stem}", {"stem": "p[1]"}, lambda v: v.upper()) == "P[1]"
    for bad in ("{", "a}", "{a{b}}"):
        with pytest.raises(TemplateError):
            template_names(bad)


def test_missing_file_is_a_finding(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        load_manifest(tmp_path / "nope.yaml")


def test_schema_is_declared_as_package_data() -> None:
    """``pip install .`` ships the schema: the package-data globs must match it."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["gcbatch"]
    assert any(fnmatch.fnmatch("schemas/manifest.schema.json", g) for g in globs)
