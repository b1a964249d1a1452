"""``gcbatch status``/``wait``/``download`` as a user runs them: real CLI processes against
a sandbox on loopback HTTP, counted through the sandbox's request log.

Jobs are created straight through the API (fast: no uploads) and tied to cases in a
lockfile written with :mod:`gcbatch.lockfile`, exactly as ``apply`` leaves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from gcbatch import lockfile as lockmod
from gcbatch.engine.download_record import STATE_NAME
from gcbatch.lockfile import AlgorithmRef, CaseEntry, JobRecord, Lockfile
from gcbatch.sandbox import RunningSandbox, SandboxConfig
from gcbatch.sandbox import lifecycle as lc
from gcbatch.sandbox.seed import load_seed

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ALG = "risk-calculator"
INSTANT = {"validating_seconds": 0.0, "queued_seconds": 0.0, "provisioned_seconds": 0.0,
           "executing_seconds": 0.0, "executed_seconds": 0.0}
UNLIMITED = {"max_active_jobs": 1_000_000, "credits_per_month": 10**9}


# --------------------------------------------------------------------------- helpers


def _config(**changes: Any) -> SandboxConfig:
    # real S3 refuses a presigned GET that also carries a token: so must the sandbox here
    base: dict[str, Any] = {**UNLIMITED, **INSTANT, "storage_rejects_authorization": True}
    base.update(changes)
    return SandboxConfig(**base)


def _api(sb: RunningSandbox) -> httpx.Client:
    return sb.client("demo", transport=sb.transport())  # in-process: fast job creation


def _algorithm(sb: RunningSandbox) -> dict[str, Any]:
    with _api(sb) as api:
        found: dict[str, Any] = api.get("algorithms/", params={"slug": ALG}).json()["results"][0]
        return found


def _create_jobs(sb: RunningSandbox, ages: Sequence[int], volume: float = 4.2
                 ) -> list[dict[str, Any]]:
    alg = _algorithm(sb)
    jobs = []
    with _api(sb) as api:
        for age in ages:
            answer = api.post("algorithms/jobs/", json={
                "algorithm": alg["api_url"],
                "inputs": [{"interface": "age", "value": age},
                           {"interface": "lung-volume", "value": volume}]})
            assert answer.status_code == 201, answer.text
            jobs.append(answer.json())
    return jobs


def _study(tmp: Path, ages: Sequence[int], volume: float = 4.2) -> Path:
    """A manifest with one case per age: ``case-<age>`` from ``ages/<age>.json`` (a glob
    generator, as a real study of 2000 scans would be written)."""
    folder = tmp / "ages"
    folder.mkdir(exist_ok=True)
    for age in ages:
        (folder / f"{age:05d}.json").write_text(json.dumps(age), encoding="utf-8")
    path = tmp / "study.yaml"
    path.write_text(
        f"version: 1\nalgorithm: {ALG}\n"
        f"defaults:\n  lung-volume: {{value: {volume}}}\n"
        "cases:\n"
        "  - foreach: {glob: \"ages/*.json\"}\n"
        "    id: \"case-{stem}\"\n"
        "    inputs:\n"
        "      age: {json: \"{path}\"}\n",
        encoding="utf-8",
    )
    return path


def _lock(manifest: Path, sb: RunningSandbox, ages: Sequence[int],
          jobs: Sequence[dict[str, Any]]) -> Path:
    alg = _algorithm(sb)
    cases = {}
    for age, job in zip(ages, jobs, strict=True):
        record = JobRecord(pk=job["pk"], api_url=f"{sb.api_url}algorithms/jobs/{job['pk']}/",
                           status=job["status"], submitted_at="2026-11-27T14:00:00Z",
                           fingerprint="sha256:test")
        cases[f"case-{age:05d}"] = CaseEntry(fingerprint="sha256:test", job=record)
    path = lockmod.lockfile_path_for(manifest)
    lockmod.save(path, Lockfile(server=sb.api_url,
                                algorithm=AlgorithmRef(ALG, alg["pk"], alg["api_url"]),
                                cases=cases))
    return path


def _env(sb: RunningSandbox) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GCBATCH_SERVER", "GRAND_CHALLENGE_AUTHORIZATION")}
    env["GRAND_CHALLENGE_AUTHORIZATION"] = sb.token("demo")
    env["NO_COLOR"] = "1"
    return env


def _cmd(sb: RunningSandbox, *args: str) -> list[str]:
    return [sys.executable, "-m", "gcbatch", *args, "--server", sb.api_url]


def _run(sb: RunningSandbox, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(sb, *args), env=_env(sb), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _log_since(sb: RunningSandbox, seq: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = sb.admin.requests(since=seq)["requests"]
    return entries


def _last_seq(sb: RunningSandbox) -> int:
    return int(sb.admin.requests(since=10**12)["last"])


def _api_requests(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if not e["path"].startswith("/_sandbox/")]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- status


def test_status_of_2000_jobs_takes_a_handful_of_requests(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    sb = make_sandbox(config=_config(failure_rate=0.05, rng_seed=7))
    ages = list(range(2000))
    jobs = _create_jobs(sb, ages)
    manifest = _study(tmp_path, ages)
    lock_path = _lock(manifest, sb, ages, jobs)

    seq = _last_seq(sb)
    result = _run(sb, "status", str(manifest), "--json")
    requests = _api_requests(_log_since(sb, seq))
    print(f"status of {len(ages)} jobs: {len(requests)} API requests "
          f"(the per-job loop would make {len(ages)})")
    assert result.returncode == 1, result.stderr  # some jobs Failed (failure_rate)
    assert len(requests) <= 5
    assert {r["path"] for r in requests} == {"/api/v1/algorithms/jobs/"}
    assert all(r["had_authorization"] and r["status"] == 200 for r in requests)

    data = json.loads(result.stdout)
    counts = data["summary"]["counts"]
    assert data["summary"]["total"] == 2000 and data["recorded"] is True
    assert set(counts) == {"Succeeded", "Failed"} and counts["Failed"] > 0
    server_statuses = {j["pk"]: j["status"] for j in _all_jobs(sb)}
    assert {c["job"]: c["status"] for c in data["cases"]} == server_statuses

    saved = lockmod.load(lock_path)
    assert saved is not None
    assert {e.job.pk: e.job.status for e in saved.cases.values() if e.job} == server_statuses


def _all_jobs(sb: RunningSandbox) -> list[dict[str, Any]]:
    alg = _algorithm(sb)
    out: list[dict[str, Any]] = []
    with _api(sb) as api:
        offset = 0
        while True:
            page = api.get("algorithms/jobs/", params={
                "algorithm_image__algorithm": alg["pk"], "limit": 1000, "offset": offset}).json()
            out += page["results"]
            offset += 1000
            if not page["next"]:
                return out


def test_status_exit_codes_and_case_filter(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    sb = make_sandbox(config=_config())
    ages = [30, 31, 32]
    manifest = _study(tmp_path, [*ages, 33])  # case-00033 never applied
    _lock(manifest, sb, ages, _create_jobs(sb, ages))
    result = _run(sb, "status", str(manifest))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "4 cases: 1 Not submitted, 3 Succeeded"
    assert lines[1].split() == ["CASE", "JOB", "STATUS", "DURATION"]
    assert lines[2].split()[0::2] == ["case-00030", "Succeeded"]
    assert lines[5].split() == ["case-00033", "-", "Not", "submitted", "-"]
    one = _run(sb, "status", str(manifest), "--case", "case-00031", "--json")
    assert [c["case"] for c in json.loads(one.stdout)["cases"]] == ["case-00031"]
    typo = _run(sb, "status", str(manifest), "--case", "case-99999")
    assert typo.returncode == 2 and "case-99999" in typo.stderr

    # download of one case: only its outputs, but the tables cover every case
    out = tmp_path / "one"
    one_dl = _run(sb, "download", str(manifest), "--out", str(out), "--case", "case-00031")
    assert one_dl.returncode == 0, one_dl.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["case-00031"]
    table = (out / "results.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in table[1:]] == [
        "case-00030", "case-00031", "case-00032", "case-00033"]
    assert table[4].startswith("case-00033,,Not submitted,json ages/00033.json,value 4.2")


# --------------------------------------------------------------------------- wait


def test_wait_returns_within_one_poll_interval_of_the_last_job(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    # 6 s per job: long enough for wait (a new process) to be polling well before the end
    phases = {"validating_seconds": 1.0, "queued_seconds": 1.0, "provisioned_seconds": 0.5,
              "executing_seconds": 3.0, "executed_seconds": 0.5}
    sb = make_sandbox(config=_config(**phases))
    ages = [40, 41, 42, 43]
    manifest = _study(tmp_path, ages)
    jobs = _create_jobs(sb, ages[:2])
    # the last job starts later, so it ends ~1.5 s after the others
    time.sleep(1.5)
    jobs += _create_jobs(sb, ages[2:])
    last_end = time.time() + sum(phases.values())
    _lock(manifest, sb, ages, jobs)

    poll = 1.0
    seq = _last_seq(sb)
    start = time.time()
    result = _run(sb, "wait", str(manifest), "--poll-interval", "1s", "--timeout", "60s")
    returned = time.time()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "4 cases: 4 Succeeded"
    # the sandbox's request log (same clock) says when each poll happened
    polls = [e["time"] for e in _api_requests(_log_since(sb, seq))
             if e["path"].startswith("/api/v1/algorithms/jobs/")]
    print(f"wait: {len(polls)} polls; the last {polls[-1] - last_end:.2f}s after the last job "
          f"ended (poll interval {poll}s); exited {returned - last_end:.2f}s after it, "
          f"{returned - start:.2f}s after it started")
    assert len(polls) >= 3  # it really waited
    assert polls[-1] >= last_end - 0.2  # the poll that saw the end came after it ...
    assert polls[-1] - last_end <= poll + 1.0  # ... within one poll interval (+ request time)
    assert returned - polls[-1] <= 2.0  # and wait exited right after that poll
    saved = lockmod.load(lockmod.lockfile_path_for(manifest))
    assert saved is not None
    assert {e.job.status for e in saved.cases.values() if e.job} == {"Succeeded"}
    # plain progress lines on a non-terminal stderr
    assert "ended:" in result.stderr


def test_wait_respects_the_timeout(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    sb = make_sandbox(config=_config(executing_seconds=3600.0))
    ages = [50, 51]
    manifest = _study(tmp_path, ages)
    _lock(manifest, sb, ages, _create_jobs(sb, ages))
    start = time.time()
    result = _run(sb, "wait", str(manifest), "--timeout", "2s", "--poll-interval", "1s", "--json")
    elapsed = time.time() - start
    assert result.returncode == 5, result.stderr
    assert "timed out" in result.stderr
    assert 2.0 <= elapsed <= 2.0 + 1.0 + 2.0  # deadline + one poll + start-up
    data = json.loads(result.stdout)
    assert data["timed_out"] is True and data["summary"]["counts"] == {"Executing": 2}
    saved = lockmod.load(lockmod.lockfile_path_for(manifest))
    assert saved is not None
    assert {e.job.status for e in saved.cases.values() if e.job} == {"Executing"}


def test_wait_ctrl_c_leaves_the_lockfile_consistent(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    sb = make_sandbox(config=_config(executing_seconds=3600.0))
    ages = [60, 61]
    manifest = _study(tmp_path, ages)
    lock_path = _lock(manifest, sb, ages, _create_jobs(sb, ages))
    # as on a terminal: Ctrl-C delivered (a test run started in the background inherits
    # SIGINT ignored, and Python keeps an ignored SIGINT ignored)
    proc = subprocess.Popen(_cmd(sb, "wait", str(manifest), "--poll-interval", "1s"),
                            env=_env(sb), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 30
        while time.time() < deadline:  # until the first poll was recorded
            saved = lockmod.load(lock_path)
            if saved and all(e.job and e.job.status == "Executing" for e in saved.cases.values()):
                break
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    saved = lockmod.load(lock_path)  # parses: consistent
    assert saved is not None and len(saved.cases) == 2
    # and the OS lock was released: status can record again
    again = _run(sb, "status", str(manifest))
    assert again.returncode == 0 and "not recorded" not in again.stderr


# --------------------------------------------------------------------------- download


def _expected_files(sb: RunningSandbox, jobs: Sequence[dict[str, Any]], ages: Sequence[int]
                    ) -> dict[str, str]:
    """relative path → sha256 of the sandbox's own copy, fetched independently."""
    expected: dict[str, str] = {}
    by_pk = {j["pk"]: j for j in _all_jobs(sb)}
    with httpx.Client(follow_redirects=False, timeout=30, trust_env=False) as raw, _api(sb) as api:
        def fetch(url: str) -> bytes:
            first = raw.get(url, headers={"Authorization": f"Bearer {sb.token('demo')}"})
            assert first.status_code == 302, first.text
            second = raw.get(first.headers["location"])
            assert second.status_code == 200
            return second.content

        for age, job in zip(ages, jobs, strict=True):
            case = f"case-{age:05d}"
            for out in by_pk[job["pk"]]["outputs"]:
                socket = out["interface"]
                rel = f"{case}/{socket['relative_path']}"
                if socket["super_kind"] == "Value":
                    text = json.dumps(out["value"], indent=2, ensure_ascii=False) + "\n"
                    expected[rel] = _sha(text.encode())
                elif socket["super_kind"] == "File":
                    expected[rel] = _sha(fetch(out["file"]))
                else:
                    image = api.get(out["image"]).json()
                    for f in image["files"]:
                        expected[f"{rel}/{f['file'].rsplit('/', 1)[-1]}"] = _sha(fetch(f["file"]))
    return expected


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): _sha(p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in (STATE_NAME, "results.csv", "results.json")
    }


