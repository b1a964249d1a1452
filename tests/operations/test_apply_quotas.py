"""Issue 13's must-shows: admission without waste, against a sandbox on real loopback HTTP.

Each test serves a sandbox from a thread of this process (``make_sandbox``) and runs
``apply`` through gcbatch's own HTTP client, then checks the outcome on the *server*:
its uploads (live, and ever made), its jobs with their times, its request log. The
bounds asserted follow from the design (see :mod:`gcbatch.engine.admission`); timing
ratios are measured by ``benchmarks/bench_admission.py``, not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gcbatch.api.client import GrandChallengeClient
from gcbatch.engine.options import ApplyOptions
from gcbatch.engine.outcomes import ApplySummary, Outcome
from gcbatch.errors import PreflightError
from gcbatch.lockfile import load
from gcbatch.operations.apply import apply
from gcbatch.operations.plan import plan
from gcbatch.operations.session import Session
from gcbatch.operations.study import ConnectionOptions, open_study
from gcbatch.plan import ActionKind
from gcbatch.sandbox import RunningSandbox
from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.lifecycle import boundaries, make_mha
from gcbatch.targeting import Targeting

pytestmark = pytest.mark.slow

#: jobs of 0.6 s (Validating inputs 0.2 s: when their uploads are consumed)
JOBS = {"validating_seconds": 0.2, "queued_seconds": 0.1, "provisioned_seconds": 0.0,
        "executing_seconds": 0.3, "executed_seconds": 0.0}


def config(**changes: Any) -> SandboxConfig:
    return SandboxConfig().replace(**{**JOBS, "credits_per_month": 10**6, **changes})


def image_study(directory: Path, n: int) -> Path:
    scans = directory / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        voxels = bytes((i * 7 + k) % 256 for k in range(8 * 8 * 4))
        (scans / f"s{i:03d}.mha").write_bytes(make_mha(8, 8, voxels, depth=4))
    manifest = directory / "study.yaml"
    manifest.write_text(
        "version: 1\nalgorithm: lung-nodule-detector\ncases:\n"
        "  - foreach: {glob: 'scans/*.mha'}\n    id: 'scan-{stem}'\n"
        "    inputs:\n      ct-image: {file: '{path}'}\n")
    return manifest


def value_study(directory: Path, n: int, name: str = "study", first: int = 0) -> Path:
    """n value cases, ages ``first``.. (studies at once need other values: the server
    keeps one job per set of value inputs)."""
    lines = ["version: 1", "algorithm: risk-calculator", "defaults:",
             "  lung-volume: {value: 4.2}", "cases:"]
    lines += [f"  - {{id: {name}-{i:04d}, inputs: {{age: {{value: {first + i}}}}}}}"
              for i in range(n)]
    manifest = directory / f"{name}.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def run_apply(sb: RunningSandbox, manifest: Path, **options: Any) -> ApplySummary:
    options.setdefault("poll_min", 0.02)
    options.setdefault("reconcile_wait", 5.0)
    study = open_study(manifest, ConnectionOptions(server=sb.api_url))
    with Session(client=GrandChallengeClient(sb.api_url, sb.token("demo"))) as session:
        return apply(study, session, ApplyOptions(**options))


def uploads(sb: RunningSandbox) -> tuple[int, int]:
    """(live uploads, uploads ever made) of the demo user, from the server, once every
    job has validated its inputs (which consumes their uploads)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sb.app.store.conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE status='Validating inputs'").fetchone()[0]:
        time.sleep(0.05)
        sb.admin.stats()  # the sandbox moves its jobs on at each request
    stats = sb.admin.stats()["users"]["demo"]
    return int(stats["uploads_live"]), int(stats["uploads_total"])


def requests(sb: RunningSandbox) -> list[dict[str, Any]]:
    return list(sb.app.requests_since(0))


def job_posts(sb: RunningSandbox) -> list[dict[str, Any]]:
    return [r for r in requests(sb)
            if r["method"] == "POST" and r["path"] == "/api/v1/algorithms/jobs/"]


