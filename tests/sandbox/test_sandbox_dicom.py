"""The sandbox knows DICOM: a series on an Image socket, the DICOM Image Set kind (its
validation message, the import delay, rejected files), the patient-data check."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_app import Client, Clock

from gcbatch.sandbox.app import SandboxApp
from gcbatch.sandbox.config import SandboxConfig

pytest.importorskip("pydicom")
_SPEC = importlib.util.spec_from_file_location(
    "make_series", Path(__file__).resolve().parents[2] / "examples/dicom/make_series.py")
assert _SPEC is not None and _SPEC.loader is not None
make_series = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(make_series)

CONFIG = SandboxConfig(validating_seconds=1, queued_seconds=1, provisioned_seconds=1,
                       executing_seconds=1, executed_seconds=1, dicom_import_seconds=120)
JOBS = "/api/v1/algorithms/jobs/"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def demo(clock: Clock) -> Iterator[Client]:
    app = SandboxApp(None, config=CONFIG, clock=clock)
    yield Client(app)
    app.close()


def series(tmp_path: Path, name: str, **kwargs: Any) -> list[bytes]:
    return [p.read_bytes() for p in make_series.write_series(tmp_path / name, **kwargs)]


def post_job(demo: Client, algorithm: str, item: dict[str, Any]) -> Any:
    return demo.post(JOBS, {"algorithm": demo.algorithm(algorithm), "inputs": [item]})


def test_a_series_on_an_image_socket_is_one_image_named_after_its_study(
        demo: Client, clock: Clock, tmp_path: Path) -> None:
    files = series(tmp_path, "s", study="st", series="se", slices=3)
    ups = [demo.upload(f"x{i}.dcm", data) for i, data in enumerate(files)]
    made = post_job(demo, "lung-nodule-detector", {
        "interface": "ct-image", "user_uploads": [u["api_url"] for u in ups]})
    assert made.status == 201, made.body
    clock.advance(100)
    job = demo.get(f"{JOBS}{made.body['pk']}/").body
    image = demo.get(job["inputs"][0]["image"]).body
    study = make_series._uid("st")
    assert image["name"] == f"{study}-0"  # never after an upload
    assert image["shape"] == [3, 16, 16]
    assert (image["patient_id"], image["patient_name"], image["patient_birth_date"]) == (
        "PHI-12345", "Doe^Jane", "1970-01-01")  # the platform keeps them on this path
    uid = image["series_instance_uid"]
    assert uid == make_series._uid("st", "se")
    found = demo.get(f"/api/v1/cases/images/?series_instance_uid={uid}").body
    assert [i["pk"] for i in found["results"]] == [image["pk"]]
    assert demo.get("/api/v1/cases/images/?series_instance_uid=1.2.3").body["count"] == 0
    # the patient-data check flagged each upload
    flagged = demo.get("/_sandbox/patient-data/").body["uploads"]
    assert sorted(f["filename"] for f in flagged) == ["x0.dcm", "x1.dcm", "x2.dcm"]
    assert "PatientName" in flagged[0]["tags"]


def test_a_dicom_image_set_needs_image_name_and_appears_after_its_import(
        demo: Client, clock: Clock, tmp_path: Path) -> None:
    files = series(tmp_path, "s", study="st", series="se", slices=2,
                   patient={"PatientName": "", "PatientID": "x", "PatientIdentityRemoved": "YES"})
    ups = [demo.upload(f"x{i}.dcm", data) for i, data in enumerate(files)]
    urls = [u["api_url"] for u in ups]
    nameless = post_job(demo, "dicom-set-reader", {"interface": "ct-image-set",
                                                   "user_uploads": urls})
    assert nameless.status == 400
    assert "either user_uploads with image_name, or image are required for interface kind " \
        "DCMIS" in str(nameless.body), nameless.body
    made = post_job(demo, "dicom-set-reader", {"interface": "ct-image-set",
                                               "user_uploads": urls, "image_name": "p1.gcb-1"})
    assert made.status == 201, made.body
    clock.advance(2)  # the import has started: the uploads are gone, no image yet
    job = demo.get(f"{JOBS}{made.body['pk']}/").body
    assert (job["status"], job["inputs"]) == ("Validating inputs", [])
    assert demo.get(f"/api/v1/uploads/{ups[0]['pk']}/").status == 404
    assert demo.get("/api/v1/cases/images/?name=p1.gcb-1").body["count"] == 0
    clock.advance(130)  # the import's end
    job = demo.get(f"{JOBS}{made.body['pk']}/").body
    assert job["status"] == "Succeeded"
    image = demo.get(job["inputs"][0]["image"]).body
    assert image["name"] == "p1.gcb-1" and image["files"] == []
    assert image["dicom_image_set"]["image_set_id"]
    assert demo.get("/_sandbox/patient-data/").body["uploads"] == []  # identity removed


def test_an_image_set_of_an_unsupported_sop_class_or_two_studies_is_cancelled(
        demo: Client, clock: Clock, tmp_path: Path) -> None:
    capture = series(tmp_path, "sc", study="a", series="a", slices=1,
                     sop_class="1.2.840.10008.5.1.4.1.1.7")  # Secondary Capture
    mixed = series(tmp_path, "m1", study="b", series="b", slices=1) + \
        series(tmp_path, "m2", study="c", series="c", slices=1)
    made = []
    for files in (capture, mixed):
        urls = [demo.upload(f"y{i}.dcm", d)["api_url"] for i, d in enumerate(files)]
        made.append(post_job(demo, "dicom-set-reader", {
            "interface": "ct-image-set", "user_uploads": urls, "image_name": "n"}).body)
    clock.advance(300)
    for job in made:
        assert demo.get(f"{JOBS}{job['pk']}/").body["status"] == "Cancelled"
    assert demo.get("/api/v1/uploads/").body["count"] == 0  # deleted as the import began
