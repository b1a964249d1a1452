"""``examples/slurm/``, tested without SLURM: the array's batch script run as N local
processes at once (each with the variables SLURM gives an array task), then the merge
script, against a sandbox on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_shards_cli import ROOT, _config, _env, _pairs, _server_pairs, _study

from gcbatch.sandbox import RunningSandbox

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")]

EXAMPLE = ROOT / "examples" / "slurm"


def test_array_tasks_then_merge_as_local_processes(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    sb = make_sandbox(config=_config())
    manifest = _study(tmp_path, list(range(30)))
    env = {**_env(sb), "MANIFEST": str(manifest), "GCBATCH": f"{sys.executable} -m gcbatch",
           "GCBATCH_SERVER": sb.api_url, "SLURM_ARRAY_TASK_MAX": "2",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    tasks = [subprocess.Popen(["bash", str(EXAMPLE / "apply-shard.sbatch")],
                              env={**env, "SLURM_ARRAY_TASK_ID": str(i)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    for task in tasks:
        _, err = task.communicate(timeout=300)
        assert task.returncode == 0, err
    assert sorted(p.name for p in tmp_path.glob("study.shard-*.lock")) == [
        f"study.shard-{i}-of-3.lock" for i in range(3)]

    merged = subprocess.run(["bash", str(EXAMPLE / "merge.sbatch")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert merged.returncode == 0, merged.stderr
    server = _server_pairs(sb)
    assert len(server) == 30
    assert _pairs(tmp_path / "study.lock") == {f"case-{a:05d}": pk for a, pk in server.items()}


def test_the_array_script_refuses_to_run_outside_an_array(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(EXAMPLE / "apply-shard.sbatch")], cwd=tmp_path,
                            env={"PATH": os.environ["PATH"]}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0 and "job array" in result.stderr
