"""PURE: what the platform would refuse (or leak) in one input's DICOM files.

Checks on headers read by :mod:`gcbatch.dicom.tags`, made before anything is uploaded:

- a **DICOM Image Set** socket takes the files of exactly one study and one series, all
  DICOM, of a supported SOP class (the de-identification procedure knows CT, MR and VL
  whole-slide microscopy only, and the platform rejects the rest), agreeing on the
  identifying tags the platform requires to be identical (:data:`~gcbatch.dicom.deid.UNIQUE_TAGS`);
- an **Image** socket builds an image per series: more than one series in a case would be
  several images (the platform refuses that), and with local de-identification on, the
  SOP class must be one the procedure knows;
- **patient data**: which identifying tags hold something (for the warning given before
  such files leave the machine when de-identification is off).
"""

from __future__ import annotations

from collections.abc import Sequence

from gcbatch.dicom.deid import UNIQUE_TAGS
from gcbatch.dicom.tags import DicomHeader

__all__ = ["PATIENT_TAGS", "SUPPORTED_SOP_CLASSES", "patient_data", "series_problems"]

#: the SOP classes the de-identification procedure (2025.11.0) supports
SUPPORTED_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.6": "VL Whole Slide Microscopy Image Storage",
}

#: tags that identify a patient when filled in (what the platform stores on an Image
#: socket's image and passes to the algorithm: its API shows the first five)
PATIENT_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                "AccessionNumber", "InstitutionName", "ReferringPhysicianName")


def series_problems(headers: Sequence[DicomHeader], *, image_set: bool,
                    deidentify: bool) -> list[str]:
    """Every reason the platform would refuse these files as one input (pure)."""
    problems: list[str] = []
    if not headers:
        return ["no DICOM files"]
    studies = sorted({h.study_instance_uid for h in headers})
    series = sorted({(h.study_instance_uid, h.series_instance_uid) for h in headers})
    if len(studies) > 1:
        problems.append(f"the files belong to {len(studies)} studies (StudyInstanceUID); "
                        "one case takes one study: split them into one case per study")
    if len(series) > 1:
        problems.append(f"the files belong to {len(series)} series (SeriesInstanceUID); "
                        "one case takes one series: split them into one case per series")
    if image_set or deidentify:
        unsupported = sorted({h.sop_class_uid or "(none)" for h in headers
                              if h.sop_class_uid not in SUPPORTED_SOP_CLASSES})
        if unsupported:
            known = ", ".join(SUPPORTED_SOP_CLASSES.values())
            why = ("a DICOM Image Set takes only" if image_set
                   else "local de-identification supports only")
            tip = "" if image_set else " (or turn it off with `deidentify: false`)"
            problems.append(f"SOP class {', '.join(unsupported)} is not supported: {why} "
                            f"{known}{tip}")
    if image_set:
        for keyword in UNIQUE_TAGS:
            if keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
                continue  # said above
            values = sorted({h.get(keyword) for h in headers})
            if len(values) > 1:
                problems.append(f"{keyword} differs between the files ({len(values)} "
                                "values); the platform requires it to be identical")
    return problems


def patient_data(headers: Sequence[DicomHeader]) -> list[str]:
    """The patient tags filled in in any of ``headers`` (none when identity is removed)."""
    filled = []
    for keyword in PATIENT_TAGS:
        if any(h.get(keyword) and not h.identity_removed for h in headers):
            filled.append(keyword)
    return filled
