"""plan.make_plan as a pure function: tables of (lockfile entry x manifest case) → action."""

from __future__ import annotations

import pytest

from gcbatch.lockfile import AlgorithmRef, CaseEntry, Intent, JobRecord, Lockfile
from gcbatch.plan import ServerFacts, changed_sockets, make_plan, settled_fingerprints
from gcbatch.sources import Case, PendingGenerator, Source

ALG = AlgorithmRef("lung-nodule-detector")


def case(cid: str, **digests: str) -> Case:
    inputs = tuple(Source(s.replace("_", "-"), "value", digest=d)
                   for s, d in sorted(digests.items()))
    fp = "fp:" + ",".join(f"{s.socket}={s.digest}" for s in inputs)
    return Case(cid, inputs, fp)


def entry(c: Case | None = None, *, status: str = "Succeeded", pk: str = "job-1",
          pending: bool = False, **digests: str) -> CaseEntry:
    if c is None:
        inputs = {s.replace("_", "-"): d for s, d in digests.items()}
        fp = "fp:" + ",".join(f"{k}={v}" for k, v in sorted(inputs.items()))
    else:
        inputs, fp = c.digests(), c.fingerprint
    job = JobRecord(pk, f"https://x/{pk}/", status, "t", fp, inputs)
    intent = Intent(fp, "2026-11-27T14:00:00Z", inputs) if pending else None
    return CaseEntry(fp, inputs, job, (), intent)


def lock(**entries: CaseEntry) -> Lockfile:
    return Lockfile("https://x/api/v1/", ALG, entries)


C1 = case("c1", ct_image="a", lung_volume="1")

TABLE = [
    # (lockfile entry for c1, manifest case c1, expected kind, expected reason/changed)
    (None, C1, "submit", ()),
    (entry(C1), C1, "unchanged", ()),
    (entry(ct_image="OLD", lung_volume="1"), C1, "resubmit", ("ct-image",)),
    (entry(ct_image="a"), C1, "resubmit", ("lung-volume",)),  # socket added
    (entry(ct_image="a", lung_volume="1", clinical_info="x"), C1, "resubmit",
     ("clinical-info",)),  # socket removed
    (entry(ct_image="b", lung_volume="2"), C1, "resubmit", ("ct-image", "lung-volume")),
    (entry(C1, pending=True), C1, "in_doubt", ()),
    (entry(C1, status="Failed"), C1, "unchanged", ()),  # no retry unless asked
    (CaseEntry(pending=Intent("fp:x", "t")), C1, "in_doubt", ()),  # first submit in doubt
    (CaseEntry(), C1, "submit", ()),  # an entry without job or intent (rejected earlier)
]


@pytest.mark.parametrize(("old", "new", "kind", "changed"), TABLE)
def test_offline_table(old: CaseEntry | None, new: Case, kind: str,
                       changed: tuple[str, ...]) -> None:
    plan = make_plan([new], lock(c1=old) if old else lock())
    assert [(a.case_id, a.kind, a.changed) for a in plan.actions] == [("c1", kind, changed)]


def test_reasons_and_symbols() -> None:
    plan = make_plan(
        [C1, case("c2", ct_image="x"), case("c3", ct_image="z")],
        lock(c1=entry(ct_image="OLD", lung_volume="1"), c2=entry(case("c2", ct_image="x"),
             pk="3f2c1a2b-aaaa-bbbb", status="Succeeded"),
             c3=entry(case("c3", ct_image="z"), pending=True), gone=entry(ct_image="q")),
    )
    rows = [(a.symbol, a.case_id, a.reason) for a in plan.actions]
    assert rows == [
        ("~", "c1", "inputs changed: ct-image"),
        ("=", "c2", "job 3f2c1a2b…, Succeeded"),
        ("?", "c3", "a submission started 2026-11-27T14:00:00Z has no known outcome; apply "
                    "reconciles it with the server first"),
        ("-", "gone", "in the lockfile, no longer in the manifest"),
    ]
    assert plan.has_changes
    assert plan.count()["resubmit"] == 1 and plan.count()["orphan"] == 1


def test_nothing_to_do_and_orphans_are_quiet() -> None:
    plan = make_plan([C1], lock(c1=entry(C1), old=entry(ct_image="q")))
    assert [a.kind for a in plan.actions] == ["unchanged", "orphan"]
    assert not plan.has_changes
    assert not make_plan([], None).has_changes


def test_needs_server_is_last_and_a_change_and_softens_orphans() -> None:
    gen = PendingGenerator(2, "lung-archive", "item-{item.pk}", 12)
    plan = make_plan([C1], lock(c1=entry(C1), **{"item-u1": entry(ct_image="q")}),
                     needs_server=[gen])
    assert [a.kind for a in plan.actions] == ["unchanged", "orphan", "needs_server"]
    assert "archive generator may still make it" in plan.actions[1].reason
    assert plan.actions[2].case_id == "cases[2]" and "'lung-archive'" in plan.actions[2].reason
    assert plan.has_changes


