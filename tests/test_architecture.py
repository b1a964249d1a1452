"""The house rules of ``docs/architecture.md``, enforced: layers, no import cycle, sizes.

Every ``import`` in ``gcbatch/`` counts, those inside functions (lazy imports) too. A
module may import modules of its own layer or of a layer below it, never above; the
sandbox is a tower of its own that imports nothing of gcbatch outside itself; and no two
modules import each other, directly or around a loop.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gcbatch"

#: top to bottom; a module's layer is the first prefix that matches its dotted name
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cli", ("gcbatch.__main__", "gcbatch.cli")),
    ("views", ("gcbatch.views",)),
    ("operations", ("gcbatch.operations",)),
    ("engine", ("gcbatch.engine",)),
    ("domain", ("gcbatch.manifest", "gcbatch.sources", "gcbatch.targeting", "gcbatch.plan",
                "gcbatch.preflight", "gcbatch.status", "gcbatch.tables", "gcbatch.polling",
                "gcbatch.dicom", "gcbatch.problems", "gcbatch.readiness")),
    ("state", ("gcbatch.lockfile", "gcbatch.hashing")),
    ("api", ("gcbatch.api",)),
    ("base", ("gcbatch.errors", "gcbatch.events", "gcbatch.statuses", "gcbatch.perf",
              "gcbatch.files", "gcbatch.interrupts", "gcbatch")),
)
#: the emulator: imports only itself; only these may import it
SANDBOX = "gcbatch.sandbox"
SANDBOX_USERS = ("gcbatch.cli", "gcbatch.operations.session")

MAX_LINES = 600
MAX_LINES_SANDBOX = 800


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(name: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(_matches(name, p) for p in prefixes):
            return rank
    raise AssertionError(f"{name} is in no layer: add it to LAYERS and docs/architecture.md")


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported gcbatch module, line) for every import in the file, lazy ones included.
    ``from gcbatch.x import y`` names the module ``gcbatch.x.y`` when that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for target in targets:
            if target == "gcbatch" or target.startswith("gcbatch."):
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                if target != name:
                    yield target, node.lineno


def graph() -> dict[str, dict[str, int]]:
    found = modules()
    known = set(found)
    return {name: dict(imports_of(name, path, known)) for name, path in found.items()}


def test_every_module_is_in_a_layer() -> None:
    for name in modules():
        if not _matches(name, SANDBOX):
            layer_of(name)


def test_imports_only_go_down_or_sideways() -> None:
    wrong = []
    for name, targets in graph().items():
        if _matches(name, SANDBOX):
            continue
        for target, line in targets.items():
            if _matches(target, SANDBOX):
                if not any(_matches(name, user) for user in SANDBOX_USERS):
                    wrong.append(f"{name}:{line} imports the sandbox ({target})")
            elif layer_of(target) < layer_of(name):
                wrong.append(f"{name}:{line} ({LAYERS[layer_of(name)][0]}) imports {target} "
                             f"({LAYERS[layer_of(target)][0]}), a layer above it")
    assert wrong == []


def test_the_sandbox_imports_only_itself() -> None:
    wrong = [f"{name}:{line} imports {target}"
             for name, targets in graph().items() if _matches(name, SANDBOX)
             for target, line in targets.items()
             if not _matches(target, SANDBOX) and target != "gcbatch"]
    assert wrong == []


def find_cycle(edges: dict[str, dict[str, int]]) -> list[str] | None:
    """One import loop, as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (loop := visit(nxt)) is not None:
                return loop
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (loop := visit(start)) is not None:
            return loop
    return None


def test_no_import_cycle() -> None:
    assert find_cycle(graph()) is None


def test_find_cycle_finds_a_lazy_loop() -> None:
    assert find_cycle({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_readable_in_one_sitting(name: str) -> None:
    limit = MAX_LINES_SANDBOX if _matches(name, SANDBOX) else MAX_LINES
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= limit, f"{name} has {lines} lines (at most {limit})"
