"""Cost follows the study, not the account's history: behind 20,000 older jobs of the
same user and algorithm (20 pages: read from the start they would cost 21 requests),
``status`` and ``plan`` of a 20-case study take at most 3 requests each (real CLI
processes, a sandbox on loopback, its request log). The figure behind 100,000 is
``benchmarks/bench_scale.py``'s; the request count does not depend on the history."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from test_shards_cli import ALG, _api_requests, _config, _last_seq, _run, _study

from gcbatch.sandbox import RunningSandbox

pytestmark = pytest.mark.slow


def test_status_and_plan_of_20_cases_behind_a_long_history(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    sb = make_sandbox(config=_config())
    assert sb.admin.add_history(ALG, 20_000)["added"] == 20_000
    manifest = _study(tmp_path, list(range(20)))
    applied = _run(sb, "apply", str(manifest))
    assert applied.returncode == 0, applied.stderr

    seq = _last_seq(sb)
    status = _run(sb, "status", str(manifest), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["summary"]["total"] == 20
    status_requests = _api_requests(sb, seq)

    seq = _last_seq(sb)
    plan = _run(sb, "plan", str(manifest), "--json")
    assert plan.returncode == 0, plan.stderr
    plan_requests = _api_requests(sb, seq)
    print(f"status: {len(status_requests)} requests, plan: {len(plan_requests)}")
    assert len(status_requests) <= 3, status_requests
    assert len(plan_requests) <= 3, plan_requests
    # never a page from the start of the list (the 100,000 older jobs)
    for r in status_requests + plan_requests:
        assert "limit=1000&offset=0" not in r.get("query", "") and \
            "offset=0&limit=1000" not in r.get("query", "")


def test_history_admin_call_is_validated(make_sandbox: Callable[..., RunningSandbox]) -> None:
    sb = make_sandbox(config=_config())
    for bad in ({"algorithm": ALG, "jobs": -1}, {"algorithm": "nope", "jobs": 1},
                {"algorithm": ALG, "jobs": 1, "user": "nobody"},
                {"algorithm": ALG, "jobs": 1, "status": "Queued"}):
        with pytest.raises(RuntimeError, match="400"):
            sb.admin._call("POST", "history", json=bad)
    assert sb.admin.add_history(ALG, 3, status="Failed")["added"] == 3
    assert sb.admin.stats()["users"]["demo"]["jobs"] == 3
