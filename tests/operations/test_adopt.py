"""``adopt`` and plan's in-doubt listing against the in-process sandbox.

The world: a File study (risk-calculator: age, lung-volume, lab-report) whose case f1 was
left in doubt by a job POST the server never saw (a reset, one POST allowed), its upload
alive. Then jobs appear that look like f1's: the one a late commit of f1's own POST makes
(its upload), another study's case with the same values, another attempt of a case named
f1, a job with other values, and f2's (claimed) job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from gcbatch.api.client import GrandChallengeClient
from gcbatch.api.retry import RetryPolicy
from gcbatch.engine.options import ApplyOptions
from gcbatch.engine.outcomes import ApplySummary
from gcbatch.engine.ownership import Relation
from gcbatch.engine.sent import Sent, job_inputs
from gcbatch.errors import InputError, LockHeldError
from gcbatch.lockfile import FileLock, load, oslock_path_for
from gcbatch.operations.adopt import adopt, job_pk_of
from gcbatch.operations.apply import apply
from gcbatch.operations.plan import plan
from gcbatch.operations.session import Session
from gcbatch.operations.study import ConnectionOptions, Study, open_study
from gcbatch.sandbox.app import SandboxApp
from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.faults import FaultInjector, FaultPlan
from gcbatch.sandbox.lifecycle import make_mha
from gcbatch.sandbox.transport import SandboxTransport
from gcbatch.targeting import Targeting
from gcbatch.views.machine import JsonView
from gcbatch.views.text import render_adopt, render_in_doubt

BASE = "http://127.0.0.1:9/api/v1/"
FAST = SandboxConfig(validating_seconds=0.05, queued_seconds=0.05, provisioned_seconds=0.0,
                     executing_seconds=0.1, executed_seconds=0.0)
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class World:
    app: SandboxApp
    dir: Path
    faults: FaultInjector

    def session(self) -> Session:
        transport = SandboxTransport(self.app, self.faults, sleep=lambda s: None)
        client = GrandChallengeClient(
            BASE, self.app.token("demo"), transport=transport,
            retry=RetryPolicy(wait_initial=0.001, wait_max=0.01, attempts=12),
            sleep=lambda s: None)
        return Session(client=client)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=BASE, transport=SandboxTransport(self.app),
                            headers={"Authorization": f"Bearer {self.app.token('demo')}"})

    def study(self, manifest: Path) -> Study:
        return open_study(manifest, ConnectionOptions(server=BASE))

    def apply(self, manifest: Path, **options: Any) -> ApplySummary:
        options.setdefault("reconcile_wait", 1.0)
        options.setdefault("poll_min", 0.02)
        with self.session() as session:
            return apply(self.study(manifest), session, ApplyOptions(**options))

    def adopt(self, manifest: Path, case: str, job: str, **kwargs: Any) -> Any:
        with self.session() as session:
            return adopt(self.study(manifest), session, case, job, **kwargs)

    def mutating_since(self, seq: int) -> list[dict[str, Any]]:
        return [r for r in self.app.requests_since(seq) if r["method"] in MUTATING]

    def last_seq(self) -> int:
        log = self.app.requests_since(0)
        return int(log[-1]["seq"]) if log else 0

    def jobs(self) -> int:
        return int(self.app.stats()["users"]["demo"]["jobs"])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    app = SandboxApp(tmp_path / "sandbox.db", config=FAST)
    yield World(app, tmp_path, FaultInjector(FaultPlan()))
    app.close()


def file_study(world: World, name: str, cases: dict[str, tuple[int, str]]) -> Path:
    folder = world.dir / name
    folder.mkdir()
    lines = ["version: 1", "algorithm: risk-calculator", "defaults:",
             "  lung-volume: {value: 4.2}", "cases:"]
    for case_id, (age, text) in cases.items():
        (folder / f"{case_id}.json").write_text(json.dumps({"report": text}))
        lines += [f"  - id: {case_id}", "    inputs:", f"      age: {{value: {age}}}",
                  f"      lab-report: {{file: {case_id}.json}}"]
    manifest = folder / "study.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def upload(http: httpx.Client, name: str, data: bytes) -> str:
    up = http.post("uploads/", json={"filename": name}).json()
    base = f"uploads/{up['pk']}/{up['s3_upload_id']}/"
    urls = http.patch(base + "generate-presigned-urls/", json={"part_numbers": [1]}).json()
    put = http.put(urls["presigned_urls"]["1"], content=data)
    done = http.patch(base + "complete-multipart-upload/",
                      json={"parts": [{"ETag": put.headers["etag"], "PartNumber": 1}]})
    assert done.status_code == 200, done.text
    return str(up["api_url"])


def post_job(http: httpx.Client, age: int, report: str) -> str:
    alg = http.get("algorithms/", params={"slug": "risk-calculator"}).json()["results"][0]
    made = http.post("algorithms/jobs/", json={"algorithm": alg["api_url"], "inputs": [
        {"interface": "age", "value": age}, {"interface": "lung-volume", "value": 4.2},
        {"interface": "lab-report", "user_upload": upload(http, report, b'{"r": 1}')}]})
    assert made.status_code == 201, made.text
    return str(made.json()["pk"])


@dataclass(frozen=True)
class Scene:
    ours: Path
    sent: Sent  # what f1's in-doubt POST carried
    other_study: str  # another study's case o1, same values
    other_attempt: str  # a case named f1, another attempt's upload name
    other_values: str
    f2: str  # f2's job (same values as f1, its own file), claimed in this lockfile
    late: str = ""  # the job f1's own POST made after all (a late commit)


def commit_late(world: World, scene: Scene) -> Scene:
    """The job f1's own POST makes after all, with its upload."""
    with world.session() as session:
        algorithm = session.client.get_algorithm("risk-calculator")
        late = session.client.create_job(algorithm.api_url, job_inputs(scene.sent)).pk
    time.sleep(0.3)  # its upload attaches (the sandbox validates on the next request)
    return replace(scene, late=late)


