"""apply against the in-process sandbox: exactly once, reconciliation, quotas, targeting.

Fast: the sandbox runs in this process behind its httpx transport (no sockets), with
short job phases. The real-CLI-over-loopback versions are in tests/e2e/test_apply.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gcbatch.api.client import GrandChallengeClient
from gcbatch.api.retry import RetryPolicy
from gcbatch.engine.executor import Executor
from gcbatch.engine.options import ApplyOptions
from gcbatch.engine.outcomes import ApplySummary
from gcbatch.engine.prepare import upload_name
from gcbatch.errors import LockfileError, LockHeldError, PreflightError
from gcbatch.lockfile import LockfileStore, load
from gcbatch.operations.apply import apply
from gcbatch.operations.session import Session
from gcbatch.operations.study import ConnectionOptions, Study, open_study
from gcbatch.sandbox.app import SandboxApp
from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.faults import FaultInjector, FaultPlan
from gcbatch.sandbox.lifecycle import make_mha
from gcbatch.sandbox.transport import SandboxTransport
from gcbatch.targeting import Targeting
from gcbatch.views.text import render_apply_summary

BASE = "http://127.0.0.1:9/api/v1/"
FAST = SandboxConfig(validating_seconds=0.05, queued_seconds=0.05, provisioned_seconds=0.0,
                     executing_seconds=0.1, executed_seconds=0.0)
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class World:
    app: SandboxApp
    dir: Path
    faults: FaultInjector

    def session(self, lockfile: str = "study.lock") -> Session:
        transport = SandboxTransport(self.app, self.faults, sleep=lambda s: None)
        client = GrandChallengeClient(
            BASE, self.app.token("demo"), transport=transport,
            retry=RetryPolicy(wait_initial=0.001, wait_max=0.01, attempts=12),
            sleep=lambda s: None,
        )
        return Session(client=client)

    def study(self, manifest: Path, lockfile: str = "study.lock") -> Study:
        return open_study(manifest, ConnectionOptions(server=BASE, lockfile=self.dir / lockfile))

    def manifest(self, text: str, name: str = "study.yaml") -> Path:
        path = self.dir / name
        path.write_text(text, encoding="utf-8")
        return path

    def apply(self, manifest: Path, **options: Any) -> ApplySummary:
        options.setdefault("reconcile_wait", 5.0)
        options.setdefault("poll_min", 0.02)
        with self.session() as session:
            return apply(self.study(manifest), session, ApplyOptions(**options))

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return self.app.requests_since(since)

    def last_seq(self) -> int:
        log = self.app.requests_since(0)
        return log[-1]["seq"] if log else 0

    def jobs(self, user: str = "demo") -> int:
        return int(self.app.stats()["users"][user]["jobs"])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    app = SandboxApp(tmp_path / "sandbox.db", config=FAST)
    yield World(app, tmp_path, FaultInjector(FaultPlan()))
    app.close()


def value_manifest(n: int, start: int = 0) -> str:
    lines = ["version: 1", "algorithm: risk-calculator", "defaults:",
             "  lung-volume: {value: 4.2}", "cases:"]
    for i in range(start, start + n):
        lines += [f"  - id: p{i:04d}", "    inputs:", f"      age: {{value: {i}}}"]
    return "\n".join(lines) + "\n"


def image_manifest(world: World, n: int) -> str:
    scans = world.dir / "scans"
    scans.mkdir(exist_ok=True)
    for i in range(n):
        voxels = bytes((i + k) % 256 for k in range(4 * 4 * 2))
        (scans / f"s{i:03d}.mha").write_bytes(make_mha(4, 4, voxels, depth=2))
    return ("version: 1\nalgorithm: lung-nodule-detector\ncases:\n"
            "  - foreach: {glob: 'scans/*.mha'}\n    id: 'scan-{stem}'\n"
            "    inputs:\n      ct-image: {file: '{path}'}\n")


def mutating(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in log if r["method"] in MUTATING and not r["path"].startswith("/_sandbox")]


def test_value_cases_submitted_once_and_rerun_sends_nothing_mutating(world: World) -> None:
    manifest = world.manifest(value_manifest(40))
    summary = world.apply(manifest)
    assert summary.counts()["submitted"] == 40 and summary.exit_code == 0
    assert world.jobs() == 40
    lock = load(world.dir / "study.lock")
    assert lock is not None and len(lock.cases) == 40
    assert all(e.job is not None and e.pending is None for e in lock.cases.values())
    seq = world.last_seq()
    again = world.apply(manifest)
    assert again.counts()["unchanged"] == 40 and again.counts()["submitted"] == 0
    assert mutating(world.requests(seq)) == []
    assert world.jobs() == 40


def test_a_locked_reapply_asks_for_the_algorithm_only(world: World) -> None:
    """Nothing to send: no status refresh, no preflight of the locked cases (expansion
    hands them back as settled ids), one GET in all."""
    manifest = world.manifest(value_manifest(5))
    world.apply(manifest)
    seq = world.last_seq()
    again = world.apply(manifest)
    assert again.counts()["unchanged"] == 5 and again.exit_code == 0
    sent = [(r["method"], r["path"]) for r in world.requests(seq)]
    assert sent == [("GET", "/api/v1/algorithms/")]
    # a new case: statuses are refreshed then (earlier jobs may still hold slots)
    manifest.write_text(value_manifest(6))
    seq = world.last_seq()
    assert world.apply(manifest).counts()["submitted"] == 1
    paths = [r["path"] for r in world.requests(seq) if r["method"] == "GET"]
    assert "/api/v1/algorithms/jobs/" in paths


def test_a_new_case_duplicating_a_locked_one_is_stopped_by_preflight(world: World) -> None:
    manifest = world.manifest(value_manifest(3))
    world.apply(manifest)
    seq = world.last_seq()
    manifest.write_text(value_manifest(3) + "  - id: twin\n    inputs:\n      age: {value: 1}\n")
    with pytest.raises(PreflightError, match="case twin: has exactly the same inputs as "
                                             "case p0001"):
        world.apply(manifest)
    assert mutating(world.requests(seq)) == []


def test_uploaded_images_get_findable_names(world: World) -> None:
    manifest = world.manifest(image_manifest(world, 3))
    summary = world.apply(manifest)
    assert summary.counts()["submitted"] == 3
    lock = load(world.dir / "study.lock")
    assert lock is not None
    posted = [r for r in world.requests() if r["method"] == "POST" and r["path"].endswith("/uploads/")]
    assert len(posted) == 3
    # the names follow <case>.gcb-<hash8>.<ext>
    uploads = world.app.store.conn.execute("SELECT filename FROM uploads").fetchall()
    names = sorted(row[0] for row in uploads)
    assert all(n.startswith("scan-s") and ".gcb-" in n and n.endswith(".mha") for n in names)


def test_upload_name_shape() -> None:
    name = upload_name("p001_ct", "ct-image", 0, "scan.nii.gz", "abcd1234")
    assert name.startswith("p001_ct.gcb-") and name.endswith(".nii.gz")
    assert len(name.split(".gcb-")[1]) == len("12345678.nii.gz")
    assert upload_name("x", "s", 0, "a.mha", "a1") != upload_name("x", "s", 1, "a.mha", "a1")
    assert upload_name("x", "s", 0, "a.mha", "a1") != upload_name("x", "s", 0, "a.mha", "a2")
    assert len(upload_name("c" * 128, "s", 0, "f.mha", "a")) <= 128


def test_dropped_job_posts_are_adopted_not_duplicated(world: World) -> None:
    world.faults.set_plan(FaultPlan.parse(["POST /api/v1/algorithms/jobs/:drop_after_commit:0.3"]))
    manifest = world.manifest(value_manifest(30))
    summary = world.apply(manifest)
    assert summary.counts()["submitted"] == 30, render_apply_summary(summary)
    assert world.jobs() == 30
    lock = load(world.dir / "study.lock")
    assert lock is not None
    pks = [e.job.pk for e in lock.cases.values() if e.job]
    assert len(set(pks)) == 30
    # in-run reconciliation reads only the tail of the job list
    tails = [r for r in world.requests() if r["path"].endswith("/algorithms/jobs/")
             and r["method"] == "GET" and "limit=1000" in r["query"] and "offset=" in r["query"]]
    assert tails


def test_dropped_upload_job_posts_are_adopted_after_validation(world: World) -> None:
    world.faults.set_plan(FaultPlan.parse(["POST /api/v1/algorithms/jobs/:drop_after_commit:0.5"]))
    manifest = world.manifest(image_manifest(world, 8))
    summary = world.apply(manifest)
    assert summary.counts()["submitted"] == 8, render_apply_summary(summary)
    assert world.jobs() == 8


def test_credits_stop_cleanly_then_exactly_the_rest(world: World) -> None:
    world.app.set_config(world.app.config.replace(credits_per_month=5 * 20))
    manifest = world.manifest(value_manifest(8))
    summary = world.apply(manifest)
    assert summary.exit_code == 4
    assert summary.counts()["submitted"] == 5 and summary.counts()["waiting"] == 3
    assert "3 wait" in render_apply_summary(summary)
    world.app.set_config(world.app.config.replace(credits_per_month=1000))
    rest = world.apply(manifest)
    assert rest.counts()["submitted"] == 3 and rest.exit_code == 0
    assert world.jobs() == 8


def test_active_limit_learned_from_the_server(world: World) -> None:
    world.app.set_config(world.app.config.replace(max_active_jobs=3))
    manifest = world.manifest(value_manifest(12))
    peak = {"n": 0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak["n"] = max(peak["n"], world.app.stats()["users"]["demo"]["active_jobs"])
            stop.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = world.apply(manifest, max_active=16)
    finally:
        stop.set()
        watcher.join()
    assert summary.counts()["submitted"] == 12
    assert peak["n"] <= 3
    assert world.jobs() == 12


def test_auto_admission_learns_the_servers_limit(world: World) -> None:
    """Default (no --max-active): no limit of our own; the server's refusals teach it."""
    world.app.set_config(world.app.config.replace(max_active_jobs=3))
    manifest = world.manifest(value_manifest(15))
    answers: list[int] = []
    peak = {"n": 0}
    orig = world.app.handle

    def handle(req: Any) -> Any:
        response = orig(req)
        if req.method == "POST" and req.path.endswith("/algorithms/jobs/"):
            answers.append(response.status)
            peak["n"] = max(peak["n"], world.app.stats()["users"]["demo"]["active_jobs"])
        return response

    world.app.handle = handle  # type: ignore[method-assign]
    summary = world.apply(manifest, concurrency=8)
    assert ApplyOptions().max_active is None
    # refusals are neither failures nor doubts, and created nothing twice
    assert summary.counts()["submitted"] == 15 and summary.exit_code == 0
    assert world.jobs() == 15 and answers.count(201) == 15
    assert peak["n"] <= 3
    # a first burst of 8 POSTs meets the limit of 3; after it the learned cap keeps us
    # from hammering the server (no refusal per wait): few refusals in all
    refused = answers.count(400)
    assert 1 <= refused <= 8 + 3 and len(answers) == 15 + refused


