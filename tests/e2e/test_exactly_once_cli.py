"""Issue 12's must-shows: exactly once under the faults the real platform makes.

The real ``gcbatch`` in subprocesses against a sandbox process over loopback HTTP; every
verdict is read on the *server* (jobs per case, the request log), not from gcbatch.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gcbatch.lockfile import load
from gcbatch.sandbox import SandboxProcess
from gcbatch.sandbox.lifecycle import make_mha

pytestmark = pytest.mark.slow

TOKEN = "demo-token"
FAST_JOBS = {"validating_seconds": 0.2, "queued_seconds": 0.1, "provisioned_seconds": 0.0,
             "executing_seconds": 0.2, "executed_seconds": 0.0}
UNLIMITED = {**FAST_JOBS, "max_active_jobs": 1000, "credits_per_month": 1_000_000}
JOBS = "/api/v1/algorithms/jobs/"


def run_cli(args: Sequence[str], cwd: Path, *, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GCBATCH_SERVER"}
    env["NO_COLOR"] = "1"
    env["GRAND_CHALLENGE_AUTHORIZATION"] = TOKEN
    return subprocess.run([sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def start_cli(args: Sequence[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "GCBATCH_SERVER"}
    env["GRAND_CHALLENGE_AUTHORIZATION"] = TOKEN
    env["NO_COLOR"] = "1"
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env,
                                stdout=out, stderr=out)


def server_jobs(sb: SandboxProcess, algorithm: str) -> list[dict[str, Any]]:
    with sb.client("demo") as http:
        alg = http.get("algorithms/", params={"slug": algorithm}).json()["results"][0]
        page = http.get("algorithms/jobs/", params={
            "algorithm_image__algorithm": alg["pk"], "limit": 1000}).json()
        assert page["next"] is None
        return list(page["results"])


def image_names(sb: SandboxProcess) -> dict[str, str]:
    with sb.client("demo") as http:
        page = http.get("cases/images/", params={"limit": 1000}).json()
        return {img["api_url"]: img["name"] for img in page["results"]}


def job_posts(sb: SandboxProcess) -> list[dict[str, Any]]:
    return [r for r in sb.admin.requests(0)["requests"]
            if r["method"] == "POST" and r["path"] == JOBS]


def settle(sb: SandboxProcess, algorithm: str, timeout: float = 60) -> list[dict[str, Any]]:
    """The algorithm's jobs once every upload input is attached (or the job ended)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = server_jobs(sb, algorithm)
        pending = [j for j in jobs if j["status"] == "Validating inputs"]
        if not pending or time.monotonic() > deadline:
            return jobs
        time.sleep(0.3)


def image_study(directory: Path, n: int) -> Path:
    scans = directory / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        voxels = bytes((i * 7 + k) % 256 for k in range(4 * 4 * 2))
        (scans / f"s{i:04d}.mha").write_bytes(make_mha(4, 4, voxels, depth=2))
    manifest = directory / "images.yaml"
    manifest.write_text(
        "version: 1\nalgorithm: lung-nodule-detector\ndefaults:\n  lung-volume: {value: 3.5}\n"
        "cases:\n  - foreach: {glob: 'scans/*.mha'}\n    id: 'scan-{stem}'\n"
        "    inputs:\n      ct-image: {file: '{path}'}\n")
    return manifest


def value_study(directory: Path, n: int) -> Path:
    lines = ["version: 1", "algorithm: risk-calculator", "defaults:",
             "  lung-volume: {value: 4.2}", "cases:"]
    for i in range(n):
        lines += [f"  - id: v{i:04d}", "    inputs:", f"      age: {{value: {i}}}"]
    path = directory / "values.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def file_study(directory: Path, name: str, cases: dict[str, tuple[int, str]]) -> Path:
    """A risk-calculator study whose cases also send a File (lab-report) each."""
    folder = directory / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["version: 1", "algorithm: risk-calculator", "defaults:",
             "  lung-volume: {value: 4.2}", "cases:"]
    for case_id, (age, text) in cases.items():
        (folder / f"{case_id}.json").write_text(json.dumps({"report": text}))
        lines += [f"  - id: {case_id}", "    inputs:", f"      age: {{value: {age}}}",
                  f"      lab-report: {{file: {case_id}.json}}"]
    manifest = folder / "study.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def apply_until_ok(args: Sequence[str], cwd: Path, *, rounds: int = 6,
                   timeout: float = 600) -> list[subprocess.CompletedProcess[str]]:
    runs = []
    for _ in range(rounds):
        result = run_cli(["apply", *args, "--json"], cwd, timeout=timeout)
        runs.append(result)
        assert result.returncode in (0, 1), result.stderr[-3000:]
        if result.returncode == 0:
            return runs
    raise AssertionError("apply never exited 0: " + runs[-1].stderr[-3000:])


