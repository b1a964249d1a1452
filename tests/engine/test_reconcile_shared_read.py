"""Reconciler.jobs: workers share one full read of the job list."""

from __future__ import annotations

import threading
import time

from gcbatch.api.models import Job
from gcbatch.engine.reconcile import Reconciler


def _reconciler(reads: list[int], started: threading.Event, release: threading.Event
                ) -> Reconciler:
    def list_jobs() -> list[Job]:
        reads.append(1)
        started.set()
        release.wait(5)
        return [Job(pk=f"j{len(reads)}", api_url="u", status="Queued")]

    return Reconciler(list_jobs=list_jobs, list_image_pks=lambda name: [],
                      upload_exists=lambda pk: True)


def test_workers_asking_during_a_read_share_the_next_one() -> None:
    reads: list[int] = []
    started, release = threading.Event(), threading.Event()
    rec = _reconciler(reads, started, release)
    first = threading.Thread(target=rec.jobs, kwargs={"refresh": True})
    first.start()
    assert started.wait(5)
    # five workers ask while the first read is under way: it began before they asked,
    # so they need a new one, and one new read serves all five
    results: list[tuple[Job, ...]] = []
    waiting = [threading.Thread(target=lambda: results.append(rec.jobs(refresh=True)))
               for _ in range(5)]
    for t in waiting:
        t.start()
    time.sleep(0.2)
    release.set()
    first.join(5)
    for t in waiting:
        t.join(5)
    assert len(reads) == 2
    assert {r[0].pk for r in results} == {"j2"}


def test_a_cached_read_serves_without_refresh_and_a_later_refresh_reads_again() -> None:
    reads: list[int] = []
    started, release = threading.Event(), threading.Event()
    release.set()
    rec = _reconciler(reads, started, release)
    rec.jobs()
    rec.jobs()
    assert len(reads) == 1
    rec.jobs(refresh=True)
    assert len(reads) == 2
