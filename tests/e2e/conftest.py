"""The end-to-end suite's fixtures: ``target`` (the server) and its runner's messages.

- ``target``: a fresh sandbox process per test (default, what CI runs), or the live
  server named by ``GCBATCH_E2E_SERVER`` (``e2e_target.py`` lists the variables).
- ``@pytest.mark.sandbox_only("why")``: the test needs what only the sandbox offers; on a
  live server it is skipped with that reason.
- The runner says which server it ran against, at the start and in the summary; a live
  server that is set but cannot be used stops the run before the first test.

Adding a test for a new behaviour: take ``target`` (and ``tmp_path``), build a manifest
with ``e2e_cli``, run the real CLI with ``run_cli(target, ...)`` and check the outcome on
the server through ``target`` (public API) or a proxy (``target.proxy(...)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_target import (
    ORACLE_WORLD,
    SANDBOX_SETTINGS,
    Target,
    live_target_from_env,
    probe,
    sandbox_target,
)

from gcbatch.sandbox import start_sandbox_process

_LIVE: Target | None = None
_LIVE_READ = False
#: a test against a live server may take this long (jobs run on the server's workers)
LIVE_TIMEOUT = 3600


def _live() -> Target | None:
    global _LIVE, _LIVE_READ
    if not _LIVE_READ:
        _LIVE = live_target_from_env()
        _LIVE_READ = True
    return _LIVE


def _where() -> str:
    live = _live()
    if live is None:
        return f"the sandbox (a fresh `gcbatch sandbox serve --tls` per test, world {ORACLE_WORLD.name})"
    return f"the live server {live.api_url}"


def _is_e2e(item: pytest.Item) -> bool:
    return Path(str(item.fspath)).resolve().parent == Path(__file__).resolve().parent


_ONE_AT_A_TIME = ("run the suite against a live server without -n: its tests count the "
                  "jobs of one shared user, so they must run one at a time")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sandbox_only(reason): needs what only the sandbox offers; skipped on a "
        "live server (GCBATCH_E2E_SERVER) with the reason")
    # `pytest tests/e2e -n 2` (this file loaded at start): stop before the workers start
    if _live() is not None and getattr(config.option, "numprocesses", None) \
            and not hasattr(config, "workerinput"):
        pytest.exit(f"e2e: {_ONE_AT_A_TIME}", returncode=4)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if _is_e2e(item)]
    if not mine:
        return
    live = _live()
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"e2e: running against {_where()}")
    if live is None:
        return
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: see pytest_configure
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=f"live server: {_ONE_AT_A_TIME}"))
        return
    problem = probe(live)
    if problem is not None:
        pytest.exit(f"e2e: GCBATCH_E2E_SERVER is set but the server cannot be used: {problem}",
                    returncode=2)
    for item in mine:
        marker = item.get_closest_marker("sandbox_only")
        if "sandbox_process" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.skip(reason=(
                "live server: the test drives a sandbox of its own (sandbox_process: its "
                "fault injection and request log), not the target")))
        elif marker is not None:
            reason = marker.args[0] if marker.args else "needs the sandbox"
            item.add_marker(pytest.mark.skip(reason=f"live server: {reason}"))
        item.add_marker(pytest.mark.timeout(LIVE_TIMEOUT))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    ran = [r for key in ("passed", "failed", "skipped", "error")
           for r in terminalreporter.stats.get(key, [])
           if str(getattr(r, "nodeid", "")).startswith("tests/e2e/")]
    if ran:
        terminalreporter.write_line(f"e2e: ran against {_where()}")


@pytest.fixture
def target(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Target]:
    live = _live()
    if live is not None:
        yield live
        return
    proc = start_sandbox_process(seed=ORACLE_WORLD, tls=True, settings=SANDBOX_SETTINGS,
                                 extra_args=["--cert-dir", str(tmp_path / "sandbox-certs")],
                                 log=tmp_path / "sandbox.log", db=tmp_path / "sandbox.db")
    try:
        yield sandbox_target(proc)
    finally:
        proc.stop()
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(f"--- sandbox log ---\n{proc.log_path.read_text()[-6000:]}")
