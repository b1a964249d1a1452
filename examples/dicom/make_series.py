"""Write small synthetic CT series with (made-up) patient data, for the DICOM example.

    python make_series.py OUT_DIR [--study N] [--slices K] [--patient NAME]

Writes OUT_DIR/<series name>/slice<i>.dcm: CT Image Storage, 16 x 16 pixels, one study
and one series per folder, with the patient name, id, birth date, sex, study date,
accession number and institution filled in, so that a check can prove none of it
reaches the server. Needs pydicom (``pip install 'gcbatch[dicom]'``).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: the made-up patient data written into every file (and grepped for afterwards)
PATIENT = {
    "PatientName": "Doe^Jane",
    "PatientID": "PHI-12345",
    "PatientBirthDate": "19700101",
    "PatientSex": "F",
    "StudyDate": "20240315",
    "AccessionNumber": "ACC-PHI-777",
    "InstitutionName": "PHI General Hospital",
    "ReferringPhysicianName": "House^Gregory",
}


def _uid(*parts: object) -> str:
    # 2.25.<decimal of 128 bits>: the UUID-derived root anyone may use (ISO/IEC 9834-8)
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big"))


def write_series(folder: Path, *, study: str, series: str, slices: int = 4,
                 patient: dict[str, str] | None = None, sop_class: str = CT_IMAGE_STORAGE,
                 size: int = 16) -> list[Path]:
    """``slices`` files of one series in ``folder``; deterministic for the same arguments."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    tags = dict(PATIENT if patient is None else patient)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = _uid(study, series, index)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = _uid(study)
        ds.SeriesInstanceUID = _uid(study, series)
        ds.FrameOfReferenceUID = _uid(study, "frame")
        ds.Modality = "CT"
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = index + 1
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.ImagePositionPatient = [0.0, 0.0, float(index)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 1.0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.PixelData = bytes((i * 7 + index) % 251 for i in range(size * size * 2))
        path = folder / f"slice{index}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    write_series(args.out / "series-a", study="a", series="a1", slices=4)
    write_series(args.out / "series-b", study="b", series="b1", slices=3)
    write_series(args.out / "single", study="c", series="c1", slices=1)
    write_series(args.out / "image-set", study="d", series="d1", slices=4)
    print(f"wrote synthetic CT series with patient data under {args.out}")


if __name__ == "__main__":
    main()
