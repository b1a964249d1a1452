"""The YAML layer: one safe YAML document → plain data plus where every node is.

Parsed with PyYAML's *composer* only (nodes with marks, nothing constructed), then turned
into plain data by :meth:`_Builder.build`, which allows only the plain YAML tags (str, int,
float, bool, null, map, seq): any ``!!python/...`` or custom tag is a finding, never
executed. It also refuses duplicate keys (PyYAML silently keeps the last one, which would
hide "two sources for one socket"), non-string keys and NaN/infinity, and caps alias
expansion ("billion laughs") and nesting (:data:`~gcbatch.jsonvalues.MAX_DEPTH` levels:
Python's parsers recurse per level and would overflow long before a finding could be
made). Timestamps stay strings (JSON has no dates).

Speed: a 100,000-case manifest is millions of nodes. libyaml (when PyYAML has it) composes
them ~10 times faster than the pure-Python parser, but its messages and its rules at the
edges differ, so it is only trusted for a document it reads without a single finding; all
else is read again by the pure-Python loader, whose words and locations the user gets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from gcbatch.errors import Finding
from gcbatch.jsonvalues import MAX_DEPTH
from gcbatch.manifest.naming import JsonPath, human, json_type, pointer

MAX_NODES = 5_000_000  # a backstop; real manifests use generators, not millions of nodes
#: nodes reached again through YAML aliases: sharing a few defaults is fine, a
#: "billion laughs" (aliases of aliases, exponential) is stopped early
MAX_ALIAS_NODES = 50_000

_YAML = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_YAML + t for t in ("str", "int", "float", "bool", "null", "map", "seq")}


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
    """Composed nodes → plain data, recording each node's and key's location; every node
    it refuses becomes ``None`` plus a finding (see the module docstring)."""

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
        where = human(path)
        text = f"{where}: {message}" if where else message
        self.findings.append(Finding(self.display, text, mark.line + 1, mark.column + 1,
                                     pointer(path)))

    def scalar(self, node: yaml.ScalarNode) -> Any:
        """A plain scalar's value: what ``construct_object`` gives, without its bookkeeping
        (a million scalars in a 100,000-case manifest)."""
        if node.tag == _STR_TAG:
            return node.value
        return self.constructors[node.tag](self.loader, node)

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        if len(path) > MAX_DEPTH:
            mark = node.start_mark
            raise _TooBig(f"nested more than {MAX_DEPTH} levels deep; refusing to read "
                          "further", mark.line + 1, mark.column + 1)
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
                        f"{json_type(key)}; put it in quotes", path)
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
    """The document is larger than :data:`MAX_NODES`, its aliases than
    :data:`MAX_ALIAS_NODES` or its nesting deeper than ``MAX_DEPTH``: reading stops with
    one finding (at ``line``/``col`` when known)."""

    def __init__(self, message: str, line: int = 1, col: int = 1) -> None:
        super().__init__(message)
        self.line = line
        self.col = col


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


def fast_yaml_ok(text: str) -> bool:
    """Whether libyaml may read ``text``: it is there, and the text has none of the
    characters around which libyaml knowingly accepts what PyYAML refuses (tabs; ``?``,
    e.g. ``{file: a? b}``) and none that PyYAML's reader refuses. A differential fuzz of
    mutated manifests (PyYAML alone vs this) found no other divergence."""
    return (_CLoader is not None and "\t" not in text and "?" not in text
            and not _NON_PRINTABLE.search(text))


def read_yaml(text: str, display: str, *, fast: bool = True
              ) -> tuple[Located | None, list[Finding]]:
    """Safe-load one YAML document with locations; findings instead of exceptions.

    ``fast``: try libyaml first (when PyYAML has it, see :func:`fast_yaml_ok`) and keep
    its result only for a document that parses and builds without a single finding.
    Anything else is read by the pure-Python loader, which is what every finding's message
    and location come from. :func:`gcbatch.manifest.parse_manifest` goes further: a manifest
    with any finding at all (schema, semantics) is read again with the pure-Python loader.
    """
    if fast and _CLoader is not None and fast_yaml_ok(text):
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
        except RecursionError:  # the composer recurses once per level of nesting
            if fast:
                return None
            mark = loader.get_mark()
            return None, [Finding(display, f"nested more than {MAX_DEPTH} levels deep; "
                                  "refusing to read further", mark.line + 1, mark.column + 1)]
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
            return None, [Finding(display, str(exc), exc.line, exc.col)]
        except yaml.YAMLError:
            if fast:
                return None
            raise
        return Located(data, builder.nodes, builder.keys, builder.refused), builder.findings
    finally:
        loader.dispose()
