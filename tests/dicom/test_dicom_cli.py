"""Issue 16's must-shows, on the real CLI against a sandbox process over loopback.

Every verdict is read on the server: jobs per algorithm and the images they took, the
request log (job POSTs, uploads), and the sandbox's patient-data check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from dicom_series import PATIENT

from gcbatch.lockfile import load
from gcbatch.sandbox import SandboxProcess
from gcbatch.sandbox.lifecycle import make_mha

pytestmark = pytest.mark.slow
pytest.importorskip("grand_challenge_dicom_de_identifier")

TOKEN = "demo-token"
SETTINGS = {"validating_seconds": 0.2, "queued_seconds": 0.1, "provisioned_seconds": 0.0,
            "executing_seconds": 0.2, "executed_seconds": 0.0, "max_active_jobs": 1000,
            "credits_per_month": 1_000_000, "dicom_import_seconds": 2.0}
JOBS = "/api/v1/algorithms/jobs/"


def run_cli(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GCBATCH_SERVER"}
    env["NO_COLOR"] = "1"
    env["GRAND_CHALLENGE_AUTHORIZATION"] = TOKEN
    return subprocess.run([sys.executable, "-m", "gcbatch", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def jobs_of(sb: SandboxProcess, algorithm: str) -> list[dict[str, Any]]:
    """The algorithm's jobs once none is still validating (an import included)."""
    deadline = time.monotonic() + 60
    with sb.client("demo") as http:
        alg = http.get("algorithms/", params={"slug": algorithm}).json()["results"][0]
        while True:
            jobs: list[dict[str, Any]] = http.get("algorithms/jobs/", params={
                "algorithm_image__algorithm": alg["pk"], "limit": 1000}).json()["results"]
            if all(j["status"] != "Validating inputs" for j in jobs) \
                    or time.monotonic() > deadline:
                return jobs
            time.sleep(0.3)


def images(sb: SandboxProcess) -> dict[str, dict[str, Any]]:
    with sb.client("demo") as http:
        page = http.get("cases/images/", params={"limit": 1000}).json()
        return {img["api_url"]: img for img in page["results"]}


def requests(sb: SandboxProcess, method: str, path: str) -> list[dict[str, Any]]:
    return [r for r in sb.admin.requests(0)["requests"]
            if r["method"] == method and r["path"] == path]


def patient_data(sb: SandboxProcess) -> list[dict[str, Any]]:
    with sb.client(None) as http:
        uploads: list[dict[str, Any]] = http.get(
            sb.api_url.split("/api/v1/")[0] + "/_sandbox/patient-data/").json()["uploads"]
        return uploads


def write_manifest(path: Path, algorithm: str, cases: dict[str, str]) -> Path:
    lines = ["version: 1", f"algorithm: {algorithm}", "cases:"]
    for case_id, inputs in cases.items():
        lines += [f"  - id: {case_id}", "    inputs:", f"      {inputs}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dicom_cases_end_with_one_job_each_when_every_job_post_answer_is_lost(
    sandbox_process: Callable[..., SandboxProcess], write_series: Callable[..., list[Path]],
    tmp_path: Path,
) -> None:
    sb = sandbox_process(settings=SETTINGS)
    # image jobs of another study already on the server: a DICOM series sent as it is
    # (its image named <StudyInstanceUID>-0 like ours) and an .mha
    other = tmp_path / "other"
    write_series(other / "x", study="other", series="x1", slices=3)
    (other / "m.mha").write_bytes(make_mha(4, 4, bytes(32), depth=2))
    foreign = write_manifest(other / "study.yaml", "lung-nodule-detector", {
        "x": "ct-image: {files: x/*.dcm, deidentify: false}",
        "m": "ct-image: {file: m.mha}"})
    assert run_cli(["apply", str(foreign), "--server", sb.api_url], other).returncode == 0
    # ours: one series, one single-file DICOM, one series sent as it is, one image set
    ours = tmp_path / "ours"
    write_series(ours / "series", study="ours", series="s1", slices=4)
    write_series(ours / "single", study="single", series="o1", slices=1)
    write_series(ours / "raw", study="raw", series="r1", slices=2)
    write_series(ours / "set", study="set", series="d1", slices=3)
    on_images = write_manifest(ours / "images.yaml", "lung-nodule-detector", {
        "series": "ct-image: {files: series/*.dcm}",
        "single": "ct-image: {file: single/slice0.dcm}",
        "raw": "ct-image: {files: raw/*.dcm, deidentify: false}"})
    on_set = write_manifest(ours / "set.yaml", "dicom-set-reader", {
        "set": 'ct-image-set: {files: set/*.dcm, image_name: "{id}"}'})
    # every job POST's answer is lost (the job is made): the first run must find each
    sb.admin.set_faults(["POST algorithms/jobs/:drop_after_commit:1"])
    posts_before = len(requests(sb, "POST", JOBS))
    said = ""
    for manifest in (on_images, on_set):
        first = run_cli(["apply", str(manifest), "--server", sb.api_url,
                         "--answer-window", "8"], ours)
        assert first.returncode == 0, first.stdout + first.stderr[-3000:]
        said += first.stderr
    assert "case raw, socket ct-image: DICOM sent as it is" in said  # warned, and only raw
    assert said.count("patient data leaves this machine") == 1
    # each answer was lost (the made jobs: 201; the readiness probe before each apply's
    # first upload, a POST with no inputs, is refused by construction)
    made = [r for r in requests(sb, "POST", JOBS)[posts_before:] if r["status"] == 201]
    assert len(made) == 4
    sb.admin.set_faults([])
    for manifest in (on_images, on_set):
        again = run_cli(["apply", str(manifest), "--server", sb.api_url], ours)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "0 submitted" in again.stdout or "unchanged" in again.stdout
    detector = jobs_of(sb, "lung-nodule-detector")
    reader = jobs_of(sb, "dicom-set-reader")
    assert len(detector) == 2 + 3 and len(reader) == 1  # the other study's two + ours
    locked = {**load(on_images.with_suffix(".lock")).cases,  # type: ignore[union-attr]
              **load(on_set.with_suffix(".lock")).cases}  # type: ignore[union-attr]
    ours_pks = {cid: e.job.pk for cid, e in locked.items() if e.job is not None}
    assert sorted(ours_pks) == ["raw", "series", "set", "single"]
    by_pk = {j["pk"]: j for j in detector + reader}
    assert set(ours_pks.values()) <= set(by_pk)
    shown = images(sb)
    taken = {cid: shown[by_pk[pk]["inputs"][0]["image"]] for cid, pk in ours_pks.items()}
    # the image set is named after image_name + our handle; the series after their study
    assert taken["set"]["name"].startswith("set.gcb-")
    assert taken["series"]["name"].endswith("-0") and taken["series"]["patient_id"] != \
        PATIENT["PatientID"]
    assert taken["raw"]["patient_id"] == PATIENT["PatientID"]  # sent as it is, on purpose
    assert all(j["status"] == "Succeeded" for j in by_pk.values() if j["pk"] in
               ours_pks.values())
    # the de-identified copies are gone once their jobs exist (found after lost answers)
    copies = ours / ".gcbatch" / "tmp" / "dicom"
    assert copies.is_dir() and not list(copies.rglob("*.dcm"))


