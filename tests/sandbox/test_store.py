"""The sandbox's SQLite store: transactions, counters, reuse of values, persistence."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from gcbatch.sandbox.store import Store


def _job(
    store: Store,
    pk: str,
    user: str = "demo",
    created: float = 1000.0,
    cost: int = 20,
    key: str | None = None,
) -> None:
    store.insert_job(
        pk=pk,
        user=user,
        algorithm="alg",
        created=created,
        next_at=created + 1,
        schedule="1.0,1.0,1.0,1.0,1.0",
        outcome="succeed",
        input_key=key,
        cost=cost,
    )


def test_file_database_uses_wal_and_persists(tmp_path: Path) -> None:
    db = tmp_path / "sandbox.sqlite"
    store = Store(db)
    mode = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    secret = store.secret
    with store.transaction():
        _job(store, "j1")
        store.insert_upload("u1", "demo", 1000.0, "a.mha", "s3id")
    store.write_bytes("uploads/u1/part-1", b"bytes")
    store.close()

    again = Store(db)
    try:
        job = again.job("j1")
        assert job is not None and job.status == "Validating inputs" and job.active == 1
        assert again.secret == secret  # presigned URLs stay valid across restarts
        assert again.path("uploads/u1/part-1").read_bytes() == b"bytes"
        assert (tmp_path / "sandbox.sqlite.storage").is_dir()
    finally:
        again.close()


def test_memory_store_cleans_its_folder() -> None:
    store = Store(None)
    folder = store.storage
    store.write_bytes("x/y", b"1")
    assert folder.is_dir()
    store.close()
    assert not folder.exists()


def test_a_failed_request_leaves_nothing_behind() -> None:
    store = Store(None)
    try:
        with pytest.raises(RuntimeError), store.transaction():
            _job(store, "j1")
            raise RuntimeError("boom")
        assert store.job("j1") is None
        assert store.active_jobs("demo") == 0
        assert store.credits_used("demo", 0) == 0
    finally:
        store.close()


def test_counters_for_admission() -> None:
    store = Store(None)
    try:
        with store.transaction():
            _job(store, "a", created=86400 * 10 + 5)
            _job(store, "b", created=86400 * 11 + 5, cost=30)
            _job(store, "c", user="other")
        assert store.active_jobs("demo") == 2
        assert store.admission("demo", 0) == (2, 50)
        assert store.credits_used("demo", 86400 * 11) == 30  # a rolling window, to the day
        with store.transaction():
            store.finish_job("a", "demo", status="Succeeded")
        assert store.active_jobs("demo") == 1
        job = store.job("a")
        assert job is not None and job.active == 0 and job.next_at is None
        with store.transaction():
            store.reset_credits("demo")
        assert store.credits_used("demo", 0) == 0
        assert store.credits_used("other", 0) == 20
    finally:
        store.close()


def test_value_civs_are_shared_and_files_are_not() -> None:
    store = Store(None)
    try:
        with store.transaction():
            a = store.value_civ("age", "42")
            b = store.value_civ("age", "42")
            c = store.value_civ("age", "43")
            d = store.value_civ("other", "42")
            f1 = store.new_civ("report", file="x", file_name="r.json")
            f2 = store.new_civ("report", file="x", file_name="r.json")
            i1 = store.image_civ("ct", "img")
            i2 = store.image_civ("ct", "img")
        assert a == b and len({a, c, d}) == 3
        assert f1 != f2
        assert i1 == i2
    finally:
        store.close()


def test_duplicate_lookup_and_job_values() -> None:
    store = Store(None)
    try:
        with store.transaction():
            civ = store.value_civ("age", "1")
            _job(store, "j1", key=str(civ))
            store.attach("j1", [civ], "in")
            out = store.new_civ("risk", value_json="0.5")
            store.attach("j1", [out], "out")
        assert store.duplicate_exists("alg", str(civ))
        assert not store.duplicate_exists("alg", "999")
        assert not store.duplicate_exists("other-alg", str(civ))
        both = store.jobs_civs(["j1"])
        assert [c.pk for c in both[("j1", "in")]] == [civ]
        assert [c.pk for c in both[("j1", "out")]] == [out]
    finally:
        store.close()


def test_live_uploads_and_parts() -> None:
    store = Store(None)
    try:
        with store.transaction():
            store.insert_upload("b", "demo", 1000.0, "b.json", "s3b")
            store.insert_upload("a", "demo", 10.0, "a.json", "s3a")  # expired below
            store.insert_upload("c", "other", 1000.0, "c.json", "s3c")
            store.put_part("b", 1, '"e1"', 10, 1000.0)
            store.put_part("b", 1, '"e2"', 12, 1001.0)  # a part may be sent again
            store.put_part("b", 2, '"e3"', 5, 1002.0)
        count, rows = store.live_uploads("demo", since=500.0, limit=10, offset=0)
        assert count == 1 and [r.pk for r in rows] == ["b"]
        assert [(p.number, p.etag, p.size) for p in store.parts("b")] == [
            (1, '"e2"', 12),
            (2, '"e3"', 5),
        ]
        # the size quota: completed uploads' bytes, plus the asking upload's own parts
        assert store.pending_bytes("b") == 17
        assert store.completed_upload_bytes("demo", 500.0) == 0
        with store.transaction():
            store.update_upload("b", status="Completed", size=17)
        assert store.completed_upload_bytes("demo", 500.0) == 17
        assert store.uploads_created_after("demo", 500.0, 999.0) == 1
        assert store.uploads_created_after("demo", 500.0, 1000.0) == 0
        with store.transaction():
            store.update_upload("b", consumed=1)
        assert store.completed_upload_bytes("demo", 500.0) == 0
        assert store.live_upload_count("demo", 500.0) == 0
    finally:
        store.close()


def test_two_processes_worth_of_connections_share_one_file(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    first, second = Store(db), Store(db)
    try:
        with first.transaction():
            _job(first, "j1")
        assert second.job("j1") is not None
        assert second.active_jobs("demo") == 1
    finally:
        first.close()
        second.close()


def test_every_request_is_committed_before_it_returns(tmp_path: Path) -> None:
    """Group commit may share a COMMIT between requests, never skip it: as soon as a
    transaction returns, another connection (another process) sees its rows."""
    db = tmp_path / "s.sqlite"
    store, reader = Store(db), Store(db)
    unseen: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(30):
            pk = f"{n}-{i}"
            with store.transaction():
                _job(store, pk)
            with lock:  # the reader's connection is not shared across threads unguarded
                if reader.conn.execute("SELECT 1 FROM jobs WHERE pk=?", (pk,)).fetchone() is None:
                    unseen.append(pk)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert unseen == []
        assert reader.active_jobs("demo") == 180
    finally:
        store.close()
        reader.close()


def test_a_failing_request_does_not_undo_its_neighbours() -> None:
    store = Store(None)
    try:
        with store.transaction():
            _job(store, "kept")
        with pytest.raises(ValueError), store.transaction():
            _job(store, "lost")
            raise ValueError("boom")
        with store.transaction():
            _job(store, "kept-too")
        assert store.job("kept") is not None and store.job("kept-too") is not None
        assert store.job("lost") is None
        assert store.active_jobs("demo") == 2
    finally:
        store.close()


def test_many_threads_write_safely() -> None:
    store = Store(None)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                with store.transaction():
                    _job(store, f"{n}-{i}")
        except (sqlite3.Error, AssertionError) as exc:  # pragma: no cover - would fail below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert not errors
        assert store.active_jobs("demo") == 400
        assert store.credits_used("demo", 0) == 400 * 20
    finally:
        store.close()
