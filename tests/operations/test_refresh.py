"""The refresh shared by status/wait/download: statuses recorded, lock held, tables."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import pytest
from fake_job_list import SERVER, FakeClient, job_json

from gcbatch import lockfile as lockmod
from gcbatch.lockfile import AlgorithmRef, CaseEntry, JobRecord, Lockfile
from gcbatch.operations.download import write_tables
from gcbatch.operations.refresh import Refresh
from gcbatch.operations.refresh import refresh as refresh_study
from gcbatch.operations.session import Session
from gcbatch.operations.study import ConnectionOptions, open_study
from gcbatch.tables import result_table

ALG = AlgorithmRef("alg", "alg-pk", f"{SERVER}algorithms/alg-pk/")


def refresh(server: FakeClient, path: Path, *, case_ids: list[str] | None) -> Refresh:
    """A refresh of the study whose lockfile is ``path`` (every locked case: None)."""
    manifest = path.with_suffix(".yaml")
    manifest.write_text("version: 1\nalgorithm: alg\ncases:\n  - id: x\n    inputs: {age: {value: 1}}\n",
                        encoding="utf-8")
    study = open_study(manifest, ConnectionOptions(server=SERVER, lockfile=path))
    if case_ids is None:
        locked = lockmod.load(path)
        case_ids = sorted(locked.cases) if locked is not None else []
    return refresh_study(study, Session(client=server), case_ids)  # type: ignore[arg-type]


def _lockfile(path: Path, cases: Mapping[str, CaseEntry]) -> None:
    lockmod.save(path, Lockfile(server=SERVER, algorithm=ALG, cases=dict(cases)))


def _entry(pk: str, status: str) -> CaseEntry:
    record = JobRecord(pk=pk, api_url=f"{SERVER}algorithms/jobs/{pk}/", status=status,
                       submitted_at="2026-11-27T14:00:00Z", fingerprint="sha256:f")
    return CaseEntry(fingerprint="sha256:f", job=record)


def test_refresh_records_changed_statuses(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    _lockfile(path, {"a": _entry("ja", "Queued"), "b": _entry("jb", "Queued"),
                     "c": _entry("jc", "Succeeded"), "d": CaseEntry()})
    server = FakeClient([
        job_json("ja", "Succeeded", exec_duration="PT1M"),
        job_json("jb", "Executing"),
        job_json("jc", "Succeeded"),
        job_json("other", "Failed"),
    ])
    outcome = refresh(server, path, case_ids=["a", "b", "c", "d"])
    assert outcome.recorded
    assert {r.case_id: r.status for r in outcome.report.rows} == {
        "a": "Succeeded", "b": "Executing", "c": "Succeeded", "d": "Not submitted"}
    assert outcome.report.rows[0].duration_s == 60
    assert set(outcome.jobs) == {"a", "b", "c"}
    saved = lockmod.load(path)
    assert saved is not None
    assert saved.cases["a"].job is not None and saved.cases["a"].job.status == "Succeeded"
    assert saved.cases["b"].job is not None and saved.cases["b"].job.status == "Executing"
    assert not lockmod.journal_path_for(path).read_text().count('"status"')  # checkpointed
    assert len(server.requests) == 2  # the list's length, then its one page


def test_refresh_without_changes_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    _lockfile(path, {"a": _entry("ja", "Succeeded"), "b": _entry("jb", "Failed"),
                     "c": _entry("jc", "Queued")})
    before = path.stat().st_mtime_ns
    server = FakeClient([job_json("ja", "Succeeded"), job_json("jb", "Failed"),
                         job_json("jc", "Queued")])
    outcome = refresh(server, path, case_ids=None)
    assert outcome.recorded and path.stat().st_mtime_ns == before
    assert outcome.report.any_problem


def test_refresh_when_the_lock_is_held_reports_but_does_not_record(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    _lockfile(path, {"a": _entry("ja", "Queued"), "b": _entry("jb", "Queued"),
                     "c": _entry("jc", "Queued")})
    server = FakeClient([job_json("ja", "Succeeded"), job_json("jb", "Queued"),
                         job_json("jc", "Queued")])
    with lockmod.FileLock(lockmod.oslock_path_for(path)):
        outcome = refresh(server, path, case_ids=None)
    assert not outcome.recorded and "held by another gcbatch" in outcome.lock_holder
    assert outcome.report.rows[0].status == "Succeeded"
    saved = lockmod.load(path)
    assert saved is not None and saved.cases["a"].job is not None
    assert saved.cases["a"].job.status == "Queued"


def test_refresh_without_a_lockfile(tmp_path: Path) -> None:
    server = FakeClient([])
    outcome = refresh(server, tmp_path / "none.lock", case_ids=["x"])
    assert [r.status for r in outcome.report.rows] == ["Not submitted"]
    assert server.requests == [] and not (tmp_path / "none.lock").exists()


def test_missing_job_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    _lockfile(path, {"a": _entry("ja", "Queued"), "b": _entry("jb", "Queued"),
                     "c": _entry("gone", "Queued")})
    server = FakeClient([job_json("ja", "Succeeded"), job_json("jb", "Succeeded")])
    outcome = refresh(server, path, case_ids=None)
    assert outcome.report.counts() == {"Succeeded": 2, "Missing": 1}
    assert outcome.report.any_problem
    saved = lockmod.load(path)
    assert saved is not None and saved.cases["c"].job is not None
    assert saved.cases["c"].job.status == "Queued"  # "Missing" is never written


def test_result_table_and_files(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    _lockfile(path, {"a": _entry("ja", "Queued"), "b": _entry("jb", "Queued")})
    value_socket = {"slug": "score", "super_kind": "Value", "kind": "Float", "pk": 1,
                    "relative_path": "score.json"}
    server = FakeClient([
        job_json("ja", "Succeeded", outputs=[{"interface": value_socket, "value": 0.5}]),
        job_json("jb", "Failed", outputs=[{"interface": value_socket, "value": 9}]),
    ])
    outcome = refresh(server, path, case_ids=["a", "b", "c"])
    table = result_table(outcome.report, outcome.jobs,
                         {"a": {"age": "value 3"}, "c": {"age": "value 5"}},
                         output_sockets=["count"])
    csv_path, json_path = write_tables(tmp_path / "out", table)
    assert csv_path.read_text() == (
        "case_id,job_pk,status,input:age,output:count,output:score\n"
        "a,ja,Succeeded,value 3,,0.5\n"
        "b,jb,Failed,,,\n"
        "c,,Not submitted,value 5,,\n"
    )
    assert json.loads(json_path.read_text())["cases"][0]["outputs"] == {"score": 0.5}


@pytest.mark.parametrize("count", [0, 1])
def test_refresh_asks_for_the_algorithm_pk_only_when_needed(tmp_path: Path, count: int) -> None:
    path = tmp_path / "study.lock"
    lockmod.save(path, Lockfile(server=SERVER, algorithm=AlgorithmRef("alg"),
                                cases={f"c{i}": _entry(f"j{i}", "Queued") for i in range(3)}))
    server = FakeClient([job_json(f"j{i}", "Queued") for i in range(3)])
    ids = ["c0", "c1", "c2"] if count else []
    refresh(server, path, case_ids=ids)
    assert len([r for r, _ in server.requests if r == "algorithm alg"]) == count


def test_a_batch_of_statuses_costs_one_fsync(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "study.lock"
    _lockfile(path, {f"c{i}": _entry(f"j{i}", "Queued") for i in range(100)})
    with lockmod.LockfileStore.open(path, server=SERVER, algorithm=ALG,
                                    checkpoint_every=10**9) as store:
        calls: list[int] = []
        real_fsync = os.fsync

        def counting_fsync(fd: int) -> None:
            calls.append(fd)
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", counting_fsync)
        store.statuses((f"c{i}", f"j{i}", "Succeeded") for i in range(100))
        assert len(calls) == 1
        monkeypatch.undo()
    # journalled, folded and checkpointed on close
    saved = lockmod.load(path)
    assert saved is not None
    assert {e.job.status for e in saved.cases.values() if e.job} == {"Succeeded"}
