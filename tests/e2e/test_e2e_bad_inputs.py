"""Bad input never half-sends, on either server: a clear message, exit 2, and no request
that could change anything (the proxy sees every request gcbatch makes), no job made.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_cli import mutating, run_cli, value_study
from e2e_target import WORLD, Target, new_run_id

pytestmark = pytest.mark.slow


def test_bad_local_state_and_settings_are_clear_errors_with_no_mutating_request(
    target: Target, tmp_path: Path
) -> None:
    study = value_study(tmp_path, 3, new_run_id())
    lockfile = study.lockfile
    base = ["apply", str(study.manifest)]
    before = target.job_count(study.algorithm)
    with target.proxy(tmp_path / "proxy") as proxy:
        lockfile.write_text("{ this is not json")
        corrupt = run_cli(target, base, tmp_path, proxy=proxy)
        assert corrupt.returncode == 2 and "not valid JSON" in corrupt.stderr

        lockfile.write_text(json.dumps({
            "format_version": 1, "server": "https://other.example/api/v1/",
            "algorithm": {"slug": study.algorithm},
            # (an empty lockfile binds nothing: issue 18)
            "cases": {"p0000": {"fingerprint": "x", "inputs": {}, "job": None}}}))
        foreign = run_cli(target, base, tmp_path, proxy=proxy)
        assert foreign.returncode == 2 and "other.example" in foreign.stderr
        lockfile.unlink()

        missing = run_cli(target, base, tmp_path, proxy=proxy, no_token=True)
        assert missing.returncode == 2 and "GRAND_CHALLENGE_AUTHORIZATION" in missing.stderr

        plain = run_cli(target, base, tmp_path, server="http://gc.example.org/api/v1/")
        assert plain.returncode == 2 and "http" in plain.stderr and "loopback" in plain.stderr

        # a second concurrent apply: hold the lock from another process
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time, pathlib\n"
             "from gcbatch.lockfile import FileLock\n"
             "lock = FileLock(pathlib.Path(sys.argv[1])); lock.acquire()\n"
             "print('held', flush=True); time.sleep(60)\n",
             str(lockfile.with_name(lockfile.name + ".lck"))],
            stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            second = run_cli(target, base, tmp_path, proxy=proxy)
            assert second.returncode == 2
            assert "held by another gcbatch" in second.stderr
            assert f"pid {holder.pid}" in second.stderr
        finally:
            holder.kill()
            holder.wait(10)
        assert mutating(proxy.requests()) == []
    assert target.job_count(study.algorithm) == before


def _one_case(folder: Path, inputs: str, *, algorithm: str = WORLD.algorithm) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "study.yaml"
    manifest.write_text(f"version: 1\nalgorithm: {algorithm}\ncases:\n"
                        f"  - id: only\n    inputs:\n{inputs}")
    return manifest


@pytest.mark.parametrize("kind", ["wrong type", "invalid JSON file", "unknown socket",
                                  "no interface", "no permission"])
def test_inputs_the_server_would_refuse_are_stopped_before_sending(
    target: Target, tmp_path: Path, kind: str
) -> None:
    run = new_run_id()
    token = None
    if kind == "wrong type":
        manifest = _one_case(tmp_path, f"      {WORLD.integer}: {{value: 'abc'}}\n")
        expect = WORLD.integer
    elif kind == "invalid JSON file":
        (tmp_path / "docs").mkdir(parents=True)
        (tmp_path / "docs" / "bad.json").write_text("{not json")
        manifest = _one_case(tmp_path, f"      {WORLD.json_file}: {{file: docs/bad.json}}\n")
        expect = "bad.json"
    elif kind == "unknown socket":
        manifest = _one_case(tmp_path, f"      no-such-socket-{run}: {{value: 1}}\n")
        expect = f"no-such-socket-{run}"
    elif kind == "no interface":  # two sockets that exist but fit no interface together
        manifest = _one_case(tmp_path, f"      {WORLD.integer}: {{value: {run}}}\n"
                                       f"      {WORLD.float}: {{value: 1.5}}\n")
        expect = WORLD.float
    else:
        if target.other_token is None:
            pytest.skip("no second user's token (GCBATCH_E2E_OTHER_TOKEN)")
        manifest = _one_case(tmp_path, f"      {WORLD.integer}: {{value: {run}}}\n")
        token = target.other_token
        expect = WORLD.algorithm
    before = target.job_count(WORLD.algorithm)
    with target.proxy(tmp_path / "proxy") as proxy:
        result = run_cli(target, ["apply", str(manifest)], tmp_path, proxy=proxy, token=token)
        sent = mutating(proxy.requests())
    assert result.returncode == 2, result.stdout + result.stderr
    assert expect in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert sent == []
    assert target.job_count(WORLD.algorithm) == before


def test_an_algorithm_without_an_image_is_refused_by_the_server_and_nothing_is_made(
    target: Target, tmp_path: Path
) -> None:
    """Nothing on the client side can know the algorithm has no active image: the job
    POST is sent and refused with the server's message; no job, no doubt."""
    manifest = _one_case(tmp_path, f"      {WORLD.integer}: {{value: {new_run_id()}}}\n",
                         algorithm=WORLD.imageless)
    with target.proxy(tmp_path / "proxy") as proxy:
        result = run_cli(target, ["apply", str(manifest), "--json"], tmp_path, proxy=proxy)
        posts = [e for e in proxy.requests() if e.method == "POST"]
    assert result.returncode != 0, result.stdout
    assert "Algorithm image is not ready to be used" in result.stdout + result.stderr
    assert [e.status for e in posts] == [400]
    assert target.job_count(WORLD.imageless) == 0
