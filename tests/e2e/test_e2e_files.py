"""``gcbatch download`` of file and image outputs: real CLI processes against a sandbox on
loopback HTTP, counted through the sandbox's request log.

Sandbox only: these need algorithms that output files and images (the default world's
``risk-calculator``); the world both servers share (the oracle's) outputs values only.
Status, wait and value downloads against either server: ``test_e2e_results.py``.

Jobs are created straight through the API (fast: no uploads) and tied to cases in a
lockfile written with :mod:`gcbatch.lockfile`, exactly as ``apply`` leaves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from gcbatch import lockfile as lockmod
from gcbatch.engine.download_record import STATE_NAME
from gcbatch.lockfile import AlgorithmRef, CaseEntry, JobRecord, Lockfile
from gcbatch.sandbox import RunningSandbox, SandboxConfig
from gcbatch.sandbox import lifecycle as lc
from gcbatch.sandbox.seed import load_seed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.sandbox_only("the world a live server shares with the sandbox (the "
                             "oracle's) has no algorithm that outputs files or images"),
]

ROOT = Path(__file__).resolve().parents[2]
ALG = "risk-calculator"
INSTANT = {"validating_seconds": 0.0, "queued_seconds": 0.0, "provisioned_seconds": 0.0,
           "executing_seconds": 0.0, "executed_seconds": 0.0}
UNLIMITED = {"max_active_jobs": 1_000_000, "credits_per_month": 10**9}


# --------------------------------------------------------------------------- helpers


def _config(**changes: Any) -> SandboxConfig:
    # real S3 refuses a presigned GET that also carries a token: so must the sandbox here
    base: dict[str, Any] = {**UNLIMITED, **INSTANT, "storage_rejects_authorization": True}
    base.update(changes)
    return SandboxConfig(**base)


def _api(sb: RunningSandbox) -> httpx.Client:
    return sb.client("demo", transport=sb.transport())  # in-process: fast job creation


def _algorithm(sb: RunningSandbox) -> dict[str, Any]:
    with _api(sb) as api:
        found: dict[str, Any] = api.get("algorithms/", params={"slug": ALG}).json()["results"][0]
        return found


def _create_jobs(sb: RunningSandbox, ages: Sequence[int], volume: float = 4.2
                 ) -> list[dict[str, Any]]:
    alg = _algorithm(sb)
    jobs = []
    with _api(sb) as api:
        for age in ages:
            answer = api.post("algorithms/jobs/", json={
                "algorithm": alg["api_url"],
                "inputs": [{"interface": "age", "value": age},
                           {"interface": "lung-volume", "value": volume}]})
            assert answer.status_code == 201, answer.text
            jobs.append(answer.json())
    return jobs


def _study(tmp: Path, ages: Sequence[int], volume: float = 4.2) -> Path:
    """A manifest with one case per age: ``case-<age>`` from ``ages/<age>.json`` (a glob
    generator, as a real study of 2000 scans would be written)."""
    folder = tmp / "ages"
    folder.mkdir(exist_ok=True)
    for age in ages:
        (folder / f"{age:05d}.json").write_text(json.dumps(age), encoding="utf-8")
    path = tmp / "study.yaml"
    path.write_text(
        f"version: 1\nalgorithm: {ALG}\n"
        f"defaults:\n  lung-volume: {{value: {volume}}}\n"
        "cases:\n"
        "  - foreach: {glob: \"ages/*.json\"}\n"
        "    id: \"case-{stem}\"\n"
        "    inputs:\n"
        "      age: {json: \"{path}\"}\n",
        encoding="utf-8",
    )
    return path


def _lock(manifest: Path, sb: RunningSandbox, ages: Sequence[int],
          jobs: Sequence[dict[str, Any]]) -> Path:
    alg = _algorithm(sb)
    cases = {}
    for age, job in zip(ages, jobs, strict=True):
        record = JobRecord(pk=job["pk"], api_url=f"{sb.api_url}algorithms/jobs/{job['pk']}/",
                           status=job["status"], submitted_at="2026-11-27T14:00:00Z",
                           fingerprint="sha256:test")
        cases[f"case-{age:05d}"] = CaseEntry(fingerprint="sha256:test", job=record)
    path = lockmod.lockfile_path_for(manifest)
    lockmod.save(path, Lockfile(server=sb.api_url,
                                algorithm=AlgorithmRef(ALG, alg["pk"], alg["api_url"]),
                                cases=cases))
    return path


def _env(sb: RunningSandbox) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GCBATCH_SERVER", "GRAND_CHALLENGE_AUTHORIZATION")}
    env["GRAND_CHALLENGE_AUTHORIZATION"] = sb.token("demo")
    env["NO_COLOR"] = "1"
    return env


def _cmd(sb: RunningSandbox, *args: str) -> list[str]:
    return [sys.executable, "-m", "gcbatch", *args, "--server", sb.api_url]


def _run(sb: RunningSandbox, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(sb, *args), env=_env(sb), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _log_since(sb: RunningSandbox, seq: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = sb.admin.requests(since=seq)["requests"]
    return entries


def _last_seq(sb: RunningSandbox) -> int:
    return int(sb.admin.requests(since=10**12)["last"])


def _api_requests(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if not e["path"].startswith("/_sandbox/")]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _all_jobs(sb: RunningSandbox) -> list[dict[str, Any]]:
    alg = _algorithm(sb)
    out: list[dict[str, Any]] = []
    with _api(sb) as api:
        offset = 0
        while True:
            page = api.get("algorithms/jobs/", params={
                "algorithm_image__algorithm": alg["pk"], "limit": 1000, "offset": offset}).json()
            out += page["results"]
            offset += 1000
            if not page["next"]:
                return out


# --------------------------------------------------------------------------- download


def _expected_files(sb: RunningSandbox, jobs: Sequence[dict[str, Any]], ages: Sequence[int]
                    ) -> dict[str, str]:
    """relative path → sha256 of the sandbox's own copy, fetched independently."""
    expected: dict[str, str] = {}
    by_pk = {j["pk"]: j for j in _all_jobs(sb)}
    with httpx.Client(follow_redirects=False, timeout=30, trust_env=False) as raw, _api(sb) as api:
        def fetch(url: str) -> bytes:
            first = raw.get(url, headers={"Authorization": f"Bearer {sb.token('demo')}"})
            assert first.status_code == 302, first.text
            second = raw.get(first.headers["location"])
            assert second.status_code == 200
            return second.content

        for age, job in zip(ages, jobs, strict=True):
            case = f"case-{age:05d}"
            for out in by_pk[job["pk"]]["outputs"]:
                socket = out["interface"]
                rel = f"{case}/{socket['relative_path']}"
                if socket["super_kind"] == "Value":
                    text = json.dumps(out["value"], indent=2, ensure_ascii=False) + "\n"
                    expected[rel] = _sha(text.encode())
                elif socket["super_kind"] == "File":
                    expected[rel] = _sha(fetch(out["file"]))
                else:
                    image = api.get(out["image"]).json()
                    for f in image["files"]:
                        expected[f"{rel}/{f['file'].rsplit('/', 1)[-1]}"] = _sha(fetch(f["file"]))
    return expected


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): _sha(p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in (STATE_NAME, "results.csv", "results.json")
    }


