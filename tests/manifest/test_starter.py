"""The starting manifest (gcbatch.manifest.starter): one block per interface, each of which,
uncommented, is a manifest for exactly that interface; what to fill in is marked and
listed with its line."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
import yaml

from gcbatch.api.models import Algorithm, Interface, Socket
from gcbatch.manifest import schema as general_schema
from gcbatch.manifest.algorithm_schema import algorithm_schema
from gcbatch.manifest.starter import FILL_IN, live_interface, starter_manifest

CT = Socket("ct-image", title="CT Image", kind="Image", super_kind="Image")
MASK = Socket("mask", kind="Segmentation", super_kind="Image")
VOL = Socket("lung-volume", kind="Float", super_kind="Value")
AGE = Socket("age", kind="Integer", super_kind="Value", default_value=60)
INFO = Socket("info", kind="Anything", super_kind="Value")
REPORT = Socket("report", kind="PDF file", super_kind="File", relative_path="report.pdf")
DICOM = Socket("series", kind="DICOM Image Set", super_kind="Image")
ODD = Socket("odd", kind="Mystery", super_kind="Hologram")

ALGORITHMS = {
    "images": Algorithm(pk="p", api_url="u", slug="lung", title="Lung", interfaces=(
        Interface((CT, VOL, INFO)), Interface((CT,)), Interface((CT, MASK, REPORT)))),
    "values": Algorithm(pk="p", api_url="u", slug="risk", interfaces=(
        Interface((AGE, VOL)), Interface((AGE, VOL, REPORT)))),
    "dicom": Algorithm(pk="p", api_url="u", slug="dcm", interfaces=(
        Interface((DICOM, AGE)), Interface((ODD,)))),
}

_SAMPLE = {"integer": 3, "number": 2.5, "string": "s", "boolean": True}


def make(name: str) -> tuple[Algorithm, Any]:
    algorithm = ALGORITHMS[name]
    return algorithm, starter_manifest(algorithm, schema_ref="x.manifest.schema.json",
                                       manifest_name="study.yaml", server="https://h/api/v1/")


def only_block(text: str, number: int) -> str:
    """The text with block ``number`` live (its single-# lines uncommented) and the live
    one commented out, as a user swaps them."""
    out, block = [], 0
    for line in text.splitlines():
        if line.startswith("  ## Interface "):
            block = int(line.split()[2])
        if block == number and re.match(r"^  # (?!#)", line):
            line = "  " + line[4:]
        elif block != number and block and re.match(r"^  [-a-z ]", line) and line.strip():
            line = "  # " + line[2:]
        out.append(line)
    return "\n".join(out) + "\n"


def filled(document: Any, algorithm: Algorithm) -> Any:
    """``value: null`` replaced with a value of the socket's type (what the user writes)."""
    sockets = algorithm.input_sockets()
    schema = algorithm_schema(algorithm, general_schema())
    for case in document["cases"]:
        for slug, source in case["inputs"].items():
            if source == {"value": None}:
                value_schema = schema["definitions"][f"algorithmSocket.{slug}"]
                wanted = value_schema["properties"]["value"].get("type", "string")
                source["value"] = _SAMPLE.get(wanted, {})
                assert sockets[slug].super_kind == "Value"
    return document


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_block_uncommented_is_a_manifest_for_its_interface(name: str) -> None:
    algorithm, starter = make(name)
    schema = jsonschema.Draft7Validator(algorithm_schema(algorithm, general_schema()))
    general = jsonschema.Draft7Validator(general_schema())
    for number, interface in enumerate(algorithm.interfaces, 1):
        document = yaml.safe_load(only_block(starter.text, number))
        assert general.is_valid(document), number
        assert [sorted(c["inputs"]) for c in document["cases"]] == [
            sorted(interface.input_slugs)], number
        assert list(schema.iter_errors(filled(document, algorithm))) == [], number


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_the_live_block_is_the_one_the_text_shows(name: str) -> None:
    algorithm, starter = make(name)
    document = yaml.safe_load(starter.text)
    live = algorithm.interfaces[starter.live - 1]
    assert [sorted(c["inputs"]) for c in document["cases"]] == [sorted(live.input_slugs)]
    assert starter.text.startswith("# yaml-language-server: $schema=x.manifest.schema.json\n")
    assert document["algorithm"] == algorithm.slug and document["version"] == 1


def test_the_live_interface_has_an_image_and_the_fewest_inputs() -> None:
    assert live_interface(ALGORITHMS["images"]) == 1
    assert live_interface(ALGORITHMS["values"]) == 0  # no image anywhere: the fewest
    assert live_interface(ALGORITHMS["dicom"]) == 0


def test_fill_ins_point_at_their_lines() -> None:
    _, starter = make("images")
    lines = starter.text.splitlines()
    assert [f.socket for f in starter.fill_ins] == ["ct-image"]
    assert f'glob: "{FILL_IN}/*.mha"' in lines[starter.fill_ins[0].line - 1]
    assert not lines[starter.fill_ins[0].line - 1].lstrip().startswith("#")


def test_values_without_a_default_are_null_and_listed() -> None:
    _, starter = make("values")
    lines = starter.text.splitlines()
    assert [f.socket for f in starter.fill_ins] == ["lung-volume"]  # age has a default
    assert "lung-volume: {value: null}" in lines[starter.fill_ins[0].line - 1]
    assert "age: {value: 60}" in starter.text
    assert "  - id: case-001" in lines  # values only: one explicit case


def test_a_dicom_series_is_one_case_per_folder() -> None:
    _, starter = make("dicom")
    assert f'foreach: {{glob: "{FILL_IN}/*/"}}' in starter.text
    assert 'series: {files: "{path}*.dcm"}' in starter.text


def test_a_server_given_is_written() -> None:
    algorithm = ALGORITHMS["images"]
    text = starter_manifest(algorithm, schema_ref="s", manifest_name="m.yaml",
                            server="https://h/api/v1/", server_line="https://h/api/v1/").text
    assert yaml.safe_load(text)["server"] == "https://h/api/v1/"


def test_a_default_value_is_written_as_it_is() -> None:
    tricky = Socket("note", kind="String", super_kind="Value", default_value="a   # b: {c}")
    algorithm = Algorithm(pk="p", api_url="u", slug="n", interfaces=(Interface((tricky, AGE)),))
    text = starter_manifest(algorithm, schema_ref="s", manifest_name="m.yaml", server="h").text
    inputs = yaml.safe_load(text)["cases"][0]["inputs"]
    assert inputs == {"note": {"value": "a   # b: {c}"}, "age": {"value": 60}}