def job_spans(sb: RunningSandbox) -> list[tuple[float, float]]:
    """(created, ended) of each demo job, on the sandbox's clock."""
    rows = sb.app.store.conn.execute(
        "SELECT created, schedule FROM jobs WHERE user='demo' ORDER BY seq").fetchall()
    return [(float(c), boundaries(float(c), s)[-1]) for c, s in rows]


def most_active(spans: list[tuple[float, float]], since: float) -> int:
    """The most jobs active together at any moment from ``since`` on."""
    moments = [since] + [c for c, _ in spans if c >= since]
    return max(sum(1 for c, e in spans if c <= t < e) for t in moments)


# --------------------------------------------------------------------------- credits


def test_credits_for_5_of_20_image_cases_waste_no_uploads_over_three_applies(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path) -> None:
    sb = make_sandbox(config=config(credits_per_month=100, job_cost=20))  # 5 jobs
    manifest = image_study(tmp_path, 20)
    concurrency = 16
    live: list[int] = []
    made: list[int] = []
    for attempt in range(3):
        summary = run_apply(sb, manifest, concurrency=concurrency)
        assert summary.exit_code == 4 and summary.stopped_by_credits
        counts = summary.counts()
        assert counts["submitted"] == (5 if attempt == 0 else 0)
        assert counts["waiting"] == 15
        assert counts["failed"] == counts["in_doubt"] == 0
        live_now, made_now = uploads(sb)
        live.append(live_now)
        made.append(made_now)
    assert live[0] <= concurrency
    assert live == [live[0]] * 3 and made == [made[0]] * 3  # not growing, none made again
    # the uploads left over stay in the lockfile, ready for the same POST later
    lock = load(tmp_path / "study.lock")
    assert lock is not None
    kept = [e.pending for e in lock.cases.values() if e.pending is not None]
    assert len(kept) == live[0]
    assert all(p.payload["stage"] == "upload" for p in kept)
    assert not any(p.payload["stage"] == "post" for p in kept)  # no false doubt
    # credits again: every case is submitted, each with the one upload it ever had
    sb.admin.set_config(reset_credits="demo", credits_per_month=1000)
    done = run_apply(sb, manifest, concurrency=concurrency)
    assert done.counts()["submitted"] == 15 and done.exit_code == 0
    assert uploads(sb)[1] == 20


def test_credits_seen_in_preflight_upload_and_submit_nothing(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path) -> None:
    sb = make_sandbox(config=config(credits_per_month=10, job_cost=20))  # not one job
    manifest = image_study(tmp_path, 4)
    summary = run_apply(sb, manifest)
    assert summary.exit_code == 4 and summary.counts()["waiting"] == 4
    assert uploads(sb) == (0, 0)
    posts = job_posts(sb)
    assert len(posts) == 1 and posts[0]["status"] == 400  # the readiness probe alone
    result = plan(open_study(manifest, ConnectionOptions(server=sb.api_url)),
                  targeting=Targeting(),
                  session=Session(client=GrandChallengeClient(sb.api_url, sb.token("demo"))))
    blocked = [a for a in result.plan.actions if a.kind == ActionKind.BLOCKED]
    assert len(blocked) == 4 and "credits" in blocked[0].reason


# --------------------------------------------------------------------------- readiness


def test_an_algorithm_that_is_not_ready_gets_no_upload_over_three_applies(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path) -> None:
    sb = make_sandbox(config=config(not_ready_algorithms="lung-nodule-detector"))
    manifest = image_study(tmp_path, 20)
    for _ in range(3):
        summary = run_apply(sb, manifest)
        assert summary.exit_code == 1 and summary.stop_reason == "not_ready"
        assert summary.counts()["waiting"] == 20
        assert uploads(sb) == (0, 0)  # refused in pre-flight: not one upload
    assert [p["status"] for p in job_posts(sb)] == [400, 400, 400]
    lock = load(tmp_path / "study.lock")
    assert lock is None or not lock.cases
    # plan says so, case by case
    session = Session(client=GrandChallengeClient(sb.api_url, sb.token("demo")))
    result = plan(open_study(manifest, ConnectionOptions(server=sb.api_url)),
                  targeting=Targeting(), session=session)
    assert {a.kind for a in result.plan.actions} == {ActionKind.BLOCKED}
    assert "not ready" in result.plan.actions[0].reason
    # ready again: everything goes, one upload per case
    sb.admin.set_config(not_ready_algorithms="")
    assert run_apply(sb, manifest).counts()["submitted"] == 20
    assert uploads(sb)[1] == 20


