"""``gcbatch plan`` lists an in-doubt case's look-alike jobs; ``gcbatch adopt`` records one.

The real CLI in subprocesses against a sandbox process over loopback. A File case's job
POST is answered 504 and committed 3 s later (a late commit); apply is killed while it
waits out the answer window, so the case stays in doubt. Another study has a job with the
same values on the same socket. The user looks (plan), picks (adopt), and apply then has
nothing to send.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gcbatch.lockfile import load
from gcbatch.sandbox import SandboxProcess

pytestmark = pytest.mark.slow

TOKEN = "demo-token"
SETTINGS = {"validating_seconds": 0.2, "queued_seconds": 0.1, "provisioned_seconds": 0.0,
            "executing_seconds": 0.2, "executed_seconds": 0.0, "max_active_jobs": 1000,
            "credits_per_month": 1_000_000}
JOBS = "/api/v1/algorithms/jobs/"


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "GCBATCH_SERVER"}
    out.update(NO_COLOR="1", GRAND_CHALLENGE_AUTHORIZATION=TOKEN)
    return out


def run_cli(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=300, check=False)


def study(directory: Path, name: str, case: str, age: int) -> Path:
    folder = directory / name
    folder.mkdir()
    (folder / f"{case}.json").write_text(json.dumps({"report": name}))
    manifest = folder / "study.yaml"
    manifest.write_text(
        f"version: 1\nalgorithm: risk-calculator\ncases:\n  - id: {case}\n    inputs:\n"
        f"      age: {{value: {age}}}\n      lung-volume: {{value: 4.2}}\n"
        f"      lab-report: {{file: {case}.json}}\n")
    return manifest


def jobs_of(sb: SandboxProcess) -> list[dict[str, Any]]:
    with sb.client("demo") as http:
        alg = http.get("algorithms/", params={"slug": "risk-calculator"}).json()["results"][0]
        return list(http.get("algorithms/jobs/", params={
            "algorithm_image__algorithm": alg["pk"], "limit": 1000}).json()["results"])


def test_plan_lists_the_candidates_and_adopt_records_the_case_s_own(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(settings=SETTINGS)
    other = study(tmp_path, "other", "o1", 7)
    assert run_cli(["apply", str(other), "--server", sb.api_url], tmp_path).returncode == 0
    [other_job] = jobs_of(sb)
    ours = study(tmp_path, "ours", "f1", 7)
    sb.admin.set_faults(["POST algorithms/jobs/:late_commit:1:times=1,after=3"])
    log = tmp_path / "apply.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gcbatch", "apply", str(ours), "--server", sb.api_url,
             "--answer-window", "600"], cwd=tmp_path, env=env(), stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not sb.admin.faults()["rules"][0]["fired"]:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.kill()  # while f1 waits out its answer window
    proc.wait(timeout=30)
    lock = load(ours.with_suffix(".lock"))
    assert lock is not None and lock.in_doubt == ("f1",), log.read_text()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(jobs_of(sb)) < 2:
        time.sleep(0.3)  # the late commit
    time.sleep(0.5)  # its upload attaches
    late = next(j for j in jobs_of(sb) if j["pk"] != other_job["pk"])

    seq = sb.admin.requests(0)["requests"][-1]["seq"]
    shown = run_cli(["plan", str(ours), "--server", sb.api_url], tmp_path)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "? f1" in text and f"apply would adopt job {late['pk']}" in text, text
    assert f"{late['pk']}" in text and "carries this case's upload names (f1.gcb-" in text
    assert f"{other_job['pk']}" in text and "made for case o1" in text, text
    as_json = run_cli(["plan", str(ours), "--server", sb.api_url, "--json"], tmp_path)
    [examined] = json.loads(as_json.stdout)["in_doubt"]
    assert examined["apply_would"] == "adopt" and examined["job"] == late["pk"]

    refused = run_cli(["adopt", str(ours), "f1", other_job["pk"], "--server", sb.api_url],
                      tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "is not case 'f1''s: made for case o1" in refused.stderr, refused.stderr
    assert f"gcbatch plan {ours} --case f1" in refused.stderr
    assert "Traceback" not in refused.stderr
    done = run_cli(["adopt", str(ours), "f1", late["pk"], "--server", sb.api_url, "--json"],
                   tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["case"], doc["job"], doc["relation"], doc["forced"]) == (
        "f1", late["pk"], "ours", False)
    # plan, adopt: GETs only
    assert [r for r in sb.admin.requests(seq)["requests"]
            if r["method"] != "GET" and not r["path"].startswith("/_sandbox")] == []

    again = run_cli(["apply", str(ours), "--server", sb.api_url, "--json"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["summary"]["unchanged"] == 1
    assert len(jobs_of(sb)) == 2
    status = run_cli(["status", str(ours), "--server", sb.api_url, "--json"], tmp_path)
    assert status.returncode == 0, status.stderr
    assert [r["job"] for r in json.loads(status.stdout)["cases"]] == [late["pk"]]


def test_adopt_help_teaches_the_way_through(tmp_path: Path) -> None:
    shown = run_cli(["adopt", "--help"], tmp_path)
    assert shown.returncode == 0
    for words in ("Resolve a case left in doubt", "gcbatch plan study.yaml --case",
                  "--resubmit-in-doubt", "--force", "Exit 0 recorded, 2 refused"):
        assert words in shown.stdout, shown.stdout
    listed = run_cli(["--help"], tmp_path)
    assert "adopt" in listed.stdout
