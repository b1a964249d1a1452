"""models.py parses the recorded server answers (tests/data/gc_captures, copied from
shared/gc-observed) and tolerates what the server may add or omit."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gcbatch.api.models import (
    Algorithm,
    Archive,
    ArchiveItem,
    Image,
    Job,
    MalformedResponse,
    Socket,
    SocketValue,
    Upload,
    parse_iso_duration,
)

CAPTURES = Path(__file__).parents[1] / "data" / "gc_captures"


def body(name: str) -> Any:
    matches = sorted(CAPTURES.glob(f"{name}*.json"))
    assert len(matches) == 1, name
    return json.loads(matches[0].read_text())["response_body"]


def test_algorithm_from_capture() -> None:
    alg = Algorithm.from_json(body("002-")["results"][0])
    assert alg.slug == "oracle-algorithm"
    assert alg.pk == "5ed1915b-7d84-4969-a5ee-e87f1bed6c84"
    assert alg.api_url.endswith("/api/v1/algorithms/5ed1915b-7d84-4969-a5ee-e87f1bed6c84/")
    assert alg.average_duration is None
    assert frozenset({"oracle-integer"}) in alg.input_sets
    assert frozenset({"oracle-json-file"}) in alg.input_sets
    iface = alg.interface_for(["oracle-integer"])
    assert iface is not None and iface.outputs[0].slug == "results-json-file"
    assert alg.interface_for(["oracle-integer", "nope"]) is None
    sockets = alg.input_sockets()
    assert sockets["oracle-json-file"].is_file
    assert sockets["generic-medical-image"].is_image
    assert sockets["oracle-integer"].is_value
    assert sockets["oracle-integer"].relative_path == "oracle-integer.json"


def test_socket_from_capture() -> None:
    s = Socket.from_json(body("004-")["results"][0])
    assert (s.slug, s.pk, s.kind, s.super_kind) == ("oracle-integer", 14, "Integer", "Value")


def test_job_detail_validating() -> None:
    job = Job.from_json(body("019-"))
    assert job.status == "Validating inputs"
    assert not job.is_terminal and job.is_active and not job.succeeded
    assert job.inputs[0].socket_slug == "oracle-integer"
    assert job.inputs[0].socket is not None and job.inputs[0].socket.super_kind == "Value"
    assert job.input("oracle-integer") is not None
    assert job.input("oracle-integer").value == 42  # type: ignore[union-attr]
    assert job.exec_duration is None
    assert job.algorithm.endswith("/algorithms/5ed1915b-7d84-4969-a5ee-e87f1bed6c84/")


def test_job_succeeded_with_outputs_and_durations() -> None:
    job = Job.from_json(body("060-"))
    assert job.is_terminal and job.succeeded and not job.failed
    out = job.output("results-json-file")
    assert out is not None and out.value["acc"] == 0.5
    assert job.exec_duration == timedelta(minutes=22, seconds=17)
    assert job.invoke_duration == timedelta(minutes=31, seconds=14)


def test_job_file_input_has_url() -> None:
    job = Job.from_json(body("108-"))
    value = job.input("oracle-json-file")
    assert value is not None and value.file is not None and "/media/" in value.file
    assert value.value is None and value.image is None


@pytest.mark.parametrize(("capture", "status"), [("115-", "Cancelled"), ("083-", "Failed")])
def test_job_failed_and_cancelled_are_terminal(capture: str, status: str) -> None:
    job = Job.from_json(body(capture))
    assert job.status == status and job.is_terminal and job.failed and not job.is_active


def test_job_create_201_without_api_url_uses_fallback() -> None:
    data = body("075-")
    assert "api_url" not in data
    with pytest.raises(MalformedResponse):
        Job.from_json(data)
    job = Job.from_json(data, api_url="https://x/api/v1/algorithms/jobs/b1706dae/")
    assert job.api_url == "https://x/api/v1/algorithms/jobs/b1706dae/"
    # the 201 names the socket by slug only
    assert job.inputs[0].socket_slug == "oracle-float"
    assert job.inputs[0].socket is None
    assert job.inputs[0].value == 0.25
    empty = Job.from_json(body("046-"), api_url="u")
    assert empty.inputs == () and empty.status == "Validating inputs"


def test_unknown_status_is_not_terminal() -> None:
    job = Job.from_json({"pk": "p", "api_url": "u", "status": "Something New"})
    assert not job.is_terminal and job.is_active


def test_tolerates_extra_and_missing_optional_fields() -> None:
    job = Job.from_json(
        {
            "pk": "p",
            "api_url": "u",
            "status": "Queued",
            "brand_new_field": {"x": 1},
            "inputs": None,
            "exec_duration": "garbage",
        }
    )
    assert job.inputs == () and job.exec_duration is None


def test_socket_value_prefers_socket_key_and_accepts_both() -> None:
    sock = {"slug": "age", "super_kind": "Value", "pk": 3}
    v = SocketValue.from_json({"interface": sock, "socket": sock, "value": 7, "pk": 1})
    assert v.socket_slug == "age" and v.value == 7
    v2 = SocketValue.from_json({"socket": "age", "value": 7})
    assert v2.socket_slug == "age" and v2.socket is None
    with pytest.raises(MalformedResponse):
        SocketValue.from_json({"value": 7})


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"api_url": "u", "status": "Queued"},
        {"pk": "p", "api_url": "u"},
        {"pk": None, "api_url": "u", "status": "Queued"},
        {"pk": "p", "api_url": "u", "status": "Queued", "inputs": "nope"},
    ],
)
def test_job_missing_required_fields_raise(data: Any) -> None:
    with pytest.raises(MalformedResponse):
        Job.from_json(data)


def test_archive_item_and_image_values() -> None:
    items = [ArchiveItem.from_json(r) for r in body("085-")["results"]]
    assert len(items) == 3
    img = items[0].value_for("generic-medical-image")
    assert img is not None and img.image is not None
    assert img.image_pk == "e9a029cd-9822-42a8-acbe-45e87b4c92cc"
    assert items[0].value_for("oracle-integer").value == 1  # type: ignore[union-attr]
    assert items[0].value_for("missing") is None


def test_archive_and_image() -> None:
    arc = Archive.from_json(body("008-")["results"][0])
    assert arc.pk == "bacf846a-d758-43a2-945a-e6ec77b4a559" and arc.title == "Oracle Archive"
    image = Image.from_json(body("087-"))
    assert image.name == "oracle_1.mha"
    assert image.files[0].image_type == "MHD"
    assert image.files[0].filename == "oracle_1.mha"


def test_upload_shapes() -> None:
    created = Upload.from_json(body("042-"))
    assert created.status == "Initialized" and created.filename == "input.json"
    assert created.s3_upload_id.startswith("47588")
    presigned = Upload.from_json(body("043-"))
    assert sorted(presigned.presigned_urls) == [1, 2, 3, 4, 5]
    assert "partNumber=1" in presigned.presigned_urls[1]
    listed = Upload.from_json(body("147-"))
    assert [(p.part_number, p.size) for p in listed.parts] == [(1, 10)]
    assert listed.parts[0].etag == '"9d625c0ee151d4654c72493a732daa8b"'
    uploads = [Upload.from_json(r) for r in body("056-")["results"]]
    assert all(u.is_completed for u in uploads)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P0DT00H12M17S", timedelta(minutes=12, seconds=17)),
        ("PT1.5S", timedelta(seconds=1.5)),
        ("P2D", timedelta(days=2)),
        ("P1W", timedelta(weeks=1)),
        ("P", None),
        ("PT", None),
        ("12:00", None),
        (None, None),
        (12, None),
    ],
)
def test_parse_iso_duration(text: Any, expected: timedelta | None) -> None:
    assert parse_iso_duration(text) == expected


def test_models_are_frozen() -> None:
    job = Job.from_json(body("019-"))
    with pytest.raises(AttributeError):
        job.status = "Succeeded"  # type: ignore[misc]
