"""Where the sandbox was found to differ from the real application (issue 15), checked on
either server: the same test passes against the sandbox in CI and against the platform.

- a filter given something that is no uuid answers the UUIDField's own message;
- an algorithm's ``average_duration`` is filled once its jobs succeed (plan's estimate);
- job pks are random: the 8-character ids ``plan`` shows differ from case to case;
- the upload actions' own messages for a missing or null list (their serializers
  validate partially: a missing list is the serializer's ``validate()``'s message);
- an uploaded MetaImage without ``ElementSpacing`` has 1 mm voxels (ITK's default);
- ``--sandbox`` runs a manifest for an algorithm the built-in world lacks, after
  ``gcbatch sandbox seed``; the same manifest then runs on the server as it is.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from e2e_cli import run_cli, summary, upload_bytes, value_study, write_scan
from e2e_target import WORLD, Target, new_run_id

from gcbatch.sandbox.lifecycle import make_mha

pytestmark = pytest.mark.slow


def test_filters_given_no_uuid_or_an_unknown_one_answer_as_the_platform(
    target: Target, tmp_path: Path
) -> None:
    unknown = str(uuid.UUID(int=new_run_id()))  # names no image, no job, no archive
    expected = {
        "algorithms/jobs/?input_image=x": {"input_image": ["“x” is not a valid UUID."]},
        "algorithms/jobs/?output_image=x": {"output_image": ["“x” is not a valid UUID."]},
        "algorithms/jobs/?input_image=": {"input_image": ["“” is not a valid UUID."]},
        "algorithms/jobs/?algorithm_image__algorithm=nope": {
            "algorithm_image__algorithm": ["“nope” is not a valid UUID."]},
        f"algorithms/jobs/?input_image={unknown}": {"input_image": [
            f"Select a valid choice. {unknown} is not one of the available choices."]},
        "cases/images/?job_input=x": {"job_input": ["“x” is not a valid UUID."]},
        "cases/images/?job_output=": {"job_output": ["“” is not a valid UUID."]},
        "cases/images/?archive=x": {"archive": ["“x” is not a valid UUID."]},
        f"cases/images/?job_input={unknown}": {"job_input": [
            f"Select a valid choice. {unknown} is not one of the available choices."]},
        f"cases/images/?archive={unknown}": {"archive": [
            f"Select a valid choice. {unknown} is not one of the available choices."]},
    }
    with target.api() as api:
        answers = {query: api.get(query) for query in expected}
    for query, body in expected.items():
        assert (answers[query].status_code, answers[query].json()) == (400, body), query


def test_average_duration_is_filled_once_jobs_succeed_and_plan_estimates_with_it(
    target: Target, tmp_path: Path
) -> None:
    before = target.fresh_algorithm(WORLD.algorithm)["average_duration"]
    if not target.is_live:
        assert before is None  # a fresh sandbox: no job has run
    study = value_study(tmp_path, 3, new_run_id())
    applied = run_cli(target, ["apply", str(study.manifest), "--json"], tmp_path)
    assert applied.returncode == 0, applied.stderr[-3000:]
    waited = run_cli(target, ["wait", str(study.manifest), "--timeout", "20m",
                              "--poll-interval", "2s"], tmp_path)
    assert waited.returncode == 0, waited.stderr[-3000:]
    # the platform updates it in a task after each success: give it a moment
    average: list[object] = [None]

    def filled() -> bool:
        average[0] = target.fresh_algorithm(WORLD.algorithm)["average_duration"]
        return isinstance(average[0], float) and average[0] > 0

    target.wait_until("average_duration to be filled", filled, timeout=120)
    print(f"average_duration {average[0]} s (before: {before})")
    # a new case to plan: the quota line estimates the time with that average
    more = value_study(tmp_path / "more", 20, new_run_id())
    plan = run_cli(target, ["plan", str(more.manifest)], tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "at the algorithm's average duration" in plan.stdout, plan.stdout


def test_plan_shows_job_ids_that_differ_from_case_to_case(target: Target, tmp_path: Path) -> None:
    study = value_study(tmp_path, 6, new_run_id())
    applied = run_cli(target, ["apply", str(study.manifest)], tmp_path)
    assert applied.returncode == 0, applied.stderr[-3000:]
    plan = run_cli(target, ["plan", str(study.manifest)], tmp_path)
    assert plan.returncode == 0, plan.stderr
    shown = re.findall(r"\(job ([0-9a-f]{8})…", plan.stdout)
    assert len(shown) == 6, plan.stdout
    assert len(set(shown)) == 6, plan.stdout  # not one shared time prefix
    locked = json.loads(study.lockfile.read_text())["cases"]
    assert sorted(shown) == sorted(entry["job"]["pk"][:8] for entry in locked.values())


def test_sandbox_flag_runs_a_manifest_for_another_algorithm_after_sandbox_seed(
    target: Target, tmp_path: Path
) -> None:
    """The oracle's algorithm is not in the built-in world: ``--sandbox`` says how to get
    one; after ``gcbatch sandbox seed`` plan and apply work offline; and the very same
    manifest then runs against the server (its own lockfile: ``study.lock``)."""
    run = new_run_id()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "doc.json").write_text(json.dumps({"run": run}))
    for i in range(2):
        write_scan(tmp_path / "scans" / f"s{run}-{i}.mha", i)
    manifest = tmp_path / "study.yaml"
    manifest.write_text(f"""\
