"""gcbatch.results: job fetching strategy, refresh + recording, retry selection, tables."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gcbatch import lockfile as lockmod
from gcbatch.errors import NotFoundError
from gcbatch.lockfile import AlgorithmRef, CaseEntry, Intent, JobRecord, Lockfile
from gcbatch.models import Job
from gcbatch.results import (
    cases_to_retry,
    fetch_jobs,
    refresh,
    result_table,
    write_tables,
)

SERVER = "http://127.0.0.1:9/api/v1/"
ALG = AlgorithmRef("alg", "alg-pk", f"{SERVER}algorithms/alg-pk/")


def _job_json(pk: str, status: str = "Queued", **extra: Any) -> dict[str, Any]:
    return {"pk": pk, "api_url": f"{SERVER}algorithms/jobs/{pk}/", "status": status,
            "inputs": [], "outputs": [], "exec_duration": None, **extra}


class FakeServer:
    """The job list (limit/offset, count) and job details, counting requests."""

    def __init__(self, jobs: list[dict[str, Any]], max_limit: int = 1000) -> None:
        self.jobs = jobs
        self.max_limit = max_limit
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def get_json(self, path_or_url: str, params: Mapping[str, object] | None = None) -> object:
        params = dict(params or {})
        self.requests.append((path_or_url, params))
        assert path_or_url == "algorithms/jobs/"
        assert params["algorithm_image__algorithm"] == "alg-pk"
        limit, offset = int(str(params["limit"])), int(str(params["offset"]))
        assert limit <= 1000
        limit = min(limit, self.max_limit)
        page = self.jobs[offset:offset + limit]
        more = offset + limit < len(self.jobs)
        return {"count": len(self.jobs), "next": "x" if more else None, "previous": None,
                "results": page}

    def get_job(self, pk_or_url: str) -> Job:
        self.requests.append((f"job {pk_or_url}", {}))
        for job in self.jobs:
            if job["pk"] == pk_or_url:
                return Job.from_json(job)
        raise NotFoundError("No Job matches the given query.", status=404)


def test_fetch_uses_the_list_in_pages_of_1000() -> None:
    server = FakeServer([_job_json(f"j{i:04d}") for i in range(2500)])
    found = fetch_jobs(server, "alg-pk", [f"j{i:04d}" for i in range(0, 2500, 3)])
    assert len(found) == len(range(0, 2500, 3))
    assert [p["offset"] for _, p in server.requests] == [0, 1000, 2000]


def test_fetch_follows_a_server_with_a_smaller_max_limit() -> None:
    server = FakeServer([_job_json(f"j{i:04d}") for i in range(1000)], max_limit=300)
    found = fetch_jobs(server, "alg-pk", [f"j{i:04d}" for i in range(0, 1000, 7)])
    assert len(found) == len(range(0, 1000, 7))
    assert [p["offset"] for _, p in server.requests] == [0, 300, 600, 900]


def test_fetch_stops_paging_when_everything_was_found() -> None:
    server = FakeServer([_job_json(f"j{i:04d}") for i in range(5000)])
    found = fetch_jobs(server, "alg-pk", ["j0001", "j0002", "j0500"])
    assert set(found) == {"j0001", "j0002", "j0500"}
    assert len(server.requests) == 1


def test_fetch_looks_up_stragglers_one_by_one_when_cheaper() -> None:
    # 10 pages of other people's public jobs; ours are near the end
    server = FakeServer([_job_json(f"j{i:05d}") for i in range(10_000)])
    found = fetch_jobs(server, "alg-pk", ["j00003", "j09998", "j09999", "gone"])
    assert set(found) == {"j00003", "j09998", "j09999"}
    assert [r for r, _ in server.requests] == [
        "algorithms/jobs/", "job gone", "job j09998", "job j09999"]


def test_fetch_few_jobs_directly() -> None:
    server = FakeServer([_job_json("a"), _job_json("b")])
    assert set(fetch_jobs(server, "alg-pk", ["a", "zzz"])) == {"a"}
    assert [r for r, _ in server.requests] == ["job a", "job zzz"]
    assert fetch_jobs(server, "alg-pk", []) == {}


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
    server = FakeServer([
        _job_json("ja", "Succeeded", exec_duration="PT1M"),
        _job_json("jb", "Executing"),
        _job_json("jc", "Succeeded"),
        _job_json("other", "Failed"),
    ])
    outcome = refresh(server, path, server=SERVER, algorithm_slug="alg",
                      case_ids=["a", "b", "c", "d"])
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
    assert len(server.requests) == 1


def test_refresh_without_changes_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    _lockfile(path, {"a": _entry("ja", "Succeeded"), "b": _entry("jb", "Failed"),
                     "c": _entry("jc", "Queued")})
    before = path.stat().st_mtime_ns
    server = FakeServer([_job_json("ja", "Succeeded"), _job_json("jb", "Failed"),
                         _job_json("jc", "Queued")])
    outcome = refresh(server, path, server=SERVER, algorithm_slug="alg", case_ids=None)
    assert outcome.recorded and path.stat().st_mtime_ns == before
    assert outcome.report.any_problem


def test_refresh_when_the_lock_is_held_reports_but_does_not_record(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    _lockfile(path, {"a": _entry("ja", "Queued"), "b": _entry("jb", "Queued"),
                     "c": _entry("jc", "Queued")})
    server = FakeServer([_job_json("ja", "Succeeded"), _job_json("jb", "Queued"),
                         _job_json("jc", "Queued")])
    with lockmod.FileLock(lockmod.oslock_path_for(path)):
        outcome = refresh(server, path, server=SERVER, algorithm_slug="alg", case_ids=None)
    assert not outcome.recorded and "held by another gcbatch" in outcome.lock_holder
    assert outcome.report.rows[0].status == "Succeeded"
    saved = lockmod.load(path)
    assert saved is not None and saved.cases["a"].job is not None
    assert saved.cases["a"].job.status == "Queued"


def test_refresh_without_a_lockfile(tmp_path: Path) -> None:
    server = FakeServer([])
    outcome = refresh(server, tmp_path / "none.lock", server=SERVER, algorithm_slug="alg",
                      case_ids=["x"])
    assert [r.status for r in outcome.report.rows] == ["Not submitted"]
    assert server.requests == [] and not (tmp_path / "none.lock").exists()


def test_missing_job_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    _lockfile(path, {"a": _entry("ja", "Queued"), "b": _entry("jb", "Queued"),
                     "c": _entry("gone", "Queued")})
    server = FakeServer([_job_json("ja", "Succeeded"), _job_json("jb", "Succeeded")])
    outcome = refresh(server, path, server=SERVER, algorithm_slug="alg", case_ids=None)
    assert outcome.report.counts() == {"Succeeded": 2, "Missing": 1}
    assert outcome.report.any_problem
    saved = lockmod.load(path)
    assert saved is not None and saved.cases["c"].job is not None
    assert saved.cases["c"].job.status == "Queued"  # "Missing" is never written


def test_cases_to_retry() -> None:
    pending = Intent(fingerprint="sha256:g", started_at="2026-11-27T14:00:00Z")
    lock = Lockfile(server=SERVER, algorithm=ALG, cases={
        "ok": _entry("j1", "Succeeded"),
        "failed": _entry("j2", "Failed"),
        "cancelled": _entry("j3", "Cancelled"),
        "running": _entry("j4", "Executing"),
        "never": CaseEntry(),
        "in-doubt": CaseEntry(job=_entry("j5", "Failed").job, pending=pending),
    })
    assert cases_to_retry(lock) == ["cancelled", "failed"]
    assert cases_to_retry(lock, ["failed", "ok", "unknown"]) == ["failed"]
    assert cases_to_retry(None) == []


def test_result_table_and_files(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    _lockfile(path, {"a": _entry("ja", "Queued"), "b": _entry("jb", "Queued")})
    value_socket = {"slug": "score", "super_kind": "Value", "kind": "Float", "pk": 1,
                    "relative_path": "score.json"}
    server = FakeServer([
        _job_json("ja", "Succeeded", outputs=[{"interface": value_socket, "value": 0.5}]),
        _job_json("jb", "Failed", outputs=[{"interface": value_socket, "value": 9}]),
    ])
    outcome = refresh(server, path, server=SERVER, algorithm_slug="alg",
                      case_ids=["a", "b", "c"])
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
    asked: list[int] = []

    def pk() -> str:
        asked.append(1)
        return "alg-pk"

    server = FakeServer([_job_json(f"j{i}", "Queued") for i in range(3)])
    ids = ["c0", "c1", "c2"] if count else []
    refresh(server, path, server=SERVER, algorithm_slug="alg", case_ids=ids, algorithm_pk=pk)
    assert len(asked) == count


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
