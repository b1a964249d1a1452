"""The per-algorithm manifest schema (gcbatch.manifest.algorithm_schema): a mistyped socket
is an error, each socket takes only its kind's sources and value type, a case stays within
one interface, and it refines the general schema (by construction, and on examples)."""

from __future__ import annotations

import copy
import functools
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcbatch.api.models import Algorithm, Interface, Socket
from gcbatch.manifest import schema as general_schema
from gcbatch.manifest.algorithm_schema import algorithm_schema, schema_file_name, value_type

CT = Socket("ct-image", title="CT Image", kind="Image", super_kind="Image")
VOL = Socket("lung-volume", title="Lung Volume", kind="Float", super_kind="Value")
AGE = Socket("age", kind="Integer", super_kind="Value", default_value=60)
REPORT = Socket("lab-report", kind="Anything", super_kind="File",
                relative_path="lab-report.json")
ODD = Socket("odd", kind="Mystery", super_kind="Hologram")
ALG = Algorithm(pk="p", api_url="u", slug="lung", interfaces=(
    Interface((CT,)), Interface((CT, VOL)), Interface((AGE, REPORT)), Interface((ODD,))))


@functools.cache
def validator(algorithm: Algorithm = ALG) -> jsonschema.Draft7Validator:
    document = algorithm_schema(algorithm, general_schema())
    jsonschema.Draft7Validator.check_schema(document)
    return jsonschema.Draft7Validator(document)


GENERAL = jsonschema.Draft7Validator(general_schema())


def manifest(inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"version": 1, "algorithm": "lung", "cases": [{"id": "c1", "inputs": inputs}],
            **extra}


def errors(document: dict[str, Any]) -> list[str]:
    return sorted(e.message for e in validator().iter_errors(document))


def test_a_right_manifest_is_valid() -> None:
    assert errors(manifest({"ct-image": {"file": "a.mha"}, "lung-volume": {"value": 2.5}})) == []
    assert errors(manifest({"age": {"json": "a.json"}, "lab-report": {"file": "r.json"}})) == []


def test_a_mistyped_socket_is_an_error() -> None:
    assert errors(manifest({"ct-imgae": {"file": "a.mha"}})) == [
        "Additional properties are not allowed ('ct-imgae' was unexpected)"]
    assert errors({**manifest({"ct-image": {"file": "a.mha"}}),
                   "defaults": {"lung-volum": {"value": 1}}}) == [
        "Additional properties are not allowed ('lung-volum' was unexpected)"]


def test_the_algorithm_is_this_one() -> None:
    assert errors({**manifest({"ct-image": {"file": "a"}}), "algorithm": "other"}) == [
        "'lung' was expected"]


@pytest.mark.parametrize(("socket", "source", "ok"), [
    ("ct-image", {"file": "a.mha"}, True),
    ("ct-image", {"files": "dcm/*.dcm"}, True),
    ("ct-image", {"image": "https://x/api/v1/cases/images/1/"}, True),
    ("ct-image", {"archive_item": "{item.pk}", "socket": "ct"}, True),
    ("ct-image", {"value": 1}, False),
    ("ct-image", {"json": "a.json"}, False),
    ("lung-volume", {"value": 1.5}, True),
    ("lung-volume", {"value": 2}, True),
    ("lung-volume", {"value": "2"}, False),
    ("lung-volume", {"file": "a.json"}, False),
    ("age", {"value": 3}, True),
    ("age", {"value": 3.5}, False),
    ("age", {"value": True}, False),
    ("lab-report", {"file": "r.json"}, True),
    ("lab-report", {"files": "r/*.json"}, False),
    ("lab-report", {"value": {}}, False),
    ("odd", {"value": 1}, True),  # an unknown super kind: the general rules only
    ("odd", {"files": "x/*"}, True),
])
def test_sources_and_value_types_per_socket(socket: str, source: dict[str, Any],
                                            ok: bool) -> None:
    document = {"version": 1, "algorithm": "lung", "defaults": {socket: source},
                "cases": [{"id": "c1", "inputs": {"ct-image": {"file": "a"}}}]}
    assert (errors(document) == []) is ok


