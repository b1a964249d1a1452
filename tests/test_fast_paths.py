"""The fast paths for 100,000-case studies give exactly what the slow paths give.

libyaml vs PyYAML's own loader, the per-case schema shortcut vs jsonschema, the JSON value
cache vs reading the file, and a lockfile store that does not rewrite an unchanged file.
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcbatch import lockfile as lf
from gcbatch.hashing import FileHasher
from gcbatch.manifest import load_manifest, parse_manifest, read_yaml, validation, yaml_reader
from gcbatch.sources import expand, expander

ROOT = Path(__file__).resolve().parent.parent
YAMLS = sorted(glob.glob(str(ROOT / "examples" / "**" / "*.yaml"), recursive=True)
               + glob.glob(str(ROOT / "tests" / "manifests" / "**" / "*.yaml"), recursive=True))


def old_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    past = time.time() - 3600
    os.utime(path, (past, past))
    return path


# --------------------------------------------------------------------------- YAML


@pytest.mark.skipif(yaml_reader._CLoader is None, reason="PyYAML without libyaml")
@pytest.mark.parametrize("path", YAMLS, ids=lambda p: Path(p).name)
def test_libyaml_reads_what_pyyaml_reads(path: str) -> None:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    slow = read_yaml(text, "m.yaml", fast=False)
    fast = read_yaml(text, "m.yaml", fast=True)
    assert [f.__dict__ for f in fast[1]] == [f.__dict__ for f in slow[1]]
    if slow[0] is None:
        assert fast[0] is None
        return
    assert fast[0] is not None
    assert (fast[0].data, fast[0].nodes, fast[0].keys, fast[0].refused) == (
        slow[0].data, slow[0].nodes, slow[0].keys, slow[0].refused)


@pytest.mark.parametrize(("text", "message"), [
    # libyaml accepts both of these; PyYAML (whose words the user gets) does not
    ("version: 1\nalgorithm: a\ncases:\n  - id: p1\n    inputs:\n      x: {file: a? b}\n",
     "invalid YAML: expected ',' or '}', but got '?'"),
    ("version: 1\t\nalgorithm: a\ncases: []\n",
     "invalid YAML: found character '\\t' that cannot start any token"),
])
def test_what_only_libyaml_accepts_is_still_refused(tmp_path: Path, text: str,
                                                    message: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    _, findings = parse_manifest(path)
    assert findings and findings[0].message.startswith(message)


def test_control_character_is_a_finding_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\nalgorithm: a\x07\ncases: []\n")
    _, findings = parse_manifest(path)
    assert [(f.line, f.col, f.message) for f in findings] == [
        (2, 13, "invalid YAML: unacceptable character #x0007: special characters are "
                "not allowed")]


def test_explicit_tag_that_does_not_fit_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\nalgorithm: a\ncases:\n  - id: p1\n    inputs:\n"
                    "      age: {value: !!int abc}\n")
    _, findings = parse_manifest(path)
    assert [(f.line, f.message) for f in findings] == [
        (6, "cases[0].inputs.age.value: 'abc' is not a valid !!int")]


# --------------------------------------------------------------------------- schema


_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=6),
                    st.sampled_from(["", "p1", "-x", "a b", "https://x/", "http:/", "ok_1"]))
_ANY = st.recursive(_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=2), st.dictionaries(st.text(max_size=4), inner, max_size=2)),
    max_leaves=4)
_KIND = st.sampled_from(["value", "json", "file", "files", "archive_item", "image", "socket",
                         "flie"])
_SOURCE = st.one_of(st.none(), _SCALAR, st.dictionaries(_KIND, _ANY, max_size=2))
_SLUG = st.sampled_from(["ct-image", "age", "a b", "", "x_1", "é"])
_CASE = st.one_of(
    _ANY,
    st.fixed_dictionaries({"id": _SCALAR}, optional={
        "inputs": st.one_of(_SCALAR, st.dictionaries(_SLUG, _SOURCE, max_size=3)),
        "foreach": _ANY, "other": _ANY}),
)


@settings(max_examples=400, deadline=None)
@given(_CASE)
def test_the_schema_shortcut_never_accepts_what_the_schema_refuses(case: Any) -> None:
    _, item = validation._split_validators()
    if validation._plainly_valid_case(case):
        assert list(item.iter_errors(case)) == []


def test_many_cases_errors_point_at_the_bad_case(tmp_path: Path) -> None:
    lines = ["version: 1", "algorithm: a", "cases:"]
    for i in range(300):
        lines += [f"  - id: p{i}", "    inputs:", f"      age: {{value: {i}}}"]
    lines[3 + 3 * 250 + 2] = "      age: {vaule: 1}"
    path = tmp_path / "m.yaml"
    path.write_text("\n".join(lines) + "\n")
    _, findings = parse_manifest(path)
    assert [(f.line, f.col, f.path) for f in findings] == [
        (3 + 3 * 250 + 3, 13, "cases/250/inputs/age/vaule")]
    assert "unknown key 'vaule'" in findings[0].message


# --------------------------------------------------------------------------- JSON values


def test_json_values_come_from_the_cache_unopened_and_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        old_file(tmp_path / "v" / f"{i}.json", json.dumps({"z": i, "a": [1.5, None]}))
    old_file(tmp_path / "v" / "3.json", "7.25")
    path = old_file(tmp_path / "m.yaml", "version: 1\nalgorithm: a\ncases:\n"
                    "  - foreach: {glob: 'v/*.json'}\n    id: 'c{stem}'\n"
                    "    inputs:\n      x: {json: '{path}'}\n")
    m = load_manifest(path)
    cache = tmp_path / "cache.json"
    plain = expand(m, hasher=None)
    first = FileHasher(cache)
    cold = expand(m, hasher=first)
    first.save()

    def no_reading(full: str) -> Any:
        raise AssertionError(f"opened {full}")

    monkeypatch.setattr(expander, "_load_json_file", no_reading)
    warm = expand(m, hasher=FileHasher(cache))
    assert warm == cold
    assert [c.inputs[0].value for c in warm.cases] == [c.inputs[0].value for c in plain.cases]
    # the key order of the file, not the cache's sorted order
    assert list(warm.cases[0].inputs[0].value) == ["z", "a"]
    assert warm.cases[3].inputs[0].value == 7.25
    monkeypatch.undo()
    # a changed file is read again
    old_file(tmp_path / "v" / "1.json", json.dumps({"z": 100}))
    os.utime(tmp_path / "v" / "1.json", (time.time() - 60, time.time() - 60))
    again = expand(m, hasher=FileHasher(cache))
    assert again.cases[1].inputs[0].value == {"z": 100}
    assert again.cases[1].fingerprint != cold.cases[1].fingerprint


# --------------------------------------------------------------------------- lockfile


def _lock(n: int) -> lf.Lockfile:
    cases = {}
    for i in range(n):
        job = lf.JobRecord(pk=f"pk{i}", api_url=f"https://x/{i}/", status="Succeeded",
                           submitted_at="2026-11-27T14:00:00Z", fingerprint=f"sha256:{i}",
                           inputs={"age": f"sha256:a{i}"})
        cases[f"c{i}"] = lf.CaseEntry(fingerprint=f"sha256:{i}", inputs={"age": f"sha256:a{i}"},
                                      job=job)
    return lf.Lockfile(server="https://x/api/v1/", algorithm=lf.AlgorithmRef("a", "1", "u"),
                       cases=cases)


def test_an_unchanged_lockfile_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "s.lock"
    lf.save(path, _lock(50))
    inode = os.stat(path).st_ino  # an atomic write replaces the file (a new inode)
    for _ in range(2):
        with lf.LockfileStore.open(path, server="https://x/api/v1/",
                                   algorithm=lf.AlgorithmRef("a", "1", "u")) as store:
            assert store.lockfile == _lock(50)
        assert os.stat(path).st_ino == inode
    with lf.LockfileStore.open(path, server="https://x/api/v1/",
                               algorithm=lf.AlgorithmRef("a", "1", "u")) as store:
        store.status("c3", "pk3", "Failed")
    assert os.stat(path).st_ino != inode
    base = _lock(50)
    expected = replace(base, cases={**base.cases, "c3": lf.CaseEntry(
        fingerprint="sha256:3", inputs={"age": "sha256:a3"}, job=lf.JobRecord(
            pk="pk3", api_url="https://x/3/", status="Failed",
            submitted_at="2026-11-27T14:00:00Z", fingerprint="sha256:3",
            inputs={"age": "sha256:a3"}))})
    assert lf.load(path) == lf.parse(lf.dumps(expected))


def test_parsed_entries_equal_constructed_ones() -> None:
    lock = _lock(5)
    parsed = lf.parse(lf.dumps(lock))
    assert parsed == lock
    assert lf.dumps(parsed) == lf.dumps(lock)
    assert hash(parsed.cases["c1"].job) == hash(lock.cases["c1"].job)


_TREE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.dictionaries(st.text(), inner, max_size=3),
                            st.dictionaries(st.integers(), inner, max_size=2)),
    max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(_TREE)
def test_indented_json_is_json_dumps_with_indent(value: Any) -> None:
    def dump(f: Any) -> Any:
        try:
            return f(value)
        except Exception as exc:  # the same error, too
            return type(exc)

    assert dump(lf.indented_json) == dump(
        lambda v: json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False))
