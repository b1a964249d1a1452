"""``gcbatch validate``: the broken-manifest corpus (one mistake each, exact line and
message, exit 2, no traceback), JSON output, the examples, and the pre-commit mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gcbatch.cli import main

ROOT = Path(__file__).resolve().parents[2]
BROKEN = ROOT / "tests" / "manifests" / "broken"

# file → its one finding, "line:col: message" (reviewed by hand; see the files)
CORPUS = [
    ('01-python-tag.yaml',
     '2:12: algorithm: unsafe YAML tag !!python/object/apply:os.system is not allowed'),
    ('02-custom-tag.yaml',
     '6:17: cases[0].inputs.ct-image: YAML tag !include is not allowed (plain YAML only)'),
    ('03-unclosed-bracket.yaml',
     "7:1: invalid YAML: expected ',' or '}', but got '<stream end>' (while parsing a flow mapping at line 6)"),
    ('04-tab-indent.yaml',
     "4:1: invalid YAML: found character '\\t' that cannot start any token"),
    ('05-missing-algorithm.yaml',
     "1:1: missing required key 'algorithm'"),
    ('06-wrong-version.yaml',
     '1:10: version: must be 1, not 2'),
    ('07-misspelt-top-key.yaml',
     "3:1: unknown key 'servr' (did you mean 'server'?)"),
    ('08-algorithm-not-slug.yaml',
     "2:12: algorithm: 'Lung Nodule Detector': an algorithm slug has only letters, digits, '-' and '_'"),
    ('09-algorithm-number.yaml',
     '2:12: algorithm: expected a string, got a number'),
    ('10-cases-empty.yaml',
     '3:8: cases: must not be empty'),
    ('11-cases-not-a-list.yaml',
     '4:3: cases: expected a list, got a mapping'),
    ('12-duplicate-case-id.yaml',
     "7:9: cases[1].id: duplicate case id 'p1' (first at line 4)"),
    ('13-case-id-with-space.yaml',
     "4:9: cases[0].id: 'patient 001': a case id has 1-128 letters, digits, '.', '_' or '-' and starts with a letter or digit"),
    ('14-case-without-id.yaml',
     "4:5: cases[0]: missing required key 'id'"),
    ('15-two-sources-one-mapping.yaml',
     '6:18: cases[0].inputs.ct-image: give only one of value, json, file, files, archive_item, image (got value and file)'),
    ('16-no-source.yaml',
     '6:17: cases[0].inputs.ct-image: no source given; give one of value, json, file, files, archive_item, image'),
    ('17-socket-given-twice.yaml',
     "8:7: cases[0].inputs: duplicate key 'ct-image' (first at line 6)"),
    ('18-misspelt-source-key.yaml',
     "6:18: cases[0].inputs.ct-image: unknown key 'flie' (did you mean 'file'?)"),
    ('19-socket-without-archive-item.yaml',
     "6:39: cases[0].inputs.ct-image: 'socket' is only used together with 'archive_item'"),
    ('20-unknown-placeholder.yaml',
     '7:24: cases[0].inputs.ct-image: unknown placeholder {pth} (did you mean {path}?)'),
    ('21-placeholder-in-explicit-case.yaml',
     '6:24: cases[0].inputs.ct-image: placeholder {stem} cannot be used in an explicit case; placeholders work in foreach cases only (write {{ and }} for literal braces)'),
    ('22-generator-id-without-placeholder.yaml',
     "5:9: cases[0].id: a foreach case's id needs a placeholder such as {stem}, or every generated case gets the same id"),
    ('23-archive-placeholder-in-glob-generator.yaml',
     '5:9: cases[0].id: placeholder {item.pk} belongs to the other kind of foreach; this one is over a glob (available: {path}, {name}, {stem}, {ext}, {parent}, {dir})'),
    ('24-unmatched-brace.yaml',
     "5:9: cases[0].id: unmatched '{' (write {{ for a literal brace)"),
    ('25-foreach-glob-matches-nothing.yaml',
     '4:21: cases[0].foreach.glob: scans/*.mha: the glob matches nothing'),
    ('26-files-glob-matches-nothing.yaml',
     '6:25: cases[0].inputs.ct-image: data/p001/*.dcm: the glob matches nothing'),
    ('27-file-missing.yaml',
     '6:24: cases[0].inputs.ct-image: data/missing.mha: no such file'),
    ('28-json-file-missing.yaml',
     '7:29: cases[0].inputs.clinical-info: data/missing.json: no such file'),
    ('29-json-file-invalid.yaml',
     '7:29: cases[0].inputs.clinical-info: data/bad.json: not valid JSON (line 1, column 12: Expecting value)'),
    ('30-file-matches-several.yaml',
     '6:24: cases[0].inputs.ct-image: data/*.mha: matches 2 files; `file` takes exactly one (use `files` for several)'),
    ('31-case-without-inputs.yaml',
     '4:5: cases[0]: this case has no inputs (give `inputs`, or `defaults` for every case)'),
    ('32-generated-ids-collide.yaml',
     "5:9: cases[0].id: case id 'scan-scan' (cases[0]: data/dupes/scan.nii) is already used by cases[0]: data/dupes/scan.mha (line 4)"),
    ('33-generated-id-invalid.yaml',
     "5:9: cases[0].id: 'a b' made from data/odd/a b.mha is not a valid case id (1-128 letters, digits, '.', '_' or '-', starting with a letter or digit)"),
    ('34-nan-value.yaml',
     '7:28: cases[0].inputs.lung-volume.value: .nan is not a JSON number'),
    ('35-key-read-as-boolean.yaml',
     "7:7: cases[0].inputs: key 'on' is read as a boolean; put it in quotes"),
    ('36-two-documents.yaml',
     '7:1: invalid YAML: a manifest is one YAML document, but another one starts here'),
    ('37-empty-file.yaml',
     '1:1: the manifest is empty'),
    ('38-not-a-mapping.yaml',
     '1:1: a manifest is a mapping (version, algorithm, cases, ...), not a list'),
    ('39-foreach-glob-and-archive.yaml',
     '4:35: cases[0].foreach: give only one of glob, archive (got glob and archive)'),
    ('40-image-not-a-url.yaml',
     "6:25: cases[0].inputs.ct-image.image: 'cases/images/1234/': an image is its API URL, https://.../api/v1/cases/images/<pk>/"),
    ('41-json-file-socket-not-json.yaml',
     '7:26: cases[0].inputs.lab-report: data/not-json.json: a .json file that is not valid JSON (Expecting value: line 1 column 1 (char 0))'),
    ('42-placeholder-in-defaults.yaml',
     '4:23: defaults.lung-volume: placeholder {stem} cannot be used in defaults; placeholders work in foreach cases only (write {{ and }} for literal braces)'),
    ('43-files-empty-list.yaml',
     '6:25: cases[0].inputs.ct-image.files: must not be empty'),
    ('44-server-not-a-url.yaml',
     "3:9: server: 'grand-challenge.org': a server is an http(s) URL such as https://grand-challenge.org/api/v1/"),
    ('45-socket-slug-with-space.yaml',
     "6:7: cases[0].inputs: 'ct image': a socket slug has only letters, digits, '-' and '_'"),
    ('46-billion-laughs.yaml',
     '1:1: YAML aliases expand to more than 50000 nodes (a "billion laughs"?); refusing to read further'),
    ('47-duplicate-top-key.yaml',
     "3:1: duplicate key 'algorithm' (first at line 2)"),
    ('48-value-of-wrong-shape-files.yaml',
     '6:25: cases[0].inputs.ct-image.files: expected a string or a list, got a mapping'),
    ('49-foreach-unknown-key.yaml',
     "6:5: cases[0]: unknown key 'input' (did you mean 'inputs'?)"),
    ('50-not-utf8.yaml',
     '3:6: not UTF-8 text (save the manifest as UTF-8)'),]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


def test_corpus_is_big_and_complete() -> None:
    files = sorted(p.name for p in BROKEN.glob("*.yaml"))
    assert len(files) >= 30
    assert files == sorted(name for name, _ in CORPUS)


@pytest.mark.parametrize(("name", "expected"), CORPUS, ids=[n for n, _ in CORPUS])
def test_broken_manifest(name: str, expected: str, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)
    code, out, err = run(["validate", name], capsys)
    assert code == 2
    assert out.splitlines() == [f"{name}:{expected}"]
    assert "Traceback" not in out + err
    assert err.strip() == "1 problem in 1 of 1 manifest"


@pytest.mark.parametrize("name", ["01-python-tag.yaml", "12-duplicate-case-id.yaml"])
def test_broken_manifest_json(name: str, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)
    code, out, _ = run(["validate", "--json", name], capsys)
    (finding,) = json.loads(out)
    line, col, message = dict(CORPUS)[name].split(":", 2)
    assert code == 2
    assert finding == {"file": name, "line": int(line), "col": int(col),
                       "path": finding["path"], "message": message.strip()}
    assert finding["path"] in ("algorithm", "cases/1/id")


def test_the_whole_corpus_in_one_real_process() -> None:
    """A real process over every file: exit 2, all findings, no traceback."""
    names = sorted(name for name, _ in CORPUS)
    proc = subprocess.run([sys.executable, "-m", "gcbatch", "validate", *names], cwd=BROKEN,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [f"{n}:{e}" for n, e in sorted(CORPUS)]
    assert proc.stderr.strip().endswith(f"{len(names)} problems in {len(names)} of "
                                        f"{len(names)} manifests")


def test_unsafe_tag_is_never_executed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\nalgorithm: !!python/object/apply:os.system "
        f"[\"touch {marker}\"]\ncases: [{{id: a, inputs: {{x: {{value: 1}}}}}}]\n")
    code, out, _ = run(["validate", str(manifest)], capsys)
    assert code == 2 and "unsafe YAML tag" in out and not marker.exists()


def test_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    examples = sorted(str(p) for p in (ROOT / "examples").glob("*/*.yaml"))
    assert len(examples) >= 3
    for path in examples:
        assert Path(path).read_text().startswith("# yaml-language-server: $schema=")
    code, out, err = run(["validate", *examples], capsys)
    assert (code, out) == (0, ""), err
    assert err.count(": ok (") == len(examples)


def test_json_is_an_empty_list_when_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["validate", "--json", str(ROOT / "examples/quickstart/study.yaml")],
                       capsys)
    assert code == 0 and json.loads(out) == []


def test_several_manifests_report_everything(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)
    code, out, err = run(["validate", "06-wrong-version.yaml", "missing.yaml",
                          "07-misspelt-top-key.yaml"], capsys)
    assert code == 2
    assert out.splitlines() == [
        "06-wrong-version.yaml:1:10: version: must be 1, not 2",
        "missing.yaml: no such file",
        "07-misspelt-top-key.yaml:3:1: unknown key 'servr' (did you mean 'server'?)",
    ]
    assert "3 problems in 3 of 3 manifests" in err


def test_manifests_only_skips_other_yaml(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / ".pre-commit-config.yaml"
    other.write_text("repos: []\n")
    broken = tmp_path / "study.yaml"
    broken.write_text("# yaml-language-server: $schema=x/manifest.schema.json\nversion: 1\n")
    code, out, _ = run(["validate", "--manifests-only", str(other)], capsys)
    assert (code, out) == (0, "")
    code, out, _ = run(["validate", "--manifests-only", str(other), str(broken)], capsys)
    assert code == 2 and "missing required key 'algorithm', 'cases'" in out


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["validate"], capsys)
    assert code == 2 and "Traceback" not in err
