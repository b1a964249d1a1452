"""Issue 18: a first apply that fails before submitting anything (a wrong token, an
unreachable server, a mistyped algorithm slug) leaves no lockfile that blocks the
corrected command. The real CLI, in subprocesses, against a sandbox on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from gcbatch.lockfile import load
from gcbatch.sandbox import RunningSandbox

pytestmark = pytest.mark.slow


def run_cli(args: Sequence[str], cwd: Path, token: str = "demo-token"
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GCBATCH_SERVER"}
    env.update(NO_COLOR="1", GRAND_CHALLENGE_AUTHORIZATION=token)
    return subprocess.run([sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def write_manifest(folder: Path, slug: str) -> Path:
    path = folder / "study.yaml"
    path.write_text(f"version: 1\nalgorithm: {slug}\ncases:\n  - id: c1\n    inputs:\n"
                    "      age: {value: 3}\n      lung-volume: {value: 4.2}\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_corrected_apply_succeeds(study: Path, server: str, sandbox: RunningSandbox
                                    ) -> None:
    result = run_cli(["apply", str(study), "--server", server], study.parent)
    assert result.returncode == 0, result.stderr
    lockfile = load(study.with_name("study.lock"))
    assert lockfile is not None and lockfile.server == server
    assert lockfile.cases["c1"].job is not None
    assert sandbox.admin.stats()["users"]["demo"]["jobs"] == 1


def test_wrong_token_then_the_right_one(sandbox_server: RunningSandbox,
                                        tmp_path: Path) -> None:
    study = write_manifest(tmp_path, "risk-calculator")
    failed = run_cli(["apply", str(study), "--server", sandbox_server.api_url], tmp_path,
                     token="not-a-token-of-this-server")
    assert failed.returncode != 0
    assert_corrected_apply_succeeds(study, sandbox_server.api_url, sandbox_server)


def test_unreachable_server_then_the_right_one(sandbox_server: RunningSandbox,
                                               tmp_path: Path) -> None:
    study = write_manifest(tmp_path, "risk-calculator")
    nowhere = f"http://127.0.0.1:{free_port()}/api/v1/"
    failed = run_cli(["apply", str(study), "--server", nowhere], tmp_path)
    assert failed.returncode == 1, failed.stderr
    assert "no answer from the server" in failed.stderr
    assert_corrected_apply_succeeds(study, sandbox_server.api_url, sandbox_server)


def test_mistyped_slug_then_the_right_one(sandbox_server: RunningSandbox,
                                          tmp_path: Path) -> None:
    study = write_manifest(tmp_path, "risk-calculater")
    failed = run_cli(["apply", str(study), "--server", sandbox_server.api_url], tmp_path)
    assert failed.returncode == 2, failed.stderr
    assert "risk-calculater" in failed.stderr
    write_manifest(tmp_path, "risk-calculator")
    assert_corrected_apply_succeeds(study, sandbox_server.api_url, sandbox_server)


def test_a_lockfile_with_cases_still_binds(sandbox_server: RunningSandbox,
                                           tmp_path: Path) -> None:
    """The exception is for a lockfile that records nothing: one with a submitted case
    is refused for another algorithm, as before."""
    study = write_manifest(tmp_path, "risk-calculator")
    assert_corrected_apply_succeeds(study, sandbox_server.api_url, sandbox_server)
    write_manifest(tmp_path, "lung-nodule-detector")
    refused = run_cli(["apply", str(study), "--server", sandbox_server.api_url], tmp_path)
    assert refused.returncode == 2
    assert "was made for algorithm 'risk-calculator'" in refused.stderr
