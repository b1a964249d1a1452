"""``gcbatch plan`` without a server: + / ~ / = / - / ? / needs server, --json,
--detailed-exitcode, the hash cache, and refusal of a foreign lockfile."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from gcbatch import lockfile as lf
from gcbatch.cli import main
from gcbatch.hashing import FileHasher
from gcbatch.manifest import load_manifest
from gcbatch.operations.plan import plan as plan_study
from gcbatch.operations.study import ConnectionOptions, open_study
from gcbatch.plan import ActionKind
from gcbatch.sources import expand
from gcbatch.targeting import Targeting

SERVER = "https://grand-challenge.org/api/v1/"


def write(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    past = time.time() - 3600  # out of the hash cache's racy window
    os.utime(path, (past, past))


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("GCBATCH_SERVER", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("GRAND_CHALLENGE_AUTHORIZATION", raising=False)  # no token: offline
    for name in ("p001", "p002", "p003"):
        write(tmp_path / f"scans/{name}.mha", f"image {name}")
    write(tmp_path / "study.yaml", textwrap.dedent("""\
        # yaml-language-server: $schema=../schemas/manifest.schema.json
        version: 1
        algorithm: lung-nodule-detector
        defaults:
          lung-volume: {value: 3.5}
        cases:
          - foreach: {glob: "scans/*.mha"}
            id: "scan-{stem}"
            inputs:
              ct-image: {file: "{path}"}
        """))
    return tmp_path / "study.yaml"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def record_all(study: Path, lock: Path | None = None, server: str = SERVER) -> None:
    """A lockfile in which every current case was submitted (as apply would leave it)."""
    cases = expand(load_manifest(study), hasher=FileHasher()).cases
    lock = lock or lf.lockfile_path_for(study)
    with lf.LockfileStore.open(lock, server=server,
                               algorithm=lf.AlgorithmRef("lung-nodule-detector")) as store:
        for i, case in enumerate(cases):
            store.intent(case.id, case.fingerprint, inputs=case.digests())
            store.submitted(case.id, lf.JobRecord(
                f"job-{i}", f"{server}algorithms/jobs/job-{i}/", "Succeeded",
                "2026-11-27T14:00:00Z", case.fingerprint, case.digests()))


def test_fresh_study_all_submit(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["plan", str(study)], capsys)
    assert code == 0
    assert out.splitlines() == [
        "+ scan-p001  submit (new case)",
        "+ scan-p002  submit (new case)",
        "+ scan-p003  submit (new case)",
        "Plan: 3 to submit.",
    ]
    assert "hashed 3 file(s)" in err
    code, _, _ = run(["plan", str(study), "--detailed-exitcode"], capsys)
    assert code == 3


def test_everything_submitted_is_nothing_to_do(study: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    record_all(study)
    code, out, _ = run(["plan", str(study), "--detailed-exitcode"], capsys)
    assert code == 0
    assert out.splitlines() == [
        "= scan-p001  unchanged (job job-0, Succeeded)",
        "= scan-p002  unchanged (job job-1, Succeeded)",
        "= scan-p003  unchanged (job job-2, Succeeded)",
        "Plan: 3 unchanged. Nothing to do.",
    ]


def test_changed_new_and_removed_cases(study: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    record_all(study)
    write(tmp_path / "scans/p002.mha", "a new image")
    write(tmp_path / "scans/p004.mha", "image p004")
    (tmp_path / "scans/p003.mha").unlink()
    code, out, _ = run(["plan", str(study), "--detailed-exitcode"], capsys)
    assert code == 3
    assert out.splitlines() == [
        "= scan-p001  unchanged (job job-0, Succeeded)",
        "~ scan-p002  resubmit (inputs changed: ct-image)",
        "- scan-p003  orphan (in the lockfile, no longer in the manifest)",
        "+ scan-p004  submit (new case)",
        "Plan: 1 to submit, 1 to resubmit, 1 unchanged, 1 orphaned.",
    ]


def test_changed_default_value_names_its_socket(study: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    record_all(study)
    study.write_text(study.read_text().replace("3.5", "3.6"))
    _, out, _ = run(["plan", str(study), "--json"], capsys)
    data = json.loads(out)
    assert {a["action"] for a in data["actions"]} == {"resubmit"}
    assert {tuple(a["changed"]) for a in data["actions"]} == {("lung-volume",)}


def test_in_doubt_case(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record_all(study)
    result = plan_study(open_study(study, ConnectionOptions()), targeting=Targeting())
    # every case is locked as it is
    assert {a.kind for a in result.plan.actions} == {ActionKind.UNCHANGED}
    case_id = result.plan.actions[0].case_id
    store = lf.LockfileStore.open(lf.lockfile_path_for(study), server=SERVER,
                                  algorithm=lf.AlgorithmRef("lung-nodule-detector"))
    store.intent(case_id, "sha256:other", inputs={})
    store._oslock.release()  # "crash": the journal holds an intent with no outcome
    code, out, _ = run(["plan", str(study), "--detailed-exitcode"], capsys)
    assert code == 3
    assert out.splitlines()[0].startswith("? scan-p001  in doubt (a submission started ")


def test_archive_generator_needs_server(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study.write_text(study.read_text() + textwrap.indent(textwrap.dedent("""\
        - foreach: {archive: lung-archive}
          id: "item-{item.pk}"
          inputs:
            ct-image: {archive_item: "{item.pk}"}
        """), "  "))
    record_all(study)
    code, out, _ = run(["plan", str(study), "--detailed-exitcode"], capsys)
    assert code == 3
    assert out.splitlines()[-2:] == [
        "… cases[1]   needs server (one case per item of archive 'lung-archive', as "
        "item-{item.pk}; plan with a server to see them)",
        "Plan: 1 needing the server, 3 unchanged.",
    ]


def test_json_output(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["plan", str(study), "--json"], capsys)
    data = json.loads(out)
    assert code == 0
    assert data["algorithm"] == "lung-nodule-detector" and data["has_changes"] is True
    assert data["summary"]["submit"] == 3
    assert data["lockfile"] == str(study.with_name("study.lock"))
    assert data["actions"][0]["case"] == "scan-p001"
    assert data["actions"][0]["fingerprint"].startswith("sha256:")


def test_warm_hash_cache_reads_no_file(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["plan", str(study), "--json"], capsys)
    _, out, _ = run(["plan", str(study), "--json"], capsys)
    assert json.loads(out)["hashing"] == {"hits": 3, "misses": 0, "files_read": 0,
                                          "bytes_read": 0}


def test_foreign_lockfiles_are_refused(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record_all(study, server="https://other.example.org/api/v1/")
    code, out, err = run(["plan", str(study)], capsys)
    assert code == 2 and out == ""
    assert f"{study.with_name('study.lock')} belongs to server https://other.example.org" in err
    assert "Traceback" not in err
    study.with_name("study.lock").write_text('{"format_version": 7}\n')
    code, _, err = run(["plan", str(study)], capsys)
    assert code == 2 and "format_version is 7" in err and "study.lock" in err


def test_server_flag_selects_the_lockfile_server(study: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    record_all(study, server="https://other.example.org/api/v1/")
    code, out, _ = run(["plan", str(study), "--offline",
                        "--server", "https://other.example.org/api/v1/"], capsys)
    assert code == 0 and "unchanged" in out


def test_sandbox_uses_its_own_lockfile(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record_all(study)  # the real lockfile says everything was submitted
    code, out, _ = run(["plan", str(study), "--offline", "--sandbox", "--json"], capsys)
    data = json.loads(out)
    assert code == 0
    assert data["lockfile"].endswith("study.sandbox.lock")
    assert data["summary"]["submit"] == 3


def test_case_selection(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["plan", str(study), "--case", "scan-p002"], capsys)
    assert out.splitlines()[0] == "+ scan-p002  submit (new case)" and "1 to submit" in out
    code, _, err = run(["plan", str(study), "--case", "nope"], capsys)
    assert code == 2 and "no such case" in err


def test_invalid_manifest_exits_2(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study.write_text(study.read_text().replace("version: 1", "version: 2"))
    code, out, err = run(["plan", str(study)], capsys)
    assert code == 2 and out == "" and "version: must be 1, not 2" in err
