"""Scale out and recover, as a user runs it: ``apply --shard I/N`` in N concurrent CLI
processes against one sandbox on loopback, ``lock merge``, ``lock rebuild`` of a lost
lockfile, and a merge refused for one case with two jobs. Requests are counted in the
sandbox's own log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from gcbatch import lockfile as lockmod
from gcbatch.lockfile import CaseEntry, JobRecord
from gcbatch.sandbox import RunningSandbox, SandboxConfig

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ALG = "risk-calculator"
INSTANT = {"validating_seconds": 0.0, "queued_seconds": 0.0, "provisioned_seconds": 0.0,
           "executing_seconds": 0.0, "executed_seconds": 0.0}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def _config() -> SandboxConfig:
    return SandboxConfig(max_active_jobs=1_000_000, credits_per_month=10**9, **INSTANT)


def _study(tmp: Path, ages: Sequence[int]) -> Path:
    folder = tmp / "ages"
    folder.mkdir(exist_ok=True)
    for age in ages:
        (folder / f"{age:05d}.json").write_text(json.dumps(age), encoding="utf-8")
    path = tmp / "study.yaml"
    path.write_text(
        f"version: 1\nalgorithm: {ALG}\n"
        "defaults:\n  lung-volume: {value: 4.2}\n"
        "cases:\n"
        "  - foreach: {glob: \"ages/*.json\"}\n"
        "    id: \"case-{stem}\"\n"
        "    inputs:\n"
        "      age: {json: \"{path}\"}\n",
        encoding="utf-8",
    )
    return path


def _env(sb: RunningSandbox) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GCBATCH_SERVER", "GRAND_CHALLENGE_AUTHORIZATION")}
    env["GRAND_CHALLENGE_AUTHORIZATION"] = sb.token("demo")
    env["NO_COLOR"] = "1"
    return env


def _cmd(sb: RunningSandbox, *args: str) -> list[str]:
    return [sys.executable, "-m", "gcbatch", *args, "--server", sb.api_url]


def _run(sb: RunningSandbox, *args: str, server: bool = True
         ) -> subprocess.CompletedProcess[str]:
    cmd = _cmd(sb, *args) if server else [sys.executable, "-m", "gcbatch", *args]
    return subprocess.run(cmd, env=_env(sb), capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


def _last_seq(sb: RunningSandbox) -> int:
    return int(sb.admin.requests(since=10**12)["last"])


def _api_requests(sb: RunningSandbox, since: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = sb.admin.requests(since=since)["requests"]
    return [e for e in entries if not e["path"].startswith("/_sandbox/")]


def _server_pairs(sb: RunningSandbox) -> dict[int, str]:
    """age → job pk, for every job of the algorithm on the server."""
    with sb.client("demo", transport=sb.transport()) as api:
        alg = api.get("algorithms/", params={"slug": ALG}).json()["results"][0]
        pairs: dict[int, str] = {}
        offset = 0
        while True:
            page = api.get("algorithms/jobs/", params={
                "algorithm_image__algorithm": alg["pk"], "limit": 1000,
                "offset": offset}).json()
            for job in page["results"]:
                age = next(v["value"] for v in job["inputs"] if v["interface"]["slug"] == "age")
                assert age not in pairs, f"two jobs for age {age}"
                pairs[age] = job["pk"]
            offset += 1000
            if not page["next"]:
                return pairs


def _pairs(path: Path) -> dict[str, str]:
    locked = lockmod.load(path)
    assert locked is not None
    return {cid: e.job.pk for cid, e in locked.cases.items() if e.job is not None}


def test_four_shards_merge_rebuild_and_reapply(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    sb = make_sandbox(config=_config())
    ages = list(range(200))
    manifest = _study(tmp_path, ages)

    # 4 shards in 4 concurrent processes, as 4 tasks of a SLURM array would run them
    procs = [subprocess.Popen(_cmd(sb, "apply", str(manifest), "--shard", f"{i}/4"),
                              env=_env(sb), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT) for i in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    shard_files = [tmp_path / f"study.shard-{i}-of-4.lock" for i in range(4)]
    shards = [_pairs(p) for p in shard_files]
    assert all(shards), "every shard got cases"
    ids = [set(s) for s in shards]
    assert sum(len(s) for s in ids) == 200 and len(set().union(*ids)) == 200  # disjoint
    server = _server_pairs(sb)
    assert len(server) == 200  # 200 jobs, 0 duplicates
    assert not (tmp_path / "study.lock").exists()
    # a shard's own status: its cases, from its own lockfile
    shard_status = _run(sb, "status", str(manifest), "--shard", "2/4", "--json")
    assert shard_status.returncode == 0, shard_status.stderr
    assert {c["case"]: c["job"] for c in json.loads(shard_status.stdout)["cases"]} == shards[2]
    shard_wait = _run(sb, "wait", str(manifest), "--shard", "2/4", "--json")
    assert shard_wait.returncode == 0, shard_wait.stderr
    assert json.loads(shard_wait.stdout)["summary"]["total"] == len(shards[2])

    merged = _run(sb, "lock", "merge", str(manifest), server=False)
    assert merged.returncode == 0, merged.stderr
    assert "200 cases, 200 with a job" in merged.stdout
    pairs = _pairs(tmp_path / "study.lock")
    assert pairs == {f"case-{age:05d}": pk for age, pk in server.items()}
    before = (tmp_path / "study.lock").read_bytes()
    again = _run(sb, "lock", "merge", str(manifest), server=False)
    assert again.returncode == 0 and (tmp_path / "study.lock").read_bytes() == before

    # the whole study once merged: status reads it, within a few list requests
    seq = _last_seq(sb)
    status = _run(sb, "status", str(manifest), "--json")
    assert status.returncode == 0, status.stderr
    assert len(_api_requests(sb, seq)) <= 3

    # the lockfile lost: rebuilt from the server, GETs only
    (tmp_path / "study.lock").unlink()
    seq = _last_seq(sb)
    rebuilt = _run(sb, "lock", "rebuild", str(manifest), "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    sent = _api_requests(sb, seq)
    assert not [r for r in sent if r["method"] in MUTATING]
    report = json.loads(rebuilt.stdout)
    assert len(report["adopted"]) == 200 and not report["no_job"] and not report["ambiguous"]
    assert _pairs(tmp_path / "study.lock") == pairs

    # and apply has nothing to send
    seq = _last_seq(sb)
    reapply = _run(sb, "apply", str(manifest))
    assert reapply.returncode == 0, reapply.stderr
    assert not [r for r in _api_requests(sb, seq) if r["method"] in MUTATING]
    assert len(_server_pairs(sb)) == 200


def test_merge_refuses_one_case_with_two_jobs(tmp_path: Path) -> None:
    base = lockmod.Lockfile(server="https://gc.example/api/v1/",
                            algorithm=lockmod.AlgorithmRef(ALG, "alg-pk", ""))

    def job(pk: str) -> JobRecord:
        return JobRecord(pk=pk, api_url=f"https://gc.example/api/v1/algorithms/jobs/{pk}/",
                         status="Succeeded", submitted_at="2026-12-04T10:00:00Z",
                         fingerprint="sha256:f")

    first, second = tmp_path / "alice.lock", tmp_path / "bob.lock"
    shared = CaseEntry(fingerprint="sha256:f", job=job("job-shared"))
    lockmod.save(first, lockmod.Lockfile(base.server, base.algorithm, {
        "p001": CaseEntry(fingerprint="sha256:f", job=job("job-alice")), "p002": shared}))
    lockmod.save(second, lockmod.Lockfile(base.server, base.algorithm, {
        "p001": CaseEntry(fingerprint="sha256:f", job=job("job-bob")), "p002": shared}))
    out = tmp_path / "merged.lock"
    result = subprocess.run([sys.executable, "-m", "gcbatch", "lock", "merge", "-o", str(out),
                             str(first), str(second)], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 1
    assert "p001" in result.stderr and "job-alice" in result.stderr \
        and "job-bob" in result.stderr
    assert "p002" not in result.stderr
    assert not out.exists()


def test_client_used_by_helpers_is_httpx() -> None:
    # the helpers above read the sandbox through httpx (the sandbox's own client)
    assert httpx.Client is not None