def test_an_image_that_stops_being_ready_mid_run_keeps_the_uploads(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path) -> None:
    sb = make_sandbox(config=config(max_active_jobs=2))
    manifest = image_study(tmp_path, 8)
    original = sb.app.handle
    posts = {"n": 0}

    def handle(request: Any) -> Any:
        if request.method == "POST" and request.path.endswith("/algorithms/jobs/"):
            posts["n"] += 1
            if posts["n"] == 4:  # the probe, then two jobs, then the image changes
                sb.app.set_config(sb.app.config.replace(
                    not_ready_algorithms="lung-nodule-detector"))
        return original(request)

    sb.app.handle = handle  # type: ignore[method-assign]
    summary = run_apply(sb, manifest, concurrency=4)
    assert summary.stop_reason == "not_ready" and summary.exit_code == 1
    assert summary.counts()["submitted"] == 2 and summary.counts()["failed"] == 0
    live, made = uploads(sb)
    lock = load(tmp_path / "study.lock")
    assert lock is not None
    kept = {p for e in lock.cases.values() if e.pending for p in e.pending.uploads}
    assert live <= len(kept)
    # no false doubt: every kept intent is at stage "upload" (certainly no job)
    assert all(e.pending.payload["stage"] == "upload"
               for e in lock.cases.values() if e.pending is not None)
    sb.app.set_config(sb.app.config.replace(not_ready_algorithms=""))
    rest = run_apply(sb, manifest, concurrency=4)
    assert rest.counts()["submitted"] == 6
    assert uploads(sb)[1] == made + (6 - live)  # the kept ones were used, not made again


# --------------------------------------------------------------------------- images


def test_an_image_url_the_user_may_not_see_is_refused_before_anything_is_sent(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path) -> None:
    sb = make_sandbox(config=config())
    with sb.client("other") as http:  # an image only "other" may see: from its upload
        up = http.post("uploads/", json={"filename": "theirs.mha"}).json()
        base = f"uploads/{up['pk']}/{up['s3_upload_id']}"
        url = http.patch(f"{base}/generate-presigned-urls/",
                         json={"part_numbers": [1]}).json()["presigned_urls"]["1"]
        etag = http.put(url, content=make_mha(2, 2, bytes(4)),
                        headers={"Authorization": ""}).headers["ETag"]
        http.patch(f"{base}/complete-multipart-upload/",
                   json={"parts": [{"ETag": etag, "PartNumber": 1}]})
        alg = http.get("algorithms/", params={"slug": "lung-nodule-detector"}).json()
        http.post("algorithms/jobs/", json={
            "algorithm": alg["results"][0]["api_url"],
            "inputs": [{"interface": "ct-image", "user_uploads": [up["api_url"]]}]})
    image = None
    for _ in range(100):
        with sb.client("other") as http:
            found = http.get("cases/images/", params={"name": "theirs.mha"}).json()
        if found["count"]:
            image = found["results"][0]["api_url"]
            break
        time.sleep(0.05)
    assert image is not None
    manifest = tmp_path / "study.yaml"
    manifest.write_text("version: 1\nalgorithm: lung-nodule-detector\ncases:\n"
                        f"  - {{id: mine, inputs: {{ct-image: {{image: '{image}'}}}}}}\n"
                        "  - {id: fine, inputs: {ct-image: {file: scan.mha}}}\n")
    (tmp_path / "scan.mha").write_bytes(make_mha(2, 2, bytes(4)))
    before = len(requests(sb))
    with pytest.raises(PreflightError, match="may not see it"):
        run_apply(sb, manifest)
    sent = [r for r in requests(sb)[before:] if r["method"] != "GET"]
    assert sent == []  # nothing uploaded, no job POST, not even the probe
    session = Session(client=GrandChallengeClient(sb.api_url, sb.token("demo")))
    result = plan(open_study(manifest, ConnectionOptions(server=sb.api_url)),
                  targeting=Targeting(), session=session)
    kinds = {a.case_id: a.kind for a in result.plan.actions}
    assert kinds == {"mine": ActionKind.BLOCKED, "fine": ActionKind.SUBMIT}


