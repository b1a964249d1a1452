"""Reading a manifest: safe YAML with node locations, JSON-Schema validation, semantic checks.

Every problem is collected and reported at once as a :class:`gcbatch.errors.Finding` with
``file:line:col`` (1-based) pointing at the offending YAML node (or its key). Three layers:

1. YAML: parsed with PyYAML's *composer* only (nodes with marks, nothing constructed), then
   turned into plain data by :func:`_Builder.build`, which allows only the plain YAML tags
   (str, int, float, bool, null, map, seq): any ``!!python/...`` or custom tag is a finding,
   never executed. It also refuses duplicate keys (PyYAML silently keeps the last one, which
   would hide "two sources for one socket"), non-string keys and NaN/infinity, and caps
   alias expansion ("billion laughs"). Timestamps stay strings (JSON has no dates).
2. Schema: ``schemas/manifest.schema.json`` (draft-07, shipped in the package) with every
   error rewritten into one short sentence and placed on the node it is about.
3. Semantics a schema cannot express: placeholders (known names, only in generators, a
   generator id must have one), duplicate explicit ids, a case left with no inputs.
   Checks that need the file system (globs, JSON files, ids after expansion) belong to
   :func:`gcbatch.sources.expand`.

:func:`parse_manifest` returns what could be understood plus the findings (``validate`` uses
it to go on and expand the good parts); :func:`load_manifest` raises
:class:`~gcbatch.errors.ManifestError` unless there are none.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from gcbatch.errors import Finding, ManifestError
from gcbatch.perf import gc_paused

SOURCE_KINDS = ("value", "json", "file", "files", "archive_item", "image")
GLOB_PLACEHOLDERS = ("path", "name", "stem", "ext", "parent", "dir")
ARCHIVE_PLACEHOLDERS = ("item.pk", "item.title")
CASE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_NODES = 5_000_000  # a backstop; real manifests use generators, not millions of nodes
#: nodes reached again through YAML aliases: sharing a few defaults is fine, a
#: "billion laughs" (aliases of aliases, exponential) is stopped early
MAX_ALIAS_NODES = 50_000

_YAML = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_YAML + t for t in ("str", "int", "float", "bool", "null", "map", "seq")}

JsonPath = tuple[str | int, ...]


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class SourceSpec:
    """One socket's source as written in the manifest (templates not yet filled in)."""

    socket: str
    kind: str  # one of SOURCE_KINDS, or "none" (null: drop the default)
    value: Any = field(default=None, hash=False)  # kind "value": the literal
    args: tuple[str, ...] = ()  # json/file/archive_item/image: (text,); files: the globs
    item_socket: str | None = None  # archive_item: the item's socket (default: socket)
    line: int | None = None  # where the source's argument is
    col: int | None = None
    where: str = ""  # e.g. "cases[2].inputs.ct-image", for messages


@dataclass(frozen=True)
class Foreach:
    kind: str  # "glob" | "archive"
    pattern: str  # the glob, or the archive slug
    line: int | None = None
    col: int | None = None


@dataclass(frozen=True)
class CaseSpec:
    """An explicit case (``foreach`` is None) or a generator, in manifest order."""

    index: int  # position in ``cases``
    id: str  # the id, or for a generator the id template
    inputs: tuple[SourceSpec, ...]  # the case's own inputs, sorted by socket (no defaults)
    foreach: Foreach | None = None
    line: int | None = None  # of the case
    id_line: int | None = None
    id_col: int | None = None
    col: int | None = None

    @property
    def where(self) -> str:
        return f"cases[{self.index}]"

    def effective_inputs(self, defaults: Sequence[SourceSpec]) -> tuple[SourceSpec, ...]:
        """Defaults overlaid with the case's own inputs; ``null`` sources removed."""
        merged = {s.socket: s for s in defaults}
        merged.update({s.socket: s for s in self.inputs})
        return tuple(merged[k] for k in sorted(merged) if merged[k].kind != "none")


