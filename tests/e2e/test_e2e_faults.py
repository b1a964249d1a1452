"""A bad day on the network and on the server, against either server.

Lost answers come from the suite's own proxy (the server commits the job, the client
never hears of it), so they run on a live server too. The sandbox can also be told to
fail on its own (502/503/429, lost answers inside the server); a live server cannot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_cli import answer_window, assert_one_job_per_case, image_study, run_cli, summary
from e2e_target import WORLD, Target, new_run_id

from gcbatch.lockfile import load

pytestmark = pytest.mark.slow


def test_lost_job_post_answers_are_reconciled_one_job_per_case(
    target: Target, tmp_path: Path
) -> None:
    """30% of the job POSTs are answered by the server and lost on the way back."""
    n = 100 if not target.is_live else 35
    target.tune(max_active_jobs=1000)
    study = image_study(tmp_path, n, new_run_id())
    before = {j["pk"] for j in target.jobs(study.algorithm)}
    # a lost job's image appears when the server has validated the job's uploads: the
    # sandbox does so within a second, a real server's workers when they get to it
    # (minutes behind a queue of earlier tests' jobs)
    wait = "60" if not target.is_live else "900"
    args = ["apply", str(study.manifest), "--reconcile-wait", wait, "--json"]
    if not target.is_live:
        args += ["--max-active", "1000"]
    with target.proxy(tmp_path / "proxy") as proxy:
        proxy.drop_answers("POST", "/api/v1/algorithms/jobs/", rate=0.3, seed=7)
        result = run_cli(target, args, tmp_path, proxy=proxy)
        lost = [e for e in proxy.dropped() if e.path == "/api/v1/algorithms/jobs/"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary(result)["submitted"] == n
    committed = [e for e in lost if e.status == 201]
    print(f"{n} cases: {len(lost)} job POST answers lost, {len(committed)} of them had "
          "made a job")
    assert len(committed) >= n // 10
    # every lost job was found again and is the one the lockfile names
    lost_pks = {json.loads(e.body)["pk"] for e in committed}
    assert_one_job_per_case(target, study, before)
    lock = load(study.lockfile)
    assert lock is not None
    assert lost_pks <= {e.job.pk for e in lock.cases.values() if e.job}


def _file_study(folder: Path, case: str, content: str) -> Path:
    """One case sending a JSON file to the oracle's File socket (interface [json file])."""
    folder.mkdir(parents=True)
    (folder / f"{case}.json").write_text(content)
    manifest = folder / "study.yaml"
    manifest.write_text(f"version: 1\nalgorithm: {WORLD.algorithm}\ncases:\n"
                        f"  - id: {case}\n    inputs:\n"
                        f"      {WORLD.json_file}: {{file: {case}.json}}\n")
    return manifest


def test_a_file_case_whose_answer_was_lost_is_found_by_its_stored_file_name(
    target: Target, tmp_path: Path
) -> None:
    """The platform stores a File value under its upload's name (``<case>.gcb-<hash>``):
    a File case whose job POST answer was lost is adopted by that name, although another
    study's job holds a file with the very same content on the same socket."""
    run = new_run_id()
    content = json.dumps({"run": run, "note": "the same bytes in both studies"})
    other = _file_study(tmp_path / "other", f"other-{run}", content)
    first = run_cli(target, ["apply", str(other)], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    ours = _file_study(tmp_path / "ours", f"ours-{run}", content)
    wait = "60" if not target.is_live else "900"  # a file attaches when it is validated
    with target.proxy(tmp_path / "proxy") as proxy:
        # two: the readiness probe before the upload (a job POST refused by construction)
        # and our one job POST
        proxy.drop_answers("POST", "/api/v1/algorithms/jobs/", times=2)
        result = run_cli(target, ["apply", str(ours), "--json", "--reconcile-wait", wait,
                                  *answer_window(target)], tmp_path, proxy=proxy)
        lost = [e for e in proxy.dropped() if e.status == 201]
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(lost) == 1, lost  # our one job POST: made, its answer lost
    made = json.loads(lost[0].body)["pk"]
    lock = load(ours.with_suffix(".lock"))
    assert lock is not None and not lock.in_doubt
    entry = lock.cases[f"ours-{run}"]
    assert entry.job is not None and entry.job.pk == made  # adopted, not sent again
    (job,) = target.jobs_settled(WORLD.algorithm, {made})
    (stored,) = [i["file"] for i in job["inputs"] if i.get("file")]
    assert stored.rsplit("/", 1)[-1].startswith(f"ours-{run}.gcb-"), stored


def test_server_faults_300_cases_300_jobs_and_no_token_anywhere(
    target: Target, tmp_path: Path
) -> None:
    """The sandbox fails on its own: 502/503 on GETs and uploads, lost answers after a
    job was committed, bursts of 429; 300 cases still make 300 jobs."""
    sb = target.needs_sandbox("a client cannot make the server fail on purpose "
                              "(the proxy test above covers lost answers)")
    target.configure(max_active_jobs=1000)
    faults = [
        "POST algorithms/jobs/:drop_after_commit:0.1",
        "GET,PUT,PATCH *:502:0.1",
        "GET,PUT,PATCH *:503:0.1",
        "POST uploads/:502:0.1",
        "POST uploads/:503:0.1",
        "*:429:1:skip=150,times=12,retry_after=0.2",
        "*:429:1:skip=700,times=12,retry_after=0.2",
        "*:429:1:skip=1300,times=12",
    ]
    study = image_study(tmp_path, 300, new_run_id())
    before = {j["pk"] for j in target.jobs(study.algorithm)}
    sb.admin.set_faults(faults, seed=1)
    result = run_cli(target, ["apply", str(study.manifest), "--max-active", "1000",
                              "--reconcile-wait", "30", "--json"], tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary(result)["submitted"] == 300
    fired = {r["spec"]: r["fired"] for r in sb.admin.faults()["rules"]}
    assert fired["POST /api/v1/algorithms/jobs/:drop_after_commit:0.1"] >= 10, fired
    assert sum(n for spec, n in fired.items() if ":50" in spec) >= 100, fired
    assert sum(n for spec, n in fired.items() if ":429:" in spec) == 36, fired
    sb.admin.clear_faults()  # the checks below read the server with a plain client
    assert_one_job_per_case(target, study, before)
    # the token never appears in anything gcbatch wrote (the sandbox's own banner lists
    # its seed's test tokens, so its log is not gcbatch's to check)
    places = {"stdout": result.stdout, "stderr": result.stderr}
    for path in [*tmp_path.glob("study.lock*"), *(tmp_path / ".gcbatch").rglob("*")]:
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    assert str(tmp_path / "study.lock.journal") in places
    for where, text in places.items():
        assert target.token not in text, where
