"""lock merge's folding of lockfiles (pure): union, newer jobs, conflicts, intents kept."""

from __future__ import annotations

import pytest

from gcbatch.errors import LockfileError
from gcbatch.lockfile import AlgorithmRef, CaseEntry, Intent, JobRecord, Lockfile, dumps
from gcbatch.lockfile.merge import merge_lockfiles

SERVER = "https://gc.example/api/v1/"
ALG = AlgorithmRef("alg", "alg-pk", f"{SERVER}algorithms/alg-pk/")


def job(pk: str, status: str = "Succeeded", at: str = "2026-12-04T10:00:00Z",
        fingerprint: str = "sha256:f") -> JobRecord:
    return JobRecord(pk=pk, api_url=f"{SERVER}algorithms/jobs/{pk}/", status=status,
                     submitted_at=at, fingerprint=fingerprint)


def entry(current: JobRecord | None = None, *, history: tuple[JobRecord, ...] = (),
          pending: Intent | None = None) -> CaseEntry:
    return CaseEntry(fingerprint="sha256:f", job=current, history=history, pending=pending)


def lock(cases: dict[str, CaseEntry], server: str = SERVER,
         algorithm: AlgorithmRef = ALG) -> Lockfile:
    return Lockfile(server=server, algorithm=algorithm, cases=cases)


def intent(at: str = "2026-12-04T09:00:00Z") -> Intent:
    return Intent(fingerprint="sha256:f", started_at=at,
                  payload={"v": 1, "stage": "post", "attempt": at, "inputs": []})


def test_disjoint_shards_are_a_union_and_the_order_does_not_matter() -> None:
    a = lock({"p1": entry(job("j1")), "p3": entry(job("j3"))})
    b = lock({"p2": entry(job("j2"))})
    one = merge_lockfiles([("a", a), ("b", b)])
    two = merge_lockfiles([("b", b), ("a", a)])
    assert not one.conflicts and one.shared == 0
    assert {c: e.job.pk for c, e in one.lockfile.cases.items() if e.job} == {
        "p1": "j1", "p2": "j2", "p3": "j3"}
    assert dumps(one.lockfile) == dumps(two.lockfile)


def test_the_same_job_keeps_the_most_advanced_status() -> None:
    a = lock({"p1": entry(job("j1", "Executing"))})
    b = lock({"p1": entry(job("j1", "Succeeded"))})
    merged = merge_lockfiles([("a", a), ("b", b)])
    assert merged.shared == 1
    assert merged.lockfile.cases["p1"].job == job("j1", "Succeeded")


def test_a_replaced_job_is_history_and_the_newer_one_current() -> None:
    old = job("j1", "Failed")
    a = lock({"p1": entry(old)})
    b = lock({"p1": entry(job("j2", at="2026-12-05T10:00:00Z"), history=(old,))})
    for order in ([("a", a), ("b", b)], [("b", b), ("a", a)]):
        merged = merge_lockfiles(order)
        case = merged.lockfile.cases["p1"]
        assert not merged.conflicts and case.job is not None
        assert case.job.pk == "j2" and [h.pk for h in case.history] == ["j1"]


def test_one_case_two_jobs_is_a_conflict_naming_both_and_their_files() -> None:
    a = lock({"p1": entry(job("job-a")), "p2": entry(job("same"))})
    b = lock({"p1": entry(job("job-b")), "p2": entry(job("same"))})
    merged = merge_lockfiles([("alice.lock", a), ("bob.lock", b)])
    assert [c.case_id for c in merged.conflicts] == ["p1"]
    text = merged.conflicts[0].describe()
    assert "job-a (alice.lock)" in text and "job-b (bob.lock)" in text


def test_an_in_doubt_intent_is_kept_beside_a_job_the_other_side_has() -> None:
    a = lock({"p1": entry(pending=intent())})
    b = lock({"p1": entry(job("j1", at="2026-12-04T08:00:00Z"))})  # made BEFORE the intent
    case = merge_lockfiles([("a", a), ("b", b)]).lockfile.cases["p1"]
    assert case.job is not None and case.job.pk == "j1"
    assert case.pending == intent()
    assert merge_lockfiles([("a", a), ("b", b)]).lockfile.in_doubt == ("p1",)


def test_an_intent_settled_by_the_other_side_later_is_closed() -> None:
    a = lock({"p1": entry(pending=intent("2026-12-04T09:00:00Z"))})
    b = lock({"p1": entry(job("j1", at="2026-12-04T09:00:05Z"))})  # the run went on
    case = merge_lockfiles([("a", a), ("b", b)]).lockfile.cases["p1"]
    assert case.job is not None and case.pending is None


def test_two_different_intents_for_one_case_are_a_conflict() -> None:
    a = lock({"p1": entry(pending=intent("2026-12-04T09:00:00Z"))})
    b = lock({"p1": entry(pending=intent("2026-12-04T11:00:00Z"))})
    merged = merge_lockfiles([("a", a), ("b", b)])
    assert [(c.case_id, c.kind) for c in merged.conflicts] == [("p1", "intent")]


def test_other_servers_or_algorithms_are_refused() -> None:
    a = lock({"p1": entry(job("j1"))})
    with pytest.raises(LockfileError, match="different servers"):
        merge_lockfiles([("a", a), ("b", lock({}, server="https://other.example/api/v1/"))])
    with pytest.raises(LockfileError, match="different algorithms"):
        merge_lockfiles([("a", a), ("b", lock({}, algorithm=AlgorithmRef("other")))])
    # one URL spelled two ways is one server
    same = merge_lockfiles([("a", a), ("b", lock({}, server="HTTPS://gc.example:443/api/v1"))])
    assert not same.conflicts