def test_never_more_than_max_active(world: World) -> None:
    manifest = world.manifest(value_manifest(10))
    seen: list[int] = []
    orig = world.app.handle

    def handle(req: Any) -> Any:
        if req.method == "POST" and req.path.endswith("/algorithms/jobs/"):
            seen.append(world.app.stats()["users"]["demo"]["active_jobs"])
        return orig(req)

    world.app.handle = handle  # type: ignore[method-assign]
    summary = world.apply(manifest, max_active=2)
    assert summary.counts()["submitted"] == 10
    assert max(seen) <= 1  # before each POST, at most max_active - 1 are active


def test_preflight_fails_before_any_mutating_request(world: World) -> None:
    manifest = world.manifest(
        "version: 1\nalgorithm: risk-calculator\ncases:\n"
        "  - id: a\n    inputs:\n      age: {value: 'old'}\n      lung-volume: {value: 1}\n"
        "  - id: b\n    inputs:\n      age: {value: 3}\n"
        "  - id: c\n    inputs:\n      age: {value: 3}\n      ct-image: {image: 'http://x/y/'}\n"
        "      lung-volume: {value: 1}\n")
    with pytest.raises(PreflightError) as info:
        world.apply(manifest)
    text = str(info.value)
    assert "case a, socket age" in text and "integer" in text
    assert "case b" in text and "missing lung-volume" in text
    assert "case c" in text
    assert mutating(world.requests()) == []


