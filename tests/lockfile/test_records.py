"""The records' JSON forms (what format 2 leaves out) and the rule that a lockfile
belongs to one server and algorithm (gcbatch.lockfile.records)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcbatch import lockfile as lf
from gcbatch.errors import LockfileError

from .samples import ALG, SERVER, varied


def test_omissions_exactly_when_equal_or_default() -> None:
    cases = json.loads(lf.dumps(varied()))["cases"]
    jobs = {cid: set(e["job"]) for cid, e in cases.items() if e["job"] is not None}
    short = {"api_url", "pk", "status", "submitted_at"}
    assert jobs["usual"] == jobs["no-inputs"] == jobs["resubmitted"] == jobs["in-doubt"] == short
    assert jobs["päť-ü/ñ \"quoted\"\n"] == short
    assert jobs["other-fingerprint"] == short | {"fingerprint"}
    assert jobs["other-inputs"] == jobs["job-without-inputs"] == short | {"inputs"}
    assert cases["job-without-inputs"]["job"]["inputs"] == {}
    assert cases["never-submitted"] == {"fingerprint": "", "inputs": {}, "job": None}
    assert {cid for cid, e in cases.items() if "history" in e} == {"resubmitted"}
    assert {cid for cid, e in cases.items() if "pending" in e} == {"in-doubt"}
    assert set(cases["resubmitted"]["history"][0]) == short | {"fingerprint", "inputs"}


def test_other_server_or_algorithm_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.lock"
    lf.save(path, lf.Lockfile(SERVER, ALG))
    assert lf.load(path, server=SERVER.rstrip("/")) is not None  # trailing slash ignored
    with pytest.raises(LockfileError, match=r"s\.lock belongs to server https://grand"):
        lf.load(path, server="https://other.example/api/v1/")
    with pytest.raises(LockfileError, match="made for algorithm 'lung-nodule-detector'"):
        lf.load(path, algorithm="risk-calculator")


def test_a_server_is_one_server_whatever_the_spelling_of_its_url() -> None:
    from gcbatch.lockfile.records import normalize_server

    same = ["https://grand-challenge.org/api/v1/", "HTTPS://Grand-Challenge.org:443/api/v1",
            "https://grand-challenge.org/api/v1//"]
    assert {normalize_server(u) for u in same} == {"https://grand-challenge.org/api/v1/"}
    assert normalize_server("http://127.0.0.1:8000/api/v1") == "http://127.0.0.1:8000/api/v1/"
    assert normalize_server("http://127.0.0.1:8000/api/v1/") != \
        normalize_server("http://127.0.0.1:8001/api/v1/")
