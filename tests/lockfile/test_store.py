"""LockfileStore: journal first, crash recovery, checkpoints, batches, snapshots, and the
exact lines it appends (gcbatch.lockfile.store)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gcbatch import lockfile as lf
from gcbatch.errors import LockfileError

from .samples import ALG, SERVER, events_for_resubmit, job


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
        assert expected is not None and lf.dumps(st.lockfile) == lf.dumps(expected)
    assert path.read_text() == lf.dumps(expected)


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


def test_journal_events_keep_full_job_records(tmp_path: Path) -> None:
    path = tmp_path / "study.lock"
    with lf.LockfileStore.open(path, server=SERVER, algorithm=ALG) as st:
        st.submitted("c1", job("j1"))
        events, _ = lf.read_journal(lf.journal_path_for(path))
        assert events[-1]["job"] == job("j1").as_json()
    entry = json.loads(path.read_text())["cases"]["c1"]
    assert "fingerprint" not in entry["job"] and "inputs" not in entry["job"]


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
