"""The schema layer: the schema shipped in the package (and its copy at the top of the
repository, for editors), well-formed and documented."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from gcbatch.manifest import schema

ROOT = Path(__file__).resolve().parents[2]


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


def test_schema_is_declared_as_package_data() -> None:
    """``pip install .`` ships the schema: the package-data globs must match it."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["gcbatch"]
    assert any(fnmatch.fnmatch("schemas/manifest.schema.json", g) for g in globs)