@pytest.fixture
def bare(world: World) -> Scene:
    """f1 in doubt and look-alikes on the server, none of them f1's own job."""
    ours = file_study(world, "ours", {"f1": (7, "mine"), "f2": (7, "also mine")})
    # f1's job POST never reaches the server; one POST per case: f1 stays in doubt
    world.faults.set_plan(FaultPlan.parse(["POST algorithms/jobs/:reset:1:times=1"]))
    summary = world.apply(ours, concurrency=1, answer_window=0.0, max_posts_per_case=1)
    world.faults.set_plan(FaultPlan())
    assert summary.counts()["in_doubt"] == 1 and summary.counts()["submitted"] == 1
    lock = load(ours.with_suffix(".lock"))
    assert lock is not None and lock.in_doubt == ("f1",)
    f2 = lock.cases["f2"].job
    assert f2 is not None
    other = file_study(world, "other", {"o1": (7, "someone else's")})
    assert world.apply(other).counts()["submitted"] == 1
    other_lock = load(other.with_suffix(".lock"))
    assert other_lock is not None and other_lock.cases["o1"].job is not None
    pending = lock.cases["f1"].pending
    assert pending is not None
    with world.http() as http:
        attempt = post_job(http, 7, "f1.gcb-0000abcd.json")
        values = post_job(http, 9, "f1.gcb-0000ef01.json")
    time.sleep(0.3)  # their uploads attach (the sandbox validates them on the next request)
    return Scene(ours, Sent.from_json(pending.payload), other_lock.cases["o1"].job.pk,
                 attempt, values, f2.pk)


@pytest.fixture
def scene(world: World, bare: Scene) -> Scene:
    """The same, and the job f1's POST made after all."""
    return commit_late(world, bare)


def test_adopt_refuses_what_is_not_the_case_s_job_and_records_its_own(
    world: World, scene: Scene
) -> None:
    seq = world.last_seq()
    refusals = {
        scene.other_study: "made for case o1 (another study's, or an older attempt)",
        scene.other_values: "its age is 9, this case sent 7",
        scene.f2: "is already case 'f2''s job",
        "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000": "no job 0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000",
    }
    for job, why in refusals.items():
        with pytest.raises(InputError) as raised:
            world.adopt(scene.ours, "f1", job, force=True)  # force never overrides these
        assert why in str(raised.value), str(raised.value)
        assert "Nothing recorded" in str(raised.value) or "nothing recorded" in str(
            raised.value)
    with pytest.raises(InputError, match="may or may not be case 'f1''s"):
        world.adopt(scene.ours, "f1", scene.other_attempt)
    lock = load(scene.ours.with_suffix(".lock"))
    assert lock is not None and lock.in_doubt == ("f1",)
    result = world.adopt(scene.ours, "f1", f"{BASE}algorithms/jobs/{scene.late}/")
    assert (result.job.pk, result.candidate.relation, result.forced) == (
        scene.late, Relation.OURS, False)
    assert "adopted: f1 → job" in render_adopt(result)
    assert world.mutating_since(seq) == []  # adopt only asks
    lock = load(scene.ours.with_suffix(".lock"))
    assert lock is not None and not lock.in_doubt
    entry = lock.cases["f1"]
    assert entry.job is not None and entry.job.pk == scene.late and entry.pending is None
    # the case is settled: apply sends nothing, plan says unchanged
    jobs = world.jobs()
    seq = world.last_seq()
    again = world.apply(scene.ours)
    assert again.counts()["unchanged"] == 2 and world.jobs() == jobs
    assert world.mutating_since(seq) == []
    with world.session() as session:
        result_plan = plan(world.study(scene.ours), targeting=Targeting(), session=session)
    assert {a.case_id: a.kind.value for a in result_plan.plan.actions} == {
        "f1": "unchanged", "f2": "unchanged"}


