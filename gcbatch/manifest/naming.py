"""How findings name things: a node's place in the document and a value's JSON type.

Every layer (YAML, schema, semantics) reports a :class:`~gcbatch.errors.Finding` about a
node found by its JSON path (``("cases", 2, "inputs", "ct-image")``). The finding carries
the path twice: as a pointer (``cases/2/inputs/ct-image``, :attr:`Finding.path`, which
:func:`gcbatch.manifest.parse_manifest` reads back to leave the broken parts out) and in
words for the message (``cases[2].inputs.ct-image``). One module, so that the two spellings
cannot drift apart between the layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gcbatch.errors import Finding

#: where a node is in the document: mapping keys and list indexes from the root
JsonPath = tuple[str | int, ...]


def pointer(path: Sequence[str | int]) -> str:
    """``cases/2/inputs/ct-image``: the path as :attr:`Finding.path` carries it."""
    return "/".join(str(p) for p in path)


def human(path: Sequence[str | int]) -> str:
    """``cases[2].inputs.ct-image`` for messages."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def path_of(finding: Finding) -> JsonPath:
    """The JSON path a finding is about (``()``: the whole document), read back from
    :func:`pointer`'s spelling; a part made of digits is read as a list index."""
    if not finding.path:
        return ()
    return tuple(int(p) if p.isdigit() else p for p in finding.path.split("/"))


def json_type(value: Any, *, exact_numbers: bool = False) -> str:
    """The JSON type of ``value`` in words ("a mapping"), for "expected …, got …".
    ``exact_numbers``: "an integer" apart from "a number" (where the socket cares)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if exact_numbers and isinstance(value, int):
        return "an integer"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