def test_download_twice_the_second_run_downloads_nothing(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    sb = make_sandbox(config=_config())
    ages = [70, 71, 72]
    manifest = _study(tmp_path, ages)
    jobs = _create_jobs(sb, ages)
    _lock(manifest, sb, ages, jobs)
    out = tmp_path / "results"

    seq = _last_seq(sb)
    first = _run(sb, "download", str(manifest), "--out", str(out), "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)["download"]
    assert summary["files_downloaded"] == 6 and summary["values_written"] == 6
    log = _api_requests(_log_since(sb, seq))
    media = [e for e in log if e["path"].startswith("/media/")]
    storage = [e for e in log if e["path"].startswith("/_storage/")]
    assert len(media) == len(storage) == 6
    assert all(e["had_authorization"] for e in media)
    assert not any(e["had_authorization"] for e in storage)  # the token never follows a 302
    assert _tree(out) == _expected_files(sb, jobs, ages)

    csv_before = (out / "results.csv").read_bytes()
    seq = _last_seq(sb)
    second = _run(sb, "download", str(manifest), "--out", str(out), "--json")
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)["download"]
    assert summary["files_downloaded"] == 0 and summary["files_skipped"] == 6
    assert summary["values_written"] == 0 and summary["images_resolved"] == 0
    log = _api_requests(_log_since(sb, seq))
    assert {e["path"] for e in log} <= {"/api/v1/algorithms/jobs/", "/api/v1/algorithms/"}
    print(f"second download: {len(log)} requests, none for files")
    assert (out / "results.csv").read_bytes() == csv_before  # deterministic bytes


def test_download_killed_mid_way_then_resumed_is_complete_and_identical(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    sb = make_sandbox(config=_config())
    ages = list(range(100, 180))  # 80 cases, 160 files
    manifest = _study(tmp_path, ages)
    jobs = _create_jobs(sb, ages)
    _lock(manifest, sb, ages, jobs)
    expected = _expected_files(sb, jobs, ages)
    out = tmp_path / "results"

    sb.admin.set_faults(None, latency_ms=25)  # slow enough to be caught mid-way
    proc = subprocess.Popen(_cmd(sb, "download", str(manifest), "--out", str(out),
                                 "--workers", "4"),
                            env=_env(sb), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=ROOT)
    try:
        state = out / STATE_NAME
        deadline = time.time() + 60
        done = 0
        while time.time() < deadline and proc.poll() is None:
            done = len(state.read_bytes().splitlines()) if state.exists() else 0
            if done >= 30:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "download finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = _tree(out)
    assert 0 < len(partial) < len(expected) + len(ages) * 2
    sb.admin.set_faults(None, latency_ms=0)

    again = _run(sb, "download", str(manifest), "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)["download"]
    print(f"killed after ~{done} files; resumed: {summary}")
    assert summary["files_skipped"] >= 20 and summary["files_downloaded"] > 0
    assert _tree(out) == expected  # every file complete and byte-identical (by hash)
    assert not [p for p in out.rglob("*") if p.name.endswith("part")]


# --------------------------------------------------------------------------- quickstart


def test_quickstart_results_csv_matches_the_derived_outputs(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    import csv
    import io
    import shutil

    example = ROOT / "examples" / "quickstart"
    study_dir = tmp_path / "quickstart"
    shutil.copytree(example, study_dir)
    manifest = study_dir / "study.yaml"
    sb = make_sandbox(config=_config())

    applied = _run(sb, "apply", str(manifest))
    assert applied.returncode == 0, applied.stderr
    waited = _run(sb, "wait", str(manifest), "--timeout", "60s", "--poll-interval", "1s")
    assert waited.returncode == 0, waited.stderr
    out = tmp_path / "results"
    downloaded = _run(sb, "download", str(manifest), "--out", str(out))
    assert downloaded.returncode == 0, downloaded.stderr

    # what the sandbox derives from each case's inputs (lifecycle.derive_outputs)
    seed = load_seed(None)
    alg = seed.algorithm_by_slug(ALG)
    assert alg is not None
    labs = study_dir / "labs"
    described: dict[str, dict[str, Any]] = {
        "patient-001": {"age": 61, "lung-volume": 4.2},
        "patient-002": {"age": 47, "lung-volume": 5.1, "lab-report": {
            "file_sha256": _sha((labs / "patient-002.json").read_bytes())}},
        "patient-003": {"age": json.loads((labs / "patient-003-age.json").read_text()),
                        "lung-volume": 4.2},
    }
    rows = {r["case_id"]: r for r in csv.DictReader(io.StringIO((out / "results.csv").read_text()))}
    assert set(rows) == set(described)
    for case_id, inputs in described.items():
        iface = next(i for i in alg.interfaces if set(i.inputs) == set(inputs))
        sockets = [seed.socket(slug) for slug in iface.outputs]
        derived = {o.socket: o for o in lc.derive_outputs(ALG, [s for s in sockets if s], inputs)}
        row = rows[case_id]
        assert row["status"] == "Succeeded"
        assert float(row["output:malignancy-risk"]) == derived["malignancy-risk"].value
        assert json.loads(row["output:findings"]) == derived["findings"].value
        report = out / case_id / "report.json"
        assert report.read_bytes() == derived["report"].data
        heatmap = list((out / case_id / "images" / "heatmap").iterdir())
        assert [p.read_bytes() for p in heatmap] == [derived["heatmap"].data]
        assert row["input:age"] and row["input:lung-volume"]
