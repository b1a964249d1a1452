"""``gcbatch status``/``wait``/``download`` and the results tables as a user runs them,
against either server. Requests are counted by the suite's proxy.

The tests of file outputs (byte-identical downloads, resumed downloads, the token never
following a redirect to storage) need algorithms that output files and images, which
only the sandbox's default world has: ``test_e2e_files.py``.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_cli import run_cli, summary, value_study
from e2e_proxy import FaultProxy
from e2e_target import WORLD, Target, new_run_id

from gcbatch import lockfile as lockmod

pytestmark = pytest.mark.slow


def _applied(target: Target, tmp_path: Path, n: int, *, proxy: FaultProxy | None,
             algorithm: str = WORLD.algorithm) -> tuple[Path, dict[str, int]]:
    study = value_study(tmp_path, n, new_run_id(), algorithm=algorithm)
    _apply(target, study.manifest, proxy, n)
    return study.manifest, study.cases


def _apply(target: Target, manifest: Path, proxy: FaultProxy | None, n: int,
           *extra: str) -> None:
    args = ["apply", str(manifest), "--json", *extra]
    if not target.is_live:
        args += ["--max-active", "10000"]
    result = run_cli(target, args, manifest.parent, proxy=proxy)
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary(result)["submitted"] == n


def test_status_of_many_jobs_takes_a_handful_of_requests(target: Target, tmp_path: Path) -> None:
    n = 2000 if not target.is_live else 60
    target.tune(max_active_jobs=10_000, failure_rate=0.05, rng_seed=7,
                validating_seconds=0.0, queued_seconds=0.0, provisioned_seconds=0.0,
                executing_seconds=0.0, executed_seconds=0.0)
    with target.proxy(tmp_path / "proxy") as proxy:
        manifest, _ = _applied(target, tmp_path, n, proxy=proxy)
        if target.is_live:  # let the platform's workers finish them
            waited = run_cli(target, ["wait", str(manifest), "--timeout", "30m",
                                      "--poll-interval", "5s"], tmp_path, proxy=proxy)
            assert waited.returncode in (0, 1), waited.stderr[-3000:]
        seq = proxy.last_seq()
        result = run_cli(target, ["status", str(manifest), "--json"], tmp_path, proxy=proxy)
        requests = proxy.requests(seq)
    print(f"status of {n} jobs: {len(requests)} API requests (the per-job loop would "
          f"make {n})")
    data = json.loads(result.stdout)
    counts = data["summary"]["counts"]
    assert result.returncode == (1 if counts.get("Failed") else 0), result.stderr
    assert len(requests) <= 5
    assert {r.path for r in requests} == {"/api/v1/algorithms/jobs/"}
    assert all(r.status == 200 for r in requests)
    assert data["summary"]["total"] == n and data["recorded"] is True
    if not target.is_live:  # failure_rate: some Failed
        assert set(counts) == {"Succeeded", "Failed"} and counts["Failed"] > 0
    server = {j["pk"]: j["status"] for j in target.jobs(WORLD.algorithm)}
    assert all(c["status"] == server[c["job"]] for c in data["cases"])
    saved = lockmod.load(lockmod.lockfile_path_for(manifest))
    assert saved is not None
    assert all(e.job.status == server[e.job.pk] for e in saved.cases.values() if e.job)


def test_status_exit_codes_case_filter_and_one_case_download(
    target: Target, tmp_path: Path
) -> None:
    run = new_run_id()
    ages = [run * 10 + i for i in range(4)]
    folder = tmp_path / "ages"
    folder.mkdir()
    for age in ages:
        (folder / f"{age}.json").write_text(json.dumps(age))
    manifest = tmp_path / "study.yaml"
    manifest.write_text(
        f"version: 1\nalgorithm: {WORLD.algorithm}\ncases:\n"
        "  - foreach: {glob: \"ages/*.json\"}\n    id: \"case-{stem}\"\n"
        f"    inputs:\n      {WORLD.integer}: {{json: \"{{path}}\"}}\n")
    # three of the four cases applied (the fourth's file arrives later)
    last = folder / f"{ages[3]}.json"
    last.rename(tmp_path / "later.json")
    applied = run_cli(target, ["apply", str(manifest)], tmp_path)
    assert applied.returncode == 0, applied.stderr[-3000:]
    (tmp_path / "later.json").rename(last)
    waited = run_cli(target, ["wait", str(manifest), "--timeout", "20m", "--poll-interval",
                              "2s"], tmp_path)
    # every submitted job ended, but a case has no job yet: exit 1, saying so (issue 18)
    assert waited.returncode == 1, waited.stderr[-3000:]
    assert "1 case(s) have no job yet" in waited.stderr

    result = run_cli(target, ["status", str(manifest)], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "4 cases: 1 Not submitted, 3 Succeeded"
    assert lines[1].split() == ["CASE", "JOB", "STATUS", "DURATION"]
    assert lines[2].split()[0::2] == [f"case-{ages[0]}", "Succeeded"]
    assert lines[5].split() == [f"case-{ages[3]}", "-", "Not", "submitted", "-"]
    one = run_cli(target, ["status", str(manifest), "--case", f"case-{ages[1]}", "--json"],
                  tmp_path)
    assert [c["case"] for c in json.loads(one.stdout)["cases"]] == [f"case-{ages[1]}"]
    typo = run_cli(target, ["status", str(manifest), "--case", "case-99999"], tmp_path)
    assert typo.returncode == 2 and "case-99999" in typo.stderr

    # download of one case: only its outputs, but the tables cover every case
    out = tmp_path / "one"
    one_dl = run_cli(target, ["download", str(manifest), "--out", str(out), "--case",
                              f"case-{ages[1]}"], tmp_path)
    assert one_dl.returncode == 0, one_dl.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [f"case-{ages[1]}"]
    table = (out / "results.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in table[1:]] == [f"case-{a}" for a in ages]
    assert table[4].startswith(f"case-{ages[3]},,Not submitted,json ages/{ages[3]}.json")


def test_failed_jobs_make_status_and_wait_exit_1_and_show_in_the_table(
    target: Target, tmp_path: Path
) -> None:
    with target.proxy(tmp_path / "proxy") as proxy:
        manifest, cases = _applied(target, tmp_path, 3, proxy=proxy, algorithm=WORLD.failing)
        waited = run_cli(target, ["wait", str(manifest), "--timeout", "20m",
                                  "--poll-interval", "2s"], tmp_path, proxy=proxy)
        assert waited.returncode == 1, waited.stdout + waited.stderr[-3000:]
        assert waited.stdout.splitlines()[0] == "3 cases: 3 Failed"
        status = run_cli(target, ["status", str(manifest)], tmp_path, proxy=proxy)
        assert status.returncode == 1
        out = tmp_path / "results"
        downloaded = run_cli(target, ["download", str(manifest), "--out", str(out)], tmp_path,
                             proxy=proxy)
    # jobs that ended without results and never will: exit 1, saying so (issue 18)
    assert downloaded.returncode == 1, downloaded.stderr
    assert "ended without results" in downloaded.stderr
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert sorted(r["case_id"] for r in rows) == sorted(cases)
    assert {r["status"] for r in rows} == {"Failed"}
    assert all(not r.get("output:oracle-missing-output") for r in rows)


def test_download_twice_the_second_run_downloads_nothing(target: Target, tmp_path: Path) -> None:
    with target.proxy(tmp_path / "proxy") as proxy:
        manifest, cases = _applied(target, tmp_path, 3, proxy=proxy)
        waited = run_cli(target, ["wait", str(manifest), "--timeout", "20m",
                                  "--poll-interval", "2s"], tmp_path, proxy=proxy)
        assert waited.returncode == 0, waited.stderr[-3000:]
        out = tmp_path / "results"
        first = run_cli(target, ["download", str(manifest), "--out", str(out), "--json"],
                        tmp_path, proxy=proxy)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["download"]["values_written"] == 3
        csv_before = (out / "results.csv").read_bytes()
        seq = proxy.last_seq()
        second = run_cli(target, ["download", str(manifest), "--out", str(out), "--json"],
                         tmp_path, proxy=proxy)
        log = proxy.requests(seq)
    assert second.returncode == 0, second.stderr
    done = json.loads(second.stdout)["download"]
    assert done["files_downloaded"] == 0 and done["values_written"] == 0
    assert {e.path for e in log} <= {"/api/v1/algorithms/jobs/", "/api/v1/algorithms/"}
    assert (out / "results.csv").read_bytes() == csv_before  # deterministic bytes
    for case in cases:
        value = json.loads((out / case / "results.json").read_text())
        assert value["score"] == 1 and value["acc"] == 0.5


# ----------------------------------------------------------------- wait, timed (sandbox)


def test_wait_returns_within_one_poll_interval_of_the_last_job(
    target: Target, tmp_path: Path
) -> None:
    # 6 s per job: long enough for wait (a new process) to be polling well before the end
    phases = {"validating_seconds": 1.0, "queued_seconds": 1.0, "provisioned_seconds": 0.5,
              "executing_seconds": 3.0, "executed_seconds": 0.5}
    target.needs_sandbox("when the last job ends must be known to the second")
    target.configure(**phases)
    study = value_study(tmp_path, 4, new_run_id())
    first_two = [arg for case in sorted(study.cases)[:2] for arg in ("--case", case)]
    with target.proxy(tmp_path / "proxy") as proxy:
        _apply(target, study.manifest, proxy, 2, *first_two)
        time.sleep(1.5)  # the last jobs start later, so they end ~1.5 s after the others
        _apply(target, study.manifest, proxy, 2)
        # the last job was made by the time its POST was answered (the proxy's clock),
        # not when the apply process got round to exiting (late on a loaded machine)
        last_end = max(e.time for e in proxy.requests() if e.method == "POST"
                       and e.path == "/api/v1/algorithms/jobs/") + sum(phases.values())
        poll = 1.0
        seq = proxy.last_seq()
        start = time.time()
        result = run_cli(target, ["wait", str(study.manifest), "--poll-interval", "1s",
                                  "--timeout", "60s"], tmp_path, proxy=proxy)
        returned = time.time()
        polls = [e.time for e in proxy.requests(seq)
                 if e.path.startswith("/api/v1/algorithms/jobs/")]
    manifest = study.manifest
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "4 cases: 4 Succeeded"
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
    assert "ended:" in result.stderr  # plain progress lines on a non-terminal stderr


def test_wait_respects_the_timeout(target: Target, tmp_path: Path) -> None:
    target.needs_sandbox("its jobs end too soon to time out on")
    target.configure(executing_seconds=3600.0)
    manifest, _ = _applied(target, tmp_path, 2, proxy=None)
    start = time.time()
    result = run_cli(target, ["wait", str(manifest), "--timeout", "2s", "--poll-interval",
                              "1s", "--json"], tmp_path)
    elapsed = time.time() - start
    assert result.returncode == 5, result.stderr
    assert "timed out" in result.stderr
    # deadline + one poll + a Python start-up and exit (seconds on a loaded machine):
    # far from the hour its jobs would take
    assert 2.0 <= elapsed <= 2.0 + 1.0 + 10.0
    data = json.loads(result.stdout)
    assert data["timed_out"] is True and data["summary"]["counts"] == {"Executing": 2}
    saved = lockmod.load(lockmod.lockfile_path_for(manifest))
    assert saved is not None
    assert {e.job.status for e in saved.cases.values() if e.job} == {"Executing"}


def test_wait_ctrl_c_leaves_the_lockfile_consistent(target: Target, tmp_path: Path) -> None:
    target.needs_sandbox("its jobs end too soon to interrupt a wait on")
    target.configure(executing_seconds=3600.0)
    manifest, _ = _applied(target, tmp_path, 2, proxy=None)
    lock_path = lockmod.lockfile_path_for(manifest)
    # as on a terminal: Ctrl-C delivered (a test run started in the background inherits
    # SIGINT ignored, and Python keeps an ignored SIGINT ignored)
    proc = subprocess.Popen([sys.executable, "-m", "gcbatch", "wait", str(manifest),
                             "--poll-interval", "1s"],
                            env=target.cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 30
        while time.time() < deadline:  # until the first poll was recorded
            saved = lockmod.load(lock_path)
            if saved and all(e.job and e.job.status == "Executing"
                             for e in saved.cases.values()):
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
    again = run_cli(target, ["status", str(manifest)], tmp_path)
    assert again.returncode == 0 and "not recorded" not in again.stderr
