"""lock merge (files, shards, journals, OS locks), lock rebuild (handles, ambiguity, GETs
only) and lock move (same server proven, in-doubt kept), against the in-process sandbox."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from test_apply import FAST, World, image_manifest, mutating, value_manifest

from gcbatch import lockfile as lockmod
from gcbatch.engine.outcomes import Outcome
from gcbatch.errors import ConfigError, InputError, LockHeldError
from gcbatch.lockfile import FileLock, Intent, oslock_path_for
from gcbatch.operations.lock_merge import merge, merge_shards
from gcbatch.operations.lock_move import move
from gcbatch.operations.lock_rebuild import rebuild
from gcbatch.operations.study import ConnectionOptions, open_study
from gcbatch.sandbox.app import SandboxApp
from gcbatch.sandbox.faults import FaultInjector, FaultPlan
from gcbatch.sandbox.lifecycle import make_mha
from gcbatch.targeting import Shard

BASE = "http://127.0.0.1:9/api/v1/"

@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    app = SandboxApp(tmp_path / "sandbox.db", config=FAST)
    yield World(app, tmp_path, FaultInjector(FaultPlan()))
    app.close()



def _pairs(path: Path) -> dict[str, str]:
    locked = lockmod.load(path)
    assert locked is not None
    return {c: e.job.pk for c, e in locked.cases.items() if e.job is not None}


def _validated(world: World) -> None:
    """Until every job shows its upload-made inputs (they attach once validated)."""
    deadline = time.monotonic() + 10
    with world.session() as session:
        alg = session.view.algorithm("lung-nodule-detector")
        assert alg is not None
        while time.monotonic() < deadline:
            if all(job.inputs for job in session.view.all_jobs(alg.pk)):
                return
            time.sleep(0.05)
    raise AssertionError("jobs never validated")


def _apply_shards(world: World, manifest: Path, n: int) -> None:
    for i in range(n):
        study = open_study(manifest, ConnectionOptions(server=BASE, shard=Shard(i, n)))
        from gcbatch.engine.options import ApplyOptions
        from gcbatch.operations.apply import apply

        with world.session() as session:
            apply(study, session, ApplyOptions(reconcile_wait=5.0, poll_min=0.02))


# --------------------------------------------------------------------------- merge


def test_shards_partition_the_cases_and_merge_into_the_study_lockfile(world: World) -> None:
    manifest = world.manifest(value_manifest(30))
    _apply_shards(world, manifest, 3)
    shards = [_pairs(world.dir / f"study.shard-{i}-of-3.lock") for i in range(3)]
    assert sum(map(len, shards)) == 30 and len(set().union(*shards)) == 30
    assert world.jobs() == 30
    outcome = merge_shards(manifest)
    assert outcome.written and outcome.cases == 30 and outcome.shared == 0
    merged = _pairs(world.dir / "study.lock")
    assert merged == {k: v for s in shards for k, v in s.items()}
    # the whole study, once merged: a plain apply sends nothing
    seq = world.last_seq()
    assert world.apply(manifest).counts()["unchanged"] == 30
    assert mutating(world.requests(seq)) == []


def test_a_missing_shard_or_a_running_one_is_refused(world: World) -> None:
    manifest = world.manifest(value_manifest(9))
    _apply_shards(world, manifest, 3)
    held = FileLock(oslock_path_for(world.dir / "study.shard-1-of-3.lock"))
    held.acquire()
    try:
        with pytest.raises(LockHeldError):
            merge_shards(manifest)
    finally:
        held.release()
    assert not (world.dir / "study.lock").exists()
    (world.dir / "study.shard-2-of-3.lock").rename(world.dir / "elsewhere.lock")
    with pytest.raises(ConfigError, match="2/3"):
        merge_shards(manifest)


def test_a_crashed_shards_journal_is_merged_and_the_output_journal_emptied(
        world: World) -> None:
    manifest = world.manifest(value_manifest(6))
    _apply_shards(world, manifest, 2)
    shard = world.dir / "study.shard-0-of-2.lock"
    before = lockmod.load(shard)
    assert before is not None
    case_id = sorted(before.cases)[0]
    # an intent journalled by a run that died right after it (no outcome)
    journal = lockmod.journal_path_for(shard)
    event = {"event": "intent", "case": case_id, "at": "2026-12-04T10:00:00Z",
             "fingerprint": "sha256:x", "inputs": {}, "uploads": [],
             "payload": {"v": 1, "stage": "post", "attempt": "ab", "inputs": []}}
    with journal.open("a") as fh:
        fh.write(json.dumps(event) + "\n")
    outcome = merge_shards(manifest)
    assert outcome.in_doubt == 1
    merged = lockmod.load(world.dir / "study.lock")
    assert merged is not None and merged.in_doubt == (case_id,)
    assert not lockmod.journal_path_for(world.dir / "study.lock").exists()


def test_git_driver_mode_writes_the_result_over_the_first(tmp_path: Path) -> None:
    server, alg = BASE, lockmod.AlgorithmRef("risk-calculator", "a", "")
    job = lockmod.JobRecord("j1", f"{BASE}algorithms/jobs/j1/", "Succeeded",
                            "2026-12-04T10:00:00Z", "sha256:f")
    ours, theirs = tmp_path / ".merge_file_a", tmp_path / ".merge_file_b"
    lockmod.save(ours, lockmod.Lockfile(server, alg, {"p1": lockmod.CaseEntry("sha256:f",
                                                                              job=job)}))
    lockmod.save(theirs, lockmod.Lockfile(server, alg, {
        "p2": lockmod.CaseEntry("sha256:f", job=replace(job, pk="j2"))}))
    outcome = merge([ours, theirs], ours, git_driver=True)
    assert outcome.written and _pairs(ours) == {"p1": "j1", "p2": "j2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".merge_file_a", ".merge_file_b"]


# --------------------------------------------------------------------------- rebuild


def test_rebuild_finds_uploaded_images_by_their_names_with_gets_only(world: World) -> None:
    manifest = world.manifest(image_manifest(world, 4))
    assert world.apply(manifest).counts()["submitted"] == 4
    _validated(world)
    lock_path = world.dir / "study.lock"
    expected = _pairs(lock_path)
    lock_path.unlink()
    lockmod.journal_path_for(lock_path).unlink(missing_ok=True)
    seq = world.last_seq()
    with world.session() as session:
        outcome = rebuild(world.study(manifest), session)
    assert mutating(world.requests(seq)) == []
    assert dict(outcome.adopted) == expected and not outcome.no_job and not outcome.ambiguous
    assert _pairs(lock_path) == expected
    seq = world.last_seq()
    assert world.apply(manifest).counts()["unchanged"] == 4
    assert mutating(world.requests(seq)) == []


def test_rebuild_lists_no_job_and_ambiguous_cases_and_records_the_latter_in_doubt(
        world: World) -> None:
    manifest = world.manifest(image_manifest(world, 3))
    world.apply(manifest)
    # scan 0 changed and replaced: two jobs carry its upload names, neither failed
    scan = world.dir / "scans" / "s000.mha"
    scan.write_bytes(make_mha(4, 4, bytes(range(100, 132)), depth=2))
    world.apply(manifest, replace=True)
    _validated(world)
    # a fourth scan never applied
    (world.dir / "scans" / "s003.mha").write_bytes(make_mha(4, 4, bytes(32), depth=2))
    lock_path = world.dir / "study.lock"
    lock_path.unlink()
    lockmod.journal_path_for(lock_path).unlink(missing_ok=True)
    with world.session() as session:
        outcome = rebuild(world.study(manifest), session)
    assert [c for c, _ in outcome.ambiguous] == ["scan-s000"]
    assert len(outcome.ambiguous[0][1]) == 2
    assert outcome.no_job == ("scan-s003",)
    assert sorted(c for c, _ in outcome.adopted) == ["scan-s001", "scan-s002"]
    rebuilt = lockmod.load(lock_path)
    assert rebuilt is not None and rebuilt.in_doubt == ("scan-s000",)
    # apply sends the new case, and nothing for the ambiguous one
    summary = world.apply(manifest)
    counts = summary.counts()
    assert counts["submitted"] == 1 and counts["in_doubt"] == 1
    (doubt,) = summary.of(Outcome.IN_DOUBT)
    assert "gcbatch adopt" in doubt.message and outcome.ambiguous[0][1][0] in doubt.message
    # even --resubmit-in-doubt sends nothing for it: its jobs exist
    again = world.apply(manifest, resubmit_in_doubt=True)
    assert again.counts()["in_doubt"] == 1 and again.counts()["submitted"] == 0


def test_rebuild_never_writes_over_a_lockfile(world: World) -> None:
    manifest = world.manifest(value_manifest(2))
    world.apply(manifest)
    before = (world.dir / "study.lock").read_bytes()
    with world.session() as session, pytest.raises(InputError, match="exists"):
        rebuild(world.study(manifest), session)
    assert (world.dir / "study.lock").read_bytes() == before


# --------------------------------------------------------------------------- move


def test_move_to_another_url_of_the_same_server_keeps_jobs_and_doubt(world: World) -> None:
    manifest = world.manifest(value_manifest(5))
    world.apply(manifest)
    lock_path = world.dir / "study.lock"
    locked = lockmod.load(lock_path)
    assert locked is not None
    # one case in doubt (its intent must survive the move)
    cases = dict(locked.cases)
    cases["p0000"] = replace(cases["p0000"], pending=Intent(
        "sha256:f", "2026-12-04T10:00:00Z", payload={"v": 1, "stage": "post"}))
    lockmod.save(lock_path, replace(locked, cases=cases))
    new_url = "http://localhost:9/api/v1/"
    study = open_study(manifest, ConnectionOptions(server=new_url, lockfile=lock_path))
    seq = world.last_seq()
    with world.session() as session:
        outcome = move(study, session)
    assert mutating(world.requests(seq)) == []
    assert outcome.written and outcome.jobs == 5 and outcome.in_doubt == 1
    moved = lockmod.load(lock_path, server=new_url)
    assert moved is not None and moved.server == new_url
    assert _pairs(lock_path) == {c: e.job.pk for c, e in locked.cases.items() if e.job}
    assert moved.in_doubt == ("p0000",)


def test_move_to_another_server_is_refused_and_changes_nothing(world: World,
                                                               tmp_path: Path) -> None:
    manifest = world.manifest(value_manifest(3))
    world.apply(manifest)
    lock_path = world.dir / "study.lock"
    before = lock_path.read_bytes()

    other_app = SandboxApp(tmp_path / "other.db", config=world.app.config)
    try:
        other = World(other_app, world.dir, world.faults)
        study = open_study(manifest, ConnectionOptions(server="http://127.0.0.2:9/api/v1/",
                                                       lockfile=lock_path))
        with other.session() as session, pytest.raises(InputError, match="not"):
            move(study, session)
    finally:
        other_app.close()
    assert lock_path.read_bytes() == before
    assert os.path.exists(lock_path)


# --------------------------------------------------------------------------- shards and
# the whole study


def test_a_whole_apply_with_unmerged_shards_is_refused_and_sends_nothing(world: World) -> None:
    manifest = world.manifest(value_manifest(8))
    _apply_shards(world, manifest, 2)
    seq = world.last_seq()
    with pytest.raises(ConfigError, match="lock merge"):
        world.apply(manifest)
    assert world.requests(seq) == []
    merge_shards(manifest)
    assert world.apply(manifest).counts()["unchanged"] == 8
    # a shard run that changes nothing does not stand in the whole study's way
    _apply_shards(world, manifest, 2)
    seq = world.last_seq()
    assert world.apply(manifest).counts()["unchanged"] == 8
    assert mutating(world.requests(seq)) == []


def test_a_shard_takes_in_what_the_whole_study_submitted_since(world: World) -> None:
    manifest = world.manifest(value_manifest(8))
    _apply_shards(world, manifest, 2)
    merge_shards(manifest)
    manifest.write_text(value_manifest(12))  # 4 new cases, applied as a whole
    assert world.apply(manifest).counts()["submitted"] == 4
    assert world.jobs() == 12
    seq = world.last_seq()
    _apply_shards(world, manifest, 2)
    assert mutating(world.requests(seq)) == []
    assert world.jobs() == 12
    merged = set(_pairs(world.dir / "study.shard-0-of-2.lock")) | set(
        _pairs(world.dir / "study.shard-1-of-2.lock"))
    assert len(merged) == 12
