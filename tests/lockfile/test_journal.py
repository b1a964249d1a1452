"""The journal: its words, torn tails and corruption, folding and replay
(gcbatch.lockfile.journal)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcbatch import lockfile as lf
from gcbatch.errors import LockfileError

from .samples import ALG, SERVER, events_for_resubmit, job


def test_event_kinds_are_the_journal_words() -> None:
    """The vocabulary is a file format: old journals must replay, new lines read as before."""
    assert {k.value for k in lf.EventKind} == {
        "begin", "intent", "submitted", "adopted", "rejected", "status"}
    assert all(str(k) == f"{k}" == k.value and k == k.value for k in lf.EventKind)
    assert json.dumps({"event": lf.EventKind.STATUS}) == '{"event": "status"}'


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


def test_an_event_whose_write_fails_is_never_written_later(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk: the write of an intent fails half-way (its case fails, nothing is
    sent). Nothing of it may stay, to land with the next event once space is free (an
    intent nobody acted on would look in doubt to the next run)."""
    import errno
    import os

    from gcbatch.lockfile import journal as journal_module

    path = tmp_path / "s.lock.journal"
    j = lf.Journal(path)
    j.append({"event": "begin", "server": SERVER, "algorithm": ALG.as_json()})
    real_write = os.write
    full = {"on": True}

    def write(fd: int, data: bytes | memoryview) -> int:
        if full["on"]:
            real_write(fd, bytes(data[:10]))  # some bytes got in, then the disk was full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(journal_module.os, "write", write)
    with pytest.raises(OSError):
        j.append({"event": "intent", "case": "lost", "fingerprint": "f", "inputs": {}})
    full["on"] = False
    j.append({"event": "status", "case": "c", "status": "x"})
    j.close()
    events = lf.read_journal(path)[0]
    assert [e["event"] for e in events] == ["begin", "status"]


def test_replay_folds_events() -> None:
    state = lf.replay(None, events_for_resubmit())
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
    once = lf.replay(None, events)
    twice = lf.replay(once, events)
    assert once is not None and twice is not None and lf.dumps(once) == lf.dumps(twice)


def test_journal_without_begin_and_unknown_event_refused() -> None:
    with pytest.raises(LockfileError, match="begin"):
        lf.replay(None, [{"event": "status", "case": "c", "status": "x"}])
    with pytest.raises(LockfileError, match="unknown journal event"):
        lf.replay(lf.Lockfile(SERVER, ALG), [{"event": "bogus", "case": "c"}])
    with pytest.raises(LockfileError, match="belongs to server"):
        lf.replay(lf.Lockfile(SERVER, ALG),
                  [{"event": "begin", "server": "https://o/", "algorithm": ALG.as_json()}])


def test_replay_matches_folding_event_by_event() -> None:
    """replay folds in one dict: the same state and bytes as replaying event by event."""
    events = events_for_resubmit()
    by_one: lf.Lockfile | None = None
    for event in events:
        by_one = lf.replay(by_one, [event], source="<test>")
    folded = lf.replay(None, events)
    assert by_one is not None and folded is not None
    assert folded == by_one and lf.dumps(folded) == lf.dumps(by_one)
    base = lf.Lockfile(SERVER, ALG, {"keep": lf.CaseEntry("sha256:9", {}, job("j9"))})
    assert lf.replay(base, [events[0]]) is base  # a begin alone changes nothing
    after = lf.replay(base, events)
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
