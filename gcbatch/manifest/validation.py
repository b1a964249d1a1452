"""The schema layer: ``schemas/manifest.schema.json`` (draft-07), every error in words.

jsonschema's own messages ("'x' is not valid under any of the given schemas") say little
to someone writing a manifest, so :func:`_explain` rewrites each error into one short
sentence placed (``file:line:col``) on the node or mapping key it is about, with a "did you
mean" for a misspelt key.

Speed: validating a 100,000-case document in one go costs ~1 ms per case. The document is
validated without its cases' items, then each case on its own with the same subschema;
most cases are plainly valid (:func:`_plainly_valid_case`, checked with the schema's own
patterns) and skip jsonschema altogether. The errors and their order stay the ones a
whole-document validation gives (``cases`` is the schema's last property, ``items`` its
last keyword).
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema

from gcbatch.errors import Finding
from gcbatch.manifest.naming import JsonPath, human, json_type, pointer
from gcbatch.manifest.yaml_reader import Located


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The manifest JSON Schema shipped in the package."""
    text = resources.files("gcbatch").joinpath("schemas/manifest.schema.json").read_text(
        encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


_TYPE_WORDS = {"string": "a string", "object": "a mapping", "array": "a list",
               "integer": "an integer", "number": "a number", "boolean": "true or false",
               "null": "null"}


@lru_cache(maxsize=1)
def _split_validators() -> tuple[jsonschema.Draft7Validator, jsonschema.Draft7Validator]:
    """The schema as two validators: the document without its cases' items, and one case.

    Validating a 100,000-case document in one go costs ~1 ms per case; most cases are
    plainly valid (see :func:`_plainly_valid_case`) and skip jsonschema altogether, and
    the others are validated one by one with the same subschema the whole document uses,
    so the errors (and their order: ``cases`` is the schema's last property and ``items``
    its last keyword) are the ones a whole-document validation gives.
    """
    full = schema()
    root = copy.deepcopy(full)
    del root["properties"]["cases"]["items"]
    item = {"$ref": full["properties"]["cases"]["items"]["$ref"],
            "definitions": full["definitions"]}
    return jsonschema.Draft7Validator(root), jsonschema.Draft7Validator(item)


@lru_cache(maxsize=1)
def _fast_patterns() -> tuple[Any, Any, Any]:
    """The schema's own patterns (case id, socket slug, image URL), compiled; searched with
    ``re.search`` as jsonschema does, so the fast check agrees with the schema."""
    d = schema()["definitions"]
    return (re.compile(d["caseId"]["pattern"]).search,
            re.compile(d["inputs"]["propertyNames"]["pattern"]).search,
            re.compile(d["source"]["properties"]["image"]["pattern"]).search)


_STRING_SOURCES = frozenset({"json", "file", "archive_item"})


def _plainly_valid_case(case: Any) -> bool:
    """True only for an explicit case the schema certainly accepts: ``id`` (a valid case
    id), optional ``inputs`` whose sources are null or ONE of value / json / file /
    archive_item / image with a plainly valid argument. False means "ask jsonschema", never
    "invalid"; it must never be True for a case the schema refuses."""
    if type(case) is not dict or "id" not in case:
        return False
    n = len(case)
    if n > 2 or (n == 2 and "inputs" not in case):
        return False
    case_id_ok, slug_ok, image_ok = _fast_patterns()
    case_id = case["id"]
    if type(case_id) is not str or not case_id_ok(case_id):
        return False
    inputs = case.get("inputs", {})
    if type(inputs) is not dict:
        return False
    for socket, source in inputs.items():
        if type(socket) is not str or not slug_ok(socket):
            return False
        if source is None:
            continue
        if type(source) is not dict or len(source) != 1:
            return False
        for kind, arg in source.items():
            if kind == "value":
                continue
            if kind in _STRING_SOURCES:
                if type(arg) is not str or not arg:
                    return False
            elif kind == "image":
                if type(arg) is not str or not image_ok(arg):
                    return False
            else:
                return False
    return True


def _schema_errors(data: Any) -> Iterator[tuple[JsonPath, jsonschema.ValidationError]]:
    """Every schema error with its absolute path, in whole-document order."""
    root, item = _split_validators()
    for error in root.iter_errors(data):
        yield tuple(error.absolute_path), error
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list):
        return
    for i, case in enumerate(cases):
        if _plainly_valid_case(case):
            continue
        for error in item.iter_errors(case):
            yield ("cases", i, *error.absolute_path), error


