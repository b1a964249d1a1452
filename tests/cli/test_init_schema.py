"""``gcbatch init`` and ``gcbatch schema`` against the sandbox (issue 18's must-shows): init
writes a manifest that validate accepts after one path is filled in, schema writes a schema
under which a mistyped socket is an error; neither overwrites anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from gcbatch.cli import main
from gcbatch.sandbox import RunningSandbox

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "gcbatch" / "sandbox" / "seeds" / "images"
SCHEMA = "lung-nodule-detector.manifest.schema.json"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GCBATCH_SERVER", raising=False)
    return tmp_path


def test_init_then_fill_one_path_then_validate(here: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["init", "--sandbox", "--algorithm", "lung-nodule-detector"], capsys)
    assert code == 0
    text = (here / "study.yaml").read_text(encoding="utf-8")
    assert text.startswith(f"# yaml-language-server: $schema={SCHEMA}\n")
    assert (here / SCHEMA).is_file()
    # the output says what to fill in, where, and what comes next
    assert "study.yaml:17  ct-image" in out and "gcbatch plan study.yaml --sandbox" in out
    assert "FILL-IN" in text.splitlines()[16]

    code, out, _ = run(["validate", "study.yaml"], capsys)
    assert code == 2 and "FILL-IN/*.mha: the glob matches nothing" in out

    shutil.copytree(IMAGES, here / "scans")
    (here / "study.yaml").write_text(text.replace('"FILL-IN/*.mha"', '"scans/*.mha"'),
                                     encoding="utf-8")
    code, _, err = run(["validate", "study.yaml"], capsys)
    assert code == 0 and "study.yaml: ok (3 cases)" in err
    # and the manifest meets its own schema
    document = yaml.safe_load((here / "study.yaml").read_text(encoding="utf-8"))
    schema = json.loads((here / SCHEMA).read_text(encoding="utf-8"))
    jsonschema.validate(document, schema)


def test_init_refuses_to_overwrite(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "study.yaml").write_text("mine\n", encoding="utf-8")
    code, _, err = run(["init", "--sandbox", "--algorithm", "lung-nodule-detector"], capsys)
    assert code == 2 and "study.yaml already exists; init never overwrites" in err
    assert (here / "study.yaml").read_text(encoding="utf-8") == "mine\n"
    assert not (here / SCHEMA).exists()
    assert not (here / ".gcbatch").exists()  # refused before anything was asked


def test_init_refuses_a_different_schema_and_writes_nothing(
        here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / SCHEMA).write_text("{}\n", encoding="utf-8")
    code, _, err = run(["init", "--sandbox", "--algorithm", "lung-nodule-detector",
                        "lung.yaml"], capsys)
    assert code == 2 and "exists with other contents" in err and "gcbatch schema" in err
    assert not (here / "lung.yaml").exists()
    assert (here / SCHEMA).read_text(encoding="utf-8") == "{}\n"


def test_a_second_study_shares_the_same_schema(here: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["init", "--sandbox", "--algorithm", "lung-nodule-detector"], capsys)[0] == 0
    code, out, _ = run(["init", "--sandbox", "--algorithm", "lung-nodule-detector",
                        "second.yaml"], capsys)
    assert code == 0 and f"kept {SCHEMA}" in out


def test_init_into_a_new_folder_and_json(here: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["init", "--sandbox", "--algorithm", "risk-calculator", "--json",
                        "studies/risk.yaml"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["manifest"] == str(Path("studies/risk.yaml"))
    assert data["fill_in"] == [
        {"line": data["fill_in"][0]["line"], "socket": "age",
         "what": "a value: an integer"},
        {"line": data["fill_in"][1]["line"], "socket": "lung-volume",
         "what": "a value: a number"}]
    assert (here / "studies" / "risk-calculator.manifest.schema.json").is_file()
    assert (here / "studies" / ".gcbatch").is_dir()  # the sandbox's state beside it


def test_an_unknown_algorithm_is_exit_2_with_a_suggestion(
        here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["init", "--sandbox", "--algorithm", "lung-nodule-detektor"], capsys)
    assert code == 2
    assert "algorithm 'lung-nodule-detektor' not found" in err
    assert "did you mean 'lung-nodule-detector'?" in err
    assert not (here / "study.yaml").exists()


def test_init_wants_a_yaml_path(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["init", "--sandbox", "--algorithm", "x", "study.txt"], capsys)
    assert code == 2 and "a manifest is a .yaml file" in err


def test_schema_makes_a_mistyped_socket_an_error(here: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["schema", "--sandbox", "--algorithm", "lung-nodule-detector"], capsys)
    assert code == 0 and f"# yaml-language-server: $schema={SCHEMA}" in out
    assert "check-jsonschema --schemafile" in out
    schema = json.loads((here / SCHEMA).read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    good = {"version": 1, "algorithm": "lung-nodule-detector",
            "cases": [{"id": "p1", "inputs": {"ct-image": {"file": "scans/p1.mha"}}}]}
    jsonschema.validate(good, schema)
    bad = {**good, "cases": [{"id": "p1", "inputs": {"ct-imgae": {"file": "scans/p1.mha"}}}]}
    with pytest.raises(jsonschema.ValidationError, match="'ct-imgae' was unexpected"):
        jsonschema.validate(bad, schema)
    # the same document under the general schema is fine: only the refinement knows
    general = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text("utf-8"))
    jsonschema.validate(bad, general)


def test_schema_refreshes_its_own_file_but_nothing_else(
        here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["schema", "--sandbox", "--algorithm", "risk-calculator", "--out", "risk.json"]
    assert run(args, capsys)[0] == 0
    made = (here / "risk.json").read_bytes()
    code, out, _ = run(args, capsys)
    assert code == 0 and "kept (unchanged)" in out
    (here / "risk.json").write_text(made.decode().replace("risk-calculator", "old"),
                                    encoding="utf-8")
    assert run(args, capsys)[0] == 0 and (here / "risk.json").read_bytes() == made
    (here / "study.yaml").write_text("version: 1\n", encoding="utf-8")
    code, _, err = run([*args[:-1], "study.yaml"], capsys)
    assert code == 2 and "is not a schema gcbatch made" in err
    assert (here / "study.yaml").read_text(encoding="utf-8") == "version: 1\n"


def test_schema_to_stdout(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["schema", "--sandbox", "--algorithm", "risk-calculator",
                        "--out", "-"], capsys)
    assert code == 0
    assert json.loads(out)["allOf"][-1]["properties"]["algorithm"]["const"] == \
        "risk-calculator"
    assert [p.name for p in here.iterdir()] == [".gcbatch"]


@pytest.mark.slow
def test_init_against_a_server_over_http(here: Path, capsys: pytest.CaptureFixture[str],
                                         sandbox_server: RunningSandbox,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A real server (a sandbox on loopback): the token is used, the server is written
    into the manifest, and an anonymous user does not see a private algorithm."""
    monkeypatch.delenv("GRAND_CHALLENGE_AUTHORIZATION", raising=False)
    token = here / "token"
    token.write_text(sandbox_server.token(), encoding="utf-8")
    code, out, err = run(["init", "--server", sandbox_server.api_url, "--token-file",
                          str(token), "--algorithm", "risk-calculator", "risk.yaml"], capsys)
    assert code == 0, err
    document = yaml.safe_load((here / "risk.yaml").read_text(encoding="utf-8"))
    assert document["server"] == sandbox_server.api_url
    assert "--sandbox" not in out and "--server" not in out  # the manifest names it
    code, _, err = run(["schema", "--server", sandbox_server.api_url,
                        "--algorithm", "risk-calculator", "--out", "-"], capsys)
    # the sandbox's algorithms are for signed-in users only, as private ones are
    assert code == 2 and "no token: only public algorithms are visible" in err