@dataclass(frozen=True)
class Manifest:
    path: Path  # absolute
    display: str  # as the user named it, for messages
    version: int
    algorithm: str
    server: str | None
    defaults: tuple[SourceSpec, ...]
    cases: tuple[CaseSpec, ...]

    @property
    def base_dir(self) -> Path:
        """Relative paths in the manifest are relative to its folder."""
        return self.path.parent

    def finding(self, message: str, line: int | None = None, col: int | None = None,
                path: str = "") -> Finding:
        """A finding in this manifest; ``path`` ("cases/3/id") marks the part it is about."""
        return Finding(file=self.display, message=message, line=line, col=col, path=path)


# --------------------------------------------------------------------------- YAML layer


class _Loader(yaml.SafeLoader):
    """SafeLoader without implicit timestamps (a date is not a JSON value)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _YAML + "timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_CLoader: type[Any] | None = None
if getattr(yaml, "__with_libyaml__", False):  # pragma: no branch - libyaml is optional

    class _CLoaderImpl(yaml.CSafeLoader):
        """libyaml's parser, same resolvers as :class:`_Loader`: ~10 times faster on big files.

        Only ever used when it parses a document without any finding; anything it refuses
        (or that has findings) is read again by :class:`_Loader`, so every message and
        location stays PyYAML's own.
        """

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._tags: dict[tuple[str, Any], str] = {}

        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            """The resolver, memoised for scalars: a big manifest repeats the same keys
            (``id``, ``inputs``, socket slugs) and values on every case."""
            if kind is not yaml.ScalarNode:
                return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
            key = (value, implicit)
            tag = self._tags.get(key)
            if tag is None:
                tag = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
                if len(self._tags) < 100_000:
                    self._tags[key] = tag
            return tag

    _CLoaderImpl.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
    _CLoader = _CLoaderImpl

#: characters PyYAML's reader refuses (libyaml's rules differ): such text takes the
#: pure-Python path so that the finding is PyYAML's
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
_STR_TAG = _YAML + "str"


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_YAML):] if tag.startswith(_YAML) else tag


@dataclass
class Located:
    """Plain data plus where each node (and each mapping key) is, by JSON path."""

    data: Any
    nodes: dict[JsonPath, tuple[int, int]]
    keys: dict[JsonPath, tuple[int, int]]
    refused: set[JsonPath] = field(default_factory=set)

    def where(self, path: JsonPath, *, key: bool = False) -> tuple[int | None, int | None]:
        """The location of the node at ``path`` (its key's if ``key``), else its nearest
        ancestor's."""
        table = self.keys if key else self.nodes
        if path in table:
            return table[path]
        for n in range(len(path), -1, -1):
            if path[:n] in self.nodes:
                return self.nodes[path[:n]]
        return None, None


class _Builder:
    def __init__(self, loader: Any, display: str) -> None:
        self.loader = loader
        self.display = display
        self.findings: list[Finding] = []
        self.nodes: dict[JsonPath, tuple[int, int]] = {}
        self.keys: dict[JsonPath, tuple[int, int]] = {}
        self.count = 0
        self.active: set[int] = set()
        #: nodes replaced by None because they were refused (tags, NaN, recursion): the
        #: schema must not complain about them a second time
        self.refused: set[JsonPath] = set()
        self.built: set[int] = set()
        self.via_alias = 0
        self.constructors: dict[Any, Any] = loader.yaml_constructors

    def at(self, node: yaml.Node, message: str, path: JsonPath) -> None:
        mark = node.start_mark
        where = _human(path)
        text = f"{where}: {message}" if where else message
        self.findings.append(Finding(self.display, text, mark.line + 1, mark.column + 1,
                                     _pointer(path)))

    def scalar(self, node: yaml.ScalarNode) -> Any:
        """A plain scalar's value: what ``construct_object`` gives, without its bookkeeping
        (a million scalars in a 100,000-case manifest)."""
        if node.tag == _STR_TAG:
            return node.value
        return self.constructors[node.tag](self.loader, node)

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        self.count += 1
        key = id(node)
        if key in self.built:
            self.via_alias += 1
            if self.via_alias > MAX_ALIAS_NODES:
                raise _TooBig(f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes "
                              "(a \"billion laughs\"?); refusing to read further")
        else:
            self.built.add(key)
        if self.count > MAX_NODES:
            raise _TooBig(f"more than {MAX_NODES} YAML nodes; refusing to read further")
        mark = node.start_mark
        self.nodes[path] = (mark.line + 1, mark.column + 1)
        if node.tag not in _PLAIN_TAGS:
            tag = _tag_name(node.tag)
            if tag.startswith("!!python/"):
                self.at(node, f"unsafe YAML tag {tag} is not allowed", path)
            else:
                self.at(node, f"YAML tag {tag} is not allowed (plain YAML only)", path)
            self.refused.add(path)
            return None
        if isinstance(node, yaml.ScalarNode):
            try:
                value = self.scalar(node)
            except (ValueError, KeyError, TypeError):  # e.g. "!!int abc"
                self.at(node, f"{node.value!r} is not a valid {_tag_name(node.tag)}", path)
                self.refused.add(path)
                return None
            if isinstance(value, float) and not math.isfinite(value):
                self.at(node, f"{node.value} is not a JSON number", path)
                self.refused.add(path)
                return None
            return value
        if id(node) in self.active:
            self.at(node, "a YAML alias refers to itself", path)
            self.refused.add(path)
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self.build_mapping(node, path)
        finally:
            self.active.discard(id(node))

    def build_mapping(self, node: yaml.MappingNode, path: JsonPath) -> dict[str, Any]:
        try:
            self.loader.flatten_mapping(node)  # resolve "<<" merge keys
        except yaml.MarkedYAMLError as exc:
            self.findings.append(_yaml_finding(self.display, exc))
            return {}
        result: dict[str, Any] = {}
        first: dict[str, int] = {}
        keys = self.keys
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _PLAIN_TAGS:
                self.at(key_node, "a mapping key must be a plain string", path)
                continue
            try:
                key = self.scalar(key_node)
            except (ValueError, KeyError, TypeError):  # e.g. "!!int abc: x"
                self.at(key_node, f"{key_node.value!r} is not a valid "
                        f"{_tag_name(key_node.tag)}", path)
                continue
            if not isinstance(key, str):
                self.at(key_node, f"key {key_node.value!r} is read as "
                        f"{_json_type(key)}; put it in quotes", path)
                continue
            here = (*path, key)
            if key in first:
                self.at(key_node, f"duplicate key {key!r} (first at line {first[key]})", path)
                continue
            mark = key_node.start_mark
            first[key] = mark.line + 1
            keys[here] = (mark.line + 1, mark.column + 1)
            result[key] = self.build(value_node, here)
        return result


class _TooBig(Exception):
    pass


def _yaml_finding(display: str, exc: yaml.MarkedYAMLError) -> Finding:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    if problem == "but found another document":
        return Finding(display, "invalid YAML: a manifest is one YAML document, but another "
                       "one starts here", mark.line + 1 if mark else None,
                       mark.column + 1 if mark else None)
    if exc.context and exc.context_mark is not None and exc.problem_mark is not None:
        problem = f"{problem} ({exc.context} at line {exc.context_mark.line + 1})"
    line = mark.line + 1 if mark is not None else None
    col = mark.column + 1 if mark is not None else None
    return Finding(display, f"invalid YAML: {problem}", line, col)


def _fast_yaml_ok(text: str) -> bool:
    """Whether libyaml may read ``text``: it is there, and the text has none of the
    characters around which libyaml knowingly accepts what PyYAML refuses (tabs; ``?``,
    e.g. ``{file: a? b}``) and none that PyYAML's reader refuses. A differential fuzz of
    mutated manifests (PyYAML alone vs this) found no other divergence."""
    return (_CLoader is not None and "\t" not in text and "?" not in text
            and not _NON_PRINTABLE.search(text))


def read_yaml(text: str, display: str, *, fast: bool = True
              ) -> tuple[Located | None, list[Finding]]:
    """Safe-load one YAML document with locations; findings instead of exceptions.

    ``fast``: try libyaml first (when PyYAML has it, see :func:`_fast_yaml_ok`) and keep
    its result only for a document that parses and builds without a single finding.
    Anything else is read by the pure-Python loader, which is what every finding's message
    and location come from. :func:`parse_manifest` goes further: a manifest with any
    finding at all (schema, semantics) is read again with the pure-Python loader.
    """
    if fast and _CLoader is not None and _fast_yaml_ok(text):
        fast_result = _read_yaml_with(_CLoader, text, display)
        if fast_result is not None and fast_result[0] is not None and not fast_result[1]:
            return fast_result
    result = _read_yaml_with(_Loader, text, display)
    assert result is not None
    return result


def _read_yaml_with(loader_class: type[Any], text: str, display: str
                    ) -> tuple[Located | None, list[Finding]] | None:
    """:func:`read_yaml` with one loader class; None when libyaml raised (not a finding:
    the pure-Python loader says what is wrong, in its own words)."""
    fast = loader_class is not _Loader
    try:
        loader = loader_class(text)
    except yaml.reader.ReaderError as exc:  # a control character (PyYAML checks up front)
        if fast:
            return None
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        return None, [Finding(display, f"invalid YAML: unacceptable character "
                              f"#x{exc.character:04x}: special characters are not allowed",
                              line, col)]
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            if fast:
                return None
            if isinstance(exc, yaml.MarkedYAMLError):
                return None, [_yaml_finding(display, exc)]
            return None, [Finding(display, f"invalid YAML: {exc}")]
        if node is None:
            return None, [Finding(display, "the manifest is empty", 1, 1)]
        builder = _Builder(loader, display)
        try:
            data = builder.build(node, ())
        except _TooBig as exc:
            return None, [Finding(display, str(exc), 1, 1)]
        except yaml.YAMLError:
            if fast:
                return None
            raise
        return Located(data, builder.nodes, builder.keys, builder.refused), builder.findings
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- schema layer


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The manifest JSON Schema shipped in the package."""
    text = resources.files("gcbatch").joinpath("schemas/manifest.schema.json").read_text(
        encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_TYPE_WORDS = {"string": "a string", "object": "a mapping", "array": "a list",
               "integer": "an integer", "number": "a number", "boolean": "true or false",
               "null": "null"}


def _pointer(path: Sequence[str | int]) -> str:
    return "/".join(str(p) for p in path)


def _human(path: Sequence[str | int]) -> str:
    """``cases[2].inputs.ct-image`` for messages."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


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


def _schema_findings(doc: Located, display: str) -> list[Finding]:
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
    where = _human(path)
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
                          _pointer((*path, key)))
        return
    if validator == "required":
        missing = [k for k in expected if k not in instance]
        what = ", ".join(repr(k) for k in missing)
        yield Finding(display, f"{prefix}missing required key {what}", line, col, _pointer(path))
        return
    if validator == "oneOf" and isinstance(instance, dict):
        options = [r for branch in expected for r in branch.get("required", [])]
        given = [k for k in options if k in instance]
        if not given:
            msg = "no source given; give one of " if "value" in options else "give one of "
            yield Finding(display, f"{prefix}{msg}{', '.join(options)}", line, col,
                          _pointer(path))
        else:
            kline, kcol = doc.where((*path, given[1]), key=True)
            yield Finding(display, f"{prefix}give only one of {', '.join(options)} "
                          f"(got {' and '.join(given)})", kline, kcol, _pointer(path))
        return
    if validator == "dependencies" and isinstance(instance, dict):
        for key, needs in sorted(expected.items()):
            if key in instance:
                lacking = [n for n in needs if n not in instance]
                if lacking:
                    kline, kcol = doc.where((*path, key), key=True)
                    yield Finding(display, f"{prefix}{key!r} is only used together with "
                                  f"{', '.join(repr(n) for n in lacking)}", kline, kcol,
                                  _pointer((*path, key)))
        return
    if validator == "type":
        types = expected
        types = [types] if isinstance(types, str) else list(types)
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        text = f"expected {words}, got {_json_type(instance)}"
    elif validator == "pattern" and "propertyNames" in error.schema_path:
        # a key failed: jsonschema reports it at the mapping; point at the key itself
        kline, kcol = doc.where((*path, instance), key=True)
        yield Finding(display, f"{prefix}{instance!r}: {sch.get('patternErrorMessage')}",
                      kline, kcol, _pointer((*path, instance)))
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
                              "digits, '-' and '_')", kline, kcol, _pointer((*path, key)))
        return
    else:
        text = error.message
    yield Finding(display, f"{prefix}{text}", line, col, _pointer(path))