# --------------------------------------------------------------------------- upload quotas


@pytest.mark.parametrize(("live", "images"), [(3, None), (None, 2), (5, 1)],
                         ids=["count", "size", "both"])
def test_low_upload_quotas_pause_and_every_case_still_gets_its_job(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path,
        live: int | None, images: int | None) -> None:
    manifest = image_study(tmp_path, 20)
    size = (tmp_path / "scans" / "s000.mha").stat().st_size
    # at most live+1 live uploads; completed unused ones of at most `images` images
    limits: dict[str, int] = {}
    if live is not None:
        limits["max_live_uploads"] = live
    if images is not None:
        limits["max_upload_bytes"] = images * size
    sb = make_sandbox(config=config(**limits))
    events: list[Any] = []
    study = open_study(manifest, ConnectionOptions(server=sb.api_url))
    with Session(client=GrandChallengeClient(sb.api_url, sb.token("demo"))) as session:
        summary = apply(study, session, ApplyOptions(concurrency=16, poll_min=0.02),
                        on_event=events.append)
    assert summary.counts()["submitted"] == 20 and summary.exit_code == 0
    assert summary.counts()["failed"] == 0
    log = requests(sb)
    refused_count = [r for r in log if r["path"] == "/api/v1/uploads/"
                     and r["method"] == "POST" and r["status"] == 400]
    refused_size = [r for r in log if r["path"].endswith("/generate-presigned-urls/")
                     and r["status"] == 403]
    # the quotas set were met (else this test would prove nothing)
    if live is not None and images is not None:
        # both set: which one bites first depends on timing, but one must
        assert refused_count or refused_size
    else:
        assert bool(refused_count) == (live is not None)
        assert bool(refused_size) == (images is not None)
    assert uploads(sb)[1] == 20  # one upload per case: none aborted and made again
    pauses = [e for e in events if type(e).__name__ == "UploadsPaused"]
    # one pause per burst of refusals, never one per refused worker
    assert 0 < len(pauses) <= len(refused_count) + len(refused_size)
    assert len(pauses) < len(refused_count) + len(refused_size)


