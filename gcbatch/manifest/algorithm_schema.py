"""One algorithm's manifest schema: gcbatch's schema, narrowed to that algorithm's sockets.

``gcbatch schema --algorithm SLUG`` writes it; ``gcbatch init`` writes it beside the
manifest it makes and points the manifest's modeline at it, so an editor (through
yaml-language-server) completes socket slugs and underlines a mistyped one as you type.

It is a **refinement by construction**: the document is gcbatch's general schema
(``schemas/manifest.schema.json``) unchanged, every keyword and definition kept, plus one
``allOf`` entry at the root whose definitions have names of their own. A manifest valid
under it is therefore valid under the general schema (tests check both the construction
and examples). The entry says:

- ``algorithm`` is this algorithm's slug;
- ``defaults`` and every case's ``inputs`` name only the algorithm's input sockets
  (``additionalProperties: false``: a mistyped slug is an error);
- each socket takes only the sources its super kind accepts (Value: ``value``, ``json``,
  ``archive_item``; File: ``file``, ``archive_item``; Image: ``file``, ``files``,
  ``image``, ``archive_item``) and a literal ``value`` has the JSON type of the socket's
  kind where the kind fixes one (Integer, Float, Bool, String, Choice, the annotation
  kinds, ...). A socket's own JSON schema on the server is not exposed by the API, so the
  server remains the final judge of values;
- a case's non-null inputs fit within one interface (the server wants a case's sockets,
  defaults included, to equal one interface's; defaults are outside a case's reach here,
  so only the necessary part is checked: ``gcbatch plan`` checks the rest).

Pure: an :class:`~gcbatch.api.models.Algorithm` and the general schema in, a dict out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from gcbatch.api.models import Algorithm, Interface, Socket

__all__ = [
    "SOURCES_BY_SUPER_KIND",
    "algorithm_schema",
    "schema_file_name",
    "socket_summary",
    "value_type",
]

#: which source kinds a socket of each super kind takes (what pre-flight checks, too)
SOURCES_BY_SUPER_KIND: Mapping[str, tuple[str, ...]] = {
    "Value": ("value", "json", "archive_item"),
    "File": ("file", "archive_item"),
    "Image": ("file", "files", "image", "archive_item"),
}

#: the platform's annotation and registration kinds: each value is a JSON object
_OBJECT_KINDS = frozenset({
    "2d bounding box", "multiple 2d bounding boxes", "distance measurement",
    "multiple distance measurements", "point", "multiple points", "polygon",
    "multiple polygons", "line", "multiple lines", "angle", "multiple angles", "ellipse",
    "multiple ellipses", "three-point angle", "multiple three-point angles",
    "affine transform registration", "chart",
})

#: kind label (lower case) → (the JSON Schema of its values, in words)
_SIMPLE_KINDS: Mapping[str, tuple[dict[str, Any], str]] = {
    "string": ({"type": "string"}, "a string"),
    "integer": ({"type": "integer"}, "an integer"),
    "float": ({"type": "number"}, "a number"),
    "bool": ({"type": "boolean"}, "true or false"),
    "choice": ({"type": "string"}, "a string (one of the choices)"),
    "multiple choice": ({"type": "array", "items": {"type": "string"}},
                        "a list of strings (choices)"),
    "anything": ({}, "any JSON value"),
}

_SOURCE_WORDS = {
    "value": "value (a literal)",
    "json": "json (a JSON file holding the value)",
    "file": "file (one file, uploaded)",
    "files": "files (a glob: all matches make one image)",
    "image": "image (an existing image's API URL)",
    "archive_item": "archive_item (an archive item's value)",
}


def value_type(socket: Socket) -> tuple[dict[str, Any], str]:
    """The JSON Schema a Value socket's values have by its kind, and that in words
    (``({}, "any JSON value")`` when the kind fixes nothing gcbatch knows of)."""
    kind = socket.kind.strip().lower()
    if kind in _SIMPLE_KINDS:
        schema, words = _SIMPLE_KINDS[kind]
        return dict(schema), words
    if kind in _OBJECT_KINDS:
        return {"type": "object"}, f"a JSON object (a {socket.kind})"
    return {}, "any JSON value"


def socket_summary(socket: Socket) -> str:
    """``"CT Image: Image, kind Image; sources: file, files, image, archive_item"`` —
    what a socket is and takes, in one line."""
    sources = SOURCES_BY_SUPER_KIND.get(socket.super_kind)
    kind = f"kind {socket.kind}" if socket.kind else "kind unknown"
    if socket.super_kind == "Value":
        kind += f" ({value_type(socket)[1]})"
    what = f"{socket.super_kind or 'unknown super kind'}, {kind}"
    title = f"{socket.title}: " if socket.title else ""
    taken = ", ".join(sources) if sources else "any (gcbatch cannot tell which)"
    return f"{title}{what}; sources: {taken}"


def schema_file_name(slug: str) -> str:
    """``lung-nodule-detector.manifest.schema.json``: the name ``init`` and ``schema`` use.

    Ending in ``manifest.schema.json`` keeps a manifest that points at it recognisable as
    a gcbatch manifest (``gcbatch validate --manifests-only``, the pre-commit hook)."""
    return f"{slug}.manifest.schema.json"


def _socket_source(socket: Socket) -> dict[str, Any]:
    """One socket's input: the general ``source`` narrowed to the kinds it accepts."""
    sources = SOURCES_BY_SUPER_KIND.get(socket.super_kind)
    narrowed: dict[str, Any] = {
        "title": socket.title or socket.slug,
        "description": f"{socket.slug} — {socket_summary(socket)}. null drops a default.",
        "allOf": [{"$ref": "#/definitions/source"}],
    }
    if sources is None:  # a super kind gcbatch does not know: the general rules only
        return narrowed
    properties: dict[str, Any] = {}
    for kind in sources:
        properties[kind] = {"description": _SOURCE_WORDS[kind]}
        if kind == "archive_item":
            properties["socket"] = {"description": "with archive_item: the item's socket "
                                                   f"(default: {socket.slug})"}
    if socket.super_kind == "Value":
        schema, words = value_type(socket)
        properties["value"] = {**schema, "description": f"{socket.kind or 'a'} value: {words}"}
        if socket.default_value is not None:
            properties["value"]["examples"] = [socket.default_value]
    narrowed["properties"] = properties
    narrowed["additionalProperties"] = False
    return narrowed


