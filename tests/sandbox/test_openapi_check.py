"""The OpenAPI validator itself: it must accept what the real server sent and catch drift.

The recorded captures in ``shared/gc-observed`` are the ground truth: the real server's
answers must pass (with the errata), each erratum must still be needed, and deliberate
breakage of a sandbox-like answer must be caught. The plugin that applies the validator
to the whole suite is exercised end to end in a child pytest run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import openapi_check as oc  # registered by tests/openapi_plugin.py
import pytest

from gcbatch.sandbox.recording import ENV_VAR

CAPTURE_DIRS = [oc.captures_dir() / "captures", oc.captures_dir() / "captures-smoke"]
needs_captures = pytest.mark.skipif(
    not CAPTURE_DIRS[0].is_dir(),
    reason="no recorded exchanges: neither tests/data/gc-observed nor shared/gc-observed",
)
needs_shared = pytest.mark.skipif(
    not oc.SHARED_SPEC_PATH.is_file(),
    reason="shared/gc-observed is not beside this clone (it is in CI and on dev machines)",
)


@pytest.fixture(scope="module")
def spec() -> oc.OpenAPISpec:
    return oc.OpenAPISpec.load()


def _captures() -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for folder in CAPTURE_DIRS:
        found.extend((f"{folder.name}/{name}", cap) for name, cap in oc.iter_captures(folder))
    return found


@needs_shared
def test_committed_copy_equals_the_shared_schema() -> None:
    assert oc.SPEC_PATH.read_bytes() == oc.SHARED_SPEC_PATH.read_bytes(), (
        "tests/data/gc-openapi.json drifted from shared/gc-observed/openapi.json: copy it again"
    )


@needs_captures
def test_every_recorded_real_answer_passes_with_the_errata(spec: oc.OpenAPISpec) -> None:
    captures = _captures()
    assert len(captures) >= 200
    checked = 0
    problems: list[str] = []
    for name, capture in captures:
        verdict = oc.capture_verdict(spec, capture)
        checked += verdict.checked
        problems.extend(f"{name}: {err}" for err in verdict.errors)
    assert problems == []
    assert checked >= 140  # every 2xx JSON answer of a documented operation


@needs_captures
@pytest.mark.parametrize("erratum", oc.ERRATA, ids=lambda e: e.pointer.split("/schemas/")[1])
def test_each_erratum_is_needed(erratum: oc.Erratum) -> None:
    """Without the erratum, the real server's own recorded answers break the schema."""
    without = oc.OpenAPISpec.load(errata=tuple(e for e in oc.ERRATA if e is not erratum))
    broken = [name for name, capture in _captures() if oc.capture_verdict(without, capture).errors]
    assert broken, f"erratum {erratum.pointer} is no longer needed: drop it"
    evidence = erratum.evidence.split()[0].split("/")[-1]
    assert any(name.endswith(evidence) for name in broken), (evidence, broken[:5])


def _job(**changes: Any) -> dict[str, Any]:
    socket = {
        "title": "Age",
        "description": "",
        "slug": "age",
        "kind": "Integer",
        "pk": 3,
        "default_value": None,
        "super_kind": "Value",
        "relative_path": "age.json",
        "overlay_segments": [],
        "look_up_table": None,
    }
    job: dict[str, Any] = {
        "pk": "d84178d9-8c60-4858-9b4f-50c668db289d",
        "url": "http://127.0.0.1:1/algorithms/x/jobs/d84178d9-8c60-4858-9b4f-50c668db289d/",
        "api_url": "http://127.0.0.1:1/api/v1/algorithms/jobs/d84178d9-8c60-4858-9b4f-50c668db289d/",
        "algorithm": "http://127.0.0.1:1/api/v1/algorithms/5ed1915b-7d84-4969-a5ee-e87f1bed6c84/",
        "algorithm_image": "http://127.0.0.1:1/api/v1/algorithms/images/5ed1915b-7d84-4969-a5ee-e87f1bed6c84/",
        "status": "Queued",
        "inputs": [
            {
                "pk": 1,
                "interface": socket,
                "socket": socket,
                "value": 42,
                "file": None,
                "image": None,
            }
        ],
        "outputs": [],
        "exec_duration": None,
        "invoke_duration": None,
        "hanging_protocol": None,
        "optional_hanging_protocols": [],
        "view_content": {},
    }
    job.update(changes)
    return job


JOB_PATH = "/api/v1/algorithms/jobs/d84178d9-8c60-4858-9b4f-50c668db289d/"


def test_a_well_formed_job_passes(spec: oc.OpenAPISpec) -> None:
    verdict = spec.validate("GET", JOB_PATH, 200, _job())
    assert verdict.checked and verdict.errors == ()
    assert verdict.operation == "/api/v1/algorithms/jobs/{id}/"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"pk": 17}, "$['pk']: 17 is not of type 'string'"),
        ({"pk": "not-a-uuid"}, "$['pk']: 'not-a-uuid' is not a 'uuid'"),
        ({"algorithm": "/api/v1/algorithms/x/"}, "is not a 'uri'"),
        ({"inputs": [{"value": 1}]}, "$['inputs'][0]: 'interface' is a required property"),
        ({"outputs": None}, "$['outputs']: None is not of type 'array'"),
        ({"status": None}, "$['status']: None is not of type 'string'"),
    ],
)
def test_drift_is_caught(spec: oc.OpenAPISpec, changes: dict[str, Any], expected: str) -> None:
    errors = spec.validate("GET", JOB_PATH, 200, _job(**changes)).errors
    assert any(expected in err for err in errors), errors


