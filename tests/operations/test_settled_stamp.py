"""The settled stamp: a fully locked study re-applied without touching its cases, and
the full path again whenever something it depends on changed."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_apply import FAST, World, mutating

from gcbatch.engine.outcomes import Outcome
from gcbatch.operations import apply as apply_module
from gcbatch.operations import settled_stamp
from gcbatch.operations.status import status
from gcbatch.sandbox.app import SandboxApp
from gcbatch.sandbox.faults import FaultInjector, FaultPlan
from gcbatch.targeting import Targeting

HOUR_AGO = time.time() - 3600

@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    app = SandboxApp(tmp_path / "sandbox.db", config=FAST)
    yield World(app, tmp_path, FaultInjector(FaultPlan()))
    app.close()



def _study_files(world: World, n: int) -> Path:
    folder = world.dir / "vals"
    folder.mkdir(exist_ok=True)
    for i in range(n):
        path = folder / f"{i:03d}.json"
        path.write_text(json.dumps(i))
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    os.utime(folder, (HOUR_AGO, HOUR_AGO))  # older than the racy window
    return world.manifest(
        "version: 1\nalgorithm: risk-calculator\ndefaults:\n  lung-volume: {value: 4.2}\n"
        "cases:\n  - foreach: {glob: 'vals/*.json'}\n    id: 'c-{stem}'\n"
        "    inputs:\n      age: {json: '{path}'}\n")


def _no_expansion(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the stamped path expands nothing")


def test_a_stamped_reapply_touches_no_case_and_says_what_the_full_path_says(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _study_files(world, 12)
    assert world.apply(manifest).counts()["submitted"] == 12
    study = world.study(manifest)
    assert settled_stamp.read_valid(study) is None  # cases were built: nothing stamped
    full = world.apply(manifest)  # every case settled from cached digests: stamped
    assert full.counts()["unchanged"] == 12
    assert settled_stamp.read_valid(study) is not None

    monkeypatch.setattr(apply_module, "expand", _no_expansion)
    seq = world.last_seq()
    fast = world.apply(manifest)
    assert [(r["method"], r["path"]) for r in world.requests(seq)] == [
        ("GET", "/api/v1/algorithms/")]
    assert fast.counts() == full.counts() and fast.exit_code == 0
    assert fast.as_json()["cases"] == full.as_json()["cases"]
    assert [(o.case, o.job_pk) for o in fast.of(Outcome.UNCHANGED)] == \
        [(o.case, o.job_pk) for o in full.of(Outcome.UNCHANGED)]


@pytest.mark.parametrize("change", ["content", "new file", "manifest", "lockfile",
                                    "targeting"])
def test_any_change_takes_the_full_path(world: World, change: str) -> None:
    manifest = _study_files(world, 6)
    world.apply(manifest)
    world.apply(manifest)
    study = world.study(manifest)
    assert settled_stamp.read_valid(study) is not None
    options: dict[str, Any] = {}
    if change == "content":
        path = world.dir / "vals" / "003.json"
        path.write_text("33")  # same size: only the mtime tells
        os.utime(path, (HOUR_AGO + 5, HOUR_AGO + 5))
    elif change == "new file":
        (world.dir / "vals" / "100.json").write_text("100")
        os.utime(world.dir / "vals" / "100.json", (HOUR_AGO, HOUR_AGO))
    elif change == "manifest":
        manifest.write_text(manifest.read_text().replace("4.2", "4.3"))
    elif change == "lockfile":
        os.utime(world.dir / "study.lock", None)
    else:
        options["targeting"] = Targeting(case_ids=("c-001",))
    if change != "targeting":
        assert settled_stamp.read_valid(study) is None
    seq = world.last_seq()
    summary = world.apply(manifest, **options)
    counts = summary.counts()
    if change == "content":
        assert counts["skipped"] == 1  # changed, kept without --replace
    elif change == "new file":
        assert counts["submitted"] == 1 and len(mutating(world.requests(seq))) == 1
    elif change == "manifest":
        assert counts["skipped"] == 6
    elif change == "targeting":
        assert counts["unchanged"] == 1 and sum(counts.values()) == 1
    else:
        assert counts["unchanged"] == 6


def test_status_carries_the_stamp_over_with_the_statuses_it_saw(world: World) -> None:
    manifest = _study_files(world, 4)
    world.apply(manifest)
    world.apply(manifest)
    study = world.study(manifest)
    stamp = settled_stamp.read_valid(study)
    assert stamp is not None
    time.sleep(0.5)  # the sandbox's jobs end
    with world.session() as session:
        result = status(study, session, Targeting())
    assert result.recorded
    carried = settled_stamp.read_valid(study)
    assert carried is not None and carried.lock != stamp.lock
    assert {row[2] for row in carried.cases} == {"Succeeded"}
