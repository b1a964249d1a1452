"""The job runner's bookkeeping the API shows: an algorithm's ``average_duration``.

The platform (``update_algorithm_average_duration``, after every success) averages the
utilisation of the algorithm's succeeded jobs, every user's, leaving out zero durations;
the sandbox's utilisation is a job's invoke duration (provisioned + executing + executed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from gcbatch.sandbox.app import SandboxApp
from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.transport import SandboxTransport

PHASES = {"validating_seconds": 1.0, "queued_seconds": 1.0, "provisioned_seconds": 0.5,
          "executing_seconds": 2.0, "executed_seconds": 0.25}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _client(app: SandboxApp, user: str = "demo") -> httpx.Client:
    return httpx.Client(transport=SandboxTransport(app), base_url="http://localhost/api/v1/",
                        headers={"Authorization": f"Bearer {app.token(user)}"})


def _average(app: SandboxApp, slug: str = "risk-calculator") -> Any:
    with _client(app) as api:
        return api.get("algorithms/", params={"slug": slug}).json()["results"][0][
            "average_duration"]


def _job(app: SandboxApp, age: int, user: str = "demo") -> str:
    with _client(app, user) as api:
        alg = api.get("algorithms/", params={"slug": "risk-calculator"}).json()["results"][0]
        answer = api.post("algorithms/jobs/", json={
            "algorithm": alg["api_url"],
            "inputs": [{"interface": "age", "value": age},
                       {"interface": "lung-volume", "value": 1.5}]})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["pk"])


def test_average_duration_is_null_until_a_job_succeeds_then_the_mean_compute_time(
    tmp_path: Path
) -> None:
    clock = Clock()
    app = SandboxApp(tmp_path / "s.db", config=SandboxConfig(**PHASES), clock=clock)
    try:
        assert _average(app) is None
        _job(app, 1)
        _job(app, 2, user="other")  # every user's jobs count
        clock.now += 2.0  # queued: not ended yet
        assert _average(app) is None
        clock.now += 10.0
        assert _average(app) == 2.75  # 0.5 + 2.0 + 0.25, not the 2 s of execution alone
    finally:
        app.close()
    # counted again from the store when a sandbox starts on the same database
    again = SandboxApp(tmp_path / "s.db", config=SandboxConfig(**PHASES), clock=clock)
    try:
        assert _average(again) == 2.75
    finally:
        again.close()


def test_failed_jobs_and_jobs_without_compute_time_do_not_count(tmp_path: Path) -> None:
    clock = Clock()
    app = SandboxApp(None, config=SandboxConfig(**{**PHASES, "failure_rate": 1.0}),
                     clock=clock)
    try:
        _job(app, 1)
        clock.now += 20
        assert _average(app) is None  # Failed
        app.set_config(app.config.replace(failure_rate=0.0, provisioned_seconds=0.0,
                                          executing_seconds=0.0, executed_seconds=0.0))
        _job(app, 2)
        clock.now += 20
        assert _average(app) is None  # Succeeded in no time: the platform skips it
    finally:
        app.close()