def test_unknown_algorithm_is_a_preflight_error(world: World) -> None:
    manifest = world.manifest("version: 1\nalgorithm: no-such-thing\ncases:\n"
                              "  - id: a\n    inputs:\n      age: {value: 1}\n")
    with pytest.raises(PreflightError, match="no-such-thing"):
        world.apply(manifest)


def test_targeting_and_replace_keep_history(world: World) -> None:
    manifest = world.manifest(value_manifest(6))
    only = world.apply(manifest, targeting=Targeting(case_ids=("p0001",), select=("p000[45]",)))
    assert sorted(o.case for o in only.of("submitted")) == ["p0001", "p0004", "p0005"]
    # change one case's value: kept without --replace, resubmitted with it
    manifest.write_text(value_manifest(6).replace("age: {value: 1}", "age: {value: 99}"))
    kept = world.apply(manifest)
    assert [o.case for o in kept.of("skipped")] == ["p0001"]
    assert kept.counts()["submitted"] == 3
    replaced = world.apply(manifest, replace=True)
    assert [o.case for o in replaced.of("submitted")] == ["p0001"]
    lock = load(world.dir / "study.lock")
    assert lock is not None
    entry = lock.cases["p0001"]
    assert entry.job is not None and len(entry.history) == 1
    assert entry.history[0].pk != entry.job.pk
    assert world.jobs() == 7


