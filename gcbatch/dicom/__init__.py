"""DICOM as it comes from a scanner's export: headers read with the standard library
(:mod:`.tags`), the platform's rules checked before any upload (:mod:`.checks`), and
local de-identification with DIAG's package, an optional extra (:mod:`.deid`).

See docs/dicom.md for what is de-identified, how exactly-once works for DICOM, and how
to turn de-identification off.
"""

from gcbatch.dicom.checks import PATIENT_TAGS, SUPPORTED_SOP_CLASSES, patient_data, series_problems
from gcbatch.dicom.deid import EXTRA, DeidentificationRejected, DeidentifierMissing
from gcbatch.dicom.tags import DicomHeader, DicomReadError, is_dicom, read_header

#: the platform's kind code and name of a DICOM Image Set socket
IMAGE_SET_KIND = "DICOM Image Set"

__all__ = [
    "EXTRA",
    "IMAGE_SET_KIND",
    "PATIENT_TAGS",
    "SUPPORTED_SOP_CLASSES",
    "DeidentificationRejected",
    "DeidentifierMissing",
    "DicomHeader",
    "DicomReadError",
    "is_dicom",
    "patient_data",
    "read_header",
    "series_problems",
]