def _interface_title(number: int, interface: Interface) -> str:
    return f"interface {number}: " + ", ".join(sorted(s.slug for s in interface.inputs))


def _case_inputs(interfaces: Sequence[Interface], every: Sequence[str]) -> dict[str, Any]:
    """A case's inputs: known sockets (flat check) and within one interface."""
    alternatives = []
    for number, interface in enumerate(interfaces, 1):
        own = interface.input_slugs
        alternatives.append({
            "title": _interface_title(number, interface),
            "properties": {slug: {"type": "null"} for slug in every if slug not in own},
        })
    return {
        "title": "Inputs of a case",
        "description": "Socket slug → source. A case's sockets (with the defaults) must be "
                       "exactly one interface's: " + "; ".join(
                           _interface_title(n, i) for n, i in enumerate(interfaces, 1)),
        "allOf": [{"$ref": "#/definitions/algorithmInputs"}],
        "anyOf": alternatives,
    }


def algorithm_schema(algorithm: Algorithm, general: Mapping[str, Any], *,
                     server: str = "") -> dict[str, Any]:
    """The manifest schema for ``algorithm`` (see the module docstring); ``general`` is
    gcbatch's manifest schema, which it refines. The algorithm has at least one interface
    (an algorithm without one takes no job at all: the caller says so instead)."""
    if not algorithm.interfaces:
        raise ValueError(f"algorithm {algorithm.slug!r} has no interfaces")
    document = copy.deepcopy(dict(general))
    document.pop("$id", None)  # the general schema's address is not this document's
    where = f" on {server}" if server else ""
    document["title"] = f"gcbatch manifest for {algorithm.slug}"
    document["$comment"] = (
        f"Made by `gcbatch schema --algorithm {algorithm.slug}` from the algorithm's "
        f"interfaces{where}: gcbatch's manifest schema (unchanged) narrowed by the last "
        "entry of allOf. Make it again when the algorithm's interfaces change.")
    sockets = algorithm.input_sockets()
    every = sorted(sockets)
    definitions = document.setdefault("definitions", {})
    for slug in every:
        definitions[f"algorithmSocket.{slug}"] = _socket_source(sockets[slug])
    definitions["algorithmInputs"] = {
        "title": f"Inputs of {algorithm.slug}",
        "description": "Socket slug → source; the algorithm's input sockets: "
                       + ", ".join(every),
        "type": "object",
        "properties": {slug: {"$ref": f"#/definitions/algorithmSocket.{slug}"}
                       for slug in every},
        "additionalProperties": False,
    }
    definitions["algorithmCaseInputs"] = _case_inputs(algorithm.interfaces, every)
    title = f" ({algorithm.title})" if algorithm.title else ""
    refinement = {
        "properties": {
            "algorithm": {"const": algorithm.slug,
                          "description": f"This schema is for {algorithm.slug}{title}."},
            "defaults": {"$ref": "#/definitions/algorithmInputs"},
            "cases": {"items": {"properties": {
                "inputs": {"$ref": "#/definitions/algorithmCaseInputs"}}}},
        },
    }
    document["allOf"] = [*document.get("allOf", []), refinement]
    return document
