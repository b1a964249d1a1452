"""The package's shape: its face exports what the rest of gcbatch imports, and its rooms
import one way (the order its docstring lists), so no cycle can creep in."""

from __future__ import annotations

import ast
from pathlib import Path

import gcbatch.lockfile as lf

#: The order of gcbatch/lockfile/__init__.py's docstring: each imports only earlier ones.
LAYERS = ("paths", "records", "encode", "decode", "journal", "oslock", "disk", "store",
          "merge")


def _imported_rooms(module: str) -> set[str]:
    """The package's modules ``module`` imports at run time (not under TYPE_CHECKING)."""
    tree = ast.parse((Path(lf.__file__).parent / f"{module}.py").read_text())
    rooms = set()
    for node in tree.body:  # module level only: a TYPE_CHECKING block is an ast.If
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("gcbatch.lockfile."):
                rooms.add(node.module.split(".")[2])
            elif node.module == "gcbatch.lockfile":
                rooms.update(alias.name for alias in node.names)
    return rooms


def test_rooms_import_only_earlier_rooms() -> None:
    found = {p.stem for p in Path(lf.__file__).parent.glob("*.py")} - {"__init__"}
    assert found == set(LAYERS)
    for i, module in enumerate(LAYERS):
        assert _imported_rooms(module) <= set(LAYERS[:i]), module


def test_the_face_exports_what_callers_import() -> None:
    assert all(hasattr(lf, name) for name in lf.__all__)
    # what gcbatch, tests and benchmarks import from gcbatch.lockfile today
    assert {
        "AlgorithmRef", "CaseEntry", "FileLock", "Intent", "JobRecord",
        "Lockfile", "LockfileStore", "indented_json", "journal_path_for",
        "load", "lockfile_path_for", "oslock_path_for", "parse", "save", "utc_now",
    } <= set(lf.__all__)
