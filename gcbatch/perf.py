"""Small helpers for the paths that handle 100,000 cases at once.

:func:`gc_paused`: CPython's cyclic garbage collector runs a full collection every so many
allocations, and each one walks every live object. Reading a 100,000-case manifest or
lockfile allocates millions of small objects (nodes, dicts, dataclasses) that all stay
alive, so the collections grow with what was already built: quadratic time (a 100,000-case
YAML took 15 s to compose with the collector on, 3.7 s with it paused). Nothing in those
phases makes reference cycles worth collecting early, so the collector is paused around
them and runs as usual afterwards.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any, TypeVar


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (re-entrant; restores the previous state)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextlib.contextmanager
def gc_frozen() -> Iterator[None]:
    """Move every object alive now out of the collector's sight until the block ends.

    For a phase that keeps the big structures alive and allocates more (apply's run over
    100,000 planned cases): collections still happen, but only over what the phase itself
    makes. On exit the frozen objects are handed back to the collector.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


_T = TypeVar("_T")


def frozen_instance(cls: type[_T], fields: dict[str, Any]) -> _T:
    """A frozen dataclass instance from ALL its fields at once: what ``cls(**fields)``
    makes (no defaults, no ``__post_init__``), without one ``object.__setattr__`` per
    field, which is most of the cost when a run builds 100,000 of them."""
    instance = cls.__new__(cls)
    instance.__dict__.update(fields)
    return instance
