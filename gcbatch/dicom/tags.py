"""The few DICOM tags gcbatch checks, read with the standard library alone.

Checks before any upload (one study and series per case, identical identifying tags,
supported SOP classes, patient data present) must work without the optional
``gcbatch[dicom]`` extra, so this module parses DICOM Part 10 files itself: the file meta
group (always explicit VR little endian), then the data set in explicit or implicit VR
little endian, sequences skipped, stopping at the pixel data. Big-endian and deflated
transfer syntaxes (both retired or rare) are reported as unreadable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DicomHeader", "DicomReadError", "is_dicom", "read_header"]

#: how much of a file is read for its header (pixel data beyond is never needed): a
#: first read that holds almost every header, then more only for a header that long
FIRST_READ_BYTES = 64 * 1024
MAX_HEADER_BYTES = 8 * 1024 * 1024

_IMPLICIT_LE = "1.2.840.10008.1.2"
_UNSUPPORTED_SYNTAXES = {"1.2.840.10008.1.2.2": "explicit VR big endian",
                         "1.2.840.10008.1.2.1.99": "deflated explicit VR little endian"}
#: VRs whose explicit-VR length field is 4 bytes (after 2 reserved bytes)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010

#: tag → keyword, for the tags read (strings; Rows and Columns are US numbers)
TAGS: dict[int, str] = {
    0x00020010: "TransferSyntaxUID",
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x00080020: "StudyDate",
    0x00080050: "AccessionNumber",
    0x00080060: "Modality",
    0x00080080: "InstitutionName",
    0x00080090: "ReferringPhysicianName",
    0x00100010: "PatientName",
    0x00100020: "PatientID",
    0x00100030: "PatientBirthDate",
    0x00100040: "PatientSex",
    0x00120062: "PatientIdentityRemoved",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00200010: "StudyID",
    0x00200011: "SeriesNumber",
    0x00280010: "Rows",
    0x00280011: "Columns",
}


class DicomReadError(ValueError):
    """Not a DICOM file gcbatch can read (the message says why)."""


@dataclass(frozen=True)
class DicomHeader:
    """The tags of one file that the checks and the handles need ("" when absent)."""

    path: str
    values: tuple[tuple[str, str], ...]

    def get(self, keyword: str) -> str:
        for key, value in self.values:
            if key == keyword:
                return value
        return ""

    @property
    def sop_class_uid(self) -> str:
        return self.get("SOPClassUID")

    @property
    def study_instance_uid(self) -> str:
        return self.get("StudyInstanceUID")

    @property
    def series_instance_uid(self) -> str:
        return self.get("SeriesInstanceUID")

    @property
    def identity_removed(self) -> bool:
        return self.get("PatientIdentityRemoved").upper() == "YES"


def is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``."""
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_header(path: Path) -> DicomHeader:
    """The tags of :data:`TAGS` in ``path``; :class:`DicomReadError` when unreadable."""
    try:
        with path.open("rb") as fh:
            data = fh.read(FIRST_READ_BYTES)
            try:
                return _parse(path, data)
            except DicomReadError:
                if len(data) < FIRST_READ_BYTES or data[128:132] != b"DICM":
                    raise  # the whole file, or no DICOM at all
            data += fh.read(MAX_HEADER_BYTES - len(data))
    except OSError as exc:
        raise DicomReadError(f"cannot read: {exc.strerror or exc}") from None
    return _parse(path, data)


def _parse(path: Path, data: bytes) -> DicomHeader:
    if len(data) < 132 or data[128:132] != b"DICM":
        raise DicomReadError("not a DICOM file (no DICM marker after the 128-byte preamble)")
    found: dict[str, str] = {}
    try:
        pos = _walk(data, 132, explicit=True, found=found, meta_only=True)
        syntax = found.get("TransferSyntaxUID", "")
        if syntax in _UNSUPPORTED_SYNTAXES:
            raise DicomReadError(f"transfer syntax {_UNSUPPORTED_SYNTAXES[syntax]} is not read")
        _walk(data, pos, explicit=syntax != _IMPLICIT_LE, found=found, meta_only=False)
    except (struct.error, IndexError):
        raise DicomReadError("the DICOM header is cut short or malformed") from None
    return DicomHeader(str(path), tuple(sorted(found.items())))


def _walk(data: bytes, pos: int, *, explicit: bool, found: dict[str, str],
          meta_only: bool, depth: int = 0, item_end: bool = False) -> int:
    """Read elements from ``pos``; return where the walk stopped."""
    end = len(data)
    while pos + 8 <= end:
        group, element = struct.unpack_from("<HH", data, pos)
        tag = (group << 16) | element
        if meta_only and group != 0x0002:
            return pos
        if tag == _ITEM_END:
            if not item_end:
                raise DicomReadError("an item delimiter outside of an item")
            return pos + 8
        if tag == _PIXEL_DATA and depth == 0:
            return pos
        if explicit or group == 0x0002:
            vr = data[pos + 4:pos + 6]
            if vr in _LONG_VRS:
                (length,) = struct.unpack_from("<I", data, pos + 8)
                start = pos + 12
            else:
                (length,) = struct.unpack_from("<H", data, pos + 6)
                start = pos + 8
        else:
            (length,) = struct.unpack_from("<I", data, pos + 4)
            start = pos + 8
        if length == _UNDEFINED:
            pos = _skip_sequence(data, start, explicit=explicit, depth=depth)
            continue
        if start + length > end:
            raise IndexError("element runs past the data read")
        keyword = TAGS.get(tag)
        if keyword is not None and depth == 0:
            raw = data[start:start + length]
            if keyword in ("Rows", "Columns") and length == 2:
                found[keyword] = str(struct.unpack("<H", raw)[0])
            else:
                found[keyword] = raw.decode("latin-1").rstrip("\x00 ").strip()
        pos = start + length
    return pos


def _skip_sequence(data: bytes, pos: int, *, explicit: bool, depth: int) -> int:
    """Past a sequence (or encapsulated data) of undefined length."""
    if depth > 16:
        raise DicomReadError("sequences nested too deeply")
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        tag = (group << 16) | element
        (length,) = struct.unpack_from("<I", data, pos + 4)
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise DicomReadError("a sequence holds something that is not an item")
        if length == _UNDEFINED:
            pos = _walk(data, pos, explicit=explicit, found={}, meta_only=False,
                        depth=depth + 1, item_end=True)
        else:
            pos += length
    raise IndexError("sequence runs past the data read")
