"""jsonvalues.py: nesting is measured without recursion."""

from __future__ import annotations

from typing import Any

from gcbatch.jsonvalues import MAX_DEPTH, too_deep


def _nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_depth_limits() -> None:
    assert not too_deep(1) and not too_deep("x") and not too_deep([])
    assert not too_deep(_nested(MAX_DEPTH))
    assert too_deep(_nested(MAX_DEPTH + 1))
    assert too_deep(_nested(100_000))  # far past Python's recursion limit: no error
    assert not too_deep([[1], {"a": [2]}], limit=3)
    assert too_deep([[1], {"a": [[2]]}], limit=3)