def test_a_case_stays_within_one_interface() -> None:
    assert errors(manifest({"ct-image": {"file": "a"}, "age": {"value": 3}})) == [
        "{'ct-image': {'file': 'a'}, 'age': {'value': 3}} is not valid under any of the "
        "given schemas"]
    # null drops a default: never counted against an interface
    assert errors(manifest({"ct-image": {"file": "a"}, "age": None})) == []
    # defaults may span interfaces (cases drop what they do not use)
    assert errors({**manifest({"ct-image": {"file": "a"}, "age": None}),
                   "defaults": {"age": {"value": 1}, "lung-volume": {"value": 1.0}}}) == []


def test_generated_cases_are_checked_too() -> None:
    document = {"version": 1, "algorithm": "lung", "cases": [
        {"foreach": {"glob": "scans/*.mha"}, "id": "c-{stem}",
         "inputs": {"ct-imgae": {"file": "{path}"}}}]}
    assert errors(document) == [
        "Additional properties are not allowed ('ct-imgae' was unexpected)"]


def test_it_is_the_general_schema_plus_one_allof_entry() -> None:
    general = general_schema()
    document = algorithm_schema(ALG, general)
    stripped = copy.deepcopy(document)
    refinement = stripped.pop("allOf")
    assert len(refinement) == 1 and set(refinement[0]) == {"properties"}
    added = {k for k in stripped["definitions"] if k not in general["definitions"]}
    assert all(k.startswith("algorithm") for k in added)
    for key in added:
        del stripped["definitions"][key]
    for key in ("title", "$comment"):
        stripped.pop(key)
    expected = {k: v for k, v in general.items() if k not in ("$id", "title")}
    assert stripped == expected


def test_value_types_follow_the_platforms_kinds() -> None:
    def of(kind: str) -> dict[str, Any]:
        return value_type(Socket("s", kind=kind, super_kind="Value"))[0]

    assert of("Integer") == {"type": "integer"} and of("Float") == {"type": "number"}
    assert of("Bool") == {"type": "boolean"} and of("String") == {"type": "string"}
    assert of("Multiple choice") == {"type": "array", "items": {"type": "string"}}
    assert of("2D bounding box") == {"type": "object"} and of("Chart") == {"type": "object"}
    assert of("Anything") == {} and of("Something new") == {}


def test_file_name_keeps_it_recognisable() -> None:
    assert schema_file_name("lung") == "lung.manifest.schema.json"


def test_no_interfaces_no_schema() -> None:
    with pytest.raises(ValueError, match="no interfaces"):
        algorithm_schema(Algorithm(pk="p", api_url="u", slug="x"), general_schema())


# -- refinement on examples: whatever the per-algorithm schema accepts, the general does ----

_SLUGS = st.sampled_from(["ct-image", "lung-volume", "age", "lab-report", "odd", "x y", ""])
_SOURCES = st.one_of(
    st.none(),
    st.fixed_dictionaries({"value": st.one_of(st.integers(), st.floats(allow_nan=False),
                                              st.text(max_size=3), st.booleans())}),
    st.fixed_dictionaries({"file": st.text(max_size=4)}),
    st.fixed_dictionaries({"files": st.one_of(st.text(max_size=4),
                                              st.lists(st.text(max_size=3), max_size=2))}),
    st.fixed_dictionaries({"json": st.text(max_size=4)}),
    st.fixed_dictionaries({"archive_item": st.text(max_size=3)},
                          optional={"socket": st.sampled_from(["ct", "a b"])}),
    st.fixed_dictionaries({"image": st.sampled_from(["https://x/", "ftp://x"])}),
    st.fixed_dictionaries({"file": st.just("a"), "json": st.just("b")}),
)
_INPUTS = st.dictionaries(_SLUGS, _SOURCES, max_size=3)
_DOCS = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 2]), "algorithm": st.sampled_from(["lung", "other"]),
     "cases": st.lists(st.fixed_dictionaries(
         {"id": st.sampled_from(["c1", "c 2", "{stem}"])},
         optional={"inputs": _INPUTS,
                   "foreach": st.sampled_from([{"glob": "*.mha"}, {"archive": "a"}, {}])}),
         max_size=2)},
    optional={"defaults": _INPUTS, "server": st.sampled_from(["https://x/api/v1/", "nope"])})


@settings(max_examples=300, deadline=None)
@given(_DOCS)
def test_valid_here_means_valid_in_general(document: dict[str, Any]) -> None:
    if validator().is_valid(document):
        assert GENERAL.is_valid(document)


def test_the_examples_above_include_valid_ones() -> None:
    # the property above must not hold vacuously: documents of that shape can be valid
    assert validator().is_valid(manifest({"ct-image": {"file": "a"}}))
