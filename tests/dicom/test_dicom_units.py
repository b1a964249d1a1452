"""gcbatch.dicom (tags, checks, de-identification), the DICOM handles in reconciliation,
the journal form of DICOM inputs, and pre-flight check no. 6."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dicom_series import PATIENT

from gcbatch.api.models import Algorithm, Interface, Job, Socket, SocketValue
from gcbatch.dicom import DicomReadError, deid, is_dicom, patient_data, read_header, series_problems
from gcbatch.engine.reconcile import Adopt, Evidence, NoJob, Reconciler, Wait, decide
from gcbatch.engine.sent import Sent, SentFile, SentInput, Stage
from gcbatch.preflight import check_dicom_inputs, dicom_patient_data
from gcbatch.sources import Case, Source

BASE = "https://gc.test/api/v1/"


# --------------------------------------------------------------------------- tags


def test_headers_are_read_without_pydicom_explicit_and_implicit(
        write_series: Callable[..., list[Path]], tmp_path: Path) -> None:
    import pydicom

    path = write_series(tmp_path / "s", study="a", series="b", slices=1)[0]
    header = read_header(path)
    assert header.get("PatientID") == PATIENT["PatientID"]
    assert header.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert (header.get("Rows"), header.get("Columns")) == ("16", "16")
    # implicit VR little endian, with a sequence of undefined length before the UIDs
    ds = pydicom.dcmread(path)
    ds.ReferencedImageSequence = [pydicom.Dataset()]
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    implicit = tmp_path / "implicit.dcm"
    ds.save_as(implicit, implicit_vr=True, little_endian=True)
    again = read_header(implicit)
    assert again.series_instance_uid == header.series_instance_uid
    assert again.get("PatientName") == "Doe^Jane"


def test_what_is_not_dicom_is_said(tmp_path: Path) -> None:
    plain = tmp_path / "x.dcm"
    plain.write_bytes(b"not dicom at all")
    assert not is_dicom(plain)
    with pytest.raises(DicomReadError, match="no DICM marker"):
        read_header(plain)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x40\x00" + b"1.2")
    with pytest.raises(DicomReadError, match="cut short"):
        read_header(cut)


def test_series_problems_name_what_the_platform_refuses(
        write_series: Callable[..., list[Path]], tmp_path: Path) -> None:
    a = [read_header(p) for p in write_series(tmp_path / "a", study="a", series="a")]
    b = [read_header(p) for p in write_series(tmp_path / "b", study="b", series="b")]
    assert series_problems(a, image_set=True, deidentify=True) == []
    two = series_problems(a + b, image_set=True, deidentify=True)
    assert any("2 studies" in p for p in two) and any("2 series" in p for p in two)
    assert any("PatientID" not in p for p in two)
    other = dict(PATIENT, PatientID="someone else")
    c = [read_header(p) for p in write_series(tmp_path / "c", study="a", series="a",
                                              patient=other, slices=1)]
    assert any("PatientID differs" in p for p in series_problems(
        a + c, image_set=True, deidentify=True))
    sc = [read_header(p) for p in write_series(tmp_path / "sc", study="s", series="s",
                                               sop_class="1.2.840.10008.5.1.4.1.1.7")]
    assert "deidentify: false" in series_problems(sc, image_set=False, deidentify=True)[0]
    assert series_problems(sc, image_set=False, deidentify=False) == []
    assert patient_data(a)[:3] == ["PatientName", "PatientID", "PatientBirthDate"]


# --------------------------------------------------------------------------- de-identification


def test_copies_are_the_same_bytes_per_attempt_new_uids_per_attempt_no_patient_data(
        write_series: Callable[..., list[Path]], tmp_path: Path) -> None:
    source = write_series(tmp_path / "s", study="a", series="b", slices=1)[0]
    original = read_header(source)
    made = {}
    for name, attempt in (("one", "x"), ("two", "x"), ("three", "y")):
        target = tmp_path / f"{name}.dcm"
        deid.deidentify_file(source, target, deid.make_deidentifier(attempt, unique=True))
        made[name] = target.read_bytes()
    assert made["one"] == made["two"] != made["three"]
    for value in PATIENT.values():
        if len(value) > 3:
            assert value.encode() not in made["one"], value
    copy = read_header(tmp_path / "one.dcm")
    assert copy.series_instance_uid == deid.attempt_uid("x", original.series_instance_uid)
    assert copy.identity_removed and copy.get("PatientName") == "DUMMY^PATIENT^^^"
    assert original.get("SOPInstanceUID").encode() not in made["one"]  # file meta too
    assert patient_data([copy]) == []


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "grand_challenge_dicom_de_identifier", None)
    with pytest.raises(deid.DeidentifierMissing, match=r"gcbatch\[dicom\].*deidentify: false"):
        deid.require()


# --------------------------------------------------------------------------- reconciliation


def _image_job(pk: str, image: str, status: str = "Succeeded") -> Job:
    return Job(pk=pk, api_url=f"{BASE}algorithms/jobs/{pk}/", status=status, inputs=(
        SocketValue(socket_slug="ct", socket=Socket("ct", super_kind="Image"),
                    image=f"{BASE}cases/images/{image}/"),))


def _sent(**item: object) -> Sent:
    files = (SentFile(name="c.gcb-0123abcd.dcm", upload_pk="u1"),)
    return Sent(attempt="a", stage=Stage.POST,
                inputs=(SentInput("ct", "uploads", files=files, **item),))  # type: ignore[arg-type]


def test_an_image_set_whose_uploads_are_gone_waits_for_its_import() -> None:
    sent = _sent(image_name="p1.gcb-1234")
    gone = Evidence(jobs=(_image_job("other", "i0"),), uploads_gone={"u1": True})
    assert isinstance(decide(sent, gone, claimed=set()), Wait)
    living = Evidence(jobs=(), uploads_gone={"u1": False})
    assert isinstance(decide(sent, living, claimed=set()), NoJob)
    named = Evidence(jobs=(_image_job("ours", "i1"), _image_job("other", "i0")),
                     named_images={"ct": frozenset({"i1"})}, uploads_gone={"u1": True})
    verdict = decide(sent, named, claimed=set())
    assert isinstance(verdict, Adopt) and verdict.job.pk == "ours"


def test_evidence_finds_series_images_and_sets_aside_those_known_before() -> None:
    asked: list[str] = []

    def series(uid: str) -> list[str]:
        asked.append(uid)
        return ["before", "after"]

    reconciler = Reconciler(list_jobs=lambda: [], list_image_pks=lambda name: ["named"],
                            upload_exists=lambda pk: False, list_series_image_pks=series)
    raw = _sent(series_uid="1.2.3", known_images=("before",), known_checked=True)
    assert reconciler.evidence(raw).named_images == {"ct": frozenset({"after"})}
    assert asked == ["1.2.3"]
    image_set = _sent(image_name="p.gcb-1", series_uid="9.9")
    assert reconciler.evidence(image_set).named_images == {"ct": frozenset({"named"})}


def test_dicom_inputs_survive_the_journal() -> None:
    sent = Sent(attempt="a", stage=Stage.POST, inputs=(SentInput(
        "ct", "uploads", image_name="p.gcb-1", series_uid="1.2", deidentified=True,
        known_images=(), known_checked=True,
        files=(SentFile(name="n", path="/c/0.dcm", origin="/o/0.dcm", planned="sha256:ab"),)),))
    assert Sent.from_json(sent.as_json()) == sent


# --------------------------------------------------------------------------- pre-flight


def _algorithm(kind: str, super_kind: str = "Image") -> Algorithm:
    socket = Socket("ct", kind=kind, super_kind=super_kind)
    return Algorithm(pk="p", api_url="u", slug="a", interfaces=(Interface((socket,)),))


def test_preflight_dicom_problems(write_series: Callable[..., list[Path]],
                                  tmp_path: Path) -> None:
    a = tuple(write_series(tmp_path / "a", study="a", series="a", slices=2))
    b = tuple(write_series(tmp_path / "b", study="b", series="b", slices=1))
    image_set, image = _algorithm("DICOM Image Set"), _algorithm("Image")

    def problems(algorithm: Algorithm, **source: object) -> list[str]:
        case = Case("c1", (Source("ct", "files", **source),), "f")  # type: ignore[arg-type]
        return [p.message for p in check_dicom_inputs([case], algorithm)]

    assert "needs image_name" in problems(image_set, paths=a)[0]
    assert problems(image_set, paths=a, image_name="c1") == []
    assert any("2 series" in p for p in problems(image_set, paths=a + b, image_name="c1"))
    assert "only for a DICOM Image Set" in problems(image, paths=a, image_name="c1")[0]
    assert problems(image, paths=a) == []
    assert any("2 series" in p for p in problems(image, paths=a + b))
    mha = tmp_path / "x.mha"
    mha.write_bytes(b"ObjectType = Image\n")
    assert problems(image, paths=(mha,)) == []
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"nope")
    assert "no DICM marker" in problems(image, paths=(fake,))[0]
    # sent as it is: a warning names the patient tags, only then
    raw = Case("c2", (Source("ct", "files", paths=a, deidentify=False),), "f")
    kept = Case("c3", (Source("ct", "files", paths=a),), "f")
    warned = dicom_patient_data([raw, kept], image)
    assert len(warned) == 1 and warned[0].startswith("case c2, socket ct:")


def test_an_image_found_by_a_dicom_handle_is_this_attempts_for_plan_and_adopt() -> None:
    from gcbatch.engine.ownership import Relation, found_by_handle, relate

    sent = _sent(series_uid="1.2.3", deidentified=True)
    job = _image_job("j", "img-1")
    # the platform named it <StudyInstanceUID>-0: by its name alone it is not gcbatch's
    assert relate(sent, job, {"img-1": "1.2.9-0"}, case_id="c").relation == \
        Relation.CANNOT_TELL
    names = found_by_handle(sent, {"ct": frozenset({"img-1"})})
    assert relate(sent, job, {"img-1": "1.2.9-0", **names}, case_id="c").relation == \
        Relation.OURS


def test_a_header_longer_than_the_first_read_is_read_whole(
        write_series: Callable[..., list[Path]], tmp_path: Path) -> None:
    import pydicom

    from gcbatch.dicom.tags import FIRST_READ_BYTES

    path = write_series(tmp_path / "s", study="a", series="b", slices=1)[0]
    ds = pydicom.dcmread(path)
    ds.add_new(0x00090010, "LO", "GCBATCH TEST")  # a private block before the UIDs' group
    ds.add_new(0x00091010, "OB", b"y" * (FIRST_READ_BYTES + 10))
    long = tmp_path / "long.dcm"
    ds.save_as(long)
    assert long.stat().st_size > FIRST_READ_BYTES
    assert read_header(long).series_instance_uid == read_header(path).series_instance_uid


# --------------------------------------------------------------------------- copies


def test_copies_are_made_again_the_same_and_uploads_are_checked_against_them(
        write_series: Callable[..., list[Path]], tmp_path: Path) -> None:
    from types import SimpleNamespace

    from gcbatch.api.uploads import SourceChangedError
    from gcbatch.engine.dicom import discard_copies, materialize, plan_dicom_input
    from gcbatch.engine.uploading import check_fingerprinted
    from gcbatch.hashing import sha256_file
    from gcbatch.sources.fingerprints import files_digest

    paths = tuple(write_series(tmp_path / "s", study="a", series="b", slices=2))
    source = Source("ct", "files", paths=paths,
                    digest=files_digest([sha256_file(p)[0] for p in paths]))
    case = Case("c1", (source,), "f")
    run: Any = SimpleNamespace(scratch=tmp_path / "scratch")
    socket = Socket("ct", kind="Image", super_kind="Image")
    item = plan_dicom_input(run, source, socket, "attempt1", ["n0.dcm", "n1.dcm"])
    assert item is not None and item.deidentified and not item.image_name
    sent = Sent(attempt="attempt1", inputs=(item,))
    made = materialize(run, case, sent)
    planned = [f.planned for f in made.uploads]
    assert all(planned) and all(Path(f.path).exists() for f in made.uploads)
    # a resumed run: the copies are gone; they are made again, byte for byte
    discard_copies(run, made)
    assert not any(Path(f.path).exists() for f in made.uploads)
    again = materialize(run, case, made)
    assert [f.planned for f in again.uploads] == planned
    # the upload hashed what it sent: the copy's digest passes, anything else fails
    uploaded = Sent(attempt="attempt1", inputs=(
        SentInput("ct", "uploads", files=tuple(
            SentFile(name=f.name, path=f.path, origin=f.origin, planned=f.planned,
                     sha256=f.planned) for f in again.uploads), deidentified=True),))
    check_fingerprinted(case, uploaded)
    wrong = uploaded.with_file("ct", 0, SentFile(name="n0.dcm", origin=str(paths[0]),
                                                  planned=planned[0], sha256="sha256:00"))
    with pytest.raises(SourceChangedError, match="de-identified copy changed"):
        check_fingerprinted(case, wrong)
    # an original changed since it was fingerprinted: no copy, the case fails
    discard_copies(run, again)
    paths[1].write_bytes(paths[1].read_bytes() + b"\0\0")
    with pytest.raises(SourceChangedError, match="changed since apply fingerprinted it"):
        materialize(run, case, again)