def test_an_image_set_without_image_name_or_with_two_series_creates_no_upload(
    sandbox_process: Callable[..., SandboxProcess], write_series: Callable[..., list[Path]],
    tmp_path: Path,
) -> None:
    sb = sandbox_process(settings=SETTINGS)
    write_series(tmp_path / "a", study="a", series="a1", slices=2)
    write_series(tmp_path / "b", study="b", series="b1", slices=2)
    nameless = write_manifest(tmp_path / "nameless.yaml", "dicom-set-reader", {
        "p1": "ct-image-set: {files: a/*.dcm}"})
    two = write_manifest(tmp_path / "two.yaml", "dicom-set-reader", {
        "p1": 'ct-image-set: {files: ["a/*.dcm", "b/*.dcm"], image_name: "{id}"}'})
    misplaced = write_manifest(tmp_path / "misplaced.yaml", "lung-nodule-detector", {
        "p1": 'ct-image: {files: a/*.dcm, image_name: "{id}"}'})
    for manifest, says in ((nameless, "needs image_name"), (two, "2 series"),
                           (misplaced, "image_name is only for a DICOM Image Set")):
        result = run_cli(["apply", str(manifest), "--server", sb.api_url], tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        assert says in result.stderr, result.stderr
    # plan shows the case blocked, for the same reason
    planned = run_cli(["plan", str(two), "--server", sb.api_url], tmp_path)
    assert "blocked" in planned.stdout and "2 series" in planned.stdout, planned.stdout
    assert requests(sb, "POST", "/api/v1/uploads/") == []
    assert requests(sb, "POST", JOBS) == []
    # validate (offline) refuses image_name without file/files and bad placeholders
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nalgorithm: dicom-set-reader\ncases:\n  - id: p1\n"
                   "    inputs:\n      ct-image-set: {value: 1, image_name: '{nope}'}\n")
    result = run_cli(["validate", str(bad)], tmp_path)
    assert result.returncode == 2 and "'image_name' is only used together with 'file' or " \
        "'files'" in result.stdout + result.stderr, result.stdout + result.stderr


def test_the_example_leaves_no_patient_data_on_the_sandbox_and_the_check_can_tell(
    write_series: Callable[..., list[Path]], tmp_path: Path,
) -> None:
    import shutil

    from dicom_series import EXAMPLE

    example = tmp_path / "dicom"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns(".gcbatch", "*.lock*"))
    made = subprocess.run([sys.executable, "make_series.py", "data"], cwd=example,
                          capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr
    assert b"PHI-12345" in (example / "data/single/slice0.dcm").read_bytes()
    for manifest in ("study.yaml", "image-set.yaml"):
        applied = run_cli(["apply", "--sandbox", manifest], example)
        assert applied.returncode == 0, applied.stderr[-3000:]
        waited = run_cli(["wait", "--sandbox", manifest, "--timeout", "2m"], example)
        assert waited.returncode == 0, waited.stderr[-3000:]
    check = [sys.executable, "check_no_patient_data.py", ".gcbatch"]
    clean = subprocess.run(check, cwd=example, capture_output=True, text=True, check=False)
    assert clean.returncode == 0 and "no patient data" in clean.stdout, clean.stdout
    # the same series sent as it is (deidentify: false): the check finds the data, and
    # apply said so before sending
    raw = example / "raw.yaml"
    raw.write_text((example / "study.yaml").read_text().replace(
        "data/single/slice0.dcm}", "data/single/slice0.dcm, deidentify: false}").replace(
        "id: series-a", "id: series-a-raw"))
    sent = run_cli(["apply", "--sandbox", str(raw)], example)
    assert sent.returncode == 0, sent.stderr[-3000:]
    assert "patient data leaves this machine" in sent.stderr
    assert "PatientName, PatientID, PatientBirthDate" in sent.stderr
    leaked = subprocess.run(check, cwd=example, capture_output=True, text=True, check=False)
    assert leaked.returncode == 1 and "PHI-12345" in leaked.stdout, leaked.stdout