def test_a_failed_schema_write_leaves_no_manifest(here: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from gcbatch.operations import schema as schema_module

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(schema_module, "atomic_write_bytes", refuse)
    code, _, err = run(["init", "--sandbox", "--algorithm", "lung-nodule-detector"], capsys)
    assert code == 2 and f"cannot write {SCHEMA}: Permission denied" in err
    assert "Traceback" not in err
    assert not (here / "study.yaml").exists()


def test_an_unwritable_folder_is_a_message(here: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (here / "taken").write_text("a file where the folder would go", encoding="utf-8")
    code, _, err = run(["init", "--sandbox", "--algorithm", "lung-nodule-detector",
                        "taken/study.yaml"], capsys)
    assert code == 2 and "taken" in err and "Traceback" not in err


def test_a_device_under_the_schemas_name_is_never_read(
        here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cloned study folder may hold anything under the schema's name."""
    (here / SCHEMA).symlink_to("/dev/zero")
    code, _, err = run(["init", "--sandbox", "--algorithm", "lung-nodule-detector"], capsys)
    assert code == 2 and "exists with other contents" in err
    code, _, err = run(["schema", "--sandbox", "--algorithm", "lung-nodule-detector"], capsys)
    assert code == 2 and "is not a schema gcbatch made" in err
