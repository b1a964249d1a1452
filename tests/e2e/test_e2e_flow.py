"""The whole day of a user, every input kind in one study, against either server:
validate, plan, apply, wait, status, download (results.csv/json), apply again, plan again.

Everything goes through the suite's proxy, which sees every request: the second apply
must send nothing that changes anything.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from e2e_cli import mutating, run_cli, summary, write_scan
from e2e_target import WORLD, Target, new_run_id

from gcbatch.lockfile import load

pytestmark = pytest.mark.slow


def every_kind_study(target: Target, folder: Path, run: int, api_url: str
                     ) -> tuple[Path, list[str]]:
    """One case per kind of input source (and both generators); values unique to the run.
    ``api_url``: the API as gcbatch will see it (an image is named by its URL there)."""
    (folder / "ints").mkdir(parents=True)
    (folder / "ints" / "age.json").write_text(json.dumps(run * 10 + 2))
    (folder / "docs").mkdir()
    (folder / "docs" / "doc.json").write_text(json.dumps({"run": run, "note": "a file socket"}))
    write_scan(folder / "scans" / "one.mha", 1)
    write_scan(folder / "scans" / "two.mha", 2)
    for i in range(2):
        write_scan(folder / "globbed" / f"g{run}-{i}.mha", 10 + i)
    archive = _archive(target)
    with target.api() as api:
        items = api.get("archives/items/", params={"archive": archive["pk"]}).json()["results"]
    assert len(items) == 3
    existing = next(v["image"] for v in items[0]["values"] if v.get("image"))
    image_url = f"{api_url}cases/images/{existing.rstrip('/').rsplit('/', 1)[-1]}/"
    manifest = folder / "study.yaml"
    manifest.write_text(f"""\
version: 1
algorithm: {WORLD.algorithm}
cases:
  - id: value-{run}
    inputs:
      {WORLD.integer}: {{value: {run * 10 + 1}}}
  - id: json-{run}
    inputs:
      {WORLD.integer}: {{json: ints/age.json}}
  - id: file-socket-{run}
    inputs:
      {WORLD.json_file}: {{file: docs/doc.json}}
  - id: mha-{run}
    inputs:
      {WORLD.image}: {{file: scans/one.mha}}
  - id: image-float-{run}
    inputs:
      {WORLD.image}: {{file: scans/two.mha}}
      {WORLD.float}: {{value: {run}.25}}
  - id: existing-image-{run}
    inputs:
      {WORLD.image}: {{image: "{image_url}"}}
      {WORLD.float}: {{value: {run}.5}}
  - foreach: {{archive: {WORLD.archive}}}
    id: "item-{run}-{{item.pk}}"
    inputs:
      {WORLD.image}: {{archive_item: "{{item.pk}}"}}
      {WORLD.float}: {{value: {run}.75}}
  - foreach: {{glob: "globbed/*.mha"}}
    id: "glob-{{stem}}"
    inputs:
      {WORLD.image}: {{file: "{{path}}"}}
""")
    cases = [f"value-{run}", f"json-{run}", f"file-socket-{run}", f"mha-{run}",
             f"image-float-{run}", f"existing-image-{run}",
             *(f"item-{run}-{item['pk']}" for item in items),
             *(f"glob-g{run}-{i}" for i in range(2))]
    return manifest, sorted(cases)


def _archive(target: Target) -> dict[str, Any]:
    with target.api() as api:
        found = api.get("archives/", params={"slug": WORLD.archive}).json()["results"]
    assert len(found) == 1
    return dict(found[0])


def test_every_input_kind_through_apply_wait_status_download_and_again(
    target: Target, tmp_path: Path
) -> None:
    run = new_run_id()
    before = target.job_count(WORLD.algorithm)
    with target.proxy(tmp_path / "proxy") as proxy:
        manifest, cases = every_kind_study(target, tmp_path, run, proxy.api_url)
        n = len(cases)

        def cli(*args: str) -> Any:
            return run_cli(target, list(args), tmp_path, proxy=proxy)

        valid = cli("validate", str(manifest))
        assert valid.returncode == 0, valid.stdout + valid.stderr
        seq = proxy.last_seq()
        plan = cli("plan", str(manifest), "--detailed-exitcode")
        assert plan.returncode == 3, plan.stdout + plan.stderr  # changes to make
        # (plan asks whether the server would run a job now with one POST that can make
        # none: refused by construction, it changes nothing)
        assert mutating(proxy.requests(seq), readiness_probe=True) == []
        assert sum(1 for line in plan.stdout.splitlines() if line.startswith("+ ")) == n

        applied = cli("apply", str(manifest), "--json")
        assert applied.returncode == 0, applied.stderr[-3000:]
        assert summary(applied)["submitted"] == n
        assert target.job_count(WORLD.algorithm) == before + n

        waited = cli("wait", str(manifest), "--timeout", "20m", "--poll-interval", "2s")
        assert waited.returncode == 0, waited.stdout + waited.stderr[-3000:]
        assert waited.stdout.splitlines()[0] == f"{n} cases: {n} Succeeded"

        status = cli("status", str(manifest), "--json")
        assert status.returncode == 0, status.stderr[-3000:]
        listed = {c["case"]: c for c in json.loads(status.stdout)["cases"]}
        assert sorted(listed) == cases
        with target.api() as api:
            for case in listed.values():
                job = api.get(f"algorithms/jobs/{case['job']}/").json()
                assert job["status"] == case["status"] == "Succeeded"

        out = tmp_path / "results"
        downloaded = cli("download", str(manifest), "--out", str(out), "--json")
        assert downloaded.returncode == 0, downloaded.stderr[-3000:]
        assert json.loads(downloaded.stdout)["download"]["values_written"] == n
        rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
        assert [r["case_id"] for r in rows] == cases
        for row in rows:
            assert row["status"] == "Succeeded" and row["job_pk"] == listed[row["case_id"]]["job"]
            # GC's IOCopyExecutor (and the sandbox's copy of it) answer with this value
            result = json.loads(row[f"output:{WORLD.output}"])
            assert result["score"] == 1 and result["acc"] == 0.5, result
            assert (out / row["case_id"] / "results.json").is_file()
        table = json.loads((out / "results.json").read_text())
        assert sorted(r["case_id"] for r in table["cases"]) == cases

        seq = proxy.last_seq()
        again = cli("apply", str(manifest), "--json")
        assert again.returncode == 0, again.stderr[-3000:]
        assert summary(again)["unchanged"] == n and summary(again)["submitted"] == 0
        assert mutating(proxy.requests(seq)) == []
    assert target.job_count(WORLD.algorithm) == before + n
    lock = load(manifest.with_suffix(".lock"))
    assert lock is not None and sorted(lock.cases) == cases and not lock.in_doubt