def test_an_upload_quota_nothing_of_ours_can_free_stops_with_exit_4(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path) -> None:
    sb = make_sandbox(config=config(max_live_uploads=2))
    with sb.client("demo") as http:  # three uploads left over by something else
        for i in range(3):
            assert http.post("uploads/", json={"filename": f"old{i}.bin"}).status_code == 201
    manifest = image_study(tmp_path, 3)
    env = {k: v for k, v in os.environ.items() if k != "GCBATCH_SERVER"}
    env.update(GRAND_CHALLENGE_AUTHORIZATION=sb.token("demo"), NO_COLOR="1")
    done = subprocess.run(
        [sys.executable, "-m", "gcbatch", "apply", str(manifest), "--server", sb.api_url,
         "--upload-quota-wait", "1", "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 4, done.stderr
    out = json.loads(done.stdout)
    assert out["stopped_by"] == "uploads" and out["summary"]["waiting"] == 3
    assert "upload quota is full" in out["cases"][0]["message"]
    assert sb.admin.stats()["users"]["demo"]["jobs"] == 0
    assert uploads(sb) == (3, 3)  # nothing of ours was made, nothing multiplied


# --------------------------------------------------------------------------- the limit


def test_250_cases_at_limit_16_few_refused_posts(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path) -> None:
    sb = make_sandbox(config=config(max_active_jobs=16, validating_seconds=0.05,
                                    queued_seconds=0.05, executing_seconds=0.25))
    summary = run_apply(sb, value_study(tmp_path, 250))
    assert summary.counts()["submitted"] == 250 and summary.exit_code == 0
    refused = [p for p in job_posts(sb) if p["status"] == 400]
    assert len(refused) <= 25  # at most 10 % of the jobs
    spans = job_spans(sb)
    assert most_active(spans, 0.0) <= 16


@pytest.mark.parametrize("limit", [2])
def test_an_over_admitting_server_is_never_overrun_after_the_first_refusal(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path, limit: int) -> None:
    # a job POST takes 30 ms from its count to its commit: POSTs sent together all pass
    # the check, as on the platform
    # (jobs of 0.3 s: ten waves at the limit)
    over = config(max_active_jobs=limit, unlocked_checks=True, commit_seconds=0.03,
                  validating_seconds=0.05, queued_seconds=0.05, executing_seconds=0.2)
    sb = make_sandbox(config=over, latency_ms=5)
    summary = run_apply(sb, value_study(tmp_path, 20))
    assert summary.counts()["submitted"] == 20 and summary.exit_code == 0
    refusals = [p["time"] for p in job_posts(sb) if p["status"] == 400]
    assert refusals
    assert most_active(job_spans(sb), min(refusals)) <= limit
    # and the server really over-admits a burst (the test would prove nothing otherwise)
    burst = make_sandbox(config=over, latency_ms=5)
    blind = run_apply(burst, value_study(tmp_path, 6, "burst"), max_active=16)
    assert blind.counts()["submitted"] == 6
    assert most_active(job_spans(burst), 0.0) > limit


def test_two_studies_at_once_share_the_limit_and_both_finish(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path) -> None:
    import threading

    sb = make_sandbox(config=config(max_active_jobs=4, unlocked_checks=True,
                                    commit_seconds=0.03), latency_ms=5)
    results: dict[str, ApplySummary] = {}

    def study(name: str, first: int) -> None:
        folder = tmp_path / name
        folder.mkdir()
        results[name] = run_apply(sb, value_study(folder, 12, name, first))

    threads = [threading.Thread(target=study, args=a) for a in (("a", 0), ("b", 100))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert {n: r.counts()["submitted"] for n, r in results.items()} == {"a": 12, "b": 12}
    assert all(r.exit_code == 0 for r in results.values())
    assert sb.admin.stats()["users"]["demo"]["jobs"] == 24
    # probes go one at a time per study: never a burst of refusals
    refused = [p for p in job_posts(sb) if p["status"] == 400]
    assert len(refused) <= 24
    assert Outcome.SUBMITTED.value == "submitted"


@pytest.mark.parametrize("kind", ["value", "image"])
def test_a_stop_after_a_refusal_leaves_no_false_doubt(
        make_sandbox: Callable[..., RunningSandbox], tmp_path: Path, kind: str) -> None:
    from gcbatch.engine.executor import Executor

    sb = make_sandbox(config=config(max_active_jobs=1, executing_seconds=30.0))
    manifest = image_study(tmp_path, 3) if kind == "image" else value_study(tmp_path, 3)
    captured: list[Executor] = []
    original = sb.app.handle

    def handle(request: Any) -> Any:
        response = original(request)
        if request.method == "POST" and request.path.endswith("/algorithms/jobs/") \
                and b"too many active jobs" in response.body and captured:
            captured[0].request_stop()  # Ctrl-C while the refused case waits for a slot
        return response

    sb.app.handle = handle  # type: ignore[method-assign]
    study = open_study(manifest, ConnectionOptions(server=sb.api_url))
    with Session(client=GrandChallengeClient(sb.api_url, sb.token("demo"))) as session:
        summary = apply(study, session, ApplyOptions(poll_min=0.02),
                        on_executor=captured.append)
    assert summary.interrupted and summary.counts()["submitted"] == 1
    assert summary.counts()["in_doubt"] == 0
    lock = load(tmp_path / "study.lock")
    assert lock is not None
    stages = [e.pending.payload["stage"] for e in lock.cases.values() if e.pending]
    # the refused case made no job: it is not in doubt; an image case keeps its uploads
    assert "post" not in stages
    if kind == "image":
        assert stages and set(stages) == {"upload"}
