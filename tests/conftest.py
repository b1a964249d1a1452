"""Shared fixtures for the whole suite.

- ``sandbox_server``: a sandbox on loopback (default seed, fresh database in tmp_path),
  served by a thread of the test process; see :class:`gcbatch.sandbox.RunningSandbox`.
- ``make_sandbox``: the same, as a factory taking :func:`gcbatch.sandbox.start_sandbox`'s
  arguments (tls, config, faults, seed, ...); every sandbox it made is stopped at the end.
- ``sandbox_process``: a factory for a sandbox in a child process
  (``python -m gcbatch sandbox serve --json``), for tests that SIGKILL things; stopped at
  the end, and its log is printed if the test failed.
- ``echo_app``: a tiny stand-in app (answers with what it received) for tests of the
  transports that must not depend on the real app's rules.
"""

from __future__ import annotations

# first, before gcbatch is imported: GCBATCH_TEST_NO_POSIX=1 runs the suite without
# POSIX's extras, as on Windows (tests/no_posix.py; a step of .ci/run)
import no_posix

if no_posix.requested():
    no_posix.install()

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gcbatch.sandbox import (
    RunningSandbox,
    SandboxProcess,
    start_sandbox,
    start_sandbox_process,
)
from gcbatch.sandbox.http import Request, Response

# Without POSIX's extras, skip what only a POSIX test tool needs (it locks the shared
# gcapi virtualenv with fcntl; gcbatch itself must not need it).
collect_ignore = ["sandbox/test_gcapi_conformance.py"] if no_posix.active() else []

# Issue 7: every answer the sandbox gives during the run is checked against GC's OpenAPI
# schema by this plugin (tests/openapi_plugin.py).
pytest_plugins = ["openapi_plugin"]


class EchoApp:
    """Answers every request with a JSON echo of it; records what it saw.

    ``/boom`` raises (to test the server's 500), ``/status/<code>`` answers that code.
    """

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self._lock = threading.Lock()
        self.closed = False

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.seen.append(request)
        if request.path == "/boom":
            raise RuntimeError("boom")
        status = 200
        if request.path.startswith("/status/"):
            status = int(request.path.rsplit("/", 1)[1])
        body = {
            "method": request.method,
            "path": request.path,
            "query": {k: list(v) for k, v in request.query.items()},
            "headers": dict(request.headers),
            "body_length": len(request.body),
            "body_head": request.body[:64].decode("latin-1"),
            "base_url": request.base_url,
        }
        return Response(status, (("Content-Type", "application/json"),), json.dumps(body).encode())

    def close(self) -> None:
        self.closed = True

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.seen]


@pytest.fixture
def echo_app() -> EchoApp:
    return EchoApp()


@pytest.fixture
def make_sandbox(tmp_path: Path) -> Iterator[Callable[..., RunningSandbox]]:
    started: list[RunningSandbox] = []

    def factory(**kwargs: Any) -> RunningSandbox:
        kwargs.setdefault("db", tmp_path / f"sandbox-{len(started)}.db")
        sb = start_sandbox(**kwargs)
        started.append(sb)
        return sb

    yield factory
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox_server(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    """A started loopback sandbox: default seed, fresh database, http."""
    return make_sandbox()


@pytest.fixture
def sandbox_process(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., SandboxProcess]]:
    started: list[SandboxProcess] = []

    def factory(**kwargs: Any) -> SandboxProcess:
        kwargs.setdefault("log", tmp_path / f"sandbox-process-{len(started)}.log")
        kwargs.setdefault("db", tmp_path / f"sandbox-process-{len(started)}.db")
        proc = start_sandbox_process(**kwargs)
        started.append(proc)
        return proc

    yield factory
    failed = getattr(request.node, "rep_call", None)
    for proc in started:
        proc.stop()
        if failed is not None and failed.failed:
            print(f"--- sandbox process {proc.pid} log ---\n{proc.log_path.read_text()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Keep each phase's report on the item so fixtures can tell whether the test failed.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