def schema_findings(doc: Located, display: str) -> list[Finding]:
    """Every schema error of ``doc`` as findings, except about nodes the YAML layer
    already refused (they are ``None`` now, and already have their finding)."""
    errors = [(path, e) for path, e in _schema_errors(doc.data) if path not in doc.refused]
    # a misspelt source key ({flie: x}) also leaves "no source": say only the first thing
    unknown_at = {path for path, e in errors if e.validator == "additionalProperties"}
    findings: list[Finding] = []
    for path, error in errors:
        if error.validator == "oneOf" and path in unknown_at:
            continue
        findings.extend(_explain(error, path, doc, display))
    return findings


def _explain(error: jsonschema.ValidationError, path: JsonPath, doc: Located,
             display: str) -> Iterator[Finding]:
    """One schema error in words, at the node (or key) it is about."""
    where = human(path)
    prefix = f"{where}: " if where else ""
    instance: Any = error.instance
    validator = error.validator
    expected: Any = error.validator_value
    sch = error.schema if isinstance(error.schema, dict) else {}
    line, col = doc.where(path)

    if validator == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(sch.get("properties", {}))
        for key in sorted(k for k in instance if k not in allowed):
            kline, kcol = doc.where((*path, key), key=True)
            hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            tip = f"did you mean {hint[0]!r}?" if hint else "allowed: " + ", ".join(allowed)
            yield Finding(display, f"{prefix}unknown key {key!r} ({tip})", kline, kcol,
                          pointer((*path, key)))
        return
    if validator == "required":
        missing = [k for k in expected if k not in instance]
        what = ", ".join(repr(k) for k in missing)
        yield Finding(display, f"{prefix}missing required key {what}", line, col, pointer(path))
        return
    if validator == "oneOf" and isinstance(instance, dict):
        options = [r for branch in expected for r in branch.get("required", [])]
        given = [k for k in options if k in instance]
        if not given:
            msg = "no source given; give one of " if "value" in options else "give one of "
            yield Finding(display, f"{prefix}{msg}{', '.join(options)}", line, col,
                          pointer(path))
        else:
            kline, kcol = doc.where((*path, given[1]), key=True)
            yield Finding(display, f"{prefix}give only one of {', '.join(options)} "
                          f"(got {' and '.join(given)})", kline, kcol, pointer(path))
        return
    if validator == "anyOf" and "dependencies" in error.schema_path and \
            isinstance(instance, dict):
        # a key that needs one of several others (image_name: file or files)
        key = str(list(error.schema_path)[-2])
        options = [r for b in expected for r in b.get("required", ())]
        kline, kcol = doc.where((*path, key), key=True)
        yield Finding(display, f"{prefix}{key!r} is only used together with "
                      f"{' or '.join(repr(o) for o in options)}", kline, kcol,
                      pointer((*path, key)))
        return
    if validator == "dependencies" and isinstance(instance, dict):
        for key, needs in sorted(expected.items()):
            if key in instance:
                if isinstance(needs, dict):  # {"anyOf": [{"required": [k]}, ...]}: one of
                    options = [r for b in needs.get("anyOf", ()) for r in b.get("required", ())]
                    lacking = [] if any(o in instance for o in options) else options
                    joined = " or ".join(repr(n) for n in lacking)
                else:
                    lacking = [n for n in needs if n not in instance]
                    joined = ", ".join(repr(n) for n in lacking)
                if lacking:
                    kline, kcol = doc.where((*path, key), key=True)
                    yield Finding(display, f"{prefix}{key!r} is only used together with "
                                  f"{joined}", kline, kcol, pointer((*path, key)))
        return
    if validator == "type":
        types = expected
        types = [types] if isinstance(types, str) else list(types)
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        text = f"expected {words}, got {json_type(instance)}"
    elif validator == "pattern" and "propertyNames" in error.schema_path:
        # a key failed: jsonschema reports it at the mapping; point at the key itself
        kline, kcol = doc.where((*path, instance), key=True)
        yield Finding(display, f"{prefix}{instance!r}: {sch.get('patternErrorMessage')}",
                      kline, kcol, pointer((*path, instance)))
        return
    elif validator == "pattern":
        text = sch.get("patternErrorMessage") or f"{instance!r} does not match {expected}"
        text = f"{instance!r}: {text}" if isinstance(instance, str) else text
    elif validator == "const":
        text = f"must be {json.dumps(expected)}, not {json.dumps(instance)}"
    elif validator in ("minItems", "minLength", "minProperties"):
        text = "must not be empty"
    elif validator == "propertyNames":
        # the failing name is a key of ``instance``: point at it
        for key in instance if isinstance(instance, dict) else ():
            if not re.fullmatch(r"[-a-zA-Z0-9_]+", key):
                kline, kcol = doc.where((*path, key), key=True)
                yield Finding(display, f"{prefix}{key!r} is not a socket slug (letters, "
                              "digits, '-' and '_')", kline, kcol, pointer((*path, key)))
        return
    else:
        text = error.message
    yield Finding(display, f"{prefix}{text}", line, col, pointer(path))
