"""A resend answered "Invalid hyperlink - Object does not exist" for our own upload.

The platform deletes an upload once the job that uses it has validated its inputs; a
job POST naming it afterwards is refused ``inputs[0].user_upload(s): Invalid hyperlink -
Object does not exist.``. When that answers a *resend*, the first POST made a job after
all (a late commit): the case must be looked up and adopted, never recorded as
rejected (the next apply would send fresh uploads: a second job).

Made on the sandbox over loopback: the first job POST is answered 504 at once and
committed 3 s later (``late_commit``); the answer window is 1 s, so gcbatch resends at
about 1 s with the same upload; that resend is held 6 s before the application sees it
(``latency``), by which time the late job has consumed the upload.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gcbatch.lockfile import load
from gcbatch.sandbox import SandboxProcess
from gcbatch.sandbox.lifecycle import make_mha

pytestmark = pytest.mark.slow

TOKEN = "demo-token"
SETTINGS = {"validating_seconds": 0.2, "queued_seconds": 0.1, "provisioned_seconds": 0.0,
            "executing_seconds": 0.2, "executed_seconds": 0.0, "max_active_jobs": 1000,
            "credits_per_month": 1_000_000}
JOBS = "/api/v1/algorithms/jobs/"
FAULTS = ["POST algorithms/jobs/:late_commit:1:times=1,after=3",
          "POST algorithms/jobs/:latency=6000:skip=1,times=1"]


def run_cli(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GCBATCH_SERVER"}
    env.update(NO_COLOR="1", GRAND_CHALLENGE_AUTHORIZATION=TOKEN)
    return subprocess.run([sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def image_study(directory: Path) -> tuple[Path, str]:
    (directory / "scans").mkdir()
    (directory / "scans" / "s1.mha").write_bytes(make_mha(4, 4, bytes(range(32)), depth=2))
    manifest = directory / "images.yaml"
    manifest.write_text(
        "version: 1\nalgorithm: lung-nodule-detector\ncases:\n  - id: scan-1\n"
        "    inputs:\n      ct-image: {file: scans/s1.mha}\n")
    return manifest, "scan-1"


def file_study(directory: Path) -> tuple[Path, str]:
    (directory / "r1.json").write_text(json.dumps({"report": "mine"}))
    manifest = directory / "files.yaml"
    manifest.write_text(
        "version: 1\nalgorithm: risk-calculator\ncases:\n  - id: r1\n    inputs:\n"
        "      age: {value: 7}\n      lung-volume: {value: 4.2}\n"
        "      lab-report: {file: r1.json}\n")
    return manifest, "r1"


def jobs_of(sb: SandboxProcess, algorithm: str) -> list[dict[str, Any]]:
    with sb.client("demo") as http:
        alg = http.get("algorithms/", params={"slug": algorithm}).json()["results"][0]
        return list(http.get("algorithms/jobs/", params={
            "algorithm_image__algorithm": alg["pk"], "limit": 1000}).json()["results"])


@pytest.mark.parametrize("kind", ["image", "file"])
def test_a_resend_refused_for_a_consumed_upload_adopts_the_late_job(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path, kind: str
) -> None:
    sb = sandbox_process(settings=SETTINGS, faults=FAULTS)
    manifest, case = image_study(tmp_path) if kind == "image" else file_study(tmp_path)
    algorithm = "lung-nodule-detector" if kind == "image" else "risk-calculator"
    result = run_cli(["apply", str(manifest), "--server", sb.api_url, "--answer-window", "1",
                      "--json"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    fired = [r["fired"] for r in sb.admin.faults()["rules"]]
    assert fired == [1, 1], fired  # the late commit, and the held resend
    # the resend was refused for the upload the late job had consumed ...
    refused = [r for r in sb.admin.requests(0)["requests"]
               if r["method"] == "POST" and r["path"] == JOBS and r["status"] == 400]
    assert len(refused) == 1, refused
    # ... and the case was looked up and adopted: submitted, its job the late one
    [outcome] = json.loads(result.stdout)["cases"]
    assert outcome["outcome"] == "submitted", outcome
    assert "upload no longer exists" in outcome["message"], outcome
    jobs = jobs_of(sb, algorithm)
    assert len(jobs) == 1, jobs
    lock = load(manifest.with_suffix(".lock"))
    assert lock is not None and not lock.in_doubt
    entry = lock.cases[case]
    assert entry.job is not None and entry.job.pk == jobs[0]["pk"]
    # never recorded rejected: the next apply has nothing to send
    again = run_cli(["apply", str(manifest), "--server", sb.api_url, "--json"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["summary"]["unchanged"] == 1
    assert len(jobs_of(sb, algorithm)) == 1


def test_uploads_consumed_just_before_a_resend_are_looked_up_not_sent_afresh(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    # the late commit comes 1.5 s after the POST, just after the 1 s answer window: the
    # last look saw no job; the resend's check of its upload is held 3 s, and by then the
    # late job has consumed it. "Gone" says what "Invalid hyperlink" says: a job took it.
    sb = sandbox_process(settings=SETTINGS, faults=[
        "POST algorithms/jobs/:late_commit:1:times=1,after=1.5",
        "GET uploads/*:latency=3000:skip=2,times=1"])
    manifest, case = file_study(tmp_path)
    result = run_cli(["apply", str(manifest), "--server", sb.api_url, "--answer-window", "1",
                      "--json"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["fired"] for r in sb.admin.faults()["rules"]] == [1, 1]
    jobs = jobs_of(sb, "risk-calculator")
    assert len(jobs) == 1, jobs  # never a second job from fresh uploads
    [outcome] = json.loads(result.stdout)["cases"]
    assert outcome["outcome"] == "submitted", outcome
    lock = load(manifest.with_suffix(".lock"))
    assert lock is not None and not lock.in_doubt
    assert lock.cases[case].job is not None and lock.cases[case].job.pk == jobs[0]["pk"]