def one_job_per_case(sb: SandboxProcess, lockfile: Path, *, images: bool) -> None:
    algorithm = "lung-nodule-detector" if images else "risk-calculator"
    jobs = settle(sb, algorithm)
    lock = load(lockfile)
    assert lock is not None and not lock.in_doubt
    locked = {cid: e.job.pk for cid, e in lock.cases.items() if e.job is not None}
    assert len(locked) == len(lock.cases) == len(jobs)
    assert sorted(locked.values()) == sorted(j["pk"] for j in jobs)
    per_case: Counter[str] = Counter()
    names = image_names(sb) if images else {}
    for job in jobs:
        if images:
            image = next(i["image"] for i in job["inputs"] if i["image"])
            per_case[names[image].split(".gcb-")[0]] += 1
        else:
            age = next(i["value"] for i in job["inputs"] if i["interface"]["slug"] == "age")
            per_case[f"v{age:04d}"] += 1
    assert set(per_case.values()) == {1}, per_case
    assert set(per_case) == set(locked)


# --------------------------------------------------------------------------- late commits


@pytest.mark.parametrize(("late", "window"), [(2, 8)])
def test_late_commits_and_dropped_answers_60_cases_60_jobs(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path, late: float,
    window: float,
) -> None:
    sb = sandbox_process(settings=UNLIMITED, faults=[
        f"POST algorithms/jobs/:late_commit:0.3:after={late}",
        "POST algorithms/jobs/:drop_after_commit:0.1",
    ], extra_args=["--fault-seed", "12"])
    images, values = image_study(tmp_path, 30), value_study(tmp_path, 30)
    common = ["--server", sb.api_url, "--max-active", "1000",
              "--answer-window", str(window), "--post-timeout", "30"]
    runs = apply_until_ok([str(images), *common], tmp_path)
    runs += apply_until_ok([str(values), *common], tmp_path)
    fired = {r["spec"].split(":")[1]: r["fired"] for r in sb.admin.faults()["rules"]}
    assert fired["late_commit"] >= 10 and fired["drop_after_commit"] >= 3, fired
    one_job_per_case(sb, tmp_path / "images.lock", images=True)
    one_job_per_case(sb, tmp_path / "values.lock", images=False)
    # every late commit was waited for: it was adopted, never followed by a second job
    outcomes = [c for r in runs for c in json.loads(r.stdout)["cases"]]
    assert any("found after" in c["message"] for c in outcomes), outcomes


@pytest.mark.skipif(os.environ.get("GCBATCH_SLOW_90") != "1",
                    reason="about 4 minutes (214 s measured on 2 busy cores): opt-in with "
                           "GCBATCH_SLOW_90=1; CI leaves it out")
