"""The real ``gcbatch`` CLI in subprocesses, studies in the oracle world, and the checks
that compare a lockfile with what the server holds.

Cases and values carry the test's run id (``e2e_target.new_run_id``): upload names (and so
image names) and integer values are then unique to the run, on a live server too.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from e2e_proxy import FaultProxy
from e2e_target import WORLD, Target

from gcbatch.lockfile import load
from gcbatch.sandbox.lifecycle import make_mha

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def cli_timeout(target: Target) -> float:
    return 1800.0 if target.is_live else 180.0


def answer_window(target: Target) -> list[str]:
    """``--answer-window`` for runs after a kill: how long a job POST without an answer
    may still turn into a job. Both servers here commit a job before they answer (the
    sandbox; the oracle's gunicorn, with no gateway in front that could give up first),
    so a killed run's POST has become a job, or never will, within seconds; the default
    (180 s, for the platform's gateway) would hold each such case for 3 minutes."""
    return ["--answer-window", "5" if not target.is_live else "30"]


def run_cli(target: Target, args: Sequence[str], cwd: Path, *, token: str | None = None,
            proxy: FaultProxy | None = None, server: str | None = None,
            timeout: float | None = None, no_token: bool = False,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = target.cli_env(token=token, proxy=proxy, server=server)
    if no_token:
        env.pop("GRAND_CHALLENGE_AUTHORIZATION")
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False,
                          timeout=timeout or cli_timeout(target))


def start_cli(target: Target, args: Sequence[str], cwd: Path, log: Path, *,
              proxy: FaultProxy | None = None, ctrl_c: bool = False) -> subprocess.Popen[bytes]:
    """gcbatch in the background, its output appended to ``log``. ``ctrl_c``: SIGINT
    delivered as on a terminal (a test run started in the background inherits SIGINT
    ignored, and Python keeps an ignored SIGINT ignored)."""
    env = target.cli_env(proxy=proxy)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env, stdout=out, stderr=out,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if ctrl_c else None)


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """``apply --json``'s summary counts."""
    assert result.stdout.strip(), result.stderr[-3000:]
    return dict(json.loads(result.stdout)["summary"])


# ------------------------------------------------------------------------ studies


@dataclass(frozen=True)
class Study:
    manifest: Path
    algorithm: str
    cases: dict[str, Any]  # case id → what identifies its job: a value, or "image"

    @property
    def lockfile(self) -> Path:
        return self.manifest.with_suffix(".lock")

    @property
    def folder(self) -> Path:
        return self.manifest.parent


def value_study(folder: Path, n: int, run: int, *, algorithm: str = WORLD.algorithm,
                name: str = "study") -> Study:
    """``n`` cases of one integer each (unique to the run)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["version: 1", f"algorithm: {algorithm}", "cases:"]
    cases: dict[str, Any] = {}
    for i in range(n):
        case, value = f"v{run}-{i:04d}", run * 10_000 + i
        lines += [f"  - id: {case}", "    inputs:", f"      {WORLD.integer}: {{value: {value}}}"]
        cases[case] = value
    manifest = folder / f"{name}.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    return Study(manifest, algorithm, cases)


def write_scan(path: Path, i: int, *, width: int = 4, height: int = 4, depth: int = 2) -> None:
    voxels = bytes((i * 7 + k) % 256 for k in range(width * height * depth))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make_mha(width, height, voxels, depth=depth))


def image_study(folder: Path, n: int, run: int) -> Study:
    """``n`` cases from a glob of small .mha scans, one image input each."""
    for i in range(n):
        write_scan(folder / "scans" / f"r{run}-{i:04d}.mha", i)
    manifest = folder / "study.yaml"
    manifest.write_text(
        f"version: 1\nalgorithm: {WORLD.algorithm}\n"
        "cases:\n  - foreach: {glob: 'scans/*.mha'}\n    id: 'scan-{stem}'\n"
        f"    inputs:\n      {WORLD.image}: {{file: '{{path}}'}}\n")
    return Study(manifest, WORLD.algorithm,
                 {f"scan-r{run}-{i:04d}": "image" for i in range(n)})


# ------------------------------------------------------------------------ the server's view


def job_inputs_by_socket(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["interface"]["slug"]: i for i in job["inputs"]}


def case_of(job: dict[str, Any], study: Study, names: dict[str, str]) -> str | None:
    """Which of the study's cases this job was made for, from its inputs."""
    for value in job_inputs_by_socket(job).values():
        if value.get("image"):
            name = names.get(value["image"], "")
            case = name.split(".gcb-")[0]
            if case in study.cases and name.startswith(case + ".gcb-"):
                return case
        elif value.get("value") is not None:
            for case, expected in study.cases.items():
                if expected == value["value"]:
                    return case
    return None


def new_jobs(target: Target, study: Study, before: set[str]) -> list[dict[str, Any]]:
    """The jobs made since ``before`` (pks), once their inputs have attached."""
    pks = {j["pk"] for j in target.jobs(study.algorithm)} - before
    return target.jobs_settled(study.algorithm, pks)


def assert_one_job_per_case(target: Target, study: Study, before: set[str]) -> None:
    """Exactly one new job per case on the server, made from that case's own inputs, and
    the lockfile names it; nothing in doubt."""
    jobs = new_jobs(target, study, before)
    n = len(study.cases)
    assert len(jobs) == n, f"{len(jobs)} new jobs for {n} cases"
    images = {i["image"] for j in jobs for i in j["inputs"] if i.get("image")}
    names = target.image_names(images)
    owner = {j["pk"]: case_of(j, study, names) for j in jobs}
    assert None not in owner.values(), [j for j in jobs if owner[j["pk"]] is None][:3]
    assert sorted(owner.values()) == sorted(study.cases), "a case has two jobs or none"
    lock = load(study.lockfile)
    assert lock is not None and not lock.in_doubt, lock and sorted(lock.in_doubt)
    assert len(lock.cases) == n
    locked = {cid: e.job.pk for cid, e in lock.cases.items() if e.job is not None}
    assert len(locked) == n and len(set(locked.values())) == n
    for case, pk in locked.items():
        assert owner.get(pk) == case, (case, pk, owner.get(pk))


def mutating(entries: Sequence[Any], *, readiness_probe: bool = False) -> list[Any]:
    """Proxy entries that could have changed something on the server. ``readiness_probe``:
    leave out one job POST the server refused by construction (400, no interface matched:
    plan's and apply's readiness probe, a POST with no inputs; gcbatch.readiness)."""
    found = [e for e in entries if e.method in MUTATING]
    if readiness_probe:
        probes = [e for e in found if e.method == "POST" and e.status == 400
                  and e.path.endswith("/algorithms/jobs/")
                  and b"does not match any of the algorithm" in e.body]
        assert len(probes) <= 1, probes  # one probe, never a burst
        found = [e for e in found if e not in probes]
    return found


def upload_bytes(target: Target, api: httpx.Client, name: str, data: bytes) -> str:
    """``data`` uploaded as ``name`` in one part through the public API (uploads,
    presigned PUT, complete); the upload's API URL."""
    up = api.post("uploads/", json={"filename": name})
    assert up.status_code == 201, up.text
    pk, key = up.json()["pk"], up.json()["s3_upload_id"]
    urls = api.patch(f"uploads/{pk}/{key}/generate-presigned-urls/",
                     json={"part_numbers": [1]})
    assert urls.status_code == 200, urls.text
    with httpx.Client(verify=target.verify, trust_env=False, timeout=60) as storage:
        put = storage.put(urls.json()["presigned_urls"]["1"], content=data)
    assert put.status_code == 200, put.text
    done = api.patch(f"uploads/{pk}/{key}/complete-multipart-upload/",
                     json={"parts": [{"ETag": put.headers["etag"], "PartNumber": 1}]})
    assert done.status_code == 200, done.text
    return str(up.json()["api_url"])