def test_relative_path_must_not_contain_a_uuid(spec: oc.OpenAPISpec) -> None:
    """The erratum keeps the model's real rule (inverse match), not the schema's."""
    job = _job()
    job["inputs"][0]["interface"] = {
        **job["inputs"][0]["interface"],
        "relative_path": "x-5ED1915B-7d84-4969-a5ee-e87f1bed6c84.json",
    }
    errors = spec.validate("GET", JOB_PATH, 200, job).errors
    assert len(errors) == 1 and "relative_path" in errors[0], errors


def test_missing_required_key_is_caught(spec: oc.OpenAPISpec) -> None:
    job = _job()
    del job["view_content"]
    assert spec.validate("GET", JOB_PATH, 200, job).errors == (
        "$: 'view_content' is a required property",
    )


def test_nullable_fields_accept_null_but_not_other_types(spec: oc.OpenAPISpec) -> None:
    assert spec.validate("GET", JOB_PATH, 200, _job(hanging_protocol=None)).ok
    assert not spec.validate("GET", JOB_PATH, 200, _job(hanging_protocol="x")).ok


def test_paginated_lists_and_literal_paths_win_over_templates(spec: oc.OpenAPISpec) -> None:
    page = {"count": 1, "next": None, "previous": None, "results": [_job()]}
    verdict = spec.validate("GET", "/api/v1/algorithms/jobs/?limit=1", 200, page)
    assert verdict.operation == "/api/v1/algorithms/jobs/" and verdict.ok
    assert spec.match("GET", "/api/v1/algorithms/images/").template == "/api/v1/algorithms/images/"
    assert spec.match("GET", "/api/v1/algorithms/abc/").template == "/api/v1/algorithms/{id}/"
    bad = {"count": "1", "next": None, "previous": None, "results": []}
    assert spec.validate("GET", "/api/v1/algorithms/jobs/", 200, bad).errors == (
        "$['count']: '1' is not of type 'integer'",
    )


def test_wrong_content_type_on_a_documented_answer_is_a_violation(spec: oc.OpenAPISpec) -> None:
    verdict = spec.validate("GET", JOB_PATH, 200, b"<html>", content_type="text/html")
    assert verdict.checked and "content type 'text/html'" in verdict.errors[0]


def test_what_the_schema_does_not_document_is_reported_unchecked(spec: oc.OpenAPISpec) -> None:
    not_found = spec.validate("GET", JOB_PATH, 404, {"detail": "Not found."})
    assert not not_found.checked and "404 not documented" in not_found.reason
    forbidden = spec.validate("PATCH", JOB_PATH, 403, {"detail": "x"})
    assert not forbidden.checked and forbidden.operation is None
    admin = spec.validate("GET", "/_sandbox/stats", 200, {})
    assert not admin.checked


PLUGIN_TEST = textwrap.dedent(
    """
    import os
    from pathlib import Path

    from gcbatch.sandbox.http import Request, Response
    from gcbatch.sandbox.recording import recorder_from_env


    def test_answers():
        recorder = recorder_from_env()
        assert recorder is not None
        recorder.record(
            Request("GET", "/api/v1/gcapi/"),
            Response(200, (("Content-Type", "application/json"),), BODY),
        )
        recorder.record(Request("GET", "/_sandbox/stats"), Response(200, (), b"{}"))
    """
)


def _run_child(tmp_path: Path, body: bytes) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_child.py").write_text(PLUGIN_TEST.replace("BODY", repr(body)))
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["openapi_plugin"]\n')
    # No third-party plugin autoload: the child needs only ours and starts 3x faster.
    env = {**os.environ, "PYTHONPATH": str(oc.TESTS_DIR), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop(ENV_VAR, None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )


def test_plugin_fails_a_green_run_that_recorded_a_violation(tmp_path: Path) -> None:
    bad = json.dumps({"latest_version": 16, "lowest_supported_version": "0.13.0"}).encode()
    result = _run_child(tmp_path, bad)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "break the Grand Challenge OpenAPI schema" in result.stdout
    assert (
        "GET /api/v1/gcapi/ -> 200: $['latest_version']: 16 is not of type 'string'"
        in result.stdout
    )
    assert "1 violations" in result.stdout


def test_plugin_passes_a_run_whose_answers_conform(tmp_path: Path) -> None:
    good = json.dumps({"latest_version": "0.16.1", "lowest_supported_version": "0.13.0"}).encode()
    result = _run_child(tmp_path, good)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 answers recorded, 1 distinct ones checked" in result.stdout
    assert "0 violations" in result.stdout


def test_a_line_cut_short_by_a_killed_process_is_counted_not_fatal(
    tmp_path: Path, spec: oc.OpenAPISpec
) -> None:
    import openapi_plugin  # the plugin module, loaded by tests/conftest.py

    good = {
        "method": "GET",
        "path": "/api/v1/gcapi/",
        "query": "",
        "status": 200,
        "content_type": "application/json",
        "body": json.dumps({"latest_version": "0.16.1", "lowest_supported_version": "0"}),
    }
    (tmp_path / "responses-1.jsonl").write_text(json.dumps(good) + "\n" + '{"method": "GE')
    lines, checked, unchecked, violations = openapi_plugin.check_records(
        spec, openapi_plugin.iter_records(tmp_path)
    )
    assert (lines, checked, violations) == (2, 1, [])
    assert sum(unchecked.values()) == 1 and "killed" in next(iter(unchecked))