def test_late_commits_90_seconds_late(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    test_late_commits_and_dropped_answers_60_cases_60_jobs(
        sandbox_process, tmp_path, late=90, window=100)


# --------------------------------------------------------------------------- bounded resends


def test_a_job_post_that_always_fails_is_sent_at_most_3_times_per_case(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(settings=UNLIMITED, faults=["POST algorithms/jobs/:500"])
    values = value_study(tmp_path, 2)
    started = time.monotonic()
    result = run_cli(["apply", str(values), "--server", sb.api_url, "--answer-window", "1",
                      "--json"], tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["summary"]["in_doubt"] == 2
    assert all("3 job POST(s) without an answer" in c["message"] for c in summary["cases"])
    # 3 per case, the documented bound (faulted requests never reach the request log)
    assert sb.admin.faults()["rules"][0]["seen"] == 6
    assert time.monotonic() - started < 60
    lock = load(tmp_path / "values.lock")
    assert lock is not None and set(lock.in_doubt) == {"v0000", "v0001"}


def test_a_job_post_that_hangs_is_bounded_in_time_too(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    # the sandbox holds every job POST for 30 s before it handles it (then makes the job)
    sb = sandbox_process(settings=UNLIMITED,
                         faults=["POST algorithms/jobs/:latency=30000"])
    values = value_study(tmp_path, 1)
    started = time.monotonic()
    result = run_cli(["apply", str(values), "--server", sb.api_url, "--answer-window", "1",
                      "--post-timeout", "1", "--json"], tmp_path, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    assert json.loads(result.stdout)["summary"]["in_doubt"] == 1
    assert elapsed < 25, elapsed  # 3 POSTs of 1 s, windows of 1 s, lookups: not 3 x 30 s
    # and nothing duplicates later: the next apply (after the server made its jobs)
    # adopts one of them, which the server's duplicate check kept to one
    time.sleep(max(0.0, 32 - elapsed))
    sb.admin.clear_faults()
    again = run_cli(["apply", str(values), "--server", sb.api_url, "--answer-window", "1",
                     "--json"], tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(settle(sb, "risk-calculator")) == 1


# --------------------------------------------------------------------------- guarded threads


def test_a_job_list_with_a_malformed_count_stops_apply_with_exit_1(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    settings = {**UNLIMITED, "max_active_jobs": 1, "executing_seconds": 2.0}
    sb = sandbox_process(settings=settings, faults=["GET algorithms/jobs/:garble:field=count"])
    values = value_study(tmp_path, 4)
    started = time.monotonic()
    result = run_cli(["apply", str(values), "--server", sb.api_url, "--max-active", "1"],
                     tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    assert "count" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert elapsed < 10, elapsed
    lock = load(tmp_path / "values.lock")
    assert lock is not None and not lock.in_doubt
    jobs = server_jobs(sb, "risk-calculator")
    locked = sorted(e.job.pk for e in lock.cases.values() if e.job is not None)
    assert locked == sorted(j["pk"] for j in jobs) and locked


# --------------------------------------------------------------------------- definite answers


def test_ctrl_c_while_cases_wait_for_a_slot_leaves_none_in_doubt(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    settings = {**UNLIMITED, "max_active_jobs": 2, "executing_seconds": 30.0}
    sb = sandbox_process(settings=settings)
    images = image_study(tmp_path, 6)
    log = tmp_path / "apply.log"
    # auto admission: the 3rd POST is refused "too many active jobs", the cases wait
    proc = start_cli(["apply", str(images), "--server", sb.api_url], tmp_path, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        refused = [r for r in job_posts(sb) if r["status"] == 400]
        if refused:
            break
        time.sleep(0.2)
    assert refused, log.read_text()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, log.read_text()
    plan = run_cli(["plan", str(images), "--server", sb.api_url], tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "?" not in plan.stdout and "in doubt" not in plan.stdout, plan.stdout
    lock = load(tmp_path / "images.lock")
    assert lock is not None and not lock.in_doubt
    assert len(server_jobs(sb, "lung-nodule-detector")) == 2


# --------------------------------------------------------------------------- File handles


def test_a_file_case_whose_answer_was_lost_is_adopted_among_other_jobs_on_its_socket(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(settings=UNLIMITED)
    # another study's job with a file on the same socket, equal values included
    other = file_study(tmp_path, "other", {"o1": (7, "someone else's")})
    assert run_cli(["apply", str(other), "--server", sb.api_url], tmp_path).returncode == 0
    # a Cancelled job with a file there too (its JSON is fine, its image... it is made
    # Cancelled by giving it an upload that was never completed)
    with sb.client("demo") as http:
        alg = http.get("algorithms/", params={"slug": "risk-calculator"}).json()["results"][0]
        up = http.post("uploads/", json={"filename": "lab-report.json"}).json()
        made = http.post("algorithms/jobs/", json={"algorithm": alg["api_url"], "inputs": [
            {"interface": "age", "value": 7}, {"interface": "lung-volume", "value": 4.2},
            {"interface": "lab-report", "user_upload": up["api_url"]}]})
        assert made.status_code == 201, made.text
    ours = file_study(tmp_path, "ours", {"f1": (7, "mine")})
    # the answer to our job POST is lost (the job is made)
    sb.admin.set_faults(["POST algorithms/jobs/:drop_after_commit:1:times=1"])
    result = run_cli(["apply", str(ours), "--server", sb.api_url, "--answer-window", "5",
                      "--json"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = settle(sb, "risk-calculator")
    assert len(jobs) == 3
    lock = load(ours.with_suffix(".lock"))
    assert lock is not None and not lock.in_doubt
    job = next(j for j in jobs if j["pk"] == lock.cases["f1"].job.pk)  # type: ignore[union-attr]
    stored = next(i["file"] for i in job["inputs"] if i["file"])
    assert stored.rsplit("/", 1)[-1].startswith("f1.gcb-")


def test_a_file_case_killed_before_its_post_whose_upload_expired_is_not_adopted(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    sb = sandbox_process(settings={**UNLIMITED, "executing_seconds": 0.5})
    ours = file_study(tmp_path, "ours", {"f1": (7, "mine")})
    # the job POST never reaches the application (reset), and we are killed while the
    # case waits for its answer window: the intent stays at stage "post"
    sb.admin.set_faults(["POST algorithms/jobs/:reset"])
    log = tmp_path / "apply.log"
    proc = start_cli(["apply", str(ours), "--server", sb.api_url, "--answer-window", "600"],
                     tmp_path, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not job_posts(sb):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.kill()
    proc.wait(timeout=30)
    sb.admin.clear_faults()
    lock = load(ours.with_suffix(".lock"))
    assert lock is not None and lock.in_doubt == ("f1",), log.read_text()
    # a day later: the upload expired, and another study ran with a file on that socket
    sb.admin.set_config(upload_expiry_seconds=0.001)
    time.sleep(0.2)
    other = file_study(tmp_path, "other", {"o1": (7, "someone else's")})
    sb.admin.set_config(upload_expiry_seconds=86400)
    assert run_cli(["apply", str(other), "--server", sb.api_url], tmp_path).returncode == 0
    # our re-run must not adopt the other study's job, and sends its case once
    again = run_cli(["apply", str(ours), "--server", sb.api_url, "--answer-window", "0",
                     "--json"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["summary"]["submitted"] == 1
    jobs = settle(sb, "risk-calculator")
    assert len(jobs) == 2
    lock = load(ours.with_suffix(".lock"))
    assert lock is not None and lock.cases["f1"].job is not None
    other_lock = load(other.with_suffix(".lock"))
    assert other_lock is not None and other_lock.cases["o1"].job is not None
    assert lock.cases["f1"].job.pk != other_lock.cases["o1"].job.pk
    mine = next(j for j in jobs if j["pk"] == lock.cases["f1"].job.pk)
    stored = next(i["file"] for i in mine["inputs"] if i["file"])
    assert stored.rsplit("/", 1)[-1].startswith("f1.gcb-")  # made from its own file
    # results.csv shows this case's own result (the job made from its own file)
    out = tmp_path / "results"
    wait = run_cli(["wait", str(ours), "--server", sb.api_url, "--timeout", "60"], tmp_path)
    assert wait.returncode == 0, wait.stderr
    dl = run_cli(["download", str(ours), "--server", sb.api_url, "--out", str(out)], tmp_path)
    assert dl.returncode == 0, dl.stderr
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["case_id"] for r in rows] == ["f1"]
    assert rows[0]["job_pk"] == lock.cases["f1"].job.pk


# --------------------------------------------------------------------------- bytes sent


def test_a_file_rewritten_after_fingerprinting_fails_its_case_before_its_post(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    # the first upload is held 4 s by the server: time to rewrite the first case's scan
    sb = sandbox_process(settings=UNLIMITED,
                         faults=["POST uploads/:latency=4000:times=1"])
    images = image_study(tmp_path, 3)
    first = tmp_path / "scans" / "s0000.mha"
    original = first.read_bytes()
    log, out = tmp_path / "apply.log", tmp_path / "apply.json"
    env = {k: v for k, v in os.environ.items() if k != "GCBATCH_SERVER"}
    env.update(GRAND_CHALLENGE_AUTHORIZATION=TOKEN, NO_COLOR="1")
    with out.open("wb") as stdout, log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gcbatch", "apply", str(images), "--server", sb.api_url,
             "--concurrency", "1", "--keep-going", "--json"],
            cwd=tmp_path, env=env, stdout=stdout, stderr=stderr)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            r["path"] == "/api/v1/algorithms/" for r in sb.admin.requests(0)["requests"]):
        time.sleep(0.05)
    time.sleep(1.5)
    changed = bytearray(original)
    changed[-1] ^= 0xFF  # same size, other bytes
    first.write_bytes(bytes(changed))
    assert proc.wait(timeout=120) == 1, log.read_text()
    report = json.loads(out.read_text())
    outcomes = {c["case"]: c for c in report["cases"]}
    assert outcomes["scan-s0000"]["outcome"] == "failed"
    assert "changed since apply fingerprinted it" in outcomes["scan-s0000"]["message"]
    assert {outcomes[c]["outcome"] for c in ("scan-s0001", "scan-s0002")} == {"submitted"}
    jobs = settle(sb, "lung-nodule-detector")
    names = image_names(sb)
    made_for = sorted(names[next(i["image"] for i in j["inputs"] if i["image"])]
                      .split(".gcb-")[0] for j in jobs)
    assert made_for == ["scan-s0001", "scan-s0002"]  # no job for the changed case
    lock = load(tmp_path / "images.lock")
    assert lock is not None and not lock.in_doubt and lock.cases["scan-s0000"].job is None



# --------------------------------------------------------------------------- .mhd + .raw


def test_mhd_pairs_keep_the_data_file_name_and_a_renamed_one_is_cancelled(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    import shutil

    example = Path(__file__).resolve().parents[2] / "examples" / "mhd-pair"
    study = tmp_path / "mhd-pair"
    shutil.copytree(example, study)
    sb = sandbox_process(settings=UNLIMITED)
    # the answer to the first job POST is lost: the pair's job is found by its header's name
    sb.admin.set_faults(["POST algorithms/jobs/:drop_after_commit:1:times=1"])
    result = run_cli(["apply", str(study / "study.yaml"), "--server", sb.api_url, "--json"],
                     tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert run_cli(["wait", str(study / "study.yaml"), "--server", sb.api_url,
                    "--timeout", "60"], tmp_path).returncode == 0
    jobs = settle(sb, "lung-nodule-detector")
    assert sorted(j["status"] for j in jobs) == ["Succeeded", "Succeeded"]
    names = sorted(n for n in image_names(sb).values() if ".gcb-" in n)
    assert [n.split(".gcb-")[0] for n in names] == ["vol-chest-a", "vol-chest-b"]
    assert all(n.endswith(".mhd") for n in names)
    # the platform's rule, in the sandbox: a data file uploaded under another name than
    # the header gives cannot be imported, the job ends Cancelled
    with sb.client("demo") as http:
        alg = http.get("algorithms/", params={"slug": "lung-nodule-detector"}).json()
        pks = []
        for name, path in (("x.mhd", "chest-a.mhd"), ("renamed.raw", "chest-a.raw")):
            data = (study / "volumes" / path).read_bytes()
            up = http.post("uploads/", json={"filename": name}).json()
            urls = http.patch(f"uploads/{up['pk']}/{up['s3_upload_id']}/generate-presigned-urls/",
                              json={"part_numbers": [1]}).json()["presigned_urls"]
            etag = httpx_put(urls["1"], data)
            done = http.patch(f"uploads/{up['pk']}/{up['s3_upload_id']}/complete-multipart-upload/",
                              json={"parts": [{"ETag": etag, "PartNumber": 1}]})
            assert done.status_code == 200, done.text
            pks.append(up["api_url"])
        made = http.post("algorithms/jobs/", json={
            "algorithm": alg["results"][0]["api_url"],
            "inputs": [{"interface": "ct-image", "user_uploads": pks}]})
        assert made.status_code == 201, made.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = next(j for j in server_jobs(sb, "lung-nodule-detector")
                      if j["pk"] == made.json()["pk"])["status"]
        if status == "Cancelled":
            break
        time.sleep(0.3)
    assert status == "Cancelled"


def httpx_put(url: str, data: bytes) -> str:
    import httpx

    response = httpx.put(url, content=data)
    assert response.status_code == 200, response.text
    return str(response.headers["etag"])
