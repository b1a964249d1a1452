"""The slot monitor learns how long our jobs take from when it saw them end."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from gcbatch.api.client import GrandChallengeClient
from gcbatch.engine.executor import Executor
from gcbatch.engine.monitor import SlotMonitor
from gcbatch.engine.options import ApplyOptions
from gcbatch.lockfile import AlgorithmRef, LockfileStore
from gcbatch.sandbox import RunningSandbox


def test_a_job_ends_between_two_looks_and_counts_to_their_midpoint(
        make_sandbox: Any, tmp_path: Path, monkeypatch: Any) -> None:
    sb: RunningSandbox = make_sandbox()
    client = GrandChallengeClient(sb.api_url, sb.token("demo"))
    store = LockfileStore.open(tmp_path / "study.lock", server=sb.api_url,
                               algorithm=AlgorithmRef("risk-calculator"))
    try:
        algorithm = client.get_algorithm("risk-calculator")
        now = [100.0]
        executor = Executor(client, store, algorithm, ApplyOptions(), clock=lambda: now[0])
        run = executor.run_context
        run.job_created("job-1")  # made at t=100
        monitor = SlotMonitor(run, threading.Event())
        statuses = {"job-1": "Executing"}
        monkeypatch.setattr(monitor, "_statuses", lambda pks: dict(statuses))
        now[0] = 110.0
        monitor.poll(["job-1"])  # still running at 110
        statuses["job-1"] = "Succeeded"
        now[0] = 114.0
        assert monitor.poll(["job-1"]) == 1  # ended by 114: somewhere in between
        assert monitor.median_duration() == 12.0  # not 14: the midpoint of 110 and 114
    finally:
        store.close()
        client.close()


def test_before_any_job_ended_looks_keep_pace_with_the_oldest_job(
        make_sandbox: Any, tmp_path: Path) -> None:
    sb: RunningSandbox = make_sandbox()
    client = GrandChallengeClient(sb.api_url, sb.token("demo"))
    store = LockfileStore.open(tmp_path / "study.lock", server=sb.api_url,
                               algorithm=AlgorithmRef("risk-calculator"))
    try:
        algorithm = client.get_algorithm("risk-calculator")
        now = [100.0]
        options = ApplyOptions(poll_min=0.2)
        executor = Executor(client, store, algorithm, options, clock=lambda: now[0])
        run = executor.run_context
        run.job_created("job-1")  # made at t=100
        run.slots.track_active(["job-1"])
        monitor = SlotMonitor(run, threading.Event())
        assert monitor.median_duration() is None  # nothing ended, no server average
        now[0] = 104.0
        # however long the polls had backed off, the next look comes within poll_min
        assert monitor._next_interval(0, 1.6) == 0.2
        now[0] = 116.0
        assert monitor._next_interval(0, 1.6) == 0.4  # a 40th of the 16 s it has run
        now[0] = 1000.0
        assert monitor._next_interval(0, 1.6) == 2.0  # never more than 2 s apart
    finally:
        store.close()
        client.close()