def test_adopt_takes_a_job_that_cannot_be_told_apart_only_with_force(
    world: World, scene: Scene
) -> None:
    result = world.adopt(scene.ours, "f1", scene.other_attempt, force=True)
    assert result.forced and result.candidate.relation == Relation.OTHER_ATTEMPT
    assert "adopted with --force" in render_adopt(result)
    # the job a late commit made is now an unclaimed job of f1's: adopt never takes a
    # second one for the same case (the case is not in doubt any more)
    with pytest.raises(InputError, match="not in doubt"):
        world.adopt(scene.ours, "f1", scene.late)


def test_adopt_refuses_a_job_of_another_algorithm(world: World, scene: Scene) -> None:
    with world.http() as http:
        alg = http.get("algorithms/", params={"slug": "lung-nodule-detector"}).json()
        image = upload(http, "f1.gcb-12345678.mha", make_mha(2, 2, bytes(4)))
        made = http.post("algorithms/jobs/", json={
            "algorithm": alg["results"][0]["api_url"],
            "inputs": [{"interface": "ct-image", "user_uploads": [image]}]})
        assert made.status_code == 201, made.text
    with pytest.raises(InputError, match=r"runs another algorithm .*, not risk-calculator"):
        world.adopt(scene.ours, "f1", made.json()["pk"], force=True)


def test_adopt_refuses_cases_not_in_doubt_bad_job_names_and_a_held_lock(
    world: World, scene: Scene
) -> None:
    with pytest.raises(InputError, match="not in doubt: its job is"):
        world.adopt(scene.ours, "f2", scene.late)
    with pytest.raises(InputError, match=r"is not in .*nothing to adopt"):
        world.adopt(scene.ours, "nope", scene.late)
    for bad in ("../../uploads", "3f2c…", "https://x/api/v1/uploads/1/"):
        with pytest.raises(InputError, match="is not a job"):
            job_pk_of(bad)
    lock = FileLock(oslock_path_for(scene.ours.with_suffix(".lock")))
    lock.acquire()
    try:
        with pytest.raises(LockHeldError):
            world.adopt(scene.ours, "f1", scene.late)
    finally:
        lock.release()


def test_no_lockfile_means_nothing_to_adopt_and_none_is_created(world: World) -> None:
    manifest = file_study(world, "fresh", {"f1": (7, "mine")})
    with pytest.raises(InputError, match="does not exist"):
        world.adopt(manifest, "f1", "0190aaaa-bbbb-7ccc-8ddd-eeeeffff0000")
    assert not manifest.with_suffix(".lock").exists()


def test_online_plan_lists_the_jobs_that_may_be_the_case_s_and_whose_they_are(
    world: World, scene: Scene
) -> None:
    seq = world.last_seq()
    with world.session() as session:
        result = plan(world.study(scene.ours), targeting=Targeting(), session=session)
    assert world.mutating_since(seq) == []
    [examined] = result.in_doubt
    assert examined.case_id == "f1" and examined.outlook == "adopt"
    relations = {c.job.pk: c.relation for c in examined.candidates}
    assert relations == {scene.late: Relation.OURS,
                         scene.other_attempt: Relation.OTHER_ATTEMPT,
                         scene.other_study: Relation.OTHER_CASE}
    assert examined.candidates[0].job.pk == scene.late
    lines = render_in_doubt(examined, "ours/study.yaml")
    assert lines[0].startswith(f"apply would adopt job {scene.late}: ")
    assert lines[1] == "jobs that look like this case's:"
    text = "\n".join(lines)
    assert scene.other_study in text
    assert "made for case o1" in text and "carries this case's upload names" in text
    # --json carries it too
    out = _Capture()
    JsonView(out=out).show_plan(result)  # type: ignore[arg-type]
    doc = json.loads(out.text)
    assert doc["in_doubt"][0]["apply_would"] == "adopt"
    assert doc["in_doubt"][0]["job"] == scene.late
    assert {c["relation"] for c in doc["in_doubt"][0]["candidates"]} == {
        "ours", "other_attempt", "other_case"}


