"""Lockfile: deterministic bytes, atomic save, refusal of foreign lockfiles, the journal
(append, replay, torn tails, in-doubt intents, checkpoints), the OS lock, and format 2
(what it leaves out, its fast reader and writer) beside format 1."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcbatch import lockfile as lf
from gcbatch.errors import LockfileError, LockHeldError

SERVER = "https://grand-challenge.org/api/v1/"
ALG = lf.AlgorithmRef("lung-nodule-detector", "a1", "https://x/api/v1/algorithms/a1/")


def job(pk: str, fp: str = "sha256:1", status: str = "Queued") -> lf.JobRecord:
    return lf.JobRecord(pk=pk, api_url=f"https://x/api/v1/algorithms/jobs/{pk}/",
                        status=status, submitted_at="2026-11-27T14:00:00Z", fingerprint=fp,
                        inputs={"ct-image": "sha256:aa"})


def test_paths_beside_the_manifest(tmp_path: Path) -> None:
    m = tmp_path / "study.yaml"
    assert lf.lockfile_path_for(m) == tmp_path / "study.lock"
    assert lf.lockfile_path_for(m, sandbox=True) == tmp_path / "study.sandbox.lock"
    assert lf.journal_path_for(tmp_path / "study.lock").name == "study.lock.journal"
    assert lf.oslock_path_for(tmp_path / "study.lock").name == "study.lock.lck"


def test_roundtrip_and_deterministic_bytes(tmp_path: Path) -> None:
    entries = {"b": lf.CaseEntry("sha256:1", {"x": "1"}, job("j1")),
               "a": lf.CaseEntry("sha256:2", {}, None, (job("j0"),),
                                 lf.Intent("sha256:2", "t", {"x": "2"}, ("a.mha",), {"k": 1}))}
    one = lf.Lockfile(SERVER, ALG, entries)
    two = lf.Lockfile(SERVER, ALG, dict(reversed(list(entries.items()))))
    assert one.dumps() == two.dumps()
    path = tmp_path / "s.lock"
    lf.save(path, one)
    text = path.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"')
    assert json.loads(text)["format_version"] == 2
    loaded = lf.load(path)
    assert loaded is not None and loaded.dumps() == text
    assert loaded.cases["a"].pending is not None
    assert loaded.cases["a"].pending.uploads == ("a.mha",)
    assert loaded.in_doubt == ("a",)
    assert not list(tmp_path.glob(".s.lock.*"))  # no temp file left behind


def test_missing_lockfile_is_none(tmp_path: Path) -> None:
    assert lf.load(tmp_path / "nope.lock") is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"format_version": 3, "server": "x", "algorithm": {"slug": "a"}}',
         "format_version is 3, but this gcbatch reads format_version 1 or 2"),
        ('{"server": "x", "algorithm": {"slug": "a"}}', "format_version is None"),
        ('{"format_version": true, "server": "x", "algorithm": {"slug": "a"}}',
         "format_version is True"),  # (True == 1 in Python: not a version)
        ('{"format_version": 2.0, "server": "x", "algorithm": {"slug": "a"}}',
         "format_version is 2.0"),
        ("{not json", "not valid JSON"),
        ("[]", "not a gcbatch lockfile"),
        ('{"format_version": 1, "server": "x", "algorithm": {"slug": "a"}, "cases": []}',
         "malformed cases"),
        ('{"format_version": 2, "server": "x", "algorithm": {"slug": "a"}, "cases": []}',
         "malformed cases"),
    ],
)
def test_unusable_lockfiles_are_refused_naming_the_file(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "s.lock"
    path.write_text(text)
    with pytest.raises(LockfileError) as info:
        lf.load(path)
    assert str(path) in str(info.value) and needle in str(info.value)
    assert info.value.exit_code == 2


def test_other_server_or_algorithm_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.lock"
    lf.save(path, lf.Lockfile(SERVER, ALG))
    assert lf.load(path, server=SERVER.rstrip("/")) is not None  # trailing slash ignored
    with pytest.raises(LockfileError, match=r"s\.lock belongs to server https://grand"):
        lf.load(path, server="https://other.example/api/v1/")
    with pytest.raises(LockfileError, match="made for algorithm 'lung-nodule-detector'"):
        lf.load(path, algorithm="risk-calculator")


def events_for_resubmit() -> list[dict[str, object]]:
    return [
        {"event": "begin", "server": SERVER, "algorithm": ALG.as_json()},
        {"event": "intent", "case": "c1", "fingerprint": "sha256:1", "inputs": {"x": "1"},
         "at": "t1"},
        {"event": "submitted", "case": "c1", "job": job("j1", "sha256:1").as_json()},
        {"event": "status", "case": "c1", "job": "j1", "status": "Succeeded"},
        {"event": "intent", "case": "c1", "fingerprint": "sha256:2", "inputs": {"x": "2"},
         "at": "t2"},
        {"event": "submitted", "case": "c1", "job": {**job("j2", "sha256:2").as_json(),
                                                     "inputs": {}}},
        {"event": "intent", "case": "c2", "fingerprint": "sha256:9", "at": "t3"},
        {"event": "rejected", "case": "c2", "reason": "bad input"},
        {"event": "intent", "case": "c3", "fingerprint": "sha256:7", "uploads": ["u.mha"],
         "at": "t4"},
    ]


def test_replay_folds_events() -> None:
    state = lf.replay(None, events_for_resubmit())  # type: ignore[arg-type]
    assert state is not None
    c1 = state.cases["c1"]
    assert c1.job is not None and c1.job.pk == "j2" and c1.fingerprint == "sha256:2"
    assert c1.inputs == {"x": "2"}  # taken from the intent when the job event has none
    assert [h.pk for h in c1.history] == ["j1"] and c1.history[0].status == "Succeeded"
    assert c1.pending is None
    assert state.cases["c2"].pending is None and state.cases["c2"].job is None
    assert state.in_doubt == ("c3",)
    assert state.cases["c3"].pending is not None
    assert state.cases["c3"].pending.uploads == ("u.mha",)


def test_replay_is_idempotent_over_a_saved_state() -> None:
    """A crash between checkpoint save and journal truncation replays folded events."""
    events = events_for_resubmit()
    once = lf.replay(None, events)  # type: ignore[arg-type]
    twice = lf.replay(once, events)  # type: ignore[arg-type]
    assert once is not None and twice is not None and once.dumps() == twice.dumps()


def test_journal_without_begin_and_unknown_event_refused() -> None:
    with pytest.raises(LockfileError, match="begin"):
        lf.replay(None, [{"event": "status", "case": "c", "status": "x"}])
    with pytest.raises(LockfileError, match="unknown journal event"):
        lf.replay(lf.Lockfile(SERVER, ALG), [{"event": "bogus", "case": "c"}])
    with pytest.raises(LockfileError, match="belongs to server"):
        lf.replay(lf.Lockfile(SERVER, ALG),
                  [{"event": "begin", "server": "https://o/", "algorithm": ALG.as_json()}])


def test_torn_tail_ignored_and_cut_middle_corruption_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.lock.journal"
    good = json.dumps({"event": "begin", "server": SERVER, "algorithm": ALG.as_json()})
    path.write_text(good + "\n" + '{"event": "inte')
    events, size = lf.read_journal(path)
    assert len(events) == 1 and size == len(good) + 1
    j = lf.Journal(path)
    j.append({"event": "status", "case": "c", "status": "x"})
    j.close()
    assert [e["event"] for e in lf.read_journal(path)[0]] == ["begin", "status"]
    path.write_text("garbage\n" + good + "\n")
    with pytest.raises(LockfileError, match=r"journal:1: corrupt"):
        lf.read_journal(path)


def test_store_journals_before_checkpoint_and_recovers_after_crash(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    store = lf.LockfileStore.open(path, server=SERVER, algorithm=ALG, checkpoint_every=1000)
    store.intent("c1", "sha256:1", inputs={"x": "1"}, uploads=["c1.mha"], payload=[1])
    store.submitted("c1", job("j1"))
    store.intent("c2", "sha256:2", inputs={"x": "2"})
    # simulate a crash: nothing checkpointed, the OS lock dies with the process
    store._oslock.release()
    on_disk = lf.load(path, replay_journal=False)
    assert on_disk is not None and on_disk.cases == {}
    folded = lf.load(path, server=SERVER)
    assert folded is not None
    assert folded.cases["c1"].job is not None and folded.in_doubt == ("c2",)
    again = lf.LockfileStore.open(path, server=SERVER, algorithm=ALG)
    assert again.lockfile.in_doubt == ("c2",)
    again.adopted("c2", job("j2", "sha256:2"))
    again.status("c1", "j1", "Succeeded")
    again.close()
    final = lf.load(path, replay_journal=False)
    assert final is not None and final.in_doubt == ()
    assert final.cases["c1"].job is not None and final.cases["c1"].job.status == "Succeeded"
    events, _ = lf.read_journal(lf.journal_path_for(path))
    assert [e["event"] for e in events] == ["begin"]  # truncated at the checkpoint


def test_store_checkpoints_periodically(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    with lf.LockfileStore.open(path, server=SERVER, algorithm=ALG, checkpoint_every=3) as st:
        for i in range(3):
            st.intent(f"c{i}", "sha256:1", inputs={})
        saved = lf.load(path, replay_journal=False)
        assert saved is not None and len(saved.cases) == 3


def _try_lock(path: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        lf.FileLock(Path(path)).acquire()
        queue.put("acquired")
    except LockHeldError as exc:
        queue.put(str(exc))


def test_os_lock_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    with lf.LockfileStore.open(path, server=SERVER, algorithm=ALG):
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        proc = ctx.Process(target=_try_lock, args=(str(lf.oslock_path_for(path)), queue))
        proc.start()
        message = queue.get(timeout=20)
        proc.join(timeout=20)
        assert f"pid {os.getpid()}" in message and "held by another gcbatch" in message
        with pytest.raises(LockHeldError):  # a second open in the same process, too
            lf.LockfileStore.open(path, server=SERVER, algorithm=ALG)
    lf.FileLock(lf.oslock_path_for(path)).acquire()  # released on close


def test_statuses_in_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    with lf.LockfileStore.open(path, server=SERVER, algorithm=ALG) as st:
        st.submitted("c1", job("j1"))
        st.submitted("c2", job("j2"))
        st.statuses([("c1", "j1", "Succeeded"), ("c2", "j2", "Failed")])
        st.statuses([])  # nothing to write is fine
        events, _ = lf.read_journal(lf.journal_path_for(path))
        assert [e["event"] for e in events] == ["begin", "submitted", "submitted", "status",
                                                "status"]
    final = lf.load(path)
    assert final is not None
    assert {c: e.job.status for c, e in final.cases.items() if e.job} == {
        "c1": "Succeeded", "c2": "Failed"}


def test_a_bad_event_in_a_batch_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    with lf.LockfileStore.open(path, server=SERVER, algorithm=ALG) as st:
        with pytest.raises(LockfileError):
            st.record_many([{"event": "status", "case": "c", "status": "x"},
                            {"event": "nonsense", "case": "c"}])
        assert st.lockfile.cases == {}
        events, _ = lf.read_journal(lf.journal_path_for(path))
        assert [e["event"] for e in events] == ["begin"]


def test_replay_matches_folding_event_by_event() -> None:
    """replay folds in one dict: the same state and bytes as replaying event by event."""
    events = events_for_resubmit()
    by_one: lf.Lockfile | None = None
    for event in events:
        by_one = lf.replay(by_one, [event], source="<test>")
    folded = lf.replay(None, events)  # type: ignore[arg-type]
    assert by_one is not None and folded is not None
    assert folded == by_one and folded.dumps() == by_one.dumps()
    base = lf.Lockfile(SERVER, ALG, {"keep": lf.CaseEntry("sha256:9", {}, job("j9"))})
    assert lf.replay(base, [events[0]]) is base  # a begin alone changes nothing
    after = lf.replay(base, events)  # type: ignore[arg-type]
    assert after is not None and set(after.cases) == {"keep", "c1", "c2", "c3"}
    assert set(base.cases) == {"keep"}  # the input is not mutated


def test_fold_case_is_per_case_and_pure() -> None:
    before = lf.CaseEntry("sha256:1", {"x": "1"}, job("j1"))
    after = lf.fold_case(before, {"event": "status", "case": "c", "job": "j1",
                                  "status": "Succeeded"}, source="<test>")
    assert after.job is not None and after.job.status == "Succeeded"
    assert before.job is not None and before.job.status == "Queued"
    new = lf.fold_case(None, {"event": "intent", "case": "c", "fingerprint": "sha256:2",
                              "at": "t"}, source="<test>")
    assert new.pending is not None and new.pending.started_at == "t"
    with pytest.raises(LockfileError, match="unknown journal event"):
        lf.fold_case(None, {"event": "bogus", "case": "c"}, source="<test>")


def test_store_entry_and_snapshot_cached_until_the_next_event(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    with lf.LockfileStore.open(path, server=SERVER, algorithm=ALG) as st:
        assert st.entry("c1") is None
        first = st.lockfile
        assert st.lockfile is first  # no event: the same snapshot
        st.intent("c1", "sha256:1", inputs={"x": "1"})
        entry = st.entry("c1")
        assert entry is not None and entry.pending is not None
        snap = st.lockfile
        assert snap is not first and st.lockfile is snap and snap.in_doubt == ("c1",)
        assert first.cases == {}  # an earlier snapshot never changes
        st.submitted("c1", job("j1"))
        assert snap.in_doubt == ("c1",) and st.lockfile.in_doubt == ()
        assert st.entry("c1") == st.lockfile.cases["c1"]
        st.forget("c1")
        assert st.entry("c1") is None and st.lockfile.cases == {}


def test_store_bytes_equal_a_pure_fold(tmp_path: Path) -> None:
    """What the store saves is exactly what replaying its journal would give."""
    path = tmp_path / "study.lock"
    journal = lf.journal_path_for(path)
    with lf.LockfileStore.open(path, server=SERVER, algorithm=ALG,
                               checkpoint_every=10**9) as st:
        for event in events_for_resubmit()[1:]:
            st.record(event)
        events, _ = lf.read_journal(journal)
        expected = lf.replay(lf.Lockfile(SERVER, ALG), events)
        assert expected is not None and st.lockfile.dumps() == expected.dumps()
    assert path.read_text() == expected.dumps()


def test_checkpoint_interval_scales_with_the_lockfile(tmp_path: Path) -> None:
    """A checkpoint rewrites every case: with n cases, at most one per n/4 events."""
    path = tmp_path / "study.lock"
    lf.save(path, lf.Lockfile(SERVER, ALG, {f"c{i:03d}": lf.CaseEntry("sha256:1", {}, job(f"j{i}"))
                                            for i in range(200)}))
    journal = lf.journal_path_for(path)
    with lf.LockfileStore.open(path, server=SERVER, algorithm=ALG, checkpoint_every=3) as st:
        for i in range(49):  # 200 cases: the interval is max(3, 50) events
            st.status(f"c{i:03d}", f"j{i}", "Started")
        assert len(lf.read_journal(journal)[0]) == 1 + 49  # begin + events: no checkpoint
        st.status("c049", "j49", "Started")
        assert len(lf.read_journal(journal)[0]) == 1  # the 50th event checkpointed
        saved = lf.load(path, replay_journal=False)
        assert saved is not None and saved.cases["c049"].job is not None
        assert saved.cases["c049"].job.status == "Started"


# --------------------------------------------------------------------------- format 2


def varied() -> lf.Lockfile:
    """A lockfile with one of everything a case entry can hold."""
    usual = job("j-usual", "sha256:u")
    ct = {"ct-image": "sha256:aa"}
    payload = {"inputs": [{"socket": "ct-image", "n": 1.5}, None, True]}
    odd_inputs = {"sköl": "wert\t\u2603", "\u00e9": "\\\\"}
    return lf.Lockfile(SERVER, ALG, {
        "usual": lf.CaseEntry("sha256:u", dict(usual.inputs), usual),
        "no-inputs": lf.CaseEntry("sha256:e", {}, replace(job("j-e", "sha256:e"), inputs={})),
        "never-submitted": lf.CaseEntry(),
        "other-fingerprint": lf.CaseEntry("sha256:new", ct, job("j-of", "sha256:old")),
        "other-inputs": lf.CaseEntry("sha256:1", {"ct-image": "sha256:bb"}, job("j-oi")),
        "job-without-inputs": lf.CaseEntry("sha256:1", ct, replace(job("j-wi"), inputs={})),
        "resubmitted": lf.CaseEntry("sha256:1", ct, job("j2", status="Started"),
                                    (job("j1", "sha256:0", "Failed"),)),
        "in-doubt": lf.CaseEntry("sha256:1", ct, job("j3"), (), lf.Intent(
            "sha256:2", "2026-11-27T15:00:00Z", {"ct-image": "sha256:cc"}, ("p.mha",), payload)),
        "päť-ü/ñ \"quoted\"\n": lf.CaseEntry("sha256:ü", odd_inputs, lf.JobRecord(
            "pk-ë", "https://x/ë/", "Queued", "t", "sha256:ü", dict(odd_inputs))),
    })


def v1_text(lock: lf.Lockfile) -> str:
    """What gcbatch wrote before format 2: every field of every entry, jobs in full."""
    return json.dumps({
        "format_version": 1, "server": lock.server, "algorithm": lock.algorithm.as_json(),
        "cases": {cid: {"fingerprint": e.fingerprint, "inputs": dict(e.inputs),
                        "job": e.job.as_json() if e.job else None,
                        "history": [h.as_json() for h in e.history],
                        "pending": e.pending.as_json() if e.pending else None}
                  for cid, e in lock.cases.items()},
    }, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_format_1_reads_to_the_same_lockfile_and_is_written_as_2() -> None:
    lock = varied()
    old = lf.parse(v1_text(lock))
    assert old == lock and old.dumps() == lock.dumps()
    assert json.loads(old.dumps())["format_version"] == 2
    # format 1 has no omissions: a job without "inputs" got none, one without a
    # fingerprint is malformed (in format 2 both would be the entry's)
    data = json.loads(v1_text(lock))
    del data["cases"]["usual"]["job"]["inputs"]
    assert lf.parse(json.dumps(data)).cases["usual"].job.inputs == {}  # type: ignore[union-attr]
    del data["cases"]["usual"]["job"]["fingerprint"]
    with pytest.raises(LockfileError, match="job record field 'fingerprint'"):
        lf.parse(json.dumps(data))


def test_format_2_round_trip() -> None:
    lock = varied()
    text = lock.dumps()
    again = lf.parse(text)
    assert again == lock and again.dumps() == text
    assert list(again.cases) == sorted(lock.cases)  # the file's order
    for cid, entry in again.cases.items():
        assert entry.job is None or hash(entry.job) == hash(lock.cases[cid].job)
    usual = again.cases["usual"]
    assert usual.job is not None and usual.job.inputs is usual.inputs  # shared, read-only
    differs = again.cases["other-fingerprint"]
    assert differs.job is not None and differs.job.fingerprint == "sha256:old"
    assert differs.fingerprint == "sha256:new"


def test_omissions_exactly_when_equal_or_default() -> None:
    cases = json.loads(varied().dumps())["cases"]
    jobs = {cid: set(e["job"]) for cid, e in cases.items() if e["job"] is not None}
    short = {"api_url", "pk", "status", "submitted_at"}
    assert jobs["usual"] == jobs["no-inputs"] == jobs["resubmitted"] == jobs["in-doubt"] == short
    assert jobs["päť-ü/ñ \"quoted\"\n"] == short
    assert jobs["other-fingerprint"] == short | {"fingerprint"}
    assert jobs["other-inputs"] == jobs["job-without-inputs"] == short | {"inputs"}
    assert cases["job-without-inputs"]["job"]["inputs"] == {}
    assert cases["never-submitted"] == {"fingerprint": "", "inputs": {}, "job": None}
    assert {cid for cid, e in cases.items() if "history" in e} == {"resubmitted"}
    assert {cid for cid, e in cases.items() if "pending" in e} == {"in-doubt"}
    assert set(cases["resubmitted"]["history"][0]) == short | {"fingerprint", "inputs"}


def test_dumps_is_the_generic_indented_json() -> None:
    """The per-case writer gives exactly ``indented_json(as_json())``, odd values too."""
    lock = varied()
    assert lock.dumps() == lf.indented_json(lock.as_json()) + "\n"
    odd_input = lf.CaseEntry("sha256:1", {"n": 1}, None)  # type: ignore[dict-item]
    odd_job = lf.JobRecord("p", "u", None, "t", "sha256:1", {})  # type: ignore[arg-type]
    odd = lock.with_case("odd-input", odd_input).with_case(
        "odd-status", lf.CaseEntry("sha256:1", {}, odd_job))
    assert odd.dumps() == lf.indented_json(odd.as_json()) + "\n"
    assert '"n": 1\n' in odd.dumps() and '"status": null' in odd.dumps()
    empty = lf.Lockfile("https://ü.example/", lf.AlgorithmRef("a"))
    assert empty.dumps() == lf.indented_json(empty.as_json()) + "\n"
    int_ids = lf.Lockfile(SERVER, ALG, {1: lf.CaseEntry()})  # type: ignore[dict-item]
    assert int_ids.dumps() == lf.indented_json(int_ids.as_json()) + "\n"


def test_journal_events_keep_full_job_records(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    with lf.LockfileStore.open(path, server=SERVER, algorithm=ALG) as st:
        st.submitted("c1", job("j1"))
        events, _ = lf.read_journal(lf.journal_path_for(path))
        assert events[-1]["job"] == job("j1").as_json()
    entry = json.loads(path.read_text())["cases"]["c1"]
    assert "fingerprint" not in entry["job"] and "inputs" not in entry["job"]


def _v2_with(case: object) -> str:
    return json.dumps({"format_version": 2, "server": "x", "algorithm": {"slug": "a"},
                       "cases": {"ok": {"fingerprint": "f", "inputs": {}, "job": None},
                                 "c": case}})


_JOB = {"api_url": "u", "pk": "p", "status": "Queued", "submitted_at": "t"}


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ([], "malformed case entry"),
        ("entry", "malformed case entry"),
        ({"fingerprint": "f", "inputs": ["x"], "job": _JOB}, "malformed case entry fields"),
        ({"fingerprint": "f", "inputs": {}, "job": _JOB, "history": {"x": 1}},
         "malformed case entry fields"),
        ({"fingerprint": "f", "inputs": {}, "job": ["a", "b", "c", "d"]},
         "malformed job record"),
        ({"fingerprint": "f", "inputs": {}, "job": "abcd"}, "malformed job record"),
        ({"fingerprint": "f", "inputs": {}, "job": {**_JOB, "pk": None}},
         "malformed job record field 'pk'"),
        ({"fingerprint": "f", "inputs": {}, "job": {"api_url": "u", "status": "s", "x": 1,
                                                    "submitted_at": "t"}},
         "malformed job record field 'pk'"),
        ({"fingerprint": "f", "inputs": {}, "job": {**_JOB, "fingerprint": None}},
         "malformed job record field 'fingerprint'"),
        ({"fingerprint": "f", "inputs": {}, "job": {**_JOB, "inputs": ["x"]}},
         "malformed job record inputs"),
        ({"fingerprint": "f", "inputs": {}, "job": _JOB, "history": [_JOB]},
         "malformed job record field 'fingerprint'"),  # history records are in full
        ({"fingerprint": "f", "inputs": {}, "history": [_JOB]},
         "malformed job record field 'fingerprint'"),
        ({"fingerprint": "f", "inputs": {}, "job": _JOB, "pending": {"started_at": "t"}},
         "malformed intent"),
    ],
)
def test_malformed_format_2_entries_are_refused(tmp_path: Path, case: object, needle: str) -> None:
    path = tmp_path / "s.lock"
    path.write_text(_v2_with(case))
    with pytest.raises(LockfileError) as info:
        lf.load(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_format_2_lenient_values_as_before() -> None:
    """What format 1 turned into strings, format 2 does too (usual shape or not)."""
    text = _v2_with({"fingerprint": 7, "inputs": {"x": 1}, "job": {**_JOB, "status": None}})
    entry = lf.parse(text).cases["c"]
    assert entry.fingerprint == "7" and entry.inputs == {"x": "1"}
    assert entry.job is not None and entry.job.status == "" and entry.job.fingerprint == "7"
    assert entry.job.inputs == {"x": "1"}
    assert lf.parse(_v2_with({"fingerprint": "f", "inputs": {}, "job": {}})).cases["c"].job is None


_TEXT = st.text(max_size=6)
_INPUTS = st.dictionaries(_TEXT, _TEXT, max_size=3)


@st.composite
def _entries(draw: st.DrawFn) -> lf.CaseEntry:
    fingerprint, inputs = draw(_TEXT), draw(_INPUTS)
    job = None
    if draw(st.booleans()):
        job = lf.JobRecord(draw(_TEXT), draw(_TEXT), draw(_TEXT), draw(_TEXT),
                           draw(st.sampled_from([fingerprint, "sha256:other"])),
                           draw(st.sampled_from([inputs, dict(inputs), {}, {"x": "y"}])))
    history = tuple(lf.JobRecord(pk, "u", "Failed", "t", draw(_TEXT), draw(_INPUTS))
                    for pk in draw(st.lists(_TEXT, max_size=2)))
    pending = None
    if draw(st.booleans()):
        pending = lf.Intent(draw(_TEXT), "t", draw(_INPUTS), ("a.mha",),
                            draw(st.one_of(st.none(), st.lists(st.integers(), max_size=2))))
    return lf.CaseEntry(fingerprint, inputs, job, history, pending)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_TEXT, _entries(), max_size=4))
def test_dumps_and_parse_agree_with_the_generic_form(cases: dict[str, lf.CaseEntry]) -> None:
    lock = lf.Lockfile(SERVER, ALG, cases)
    text = lock.dumps()
    assert text == lf.indented_json(lock.as_json()) + "\n"
    assert lf.parse(text) == lock and lf.parse(v1_text(lock)) == lock


def test_event_kinds_are_the_journal_words() -> None:
    """The vocabulary is a file format: old journals must replay, new lines read as before."""
    assert {k.value for k in lf.EventKind} == {
        "begin", "intent", "submitted", "adopted", "rejected", "status"}
    assert all(str(k) == f"{k}" == k.value and k == k.value for k in lf.EventKind)
    assert json.dumps({"event": lf.EventKind.STATUS}) == '{"event": "status"}'


def test_store_journal_lines_are_exact_bytes(tmp_path: Path) -> None:
    """What the store appends (events holding EventKind members) is the plain JSON line."""
    path = tmp_path / "study.lock"
    with lf.LockfileStore.open(path, server=SERVER, algorithm=ALG) as st:
        st.intent("c1", "sha256:1", inputs={"x": "ü"}, uploads=["a.mha"])
        st.rejected("c1", "no credits")
        raw = lf.journal_path_for(path).read_bytes()
    masked = re.sub(rb'"at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"', b'"at":"T"', raw)
    assert masked == (
        b'{"algorithm":{"api_url":"https://x/api/v1/algorithms/a1/","pk":"a1",'
        b'"slug":"lung-nodule-detector"},"at":"T","event":"begin",'
        b'"server":"https://grand-challenge.org/api/v1/"}\n'
        b'{"at":"T","case":"c1","event":"intent","fingerprint":"sha256:1",'
        b'"inputs":{"x":"\xc3\xbc"},"payload":null,"uploads":["a.mha"]}\n'
        b'{"at":"T","case":"c1","event":"rejected","reason":"no credits"}\n'
    )
