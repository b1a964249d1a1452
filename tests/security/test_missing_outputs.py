"""A Succeeded job without the outputs it should have is reported (issue 14, "Build" 7;
review F12).

A rewriting proxy in front of the sandbox takes two outputs out of one job's answers (a
platform on a bad day: the job says Succeeded, the results are not there). Before,
``download`` wrote what there was and exited 0; now it lists the case and its missing
outputs and exits 1, and the other cases are downloaded as usual.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hostile import RewritingProxy, cli_env, run_cli, value_study

from gcbatch.sandbox import RunningSandbox, SandboxConfig
from gcbatch.sandbox.http import Request, Response

pytestmark = pytest.mark.slow

INSTANT = {"validating_seconds": 0.0, "queued_seconds": 0.0, "provisioned_seconds": 0.0,
           "executing_seconds": 0.0, "executed_seconds": 0.0}


def _lose_outputs(job: dict[str, Any]) -> None:
    """Of the job for age 47: no ``report`` at all, a ``heatmap`` without its image."""
    if not any(i.get("value") == 47 for i in job.get("inputs", [])):
        return
    outputs = []
    for output in job.get("outputs", []):
        slug = output["interface"]["slug"]
        if slug == "report":
            continue
        if slug == "heatmap":
            output = {**output, "image": None}
        outputs.append(output)
    job["outputs"] = outputs


def _rewrite(request: Request, response: Response) -> Response:
    if request.method != "GET" or "/algorithms/jobs/" not in request.path \
            or response.status != 200:
        return response
    data = json.loads(response.body)
    for job in data.get("results", [data]):
        _lose_outputs(job)
    return Response(response.status, response.headers, json.dumps(data).encode())


def test_a_succeeded_job_missing_outputs_is_listed_and_download_fails(
    tmp_path: Path, home: Path, make_sandbox: Any, start: Any
) -> None:
    sb: RunningSandbox = make_sandbox(config=SandboxConfig(**INSTANT))
    proxy = start(RewritingProxy, sb.base_url, _rewrite)
    study = value_study(tmp_path)
    env = cli_env(token=sb.token("demo"), home=home)
    applied = run_cli(["apply", str(study), "--server", proxy.api_url], tmp_path, env)
    assert applied.code == 0, applied.err
    run = run_cli(["download", str(study), "--server", proxy.api_url, "--out", "out"],
                  tmp_path, env)
    assert run.code == 1, run.err
    assert ("error: case-47: the job Succeeded but its output(s) heatmap, report are "
            "missing") in run.err
    assert "case-61" not in run.err
    out = tmp_path / "out"
    assert (out / "case-61" / "report.json").is_file()  # the others as usual
    assert not (out / "case-47" / "report.json").exists()
    as_json = run_cli(["download", str(study), "--server", proxy.api_url, "--out", "out",
                       "--json"], tmp_path, env)
    assert as_json.code == 1
    assert json.loads(as_json.out)["download"]["missing_outputs"] == [
        {"case": "case-47", "socket": "heatmap"}, {"case": "case-47", "socket": "report"}]
