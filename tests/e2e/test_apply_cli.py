"""Issue 4's must-shows: the real ``gcbatch apply`` in subprocesses against a sandbox process.

Every test talks to a separate-process sandbox over loopback HTTP and checks the outcome
on the *server* (its admin stats and request log), not only what gcbatch says.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gcbatch.lockfile import load
from gcbatch.sandbox import SandboxProcess
from gcbatch.sandbox.lifecycle import make_mha

pytestmark = pytest.mark.slow

TOKEN = "demo-token"  # the sandbox seed's test token
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
FAST_JOBS = {"validating_seconds": 0.2, "queued_seconds": 0.1, "provisioned_seconds": 0.0,
             "executing_seconds": 0.2, "executed_seconds": 0.0}
#: for the many-case tests: no quota in the way
UNLIMITED = {**FAST_JOBS, "max_active_jobs": 1000, "credits_per_month": 1_000_000}


def run_cli(args: Sequence[str], cwd: Path, *, token: str | None = TOKEN,
            timeout: float = 120, extra_env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GRAND_CHALLENGE_AUTHORIZATION", "GCBATCH_SERVER")}
    env["NO_COLOR"] = "1"
    if token is not None:
        env["GRAND_CHALLENGE_AUTHORIZATION"] = token
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def start_cli(args: Sequence[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "GCBATCH_SERVER"}
    env["GRAND_CHALLENGE_AUTHORIZATION"] = TOKEN
    env["NO_COLOR"] = "1"
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env,
                                stdout=out, stderr=out)


def mutating(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in log if r["method"] in MUTATING and not r["path"].startswith("/_sandbox")]


def requests_since(sb: SandboxProcess, seq: int) -> list[dict[str, Any]]:
    return list(sb.admin.requests(seq)["requests"])


def last_seq(sb: SandboxProcess) -> int:
    return int(sb.admin.stats()["totals"]["requests"])


def demo_jobs(sb: SandboxProcess) -> int:
    return int(sb.admin.stats()["users"]["demo"]["jobs"])


def value_manifest(path: Path, n: int) -> Path:
    lines = ["version: 1", "algorithm: risk-calculator", "defaults:",
             "  lung-volume: {value: 4.2}", "cases:"]
    for i in range(n):
        lines += [f"  - id: p{i:04d}", "    inputs:", f"      age: {{value: {i}}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def image_manifest(directory: Path, n: int) -> Path:
    scans = directory / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        voxels = bytes((i * 7 + k) % 256 for k in range(4 * 4 * 2))
        (scans / f"s{i:04d}.mha").write_bytes(make_mha(4, 4, voxels, depth=2))
    manifest = directory / "study.yaml"
    manifest.write_text(
        "version: 1\nalgorithm: lung-nodule-detector\ndefaults:\n  lung-volume: {value: 3.5}\n"
        "cases:\n  - foreach: {glob: 'scans/*.mha'}\n    id: 'scan-{stem}'\n"
        "    inputs:\n      ct-image: {file: '{path}'}\n")
    return manifest


def server_jobs(sb: SandboxProcess, algorithm: str) -> list[dict[str, Any]]:
    with sb.client("demo") as http:
        alg = http.get("algorithms/", params={"slug": algorithm}).json()["results"][0]
        jobs: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = http.get("algorithms/jobs/", params={
                "algorithm_image__algorithm": alg["pk"], "limit": 1000, "offset": offset}).json()
            jobs += page["results"]
            if not page["next"]:
                return jobs
            offset += 1000


def image_names(sb: SandboxProcess) -> dict[str, str]:
    """image api_url → name, for every image the demo user can see."""
    with sb.client("demo") as http:
        names: dict[str, str] = {}
        offset = 0
        while True:
            page = http.get("cases/images/", params={"limit": 1000, "offset": offset}).json()
            names.update({img["api_url"]: img["name"] for img in page["results"]})
            if not page["next"]:
                return names
            offset += 1000


def assert_lockfile_matches_server(sb: SandboxProcess, lockfile: Path, n: int) -> None:
    """Exactly n jobs; the lockfile maps every case to the job made from its own upload."""
    deadline = time.monotonic() + 30
    while True:  # uploads attach to jobs when validated; wait until all have
        jobs = server_jobs(sb, "lung-nodule-detector")
        if all(any(i["image"] for i in j["inputs"]) or j["status"] == "Cancelled" for j in jobs) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(jobs) == n
    assert demo_jobs(sb) == n
    lock = load(lockfile)
    assert lock is not None and not lock.in_doubt
    assert len(lock.cases) == n
    names = image_names(sb)
    by_pk = {j["pk"]: j for j in jobs}
    locked = {cid: e.job.pk for cid, e in lock.cases.items() if e.job is not None}
    assert len(locked) == n and len(set(locked.values())) == n
    for case_id, pk in locked.items():
        job = by_pk[pk]
        image = next(i["image"] for i in job["inputs"] if i["image"])
        assert names[image].startswith(case_id + ".gcb-"), (case_id, names[image])


# --------------------------------------------------------------------------- tests


def test_apply_twice_creates_each_job_once_and_second_run_mutates_nothing(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(settings=FAST_JOBS)
    manifest = image_manifest(tmp_path, 12)
    first = run_cli(["apply", str(manifest), "--server", sb.api_url, "--json"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["summary"]["submitted"] == 12
    seq = last_seq(sb)
    second = run_cli(["apply", str(manifest), "--server", sb.api_url, "--json"], tmp_path)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)["summary"]
    assert summary["unchanged"] == 12 and summary["submitted"] == 0
    assert mutating(requests_since(sb, seq)) == []
    assert_lockfile_matches_server(sb, tmp_path / "study.lock", 12)


def test_crash_test_kill_9_at_30_random_moments(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """200 cases with tiny uploads; SIGKILL at 30 random moments; re-run each time.

    The sandbox commits a job before it answers, so a job a killed run asked for exists
    by the time the next run looks: a short answer window is safe here (against the
    platform's gateway it is not; see ``--answer-window``)."""
    sb = sandbox_process(settings=UNLIMITED)
    manifest = image_manifest(tmp_path, 200)
    args = ["apply", str(manifest), "--server", sb.api_url, "--max-active", "1000",
            "--reconcile-wait", "20", "--answer-window", "5"]
    log = tmp_path / "runs.log"
    kills = 0
    progress: list[int] = []
    for seed in range(30):
        # a "random moment" measured in the run's own progress (requests the server saw),
        # so the kills land mid-run whatever the machine's speed
        # (at most ~20 cases' worth of requests per run, so that 30 runs do not finish
        # the 200 cases early and leave nothing to kill)
        rng = random.Random(seed)
        target = rng.randint(1, 80)
        start = last_seq(sb)
        proc = start_cli(args, tmp_path, log)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            seen = [r for r in requests_since(sb, start) if not r["path"].startswith("/_sandbox")]
            if len(seen) >= target:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(30)
        progress.append(demo_jobs(sb))
    final = run_cli([*args, "--json"], tmp_path, timeout=120)
    assert final.returncode == 0, final.stderr + log.read_text()[-3000:]
    assert kills >= 20, (kills, progress)  # most runs really were killed
    # the kills hit the run at many different points, not only before it started
    assert len({p for p in progress if 0 < p < 200}) >= 5, progress
    assert_lockfile_matches_server(sb, tmp_path / "study.lock", 200)


def test_faults_300_cases_300_jobs_and_no_token_anywhere(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    faults = [
        "POST algorithms/jobs/:drop_after_commit:0.1",
        "GET,PUT,PATCH *:502:0.1",
        "GET,PUT,PATCH *:503:0.1",
        "POST uploads/:502:0.1",
        "POST uploads/:503:0.1",
        "*:429:1:skip=150,times=12,retry_after=0.2",
        "*:429:1:skip=700,times=12,retry_after=0.2",
        "*:429:1:skip=1300,times=12",
    ]
    sb = sandbox_process(settings=UNLIMITED, faults=faults)
    manifest = image_manifest(tmp_path, 300)
    result = run_cli(["apply", str(manifest), "--server", sb.api_url, "--max-active", "1000",
                      "--reconcile-wait", "30", "--json"], tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["summary"]["submitted"] == 300
    fired = {r["spec"]: r["fired"] for r in sb.admin.faults()["rules"]}
    assert fired["POST /api/v1/algorithms/jobs/:drop_after_commit:0.1"] >= 10, fired
    assert sum(n for spec, n in fired.items() if ":50" in spec) >= 100, fired
    assert sum(n for spec, n in fired.items() if ":429:" in spec) == 36, fired
    sb.admin.clear_faults()  # the checks below read the server with a plain client
    assert_lockfile_matches_server(sb, tmp_path / "study.lock", 300)
    # the token never appears in anything gcbatch wrote (the sandbox's own banner lists
    # its seed's test tokens, so its log is not gcbatch's to check)
    places = {"stdout": result.stdout, "stderr": result.stderr}
    for path in [*tmp_path.glob("study.lock*"), *(tmp_path / ".gcbatch").rglob("*")]:
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    assert str(tmp_path / "study.lock.journal") in places
    for where, text in places.items():
        assert TOKEN not in text, where


def test_credits_for_50_of_80_then_exactly_the_30(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(settings={**FAST_JOBS, "max_active_jobs": 1000,
                                   "credits_per_month": 50 * 20, "job_cost": 20})
    manifest = value_manifest(tmp_path / "study.yaml", 80)
    first = run_cli(["apply", str(manifest), "--server", sb.api_url, "--max-active", "1000"],
                    tmp_path)
    assert first.returncode == 4, first.stdout + first.stderr
    assert "50 submitted" in first.stdout and "30 wait" in first.stdout
    assert demo_jobs(sb) == 50
    sb.admin.set_config(credits_per_month=200 * 20)
    second = run_cli(["apply", str(manifest), "--server", sb.api_url, "--max-active", "1000",
                      "--json"], tmp_path)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)["summary"]
    assert summary["submitted"] == 30 and summary["unchanged"] == 50
    assert demo_jobs(sb) == 80


def test_bad_inputs_are_clear_errors_with_no_mutating_request(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(settings=FAST_JOBS)
    manifest = value_manifest(tmp_path / "study.yaml", 3)
    lockfile = tmp_path / "study.lock"
    base = ["apply", str(manifest), "--server", sb.api_url]
    seq = last_seq(sb)

    lockfile.write_text("{ this is not json")
    corrupt = run_cli(base, tmp_path)
    assert corrupt.returncode == 2 and "not valid JSON" in corrupt.stderr

    lockfile.write_text(json.dumps({"format_version": 1, "server": "https://other.example/api/v1/",
                                    "algorithm": {"slug": "risk-calculator"},
                                    # (an empty lockfile binds nothing: issue 18)
                                    "cases": {"p0000": {"fingerprint": "x", "inputs": {},
                                                        "job": None}}}))
    foreign = run_cli(base, tmp_path)
    assert foreign.returncode == 2 and "other.example" in foreign.stderr
    lockfile.unlink()

    missing = run_cli(base, tmp_path, token=None)
    assert missing.returncode == 2 and "GRAND_CHALLENGE_AUTHORIZATION" in missing.stderr

    plain = run_cli(["apply", str(manifest), "--server", "http://gc.example.org/api/v1/"],
                    tmp_path)
    assert plain.returncode == 2 and "http" in plain.stderr and "loopback" in plain.stderr

    # a second concurrent apply: hold the lock from another process
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, pathlib\n"
         "from gcbatch.lockfile import FileLock\n"
         "lock = FileLock(pathlib.Path(sys.argv[1])); lock.acquire()\n"
         "print('held', flush=True); time.sleep(60)\n",
         str(tmp_path / "study.lock.lck")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        second = run_cli(base, tmp_path)
        assert second.returncode == 2
        assert "held by another gcbatch" in second.stderr and f"pid {holder.pid}" in second.stderr
    finally:
        holder.kill()
        holder.wait(10)
    assert mutating(requests_since(sb, seq)) == []
    assert demo_jobs(sb) == 0


def test_kill_during_a_large_upload_then_resume_resends_under_60_percent(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(settings=FAST_JOBS)
    scans = tmp_path / "scans"
    scans.mkdir()
    width, height, depth = 256, 256, 640  # 40 MiB of voxels: 8 parts of 5 MiB
    voxels = random.Random(1).randbytes(width * height * depth)
    big = scans / "big.mha"
    big.write_bytes(make_mha(width, height, voxels, depth=depth))
    size = big.stat().st_size
    manifest = tmp_path / "study.yaml"
    manifest.write_text("version: 1\nalgorithm: lung-nodule-detector\ncases:\n"
                        "  - id: big\n    inputs:\n      ct-image: {file: scans/big.mha}\n")
    args = ["apply", str(manifest), "--server", sb.api_url]
    seq = last_seq(sb)
    proc = start_cli(args, tmp_path, tmp_path / "run1.log")
    deadline = time.monotonic() + 60
    parts_done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        entries = requests_since(sb, seq)
        parts_done = sum(1 for r in entries if r["method"] == "PUT" and r["status"] == 200)
        if parts_done >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert parts_done >= 4, (tmp_path / "run1.log").read_text()
    seq2 = last_seq(sb)
    again = run_cli([*args, "--json"], tmp_path)
    assert again.returncode == 0, again.stderr
    resent = json.loads(again.stdout)["bytes_uploaded"]
    assert resent < 0.6 * size, (resent, size)
    entries = requests_since(sb, seq2)
    assert not [r for r in entries if r["method"] == "POST" and r["path"].endswith("/uploads/")]
    assert demo_jobs(sb) == 1


def wait_for_jobs(sb: SandboxProcess, at_least: int, proc: subprocess.Popen[bytes],
                  timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if demo_jobs(sb) >= at_least:
            return
        time.sleep(0.02)


def test_ctrl_c_once_finishes_in_flight_twice_exits_at_once_and_nothing_is_lost(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(settings=UNLIMITED, latency_ms=30)
    manifest = value_manifest(tmp_path / "study.yaml", 150)
    args = ["apply", str(manifest), "--server", sb.api_url, "--max-active", "1000",
            "--concurrency", "2"]
    # once: a graceful stop, exit 130, a consistent lockfile with nothing in doubt
    log1 = tmp_path / "run1.log"
    proc = start_cli(args, tmp_path, log1)
    wait_for_jobs(sb, 10, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130, log1.read_text()
    assert "stopping" in log1.read_text()
    lock = load(tmp_path / "study.lock")
    assert lock is not None and not lock.in_doubt
    created = demo_jobs(sb)
    assert 10 <= created < 150
    assert sum(1 for e in lock.cases.values() if e.job) == created
    # twice: out at once; whatever was in flight is reconciled by the next run
    log2 = tmp_path / "run2.log"
    proc = start_cli(args, tmp_path, log2)
    wait_for_jobs(sb, created + 10, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130, log2.read_text()
    final = run_cli([*args, "--json"], tmp_path)
    assert final.returncode == 0, final.stderr
    assert demo_jobs(sb) == 150
    lock = load(tmp_path / "study.lock")
    assert lock is not None and not lock.in_doubt
    pks = [e.job.pk for e in lock.cases.values() if e.job]
    assert len(pks) == len(set(pks)) == 150
