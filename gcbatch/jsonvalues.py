"""JSON read from files gcbatch does not control: how deep it may nest.

Python's JSON decoder and encoder recurse once per level of nesting: a value nested a few
hundred levels deep decodes, then fails to encode (or a few more levels fail to decode)
with a ``RecursionError`` far from the file it came from. No input of a study needs more
than a handful of levels, so values read from users' files (``{json:}`` sources, YAML
values) and free-form values in state files (a journal intent's payload) are held to
:data:`MAX_DEPTH`, and callers turn a violation into a finding naming the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["MAX_DEPTH", "too_deep"]

#: levels of nested lists/objects a value may have (a case's inputs need a few)
MAX_DEPTH = 100


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists/dicts more than ``limit`` levels deep (iterative:
    it never recurses itself, whatever the depth)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False
