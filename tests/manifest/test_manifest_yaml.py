"""The YAML layer: node and key locations, refused aliases."""

from __future__ import annotations

from gcbatch.manifest import read_yaml


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