def test_in_doubt_intent_from_a_crash_is_adopted(world: World) -> None:
    """A run died after the POST went out: the next run finds the job, sends no POST."""
    manifest = world.manifest(value_manifest(1))
    world.apply(manifest)
    lockfile = world.dir / "study.lock"
    lock = load(lockfile)
    assert lock is not None and lock.cases["p0000"].job is not None
    job_pk = lock.cases["p0000"].job.pk
    # forge the crash: forget the job, leave an intent at stage "post"
    with LockfileStore.open(lockfile, server=lock.server, algorithm=lock.algorithm) as store:
        store.forget("p0000")
        payload = {"v": 1, "attempt": "a", "stage": "post", "inputs": [
            {"socket": "age", "kind": "value", "value": 0},
            {"socket": "lung-volume", "kind": "value", "value": 4.2}]}
        store.intent("p0000", lock.cases["p0000"].fingerprint, inputs={}, payload=payload)
    seq = world.last_seq()
    summary = world.apply(manifest)
    assert [o.kind for o in summary.outcomes] == ["adopted"]
    assert summary.outcomes[0].job_pk == job_pk
    assert mutating(world.requests(seq)) == []
    assert world.jobs() == 1


def test_intent_never_posted_is_resumed_without_reconciling(world: World) -> None:
    """A run created its upload, journalled it and died before sending any part: the next
    run resumes that very upload (no new one) and submits."""
    from gcbatch.hashing import FileHasher
    from gcbatch.lockfile import AlgorithmRef
    from gcbatch.manifest import load_manifest
    from gcbatch.sources import expand

    manifest = world.manifest(image_manifest(world, 1))
    lockfile = world.dir / "study.lock"
    case = expand(load_manifest(manifest), hasher=FileHasher()).cases[0]
    scan = world.dir / "scans" / "s000.mha"
    with world.session() as session:
        algorithm = session.client.get_algorithm("lung-nodule-detector")
        store = LockfileStore.open(lockfile, server=session.client.base_url,
                                   algorithm=AlgorithmRef(algorithm.slug, algorithm.pk,
                                                          algorithm.api_url))
        upload = session.client.create_upload("scan-s000.gcb-00000000.mha")
        payload = {"v": 1, "attempt": "z", "stage": "upload", "inputs": [
            {"socket": "ct-image", "kind": "uploads", "files": [{
                "name": upload.filename, "path": str(scan), "size": scan.stat().st_size,
                "upload_pk": upload.pk, "s3_upload_id": upload.s3_upload_id}]}]}
        store.intent(case.id, case.fingerprint, inputs=case.digests(), payload=payload)
        store.close()
    seq = world.last_seq()
    summary = world.apply(manifest)
    assert summary.counts()["submitted"] == 1, render_apply_summary(summary)
    log = world.requests(seq)
    assert [r for r in log if r["method"] == "POST" and r["path"].endswith("/uploads/")] == []
    # never posted: nothing to reconcile, so no job listing was needed
    assert not [r for r in log if r["path"].endswith("/algorithms/jobs/")
                and r["method"] == "GET" and "input_image" in r["query"]]
    time.sleep(0.2)
    world.app.stats()  # the sandbox advances jobs (validation makes the image) lazily
    images = world.app.store.conn.execute("SELECT name FROM images WHERE name LIKE 'scan-%'")
    assert [row[0] for row in images] == ["scan-s000.gcb-00000000.mha"]


def test_second_concurrent_apply_and_foreign_lockfile_are_refused(world: World) -> None:
    manifest = world.manifest(value_manifest(2))
    lockfile = world.dir / "study.lock"
    with world.session() as session:
        from gcbatch.lockfile import AlgorithmRef
        holder = LockfileStore.open(lockfile, server=session.client.base_url,
                                    algorithm=AlgorithmRef("risk-calculator"))
        try:
            with pytest.raises(LockHeldError, match="pid"):
                world.apply(manifest)
        finally:
            holder.close()
    assert mutating(world.requests()) == []
    data = json.loads(lockfile.read_text())
    data["server"] = "https://elsewhere.example/api/v1/"
    lockfile.write_text(json.dumps(data))
    with pytest.raises(LockfileError, match="elsewhere"):
        world.apply(manifest)
    lockfile.write_text("{not json")
    with pytest.raises(LockfileError):
        world.apply(manifest)
    assert mutating(world.requests()) == []