# --------------------------------------------------------------------------- templates


_TEMPLATE_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    pass


def template_names(text: str) -> list[str]:
    """The placeholder names in ``text``; :class:`TemplateError` on unmatched braces."""
    names = []
    for m in _TEMPLATE_RE.finditer(text):
        token = m.group(0)
        if token in ("{{", "}}"):
            continue
        if m.group(1) is None:
            raise TemplateError(f"unmatched {token!r} (write {token * 2} for a literal brace)")
        names.append(m.group(1).strip())
    return names


@lru_cache(maxsize=1024)
def _compile(text: str) -> tuple[tuple[bool, str], ...]:
    """A template as parts: (False, literal) or (True, placeholder name)."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for m in _TEMPLATE_RE.finditer(text):
        if m.start() > pos:
            parts.append((False, text[pos:m.start()]))
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append((False, token[0]))
        elif m.group(1) is None:
            raise TemplateError(f"unmatched {token!r}")
        else:
            parts.append((True, m.group(1).strip()))
        pos = m.end()
    if pos < len(text):
        parts.append((False, text[pos:]))
    return tuple(parts)


def render_template(text: str, values: Mapping[str, str], escape: Any = None) -> str:
    """Fill placeholders (names must have been checked); ``escape`` is applied to values.

    Templates are compiled once (a generator renders the same few templates per match).
    """
    out = []
    for is_name, part in _compile(text):
        if is_name:
            value = values[part]
            out.append(escape(value) if escape else value)
        else:
            out.append(part)
    return "".join(out)


# --------------------------------------------------------------------------- building


def _usable(path: JsonPath, bad: set[JsonPath]) -> bool:
    """No schema finding at or below ``path``."""
    n = len(path)
    return not any(b[:n] == path for b in bad)


def _source(socket: str, spec: Any, path: JsonPath, doc: Located) -> SourceSpec:
    line, col = doc.where(path)
    where = _human(path)
    if spec is None:
        return SourceSpec(socket, "none", line=line, col=col, where=where)
    kind = next(k for k in SOURCE_KINDS if k in spec)
    aline, acol = doc.where((*path, kind))
    if kind == "value":
        return SourceSpec(socket, kind, value=spec[kind], line=aline, col=acol, where=where)
    arg = spec[kind]
    args = tuple(arg) if isinstance(arg, list) else (arg,)
    item_socket = spec.get("socket", socket) if kind == "archive_item" else None
    return SourceSpec(socket, kind, args=args, item_socket=item_socket, line=aline, col=acol,
                      where=where)


def _inputs(data: Any, path: JsonPath, doc: Located) -> tuple[SourceSpec, ...]:
    if not isinstance(data, dict):
        return ()
    return tuple(_source(k, data[k], (*path, k), doc) for k in sorted(data))


def parse_manifest(path: Path | str) -> tuple[Manifest | None, list[Finding]]:
    """Read and check a manifest; return what could be understood and every finding.

    The returned :class:`Manifest` holds only the parts without findings (so expansion can
    still check the rest); it is ``None`` when the file is not a YAML mapping at all.
    """
    display = os.fspath(path)
    absolute = Path(os.path.abspath(path))
    try:
        raw = absolute.read_bytes()
    except FileNotFoundError:
        return None, [Finding(display, "no such file")]
    except IsADirectoryError:
        return None, [Finding(display, "is a folder, not a manifest")]
    except OSError as exc:
        return None, [Finding(display, f"cannot read: {exc.strerror}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = raw.count(b"\n", 0, exc.start) + 1
        bad_col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, [Finding(display, "not UTF-8 text (save the manifest as UTF-8)",
                              bad_line, bad_col)]

    key = (display, absolute, raw)
    if _LAST_PARSE and _LAST_PARSE[0] == key:
        # the same bytes again in this process (plan and apply read a manifest twice: for
        # its server, then for its cases); a parse is a function of them
        manifest, findings = _LAST_PARSE[1]
        return manifest, list(findings)
    with gc_paused():  # millions of live objects: see gcbatch.perf
        parsed = None
        if _fast_yaml_ok(text):
            parsed = _parse_text(text, display, absolute, fast=True)
            # findings: read again with PyYAML's own parser, whose words and locations
            # they are (libyaml is only trusted for documents without a single finding)
        if parsed is None or parsed[1]:
            parsed = _parse_text(text, display, absolute, fast=False)
    _LAST_PARSE[:] = [key, (parsed[0], tuple(parsed[1]))]
    return parsed[0], list(parsed[1])


#: [(display, absolute path, bytes), (manifest, findings)] of the last parse
_LAST_PARSE: list[Any] = []


def _parse_text(text: str, display: str, absolute: Path, *, fast: bool
                ) -> tuple[Manifest | None, list[Finding]]:
    doc, findings = read_yaml(text, display, fast=fast)
    if doc is None:
        return None, findings
    if not isinstance(doc.data, dict):
        findings.append(Finding(display, f"a manifest is a mapping (version, algorithm, "
                                f"cases, ...), not {_json_type(doc.data)}", 1, 1))
        return None, findings
    # YAML-layer findings mark their subtrees unusable, like schema findings do
    bad: set[JsonPath] = {_path_of(f) for f in findings}
    schema_findings = _schema_findings(doc, display)
    findings.extend(schema_findings)
    bad |= {_path_of(f) for f in schema_findings}
    data = doc.data

    def good(p: JsonPath) -> bool:
        return _usable(p, bad) and _present(data, p)

    defaults = _inputs(data.get("defaults"), ("defaults",), doc) if good(("defaults",)) else ()
    defaults_ok = _usable(("defaults",), bad)
    cases: list[CaseSpec] = []
    raw_cases: list[Any] = data["cases"] if isinstance(data.get("cases"), list) else []
    for i, raw in enumerate(raw_cases):
        p: JsonPath = ("cases", i)
        if not good(p) or not isinstance(raw, dict):
            continue
        foreach = None
        if "foreach" in raw:
            kind = "glob" if "glob" in raw["foreach"] else "archive"
            fline, fcol = doc.where((*p, "foreach", kind))
            foreach = Foreach(kind, raw["foreach"][kind], fline, fcol)
        line, col = doc.where(p)
        id_line, id_col = doc.where((*p, "id"))
        cases.append(CaseSpec(i, raw["id"], _inputs(raw.get("inputs"), (*p, "inputs"), doc),
                              foreach, line, id_line, id_col, col))

    manifest = Manifest(
        path=absolute,
        display=display,
        version=1,
        algorithm=data["algorithm"] if good(("algorithm",)) else "",
        server=data["server"] if good(("server",)) else None,
        defaults=defaults,
        cases=tuple(cases),
    )
    semantic = _semantic_findings(manifest, check_empty=defaults_ok)
    findings.extend(semantic)
    # keep only the parts without findings, so that expansion never meets a bad template
    broken = {_path_of(f)[:2] for f in semantic}
    manifest = dataclasses.replace(
        manifest,
        defaults=() if ("defaults",) in broken else manifest.defaults,
        cases=tuple(c for c in manifest.cases if ("cases", c.index) not in broken),
    )
    findings.sort(key=lambda f: (f.line or 0, f.col or 0, f.message))
    return manifest, _dedupe(findings)


def _present(data: Any, path: JsonPath) -> bool:
    for part in path:
        if isinstance(data, dict) and isinstance(part, str) and part in data:
            data = data[part]
            continue
        if isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
            continue
        return False
    return True


def _path_of(finding: Finding) -> JsonPath:
    if not finding.path:
        return ()
    return tuple(int(p) if p.isdigit() else p for p in finding.path.split("/"))


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for f in findings:
        key = (f.line, f.col, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _semantic_findings(m: Manifest, *, check_empty: bool) -> list[Finding]:
    out: list[Finding] = []
    for src in m.defaults:
        out.extend(_template_findings(m, src, allowed=None, in_defaults=True, path="defaults"))
    first_id: dict[str, int | None] = {}
    for case in m.cases:
        idp = f"cases/{case.index}/id"
        if case.foreach is None:
            allowed: tuple[str, ...] | None = None
        elif case.foreach.kind == "glob":
            allowed = GLOB_PLACEHOLDERS
        else:
            allowed = ARCHIVE_PLACEHOLDERS
        for src in case.inputs:
            out.extend(_template_findings(m, src, allowed=allowed, in_defaults=False,
                                          path=f"cases/{case.index}/inputs/{src.socket}"))
        if case.foreach is not None:
            try:
                names = template_names(case.id)
            except TemplateError as exc:
                out.append(m.finding(f"{case.where}.id: {exc}", case.id_line, case.id_col, idp))
            else:
                out.extend(_unknown_names(m, names, allowed, case.id_line, case.id_col,
                                          f"{case.where}.id", idp))
                if not names:
                    example = "{stem}" if case.foreach.kind == "glob" else "{item.pk}"
                    out.append(m.finding(
                        f"{case.where}.id: a foreach case's id needs a placeholder such as "
                        f"{example}, or every generated case gets the same id",
                        case.id_line, case.id_col, idp))
        elif case.id in first_id:
            out.append(m.finding(f"{case.where}.id: duplicate case id {case.id!r} (first at "
                                 f"line {first_id[case.id]})", case.id_line, case.id_col, idp))
        else:
            first_id[case.id] = case.id_line
        if check_empty and not case.effective_inputs(m.defaults):
            out.append(m.finding(f"{case.where}: this case has no inputs (give `inputs`, or "
                                 "`defaults` for every case)", case.line, case.col,
                                 f"cases/{case.index}"))
    return out


def _template_findings(m: Manifest, src: SourceSpec, *, allowed: tuple[str, ...] | None,
                       in_defaults: bool, path: str) -> list[Finding]:
    out: list[Finding] = []
    if src.kind in ("value", "none"):
        return out
    for arg in src.args:
        try:
            names = template_names(arg)
        except TemplateError as exc:
            out.append(m.finding(f"{src.where}: {exc}", src.line, src.col, path))
            continue
        if names and allowed is None:
            kind = "defaults" if in_defaults else "an explicit case"
            out.append(m.finding(
                f"{src.where}: placeholder {{{names[0]}}} cannot be used in {kind}; "
                "placeholders work in foreach cases only (write {{ and }} for literal braces)",
                src.line, src.col, path))
            continue
        out.extend(_unknown_names(m, names, allowed, src.line, src.col, src.where, path))
    return out


def _unknown_names(m: Manifest, names: list[str], allowed: tuple[str, ...] | None,
                   line: int | None, col: int | None, where: str, path: str) -> list[Finding]:
    out = []
    for name in names:
        if allowed is not None and name not in allowed:
            other = GLOB_PLACEHOLDERS if allowed == ARCHIVE_PLACEHOLDERS else ARCHIVE_PLACEHOLDERS
            if name in other:
                kind = "a glob" if allowed == GLOB_PLACEHOLDERS else "an archive"
                out.append(m.finding(
                    f"{where}: placeholder {{{name}}} belongs to the other kind of foreach; "
                    f"this one is over {kind} (available: "
                    f"{', '.join('{' + a + '}' for a in allowed)})", line, col, path))
                continue
            hint = difflib.get_close_matches(name, allowed, n=1, cutoff=0.5)
            tip = f"did you mean {{{hint[0]}}}?" if hint else "available: " + ", ".join(
                f"{{{a}}}" for a in allowed)
            out.append(m.finding(f"{where}: unknown placeholder {{{name}}} ({tip})", line, col,
                                 path))
    return out


def load_manifest(path: Path | str) -> Manifest:
    """The manifest at ``path``; :class:`ManifestError` carrying every finding otherwise."""
    manifest, findings = parse_manifest(path)
    if findings or manifest is None:
        raise ManifestError(findings)
    return manifest