def test_plan_lists_candidates_when_no_job_carries_the_case_s_names(
    world: World, bare: Scene
) -> None:
    with world.session() as session:
        result = plan(world.study(bare.ours), targeting=Targeting(case_ids=("f1",)),
                      session=session)
    [examined] = result.in_doubt
    assert examined.outlook == "resend"
    # f2's job (same values, f2's file) is f2's: claimed, though f2 is not targeted
    assert [(c.job.pk, c.relation) for c in examined.candidates] == [
        (bare.other_attempt, Relation.OTHER_ATTEMPT), (bare.other_study, Relation.OTHER_CASE)]
    lines = render_in_doubt(examined, "ours/study.yaml")
    assert "apply sends it again once its answer window has passed" in lines[0]
    assert lines[-1].startswith("to record one: gcbatch adopt ours/study.yaml f1 JOB")
    # and once the late job shows, apply would adopt it, and the plan says so
    scene = commit_late(world, bare)
    with world.session() as session:
        again = plan(world.study(scene.ours), targeting=Targeting(), session=session)
    assert again.in_doubt[0].outlook == "adopt"
    assert again.in_doubt[0].verdict.job.pk == scene.late  # type: ignore[union-attr]


class _Capture:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def image_study(world: World, name: str, case: str, seed: int) -> Path:
    folder = world.dir / name
    folder.mkdir()
    (folder / f"{case}.mha").write_bytes(make_mha(2, 2, bytes([seed] * 4)))
    manifest = folder / "study.yaml"
    manifest.write_text("version: 1\nalgorithm: lung-nodule-detector\ncases:\n"
                        f"  - id: {case}\n    inputs:\n      ct-image: {{file: {case}.mha}}\n")
    return manifest


def test_image_look_alikes_are_told_by_their_names_each_read_once(world: World) -> None:
    from gcbatch.engine.ownership import examine

    ours = image_study(world, "ours", "scan-1", 1)
    world.faults.set_plan(FaultPlan.parse(["POST algorithms/jobs/:reset:1:times=1"]))
    world.apply(ours, answer_window=0.0, max_posts_per_case=1)
    world.faults.set_plan(FaultPlan())
    other = image_study(world, "other", "scan-9", 2)
    assert world.apply(other).counts()["submitted"] == 1
    lock = load(ours.with_suffix(".lock"))
    assert lock is not None and lock.in_doubt == ("scan-1",)
    pending = lock.cases["scan-1"].pending
    assert pending is not None
    sent = Sent.from_json(pending.payload)
    with world.session() as session:
        algorithm = session.client.get_algorithm("lung-nodule-detector")
        late = session.client.create_job(algorithm.api_url, job_inputs(sent)).pk
        time.sleep(0.3)
        jobs = tuple(session.view.all_jobs(algorithm.pk))
        names: dict[str, str] = {}
        seq = world.last_seq()
        first = examine(session.view, algorithm.pk, sent, jobs, case_id="scan-1",
                        claimed_by={}, known_names=names)
        image_gets = [r for r in world.app.requests_since(seq)
                      if r["method"] == "GET" and _one_image(r["path"])]
        seq = world.last_seq()
        second = examine(session.view, algorithm.pk, sent, jobs, case_id="scan-1",
                         claimed_by={}, known_names=names)
        again = [r for r in world.app.requests_since(seq)
                 if r["method"] == "GET" and _one_image(r["path"])]
    assert first.outlook == "adopt"
    got = [(c.job.pk == late, c.relation, c.tag) for c in first.candidates]
    assert got == [(True, Relation.OURS, ""), (False, Relation.OTHER_CASE, "scan-9")]
    assert len(image_gets) == 1  # the other study's image; ours is known by its name
    assert again == [] and second.candidates == first.candidates


def _one_image(path: str) -> bool:
    return path.startswith("/api/v1/cases/images/") and path != "/api/v1/cases/images/"