def test_stop_request_finishes_in_flight_and_leaves_the_rest_waiting(world: World) -> None:
    manifest = world.manifest(value_manifest(30))
    captured: list[Executor] = []
    orig = world.app.handle
    posts = {"n": 0}

    def handle(req: Any) -> Any:
        response = orig(req)
        if req.method == "POST" and req.path.endswith("/algorithms/jobs/"):
            posts["n"] += 1
            if posts["n"] == 5 and captured:
                captured[0].request_stop()
        return response

    world.app.handle = handle  # type: ignore[method-assign]
    with world.session() as session:
        summary = apply(world.study(manifest), session,
                        ApplyOptions(concurrency=2, poll_min=0.02), on_executor=captured.append)
    assert summary.interrupted and summary.exit_code == 130
    submitted = summary.counts()["submitted"]
    assert 5 <= submitted < 30
    assert summary.counts()["waiting"] == 30 - submitted
    lock = load(world.dir / "study.lock")
    assert lock is not None
    assert sum(1 for e in lock.cases.values() if e.job) == submitted == world.jobs()
    assert not lock.in_doubt
    rest = world.apply(manifest)
    assert rest.counts()["submitted"] == 30 - submitted
    assert world.jobs() == 30


def test_server_rejection_stops_without_keep_going(world: World) -> None:
    # risk-calculator's age is an Integer; the sandbox's schema also refuses negative ages?
    # use a value the local preflight cannot see: a huge nested object for clinical-info
    # is accepted, so instead refuse through a fault that answers 400 to the 3rd POST
    world.faults.set_plan(FaultPlan.parse(["POST /api/v1/algorithms/jobs/:400:1:skip=2,times=1"]))
    manifest = world.manifest(value_manifest(10))
    summary = world.apply(manifest, concurrency=1)
    assert summary.counts()["failed"] == 1 and summary.exit_code == 1
    assert summary.counts()["submitted"] == 2
    world.faults.set_plan(FaultPlan.parse(["POST /api/v1/algorithms/jobs/:400:1:times=1"]))
    going = world.apply(manifest, keep_going=True, concurrency=1)
    assert going.counts()["failed"] == 1 and going.counts()["submitted"] == 7
    assert world.jobs() == 9


def wait_for_statuses(world: World, terminal: set[str], n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = world.app.stats()["statuses"]
        if sum(counts.get(s, 0) for s in terminal) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"jobs did not end: {world.app.stats()['statuses']}")


def test_retry_failed_resubmits_with_history(world: World) -> None:
    world.app.set_config(world.app.config.replace(failure_rate=1.0))
    manifest = world.manifest(image_manifest(world, 2))
    assert world.apply(manifest).counts()["submitted"] == 2
    wait_for_statuses(world, {"Failed"}, 2)
    plain = world.apply(manifest)
    assert plain.counts()["unchanged"] == 2  # without the flag, failed jobs stay
    world.app.set_config(world.app.config.replace(failure_rate=0.0))
    retried = world.apply(manifest, retry_failed=True)
    assert retried.counts()["submitted"] == 2, render_apply_summary(retried)
    lock = load(world.dir / "study.lock")
    assert lock is not None
    for entry in lock.cases.values():
        assert entry.job is not None and len(entry.history) == 1
        assert entry.history[0].status == "Failed"
    assert world.jobs() == 4


def test_retry_failed_value_case_is_refused_by_the_server_dedup(world: World) -> None:
    world.app.set_config(world.app.config.replace(failure_rate=1.0))
    manifest = world.manifest(value_manifest(1))
    assert world.apply(manifest).counts()["submitted"] == 1
    wait_for_statuses(world, {"Failed"}, 1)
    retried = world.apply(manifest, retry_failed=True)
    assert retried.counts()["failed"] == 1
    message = retried.outcomes[0].message
    assert "the same inputs (values) again" in message
    assert "A re-run needs a new image (or model) of the algorithm, or changed inputs" in message
    assert world.jobs() == 1


def test_too_many_uploads_pauses_uploads_then_goes_on(world: World) -> None:
    # the pause ends as soon as the server's count of live uploads goes down (our jobs
    # consume theirs when validated), not after a fixed wait
    world.app.set_config(world.app.config.replace(max_live_uploads=2))
    manifest = world.manifest(image_manifest(world, 6))
    summary = world.apply(manifest, concurrency=6)
    assert summary.counts()["submitted"] == 6, render_apply_summary(summary)
    refused = [r for r in world.requests()
               if r["method"] == "POST" and r["path"].endswith("/uploads/") and r["status"] == 400]
    assert refused  # the quota was hit, and apply waited instead of failing
    assert world.jobs() == 6