def test_download_twice_the_second_run_downloads_nothing(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    sb = make_sandbox(config=_config())
    ages = [70, 71, 72]
    manifest = _study(tmp_path, ages)
    jobs = _create_jobs(sb, ages)
    _lock(manifest, sb, ages, jobs)
    out = tmp_path / "results"

    seq = _last_seq(sb)
    first = _run(sb, "download", str(manifest), "--out", str(out), "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)["download"]
    assert summary["files_downloaded"] == 6 and summary["values_written"] == 6
    log = _api_requests(_log_since(sb, seq))
    media = [e for e in log if e["path"].startswith("/media/")]
    storage = [e for e in log if e["path"].startswith("/_storage/")]
    assert len(media) == len(storage) == 6
    assert all(e["had_authorization"] for e in media)
    assert not any(e["had_authorization"] for e in storage)  # the token never follows a 302
    assert _tree(out) == _expected_files(sb, jobs, ages)

    csv_before = (out / "results.csv").read_bytes()
    seq = _last_seq(sb)
    second = _run(sb, "download", str(manifest), "--out", str(out), "--json")
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)["download"]
    assert summary["files_downloaded"] == 0 and summary["files_skipped"] == 6
    assert summary["values_written"] == 0 and summary["images_resolved"] == 0
    log = _api_requests(_log_since(sb, seq))
    assert {e["path"] for e in log} <= {"/api/v1/algorithms/jobs/", "/api/v1/algorithms/"}
    print(f"second download: {len(log)} requests, none for files")
    assert (out / "results.csv").read_bytes() == csv_before  # deterministic bytes


def test_download_killed_mid_way_then_resumed_is_complete_and_identical(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    sb = make_sandbox(config=_config())
    ages = list(range(100, 180))  # 80 cases, 160 files
    manifest = _study(tmp_path, ages)
    jobs = _create_jobs(sb, ages)
    _lock(manifest, sb, ages, jobs)
    expected = _expected_files(sb, jobs, ages)
    out = tmp_path / "results"

    sb.admin.set_faults(None, latency_ms=25)  # slow enough to be caught mid-way
    proc = subprocess.Popen(_cmd(sb, "download", str(manifest), "--out", str(out),
                                 "--workers", "4"),
                            env=_env(sb), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=ROOT)
    try:
        state = out / STATE_NAME
        deadline = time.time() + 60
        done = 0
        while time.time() < deadline and proc.poll() is None:
            done = len(state.read_bytes().splitlines()) if state.exists() else 0
            if done >= 30:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "download finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = _tree(out)
    assert 0 < len(partial) < len(expected) + len(ages) * 2
    sb.admin.set_faults(None, latency_ms=0)

    again = _run(sb, "download", str(manifest), "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)["download"]
    print(f"killed after ~{done} files; resumed: {summary}")
    assert summary["files_skipped"] >= 20 and summary["files_downloaded"] > 0
    assert _tree(out) == expected  # every file complete and byte-identical (by hash)
    assert not [p for p in out.rglob("*") if p.name.endswith("part")]


# --------------------------------------------------------------------------- quickstart


def test_quickstart_results_csv_matches_the_derived_outputs(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    import csv
    import io
    import shutil

    example = ROOT / "examples" / "quickstart"
    study_dir = tmp_path / "quickstart"
    shutil.copytree(example, study_dir)
    manifest = study_dir / "study.yaml"
    sb = make_sandbox(config=_config())

    applied = _run(sb, "apply", str(manifest))
    assert applied.returncode == 0, applied.stderr
    waited = _run(sb, "wait", str(manifest), "--timeout", "60s", "--poll-interval", "1s")
    assert waited.returncode == 0, waited.stderr
    out = tmp_path / "results"
    downloaded = _run(sb, "download", str(manifest), "--out", str(out))
    assert downloaded.returncode == 0, downloaded.stderr

    # what the sandbox derives from each case's inputs (lifecycle.derive_outputs)
    seed = load_seed(None)
    alg = seed.algorithm_by_slug(ALG)
    assert alg is not None
    labs = study_dir / "labs"
    described: dict[str, dict[str, Any]] = {
        "patient-001": {"age": 61, "lung-volume": 4.2},
        "patient-002": {"age": 47, "lung-volume": 5.1, "lab-report": {
            "file_sha256": _sha((labs / "patient-002.json").read_bytes())}},
        "patient-003": {"age": json.loads((labs / "patient-003-age.json").read_text()),
                        "lung-volume": 4.2},
    }
    rows = {r["case_id"]: r for r in csv.DictReader(io.StringIO((out / "results.csv").read_text()))}
    assert set(rows) == set(described)
    for case_id, inputs in described.items():
        iface = next(i for i in alg.interfaces if set(i.inputs) == set(inputs))
        sockets = [seed.socket(slug) for slug in iface.outputs]
        derived = {o.socket: o for o in lc.derive_outputs(ALG, [s for s in sockets if s], inputs)}
        row = rows[case_id]
        assert row["status"] == "Succeeded"
        assert float(row["output:malignancy-risk"]) == derived["malignancy-risk"].value
        assert json.loads(row["output:findings"]) == derived["findings"].value
        report = out / case_id / "report.json"
        assert report.read_bytes() == derived["report"].data
        heatmap = list((out / case_id / "images" / "heatmap").iterdir())
        assert [p.read_bytes() for p in heatmap] == [derived["heatmap"].data]
        assert row["input:age"] and row["input:lung-volume"]