version: 1
algorithm: {WORLD.algorithm}
cases:
  - id: value-{run}
    inputs:
      {WORLD.integer}: {{value: {run}}}
  - id: file-{run}
    inputs:
      {WORLD.json_file}: {{file: docs/doc.json}}
  - id: image-float-{run}
    inputs:
      {WORLD.image}: {{file: scans/s{run}-0.mha}}
      {WORLD.float}: {{value: {run}.5}}
  - foreach: {{glob: "scans/*.mha"}}
    id: "scan-{{stem}}"
    inputs:
      {WORLD.image}: {{file: "{{path}}"}}
""")
    n = 5

    def offline(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in target.cli_env().items()
               if k not in ("GCBATCH_SERVER", "GRAND_CHALLENGE_AUTHORIZATION", "SSL_CERT_FILE")}
        return subprocess.run([sys.executable, "-m", "gcbatch", *args, "--sandbox"],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    refused = offline("plan", str(manifest))
    assert refused.returncode == 2
    assert "gcbatch sandbox seed" in refused.stderr
    seeded = run_cli(target, ["sandbox", "seed", str(manifest)], tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    assert (tmp_path / "sandbox-seed.yaml").is_file()
    plan = offline("plan", str(manifest))
    assert plan.returncode == 0, plan.stderr
    assert f"Plan: {n} to submit." in plan.stdout
    applied = offline("apply", str(manifest), "--json")
    assert applied.returncode == 0, applied.stderr
    assert summary(applied)["submitted"] == n
    waited = offline("wait", str(manifest), "--timeout", "60s", "--poll-interval", "1s")
    assert waited.returncode == 0, waited.stderr
    assert (tmp_path / "study.sandbox.lock").is_file()

    # the same manifest, untouched, on the server
    before = target.job_count(WORLD.algorithm)
    real = run_cli(target, ["apply", str(manifest), "--json"], tmp_path)
    assert real.returncode == 0, real.stderr[-3000:]
    assert summary(real)["submitted"] == n
    assert target.job_count(WORLD.algorithm) == before + n
    waited = run_cli(target, ["wait", str(manifest), "--timeout", "20m", "--poll-interval", "2s"],
                     tmp_path)
    assert waited.returncode == 0, waited.stdout + waited.stderr[-3000:]


def test_upload_actions_without_their_list_answer_as_the_platform(
    target: Target, tmp_path: Path
) -> None:
    with target.api() as api:
        up = api.post("uploads/", json={"filename": f"u{new_run_id()}.mha"}).json()
        base = f"uploads/{up['pk']}/{up['s3_upload_id']}/"
        presign, complete = base + "generate-presigned-urls/", base + "complete-multipart-upload/"
        answers = {
            "presign, no list": api.patch(presign, json={"parts": [1]}),
            "presign, null": api.patch(presign, json={"part_numbers": None}),
            "presign, a string": api.patch(presign, json={"part_numbers": "1"}),
            "complete, no list": api.patch(complete, json={}),
            "complete, null": api.patch(complete, json={"parts": None}),
        }
    expected = {
        "presign, no list": {"non_field_errors": ["The `part_numbers` field is required"]},
        "presign, null": {"part_numbers": ["This field may not be null."]},
        "presign, a string": {"part_numbers": ['Expected a list of items but got type "str".']},
        "complete, no list": {"non_field_errors": ["The `parts` field is required"]},
        "complete, null": {"parts": ["This field may not be null."]},
    }
    for what, body in expected.items():
        assert (answers[what].status_code, answers[what].json()) == (400, body), what


def test_an_uploaded_image_without_spacing_has_1_mm_voxels(target: Target, tmp_path: Path) -> None:
    run = new_run_id()
    scans = {f"flat-{run}.mha": make_mha(4, 4, bytes(16)),
             f"cube-{run}.mha": make_mha(4, 4, bytes(32), depth=2),
             f"spaced-{run}.mha": make_mha(4, 4, bytes(32), depth=2, spacing=(0.5, 0.75, 2.5))}
    algorithm = target.algorithm(WORLD.algorithm)
    with target.api() as api:
        for name, data in scans.items():
            made = api.post("algorithms/jobs/", json={
                "algorithm": algorithm["api_url"],
                "inputs": [{"interface": WORLD.image,
                            "user_uploads": [upload_bytes(target, api, name, data)]}]})
            assert made.status_code == 201, made.text
        images: dict[str, dict[str, object]] = {}

        def imported() -> bool:
            for name in scans:
                found = api.get("cases/images/", params={"name": name}).json()["results"]
                if found:
                    images[name] = found[0]
            return len(images) == len(scans)

        target.wait_until("the images to be imported", imported)
    voxels = {name.split("-")[0]: tuple(img[f"voxel_{axis}_mm"]
                                        for axis in ("width", "height", "depth"))
              for name, img in images.items()}
    assert voxels == {"flat": (1.0, 1.0, None), "cube": (1.0, 1.0, 1.0),
                      "spaced": (0.5, 0.75, 2.5)}
