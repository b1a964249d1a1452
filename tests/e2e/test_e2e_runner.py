"""The suite's runner itself: it says which server it ran against, and a live server that
is set but cannot be used stops the run at once with the reason (not 30 failing tests).

These run pytest on ``tests/e2e`` in a child process with their own environment, so
they run the same whichever server the outer run is pointed at.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
QUICK = "tests/e2e/test_e2e_platform.py::test_filters_given_no_uuid_or_an_unknown_one_answer_as_the_platform"


def _pytest(env_changes: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                             float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCBATCH_E2E_")}
    env.update(env_changes)
    env["GCBATCH_OPENAPI_CHECK"] = "0"  # the outer run checks the sandbox's answers
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "-q", "-p", "no:randomly", *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    return result, time.monotonic() - start


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns


def test_the_runner_says_it_ran_against_the_sandbox() -> None:
    result, _ = _pytest({}, QUICK)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "e2e: running against the sandbox" in result.stdout
    assert "e2e: ran against the sandbox" in result.stdout


def test_an_unreachable_live_server_stops_the_run_at_once_saying_why() -> None:
    port = _closed_port()
    result, elapsed = _pytest({"GCBATCH_E2E_SERVER": f"https://localhost:{port}/api/v1/",
                               "GCBATCH_E2E_TOKEN": "some-token"}, "tests/e2e")
    out = result.stdout + result.stderr
    assert result.returncode == 2, out[-3000:]
    assert f"e2e: running against the live server https://localhost:{port}/api/v1/" in out
    assert (f"e2e: GCBATCH_E2E_SERVER is set but the server cannot be used: cannot reach "
            f"https://localhost:{port}/api/v1/: ConnectError") in out
    assert " passed" not in out and " failed" not in out  # no test ran
    assert elapsed < 60  # collection and one refused connection, not a test run


def test_a_live_server_without_a_token_is_a_usage_error() -> None:
    result, _ = _pytest({"GCBATCH_E2E_SERVER": "https://localhost:1/api/v1/"}, QUICK)
    out = result.stdout + result.stderr
    assert result.returncode == 4, out[-3000:]  # pytest's usage error
    assert "GCBATCH_E2E_SERVER is set but GCBATCH_E2E_TOKEN is not" in out