def test_sorted_by_case_id_whatever_the_input_order() -> None:
    cases = [case(c, x="1") for c in ("b", "a", "c")]
    plan = make_plan(cases, lock(aa=entry(x="1")))
    assert [a.case_id for a in plan.actions] == ["a", "aa", "b", "c"]


SERVER_TABLE = [
    # (lockfile entry, server view, retry_failed, expected kind)
    (entry(C1, status="Queued"), ServerFacts(job_status={"job-1": "Failed"}), True,
     "retry_failed"),
    (entry(C1, status="Queued"), ServerFacts(job_status={"job-1": "Cancelled"}), False,
     "unchanged"),
    (entry(C1, status="Failed"), ServerFacts(job_status={"job-1": "Succeeded"}), True,
     "unchanged"),  # the server's word beats the lockfile's last seen status
    (None, ServerFacts(interfaces=(frozenset({"ct-image"}),)), False, "blocked"),
    (None, ServerFacts(interfaces=(frozenset({"ct-image", "lung-volume"}),)), False, "submit"),
    (entry(ct_image="OLD", lung_volume="1"),
     ServerFacts(blocked={"c1": "lung-volume: JSON does not fulfill schema"}), False, "blocked"),
    # a job that exists is not blocked by what the server says about its inputs now:
    # apply sends nothing for it
    (entry(C1), ServerFacts(blocked={"c1": "lung-volume: JSON does not fulfill schema"}),
     False, "unchanged"),
    (entry(C1), ServerFacts(interfaces=(frozenset({"ct-image"}),)), False, "unchanged"),
    (entry(C1, pending=True), ServerFacts(), False, "in_doubt"),
]


@pytest.mark.parametrize(("old", "view", "retry", "kind"), SERVER_TABLE)
def test_with_server_view(old: CaseEntry | None, view: ServerFacts, retry: bool,
                          kind: str) -> None:
    plan = make_plan([C1], lock(c1=old) if old else lock(), view, retry_failed=retry)
    assert plan.actions[0].kind == kind


def test_blocked_reason_names_interfaces_and_status_comes_from_server() -> None:
    view = ServerFacts(interfaces=(frozenset({"ct-image"}), frozenset({"age", "lung-volume"})))
    (action,) = make_plan([C1], None, view).actions
    assert action.reason == ("inputs {ct-image, lung-volume} match none of the algorithm's "
                             "interfaces: {ct-image} | {age, lung-volume}")
    (action,) = make_plan([C1], lock(c1=entry(C1, status="Queued")),
                          ServerFacts(job_status={"job-1": "Executing"})).actions
    assert action.status == "Executing" and action.reason == "job job-1, Executing"


def test_changed_sockets() -> None:
    assert changed_sockets({"a": "1", "b": "2"}, {"b": "3", "c": "4"}) == ("a", "b", "c")
    assert changed_sockets({"a": "1"}, {"a": "1"}) == ()


def test_json_shape() -> None:
    data = make_plan([C1], None, algorithm="lung-nodule-detector").as_json()
    assert data["algorithm"] == "lung-nodule-detector" and data["has_changes"] is True
    assert data["actions"] == [{"case": "c1", "action": "submit", "symbol": "+",
                                "reason": "new case", "changed": [], "job": None,
                                "status": None, "fingerprint": C1.fingerprint}]
    assert data["summary"]["submit"] == 1


@pytest.mark.parametrize("retry", [False, True])
def test_settled_cases_are_the_ones_the_full_plan_calls_unchanged(retry: bool) -> None:
    """settled_fingerprints lists exactly the entries make_plan would keep as they are, and
    a settled id becomes the same `unchanged` action as its full Case would."""
    entries = {
        "ok": entry(C1),
        "failed": entry(C1, status="Failed", pk="job-2"),
        "doubt": entry(C1, pending=True),
        "rejected": CaseEntry(),
        "first-doubt": CaseEntry(pending=Intent("fp:x", "t")),
    }
    lockfile = Lockfile("https://x/api/v1/", ALG, entries)
    settled = settled_fingerprints(lockfile, retry_failed=retry)
    full = make_plan([Case(cid, C1.inputs, C1.fingerprint) for cid in entries], lockfile,
                     retry_failed=retry)
    expected = {a.case_id for a in full.actions if a.kind == "unchanged"}
    assert set(settled) == expected == ({"ok"} if retry else {"ok", "failed"})
    assert all(fp == C1.fingerprint for fp in settled.values())
    quick = make_plan([], lockfile, settled=sorted(settled), retry_failed=retry)
    assert [a for a in quick.actions if a.kind == "unchanged"] == \
        [a for a in full.actions if a.kind == "unchanged"]
    # the others are orphans there (not in the cases): what apply never gets, because
    # expansion builds every case it does not settle
    assert settled_fingerprints(None) == {}
