"""DICOM as the platform takes it: series on Image sockets, DICOM Image Sets, and a
check that flags patient data in what the sandbox receives.

The sandbox imports nothing of gcbatch outside itself and only the standard library, so
it reads the few tags it needs here (file meta in explicit VR little endian; the data set
in explicit or implicit VR little endian; sequences skipped; pixel data never read).

What the platform does, emulated:

- **a series on an Image socket** (panimg): one image from all the files of a series,
  named ``<StudyInstanceUID>-<n>`` (panimg dicom.py:438), never after an upload; its API
  shows the study/series UIDs and the patient name, id, birth date, sex and study date
  as the files hold them (no de-identification on this path);
- **a DICOM Image Set** (kind DCMIS): ``image_name`` with ``user_uploads`` is required;
  the import takes the uploads (they are deleted as it starts), refuses SOP classes
  other than CT, MR and VL whole-slide and files whose identifying tags differ, and only
  after an import delay (AWS HealthImaging on the platform: minutes) the image exists,
  named after ``image_name``;
- **patient data**: every completed upload that is DICOM with a filled-in patient tag
  and without ``PatientIdentityRemoved = YES`` is recorded (``/_sandbox/patient-data``),
  so a test can prove that none arrived.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

#: where the sandbox's storage folder records uploads holding patient data (JSON lines)
PATIENT_DATA_LOG = "patient-data.jsonl"

__all__ = ["PATIENT_DATA_LOG", "DicomFile", "image_fields", "parse_dicom", "patient_tags", "series_name",
           "set_problem", "shape"]

_TAGS = {
    0x00020010: "TransferSyntaxUID", 0x00080016: "SOPClassUID", 0x00080020: "StudyDate",
    0x00080050: "AccessionNumber", 0x00080080: "InstitutionName",
    0x00100010: "PatientName", 0x00100020: "PatientID", 0x00100030: "PatientBirthDate",
    0x00100040: "PatientSex", 0x00120062: "PatientIdentityRemoved",
    0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID", 0x00200010: "StudyID",
    0x00200011: "SeriesNumber", 0x00280010: "Rows", 0x00280011: "Columns",
    0x00081030: "StudyDescription", 0x0008103E: "SeriesDescription",
}
_LONG = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
         b"UV"}
_UNDEF = 0xFFFFFFFF

#: the SOP classes the platform's de-identification procedure accepts for image sets
SUPPORTED_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4",
                                   "1.2.840.10008.5.1.4.1.1.77.1.6"})
#: the platform's assert_unique_value_for list (cases/models.py)
UNIQUE_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "PatientID", "StudyID", "StudyDate",
               "AccessionNumber", "SeriesNumber")
#: patient tags whose values must never reach a careful client's server
PATIENT_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                "AccessionNumber", "InstitutionName")


@dataclass(frozen=True)
class DicomFile:
    """The tags the sandbox reads ("" when absent)."""

    tags: dict[str, str]

    def get(self, key: str) -> str:
        return self.tags.get(key, "")


def parse_dicom(data: bytes) -> DicomFile | None:
    """The tags of a DICOM Part 10 file; None when it is not one the sandbox can read."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    found: dict[str, str] = {}
    try:
        pos = _walk(data, 132, True, found, meta=True, depth=0)
        syntax = found.get("TransferSyntaxUID", "")
        if syntax in ("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"):
            return None
        _walk(data, pos, syntax != "1.2.840.10008.1.2", found, meta=False, depth=0)
    except (struct.error, IndexError, ValueError):
        return None
    return DicomFile(found)


def _walk(data: bytes, pos: int, explicit: bool, found: dict[str, str], *, meta: bool,
          depth: int) -> int:
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        tag = (group << 16) | element
        if meta and group != 0x0002:
            return pos
        if tag == 0xFFFEE00D:
            return pos + 8
        if tag == 0x7FE00010 and depth == 0:
            return pos
        if explicit or group == 0x0002:
            if data[pos + 4:pos + 6] in _LONG:
                (length,) = struct.unpack_from("<I", data, pos + 8)
                start = pos + 12
            else:
                (length,) = struct.unpack_from("<H", data, pos + 6)
                start = pos + 8
        else:
            (length,) = struct.unpack_from("<I", data, pos + 4)
            start = pos + 8
        if length == _UNDEF:
            pos = _skip(data, start, explicit, depth)
            continue
        if start + length > len(data):
            raise IndexError("cut short")
        key = _TAGS.get(tag)
        if key and depth == 0:
            raw = data[start:start + length]
            if key in ("Rows", "Columns") and length == 2:
                found[key] = str(struct.unpack("<H", raw)[0])
            else:
                found[key] = raw.decode("latin-1").rstrip("\x00 ").strip()
        pos = start + length
    return pos


def _skip(data: bytes, pos: int, explicit: bool, depth: int) -> int:
    if depth > 16:
        raise ValueError("nested too deeply")
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        (length,) = struct.unpack_from("<I", data, pos + 4)
        pos += 8
        tag = (group << 16) | element
        if tag == 0xFFFEE0DD:
            return pos
        if tag != 0xFFFEE000:
            raise ValueError("not an item")
        if length == _UNDEF:
            pos = _walk(data, pos, explicit, {}, meta=False, depth=depth + 1)
        else:
            pos += length
    raise IndexError("cut short")


def patient_tags(dicom: DicomFile) -> list[str]:
    """The patient tags filled in (none when the file says its identity was removed)."""
    if dicom.get("PatientIdentityRemoved").upper() == "YES":
        return []
    return [key for key in PATIENT_TAGS if dicom.get(key)]


def series_name(files: Sequence[DicomFile]) -> str:
    """The name the platform gives the image of a series: ``<StudyInstanceUID>-0``."""
    return f"{files[0].get('StudyInstanceUID')}-0"


def set_problem(files: Sequence[DicomFile | None]) -> str | None:
    """Why the platform's image-set import would reject these files (None: it would not)."""
    if not files or any(f is None for f in files):
        return "One or more files could not be read as DICOM"
    good = [f for f in files if f is not None]
    for f in good:
        if f.get("SOPClassUID") not in SUPPORTED_SOP_CLASSES:
            return f"SOP Class {f.get('SOPClassUID')} is not supported"
    for key in UNIQUE_TAGS:
        if len({f.get(key) for f in good}) > 1:
            return (f"Element {key!r} has differing values across files: these must be "
                    "identical.")
    return None


def shape(files: Sequence[DicomFile]) -> tuple[int | None, int | None, int | None]:
    """(width, height, depth) of a series' image (depth None for one slice)."""
    rows, cols = files[0].get("Rows"), files[0].get("Columns")
    return (int(cols) if cols.isdigit() else None, int(rows) if rows.isdigit() else None,
            len(files) if len(files) > 1 else None)


def image_fields(files: Sequence[DicomFile]) -> dict[str, object]:
    """What the platform's image API shows of a DICOM series (panimg keeps these)."""
    first = files[0]

    def date(value: str) -> str | None:
        return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 else None

    return {
        "patient_id": first.get("PatientID"),
        "patient_name": first.get("PatientName"),
        "patient_birth_date": date(first.get("PatientBirthDate")),
        "patient_sex": first.get("PatientSex"),
        "study_date": date(first.get("StudyDate")),
        "study_instance_uid": first.get("StudyInstanceUID"),
        "series_instance_uid": first.get("SeriesInstanceUID"),
        "study_description": first.get("StudyDescription"),
        "series_description": first.get("SeriesDescription"),
    }
