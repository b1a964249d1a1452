"""The reader: formats 1 and 2, its fast path, leniency as before, and refusal of
unusable lockfiles naming the file (gcbatch.lockfile.decode)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcbatch import lockfile as lf
from gcbatch.errors import LockfileError

from .samples import v1_text, varied


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"format_version": 3, "server": "x", "algorithm": {"slug": "a"}}',
         "format_version is 3, but this gcbatch reads format_version 1 or 2"),
        ('{"server": "x", "algorithm": {"slug": "a"}}', "format_version is None"),
        ('{"format_version": true, "server": "x", "algorithm": {"slug": "a"}}',
         "format_version is True"),  # (True == 1 in Python: not a version)
        ('{"format_version": 2.0, "server": "x", "algorithm": {"slug": "a"}}',
         "format_version is 2.0"),
        ("{not json", "not valid JSON"),
        ("[]", "not a gcbatch lockfile"),
        ('{"format_version": 1, "server": "x", "algorithm": {"slug": "a"}, "cases": []}',
         "malformed cases"),
        ('{"format_version": 2, "server": "x", "algorithm": {"slug": "a"}, "cases": []}',
         "malformed cases"),
    ],
)
def test_unusable_lockfiles_are_refused_naming_the_file(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "s.lock"
    path.write_text(text)
    with pytest.raises(LockfileError) as info:
        lf.load(path)
    assert str(path) in str(info.value) and needle in str(info.value)
    assert info.value.exit_code == 2


def test_format_1_reads_to_the_same_lockfile_and_is_written_as_2() -> None:
    lock = varied()
    old = lf.parse(v1_text(lock))
    assert old == lock and lf.dumps(old) == lf.dumps(lock)
    assert json.loads(lf.dumps(old))["format_version"] == 2
    # format 1 has no omissions: a job without "inputs" got none, one without a
    # fingerprint is malformed (in format 2 both would be the entry's)
    data = json.loads(v1_text(lock))
    del data["cases"]["usual"]["job"]["inputs"]
    assert lf.parse(json.dumps(data)).cases["usual"].job.inputs == {}  # type: ignore[union-attr]
    del data["cases"]["usual"]["job"]["fingerprint"]
    with pytest.raises(LockfileError, match="job record field 'fingerprint'"):
        lf.parse(json.dumps(data))


def test_format_2_round_trip() -> None:
    lock = varied()
    text = lf.dumps(lock)
    again = lf.parse(text)
    assert again == lock and lf.dumps(again) == text
    assert list(again.cases) == sorted(lock.cases)  # the file's order
    for cid, entry in again.cases.items():
        assert entry.job is None or hash(entry.job) == hash(lock.cases[cid].job)
    usual = again.cases["usual"]
    assert usual.job is not None and usual.job.inputs is usual.inputs  # shared, read-only
    differs = again.cases["other-fingerprint"]
    assert differs.job is not None and differs.job.fingerprint == "sha256:old"
    assert differs.fingerprint == "sha256:new"


def _v2_with(case: object) -> str:
    return json.dumps({"format_version": 2, "server": "x", "algorithm": {"slug": "a"},
                       "cases": {"ok": {"fingerprint": "f", "inputs": {}, "job": None},
                                 "c": case}})


_JOB = {"api_url": "u", "pk": "p", "status": "Queued", "submitted_at": "t"}


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ([], "malformed case entry"),
        ("entry", "malformed case entry"),
        ({"fingerprint": "f", "inputs": ["x"], "job": _JOB}, "malformed case entry fields"),
        ({"fingerprint": "f", "inputs": {}, "job": _JOB, "history": {"x": 1}},
         "malformed case entry fields"),
        ({"fingerprint": "f", "inputs": {}, "job": ["a", "b", "c", "d"]},
         "malformed job record"),
        ({"fingerprint": "f", "inputs": {}, "job": "abcd"}, "malformed job record"),
        ({"fingerprint": "f", "inputs": {}, "job": {**_JOB, "pk": None}},
         "malformed job record field 'pk'"),
        ({"fingerprint": "f", "inputs": {}, "job": {"api_url": "u", "status": "s", "x": 1,
                                                    "submitted_at": "t"}},
         "malformed job record field 'pk'"),
        ({"fingerprint": "f", "inputs": {}, "job": {**_JOB, "fingerprint": None}},
         "malformed job record field 'fingerprint'"),
        ({"fingerprint": "f", "inputs": {}, "job": {**_JOB, "inputs": ["x"]}},
         "malformed job record inputs"),
        ({"fingerprint": "f", "inputs": {}, "job": _JOB, "history": [_JOB]},
         "malformed job record field 'fingerprint'"),  # history records are in full
        ({"fingerprint": "f", "inputs": {}, "history": [_JOB]},
         "malformed job record field 'fingerprint'"),
        ({"fingerprint": "f", "inputs": {}, "job": _JOB, "pending": {"started_at": "t"}},
         "malformed intent"),
    ],
)
def test_malformed_format_2_entries_are_refused(tmp_path: Path, case: object, needle: str) -> None:
    path = tmp_path / "s.lock"
    path.write_text(_v2_with(case))
    with pytest.raises(LockfileError) as info:
        lf.load(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_format_2_lenient_values_as_before() -> None:
    """What format 1 turned into strings, format 2 does too (usual shape or not)."""
    text = _v2_with({"fingerprint": 7, "inputs": {"x": 1}, "job": {**_JOB, "status": None}})
    entry = lf.parse(text).cases["c"]
    assert entry.fingerprint == "7" and entry.inputs == {"x": "1"}
    assert entry.job is not None and entry.job.status == "" and entry.job.fingerprint == "7"
    assert entry.job.inputs == {"x": "1"}
    assert lf.parse(_v2_with({"fingerprint": "f", "inputs": {}, "job": {}})).cases["c"].job is None
