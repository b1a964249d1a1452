"""pytest plugin: every answer the sandbox gives during the run must fit GC's OpenAPI schema.

Issue 7: "every JSON response the sandbox gives during the whole test suite validates
against the matching response schema". At configure time this plugin points
``GCBATCH_SANDBOX_RECORD_DIR`` (see ``gcbatch/sandbox/recording.py``) at a fresh temporary
directory, so every ``SandboxApp`` made afterwards, in this process, in xdist workers and
in subprocesses that inherit the environment, logs its answers there. At the end of the
session the controller validates them all with ``tests/sandbox/openapi_check.py``; any
violation fails the run (exit status 1) and is listed in a terminal section, with the test
run's own outcome otherwise untouched. A line in the summary says how many answers were
checked, so a run that recorded nothing is visible too.

Set ``GCBATCH_OPENAPI_CHECK=0`` to switch the check off (for a quick local loop only).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gcbatch.sandbox.recording import ENV_VAR

_HERE = Path(__file__).resolve().parent
_STATE_KEY = pytest.StashKey["_ConformanceState"]()


def _load_openapi_check() -> ModuleType:
    """Import tests/sandbox/openapi_check.py under one stable name.

    ``tests/`` is not a package; registering the module in ``sys.modules`` as
    ``openapi_check`` lets test modules ``import openapi_check`` wherever they live.
    """
    name = "openapi_check"
    found = sys.modules.get(name)
    if found is not None:
        return found
    spec = importlib.util.spec_from_file_location(name, _HERE / "sandbox" / "openapi_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


openapi_check = _load_openapi_check()


@dataclass
class _ConformanceState:
    directory: Path
    previous_env: str | None
    owned: bool
    checked: int = 0
    unchecked: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    lines: int = 0
    seconds: float = 0.0


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("GCBATCH_OPENAPI_CHECK", "1") == "0" or _is_xdist_worker(config):
        return  # workers inherit the controller's directory through the environment
    directory = Path(tempfile.mkdtemp(prefix="gcbatch-openapi-"))
    config.stash[_STATE_KEY] = _ConformanceState(
        directory=directory, previous_env=os.environ.get(ENV_VAR), owned=True
    )
    os.environ[ENV_VAR] = str(directory)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    if state.previous_env is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = state.previous_env
    if state.owned:
        shutil.rmtree(state.directory, ignore_errors=True)


def iter_records(directory: Path) -> Iterator[dict[str, Any]]:
    """Every recorded answer in ``directory``, file by file."""
    for path in sorted(directory.glob("responses-*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    yield json.loads(raw)
                except ValueError:
                    # Tests SIGKILL sandbox processes; a large line can be cut mid-write.
                    yield {"unreadable": True}


def check_records(
    spec: Any, records: Iterator[dict[str, Any]]
) -> tuple[int, int, Counter[str], list[str]]:
    """Validate records: (lines, checked, unchecked reasons, violation texts).

    Identical answers (same method, path template, status and body) are validated once:
    list pages polled in a loop repeat a lot.
    """
    seen: set[tuple[str, str, int, str, str | None]] = set()
    lines = checked = 0
    unchecked: Counter[str] = Counter()
    violations: list[str] = []
    for rec in records:
        lines += 1
        if rec.get("unreadable"):
            unchecked["line cut short (a sandbox process was killed mid-write)"] += 1
            continue
        method, path, status = rec["method"], rec["path"], int(rec["status"])
        op = spec.match(method, path)
        key = (
            method,
            op.template if op else path,
            status,
            rec.get("content_type") or "",
            rec.get("body"),
        )
        if key in seen:
            continue
        seen.add(key)
        if method == "HEAD":
            unchecked["HEAD (no body)"] += 1
            continue
        raw = rec.get("body")
        body: Any = None
        if raw is not None:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                violations.append(f"{method} {path} -> {status}: body is not JSON ({exc})")
                continue
        verdict = spec.validate(method, path, status, body, content_type=rec.get("content_type"))
        if not verdict.checked:
            unchecked[verdict.reason if op is None else f"status {status} undocumented"] += 1
            continue
        checked += 1
        query = f"?{rec['query']}" if rec.get("query") else ""
        violations.extend(f"{method} {path}{query} -> {status}: {err}" for err in verdict.errors)
    return lines, checked, unchecked, violations


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    started = time.monotonic()
    spec = openapi_check.OpenAPISpec.load()
    state.lines, state.checked, state.unchecked, state.violations = check_records(
        spec, iter_records(state.directory)
    )
    state.seconds = time.monotonic() - started
    if state.violations and session.exitstatus in (
        pytest.ExitCode.OK,
        pytest.ExitCode.NO_TESTS_COLLECTED,
    ):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    tr = terminalreporter
    skipped = sum(state.unchecked.values())
    summary = (
        f"sandbox OpenAPI conformance: {state.lines} answers recorded, {state.checked} distinct "
        f"ones checked against the GC schema, {skipped} with no schema to check, "
        f"{len(state.violations)} violations ({state.seconds:.1f} s)"
    )
    if state.violations:
        tr.section("sandbox responses that break the Grand Challenge OpenAPI schema", red=True)
        for line in state.violations[:200]:
            tr.write_line(line)
        if len(state.violations) > 200:
            tr.write_line(f"... and {len(state.violations) - 200} more")
        tr.write_line(summary, red=True, bold=True)
    else:
        tr.write_line(summary)
