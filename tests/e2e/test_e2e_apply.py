"""``gcbatch apply`` exactly once, as a user runs it, against either server: twice in a
row, killed with SIGKILL at random moments, killed while a job POST's answer is on its
way, killed in the middle of a large upload, and stopped with Ctrl-C.

The outcome is checked on the server: through its public job list (one new job per
case, made from that case's inputs, the one the lockfile names) and, for "sent
nothing", through the suite's proxy, which sees every request gcbatch makes.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
from e2e_cli import (
    answer_window,
    assert_one_job_per_case,
    image_study,
    mutating,
    run_cli,
    start_cli,
    summary,
    value_study,
    write_scan,
)
from e2e_proxy import FaultProxy
from e2e_target import WORLD, Target, new_run_id

from gcbatch.lockfile import load

pytestmark = pytest.mark.slow


def test_apply_twice_creates_each_job_once_and_second_run_mutates_nothing(
    target: Target, tmp_path: Path
) -> None:
    study = image_study(tmp_path, 12, new_run_id())
    before = {j["pk"] for j in target.jobs(study.algorithm)}
    with target.proxy(tmp_path / "proxy") as proxy:
        first = run_cli(target, ["apply", str(study.manifest), "--json"], tmp_path, proxy=proxy)
        assert first.returncode == 0, first.stderr[-3000:]
        assert summary(first)["submitted"] == 12
        seq = proxy.last_seq()
        second = run_cli(target, ["apply", str(study.manifest), "--json"], tmp_path,
                         proxy=proxy)
        assert second.returncode == 0, second.stderr[-3000:]
        counts = summary(second)
        assert counts["unchanged"] == 12 and counts["submitted"] == 0
        assert mutating(proxy.requests(seq)) == []
    assert_one_job_per_case(target, study, before)


def test_kill_9_at_random_moments_then_one_job_per_case(target: Target, tmp_path: Path) -> None:
    """SIGKILL at random moments of a run (measured in requests the server answered,
    seen by the proxy, so the kills land mid-run whatever the machine's speed); re-run
    each time; at the end every case has exactly one job."""
    # (cases, runs, most requests a run may send before its kill): at most a tenth of
    # the cases' worth per run, so that the runs do not finish the study early and leave
    # nothing to kill. On a live server the storage PUTs go straight to S3, past the
    # proxy, so a run's requests say less about its progress: every other kill there
    # comes after 1-3 job POSTs were answered instead, with fewer workers.
    n, rounds, most = (200, 30, 80) if not target.is_live else (40, 10, 20)
    # no quota in the way: this is about crashes (on a live server: its own limits)
    target.tune(max_active_jobs=1000)
    study = image_study(tmp_path, n, new_run_id())
    before = {j["pk"] for j in target.jobs(study.algorithm)}
    args = ["apply", str(study.manifest), "--reconcile-wait", "60", *answer_window(target)]
    args += ["--max-active", "1000"] if not target.is_live else ["--concurrency", "4"]
    log = tmp_path / "runs.log"
    kills = 0
    made: list[int] = []
    with target.proxy(tmp_path / "proxy") as proxy:
        for seed in range(rounds):
            rng = random.Random(seed)
            by_posts = target.is_live and seed % 2 == 1
            wanted = rng.randint(1, 3) if by_posts else rng.randint(1, most)
            start = proxy.last_seq()
            proc = start_cli(target, args, tmp_path, log, proxy=proxy)
            deadline = time.monotonic() + (300 if target.is_live else 60)
            while proc.poll() is None and time.monotonic() < deadline \
                    and _progress(proxy, start, by_posts) < wanted:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.02))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(30)
            made.append(target.job_count(study.algorithm) - len(before))
        final = run_cli(target, [*args, "--json"], tmp_path, proxy=proxy)
    assert final.returncode == 0, final.stderr[-3000:] + log.read_text()[-3000:]
    assert kills >= rounds * 2 // 3, (kills, made)  # most runs really were killed
    # the kills hit the run at many different points, not only before it started
    assert len({m for m in made if 0 < m < n}) >= rounds // 6, made
    assert_one_job_per_case(target, study, before)


def _progress(proxy: FaultProxy, since: int, job_posts: bool) -> int:
    """Requests (or job POSTs) answered by the server since ``since``."""
    seen = proxy.requests(since)
    if job_posts:
        seen = [e for e in seen if e.method == "POST" and e.path == "/api/v1/algorithms/jobs/"]
    return len(seen)


def test_kill_9_while_job_post_answers_are_on_their_way(target: Target, tmp_path: Path) -> None:
    """The server has made the jobs but gcbatch dies before their answers arrive: the
    next run must find those jobs (not make second ones) and record them."""
    n = 8
    target.tune(max_active_jobs=1000)
    study = image_study(tmp_path, n, new_run_id())
    before = {j["pk"] for j in target.jobs(study.algorithm)}
    # --max-active: POSTs go side by side at once (without it, admission's first probes go
    # one at a time, and a held answer would hold the run at one POST)
    args = ["apply", str(study.manifest), "--reconcile-wait", "60", "--concurrency", "4",
            "--max-active", "16"]
    with target.proxy(tmp_path / "proxy") as proxy:
        proxy.hold_answers("POST", "/api/v1/algorithms/jobs/")
        proc = start_cli(target, args, tmp_path, tmp_path / "run1.log", proxy=proxy)
        try:
            target.wait_until("job POSTs answered by the server and held by the proxy",
                              lambda: proxy.held() >= 2 or proc.poll() is not None,
                              timeout=300 if target.is_live else 60, interval=0.01)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            proxy.release_answers()
        held = [e for e in proxy.requests() if e.dropped and e.method == "POST"]
        assert len(held) >= 2, (tmp_path / "run1.log").read_text()[-2000:]
        assert all(e.status == 201 for e in held), held  # the server made those jobs
        lock = load(study.lockfile)
        assert lock is not None and len(lock.in_doubt) >= 2  # the POSTs were in flight
        again = run_cli(target, [*args, "--json"], tmp_path, proxy=proxy)
    assert again.returncode == 0, again.stderr[-3000:]
    counts = summary(again)
    assert counts["submitted"] + counts.get("adopted", 0) + counts["unchanged"] == n, counts
    assert_one_job_per_case(target, study, before)


def test_kill_during_a_large_upload_then_resume_resends_under_60_percent(
    target: Target, tmp_path: Path
) -> None:
    """40 MiB in 8 parts: SIGKILL once 4 parts are on the server (seen through the public
    upload API), then the re-run resumes the upload instead of starting it again."""
    run = new_run_id()
    scan = tmp_path / "scans" / f"big-{run}.mha"
    write_scan(scan, run % 251, width=256, height=256, depth=640)
    size = scan.stat().st_size
    manifest = tmp_path / "study.yaml"
    case = f"big-{run}"
    manifest.write_text(f"version: 1\nalgorithm: {WORLD.algorithm}\ncases:\n"
                        f"  - id: {case}\n    inputs:\n"
                        f"      {WORLD.image}: {{file: scans/{scan.name}}}\n")
    before = target.job_count(WORLD.algorithm)
    args = ["apply", str(manifest)]
    with target.proxy(tmp_path / "proxy") as proxy:  # both runs: one server URL
        proc = start_cli(target, args, tmp_path, tmp_path / "run1.log", proxy=proxy)
        parts_done = 0
        try:
            deadline = time.monotonic() + (600 if target.is_live else 60)
            while time.monotonic() < deadline and proc.poll() is None:
                parts_done = _parts_on_server(target, case)
                if parts_done >= 4:
                    break
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        assert parts_done >= 4, (tmp_path / "run1.log").read_text()[-3000:]
        seq = proxy.last_seq()
        again = run_cli(target, [*args, "--json"], tmp_path, proxy=proxy)
        assert again.returncode == 0, again.stderr[-3000:]
        resent = json.loads(again.stdout)["bytes_uploaded"]
        assert resent < 0.6 * size, (resent, size)
        # the upload was resumed, not created again
        assert not [e for e in proxy.requests(seq) if e.method == "POST"
                    and e.path.endswith("/uploads/")]
    assert target.job_count(WORLD.algorithm) == before + 1


def _parts_on_server(target: Target, case: str) -> int:
    """Parts uploaded so far for the case's upload (``uploads/`` + ``list-parts``)."""
    with target.api() as api:
        uploads = api.get("uploads/", params={"limit": 1000}).json()["results"]
        mine = [u for u in uploads if u["filename"].startswith(case + ".gcb-")]
        if not mine:
            return 0
        up = mine[-1]
        answer = api.get(f"uploads/{up['pk']}/{up['s3_upload_id']}/list-parts/")
        if answer.status_code != 200:
            return 0
        return len(answer.json().get("parts", []))


def test_ctrl_c_once_finishes_in_flight_twice_exits_at_once_and_nothing_is_lost(
    target: Target, tmp_path: Path
) -> None:
    n = 150 if not target.is_live else 40
    target.tune(max_active_jobs=1000)
    if target.sandbox is not None:  # slow enough answers to be caught mid-run
        target.sandbox.admin.set_faults(None, latency_ms=30)
    study = value_study(tmp_path, n, new_run_id())
    before = {j["pk"] for j in target.jobs(study.algorithm)}

    def made() -> int:
        return target.job_count(study.algorithm) - len(before)

    args = ["apply", str(study.manifest), "--concurrency", "2", *answer_window(target)]
    if not target.is_live:
        args += ["--max-active", "1000"]
    # once: a graceful stop, exit 130, a consistent lockfile with nothing in doubt
    log1 = tmp_path / "run1.log"
    proc = start_cli(target, args, tmp_path, log1, ctrl_c=True)
    target.wait_until("10 jobs", lambda: made() >= 10 or proc.poll() is not None,
                      interval=0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, log1.read_text()[-3000:]
    assert "stopping" in log1.read_text()
    lock = load(study.lockfile)
    assert lock is not None and not lock.in_doubt
    created = made()
    assert 10 <= created < n
    assert sum(1 for e in lock.cases.values() if e.job) == created
    # twice: out at once; whatever was in flight is reconciled by the next run
    log2 = tmp_path / "run2.log"
    proc = start_cli(target, args, tmp_path, log2, ctrl_c=True)
    target.wait_until("10 more jobs", lambda: made() >= created + 10 or proc.poll() is not None,
                      interval=0.02)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, log2.read_text()[-3000:]
    final = run_cli(target, [*args, "--json", "--reconcile-wait", "60"], tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    assert made() == n
    assert_one_job_per_case(target, study, before)


def test_plan_after_a_kill_during_uploads_shows_nothing_in_doubt(
    target: Target, tmp_path: Path
) -> None:
    run = new_run_id()
    write_scan(tmp_path / "scans" / f"big-{run}.mha", run % 251, width=256, height=256,
               depth=320)
    manifest = tmp_path / "study.yaml"
    manifest.write_text(f"version: 1\nalgorithm: {WORLD.algorithm}\ncases:\n"
                        f"  - id: big-{run}\n    inputs:\n"
                        f"      {WORLD.image}: {{file: scans/big-{run}.mha}}\n")
    proc = start_cli(target, ["apply", str(manifest)], tmp_path, tmp_path / "run1.log")
    journal = manifest.with_suffix(".lock.journal")
    try:  # until the intent (stage "upload") is journalled and parts are going up
        target.wait_until("the upload to start", lambda: (journal.exists()
                          and b"upload" in journal.read_bytes()) or proc.poll() is not None,
                          interval=0.01)
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    plan = run_cli(target, ["plan", str(manifest)], tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert not [line for line in plan.stdout.splitlines() if line.startswith("? ")], plan.stdout
